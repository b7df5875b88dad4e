/**
 * Token-at-a-time LLaMA decoding with a KV cache, entirely on the GPU: every
 * linear layer (wq, wk, wv, wo, w1, w2, w3 of every block) runs through the
 * matvec kernels in its own storage format, the classifier in fp32, and small
 * WGSL kernels here do the rest (embedding lookup, RMSNorm, RoPE + KV-cache
 * write, attention, residual adds, SwiGLU, greedy argmax).
 *
 * Why everything on the GPU: in Deno every GPU→CPU readback costs about
 * 11 ms of polling latency whatever the work, so a CPU/GPU split (four
 * readbacks per block) would measure that latency, not the kernels. Here one
 * token is one compute pass; {@linkcode GpuDecoder.generate} encodes N greedy
 * steps into one submit (the argmax kernel feeds the next step's embedding
 * lookup through a small state buffer {token, pos}) and reads back once, so
 * tokens/s measures the GPU work. {@linkcode GpuDecoder.forward} feeds a
 * given window the same way (teacher-forced, for perplexity through the
 * kernels: eval/gpu_perplexity.ts) and reads every position's logits back once;
 * {@linkcode GpuDecoder.step} reads the logits back after every token.
 *
 * Numerics follow model/forward.ts in fp32: the same RoPE tables
 * (model/config.ts's ropeTables), RMSNorm as x / sqrt(mean(x²) + eps) ⊙ w, softmax with the
 * max subtracted, silu(a) = a / (1 + e^(−a)).
 *
 * @module
 */
import type { LinearName, LlamaConfig, LlamaWeights } from "../model/config.ts";
import {
  headSize,
  kvDim,
  LINEAR_NAMES,
  linearKey,
  linearShape,
  ropeTables,
} from "../model/config.ts";
import type { Gpu, Kernel } from "./device.ts";
import { dispatchSize, OwnedBuffers, readBuffer } from "./device.ts";
import type { MatvecPlan, MatvecPlanOptions } from "./matvec.ts";
import { createMatvecPlan, uploadLinear } from "./matvec.ts";
import type { LinearWeight, QuantizedLinear } from "../quant/format.ts";
import { f32Tensor } from "../quant/format.ts";

/** The weight of linear `name` of block `layer`, in whatever format it is stored. */
export type LinearSource = (layer: number, name: LinearName) => LinearWeight;

/** Options of {@linkcode GpuDecoder.create}. */
export interface GpuDecoderOptions {
  /** Sparse parts fused into the dense kernels or as a separate pass. @default "fused" */
  sparseMode?: MatvecPlanOptions["sparseMode"];
  /** Tiling passed to every plan. */
  tiling?: Pick<MatvecPlanOptions, "rowsPerWg" | "threadsPerRow">;
}

/** Parameters of the decoder's small kernels (only workgroup sizes and the cache length change the source). */
interface OpParams {
  op: "embed" | "rmsnorm" | "rope" | "attention" | "add" | "swiglu" | "argmax";
  /** maxSeqLen (attention's score buffer). */
  maxSeq: number;
}

const WG = 64; // threads of the elementwise kernels
const RED = 256; // threads of the reduction kernels (rmsnorm, argmax)

