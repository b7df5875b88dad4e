/**
 * The LLaMA forward pass over a whole window of T tokens at once (prefill),
 * entirely on the GPU, ending in the per-window next-token loss: only one
 * number per window is read back.
 *
 * Per window: embedding lookup → nLayers × (RMSNorm → wq, wk, wv → RoPE →
 * causal grouped-query attention → wo → residual → RMSNorm → w1, w3 → SwiGLU
 * → w2 → residual) → final RMSNorm → classifier (fp32) → log-softmax loss of
 * every position → the window's mean loss. Every linear runs through
 * kernels/matmul.ts's tiled matmul in its own storage format (f32, f16,
 * uniform, lut, + CSR part), so each weight is decoded once per tile of 64
 * tokens. Numerics follow model/forward.ts in fp32: RMSNorm
 * x / sqrt(mean(x²) + eps) ⊙ w; RoPE in llama2.c's interleaved convention
 * (pairs (2i, 2i + 1) of each head, model/config.ts's `ropeTables`) — the
 * convention every loaded model's weights are in (Hugging Face checkpoints
 * are un-permuted at load); silu(a) = a / (1 + e^(−a)).
 *
 * Attention is tiled as in FlashAttention, with an online softmax (a running
 * max / sum / output per query), so no T × T score buffer exists at all. A
 * thread owns QP queries (t, t + 64, …) of HG heads of one KV group (HG
 * divides nHeads / nKvHeads) and walks the keys KB at a time: each key and
 * value vector it loads serves QP · HG queries, from registers. Loads, not
 * arithmetic, are what a software adapter pays for (llvmpipe: a storage
 * load costs about as much as a hundred multiply-adds; workgroup memory is
 * no cheaper), so QP · HG is as large as a register budget allows: QP · HG ·
 * head size ≤ 256 floats of queries and outputs, QP ≤ 16 (stories260K, head
 * size 8 in groups of 2: HG = 2, QP = 16; LLaMA-7B, head size 128: two
 * queries of one head; on llvmpipe at T = 2048, QP = 16 ran stories260K's
 * attention 1.26× faster than QP = 8, QP = 32 and 8 keys per step did not
 * help). A workgroup of 64 threads covers 64 · QP queries; keys
 * below its first query need no mask, the rest are masked per query and
 * skipped for a query row whose 64 queries all precede the block.
 *
 * The classifier's logits [T, vocab] are produced in chunks of tokens (a
 * multiple of 64) small enough for one binding, each followed by its loss
 * kernel (one workgroup per token: max, Σ exp, logZ − logit[target]); a
 * last kernel sums the T − 1 token losses into the window's mean. Windows
 * are batched into one submit: before each window a copy writes its
 * {token offset, window index} into a small state buffer that the embedding,
 * loss and reduction kernels read.
 *
 * Device limits: weights and X / Y of every matmul split into windows below
 * maxStorageBufferBindingSize (kernels/matmul.ts); an activation buffer that
 * does not fit one binding is an error naming it and the window length to
 * lower. Out-of-memory while uploading a layer, and a lost device while
 * running, are errors naming the layer / window and the bytes involved.
 *
 * @module
 */
import type { LinearName, LlamaConfig, LlamaWeights } from "../model/config.ts";
import { headSize, kvDim, linearShape, protocolSeqlen, ropeTables } from "../model/config.ts";
import { f16Tensor, f32Tensor, sizeOf } from "../quant/format.ts";
import type { LinearWeight } from "../quant/format.ts";
import type { Gpu, Kernel } from "./device.ts";
import { dispatchSize, OwnedBuffers, readBuffer } from "./device.ts";
import type { LinearSource } from "./decode.ts";
import { uploadLinear } from "./matvec.ts";
import type { MatmulPlan } from "./matmul.ts";
import { createMatmulPlan, UniformLayout } from "./matmul.ts";

/** Thrown when the device runs out of memory or is lost; names what was being done. */
export class GpuResourceError extends Error {
  override name = "GpuResourceError";
}

/**
 * Runs `f` (allocations, uploads) inside an out-of-memory error scope; the
 * device's out-of-memory error becomes a {@linkcode GpuResourceError} naming
 * `who`, `what` and the bytes involved (an error of `f` itself is rethrown).
 *
 * @param gpu the device
 * @param who the caller, e.g. "GpuPrefill"
 * @param what what is being uploaded, e.g. "layers.3.w2"
 * @param bytes its size
 * @param f the work
 * @returns f's result
 */
export async function guardMemory<R>(
  gpu: Gpu,
  who: string,
  what: string,
  bytes: number,
  f: () => R | Promise<R>,
): Promise<R> {
  gpu.device.pushErrorScope("out-of-memory");
  let out: R | undefined, failure: unknown;
  try {
    out = await f();
  } catch (e) {
    failure = e;
  }
  const err = await gpu.device.popErrorScope();
  if (err) {
    throw new GpuResourceError(
      `${who}: out of GPU memory while uploading ${what} (${bytes} bytes; ` +
        `${gpu.pool.bytesInUse} bytes already in use): ${err.message}`,
    );
  }
  if (failure !== undefined) throw failure;
  return out as R;
}

