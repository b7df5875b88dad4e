/**
 * The LLaMA forward pass over a whole token window at once (prefill), on the
 * CPU, as llama2.c computes it: embeddings → nLayers × (RMSNorm → attention
 * with RoPE and grouped-query heads → residual → RMSNorm → SwiGLU FFN →
 * residual) → final RMSNorm → classifier.
 *
 * The pieces are exported separately because the quantizers and the
 * backward pass need them: GPTQ runs the model block by block on calibration
 * windows, each block only as far as the linears it is solving
 * ({@linkcode block}'s `until`), and records the input of every linear layer
 * (`hooks.onLinearInput`); AWQ scores candidate scales on the attention and
 * FFN sub-blocks alone; model/backward.ts reuses the primitives.
 *
 * @module
 */
import type { LayerWeights, LinearName, LlamaConfig, LlamaWeights } from "./config.ts";
import { headSize, kvDim, ropeTables } from "./config.ts";
import { matmul } from "./matmul.ts";
import { causalAttention } from "./wasm/attention.ts";

/** Observers of a forward pass. */
export interface ForwardHooks {
  /**
   * Called with the input of each linear layer right before it is applied.
   * x: [T, inFeatures], valid only during the call (the buffer is reused).
   * wq, wk and wv share one input, as do w1 and w3; each name is reported.
   */
  onLinearInput?(layer: number, name: LinearName, x: Float32Array, T: number): void;
}

/** Activation buffers for windows of up to `maxT` tokens, allocated once. */
export class RunState {
  readonly maxT: number;
  x: Float32Array; // [maxT, dim] residual stream
  xn: Float32Array; // [maxT, dim] normalized input of a sub-block
  q: Float32Array; // [maxT, dim]
  k: Float32Array; // [maxT, kvDim]
  v: Float32Array; // [maxT, kvDim]
  att: Float32Array; // [maxT, dim] attention output before wo
  out: Float32Array; // [maxT, dim] sub-block output
  h1: Float32Array; // [maxT, hiddenDim]
  h3: Float32Array; // [maxT, hiddenDim]
  logits: Float32Array; // [maxT, vocabSize]
  ropeCos: Float32Array; // [maxT, headSize / 2]
  ropeSin: Float32Array; // [maxT, headSize / 2]

  constructor(readonly config: LlamaConfig, maxT = config.maxSeqLen) {
    const { dim, hiddenDim, vocabSize } = config;
    const kv = kvDim(config);
    this.maxT = maxT;
    this.x = new Float32Array(maxT * dim);
    this.xn = new Float32Array(maxT * dim);
    this.q = new Float32Array(maxT * dim);
    this.k = new Float32Array(maxT * kv);
    this.v = new Float32Array(maxT * kv);
    this.att = new Float32Array(maxT * dim);
    this.out = new Float32Array(maxT * dim);
    this.h1 = new Float32Array(maxT * hiddenDim);
    this.h3 = new Float32Array(maxT * hiddenDim);
    this.logits = new Float32Array(maxT * vocabSize);
    [this.ropeCos, this.ropeSin] = ropeTables(config, maxT);
  }
}

/** RMSNorm's factor of one row: 1 / sqrt(mean(x[o..o+dim)²) + eps). */
export function rmsInverse(x: Float32Array, o: number, dim: number, eps: number): number {
  let ss = 0;
  for (let i = 0; i < dim; i++) ss += x[o + i] * x[o + i];
  return 1 / Math.sqrt(ss / dim + eps);
}

/** out[t] = x[t] / sqrt(mean(x[t]²) + eps) ⊙ weight, for T rows of width dim. */
export function rmsnorm(
  out: Float32Array,
  x: Float32Array,
  weight: Float32Array,
  T: number,
  dim: number,
  eps: number,
): void {
  for (let t = 0; t < T; t++) {
    const o = t * dim;
    const inv = rmsInverse(x, o, dim, eps);
    for (let i = 0; i < dim; i++) out[o + i] = weight[i] * (x[o + i] * inv);
  }
}

/**
 * Rotates adjacent pairs (2i, 2i+1) of every head of `x` [T, width] by the
 * position's angle (llama2.c's RoPE), positions starting at `pos0`.
 */
export function rope(
  x: Float32Array,
  T: number,
  width: number,
  hs: number,
  cos: Float32Array,
  sin: Float32Array,
  pos0 = 0,
): void {
  const half = hs / 2;
  for (let t = 0; t < T; t++) {
    const r = (t + pos0) * half;
    for (let i = 0; i < width; i += 2) {
      const j = r + ((i % hs) >> 1);
      const c = cos[j], s = sin[j];
      const a = x[t * width + i], b = x[t * width + i + 1];
      x[t * width + i] = a * c - b * s;
      x[t * width + i + 1] = a * s + b * c;
    }
  }
}