/** The decoder's small WGSL kernels; each reads its sizes from a uniform `P` of eight u32/f32. */
const OP_KERNEL: Kernel<OpParams> = {
  name: "decode-op",
  key: (p) => `${p.op},${p.op === "attention" ? p.maxSeq : 0}`,
  wgsl: (p) => {
    const head = `struct State { token: u32, pos: u32 }
struct Params { n: u32, a: u32, b: u32, c: u32, d: u32, e: u32, f: f32, g: f32 }
@group(0) @binding(0) var<uniform> P: Params;`;
    switch (p.op) {
      case "embed": // x[i] = emb[token, i]; n = dim
        return `${head}
@group(0) @binding(1) var<storage, read> S: State;
@group(0) @binding(2) var<storage, read> E: array<f32>; // [vocab, dim]
@group(0) @binding(3) var<storage, read_write> X: array<f32>; // [dim]
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  if (id.x < P.n) { X[id.x] = E[S.token * P.n + id.x]; }
}`;
      case "add": // x[i] += o[i]; n = len
        return `${head}
@group(0) @binding(1) var<storage, read> O: array<f32>;
@group(0) @binding(2) var<storage, read_write> X: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  if (id.x < P.n) { X[id.x] += O[id.x]; }
}`;
      case "swiglu": // h[i] = silu(h1[i]) · h3[i]; n = hiddenDim
        return `${head}
@group(0) @binding(1) var<storage, read> H1: array<f32>;
@group(0) @binding(2) var<storage, read> H3: array<f32>;
@group(0) @binding(3) var<storage, read_write> H: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  if (id.x < P.n) { let a = H1[id.x]; H[id.x] = (a / (1.0 + exp(-a))) * H3[id.x]; }
}`;
      case "rmsnorm": // out = x / sqrt(mean(x²) + eps) ⊙ w; n = dim, f = eps; one workgroup
        return `${head}
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> W: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
var<workgroup> red: array<f32, ${RED}>;
@compute @workgroup_size(${RED})
fn main(@builtin(local_invocation_index) t: u32) {
  var ss = 0.0;
  for (var i = t; i < P.n; i += ${RED}u) { ss += X[i] * X[i]; }
  red[t] = ss;
  for (var s = ${RED / 2}u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (t < s) { red[t] += red[t + s]; }
  }
  workgroupBarrier();
  let inv = 1.0 / sqrt(red[0] / f32(P.n) + P.f);
  for (var i = t; i < P.n; i += ${RED}u) { O[i] = W[i] * (X[i] * inv); }
}`;
      case "rope": // rotate q and k at position pos, write k and v into the cache
        // n = dim, a = kvDim, b = headSize, c = layer base of the cache (l · maxSeq · kvDim)
        return `${head}
@group(0) @binding(1) var<storage, read> S: State;
@group(0) @binding(2) var<storage, read_write> Q: array<f32>; // [dim]
@group(0) @binding(3) var<storage, read> K: array<f32>; // [kvDim]
@group(0) @binding(4) var<storage, read> V: array<f32>; // [kvDim]
@group(0) @binding(5) var<storage, read_write> KC: array<f32>; // [nLayers, maxSeq, kvDim]
@group(0) @binding(6) var<storage, read_write> VC: array<f32>;
@group(0) @binding(7) var<storage, read> COS: array<f32>; // [maxSeq, headSize / 2]
@group(0) @binding(8) var<storage, read> SIN: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  let p = id.x; // pair (2p, 2p + 1)
  if (p >= P.n / 2u) { return; }
  let i = 2u * p;
  let j = S.pos * (P.b / 2u) + ((i % P.b) >> 1u);
  let c = COS[j];
  let s = SIN[j];
  let q0 = Q[i];
  let q1 = Q[i + 1u];
  Q[i] = q0 * c - q1 * s;
  Q[i + 1u] = q0 * s + q1 * c;
  if (i < P.a) {
    let at = P.c + S.pos * P.a + i;
    let k0 = K[i];
    let k1 = K[i + 1u];
    KC[at] = k0 * c - k1 * s;
    KC[at + 1u] = k0 * s + k1 * c;
    VC[at] = V[i];
    VC[at + 1u] = V[i + 1u];
  }
}`;
      case "attention": // one workgroup per head; n = nHeads, a = nKvHeads, b = headSize, c = kvDim, d = layer base, f = 1/sqrt(hs)
        return `${head}
@group(0) @binding(1) var<storage, read> S: State;
@group(0) @binding(2) var<storage, read> Q: array<f32>; // [dim]
@group(0) @binding(3) var<storage, read> KC: array<f32>;
@group(0) @binding(4) var<storage, read> VC: array<f32>;
@group(0) @binding(5) var<storage, read_write> A: array<f32>; // [dim]
var<workgroup> sc: array<f32, ${p.maxSeq}>;
var<workgroup> red: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let h = wid.x;
  let hs = P.b;
  let kvOff = (h / (P.n / P.a)) * hs;
  let n = S.pos + 1u; // causal: positions 0..pos
  var m = -3.402823e38;
  for (var u = t; u < n; u += ${WG}u) {
    let kb = P.d + u * P.c + kvOff;
    var s = 0.0;
    for (var j = 0u; j < hs; j++) { s += Q[h * hs + j] * KC[kb + j]; }
    s *= P.f;
    sc[u] = s;
    m = max(m, s);
  }
  red[t] = m;
  for (var k = ${WG / 2}u; k > 0u; k >>= 1u) {
    workgroupBarrier();
    if (t < k) { red[t] = max(red[t], red[t + k]); }
  }
  workgroupBarrier();
  let mx = red[0];
  workgroupBarrier();
  var sum = 0.0;
  for (var u = t; u < n; u += ${WG}u) { let e = exp(sc[u] - mx); sc[u] = e; sum += e; }
  red[t] = sum;
  for (var k = ${WG / 2}u; k > 0u; k >>= 1u) {
    workgroupBarrier();
    if (t < k) { red[t] += red[t + k]; }
  }
  workgroupBarrier();
  let inv = 1.0 / red[0];
  for (var j = t; j < hs; j += ${WG}u) {
    var a = 0.0;
    for (var u = 0u; u < n; u++) { a += sc[u] * VC[P.d + u * P.c + kvOff + j]; }
    A[h * hs + j] = a * inv;
  }
}`;
      case "argmax": // token = argmax(logits) (first on ties), tokens[pos + 1] = token, pos += 1; n = vocab
        return `${head}
@group(0) @binding(1) var<storage, read_write> S: State;
@group(0) @binding(2) var<storage, read> L: array<f32>;
@group(0) @binding(3) var<storage, read_write> T: array<u32>; // [maxSeq + 1] generated tokens
var<workgroup> bv: array<f32, ${RED}>;
var<workgroup> bi: array<u32, ${RED}>;
@compute @workgroup_size(${RED})
fn main(@builtin(local_invocation_index) t: u32) {
  var v = -3.402823e38;
  var b = 0xffffffffu;
  for (var i = t; i < P.n; i += ${RED}u) { if (L[i] > v) { v = L[i]; b = i; } }
  bv[t] = v;
  bi[t] = b;
  for (var s = ${RED / 2}u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (t < s && (bv[t + s] > bv[t] || (bv[t + s] == bv[t] && bi[t + s] < bi[t]))) {
      bv[t] = bv[t + s];
      bi[t] = bi[t + s];
    }
  }
  workgroupBarrier();
  if (t == 0u) {
    let pos = S.pos + 1u;
    T[pos] = bi[0];
    S.token = bi[0];
    S.pos = pos;
  }
}`;
    }
  },
};