/**
 * `p`, or a {@linkcode GpuResourceError} naming `who` and `what` when the
 * device is lost first (a readback of a lost device would never resolve).
 *
 * @param gpu the device
 * @param who the caller
 * @param what what was running
 * @param p the pending work (a readback)
 * @returns p's value
 */
export function unlessLost<R>(gpu: Gpu, who: string, what: string, p: Promise<R>): Promise<R> {
  const lost = gpu.device.lost.then((info): never => {
    throw new GpuResourceError(
      `${who}: the GPU device was lost while running ${what} (${info.reason}: ` +
        `${info.message}); ${gpu.pool.bytesInUse} bytes were in use`,
    );
  });
  return Promise.race([p, lost]);
}

/** Threads of every prefill kernel's workgroup. */
export const PREFILL_WG = 64;
const WG = PREFILL_WG;
/** Keys per step of the attention loop (each loaded once per thread). */
const KB = 4;
/** Floats of queries and outputs an attention thread keeps in registers (QP · HG · head size). */
const ATTENTION_FLOATS = 256;

/** Uniform layouts of the prefill kernels (one field list each: struct + host packing). */
export const PREFILL_LAYOUTS = {
  embed: new UniformLayout("Params", { n: "u32", dim: "u32", nx: "u32" }),
  rmsnorm: new UniformLayout("Params", { T: "u32", dim: "u32", nx: "u32", eps: "f32" }),
  rope: new UniformLayout("Params", { n: "u32", width: "u32", hs: "u32", nx: "u32" }),
  attention: new UniformLayout("Params", {
    T: "u32",
    nHeads: "u32",
    group: "u32",
    dim: "u32",
    kv: "u32",
    nx: "u32",
    scale: "f32",
  }),
  add: new UniformLayout("Params", { n: "u32", nx: "u32" }),
  swiglu: new UniformLayout("Params", { n: "u32", nx: "u32" }),
  loss: new UniformLayout("Params", { n: "u32", vocab: "u32", c0: "u32", T: "u32", nx: "u32" }),
  reduce: new UniformLayout("Params", { T: "u32" }),
} as const;

/** A prefill op; every op but attention has one source. */
export type PrefillOpName = keyof typeof PREFILL_LAYOUTS;

/** Parameters that change a prefill kernel's source. */
export interface PrefillOpParams {
  op: PrefillOpName;
  /** attention: head size (baked in). */
  headSize: number;
  /** attention: queries per thread (QP). */
  queriesPerThread: number;
  /** attention: heads of one KV group per thread (HG). */
  headsPerThread: number;
}

/**
 * The attention shape of a model (module doc): HG heads of a KV group and
 * QP queries per thread, within {@linkcode ATTENTION_FLOATS}.
 *
 * @param headSize the head size (a multiple of 4)
 * @param group query heads per KV head
 * @returns QP and HG
 */
export function attentionShape(
  headSize: number,
  group: number,
): { queriesPerThread: number; headsPerThread: number } {
  const perQuery = Math.max(1, Math.floor(ATTENTION_FLOATS / headSize));
  let hg = Math.min(group, perQuery);
  while (group % hg !== 0) hg--;
  return {
    headsPerThread: hg,
    queriesPerThread: Math.max(1, Math.min(16, Math.floor(perQuery / hg))),
  };
}

const STATE = `struct State { base: u32, window: u32 }`;
/** Linear id of the thread: workgroups linearized as wid.y · nx + wid.x. */
const GID = `let gid = (wid.y * P.nx + wid.x) * ${WG}u + lid;`;
const MAIN = `@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32)`;
const SUM = (red: string, op: (a: string, b: string) => string) =>
  `for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (lid < s) { ${red}[lid] = ${op(`${red}[lid]`, `${red}[lid + s]`)}; }
  }
  workgroupBarrier();`;

