/**
 * The LLaMA forward pass over a whole token window at once (prefill), on the
 * CPU, as llama2.c computes it: embeddings → nLayers × (RMSNorm → attention
 * with RoPE and grouped-query heads → residual → RMSNorm → SwiGLU FFN →
 * residual) → final RMSNorm → classifier.
 *
 * {@linkcode block} is the one transformer block every caller runs, with
 * hook points ({@linkcode BlockHooks}) instead of copies: the forward pass
 * runs it plainly; GPTQ's calibration (quant/sequential.ts) runs it block by
 * block, only as far as the linears it is solving (`until`), and feeds the
 * input of each linear to its Hessian (`onLinearInput`); AWQ (quant/awq.ts)
 * records the same inputs and scores candidate scales on the block's own
 * attention and FFN sub-blocks ({@linkcode attention},
 * {@linkcode feedForward}); the backward pass (model/backward.ts) runs it
 * with one set of {@linkcode BlockBuffers} per layer, so that every
 * activation stays saved, and its own attention that keeps the softmax
 * probabilities (`hooks.attention`). model/reference.ts stays a separate,
 * deliberately plain decoder to check all of this against.
 *
 * @module
 */
import type { LayerWeights, LinearName, LlamaConfig, LlamaWeights } from "./config.ts";
import { headSize, kvDim, ropeTables } from "./config.ts";
import { matmul } from "./matmul.ts";
import { causalAttention } from "./wasm/attention.ts";
import { FORWARD_KERNELS } from "./wasm/kernels.ts";

/**
 * Hook points of {@linkcode block}: observers of the inputs of each linear
 * and of the residual stream, and a replacement for the attention kernel.
 */
export interface BlockHooks {
  /**
   * Called with the input of each linear layer right before it is applied.
   * x: [T, inFeatures], valid only during the call (the buffer is reused).
   * wq, wk and wv share one input, as do w1 and w3; each name is reported.
   */
  onLinearInput?(layer: number, name: LinearName, x: Float32Array, T: number): void;
  /**
   * Called after `onLinearInput` with the same input x [T, inFeatures]: the
   * array [≥ T, inFeatures] the linear reads instead (x itself must not be
   * modified: wq, wk, wv and w1, w3 share it), or undefined to keep x.
   */
  replaceLinearInput?(
    layer: number,
    name: LinearName,
    x: Float32Array,
    T: number,
  ): Float32Array | undefined;
  /**
   * Called after each linear computed y = x · Wᵀ, y [≥ T, outFeatures] (its
   * first T rows); may overwrite those rows in place (eval/wa_perplexity.ts
   * puts the W×A kernels' outputs there).
   */
  onLinearOutput?(layer: number, name: LinearName, y: Float32Array, T: number): void;
  /**
   * Computes y [≥ T, outFeatures] (its first T rows) of a linear itself from
   * its input x [T, inFeatures] (after `onLinearInput`), instead of x · Wᵀ
   * with the block's fp32 weight; `replaceLinearInput` is then not called.
   * Returns false to leave the linear to the matmul (quant/wa_int.ts computes
   * integer weight × activation products here).
   */
  linear?(layer: number, name: LinearName, y: Float32Array, x: Float32Array, T: number): boolean;
  /**
   * Called after each residual addition with the residual stream x [T, dim]:
   * `after` "attention" (x + attention) and "block" (the block's output).
   * Valid only during the call.
   */
  onResidual?(layer: number, after: "attention" | "block", x: Float32Array, T: number): void;
  /**
   * Called after RoPE with b.q [T, dim], b.k [T, kvDim] (both rotated) and
   * b.v [T, kvDim], right before the attention reads them; may change them
   * in place (quant/act_quant.ts fake-quantizes Q, K and V here).
   */
  onQkv?(layer: number, b: BlockBuffers, T: number): void;
  /**
   * Computes b.att [T, dim] from b.q, b.k (after RoPE) and b.v, instead of
   * the default {@linkcode causalAttention} (the backward pass keeps the
   * softmax probabilities).
   */
  attention?(layer: number, b: BlockBuffers, T: number): void;
}