interface Op {
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  x: number;
  y: number;
}

type Step = ({ kind: "op" } & Op) | { kind: "plan"; plan: MatvecPlan };

/**
 * llama2.c's `forward(transformer, token, pos)` on the GPU. Create with
 * {@linkcode GpuDecoder.create}; {@linkcode GpuDecoder.step} feeds one token
 * and returns its logits, {@linkcode GpuDecoder.generate} decodes greedily;
 * {@linkcode GpuDecoder.release} returns every buffer.
 */
export class GpuDecoder {
  /** Next position. */
  pos = 0;
  readonly config: LlamaConfig;

  private constructor(
    readonly gpu: Gpu,
    config: LlamaConfig,
    readonly steps: Step[],
    readonly pick: Step[],
    readonly buffers: Record<"state" | "logits" | "tokens", GPUBuffer>,
    readonly release: () => void,
  ) {
    this.config = config;
  }

  /**
   * Uploads every linear layer (as returned by `linears`), the fp32
   * classifier, embeddings and norms, and compiles the pipelines.
   *
   * @param gpu the device
   * @param weights the model (norms, embeddings and classifier are read from here)
   * @param linears the stored weight of each linear layer; shapes must match the config
   * @param opts sparse mode and tiling
   * @returns the decoder at position 0
   */
  static async create(
    gpu: Gpu,
    weights: LlamaWeights,
    linears: LinearSource,
    opts: GpuDecoderOptions = {},
  ): Promise<GpuDecoder> {
    const c = weights.config;
    const { device, pool } = gpu;
    const { dim, hiddenDim, vocabSize, maxSeqLen, nLayers } = c;
    const kv = kvDim(c), hs = headSize(c);
    const owned = new OwnedBuffers(pool);
    const release = () => owned.releaseAll();
    try {
      const STO = GPUBufferUsage.STORAGE;
      const buf = (floats: number, label: string, extra = 0) => {
        return owned.acquire(
          4 * floats,
          STO | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC | extra,
          label,
        );
      };
      const upload = (a: Float32Array, label: string) => owned.upload(a, 0, label);
      // run state
      const x = buf(dim, "x"), xn = buf(dim, "xn"), q = buf(dim, "q"), att = buf(dim, "att");
      const o = buf(dim, "o"), k = buf(kv, "k"), v = buf(kv, "v");
      const h1 = buf(hiddenDim, "h1"), h3 = buf(hiddenDim, "h3"), h = buf(hiddenDim, "h");
      const logits = buf(vocabSize, "logits");
      const kc = buf(nLayers * maxSeqLen * kv, "key-cache"),
        vc = buf(nLayers * maxSeqLen * kv, "value-cache");
      const state = buf(2, "state"), tokens = buf(maxSeqLen + 1, "tokens");
      const [cosT, sinT] = ropeTables(c, maxSeqLen);
      const cos = upload(cosT, "rope-cos"), sin = upload(sinT, "rope-sin");
      const emb = upload(weights.tokenEmbedding, "embedding");
      const finalNorm = upload(weights.finalNorm, "final-norm");

      const steps: Step[] = [];
      const op = async (
        name: OpParams["op"],
        params: number[],
        bufs: GPUBuffer[],
        workgroups: number,
        into: Step[] = steps,
      ) => {
        const pipeline = await gpu.pipelines.get(OP_KERNEL, { op: name, maxSeq: maxSeqLen });
        const u = owned.acquire(
          32,
          GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
          `${name}-params`,
        );
        const data = new ArrayBuffer(32);
        new Uint32Array(data, 0, 6).set(params.slice(0, 6));
        new Float32Array(data, 24, 2).set(params.slice(6, 8));
        device.queue.writeBuffer(u, 0, data);
        const bindGroup = device.createBindGroup({
          layout: pipeline.getBindGroupLayout(0),
          entries: [u, ...bufs].map((buffer, binding) => ({ binding, resource: { buffer } })),
        });
        const g = dispatchSize(workgroups, device.limits);
        into.push({ kind: "op", pipeline, bindGroup, x: g.x, y: g.y });
      };
      const linear = async (
        w: LinearWeight,
        what: string,
        shape: [number, number],
        input: GPUBuffer,
        out: GPUBuffer,
      ) => {
        if (w.dense.rows !== shape[0] || w.dense.cols !== shape[1]) {
          throw new RangeError(
            `GpuDecoder: ${what} is ${w.dense.rows}×${w.dense.cols}, the config needs ${shape[0]}×${
              shape[1]
            }`,
          );
        }
        const lin = uploadLinear(gpu, w);
        owned.adopt(lin);
        const plan = await createMatvecPlan(gpu, lin, {
          batch: 1,
          x: input,
          y: out,
          sparseMode: opts.sparseMode,
          ...opts.tiling,
        });
        owned.adopt(plan);
        steps.push({ kind: "plan", plan });
      };
      const groups = (n: number) => Math.ceil(n / WG);

      await op("embed", [dim], [state, emb, x], groups(dim));
      for (let l = 0; l < nLayers; l++) {
        const lw = weights.layers[l];
        const src = (name: LinearName) => linears(l, name);
        const base = l * maxSeqLen * kv;
        const attnNorm = upload(lw.attnNorm, "attn-norm"), ffnNorm = upload(lw.ffnNorm, "ffn-norm");
        await op("rmsnorm", [dim, 0, 0, 0, 0, 0, c.normEps], [x, attnNorm, xn], 1);
        await linear(src("wq"), `layers.${l}.wq`, linearShape(c, "wq"), xn, q);
        await linear(src("wk"), `layers.${l}.wk`, linearShape(c, "wk"), xn, k);
        await linear(src("wv"), `layers.${l}.wv`, linearShape(c, "wv"), xn, v);
        await op("rope", [dim, kv, hs, base], [state, q, k, v, kc, vc, cos, sin], groups(dim / 2));
        await op(
          "attention",
          [c.nHeads, c.nKvHeads, hs, kv, base, 0, 1 / Math.sqrt(hs)],
          [state, q, kc, vc, att],
          c.nHeads,
        );
        await linear(src("wo"), `layers.${l}.wo`, linearShape(c, "wo"), att, o);
        await op("add", [dim], [o, x], groups(dim));
        await op("rmsnorm", [dim, 0, 0, 0, 0, 0, c.normEps], [x, ffnNorm, xn], 1);
        await linear(src("w1"), `layers.${l}.w1`, linearShape(c, "w1"), xn, h1);
        await linear(src("w3"), `layers.${l}.w3`, linearShape(c, "w3"), xn, h3);
        await op("swiglu", [hiddenDim], [h1, h3, h], groups(hiddenDim));
        await linear(src("w2"), `layers.${l}.w2`, linearShape(c, "w2"), h, o);
        await op("add", [dim], [o, x], groups(dim));
      }
      await op("rmsnorm", [dim, 0, 0, 0, 0, 0, c.normEps], [x, finalNorm, xn], 1);
      await linear(
        { dense: f32Tensor(weights.classifier, vocabSize, dim) },
        "classifier",
        [vocabSize, dim],
        xn,
        logits,
      );
      const pick: Step[] = []; // greedy decoding only; teacher-forced forward() skips it
      await op("argmax", [vocabSize], [state, logits, tokens], 1, pick);
      return new GpuDecoder(gpu, c, steps, pick, { state, logits, tokens }, release);
    } catch (e) {
      release();
      throw e;
    }
  }