/** The prefill kernels (module doc). */
export const PREFILL_KERNEL: Kernel<PrefillOpParams> = {
  name: "prefill",
  key: (p) =>
    p.op === "attention"
      ? `attention,${p.headSize},${p.queriesPerThread},${p.headsPerThread}`
      : p.op,
  wgsl: (p) => {
    const head = `${PREFILL_LAYOUTS[p.op].wgsl()}
@group(0) @binding(0) var<uniform> P: Params;`;
    switch (p.op) {
      case "embed": // X[t, i] = E[tokens[base + t], i]; n = T · dim
        return `${head}
${STATE}
@group(0) @binding(1) var<storage, read> S: State;
@group(0) @binding(2) var<storage, read> TOK: array<i32>; // [windows · T]
@group(0) @binding(3) var<storage, read> E: array<f32>; // [vocab, dim]
@group(0) @binding(4) var<storage, read_write> X: array<f32>; // [T, dim]
${MAIN} {
  ${GID}
  if (gid >= P.n) { return; }
  let t = gid / P.dim;
  X[gid] = E[u32(TOK[S.base + t]) * P.dim + gid % P.dim];
}`;
      case "rmsnorm": // O[t] = X[t] / sqrt(mean(X[t]²) + eps) ⊙ W; one thread per token (vec4s)
        return `${head}
@group(0) @binding(1) var<storage, read> X: array<vec4<f32>>; // [T, dim / 4]
@group(0) @binding(2) var<storage, read> W: array<vec4<f32>>; // [dim / 4]
@group(0) @binding(3) var<storage, read_write> O: array<vec4<f32>>; // [T, dim / 4]
${MAIN} {
  ${GID}
  if (gid >= P.T) { return; }
  let d4 = P.dim / 4u;
  let o = gid * d4;
  var ss = vec4<f32>();
  for (var i = 0u; i < d4; i++) { let v = X[o + i]; ss += v * v; }
  let inv = 1.0 / sqrt((ss.x + ss.y + ss.z + ss.w) / f32(P.dim) + P.eps);
  for (var i = 0u; i < d4; i++) { O[o + i] = W[i] * (X[o + i] * inv); }
}`;
      case "rope": // rotate pairs (2i, 2i + 1) of every head of X [T, width] in place; n = T · width / 2
        return `${head}
@group(0) @binding(1) var<storage, read_write> X: array<f32>; // [T, width]
@group(0) @binding(2) var<storage, read> COS: array<f32>; // [T, hs / 2]
@group(0) @binding(3) var<storage, read> SIN: array<f32>;
${MAIN} {
  ${GID}
  if (gid >= P.n) { return; }
  let half = P.width / 2u;
  let t = gid / half;
  let i = 2u * (gid % half);
  let j = t * (P.hs / 2u) + ((i % P.hs) >> 1u);
  let c = COS[j];
  let s = SIN[j];
  let o = t * P.width + i;
  let a = X[o];
  let b = X[o + 1u];
  X[o] = a * c - b * s;
  X[o + 1u] = a * s + b * c;
}`;
      case "attention":
        return attentionWgsl(head, p.headSize, p.queriesPerThread, p.headsPerThread);
      case "add": // X += O; n = len
        return `${head}
@group(0) @binding(1) var<storage, read> O: array<f32>;
@group(0) @binding(2) var<storage, read_write> X: array<f32>;
${MAIN} {
  ${GID}
  if (gid < P.n) { X[gid] += O[gid]; }
}`;
      case "swiglu": // H1 = silu(H1) · H3 in place; n = T · hiddenDim
        return `${head}
@group(0) @binding(1) var<storage, read_write> H1: array<f32>;
@group(0) @binding(2) var<storage, read> H3: array<f32>;
${MAIN} {
  ${GID}
  if (gid < P.n) { let a = H1[gid]; H1[gid] = (a / (1.0 + exp(-a))) * H3[gid]; }
}`;
      case "loss": // TL[c0 + t] = logsumexp(L[t]) − L[t, target]; one workgroup per token of the chunk
        return `${head}
${STATE}
@group(0) @binding(1) var<storage, read> S: State;
@group(0) @binding(2) var<storage, read> TOK: array<i32>;
@group(0) @binding(3) var<storage, read> L: array<f32>; // [n, vocab] logits of the chunk
@group(0) @binding(4) var<storage, read_write> TL: array<f32>; // [T] token losses
var<workgroup> red: array<f32, ${WG}>;
${MAIN} {
  let t = wid.y * P.nx + wid.x;
  if (t >= P.n) { return; }
  let pos = P.c0 + t;
  let o = t * P.vocab;
  var m = -3.402823e38;
  for (var i = lid; i < P.vocab; i += ${WG}u) { m = max(m, L[o + i]); }
  red[lid] = m;
  ${SUM("red", (a, b) => `max(${a}, ${b})`)}
  let mx = red[0];
  workgroupBarrier();
  var s = 0.0;
  for (var i = lid; i < P.vocab; i += ${WG}u) { s += exp(L[o + i] - mx); }
  red[lid] = s;
  ${SUM("red", (a, b) => `${a} + ${b}`)}
  if (lid == 0u) {
    var loss = 0.0;
    if (pos + 1u < P.T) {
      loss = mx + log(red[0]) - L[o + u32(TOK[S.base + pos + 1u])];
    }
    TL[pos] = loss;
  }
}`;
      case "reduce": // OUT[window] = mean of TL[0 .. T − 1)
        return `${head}
${STATE}
@group(0) @binding(1) var<storage, read> S: State;
@group(0) @binding(2) var<storage, read> TL: array<f32>;
@group(0) @binding(3) var<storage, read_write> OUT: array<f32>;
var<workgroup> red: array<f32, ${WG}>;
${MAIN} {
  var s = 0.0;
  for (var i = lid; i + 1u < P.T; i += ${WG}u) { s += TL[i]; }
  red[lid] = s;
  ${SUM("red", (a, b) => `${a} + ${b}`)}
  if (lid == 0u) { OUT[S.window] = red[0] / f32(P.T - 1u); }
}`;
    }
  },
};