/** The hooks of {@linkcode forward}: those of {@linkcode block}. */
export type ForwardHooks = BlockHooks;

/**
 * Where {@linkcode block} writes its activations, each with room for the
 * window: {@linkcode RunState} reuses one set for every layer (the two norm
 * outputs share a buffer, and the gate is computed in place of h1); the
 * backward pass passes one set per layer so that all of them stay saved.
 */
export interface BlockBuffers {
  xnAttn: Float32Array; // [maxT, dim] attention RMSNorm output: input of wq, wk, wv
  q: Float32Array; // [maxT, dim] queries after RoPE
  k: Float32Array; // [maxT, kvDim] keys after RoPE
  v: Float32Array; // [maxT, kvDim]
  att: Float32Array; // [maxT, dim] attention output: input of wo
  out: Float32Array; // [maxT, dim] sub-block output (before the residual addition)
  xnFfn: Float32Array; // [maxT, dim] FFN RMSNorm output: input of w1, w3
  h1: Float32Array; // [maxT, hiddenDim] w1 · xn (before the gate, unless gated is h1)
  h3: Float32Array; // [maxT, hiddenDim] w3 · xn
  gated: Float32Array; // [maxT, hiddenDim] silu(h1) ⊙ h3: input of w2; may be h1
  ropeCos: Float32Array; // [≥ maxT, headSize / 2]
  ropeSin: Float32Array; // [≥ maxT, headSize / 2]
}

/** Activation buffers for windows of up to `maxT` tokens, allocated once. */
export class RunState implements BlockBuffers {
  readonly maxT: number;
  x: Float32Array; // [maxT, dim] residual stream
  xn: Float32Array; // [maxT, dim] normalized input of a sub-block (xnAttn and xnFfn)
  q: Float32Array; // [maxT, dim]
  k: Float32Array; // [maxT, kvDim]
  v: Float32Array; // [maxT, kvDim]
  att: Float32Array; // [maxT, dim] attention output before wo
  out: Float32Array; // [maxT, dim] sub-block output
  h1: Float32Array; // [maxT, hiddenDim] w1 · xn, then the gate (gated)
  h3: Float32Array; // [maxT, hiddenDim]
  logits: Float32Array; // [maxT, vocabSize]
  ropeCos: Float32Array; // [maxT, headSize / 2]
  ropeSin: Float32Array; // [maxT, headSize / 2]
  xnAttn: Float32Array; // = xn
  xnFfn: Float32Array; // = xn
  gated: Float32Array; // = h1

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
    this.xnAttn = this.xnFfn = this.xn;
    this.gated = this.h1;
  }
}

/** RMSNorm's factor of one row: 1 / sqrt(mean(x[o..o+dim)²) + eps). */
export function rmsInverse(x: Float32Array, o: number, dim: number, eps: number): number {
  let ss = 0;
  for (let i = 0; i < dim; i++) ss += x[o + i] * x[o + i];
  return 1 / Math.sqrt(ss / dim + eps);
}

/**
 * out[t] = x[t] / sqrt(mean(x[t]²) + eps) ⊙ weight, for T rows of width dim;
 * plain version, float64 per element.
 */