/** Calls `hooks.onLinearInput` for each of `names`, all reading x [T, inFeatures]. */
function reportInputs(
  hooks: ForwardHooks | undefined,
  layer: number,
  names: readonly LinearName[],
  x: Float32Array,
  T: number,
): void {
  if (!hooks?.onLinearInput) return;
  for (const name of names) hooks.onLinearInput(layer, name, x, T);
}

/** The linears that read the attention RMSNorm's output. */
const QKV: readonly LinearName[] = ["wq", "wk", "wv"];
/** The linears that read the FFN RMSNorm's output. */
const GATE_UP: readonly LinearName[] = ["w1", "w3"];

/**
 * The projections of the attention sub-block for positions 0..T−1:
 * q [T, dim] = RoPE(xn · wqᵀ), k [T, kvDim] = RoPE(xn · wkᵀ),
 * v [T, kvDim] = xn · wvᵀ, from xn [T, dim] and the RoPE tables
 * cos, sin [≥ T, headSize / 2].
 */
export function qkvProjection(
  c: LlamaConfig,
  lw: LayerWeights,
  xn: Float32Array,
  T: number,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  cos: Float32Array,
  sin: Float32Array,
): void {
  const { dim } = c;
  const kv = kvDim(c), hs = headSize(c);
  matmul(q, xn, lw.wq, T, dim, dim);
  matmul(k, xn, lw.wk, T, dim, kv);
  matmul(v, xn, lw.wv, T, dim, kv);
  rope(q, T, dim, hs, cos, sin);
  rope(k, T, kv, hs, cos, sin);
}

/**
 * The SwiGLU gate: out[i] = silu(h1[i]) · h3[i] = h1[i] / (1 + e^−h1[i]) · h3[i]
 * for i < n (h1 = w1·xn, h3 = w3·xn). `out` may be `h1`.
 */
export function swiglu(out: Float32Array, h1: Float32Array, h3: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const a = h1[i];
    out[i] = (a / (1 + Math.exp(-a))) * h3[i];
  }
}

/**
 * A sub-block of block `layer` (weights lw): out [T, dim] from its
 * normalized input xn [T, dim], with s as scratch, each linear's input
 * reported to `hooks` right before it is applied.
 */
export type SubBlock = (
  c: LlamaConfig,
  lw: LayerWeights,
  layer: number,
  xn: Float32Array,
  T: number,
  s: RunState,
  out: Float32Array,
  hooks?: ForwardHooks,
) => void;

/**
 * The attention sub-block: out [T, dim] = wo · softmax-attention(RoPE(wq·xn),
 * RoPE(wk·xn), wv·xn) with a causal mask; xn [T, dim] is the normalized input.
 */
export const attention: SubBlock = (c, lw, layer, xn, T, s, out, hooks) => {
  const { dim, nHeads } = c;
  reportInputs(hooks, layer, QKV, xn, T);
  qkvProjection(c, lw, xn, T, s.q, s.k, s.v, s.ropeCos, s.ropeSin);
  causalAttention(s.att, s.q, s.k, s.v, T, nHeads, c.nKvHeads, headSize(c));
  hooks?.onLinearInput?.(layer, "wo", s.att, T);
  matmul(out, s.att, lw.wo, T, dim, dim);
};

/** The SwiGLU sub-block: out [T, dim] = w2 · (silu(w1·xn) ⊙ w3·xn). */
export const feedForward: SubBlock = (c, lw, layer, xn, T, s, out, hooks) => {
  const { dim, hiddenDim } = c;
  reportInputs(hooks, layer, GATE_UP, xn, T);
  matmul(s.h1, xn, lw.w1, T, dim, hiddenDim);
  matmul(s.h3, xn, lw.w3, T, dim, hiddenDim);
  swiglu(s.h1, s.h1, s.h3, T * hiddenDim);
  hooks?.onLinearInput?.(layer, "w2", s.h1, T);
  matmul(out, s.h1, lw.w2, T, hiddenDim, dim);
};

/**
 * How far {@linkcode block} runs, in the order the block's linears read their
 * inputs: "qkv" stops after the attention RMSNorm (inputs of wq, wk, wv
 * reported), "wo" after the attention (wo's input reported, x not yet
 * updated), "ffn" after the FFN RMSNorm (inputs of w1, w3 reported), "block"
 * runs the whole block.
 */
export type BlockStage = "qkv" | "wo" | "ffn" | "block";