/**
 * Tiled causal attention with an online softmax (module doc). Thread
 * registers, all named (code unrolled: llvmpipe runs dynamically indexed
 * private arrays lane by lane): query q{i}_{g}_{c} and output o{i}_{g}_{c}
 * (vec4 c of head g of query i), running max m{i}_{g} and sum l{i}_{g}; each
 * step loads KB keys and values k{j}_{c}, v{j}_{c} and folds them into every
 * query: m′ = max(m, s_j), o = o·e^(m − m′) + Σ_j e^(s_j − m′)·v_j, likewise l.
 */
function attentionWgsl(head: string, HS: number, QP: number, HG: number): string {
  const H4 = HS / 4;
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  const C = range(H4), J = range(KB), G = range(HG), I = range(QP);
  const QI = I.flatMap((i) => G.map((g) => `${i}_${g}`)); // (query, head) register sets
  const load = (masked: boolean) =>
    J.map((j) => {
      const row = masked ? `min(u + ${j}u, P.T - 1u) * kvRow + kc` : `(u + ${j}u) * kvRow + kc`;
      return C.map((c) => `let k${j}_${c} = K[${row} + ${c}u]; let v${j}_${c} = V[${row} + ${c}u];`)
        .join(" ");
    }).join("\n      ");
  const fold = (masked: boolean) =>
    I.map((i) => {
      const rows = G.map((g) => {
        const a = `${i}_${g}`;
        const s = J.map((j) => {
          const dot = `(${C.map((c) => `dot(q${a}_${c}, k${j}_${c})`).join(" + ")}) * P.scale`;
          return masked
            ? `let s${j} = select(-3.402823e38, ${dot}, u + ${j}u <= t${i});`
            : `let s${j} = ${dot};`;
        }).join(" ");
        return `{
        ${s}
        let mx = ${J.reduce((acc, j) => `max(${acc}, s${j})`, `m${a}`)};
        let corr = exp(m${a} - mx);
        ${J.map((j) => `let p${j} = exp(s${j} - mx);`).join(" ")}
        l${a} = l${a} * corr + ${J.map((j) => `p${j}`).join(" + ")};
        ${
          C.map((c) =>
            `o${a}_${c} = o${a}_${c} * corr + ${J.map((j) => `p${j} * v${j}_${c}`).join(" + ")};`
          ).join("\n        ")
        }
        m${a} = mx;
      }`;
      }).join("\n      ");
      // a masked block after every query of row i (first + 64i .. + 63) adds nothing to it
      return masked ? `if (u <= first + ${WG * i + WG - 1}u) ${rows}` : rows;
    }).join("\n      ");
  return `${head}
const HS = ${HS}u;
const QT = ${WG * QP}u; // queries per workgroup
@group(0) @binding(1) var<storage, read> Q: array<vec4<f32>>; // [T, dim / 4] after RoPE
@group(0) @binding(2) var<storage, read> K: array<vec4<f32>>; // [T, kv / 4] after RoPE
@group(0) @binding(3) var<storage, read> V: array<vec4<f32>>; // [T, kv / 4]
@group(0) @binding(4) var<storage, read_write> A: array<vec4<f32>>; // [T, dim / 4]
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let id = wid.y * P.nx + wid.x;
  let headGroups = P.nHeads / ${HG}u;
  if (id >= ((P.T + QT - 1u) / QT) * headGroups) { return; }
  let h0 = (id % headGroups) * ${HG}u; // heads h0 .. h0 + ${HG - 1} share one KV head
  let first = (id / headGroups) * QT;
  let kvRow = P.kv / 4u;
  let kc = ((h0 / P.group) * HS) / 4u; // the KV head's columns, in vec4s
  ${
    I.map((i) =>
      `let t${i} = first + lid + ${WG * i}u;
  let qo${i} = (min(t${i}, P.T - 1u) * P.dim + h0 * HS) / 4u;`
    ).join("\n  ")
  }
  ${
    QI.map((a) => {
      const [i, g] = a.split("_");
      return C.map((c) => `let q${a}_${c} = Q[qo${i} + ${Number(g) * H4 + c}u];`).join(" ");
    }).join("\n  ")
  }
  ${
    QI.map((a) =>
      `${C.map((c) => `var o${a}_${c} = vec4<f32>();`).join(" ")} var m${a} = -3.402823e38; ` +
      `var l${a} = 0.0;`
    ).join("\n  ")
  }
  let last = min(first + QT, P.T); // keys 0 .. last − 1 serve this tile
  var u = 0u;
  for (; u + ${KB}u <= first; u += ${KB}u) { // keys before every query: no mask
      ${load(false)}
      ${fold(false)}
  }
  for (; u < last; u += ${KB}u) {
      ${load(true)}
      ${fold(true)}
  }
  ${
    I.map((i) =>
      `if (t${i} < P.T) {
    let ao = (t${i} * P.dim + h0 * HS) / 4u;
    ${
        G.map((g) =>
          C.map((c) => `A[ao + ${g * H4 + c}u] = o${i}_${g}_${c} / l${i}_${g};`).join(" ")
        )
          .join("\n    ")
      }
  }`
    ).join("\n  ")
  }
}`;
}