  /** Starts a new sequence at position 0 (the KV cache is overwritten as positions advance). */
  reset(): void {
    this.pos = 0;
  }

  #encode(pass: GPUComputePassEncoder, greedy: boolean): void {
    for (const s of greedy ? [...this.steps, ...this.pick] : this.steps) {
      if (s.kind === "plan") s.plan.encode(pass);
      else {
        pass.setPipeline(s.pipeline);
        pass.setBindGroup(0, s.bindGroup);
        pass.dispatchWorkgroups(s.x, s.y);
      }
    }
  }

  #start(token: number, n: number): void {
    const { vocabSize, maxSeqLen } = this.config;
    if (!(Number.isInteger(token) && token >= 0 && token < vocabSize)) {
      throw new RangeError(
        `GpuDecoder: token ${token} is outside the vocabulary (0..${vocabSize - 1})`,
      );
    }
    if (this.pos + n > maxSeqLen) {
      throw new RangeError(
        `GpuDecoder: position ${this.pos + n - 1} exceeds max_seq_len ${maxSeqLen}`,
      );
    }
    this.gpu.device.queue.writeBuffer(this.buffers.state, 0, new Uint32Array([token, this.pos]));
  }

  /**
   * Feeds `token` at the next position.
   * @param token a token id in 0..vocabSize−1
   * @returns logits [vocabSize] (a fresh array)
   */
  async step(token: number): Promise<Float32Array> {
    this.#start(token, 1);
    const { device } = this.gpu;
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    this.#encode(pass, false);
    pass.end();
    device.queue.submit([enc.finish()]);
    const V = this.config.vocabSize;
    const out = new Float32Array(await readBuffer(this.gpu, this.buffers.logits, 4 * V));
    this.pos++;
    return out;
  }

  /**
   * Teacher-forced decoding: feeds `tokens[t]` at position pos + t for every
   * t, one token at a time through the KV cache exactly as {@linkcode step},
   * and returns every position's logits. The steps of a chunk go into one
   * submit: before each step a copy writes {token, pos} into the state
   * buffer, after it a copy moves the logits into row t of a [chunk, vocab]
   * buffer, which is read back once per chunk.
   *
   * @param tokens the token ids [T], each in 0..vocabSize−1
   * @param opts.chunk positions per submit and readback @default as many as fit in 64 MiB of logits
   * @returns logits [T, vocabSize]
   * @example
   * ```ts
   * const logits = await dec.forward([1, 403, 407]); // [3 · vocab]
   * ```
   */
  async forward(tokens: ArrayLike<number>, opts: { chunk?: number } = {}): Promise<Float32Array> {
    const { vocabSize: V, maxSeqLen } = this.config;
    const T = tokens.length;
    if (this.pos + T > maxSeqLen) {
      throw new RangeError(
        `GpuDecoder.forward(): positions ${this.pos}..${
          this.pos + T - 1
        } exceed max_seq_len ${maxSeqLen}`,
      );
    }
    const feed = new Uint32Array(2 * T); // [T, 2] {token, pos}
    for (let t = 0; t < T; t++) {
      const token = tokens[t];
      if (!(Number.isInteger(token) && token >= 0 && token < V)) {
        throw new RangeError(
          `GpuDecoder.forward(): tokens[${t}] = ${token} is outside the vocabulary (0..${V - 1})`,
        );
      }
      feed[2 * t] = token;
      feed[2 * t + 1] = this.pos + t;
    }
    const limit = Math.min(this.gpu.device.limits.maxBufferSize, 64 * 2 ** 20);
    const chunk = Math.max(1, Math.min(T, opts.chunk ?? Math.floor(limit / (4 * V))));
    const out = new Float32Array(T * V); // [T, vocab]
    if (T === 0) return out;
    const { device, pool } = this.gpu;
    const usage = GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    const feedBuf = pool.acquire(8 * T, usage, "forward-feed");
    const rows = pool.acquire(4 * V * chunk, usage | GPUBufferUsage.STORAGE, "forward-logits");
    try {
      device.queue.writeBuffer(feedBuf, 0, feed);
      for (let t0 = 0; t0 < T; t0 += chunk) {
        const n = Math.min(chunk, T - t0);
        const enc = device.createCommandEncoder();
        for (let t = 0; t < n; t++) {
          enc.copyBufferToBuffer(feedBuf, 8 * (t0 + t), this.buffers.state, 0, 8);
          const pass = enc.beginComputePass();
          this.#encode(pass, false);
          pass.end();
          enc.copyBufferToBuffer(this.buffers.logits, 0, rows, 4 * V * t, 4 * V);
        }
        device.queue.submit([enc.finish()]);
        out.set(new Float32Array(await readBuffer(this.gpu, rows, 4 * V * n)), t0 * V);
      }
    } finally {
      pool.release(feedBuf);
      pool.release(rows);
    }
    this.pos += T;
    return out;
  }

  /**
   * Greedy decoding: feeds `token` at the next position, then the argmax of
   * each step's logits, for `n` steps in one submit (no readback in between).
   * @param token the first token
   * @param n steps
   * @returns the n tokens chosen (argmax after each step)
   */
  async generate(token: number, n: number): Promise<number[]> {
    this.#start(token, n);
    const { device } = this.gpu;
    const enc = device.createCommandEncoder();
    for (let i = 0; i < n; i++) {
      const pass = enc.beginComputePass();
      this.#encode(pass, true);
      pass.end();
    }
    device.queue.submit([enc.finish()]);
    const all = new Uint32Array(
      await readBuffer(this.gpu, this.buffers.tokens, 4 * (this.config.maxSeqLen + 1)),
    );
    const out = [...all.subarray(this.pos + 1, this.pos + 1 + n)];
    this.pos += n;
    return out;
  }
}

/**
 * The linear source of a quantized model: `linears` keyed "layers.{l}.{name}"
 * as quant/methods.ts's `quantizeModel` returns them (QuantizedLinear is a
 * {@linkcode LinearWeight}: packed codes, fp16 scales / tables, CSR part).
 *
 * @param linears the packed linears of every block
 * @returns a source that throws, naming the key, for a missing linear
 * @example
 * ```ts
 * const q = await quantizeModel(weights, defaultSpec("rtn", 4), ctx);
 * const dec = await GpuDecoder.create(gpu, q.weights, quantizedSource(q.linears));
 * ```
 */
export function quantizedSource(linears: ReadonlyMap<string, QuantizedLinear>): LinearSource {
  return (l, name) => {
    const key = linearKey(l, name);
    const w = linears.get(key);
    if (!w) {
      throw new RangeError(
        `quantizedSource(): the quantized model has no linear "${key}" (${linears.size} linears)`,
      );
    }
    return w;
  };
}

/** Index of the largest value (first on ties). */
export function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

/** Names of the linear layers a {@linkcode LinearSource} is asked for, per block. */
export const DECODE_LINEARS: readonly LinearName[] = LINEAR_NAMES;