export function rmsnormRef(
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
 * RMSNorm as the forward pass computes it, same contract as
 * {@linkcode rmsnormRef}: in WebAssembly (model/wasm/kernels.ts, the same
 * float64 arithmetic up to the order of the sum of squares) where it exists
 * and dim is a multiple of 4, else rmsnormRef.
 */
export function rmsnorm(
  out: Float32Array,
  x: Float32Array,
  weight: Float32Array,
  T: number,
  dim: number,
  eps: number,
): void {
  if (FORWARD_KERNELS && dim % 4 === 0 && dim > 0) {
    FORWARD_KERNELS.rmsnorm(out, x, weight, T, dim, eps);
  } else rmsnormRef(out, x, weight, T, dim, eps);
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
  hooks: BlockHooks | undefined,
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
 * Linear `name` of block `layer`: y [T, outF] = x [T, inF] · Wᵀ (W [outF, inF]),
 * x first shown to `hooks.onLinearInput`, then to `hooks.linear` (which may
 * compute y itself) or else `hooks.replaceLinearInput`.
 */
function linear(
  hooks: BlockHooks | undefined,
  layer: number,
  name: LinearName,
  y: Float32Array,
  x: Float32Array,
  W: Float32Array,
  T: number,
  inF: number,
  outF: number,
): void {
  hooks?.onLinearInput?.(layer, name, x, T);
  if (!hooks?.linear?.(layer, name, y, x, T)) {
    matmul(y, hooks?.replaceLinearInput?.(layer, name, x, T) ?? x, W, T, inF, outF);
  }
  hooks?.onLinearOutput?.(layer, name, y, T);
}

/**
 * The SwiGLU gate: out[i] = silu(h1[i]) · h3[i] = h1[i] / (1 + e^−h1[i]) · h3[i]
 * for i < n (h1 = w1·xn, h3 = w3·xn), plain version: float64 per element,
 * rounded to float32. `out` may be `h1`.
 */
export function swigluRef(out: Float32Array, h1: Float32Array, h3: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const a = h1[i];
    out[i] = (a / (1 + Math.exp(-a))) * h3[i];
  }
}

/**
 * The SwiGLU gate as the forward pass computes it, same contract as
 * {@linkcode swigluRef}: in WebAssembly SIMD (model/wasm/kernels.ts, float32,
 * e^−a by a polynomial; within a few ulp of swigluRef and about 15× faster)
 * where it exists, else swigluRef.
 */
export const swiglu: (out: Float32Array, h1: Float32Array, h3: Float32Array, n: number) => void =
  FORWARD_KERNELS?.swiglu ?? swigluRef;

/**
 * A sub-block of block `layer` (weights lw): out [T, dim] from its
 * normalized input xn [T, dim], with b for its activations, each linear's
 * input shown to `hooks` right before it is applied.
 */
export type SubBlock = (
  c: LlamaConfig,
  lw: LayerWeights,
  layer: number,
  xn: Float32Array,
  T: number,
  b: BlockBuffers,
  out: Float32Array,
  hooks?: BlockHooks,
) => void;

/**
 * The attention sub-block: out [T, dim] = wo · softmax-attention(RoPE(wq·xn),
 * RoPE(wk·xn), wv·xn) with a causal mask (grouped-query heads, positions
 * 0..T−1); xn [T, dim] is the normalized input. q, k, v and the attention
 * output stay in b.
 */
export const attention: SubBlock = (c, lw, layer, xn, T, b, out, hooks) => {
  const { dim, nHeads } = c;
  const kv = kvDim(c), hs = headSize(c);
  linear(hooks, layer, "wq", b.q, xn, lw.wq, T, dim, dim);
  linear(hooks, layer, "wk", b.k, xn, lw.wk, T, dim, kv);
  linear(hooks, layer, "wv", b.v, xn, lw.wv, T, dim, kv);
  rope(b.q, T, dim, hs, b.ropeCos, b.ropeSin);
  rope(b.k, T, kv, hs, b.ropeCos, b.ropeSin);
  hooks?.onQkv?.(layer, b, T);
  if (hooks?.attention) hooks.attention(layer, b, T);
  else causalAttention(b.att, b.q, b.k, b.v, T, nHeads, c.nKvHeads, hs);
  linear(hooks, layer, "wo", out, b.att, lw.wo, T, dim, dim);
};

/**
 * The SwiGLU sub-block: out [T, dim] = w2 · (silu(w1·xn) ⊙ w3·xn); h1, h3
 * and the gate stay in b.
 */
export const feedForward: SubBlock = (c, lw, layer, xn, T, b, out, hooks) => {
  const { dim, hiddenDim } = c;
  linear(hooks, layer, "w1", b.h1, xn, lw.w1, T, dim, hiddenDim);
  linear(hooks, layer, "w3", b.h3, xn, lw.w3, T, dim, hiddenDim);
  swiglu(b.gated, b.h1, b.h3, T * hiddenDim);
  linear(hooks, layer, "w2", out, b.gated, lw.w2, T, hiddenDim, dim);
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
 * One transformer block applied in place to the residual stream x [T, dim]:
 * x += attention(rmsnorm(x)); x += feedForward(rmsnorm(x)), with the
 * activations in b and the hook points of {@linkcode BlockHooks}. With
 * `until` short of "block" it stops once that stage's inputs are reported
 * (see {@linkcode BlockStage}), leaving x partly updated: callers that stop
 * early pass a scratch copy.
 *
 * @param c the model's config
 * @param lw the block's weights (read only)
 * @param layer the block's index, passed to the hooks
 * @param x the residual stream [≥ T, dim], updated in place
 * @param T tokens, positions 0..T−1
 * @param b activation buffers (a {@linkcode RunState}, or one set per layer)
 * @param hooks observers and replacements
 * @param until how far to run @default "block"
 * @example
 * ```ts
 * const s = new RunState(w.config, T);
 * block(w.config, w.layers[0], 0, x, T, s, {
 *   onLinearInput: (l, name, xin, T) => console.log(l, name, xin.length / T),
 * });
 * ```
 */
export function block(
  c: LlamaConfig,
  lw: LayerWeights,
  layer: number,
  x: Float32Array,
  T: number,
  b: BlockBuffers,
  hooks?: BlockHooks,
  until: BlockStage = "block",
): void {
  const n = T * c.dim;
  rmsnorm(b.xnAttn, x, lw.attnNorm, T, c.dim, c.normEps);
  if (until === "qkv") {
    reportInputs(hooks, layer, QKV, b.xnAttn, T); // attention() would report them next
    return;
  }
  attention(c, lw, layer, b.xnAttn, T, b, b.out, hooks);
  if (until === "wo") return;
  for (let i = 0; i < n; i++) x[i] += b.out[i];
  hooks?.onResidual?.(layer, "attention", x, T);
  blockAfterAttention(c, lw, layer, x, T, b, hooks, until);
}

/**
 * The rest of {@linkcode block} from the residual stream after the
 * attention: x += feedForward(rmsnorm(x)) in place, the very operations
 * block() runs. With `until` "ffn" it stops once the inputs of w1 and w3
 * are reported; with `residual` false the FFN's output is left in b.out and
 * x is not changed. A caller that keeps the stream after the attention (a
 * calibration pass whose attention is final) runs the FFN from it without
 * the attention again.
 *
 * @param x the residual stream after the attention [≥ T, dim]
 * @param until "ffn" (stop after the FFN RMSNorm) or "block" @default "block"
 * @param residual whether to add the FFN's output to x @default true
 * @example
 * ```ts
 * block(c, lw, 0, x, T, s, undefined, "ffn"); // x: the stream after the attention
 * blockAfterAttention(c, lw, 0, x, T, s); // x: the block's output, as block() gives it
 * ```
 */
export function blockAfterAttention(
  c: LlamaConfig,
  lw: LayerWeights,
  layer: number,
  x: Float32Array,
  T: number,
  b: BlockBuffers,
  hooks?: BlockHooks,
  until: "ffn" | "block" = "block",
  residual = true,
): void {
  rmsnorm(b.xnFfn, x, lw.ffnNorm, T, c.dim, c.normEps);
  if (until === "ffn") {
    reportInputs(hooks, layer, GATE_UP, b.xnFfn, T); // feedForward() would report them next
    return;
  }
  feedForward(c, lw, layer, b.xnFfn, T, b, b.out, hooks);
  if (!residual) return;
  const n = T * c.dim;
  for (let i = 0; i < n; i++) x[i] += b.out[i];
  hooks?.onResidual?.(layer, "block", x, T);
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