/** Options of {@linkcode GpuPrefill.create}. */
export interface GpuPrefillOptions {
  /** Window length T in tokens. @default model/config.ts `protocolSeqlen` (2048, or max_seq_len if shorter) */
  seqlen?: number;
  /** Windows encoded into one submit (one readback each). @default 16 */
  windowsPerSubmit?: number;
  /** Read f16 weights natively where the device has shader-f16. @default kernels/matmul.ts `defaultNativeF16` */
  nativeF16?: boolean;
  /** Largest binding (tests use a small one to force windows and classifier chunks). */
  maxBindingBytes?: number;
}

interface Op {
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  x: number;
  y: number;
}
/** One dispatch group of a window, labelled for {@linkcode GpuPrefill.profile} (op or linear name). */
type Step = ({ kind: "op"; label: string } & Op) | {
  kind: "plan";
  label: string;
  plan: MatmulPlan;
};

/** One chunk of the classifier: logits of tokens c0 .. c0 + n − 1, then their losses. */
interface HeadChunk {
  c0: number;
  n: number;
  steps: Step[];
}

/**
 * The model on the GPU, ready to run windows of `seqlen` tokens. Create with
 * {@linkcode GpuPrefill.create}; {@linkcode GpuPrefill.windowLosses} returns
 * the mean next-token loss of each window (eval/gpu_perplexity.ts's prefill
 * path turns them into GPTQ's perplexity); {@linkcode GpuPrefill.logits}
 * reads one window's logits back (tests); {@linkcode GpuPrefill.release}
 * returns every buffer to the pool.
 */
export class GpuPrefill {
  private constructor(
    readonly gpu: Gpu,
    readonly config: LlamaConfig,
    /** Window length T. */
    readonly seqlen: number,
    /** Windows per submit. */
    readonly windowsPerSubmit: number,
    private readonly body: Step[],
    private readonly chunks: HeadChunk[],
    private readonly reduce: Step,
    private readonly buffers: Record<"state" | "tokens" | "feed" | "losses" | "logits", GPUBuffer>,
    /** Multiply-adds of the linear layers and classifier of one window. */
    readonly macsPerWindow: number,
    readonly release: () => void,
  ) {}