/** The stages of a block in the order it reaches them. */
export const BLOCK_STAGES: readonly BlockStage[] = ["qkv", "wo", "ffn", "block"];

/** Index in {@linkcode BLOCK_STAGES} of the stage after which each linear's input is reported. */
const INPUT_STAGE: Record<LinearName, number> = { wq: 0, wk: 0, wv: 0, wo: 1, w1: 2, w3: 2, w2: 3 };

/**
 * The earliest stage after which the inputs of all of `names` have been
 * reported: how far {@linkcode block} must run to feed them.
 *
 * @example
 * ```ts
 * stageOf(["wk", "wv", "wq"]); // "qkv"
 * stageOf(["wo", "w1"]); // "ffn"
 * ```
 */
export function stageOf(names: readonly LinearName[]): BlockStage {
  let i = 0;
  for (const name of names) i = Math.max(i, INPUT_STAGE[name]);
  return BLOCK_STAGES[i];
}

/**
 * One transformer block applied in place to the residual stream x [T, dim],
 * each linear's input reported to `hooks` right before it is applied. With
 * `until` short of "block" it stops once that stage's inputs are reported
 * (see {@linkcode BlockStage}), leaving x partly updated: callers that stop
 * early pass a scratch copy.
 */
export function block(
  c: LlamaConfig,
  lw: LayerWeights,
  layer: number,
  x: Float32Array,
  T: number,
  s: RunState,
  hooks?: ForwardHooks,
  until: BlockStage = "block",
): void {
  const n = T * c.dim;
  rmsnorm(s.xn, x, lw.attnNorm, T, c.dim, c.normEps);
  if (until === "qkv") {
    reportInputs(hooks, layer, QKV, s.xn, T); // attention() would report them next
    return;
  }
  attention(c, lw, layer, s.xn, T, s, s.out, hooks);
  if (until === "wo") return;
  for (let i = 0; i < n; i++) x[i] += s.out[i];
  rmsnorm(s.xn, x, lw.ffnNorm, T, c.dim, c.normEps);
  if (until === "ffn") {
    reportInputs(hooks, layer, GATE_UP, s.xn, T); // feedForward() would report them next
    return;
  }
  feedForward(c, lw, layer, s.xn, T, s, s.out, hooks);
  for (let i = 0; i < n; i++) x[i] += s.out[i];
}

/** Token embeddings of `tokens` into x [T, dim]; rejects ids outside the vocabulary. */
export function embed(w: LlamaWeights, tokens: ArrayLike<number>, x: Float32Array): void {
  const { dim, vocabSize } = w.config;
  for (let t = 0; t < tokens.length; t++) {
    const id = tokens[t];
    if (!(id >= 0 && id < vocabSize)) {
      throw new RangeError(
        `token ${id} at position ${t} is outside the vocabulary (0..${vocabSize - 1})`,
      );
    }
    x.set(w.tokenEmbedding.subarray(id * dim, (id + 1) * dim), t * dim);
  }
}

/** Final RMSNorm and classifier: logits [T, vocab] from the residual stream x [T, dim]. */
export function head(w: LlamaWeights, x: Float32Array, T: number, s: RunState): Float32Array {
  const { dim, vocabSize, normEps } = w.config;
  rmsnorm(s.xn, x, w.finalNorm, T, dim, normEps);
  const logits = s.logits.subarray(0, T * vocabSize);
  matmul(logits, s.xn, w.classifier, T, dim, vocabSize);
  return logits;
}

/** Options of {@linkcode forward}. */
export interface ForwardOptions {
  /** Reused buffers; allocated for this call when absent. */
  state?: RunState;
  hooks?: ForwardHooks;
}

/**
 * Logits [T, vocabSize] for every position of `tokens` (positions 0..T−1).
 * The returned array is a view into `state.logits`, overwritten by the next
 * call with the same state.
 */
export function forward(
  w: LlamaWeights,
  tokens: ArrayLike<number>,
  opts: ForwardOptions = {},
): Float32Array {
  const c = w.config;
  const T = tokens.length;
  const s = opts.state ?? new RunState(c, Math.max(T, 1));
  if (T > s.maxT) throw new RangeError(`window of ${T} tokens exceeds the run state's ${s.maxT}`);
  if (T > c.maxSeqLen) {
    throw new RangeError(`window of ${T} tokens exceeds the model's max_seq_len ${c.maxSeqLen}`);
  }
  const x = s.x.subarray(0, T * c.dim);
  embed(w, tokens, x);
  for (let l = 0; l < c.nLayers; l++) block(c, w.layers[l], l, x, T, s, opts.hooks);
  return head(w, x, T, s);
}