  /**
   * Uploads every linear layer (in its own format), the fp32 classifier,
   * embeddings and norms, allocates the activations of one window and
   * compiles the pipelines.
   *
   * @param gpu the device
   * @param weights the model (norms, embeddings and classifier are read from here)
   * @param linears the stored weight of each linear layer (kernels/decode.ts's `LinearSource`)
   * @param opts window length, windows per submit, native f16, binding limit
   * @returns the prefill, ready to run
   * @throws GpuResourceError when a layer does not fit in device memory
   * @throws RangeError for a bad seqlen, a shape mismatch or an activation beyond one binding
   * @example
   * ```ts
   * const pf = await GpuPrefill.create(gpu, weights, (l, n) => ({ dense: f32Tensor(weights.layers[l][n], ...linearShape(weights.config, n)) }));
   * const losses = await pf.windowLosses([tokens.subarray(0, 512)]);
   * pf.release();
   * ```
   */
  static async create(
    gpu: Gpu,
    weights: LlamaWeights,
    linears: LinearSource,
    opts: GpuPrefillOptions = {},
  ): Promise<GpuPrefill> {
    const c = weights.config;
    const { device, pool } = gpu;
    const { dim, hiddenDim, vocabSize: V, nLayers, nHeads, nKvHeads } = c;
    const T = opts.seqlen ?? protocolSeqlen(c);
    if (!(Number.isInteger(T) && T >= 2 && T <= c.maxSeqLen)) {
      throw new RangeError(
        `GpuPrefill: seqlen must be an integer in 2..${c.maxSeqLen} (max_seq_len), got ${T}`,
      );
    }
    const W = opts.windowsPerSubmit ?? 16;
    const kv = kvDim(c), hs = headSize(c);
    const maxBind = Math.min(
      opts.maxBindingBytes ?? Infinity,
      device.limits.maxStorageBufferBindingSize,
    );
    const owned = new OwnedBuffers(pool);
    const release = () => owned.releaseAll();
    try {
      const STO = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
      const buf = (floats: number, label: string) => {
        if (4 * floats > maxBind) {
          throw new RangeError(
            `GpuPrefill: activation "${label}" of a ${T}-token window needs ${4 * floats} bytes, ` +
              `above the device's maxStorageBufferBindingSize ${maxBind}: lower --seqlen`,
          );
        }
        return owned.acquire(4 * floats, STO, label);
      };
      const upload = (a: ArrayBufferView, label: string) =>
        owned.upload(a, GPUBufferUsage.COPY_SRC, label);
      /** Runs f inside an out-of-memory error scope; a failure names what and how many bytes. */
      const guarded = <R>(what: string, bytes: number, f: () => R): Promise<R> =>
        guardMemory(gpu, "GpuPrefill", what, bytes, f);
      // run state of one window
      const x = buf(T * dim, "x"), xn = buf(T * dim, "xn"), q = buf(T * dim, "q");
      const k = buf(T * kv, "k"), v = buf(T * kv, "v"), att = buf(T * dim, "att");
      const o = buf(T * dim, "o");
      const h1 = buf(T * hiddenDim, "h1"), h3 = buf(T * hiddenDim, "h3");
      // Classifier chunks: multiples of 64 tokens whose logits fit one binding.
      const perChunk = T * V * 4 <= maxBind ? T : Math.floor(maxBind / (4 * V) / 64) * 64;
      if (perChunk < 1) {
        throw new RangeError(
          `GpuPrefill: 64 tokens of logits (vocab ${V}) need ${256 * V} bytes, above the ` +
            `binding limit ${maxBind}`,
        );
      }
      const logits = buf(Math.min(T, perChunk) * V, "logits");
      const tokenLoss = buf(T, "token-loss");
      const losses = buf(W, "window-losses");
      const state = buf(2, "state"), feed = buf(2 * W, "feed");
      const tokens = buf(W * T, "tokens");
      const [cosT, sinT] = ropeTables(c, T);
      const cos = upload(cosT, "rope-cos"), sin = upload(sinT, "rope-sin");
      const emb = await guarded(
        "the token embedding",
        weights.tokenEmbedding.byteLength,
        () => upload(weights.tokenEmbedding, "embedding"),
      );
      const finalNorm = upload(weights.finalNorm, "final-norm");

      if (hs % 4 !== 0) {
        throw new RangeError(
          `GpuPrefill: head size ${hs} must be a multiple of 4 (vec4 attention)`,
        );
      }
      const shape = attentionShape(hs, nHeads / nKvHeads);
      const op = async (
        name: PrefillOpName,
        values: Record<string, number>,
        bufs: GPUBuffer[],
        workgroups: number,
      ): Promise<Step> => {
        const pipeline = await gpu.pipelines.get(PREFILL_KERNEL, {
          op: name,
          headSize: hs,
          ...shape,
        });
        const grid = dispatchSize(workgroups, device.limits);
        const L = PREFILL_LAYOUTS[name] as UniformLayout<string>;
        const u = owned.acquire(L.size, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, name);
        device.queue.writeBuffer(u, 0, L.pack({ ...values, nx: grid.nx }));
        const bindGroup = device.createBindGroup({
          layout: pipeline.getBindGroupLayout(0),
          entries: [u, ...bufs].map((buffer, binding) => ({ binding, resource: { buffer } })),
        });
        return { kind: "op", label: name, pipeline, bindGroup, x: grid.x, y: grid.y };
      };
      const groups = (n: number) => Math.ceil(n / WG);
      let macs = 0;
      const matmul = async (
        w: LinearWeight,
        what: string,
        shape: [number, number],
        input: GPUBuffer,
        out: GPUBuffer,
        xOffsetTokens = 0,
        tokensHere = T,
      ): Promise<Step> => {
        if (w.dense.rows !== shape[0] || w.dense.cols !== shape[1]) {
          throw new RangeError(
            `GpuPrefill: ${what} is ${w.dense.rows}×${w.dense.cols}, the config needs ` +
              `${shape[0]}×${shape[1]}`,
          );
        }
        const lin = await guarded(what, sizeOf(w).storedBytes.total, () => uploadLinear(gpu, w));
        owned.adopt(lin);
        const plan = await createMatmulPlan(gpu, lin, {
          tokens: tokensHere,
          x: input,
          y: out,
          xOffsetTokens,
          nativeF16: opts.nativeF16,
          maxBindingBytes: opts.maxBindingBytes,
        });
        owned.adopt(plan);
        macs += plan.macs;
        return { kind: "plan", label: what.replace(/^layers\.\d+\./, ""), plan };
      };

      const body: Step[] = [];
      body.push(await op("embed", { n: T * dim, dim }, [state, tokens, emb, x], groups(T * dim)));
      const norm = (w: GPUBuffer) =>
        op("rmsnorm", { T, dim, eps: c.normEps }, [x, w, xn], groups(T));
      for (let l = 0; l < nLayers; l++) {
        const lw = weights.layers[l];
        const src = (name: LinearName) => linears(l, name);
        const lin = (name: LinearName, input: GPUBuffer, out: GPUBuffer) =>
          matmul(src(name), `layers.${l}.${name}`, linearShape(c, name), input, out);
        const attnNorm = upload(lw.attnNorm, "attn-norm"), ffnNorm = upload(lw.ffnNorm, "ffn-norm");
        body.push(await norm(attnNorm));
        body.push(await lin("wq", xn, q), await lin("wk", xn, k), await lin("wv", xn, v));
        for (const [b, width] of [[q, dim], [k, kv]] as const) {
          const n = (T * width) / 2;
          body.push(await op("rope", { n, width, hs }, [b, cos, sin], groups(n)));
        }
        body.push(
          await op(
            "attention",
            { T, nHeads, group: nHeads / nKvHeads, dim, kv, scale: 1 / Math.sqrt(hs) },
            [q, k, v, att],
            Math.ceil(T / (WG * shape.queriesPerThread)) * (nHeads / shape.headsPerThread),
          ),
        );
        body.push(await lin("wo", att, o));
        body.push(await op("add", { n: T * dim }, [o, x], groups(T * dim)));
        body.push(await norm(ffnNorm));
        body.push(await lin("w1", xn, h1), await lin("w3", xn, h3));
        const nh = T * hiddenDim;
        body.push(await op("swiglu", { n: nh }, [h1, h3], groups(nh)));
        body.push(await lin("w2", h1, o));
        body.push(await op("add", { n: T * dim }, [o, x], groups(T * dim)));
      }
      body.push(await norm(finalNorm));
      const classifier = { dense: f32Tensor(weights.classifier, V, dim) };
      const chunks: HeadChunk[] = [];
      for (let c0 = 0; c0 < T; c0 += perChunk) {
        const n = Math.min(perChunk, T - c0);
        chunks.push({
          c0,
          n,
          steps: [
            await matmul(classifier, "classifier", [V, dim], xn, logits, c0, n),
            await op("loss", { n, vocab: V, c0, T }, [state, tokens, logits, tokenLoss], n),
          ],
        });
      }
      const reduce = await op("reduce", { T }, [state, tokenLoss, losses], 1);
      return new GpuPrefill(
        gpu,
        c,
        T,
        W,
        body,
        chunks,
        reduce,
        { state, tokens, feed, losses, logits },
        macs,
        release,
      );
    } catch (e) {
      release();
      throw e;
    }
  }

  #run(pass: GPUComputePassEncoder, steps: Step[]): void {
    for (const s of steps) {
      if (s.kind === "plan") s.plan.encode(pass);
      else {
        pass.setPipeline(s.pipeline);
        pass.setBindGroup(0, s.bindGroup);
        pass.dispatchWorkgroups(s.x, s.y);
      }
    }
  }

  #checkWindow(win: ArrayLike<number>, i: number): void {
    const V = this.config.vocabSize;
    if (win.length !== this.seqlen) {
      throw new RangeError(
        `GpuPrefill: window ${i} has ${win.length} tokens, the prefill was built for ${this.seqlen}`,
      );
    }
    for (let t = 0; t < win.length; t++) {
      if (!(Number.isInteger(win[t]) && win[t] >= 0 && win[t] < V)) {
        throw new RangeError(
          `GpuPrefill: token ${win[t]} at position ${t} of window ${i} is outside the ` +
            `vocabulary (0..${V - 1})`,
        );
      }
    }
  }

  /** Reads `bytes` of `buf`, or throws GpuResourceError when the device is lost meanwhile. */
  #read(buf: GPUBuffer, bytes: number, what: string): Promise<ArrayBuffer> {
    return unlessLost(this.gpu, "GpuPrefill", what, readBuffer(this.gpu, buf, bytes));
  }

  /**
   * The mean next-token loss of each window (eval/perplexity.ts's
   * `windowLoss`, computed on the GPU in fp32): `windowsPerSubmit` windows
   * per submit, one readback of their losses each.
   *
   * @param windows token windows, each of exactly `seqlen` ids
   * @param onProgress called after each submit with the windows done
   * @returns mean loss per window [windows.length]
   */
  async windowLosses(
    windows: readonly ArrayLike<number>[],
    onProgress?: (done: number, total: number) => void,
  ): Promise<Float64Array> {
    const { device } = this.gpu;
    const T = this.seqlen, W = this.windowsPerSubmit;
    const out = new Float64Array(windows.length);
    for (let w0 = 0; w0 < windows.length; w0 += W) {
      const n = Math.min(W, windows.length - w0);
      const toks = new Int32Array(n * T), feed = new Uint32Array(2 * n);
      for (let i = 0; i < n; i++) {
        this.#checkWindow(windows[w0 + i], w0 + i);
        toks.set(windows[w0 + i], i * T);
        feed[2 * i] = i * T;
        feed[2 * i + 1] = i;
      }
      device.queue.writeBuffer(this.buffers.tokens, 0, toks);
      device.queue.writeBuffer(this.buffers.feed, 0, feed);
      const enc = device.createCommandEncoder();
      for (let i = 0; i < n; i++) {
        enc.copyBufferToBuffer(this.buffers.feed, 8 * i, this.buffers.state, 0, 8);
        const pass = enc.beginComputePass();
        this.#run(pass, this.body);
        for (const ch of this.chunks) this.#run(pass, ch.steps);
        this.#run(pass, [this.reduce]);
        pass.end();
      }
      device.queue.submit([enc.finish()]);
      const got = new Float32Array(
        await this.#read(this.buffers.losses, 4 * n, `windows ${w0}..${w0 + n - 1}`),
      );
      out.set(got, w0);
      onProgress?.(w0 + n, windows.length);
    }
    return out;
  }

  /**
   * The logits of one window (for comparisons against the CPU forward).
   * @param win `seqlen` token ids
   * @returns logits [seqlen, vocab]
   */
  async logits(win: ArrayLike<number>): Promise<Float32Array> {
    this.#checkWindow(win, 0);
    const { device, pool } = this.gpu;
    const T = this.seqlen, V = this.config.vocabSize;
    device.queue.writeBuffer(this.buffers.tokens, 0, Int32Array.from(win));
    device.queue.writeBuffer(this.buffers.state, 0, new Uint32Array([0, 0]));
    const all = pool.acquire(
      4 * T * V,
      GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      "all-logits",
    );
    try {
      const enc = device.createCommandEncoder();
      let pass = enc.beginComputePass();
      this.#run(pass, this.body);
      for (const ch of this.chunks) {
        this.#run(pass, ch.steps);
        pass.end();
        enc.copyBufferToBuffer(this.buffers.logits, 0, all, 4 * ch.c0 * V, 4 * ch.n * V);
        pass = enc.beginComputePass();
      }
      pass.end();
      device.queue.submit([enc.finish()]);
      return new Float32Array(await this.#read(all, 4 * T * V, "one window's logits"));
    } finally {
      pool.release(all);
    }
  }

  /**
   * Wall-clock seconds of one window per step label (an op of the module
   * doc, or a linear's name summed over the layers). Each step is encoded
   * `reps` times into one submit and waited for, and the time divided by
   * `reps`, so the submit's own cost is spread thin (on a software adapter,
   * whose timestamp queries read zero, the wall clock is the only clock).
   * In-place steps (rope, add, swiglu) run `reps` times on their own
   * output: the time is right, the activations are not; run windows after
   * this only through {@linkcode GpuPrefill.windowLosses}, which recomputes
   * everything from the embedding.
   *
   * @param win `seqlen` token ids
   * @param reps runs of each step per submit @default 4
   * @returns seconds per label, in the order first met
   */
  async profile(win: ArrayLike<number>, reps = 4): Promise<Map<string, number>> {
    this.#checkWindow(win, 0);
    const { device } = this.gpu;
    device.queue.writeBuffer(this.buffers.tokens, 0, Int32Array.from(win));
    device.queue.writeBuffer(this.buffers.state, 0, new Uint32Array([0, 0]));
    await device.queue.onSubmittedWorkDone();
    const seconds = new Map<string, number>();
    const steps = [...this.body, ...this.chunks.flatMap((c) => c.steps), this.reduce];
    for (const s of steps) {
      const t0 = performance.now();
      const enc = device.createCommandEncoder();
      const pass = enc.beginComputePass();
      for (let r = 0; r < reps; r++) this.#run(pass, [s]);
      pass.end();
      device.queue.submit([enc.finish()]);
      await device.queue.onSubmittedWorkDone();
      const dt = (performance.now() - t0) / 1000 / reps;
      seconds.set(s.label, (seconds.get(s.label) ?? 0) + dt);
    }
    return seconds;
  }
}

/**
 * The linear source of an unquantized model: every linear as an fp32 tensor
 * (or fp16 when `dtype` is "f16", rounded once here).
 *
 * @param weights the model
 * @param dtype storage of the linears @default "f32"
 * @returns a {@linkcode LinearSource}
 * @example
 * ```ts
 * const pf = await GpuPrefill.create(gpu, weights, denseSource(weights));
 * ```
 */
export function denseSource(weights: LlamaWeights, dtype: "f32" | "f16" = "f32"): LinearSource {
  return (l, name) => {
    const [rows, cols] = linearShape(weights.config, name);
    const w = weights.layers[l][name];
    return { dense: dtype === "f32" ? f32Tensor(w, rows, cols) : f16Tensor(w, rows, cols) };
  };
}
