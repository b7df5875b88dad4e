/**
 * AWQ: activation-aware weight quantization (Lin et al., 2023), following the
 * official code (mit-han-lab/llm-awq, awq/quantize/pre_quant.py `run_awq`,
 * auto_scale.py, auto_clip.py, quantizer.py) step by step:
 *
 * For each block i, on the block's full-precision inputs:
 *  1. Run the ORIGINAL block on every calibration window, recording the input
 *     of every linear (`input_feat`); its outputs are block i+1's inputs.
 *     (run_awq computes `inps = layer(inps)` right after collecting the
 *     features, before any scaling, so every block sees the full-precision
 *     model's hidden states; the scaled block would give the same values up
 *     to rounding, since scaling is an exact reparametrization.)
 *  2. auto_scale_block: for each group (prev_op, linears, input, module to
 *     inspect) of a LlamaDecoderLayer —
 *       (attnNorm, [wq, wk, wv], attention input, attention sub-block);
 *       (wv, [wo], wo input, wo)  ONLY when wv and wo have the same shape
 *         (llm-awq PR #67: skipped under grouped-query attention);
 *       (ffnNorm, [w1, w3], FFN input, FFN sub-block);
 *       (w3, [w2], w2 input, w2) —
 *     x_max = mean_t |x[t, :]| (get_act_scale); for ratio = k / nGrid,
 *     k = 0..nGrid−1: s = max(x_max^ratio, 1e-4), s /= sqrt(max(s)·min(s));
 *     each linear of the group becomes Q(W·diag(s))·diag(s)⁻¹ (the others
 *     stay full precision); loss = mean (out − out_fp)² over the inspected
 *     module's output; the first ratio with the smallest loss wins (ratio 0
 *     is s = 1, plain round-to-nearest, so the chosen loss is never worse).
 *     All searches of a block use its original weights.
 *  3. apply_scale: prev norm weight /= s (scale_ln_fcs) or prev linear's
 *     output rows /= s (scale_fc_fc); the group's input columns *= s; the
 *     recorded inputs /= s.
 *  4. auto_clip_block, for every linear but wq and wk: per (row, group),
 *     max_val = amax|w| · (1 − k/nGrid) for k = 0..⌊maxShrink·nGrid⌋−1, w
 *     clamped to ±max_val and pseudo-quantized, error = mean over sampled
 *     tokens of (x·w_q − x·w)² within the group; the first smallest wins.
 *     Tokens are sampled as `input_feat[0::N // nSampleTokens]` (every k-th
 *     of the N calibration tokens, window-major); when N < nSampleTokens the
 *     official slice step would be 0 (an error in PyTorch) and all tokens are
 *     used instead. apply_clip clamps the weights.
 *  5. Every linear is quantized with pseudo_quantize_tensor
 *     ({@linkcode awqQuantizeTensor}).
 *
 * Work, against the official protocol (checked step by step): the
 * collection (run_awq's `inps = layer(inps)` with the feature hooks), in
 * one pass, or for a block past `featureBudget` in three stages
 * ({@linkcode FEATURE_STAGES}: the attention's features, then the FFN's
 * from the stream after the attention, then w2's input, the FFN's
 * up-projection computed a second time), which also
 * records the attention and FFN sub-blocks' outputs, the `org_out` of every
 * scale search (the official code recomputes it once per group; the
 * numbers are the same); then per scaled
 * group `n_grid` = 20 evaluations of the inspected module (self_attn for
 * q/k/v, o_proj for v→o, mlp for gate/up, down_proj for down) on every
 * calibration token, as `_search_module_scale`; per clipped linear
 * ⌊max_shrink · n_grid⌋ = 10 shrink steps on the ⌈N / ⌊N / 512⌋⌉ tokens
 * auto_clip_layer samples (its output-channel batches of 256 only bound GPU
 * memory and change no number).
 *
 * How the search runs ({@linkcode searchSse}): the inspected module is
 * rebuilt from model/forward.ts's own pieces in its order (WebAssembly
 * matmul, RoPE, the WebAssembly causal attention, the SwiGLU gate), so the
 * original weights give the recorded org_out to the bit (tested), on the
 * recorded inputs (no block is re-run). A scale task evaluates one ratio
 * of one group (`ratiosPerTask`: a shape-only rule; {@linkcode searchSse}
 * can batch several, their attention outputs or gates going through o_proj
 * or down_proj in one matmul). Each
 * ratio's weights get a matmul of their own: stacking the 20 ratios' weights
 * in one call, as a GPU would, was about 3× slower per multiply-add on this
 * host once the operands left the L2 cache. Clip tasks are blocks of
 * rows. Both run on the worker pool ({@linkcode awqQuantizeModelParallel})
 * over features in shared memory, results folded in task order, so the
 * numbers are the same on any number of workers. The blocks run one at a
 * time ({@linkcode AwqSequential}), so a model is quantized block by block
 * from a model/weight_source.ts source (eval/quantize_stream.ts).
 *
 * Cost on stories260K (8 heads of 8, windows of 512): the q/k/v search runs
 * the causal attention 20 × 69 times per block, 6,900 calls for the model,
 * about 3 ms each on one core of the CI host: about 20 s of CPU, more than
 * GPTQ's whole run there; the attention kernel (model/wasm/kernels.wat
 * `attention_hs8`) sets AWQ's floor.
 *
 * Memory: a block whose features pass `featureBudget` (256 MiB by default)
 * is collected stage by stage, each stage's features dropped once its
 * groups are searched (the clip search keeps only its sampled tokens), so
 * at most the block's inputs and one stage's features are alive: at LLaMA-7B (dim 4096, hidden 11008)
 * with N = 35k calibration tokens, w2's input and the FFN output, 2.1 GB,
 * where holding every feature of the block took 4.4 GB (measured at dim 256,
 * hidden 640, N = 35,328: peak RSS 388 → 243 MiB). run_awq itself holds
 * every feature of the block (on the GPU). A smaller block (stories260K:
 * 70 MB) is collected in one stage, every feature at once.
 *
 * Features: the block's calibration features (the inputs of the scaled
 * groups, the sub-blocks' outputs, mean |x| per channel) come from an
 * {@linkcode AwqFeatureSource} (`opts.features`): by default
 * {@linkcode cpuFeatureSource}, model/forward.ts's block on this thread; a
 * caller may compute them elsewhere (eval/ on a GPU: quant/ never imports
 * kernels/). AWQ advances the residual stream itself with the returned
 * sub-block outputs (block's own float32 additions), unless the source owns
 * the stream ({@linkcode ownsStream}: eval/'s GPU source keeps every
 * window's stream on the device from the embeddings to the last block and
 * makes the same additions there); then AWQ holds no copy of it.
 *
 * Calibration: whatever windows the caller hands in. The CLI draws run_awq's
 * (datasets/awq_calibration.ts, llm-awq get_calib_dataset: 128 texts of
 * ≤ 512 tokens, concatenated, cut into ⌊Σ / 512⌋ blocks of 512), the texts
 * being the C4 calibration pool's documents in order where the official code
 * takes shuffled pile-val: with the stories260K tokenizer 69 blocks (35,328
 * tokens, 54% of GPTQ's 128 windows of 512; the search's work is
 * proportional to the tokens).
 *
 * Differences from the official code, all of precision only: activations
 * and weights are fp32 (not fp16) and sums are accumulated in float64; the
 * quantization scales are rounded to fp16, as they are stored (and as the
 * fp16 official code computes them); the clip error starts at +∞ rather
 * than 1e9 (so k = 0, no clipping, is always a candidate).
 *
 * Group size: as in pseudo_quantize_tensor (`assert cols % q_group_size ==
 * 0`), a group size must divide the input width of every linear (dim and
 * hiddenDim); `groupSize` null (or undefined) means one group per row (AWQ's
 * q_group_size = −1). AWQ's default 128 lives in quant/spec.ts DEFAULTS. For
 * stories260K (widths 64 and 172) the valid sizes are 1, 2, 4, or per-row.
 *
 * @module
 */
import type { LayerWeights, LinearName, LlamaConfig, LlamaWeights } from "../model/config.ts";
import { headSize, kvDim, LINEAR_NAMES, linearShape } from "../model/config.ts";
import {
  block,
  blockAfterAttention,
  type BlockHooks,
  rope,
  RunState,
  stageOf,
  swiglu,
} from "../model/forward.ts";
import { causalAttention } from "../model/wasm/attention.ts";
import { type ProgressCallback, runTasks, type TaskHandler } from "../model/pool.ts";
import { matmul } from "../model/matmul.ts";
import { checkBits, dequantizeDense, type QuantizedLinear, type UniformTensor } from "./format.ts";
import {
  gridMaxq,
  maxqField,
  maxqOf,
  quantizeUniform,
  quantizeValue,
  roundHalfEven,
  storedScale,
  type UniformGrid,
} from "./rtn.ts";
import { checkWindows, embedWindows, since } from "./sequential.ts";
import { type AwqSpec, DEFAULT_WORKERS, DEFAULTS } from "./spec.ts";

/** Options of {@linkcode awqQuantizeModel}; defaults are llm-awq's. */
export interface AwqOptions {
  /** Bits per weight (w_bit), 2..8. */
  bits: number;
  /** Columns per group (q_group_size); must divide dim and hiddenDim; null: one group per row. @default null */
  groupSize?: number | null;
  /**
   * Symmetric grid (zero_point=False: codes −2^(b−1)..2^(b−1)−1, zero 0).
   * @default false (llm-awq's zero_point=True)
   */
  sym?: boolean;
  /** Bit balance: five levels at 2 bits (quant/rtn.ts), in the searches too. @default false */
  bitBalance?: boolean;
  /** Number of scale ratios and clip-grid denominator (n_grid). @default DEFAULTS.awq.nGrid (20) */
  nGrid?: number;
  /** Largest fraction of amax|w| that clipping may remove (max_shrink). @default DEFAULTS.awq.maxShrink (0.5) */
  maxShrink?: number;
  /** Tokens the clip search samples (n_sample_token). @default DEFAULTS.awq.nSampleTokens (512) */
  nSampleTokens?: number;
  /** Search the per-channel scales (run_awq's auto_scale). @default true */
  autoScale?: boolean;
  /** Search the clipping ranges (run_awq's mse_range). @default true */
  autoClip?: boolean;
  /**
   * Worker threads of {@linkcode awqQuantizeModelParallel} (0 = this
   * thread); the one-thread {@linkcode awqQuantizeModel} ignores it.
   * @default DEFAULT_WORKERS (quant/spec.ts: the number of cores)
   */
  workers?: number;
  /**
   * Bytes of calibration features a block may hold at once: a block whose
   * features all fit is collected in one stage ({@linkcode WHOLE_BLOCK_STAGE},
   * less work), a larger one stage by stage ({@linkcode FEATURE_STAGES}, at
   * most one stage's features alive). The same numbers either way.
   * @default DEFAULT_FEATURE_BUDGET (256 MiB)
   */
  featureBudget?: number;
  /**
   * Where each block's calibration features come from (see
   * {@linkcode AwqFeatureSource}). @default the CPU forward ({@linkcode cpuFeatureSource})
   */
  features?: AwqFeatureSource;
  /** Called with a one-line message after each stage of each block. */
  log?: (message: string) => void;
  /**
   * Called after every step of the search: each scale ratio of each group
   * and each clipped linear, of every layer — (steps done, steps, what).
   */
  onProgress?: ProgressCallback;
}

/**
 * The {@linkcode AwqOptions} of a resolved AWQ spec (quant/spec.ts), for
 * every driver (quant/registry.ts's whole model, eval/quantize_stream.ts's
 * block by block), so that they search with the same settings.
 *
 * @param spec a resolved AWQ spec
 * @param ctx workers, log and progress
 * @returns the options
 */
export function awqSpecOptions(
  spec: AwqSpec,
  ctx: Pick<AwqOptions, "workers" | "log" | "onProgress">,
): AwqOptions {
  return {
    bits: spec.bits,
    groupSize: spec.groupSize,
    bitBalance: spec.bitBalance,
    nGrid: spec.nGrid,
    maxShrink: spec.maxShrink,
    nSampleTokens: spec.nSampleTokens,
    ...ctx,
  };
}

/** The grid of {@linkcode awqQuantizeTensor} (pseudo_quantize_tensor's arguments). */
export interface AwqGrid {
  bits: number;
  /** Columns per group; the row width for one group per row. Must divide cols. */
  groupSize: number;
  /** zero_point=False. @default false */
  sym?: boolean;
  /** Five levels at 2 bits (asymmetric; quant/rtn.ts `gridMaxq`). @default false */
  bitBalance?: boolean;
}

/** The grid and search settings of a model-level search: groupSize null = one group per row. */
export interface AwqSearchGrid {
  bits: number;
  groupSize?: number | null;
  sym?: boolean;
  bitBalance?: boolean;
  /** @default DEFAULTS.awq.nGrid (20) */
  nGrid?: number;
}

/** The operation whose output is divided by the scales of a group. */
export type AwqPrevOp = "attnNorm" | "wv" | "ffnNorm" | "w3";

/** The result of one `_search_module_scale` (one scaled group of one block). */
export interface AwqScaleSearch {
  layer: number;
  prevOp: AwqPrevOp;
  /** The linears whose input columns are multiplied by `scales`. */
  linears: LinearName[];
  scales: Float32Array; // [inFeatures of linears]
  /** The chosen ratio k / nGrid. */
  ratio: number;
  /** Loss of the chosen ratio: mean squared output error of the inspected module. */
  loss: number;
  /** Loss of every ratio k / nGrid, k = 0..nGrid−1 (history[0] is plain RTN). */
  history: Float64Array; // [nGrid]
}

/** The clipping chosen for one linear (auto_clip_layer's best_max_val). */
export interface AwqClip {
  layer: number;
  name: LinearName;
  /** Weights of row r, group g are clamped to ±maxVal[r, g]. */
  maxVal: Float32Array; // [rows, nGroups]
  /** How many (row, group) pairs were clipped at all (maxVal < amax|w|). */
  clipped: number;
}

/** Timings and facts of an AWQ run. */
export interface AwqStats {
  seconds: number;
  /** Feature collection (running the original blocks). */
  collectSeconds: number;
  scaleSeconds: number;
  clipSeconds: number;
  quantizeSeconds: number;
  windows: number;
  /** Calibration tokens (Σ window lengths). */
  tokens: number;
  /** Tokens sampled by the clip search. */
  clipTokens: number;
  /** Groups of auto_scale_block not searched, with the reason. */
  skipped: string[];
}

/** The result of {@linkcode awqQuantizeModel}. */
export interface AwqResult {
  /** Scaled norms, scaled+clipped+fake-quantized linears; everything else shared with the input. */
  weights: LlamaWeights;
  /** Keys "layers.{l}.{name}"; weights' linears equal dequantize() of these. */
  linears: Map<string, QuantizedLinear>;
  /** Per layer, the scaled groups in auto_scale_block's order. */
  scales: AwqScaleSearch[][];
  /** Per layer, the clipped linears in named_modules order (wv, wo, w1, w3, w2). */
  clips: AwqClip[][];
  stats: AwqStats;
}

/**
 * AWQ's grid (pseudo_quantize_tensor's scale and zero) as a quant/rtn.ts
 * {@linkcode UniformGrid}, so AWQ shares the one quantization loop
 * (quantizeUniform) and GPTQ's solver could run on it.
 *
 * zero_point (asymmetric): scale = max(max − min, 1e-5) / (2^b − 1),
 * zero = clamp(−round(min / scale), 0, 2^b − 1),
 * q = clamp(round(w / scale) + zero, 0, 2^b − 1), w_q = (q − zero)·scale.
 * Symmetric: scale = max(amax|w|, 1e-5) / (2^(b−1) − 1), zero = 0,
 * q = clamp(round(w / scale), −2^(b−1), 2^(b−1) − 1); the stored code is
 * q + 2^(b−1) and the stored zero 2^(b−1), so that w_q = scale·(code − zero)
 * in both cases (quant/format.ts's UniformTensor) and the code is
 * rtn.ts's quantizeValue(w, scale, zero, 2^b − 1) in both. The scale is
 * rounded to fp16 before use (rtn.ts's storedScale: never 0). Arithmetic is
 * fp32 like torch's, with halves rounded to even like torch.round. Unlike
 * GPTQ's min-max grid, the range is the group's own [min, max] (0 need not
 * be in it).
 *
 * @param bits 2..8
 * @param sym zero_point=False @default false
 * @param bitBalance five levels at 2 bits, asymmetric only (hi = 4) @default false
 * @example
 * ```ts
 * awqGrid(2).params([0, 1, 2, 3], 0, 4, "W"); // { scale: 1, zero: 0 }
 * ```
 */
export function awqGrid(bits: number, sym = false, bitBalance = false): UniformGrid {
  checkBits(bits);
  const f = Math.fround;
  const maxq = gridMaxq(bits, sym, bitBalance);
  return {
    bits,
    sym,
    ...maxqField(bits, maxq),
    params(w, start, end, what) {
      let max = -Infinity, min = Infinity;
      for (let i = start; i < end; i++) {
        const v = w[i];
        if (v > max) max = v;
        if (v < min) min = v;
      }
      if (sym) {
        const hi = 2 ** (bits - 1) - 1;
        return {
          scale: storedScale(f(Math.max(max, -min, 1e-5) / hi), what),
          zero: 2 ** (bits - 1),
        };
      }
      const hi = maxq;
      const scale = storedScale(f(Math.max(f(max - min), 1e-5) / hi), what);
      return { scale, zero: Math.min(Math.max(-roundHalfEven(f(min / scale)), 0), hi) };
    },
  };
}

/**
 * pseudo_quantize_tensor on one group w[off .. off + n) with `grid`
 * ({@linkcode awqGrid}): writes the fake-quantized values to wq (same
 * positions). Returns [scale, zero] as stored.
 */
function quantizeGroup(
  w: ArrayLike<number>,
  off: number,
  n: number,
  grid: UniformGrid,
  wq: Float32Array,
): [number, number] {
  const { scale, zero } = grid.params(w, off, off + n, "AWQ group");
  const maxq = grid.maxq ?? maxqOf(grid.bits);
  for (let i = off; i < off + n; i++) {
    wq[i] = (quantizeValue(w[i], scale, zero, maxq) - zero) * scale;
  }
  return [scale, zero];
}

/** Checks a grid against a weight width; returns the group size. */
function groupFor(grid: AwqGrid, cols: number, fn: string): number {
  checkBits(grid.bits, `${fn}: bits`);
  const g = grid.groupSize;
  if (!Number.isInteger(g) || g < 1 || cols % g !== 0) {
    throw new RangeError(
      `${fn}: groupSize must be a positive divisor of the row width ${cols} ` +
        `(pseudo_quantize_tensor asserts cols % q_group_size == 0), got ${g}`,
    );
  }
  return g;
}

/**
 * AWQ's fake quantization (pseudo_quantize_tensor) of W [rows, cols]: the
 * fp32 weights the quantized tensor stands for. Writes to `out` when given.
 * @example
 * ```ts
 * const wq = awqPseudoQuantize(new Float32Array([0, 1, 2, 3]), 1, 4, { bits: 2, groupSize: 4 });
 * ```
 */
export function awqPseudoQuantize(
  W: Float32Array,
  rows: number,
  cols: number,
  grid: AwqGrid,
  out: Float32Array = new Float32Array(rows * cols),
): Float32Array {
  const g = groupFor(grid, cols, "awqPseudoQuantize()");
  const n = rows * cols;
  const uniform = awqGrid(grid.bits, grid.sym ?? false, grid.bitBalance ?? false);
  for (let off = 0; off < n; off += g) quantizeGroup(W, off, g, uniform, out);
  return out;
}

/**
 * AWQ's pseudo_quantize_tensor(W, get_scale_zp=True) of W [rows, cols] as a
 * {@linkcode UniformTensor}: scales are AWQ's (fp16), zeros AWQ's integer
 * zero points (asymmetric) or 2^(b−1) (symmetric; AWQ's signed code q is
 * stored as q + 2^(b−1)), so that dequantize() gives exactly AWQ's w_q.
 * @example
 * ```ts
 * const q = awqQuantizeTensor(new Float32Array(8).fill(1), 2, 4, { bits: 3, groupSize: 4 });
 * ```
 */
export function awqQuantizeTensor(
  W: Float32Array,
  rows: number,
  cols: number,
  grid: AwqGrid,
): UniformTensor {
  const g = groupFor(grid, cols, "awqQuantizeTensor()");
  if (W.length !== rows * cols) {
    throw new RangeError(`awqQuantizeTensor(): expected ${rows}×${cols} weights, got ${W.length}`);
  }
  return quantizeUniform(
    W,
    rows,
    cols,
    g,
    awqGrid(grid.bits, grid.sym ?? false, grid.bitBalance ?? false),
    "AWQ group",
  );
}

/** get_act_scale: mean over tokens of |x| per input channel. x: [N, width]. */
export function actScale(x: Float32Array, N: number, width: number): Float32Array {
  const acc = new Float64Array(width);
  for (let t = 0; t < N; t++) {
    const o = t * width;
    for (let i = 0; i < width; i++) acc[i] += Math.abs(x[o + i]);
  }
  return Float32Array.from(acc, (v) => v / N);
}

/**
 * The candidate scales of ratio `ratio`: s = max(x_max^ratio, 1e-4),
 * s / sqrt(max(s)·min(s)) (`_search_module_scale`). Returns [width].
 */
export function ratioScales(xMax: Float32Array, ratio: number): Float32Array {
  const s = Float32Array.from(xMax, (v) => Math.max(Math.pow(v, ratio), 1e-4));
  let max = -Infinity, min = Infinity;
  for (const v of s) {
    if (v > max) max = v;
    if (v < min) min = v;
  }
  const norm = Math.sqrt(max * min);
  for (let i = 0; i < s.length; i++) s[i] /= norm;
  return s;
}

/** Q(W·diag(s))·diag(s)⁻¹ for W [rows, cols], s [cols]: a scaled group member in the search. */
export function scaledFakeQuant(
  W: Float32Array,
  rows: number,
  cols: number,
  s: Float32Array,
  grid: AwqGrid,
): Float32Array {
  const ws = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) ws[r * cols + c] = W[r * cols + c] * s[c];
  }
  const q = awqPseudoQuantize(ws, rows, cols, grid, ws);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) q[r * cols + c] /= s[c];
  }
  return q;
}

/** W [rows, cols] with column c multiplied by s[c] (in place). */
function scaleColumns(W: Float32Array, rows: number, cols: number, s: Float32Array): void {
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) W[r * cols + c] *= s[c];
  }
}

/** W [rows, cols] with row r divided by s[r] (in place). */
function divideRows(W: Float32Array, rows: number, cols: number, s: Float32Array): void {
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) W[r * cols + c] /= s[r];
  }
}

/** The calibration features AWQ takes from a block, by name. */
export type AwqFeatureName = "attnIn" | "woIn" | "ffnIn" | "w2In" | "attnOut" | "ffnOut";

/** Every {@linkcode AwqFeatureName}, in the block's order. */
export const AWQ_FEATURES: readonly AwqFeatureName[] = [
  "attnIn",
  "woIn",
  "attnOut",
  "ffnIn",
  "w2In",
  "ffnOut",
];

/** Where the calibration tokens sit in a feature array: windows in order. */
export interface FeatureLayout {
  /** Window lengths and start tokens. */
  lengths: number[];
  offsets: number[];
  /** Σ lengths. */
  N: number;
}

/**
 * The calibration inputs of one block's linears, window-major over all
 * windows (llm-awq's `input_feat`; wq/wk/wv share one, as do w1/w3), and the
 * outputs of its two sub-blocks (each scale search's `org_out`).
 */
export interface BlockFeatures extends FeatureLayout {
  attnIn: Float32Array; // [N, dim]  input of wq, wk, wv (attention RMSNorm output)
  woIn: Float32Array; // [N, dim]  input of wo
  ffnIn: Float32Array; // [N, dim]  input of w1, w3 (FFN RMSNorm output)
  w2In: Float32Array; // [N, hiddenDim]  input of w2 (SwiGLU product)
  attnOut: Float32Array; // [N, dim]  output of the attention sub-block (of wo)
  ffnOut: Float32Array; // [N, dim]  output of the FFN sub-block (of w2)
}

/** Some of a block's features (those a step of the search needs). */
export type SomeFeatures = FeatureLayout & Partial<Record<AwqFeatureName, Float32Array>>;

/** The inputs of the scaled groups (the features whose mean |x| AWQ takes). */
export type AwqInputName = "attnIn" | "woIn" | "ffnIn" | "w2In";

/**
 * What {@linkcode AwqFeatureSource.features} is asked for: features of block
 * `layer` computed from the residual stream (`x`, or the source's own).
 */
export interface AwqFeatureRequest {
  layer: number;
  /** The block's full-precision weights (not to be modified). */
  lw: LayerWeights;
  /**
   * The residual stream per window, [T_j, dim] each (not to be modified);
   * null for a source that owns the stream ({@linkcode ownsStream}): it
   * computes from its own, which stands where `from` says.
   */
  x: Float32Array[] | null;
  /**
   * Where the stream stands: "input", the block's input; "attention", the
   * stream after the attention's residual addition (x + attention output),
   * from which only the FFN features (ffnIn, w2In, ffnOut) are asked.
   */
  from: "input" | "attention";
  /** The features wanted, each [N, width] window-major ({@linkcode FeatureLayout}). */
  want: readonly AwqFeatureName[];
  /**
   * The sub-block outputs (among `want`) added to the stream once this
   * request's features are searched: run_awq's `inps = layer(inps)`, as
   * `block`'s residual additions. AWQ adds them to `x` itself; a source that
   * owns the stream adds them to its own, so that it stands where the next
   * request's `from` says (the block's next input once "ffnOut" is added).
   * @default none
   */
  residual?: readonly ("attnOut" | "ffnOut")[];
  /**
   * Allocates a feature array of n floats (in a SharedArrayBuffer when the
   * search runs on workers): the source returns arrays from it.
   */
  alloc(n: number): Float32Array;
}

/** What {@linkcode AwqFeatureSource.features} returns. */
export interface AwqFeatureSet {
  /** Every feature asked for, from `alloc`. */
  features: Partial<Record<AwqFeatureName, Float32Array>>;
  /**
   * Optionally, mean |x| per channel (get_act_scale, {@linkcode actScale})
   * of inputs among `features`; AWQ computes those not given.
   */
  xMax?: Partial<Record<AwqInputName, Float32Array>>;
}

/**
 * Where AWQ takes a block's calibration features from: the seam that lets
 * a caller compute them elsewhere (eval/ on a GPU; quant/ never imports
 * kernels/). A source runs the FULL-PRECISION block l, as model/forward.ts's
 * `block` computes it, on the residual stream, and returns the features
 * named in the request: the inputs of each scaled group (attention-norm
 * output for wq/wk/wv `attnIn`, attention output `woIn` for wo, FFN-norm
 * output `ffnIn` for w1/w3, SwiGLU product `w2In` for w2) and the outputs
 * of the two sub-blocks (`attnOut`, the output of wo; `ffnOut`, of w2) that
 * are the scale searches' `org_out` and that advance the stream (the
 * request's `residual`, as `block`'s residual additions).
 *
 * Who keeps the stream: by default AWQ, on the host (handed in as each
 * request's `x`, advanced by AWQ with the returned outputs). A source with
 * {@linkcode AwqFeatureSource.setInputs} owns it instead ({@linkcode ownsStream}):
 * AWQ hands it block 0's inputs once, keeps no copy (128 windows of 512 at
 * LLaMA-7B's width: 1 GiB of host memory), and asks with `x` null; the
 * source advances its stream by each request's `residual`. The default,
 * {@linkcode cpuFeatureSource}, runs `block` with hooks on the stream AWQ
 * keeps; its numbers are those every test pins. A source may answer (and
 * take the inputs) asynchronously only for the asynchronous drivers
 * ({@linkcode AwqSequential}, {@linkcode awqQuantizeModelParallel}).
 */
export interface AwqFeatureSource {
  features(req: AwqFeatureRequest): AwqFeatureSet | Promise<AwqFeatureSet>;
  /**
   * Takes block 0's inputs (the token embeddings, [T_j, dim] per window;
   * not modified, not kept): present on a source that owns the residual
   * stream (see above).
   */
  setInputs?(x: Float32Array[]): void | Promise<void>;
}

/** Whether `source` owns the residual stream ({@linkcode AwqFeatureSource.setInputs}). */
export function ownsStream(source: AwqFeatureSource): boolean {
  return source.setInputs !== undefined;
}

/** The linear whose input (or output, for the sub-blocks' outputs) each feature is. */
const FEATURE_LINEAR: Record<AwqFeatureName, LinearName> = {
  attnIn: "wq",
  woIn: "wo",
  ffnIn: "w1",
  w2In: "w2",
  attnOut: "wo",
  ffnOut: "w2",
};

/**
 * A stage of {@linkcode AwqRun.block}'s feature collection: where the
 * residual stream stands, the features fetched, and the sub-block output
 * added to the stream once the stage's groups are searched.
 */
export interface FeatureStage {
  from: AwqFeatureRequest["from"];
  want: readonly AwqFeatureName[];
  residual: readonly ("attnOut" | "ffnOut")[];
}

/**
 * The stages, in the block's order: the attention's features (the q/k/v
 * and wv→wo groups share attnOut as org_out; woIn is fetched also under
 * grouped-query attention, for wo's clip search); the FFN's norm output and
 * output (w1/w3 group); w2's input and the FFN's output again (w3→w2 group;
 * recomputed rather than kept, so that ffnIn and w2In are never alive
 * together).
 */
export const FEATURE_STAGES: readonly FeatureStage[] = [
  { from: "input", want: ["attnIn", "woIn", "attnOut"], residual: ["attnOut"] },
  { from: "attention", want: ["ffnIn", "ffnOut"], residual: [] },
  { from: "attention", want: ["w2In", "ffnOut"], residual: ["ffnOut"] },
];

/**
 * The collection in one stage, every feature of the block at once (run_awq's
 * own pass): for a block whose features fit `featureBudget`, it saves
 * {@linkcode FEATURE_STAGES}' second FFN pass and two rounds of workers.
 */
export const WHOLE_BLOCK_STAGE: readonly FeatureStage[] = [
  { from: "input", want: AWQ_FEATURES, residual: ["attnOut", "ffnOut"] },
];

/** Default of {@linkcode AwqOptions.featureBudget}: 256 MiB. */
export const DEFAULT_FEATURE_BUDGET = 256 * 2 ** 20;

/** Bytes of every feature of a block of config c over N tokens ({@linkcode BlockFeatures}). */
export function blockFeatureBytes(c: LlamaConfig, N: number): number {
  return 4 * N * AWQ_FEATURES.reduce((a, name) => a + featureWidth(c, name), 0);
}

/** The token layout of windows x [T_j, dim]. */
export function featureLayout(c: LlamaConfig, x: Float32Array[]): FeatureLayout {
  return tokenLayout(x.map((xj) => xj.length / c.dim));
}

/** The token layout of windows of `lengths` tokens. */
function tokenLayout(lengths: number[]): FeatureLayout {
  const offsets: number[] = [];
  let N = 0;
  for (const T of lengths) {
    offsets.push(N);
    N += T;
  }
  return { lengths, offsets, N };
}

/** Width of a feature: hiddenDim for w2's input, dim for the others. */
function featureWidth(c: LlamaConfig, name: AwqFeatureName): number {
  return name === "w2In" ? c.hiddenDim : c.dim;
}

/**
 * The default {@linkcode AwqFeatureSource}: model/forward.ts's `block` on
 * this thread, with hooks recording the features asked for, run only as far
 * as they need (a copy of the window when the whole block must run; the FFN
 * half alone, with forward.ts's `rmsnorm` and `feedForward`, from the
 * stream after the attention).
 *
 * @param c the model
 * @param s activation buffers for the longest window
 */
export function cpuFeatureSource(c: LlamaConfig, s: RunState): AwqFeatureSource {
  return {
    features({ layer, lw, x, from, want, alloc }) {
      if (!x) throw new TypeError("cpuFeatureSource: needs the residual stream x (it keeps none)");
      const { N, offsets, lengths } = featureLayout(c, x);
      const features: Partial<Record<AwqFeatureName, Float32Array>> = {};
      for (const name of want) features[name] = alloc(N * featureWidth(c, name));
      let t0 = 0;
      const record = (name: AwqFeatureName, a: Float32Array, T: number) => {
        const dst = features[name];
        const width = featureWidth(c, name);
        dst?.set(a.subarray(0, T * width), t0 * width);
      };
      const hooks: BlockHooks = {
        onLinearInput(_l, name, xin, T) {
          if (name === "wq") record("attnIn", xin, T);
          else if (name === "wo") record("woIn", xin, T);
          else if (name === "w1") record("ffnIn", xin, T);
          else if (name === "w2") record("w2In", xin, T);
        },
        onLinearOutput(_l, name, y, T) {
          if (name === "wo") record("attnOut", y, T);
          else if (name === "w2") record("ffnOut", y, T);
        },
      };
      const until = stageOf(want.map((name) => FEATURE_LINEAR[name]));
      x.forEach((xj, j) => {
        const T = lengths[j];
        t0 = offsets[j];
        if (from === "attention") {
          if (want.some((name) => !FFN_FEATURES.has(name))) {
            throw new RangeError(
              `cpuFeatureSource: from the stream after the attention only ffnIn, w2In and ` +
                `ffnOut can be computed; asked for ${want.join(", ")}`,
            );
          }
          // the stream stays as it is: the caller adds the FFN's output (AWQ's `inps = layer(inps)`)
          blockAfterAttention(
            c,
            lw,
            layer,
            xj,
            T,
            s,
            hooks,
            until === "block" ? "block" : "ffn",
            false,
          );
        } else if (until === "ffn" || until === "block") { // these stages update x
          s.x.set(xj);
          block(c, lw, layer, s.x, T, s, hooks, until);
        } else block(c, lw, layer, xj, T, s, hooks, until); // stops before x changes
      });
      return { features };
    },
  };
}

/** The features computed from the stream after the attention. */
const FFN_FEATURES: ReadonlySet<AwqFeatureName> = new Set(["ffnIn", "w2In", "ffnOut"]);

/**
 * Checks a source's answer: every feature asked for, of its size (an error
 * names the feature), and fills in the mean |x| of the inputs not given.
 */
function checkFeatureSet(
  c: LlamaConfig,
  req: AwqFeatureRequest,
  N: number,
  set: AwqFeatureSet,
): {
  features: Partial<Record<AwqFeatureName, Float32Array>>;
  xMax: Partial<Record<AwqInputName, Float32Array>>;
} {
  const xMax: Partial<Record<AwqInputName, Float32Array>> = {};
  for (const name of req.want) {
    const a = set.features[name], n = N * featureWidth(c, name);
    if (!(a instanceof Float32Array) || a.length !== n) {
      throw new RangeError(
        `awqQuantizeModel(): the feature source gave layers.${req.layer} ${name} ` +
          `${a instanceof Float32Array ? `of ${a.length} floats` : "missing"}, expected ${n}`,
      );
    }
    if (name === "attnOut" || name === "ffnOut") continue;
    const given = set.xMax?.[name];
    if (given && given.length !== featureWidth(c, name)) {
      throw new RangeError(
        `awqQuantizeModel(): the feature source gave layers.${req.layer} ${name} mean |x| ` +
          `of ${given.length} channels, expected ${featureWidth(c, name)}`,
      );
    }
    xMax[name] = given ?? actScale(a, N, featureWidth(c, name));
  }
  return { features: set.features, xMax };
}

/**
 * Runs block `layer` (weights lw) on every window's residual stream in
 * place (hidden[j]: [T_j, dim] becomes the block's output) and records the
 * inputs of its linears and the outputs of its two sub-blocks (in
 * SharedArrayBuffers when `shared`, for workers), with
 * {@linkcode cpuFeatureSource}. The sub-blocks' outputs are the
 * full-precision outputs every scale search compares against (`org_out`):
 * the attention's for the q/k/v and wv→wo groups, the FFN's for the w1/w3
 * and w3→w2 groups, computed once here instead of once per group (and per
 * worker); they are the very numbers a recomputation gives.
 */
export function collectBlockFeatures(
  c: LlamaConfig,
  lw: LayerWeights,
  layer: number,
  hidden: Float32Array[],
  s: RunState,
  shared = false,
): BlockFeatures {
  const layout = featureLayout(c, hidden);
  const { features } = cpuFeatureSource(c, s).features({
    layer,
    lw,
    x: hidden,
    from: "input",
    want: AWQ_FEATURES,
    residual: ["attnOut", "ffnOut"],
    alloc: allocator(shared),
  }) as AwqFeatureSet;
  const f = { ...layout, ...features } as BlockFeatures;
  addResidual(c, hidden, f, f.attnOut);
  addResidual(c, hidden, f, f.ffnOut);
  return f;
}

/** Float32Arrays, in SharedArrayBuffers when `shared`. */
function allocator(shared: boolean): (n: number) => Float32Array {
  return (n) => shared ? new Float32Array(new SharedArrayBuffer(n * 4)) : new Float32Array(n);
}

/**
 * x[j] += out (a sub-block's output [N, dim], window-major) in place: the
 * residual addition of model/forward.ts's `block`, the same float32 sums.
 */
function addResidual(
  c: LlamaConfig,
  x: Float32Array[],
  layout: FeatureLayout,
  out: Float32Array,
): void {
  x.forEach((xj, j) => {
    const o = layout.offsets[j] * c.dim, n = layout.lengths[j] * c.dim;
    for (let i = 0; i < n; i++) xj[i] += out[o + i];
  });
}

/** One group of auto_scale_block for a LlamaDecoderLayer. */
interface ScaleGroup {
  prevOp: AwqPrevOp;
  linears: LinearName[];
  /** Inspected module: the attention or FFN sub-block, or the single linear. */
  inspect: "attention" | "ffn" | "linear";
  input: keyof Pick<BlockFeatures, "attnIn" | "woIn" | "ffnIn" | "w2In">;
  /** The inspected module's full-precision output: that of the sub-block it ends. */
  output: keyof Pick<BlockFeatures, "attnOut" | "ffnOut">;
}

const SCALE_GROUPS: ScaleGroup[] = [
  {
    prevOp: "attnNorm",
    linears: ["wq", "wk", "wv"],
    inspect: "attention",
    input: "attnIn",
    output: "attnOut",
  },
  { prevOp: "wv", linears: ["wo"], inspect: "linear", input: "woIn", output: "attnOut" },
  { prevOp: "ffnNorm", linears: ["w1", "w3"], inspect: "ffn", input: "ffnIn", output: "ffnOut" },
  { prevOp: "w3", linears: ["w2"], inspect: "linear", input: "w2In", output: "ffnOut" },
];

/** Bytes of trial weights and batched outputs one scale task may hold (it takes fewer ratios beyond). */
const SCALE_TASK_BYTES = 64 << 20;

/**
 * Ratios per scale task at most: one, so that a group's 20 ratios keep up to
 * 20 workers busy (a stage searches one or two groups). A ratio's loss is
 * the same numbers in any task: its sum runs over the windows in order, and
 * the batched wo / w2 matmul treats each row on its own.
 */
const RATIOS_PER_TASK = 1;

/** The group of auto_scale_block whose previous op is `prevOp`. */
function scaleGroup(prevOp: AwqPrevOp): ScaleGroup {
  return SCALE_GROUPS.find((x) => x.prevOp === prevOp)!;
}

/** Rows of the group's linears stacked (wq|wk|wv, w1|w3, or the one linear) and their input width. */
function stackedShape(
  c: LlamaConfig,
  g: Pick<ScaleGroup, "linears">,
): { rows: number; cols: number } {
  const shapes = g.linears.map((name) => linearShape(c, name));
  return { rows: shapes.reduce((a, [r]) => a + r, 0), cols: shapes[0][1] };
}

/**
 * How many ratios one scale task of group `g` evaluates: at most
 * {@linkcode RATIOS_PER_TASK}, fewer where their trial weights and batched
 * outputs would pass {@linkcode SCALE_TASK_BYTES}. Depends on the shapes only
 * (never on the worker count), so the tasks, and the numbers, are the same
 * on any number of workers.
 */
function ratiosPerTask(c: LlamaConfig, g: ScaleGroup, maxT: number, nGrid: number): number {
  const { rows, cols } = stackedShape(c, g);
  const inner = g.inspect === "ffn" ? c.hiddenDim : c.dim;
  const perRatio = 4 * (rows * cols + maxT * (rows + inner + c.dim));
  return Math.max(1, Math.min(RATIOS_PER_TASK, nGrid, Math.floor(SCALE_TASK_BYTES / perRatio)));
}

/**
 * The group's linears scaled and fake-quantized for ratios k0..k1−1, stacked
 * [k1 − k0, rows, cols]: for each ratio, Q(W·diag(s))·diag(s)⁻¹ of each
 * linear in the group's order (`_search_module_scale`'s `fc.weight.mul_(scales)`,
 * `w_quantize_func`, `div_(scales)`). `g`: a group of {@linkcode scaleGroups}.
 */
export function trialWeights(
  c: LlamaConfig,
  lw: LayerWeights,
  g: Pick<ScaleGroup, "linears">,
  xMax: Float32Array,
  grid: AwqSearchGrid,
  k0: number,
  k1: number,
  nGrid: number,
): Float32Array {
  const { rows, cols } = stackedShape(c, g);
  const out = new Float32Array((k1 - k0) * rows * cols);
  for (let k = k0; k < k1; k++) {
    const sc = ratioScales(xMax, k / nGrid);
    let o = (k - k0) * rows * cols;
    for (const name of g.linears) {
      const [r] = linearShape(c, name);
      const q = scaledFakeQuant(lw[name], r, cols, sc, {
        ...grid,
        groupSize: grid.groupSize ?? cols,
      });
      out.set(q, o);
      o += q.length;
    }
  }
  return out;
}

/** Scratch of {@linkcode searchSse}, grown as needed and reused across its calls. */
class SearchScratch {
  y = new Float32Array(0); // [T, dim] a single linear's output (wo, w2 groups)
  inner = new Float32Array(0); // [nk · T, inner] per ratio: attention output or FFN gate
  out = new Float32Array(0); // [nk · T, dim] per ratio: the inspected module's output
  grow(key: "y" | "inner" | "out", n: number): Float32Array {
    if (this[key].length < n) this[key] = new Float32Array(n);
    return this[key].subarray(0, n);
  }
}

/** Σ (a[i] − b[i])² over the first T · width values, in float64. */
function sseRows(a: Float32Array, b: Float32Array, T: number, width: number): number {
  let acc = 0;
  for (let i = 0; i < T * width; i++) {
    const d = a[i] - b[i];
    acc += d * d;
  }
  return acc;
}

/**
 * The inspected module of group `prevOp` run on every recorded window with
 * the trial weights of `nk` ratios (`trial`: [nk, rows, cols], the group's
 * linears stacked per ratio, from {@linkcode trialWeights}), against its
 * full-precision output recorded with the features: returns, per ratio, Σ
 * over tokens and output columns of (out − org_out)² (float64, windows in
 * order).
 *
 * The module is computed from forward.ts's own pieces, in its order, so that
 * the original weights give org_out to the bit (tested): per window and
 * ratio, the WebAssembly matmul of the window's input by each linear of the
 * group, then RoPE and the WebAssembly causal attention (q/k/v group) or
 * the SwiGLU gate (w1/w3 group); then one matmul of every ratio's attention
 * outputs by wo (gates by w2). A single linear (wo, w2) is its own matmul.
 * Every ratio's linear is its own matmul (model/matmul.ts, which blocks x
 * for L1 and W for L2): stacking the ratios' weights side by side in one
 * call, as a GPU would, was about 3× slower per multiply-add here.
 */
export function searchSse(
  c: LlamaConfig,
  lw: LayerWeights,
  prevOp: AwqPrevOp,
  f: SomeFeatures,
  trial: Float32Array,
  nk: number,
  s: RunState,
  scratch: SearchScratch = new SearchScratch(),
): Float64Array {
  const { dim, hiddenDim, nHeads, nKvHeads } = c;
  const kv = kvDim(c), hs = headSize(c);
  const g = scaleGroup(prevOp);
  const { rows, cols } = stackedShape(c, g);
  const x = feature(f, g.input), org = feature(f, g.output);
  const sse = new Float64Array(nk);
  /** Rows row0 .. row0 + r − 1 of ratio k's stacked trial weights: [r, cols]. */
  const trialOf = (k: number, row0: number, r: number) =>
    trial.subarray((k * rows + row0) * cols, (k * rows + row0 + r) * cols);
  f.lengths.forEach((T, j) => {
    const t0 = f.offsets[j];
    const xj = x.subarray(t0 * cols, (t0 + T) * cols);
    const orgj = org.subarray(t0 * dim, (t0 + T) * dim);
    if (g.inspect === "linear") {
      const y = scratch.grow("y", T * dim);
      for (let k = 0; k < nk; k++) {
        matmul(y, xj, trialOf(k, 0, rows), T, cols, rows);
        sse[k] += sseRows(y, orgj, T, dim);
      }
      return;
    }
    const width = g.inspect === "attention" ? dim : hiddenDim;
    const inner = scratch.grow("inner", nk * T * width);
    for (let k = 0; k < nk; k++) {
      const innerK = inner.subarray(k * T * width, (k + 1) * T * width);
      if (g.inspect === "attention") {
        matmul(s.q, xj, trialOf(k, 0, dim), T, cols, dim);
        matmul(s.k, xj, trialOf(k, dim, kv), T, cols, kv);
        matmul(s.v, xj, trialOf(k, dim + kv, kv), T, cols, kv);
        rope(s.q, T, dim, hs, s.ropeCos, s.ropeSin);
        rope(s.k, T, kv, hs, s.ropeCos, s.ropeSin);
        causalAttention(innerK, s.q, s.k, s.v, T, nHeads, nKvHeads, hs);
      } else {
        matmul(s.h1, xj, trialOf(k, 0, hiddenDim), T, cols, hiddenDim);
        matmul(s.h3, xj, trialOf(k, hiddenDim, hiddenDim), T, cols, hiddenDim);
        swiglu(innerK, s.h1, s.h3, T * hiddenDim);
      }
    }
    const out = scratch.grow("out", nk * T * dim);
    matmul(out, inner, g.inspect === "attention" ? lw.wo : lw.w2, nk * T, width, dim);
    for (let k = 0; k < nk; k++) sse[k] += sseRows(out.subarray(k * T * dim), orgj, T, dim);
  });
  return sse;
}

/** The arithmetic of one ratio's evaluation in {@linkcode searchSse}. */
export interface SearchWork {
  /** Multiply-adds: the linears', and the attention's scores and weighted sums. */
  macs: number;
  /** Exponentials: one per causal query-key pair per head (softmax), or per gate value (SiLU). */
  exps: number;
}

/**
 * What {@linkcode searchSse} computes for one ratio of group `prevOp` on
 * windows of `lengths` tokens, counted from the shapes (for benchmarks: the
 * arithmetic AWQ's protocol asks for, next to the time it took). Per token,
 * the group's linears (rows × cols each) and, after the attention or the
 * gate, wo or w2 (dim × width); per window of T tokens and head, the causal
 * attention's T(T+1)/2 query-key pairs, each a score and a weighted sum of
 * headSize multiply-adds and one exponential; the gate's hiddenDim SiLUs
 * per token. Element-wise work (RoPE, the gate's products, the squared
 * errors) is left out.
 *
 * @example
 * ```ts
 * // stories260K's q/k/v group on one window of 512 tokens:
 * const { config } = await loadCheckpoint("stories260K.bin");
 * searchWork(config, "attnNorm", [512]); // { macs: 23_101_440, exps: 1_050_624 }
 * ```
 */
export function searchWork(
  c: LlamaConfig,
  prevOp: AwqPrevOp,
  lengths: readonly number[],
): SearchWork {
  const g = scaleGroup(prevOp);
  const { rows, cols } = stackedShape(c, g);
  const tokens = lengths.reduce((a, T) => a + T, 0);
  const pairs = lengths.reduce((a, T) => a + (T * (T + 1)) / 2, 0) * c.nHeads;
  let macs = tokens * rows * cols, exps = 0;
  if (g.inspect === "attention") {
    macs += 2 * headSize(c) * pairs + tokens * c.dim * c.dim;
    exps = pairs;
  } else if (g.inspect === "ffn") {
    macs += tokens * c.hiddenDim * c.dim;
    exps = tokens * c.hiddenDim;
  }
  return { macs, exps };
}

/** Feature `name` of f; a missing one is a bug of the caller (named). */
function feature(f: SomeFeatures, name: AwqFeatureName): Float32Array {
  const a = f[name];
  if (!a) throw new TypeError(`awq: the features lack ${name}`);
  return a;
}

/** The inspected module's output width, and the activation scales of one group. */
function groupSetup(c: LlamaConfig, prevOp: AwqPrevOp, f: SomeFeatures) {
  const g = scaleGroup(prevOp);
  const inWidth = linearShape(c, g.linears[0])[1];
  return { g, width: c.dim, xMax: actScale(feature(f, g.input), f.N, inWidth) };
}

/**
 * The losses of ratios k0..k1−1 of one group: mean squared error between
 * the inspected module's full-precision output (recorded with the features)
 * and its output with the group's linears scaled and fake-quantized, over
 * every token. Steps of `_search_module_scale`.
 */
function ratioLosses(
  c: LlamaConfig,
  lw: LayerWeights,
  prevOp: AwqPrevOp,
  f: SomeFeatures,
  xMax: Float32Array,
  grid: AwqSearchGrid,
  k0: number,
  k1: number,
  nGrid: number,
  s: RunState,
  scratch: SearchScratch,
): Float64Array {
  const trial = trialWeights(c, lw, scaleGroup(prevOp), xMax, grid, k0, k1, nGrid);
  const sse = searchSse(c, lw, prevOp, f, trial, k1 - k0, s, scratch);
  return sse.map((v) => v / (f.N * c.dim));
}

/**
 * The first ratio with the smallest loss (`_search_module_scale`'s choice)
 * from the losses of every ratio, in ratio order.
 */
function pickRatio(
  layer: number,
  g: ScaleGroup,
  xMax: Float32Array,
  history: Float64Array,
): AwqScaleSearch {
  const nGrid = history.length;
  let best = Infinity, bestK = -1;
  for (let k = 0; k < nGrid; k++) {
    if (history[k] < best) {
      best = history[k];
      bestK = k;
    }
  }
  if (bestK < 0) {
    throw new RangeError(
      `awqQuantizeModel(): layers.${layer} ${g.linears.join(",")}: no ratio gave a finite loss ` +
        `(losses ${Array.from(history).join(", ")}); the block produced NaN/Inf`,
    );
  }
  return {
    layer,
    prevOp: g.prevOp,
    linears: [...g.linears],
    scales: ratioScales(xMax, bestK / nGrid),
    ratio: bestK / nGrid,
    loss: best,
    history,
  };
}

/**
 * `_search_module_scale` for one group of block `layer`: the ratio whose
 * scaled-and-quantized group gives the smallest mean squared error of the
 * inspected module's output. Uses lw's (original) weights.
 */
export function searchGroupScale(
  c: LlamaConfig,
  lw: LayerWeights,
  layer: number,
  group: { prevOp: AwqPrevOp; linears: LinearName[] },
  f: SomeFeatures,
  s: RunState,
  grid: AwqSearchGrid,
): AwqScaleSearch {
  const { g, xMax } = groupSetup(c, group.prevOp, f);
  const nGrid = grid.nGrid ?? DEFAULTS.awq.nGrid;
  const history = new Float64Array(nGrid);
  const scratch = new SearchScratch();
  const nk = ratiosPerTask(c, g, s.maxT, nGrid);
  for (let k0 = 0; k0 < nGrid; k0 += nk) {
    const k1 = Math.min(nGrid, k0 + nk);
    history.set(ratioLosses(c, lw, g.prevOp, f, xMax, grid, k0, k1, nGrid, s, scratch), k0);
  }
  return pickRatio(layer, g, xMax, history);
}

/**
 * apply_scale for one group: divides the previous op's output (norm weight,
 * or linear rows) by the scales and multiplies the group's input columns,
 * in lw (whose arrays must be private copies); divides the recorded input
 * features by the scales (apply_scale's input_feat_dict).
 */
export function applyScale(
  c: LlamaConfig,
  lw: LayerWeights,
  r: Pick<AwqScaleSearch, "prevOp" | "linears" | "scales">,
  f?: BlockFeatures,
): void {
  const sc = r.scales;
  if (r.prevOp === "attnNorm" || r.prevOp === "ffnNorm") {
    const norm = lw[r.prevOp];
    for (let i = 0; i < norm.length; i++) norm[i] /= sc[i];
  } else {
    const [rows, cols] = linearShape(c, r.prevOp);
    divideRows(lw[r.prevOp], rows, cols, sc);
  }
  for (const name of r.linears) {
    const [rows, cols] = linearShape(c, name);
    scaleColumns(lw[name], rows, cols, sc);
  }
  if (f) divideFeature(f[scaleGroup(r.prevOp).input], f.N, sc);
}

/** x [N, width] with column i divided by sc[i] (in place): apply_scale's input_feat division. */
function divideFeature(x: Float32Array, N: number, sc: Float32Array): void {
  const width = sc.length;
  for (let t = 0; t < N; t++) {
    for (let i = 0; i < width; i++) x[t * width + i] /= sc[i];
  }
}

/**
 * The tokens the clip search uses: rows 0, k, 2k, … of x [N, width] with
 * k = ⌊N / nSampleTokens⌋ (auto_clip_layer's `input_feat[:, 0::N // n]`),
 * or every row when N < nSampleTokens. Returns [n, width].
 */
export function sampleTokens(
  x: Float32Array,
  N: number,
  width: number,
  nSampleTokens: number,
): { x: Float32Array; n: number } {
  const step = Math.max(1, Math.floor(N / nSampleTokens));
  const n = Math.ceil(N / step);
  const out = new Float32Array(n * width);
  for (let t = 0; t < n; t++) {
    out.set(x.subarray(t * step * width, (t * step + 1) * width), t * width);
  }
  return { x: out, n };
}

/**
 * auto_clip_layer: for W [rows, cols] and sampled inputs x [n, cols], the
 * clipping value of every (row, group) that minimizes the mean over tokens
 * of the squared error of the group's partial dot product. Returns
 * maxVal [rows, nGroups].
 */
export function searchClip(
  W: Float32Array,
  rows: number,
  cols: number,
  x: Float32Array,
  n: number,
  grid: AwqGrid & { nGrid?: number; maxShrink?: number },
): Float32Array {
  const g = groupFor(grid, cols, "searchClip()");
  const nGrid = grid.nGrid ?? DEFAULTS.awq.nGrid;
  const steps = Math.floor((grid.maxShrink ?? DEFAULTS.awq.maxShrink) * nGrid);
  const uniform = awqGrid(grid.bits, grid.sym ?? false, grid.bitBalance ?? false);
  const ng = cols / g;
  const maxVal = new Float32Array(rows * ng);
  // [n, g] inputs of one group, contiguous, and the group's weights, as the
  // float64 values JavaScript computes with (the same numbers, unconverted).
  const xg = new Float64Array(n * g);
  const w64 = new Float64Array(g), q64 = new Float64Array(g);
  const orgOut = new Float64Array(n), out = new Float64Array(n);
  const cur = new Float32Array(g), q = new Float32Array(g);
  for (let j = 0; j < ng; j++) {
    for (let t = 0; t < n; t++) xg.set(x.subarray(t * cols + j * g, t * cols + j * g + g), t * g);
    for (let r = 0; r < rows; r++) {
      const w = W.subarray(r * cols + j * g, r * cols + j * g + g);
      let amax = 0;
      for (let k = 0; k < g; k++) amax = Math.max(amax, Math.abs(w[k]));
      w64.set(w);
      groupDots(orgOut, xg, w64, n, g);
      let best = Infinity, bestMax = amax;
      for (let i = 0; i < steps; i++) {
        const mv = Math.fround(amax * (1 - i / nGrid));
        for (let k = 0; k < g; k++) cur[k] = Math.min(Math.max(w[k], -mv), mv);
        quantizeGroup(cur, 0, g, uniform, q);
        q64.set(q);
        groupDots(out, xg, q64, n, g);
        let err = 0;
        for (let t = 0; t < n; t++) {
          const d = out[t] - orgOut[t];
          err += d * d;
        }
        err /= n;
        if (err < best) {
          best = err;
          bestMax = mv;
        }
      }
      maxVal[r * ng + j] = bestMax;
    }
  }
  return maxVal;
}

/**
 * out[t] = Σ_k x[t, k] · w[k] for x [n, g], each sum in float64 in k order
 * (auto_clip_layer's partial dot products); four tokens at a time, sharing
 * each w[k], their sums kept apart (the same numbers as one token at a time).
 */
function groupDots(
  out: Float64Array,
  x: Float64Array,
  w: Float64Array,
  n: number,
  g: number,
): void {
  let t = 0;
  for (; t + 4 <= n; t += 4) {
    const o0 = t * g, o1 = o0 + g, o2 = o1 + g, o3 = o2 + g;
    let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (let k = 0; k < g; k++) {
      const wk = w[k];
      a0 += x[o0 + k] * wk;
      a1 += x[o1 + k] * wk;
      a2 += x[o2 + k] * wk;
      a3 += x[o3 + k] * wk;
    }
    out[t] = a0;
    out[t + 1] = a1;
    out[t + 2] = a2;
    out[t + 3] = a3;
  }
  for (; t < n; t++) {
    let acc = 0;
    for (let k = 0; k < g; k++) acc += x[t * g + k] * w[k];
    out[t] = acc;
  }
}

/** apply_clip: W [rows, cols] clamped to ±maxVal[r, g] per (row, group), in place. */
export function applyClip(W: Float32Array, rows: number, cols: number, maxVal: Float32Array): void {
  const ng = maxVal.length / rows, g = cols / ng;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const mv = maxVal[r * ng + Math.floor(c / g)];
      const i = r * cols + c;
      W[i] = Math.min(Math.max(W[i], -mv), mv);
    }
  }
}

/** The linears auto_clip_block clips (all but q and k: "due to qk bmm, it is hard to clip precisely"). */
export const CLIP_LINEARS: readonly LinearName[] = ["wv", "wo", "w1", "w3", "w2"];

/** Input features of each linear. */
const INPUT_OF: Record<LinearName, ScaleGroup["input"]> = {
  wq: "attnIn",
  wk: "attnIn",
  wv: "attnIn",
  wo: "woIn",
  w1: "ffnIn",
  w3: "ffnIn",
  w2: "w2In",
};

/**
 * The groups auto_scale_block searches for a LlamaDecoderLayer of config
 * `c`, in its order: wv→wo only when wv and wo have the same shape.
 * @example scaleGroups(config).map((g) => g.prevOp) // ["attnNorm", "ffnNorm", "w3"] under GQA
 */
export function scaleGroups(c: LlamaConfig): { prevOp: AwqPrevOp; linears: LinearName[] }[] {
  const v = linearShape(c, "wv"), o = linearShape(c, "wo");
  const vo = v[0] === o[0] && v[1] === o[1];
  return SCALE_GROUPS.filter((g) => vo || g.prevOp !== "wv").map((g) => ({
    prevOp: g.prevOp,
    linears: [...g.linears],
  }));
}

/** Throws unless groupSize (when given) divides every linear's input width. */
function checkAwqGroup(c: LlamaConfig, groupSize: number | null | undefined): void {
  if (groupSize === undefined || groupSize === null) return;
  const widths = [...new Set(LINEAR_NAMES.map((n) => linearShape(c, n)[1]))];
  if (!Number.isInteger(groupSize) || groupSize < 1 || widths.some((w) => w % groupSize !== 0)) {
    const valid = [];
    for (let d = 1; d <= Math.min(...widths); d++) {
      if (widths.every((w) => w % d === 0)) valid.push(d);
    }
    throw new RangeError(
      `awqQuantizeModel(): groupSize must divide the input width of every linear ` +
        `(${widths.join(", ")}), got ${groupSize}; valid: ${
          valid.join(", ")
        }, or null for one group per row`,
    );
  }
}

/** What a search pass of {@linkcode awqTasks} starts from (one per pass). */
export type AwqPassInit =
  | {
    kind: "scale";
    config: LlamaConfig;
    layer: number;
    /** The block's original weights. */
    lw: LayerWeights;
    /** The features of the pass's groups (inputs and outputs). */
    f: SomeFeatures;
    /** Mean |x| per channel of the groups' inputs. */
    xMax: Partial<Record<AwqInputName, Float32Array>>;
    maxT: number;
    grid: AwqSearchGrid;
    nGrid: number;
  }
  | {
    kind: "clip";
    /** Sampled inputs of the clipped linears, by input name. */
    sampled: Partial<Record<AwqInputName, { x: Float32Array; n: number }>>;
    bits: number;
    groupSize: number | null;
    sym: boolean;
    bitBalance: boolean;
    nGrid: number;
    maxShrink: number;
  };

/** One task of an AWQ pass: ratios k0..k1−1 of a scaled group, or a block of rows of a clipped linear. */
export type AwqTask =
  | { kind: "scale"; prevOp: AwqPrevOp; k0: number; k1: number }
  | { kind: "clip"; name: LinearName; rows: number; cols: number; w: Float32Array };

/**
 * The AWQ searches as pool tasks (model/pool.ts; `awq_worker.ts` serves
 * them): a scale task returns the losses of a few ratios of one group
 * (against the full-precision output recorded with the features), a clip
 * task the clipping values [rows, nGroups] of a block of rows. Both run the
 * very functions of the one-thread path, so the results are the same numbers.
 */
export const awqTasks: TaskHandler<AwqPassInit, AwqTask, Float64Array | Float32Array> = {
  setup(init) {
    if (init.kind === "scale") {
      const { config: c, lw, f, xMax, grid, nGrid } = init;
      const s = new RunState(c, init.maxT);
      const scratch = new SearchScratch();
      return (t) => {
        if (t.kind !== "scale") throw new TypeError("awq: a clip task in a scale pass");
        const xm = xMax[scaleGroup(t.prevOp).input]!;
        return ratioLosses(c, lw, t.prevOp, f, xm, grid, t.k0, t.k1, nGrid, s, scratch);
      };
    }
    return (t) => {
      if (t.kind !== "clip") throw new TypeError("awq: a scale task in a clip pass");
      const { x, n } = init.sampled[INPUT_OF[t.name]]!;
      return searchClip(t.w, t.rows, t.cols, x, n, {
        bits: init.bits,
        groupSize: init.groupSize ?? t.cols,
        sym: init.sym,
        bitBalance: init.bitBalance,
        nGrid: init.nGrid,
        maxShrink: init.maxShrink,
      });
    };
  },
  transfer: (r) => [r.buffer as ArrayBuffer],
};

/** One pass of tasks the AWQ loop needs done, results in task order. */
interface AwqPass {
  init: AwqPassInit;
  tasks: AwqTask[];
  onResult(k: number, result: Float64Array | Float32Array): void;
}

/** A step of a block's AWQ ({@linkcode AwqRun.block}): features to fetch, or a pass to run. */
type AwqStep = AwqPass | { request: AwqFeatureRequest };

/**
 * Clip tasks per linear: blocks of rows, a fixed number (never the worker
 * count, so the tasks are the same on any number of workers).
 */
const CLIP_TASKS_PER_LINEAR = 8;

/** A copy of a in shared memory (workers read it without a copy). */
function sharedCopy(a: Float32Array): Float32Array {
  const b = new Float32Array(new SharedArrayBuffer(a.byteLength));
  b.set(a);
  return b;
}

/**
 * AWQ (run_awq + pseudo_quantize_model_weight) of every linear of `weights`
 * with calibration windows `windows` (token ids, ≤ max_seq_len each) on this
 * thread. See the module doc for the exact procedure. Deterministic; the
 * same numbers as {@linkcode awqQuantizeModelParallel} for any number of workers.
 *
 * @param weights the full-precision model (not modified)
 * @param windows calibration windows (llm-awq: 128 texts of pile-val cut into blocks of 512)
 * @param opts bits, group size and search settings (`workers` is ignored)
 * @returns scaled and fake-quantized weights, the packed linears, the chosen scales and clips
 * @example
 * ```ts
 * const r = awqQuantizeModel(weights, windows, { bits: 3, groupSize: 4 });
 * ```
 */
export function awqQuantizeModel(
  weights: LlamaWeights,
  windows: Int32Array[],
  opts: AwqOptions,
): AwqResult {
  const run = new AwqRun(weights.config, windows, opts, false);
  let hidden: Float32Array[] | null = embedWindows(weights, windows); // block 0's inputs
  if (run.ownsStream) {
    onThisThread(run.setInputs(hidden));
    hidden = null;
  }
  return run.result(
    weights,
    weights.layers.map((lw, l) => runPasses(run.block(l, lw, hidden), run.source)),
  );
}

/**
 * {@linkcode awqQuantizeModel} with the scale search (a few ratios of a
 * group per task) and the clip search (blocks of rows) on `opts.workers`
 * worker threads (model/pool.ts); features and weights are shared, not
 * copied. Results are identical to the one-thread path.
 *
 * @param weights the full-precision model (not modified)
 * @param windows calibration windows
 * @param opts bits, group size, search settings, workers (default quant/spec.ts DEFAULT_WORKERS)
 * @returns the same as {@linkcode awqQuantizeModel}
 * @example
 * ```ts
 * const r = await awqQuantizeModelParallel(weights, windows, { bits: 3, workers: 2 });
 * ```
 */
export async function awqQuantizeModelParallel(
  weights: LlamaWeights,
  windows: Int32Array[],
  opts: AwqOptions,
): Promise<AwqResult> {
  const seq = new AwqSequential(weights.config, windows, opts);
  let hidden: Float32Array[] | null = embedWindows(weights, windows); // block 0's inputs
  if (seq.run.ownsStream) {
    await seq.setInputs(hidden);
    hidden = null;
  }
  const blocks: AwqBlock[] = [];
  for (let l = 0; l < weights.config.nLayers; l++) {
    blocks.push(await seq.quantizeBlock(l, weights.layers[l], hidden));
  }
  return seq.run.result(weights, blocks);
}

/** One block's AWQ: its scaled, clipped and fake-quantized weights, packed linears, scales and clips. */
export interface AwqBlock {
  /** Scaled norms, scaled+clipped+fake-quantized linears (the other fields are the input's). */
  weights: LayerWeights;
  /** Keys "layers.{l}.{name}"; weights' linears equal dequantize() of these. */
  linears: Map<string, QuantizedLinear>;
  /** The scaled groups in auto_scale_block's order. */
  scales: AwqScaleSearch[];
  /** The clipped linears in named_modules order (wv, wo, w1, w3, w2). */
  clips: AwqClip[];
}

/**
 * AWQ one block at a time, for a caller that reads the model block by block
 * (eval/quantize_stream.ts): blocks 0, 1, … in order, each given its
 * full-precision weights and its inputs, which it advances to the next
 * block's (run_awq: the full-precision block's outputs); or, when the
 * feature source owns the residual stream ({@linkcode ownsStream}: on a
 * device), block 0's inputs once ({@linkcode AwqSequential.setInputs}) and
 * no inputs per block. The codes are those of
 * {@linkcode awqQuantizeModelParallel}, bit for bit (the same steps;
 * tested), and for any number of workers.
 *
 * @example
 * ```ts
 * const awq = new AwqSequential(config, windows, { bits: 3, workers: 2 });
 * const x = embedWindows(weights, windows); // block 0's inputs
 * for (let l = 0; l < config.nLayers; l++) {
 *   const b = await awq.quantizeBlock(l, source.layer(l), x); // x: block l+1's inputs
 * }
 * awq.stats();
 * ```
 * @example A feature source that owns the stream
 * ```ts
 * const awq = new AwqSequential(config, windows, { bits: 3, features: onDevice });
 * await awq.setInputs(embedWindows(weights, windows)); // the caller may drop them
 * for (let l = 0; l < config.nLayers; l++) await awq.quantizeBlock(l, source.layer(l));
 * ```
 */
export class AwqSequential {
  /** The settings, scratch and statistics shared by the blocks. */
  readonly run: AwqRun;
  readonly #workers: number;
  #next = 0;

  /**
   * @param config the model
   * @param windows the calibration windows (their lengths size the buffers)
   * @param opts bits, group size, search settings, workers (default DEFAULT_WORKERS)
   */
  constructor(config: LlamaConfig, windows: Int32Array[], opts: AwqOptions) {
    const workers = opts.workers ?? DEFAULT_WORKERS;
    if (!Number.isInteger(workers) || workers < 0) {
      throw new RangeError(`awqQuantizeModel(): workers must be an integer ≥ 0, got ${workers}`);
    }
    this.#workers = workers;
    this.run = new AwqRun(config, windows, opts, workers > 0);
  }

  /**
   * Hands block 0's inputs to a feature source that owns the residual stream
   * ({@linkcode ownsStream}), before block 0; the caller may drop them.
   *
   * @param x the token embeddings per window [T_j, dim] (not modified)
   * @throws {TypeError} when the source keeps no stream (pass the inputs to each block)
   */
  async setInputs(x: Float32Array[]): Promise<void> {
    await this.run.setInputs(x);
  }

  /**
   * AWQ of block `l` (run_awq's loop body, then pseudo_quantize_model_weight).
   *
   * @param l the block, in order 0, 1, …
   * @param lw its full-precision weights (not modified)
   * @param x its inputs per window [T_j, dim], advanced in place to block l+1's; null (the
   *   default) when the feature source owns the stream
   * @returns the block's scaled and fake-quantized weights, packed linears, scales and clips
   */
  async quantizeBlock(
    l: number,
    lw: LayerWeights,
    x: Float32Array[] | null = null,
  ): Promise<AwqBlock> {
    if (l !== this.#next) {
      throw new RangeError(`AwqSequential: block ${l} given, block ${this.#next} expected`);
    }
    const steps = this.run.block(l, lw, x);
    this.#next++;
    // No local names a step: a finished stage's features must not outlive it.
    for (let r = steps.next();;) {
      if (r.done) return r.value;
      r = steps.next(
        "request" in r.value
          ? await this.run.source.features(r.value.request)
          : await this.#runPass(r.value),
      );
    }
  }

  /** Runs a pass's tasks on the workers. */
  async #runPass(pass: AwqPass): Promise<undefined> {
    await runTasks({
      name: "AWQ",
      worker: new URL("./awq_worker.ts", import.meta.url),
      handler: awqTasks,
      workers: this.#workers,
      init: pass.init,
      tasks: pass.tasks.length,
      task: (k) => pass.tasks[k],
      onResult: (k, result) => pass.onResult(k, result),
    });
  }

  /** Timings and facts of the blocks done so far. */
  stats(): AwqStats {
    return { ...this.run.stats, skipped: [...this.run.stats.skipped] };
  }
}

/** A feature source's answer on this thread: an asynchronous one is an error. */
function onThisThread<R>(r: R | Promise<R>): R {
  if (r instanceof Promise) {
    throw new TypeError(
      "awqQuantizeModel() runs on this thread: an asynchronous feature source needs " +
        "awqQuantizeModelParallel() or AwqSequential",
    );
  }
  return r;
}

/** Runs a block's steps on this thread (features from `source`); returns the block. */
function runPasses(
  steps: Generator<AwqStep, AwqBlock, AwqFeatureSet | undefined>,
  source: AwqFeatureSource,
): AwqBlock {
  const features = (request: AwqFeatureRequest) => onThisThread(source.features(request));
  const runPass = (pass: AwqPass) => {
    const run = awqTasks.setup(pass.init);
    pass.tasks.forEach((t, k) => pass.onResult(k, run(t, () => {})));
    return undefined;
  };
  // No local names a step: a finished stage's features must not outlive it.
  for (let r = steps.next();;) {
    if (r.done) return r.value;
    r = steps.next("request" in r.value ? features(r.value.request) : runPass(r.value));
  }
}

/**
 * The settings of one AWQ run (checked once), its RunState and statistics,
 * and the per-block loop of both drivers ({@linkcode AwqRun.block}).
 */
export class AwqRun {
  readonly bits: number;
  readonly groupSize: number | null;
  readonly sym: boolean;
  readonly bitBalance: boolean;
  readonly nGrid: number;
  readonly maxShrink: number;
  readonly nSampleTokens: number;
  readonly autoScale: boolean;
  readonly autoClip: boolean;
  readonly featureBudget: number;
  /** Longest window. */
  readonly maxT: number;
  readonly stats: AwqStats;
  /** Where the blocks' features come from (opts.features, else the CPU forward). */
  readonly source: AwqFeatureSource;
  /** Whether the source owns the residual stream ({@linkcode ownsStream}). */
  readonly ownsStream: boolean;
  /** Where each window's tokens sit in a feature array. */
  readonly layout: FeatureLayout;
  readonly #s: RunState;
  readonly #step = { done: 0, total: 0 };
  #inputsGiven = false;

  /**
   * @param c the model
   * @param windows the calibration windows
   * @param opts the options (see {@linkcode AwqOptions})
   * @param shared whether the passes' arrays go to workers (SharedArrayBuffers)
   */
  constructor(
    readonly c: LlamaConfig,
    windows: Int32Array[],
    readonly opts: AwqOptions,
    readonly shared: boolean,
  ) {
    checkBits(opts.bits, "awqQuantizeModel(): bits");
    checkAwqGroup(c, opts.groupSize);
    this.maxT = checkWindows("awqQuantizeModel()", windows, c);
    this.bits = opts.bits;
    this.groupSize = opts.groupSize ?? null;
    this.sym = opts.sym ?? false;
    this.bitBalance = opts.bitBalance ?? false;
    this.nGrid = opts.nGrid ?? DEFAULTS.awq.nGrid;
    this.maxShrink = opts.maxShrink ?? DEFAULTS.awq.maxShrink;
    this.nSampleTokens = opts.nSampleTokens ?? DEFAULTS.awq.nSampleTokens;
    this.autoScale = opts.autoScale ?? true;
    this.autoClip = opts.autoClip ?? true;
    this.featureBudget = opts.featureBudget ?? DEFAULT_FEATURE_BUDGET;
    if (!(this.featureBudget >= 0)) {
      throw new RangeError(
        `awqQuantizeModel(): featureBudget must be a number of bytes ≥ 0, got ${this.featureBudget}`,
      );
    }
    if (!Number.isInteger(this.nGrid) || this.nGrid < 1) {
      throw new RangeError(
        `awqQuantizeModel(): nGrid must be a positive integer, got ${this.nGrid}`,
      );
    }
    if (!(this.maxShrink >= 0 && this.maxShrink < 1)) {
      throw new RangeError(
        `awqQuantizeModel(): maxShrink must be in [0, 1), got ${this.maxShrink}`,
      );
    }
    if (!Number.isInteger(this.nSampleTokens) || this.nSampleTokens < 1) {
      throw new RangeError(
        `awqQuantizeModel(): nSampleTokens must be a positive integer, got ${this.nSampleTokens}`,
      );
    }
    this.stats = {
      seconds: 0,
      collectSeconds: 0,
      scaleSeconds: 0,
      clipSeconds: 0,
      quantizeSeconds: 0,
      windows: windows.length,
      tokens: 0,
      clipTokens: 0,
      skipped: [],
    };
    this.#s = new RunState(c, this.maxT);
    this.source = opts.features ?? cpuFeatureSource(c, this.#s);
    this.ownsStream = ownsStream(this.source);
    this.layout = tokenLayout(windows.map((w) => w.length));
    // Progress: every scale ratio of every group and every clipped linear is one step.
    this.#step.total = c.nLayers *
      ((this.autoScale ? scaleGroups(c).length * this.nGrid : 0) +
        (this.autoClip ? CLIP_LINEARS.length : 0));
  }

  /**
   * Hands block 0's inputs to a source that owns the stream (the drivers'
   * `setInputs`); returns what the source returns.
   */
  setInputs(x: Float32Array[]): void | Promise<void> {
    if (!this.source.setInputs) {
      throw new TypeError(
        "awqQuantizeModel(): the feature source keeps no residual stream; pass each block its " +
          "inputs instead of setInputs()",
      );
    }
    const { dim } = this.c, { lengths } = this.layout;
    if (x.length !== lengths.length || x.some((xj, j) => xj.length !== lengths[j] * dim)) {
      throw new RangeError(
        `awqQuantizeModel(): setInputs() expects ${lengths.length} arrays of T_j × ${dim} ` +
          `floats (the windows' embeddings), got ${x.length} (first ${x[0]?.length})`,
      );
    }
    this.#inputsGiven = true;
    return this.source.setInputs(x);
  }

  /** The grid of a linear of input width `cols`. */
  grid(cols: number): AwqGrid {
    return {
      bits: this.bits,
      groupSize: this.groupSize ?? cols,
      sym: this.sym,
      bitBalance: this.bitBalance,
    };
  }

  #tick(what: string): void {
    this.opts.onProgress?.(++this.#step.done, this.#step.total, what);
  }

  /** The whole-model result from every block's. */
  result(weights: LlamaWeights, blocks: AwqBlock[]): AwqResult {
    const linears = new Map<string, QuantizedLinear>();
    for (const b of blocks) for (const [k, q] of b.linears) linears.set(k, q);
    return {
      weights: { ...weights, layers: blocks.map((b) => b.weights) },
      linears,
      scales: blocks.map((b) => b.scales),
      clips: blocks.map((b) => b.clips),
      stats: { ...this.stats },
    };
  }

  /**
   * AWQ of block `l` (weights `orig`, not modified; `hidden` its inputs per
   * window, advanced in place to block l+1's, or null when the source owns
   * the stream and has its inputs): yields each feature request
   * (the driver hands back the source's answer) and each search pass (the
   * driver runs its tasks and hands back the results in order), returns the
   * block.
   *
   * Memory: past `featureBudget` the features are fetched one stage at a
   * time ({@linkcode FEATURE_STAGES}) and dropped once its groups are
   * searched, keeping only the clip search's sampled tokens; so at most the
   * block's inputs and one stage's features are alive (at LLaMA-7B's width the FFN
   * stages, w2's input [N, hiddenDim] and the FFN's output [N, dim]), not
   * every feature of the block. The numbers are those of run_awq's one
   * collection pass: every stage runs the full-precision block's own code on
   * the same inputs (the FFN stages on the stream after the attention, which
   * is also the block's own sum), the searches use the original weights and
   * features, and apply_scale's division of the features is applied to the
   * sampled tokens instead (the same division of the same values).
   */
  block(
    l: number,
    orig: LayerWeights,
    hidden: Float32Array[] | null,
  ): Generator<AwqStep, AwqBlock, AwqFeatureSet | undefined> {
    if (this.ownsStream && (hidden || !this.#inputsGiven)) {
      throw new RangeError(
        "awqQuantizeModel(): the feature source owns the residual stream: give block 0's " +
          "inputs to setInputs() once, and no inputs to the blocks",
      );
    }
    if (!this.ownsStream && !hidden) {
      throw new RangeError(`awqQuantizeModel(): block ${l} needs its inputs per window`);
    }
    return this.#block(l, orig, hidden);
  }

  /** {@linkcode AwqRun.block}, its inputs checked. */
  *#block(
    l: number,
    orig: LayerWeights,
    hidden: Float32Array[] | null,
  ): Generator<AwqStep, AwqBlock, AwqFeatureSet | undefined> {
    const { c, stats, layout } = this;
    const t0 = performance.now();
    stats.tokens = layout.N;
    const groups = this.autoScale ? scaleGroups(c) : [];
    if (this.autoScale && !groups.some((g) => g.prevOp === "wv")) {
      const v = linearShape(c, "wv"), o = linearShape(c, "wo");
      stats.skipped.push(
        `layers.${l}: wv→wo not scaled: wv is [${v}], wo is [${o}] (grouped-query attention)`,
      );
    }
    let passLw = orig;
    if (this.shared && this.autoScale) {
      passLw = { ...orig };
      for (const name of LINEAR_NAMES) passLw[name] = sharedCopy(orig[name]);
    }

    // run_awq's feature collection and auto_scale_block on the original
    // weights, stage by stage; `inps = layer(inps)` as the stages go.
    const scales: AwqScaleSearch[] = [];
    const sampled: Partial<Record<AwqInputName, { x: Float32Array; n: number }>> = {};
    const plan = blockFeatureBytes(c, layout.N) <= this.featureBudget
      ? WHOLE_BLOCK_STAGE
      : FEATURE_STAGES;
    for (const stage of plan) {
      const done = yield* this.#stage(l, orig, passLw, hidden, layout, stage, groups);
      scales.push(...done.scales);
      Object.assign(sampled, done.sampled);
    }

    // apply_scale on a copy of the weights (and on the sampled features).
    const lw: LayerWeights = {
      ...orig,
      attnNorm: orig.attnNorm.slice(),
      ffnNorm: orig.ffnNorm.slice(),
    };
    for (const name of LINEAR_NAMES) lw[name] = orig[name].slice();
    for (const r of scales) {
      applyScale(c, lw, r);
      const x = sampled[scaleGroup(r.prevOp).input];
      if (x) divideFeature(x.x, x.n, r.scales);
    }
    this.opts.log?.(
      `awq: layers.${l} scales: ` +
        (scales.map((r) => `${r.linears.join(",")} ratio ${r.ratio}`).join("; ") || "off"),
    );

    // auto_clip_block + apply_clip.
    let t = performance.now();
    const clips: AwqClip[] = [];
    if (this.autoClip) {
      const tasks: AwqTask[] = [];
      const owner: { name: LinearName; firstRow: number; last: boolean }[] = [];
      const maxVals = new Map<LinearName, Float32Array>();
      for (const name of CLIP_LINEARS) {
        const [rows, cols] = linearShape(c, name);
        stats.clipTokens = sampled[INPUT_OF[name]]!.n;
        maxVals.set(name, new Float32Array(rows * (cols / this.grid(cols).groupSize)));
        const chunk = Math.ceil(rows / CLIP_TASKS_PER_LINEAR);
        for (let r0 = 0; r0 < rows; r0 += chunk) {
          const r1 = Math.min(rows, r0 + chunk);
          tasks.push({
            kind: "clip",
            name,
            rows: r1 - r0,
            cols,
            w: lw[name].slice(r0 * cols, r1 * cols),
          });
          owner.push({ name, firstRow: r0, last: r1 === rows });
        }
      }
      yield {
        init: {
          kind: "clip",
          sampled,
          bits: this.bits,
          groupSize: this.groupSize,
          sym: this.sym,
          bitBalance: this.bitBalance,
          nGrid: this.nGrid,
          maxShrink: this.maxShrink,
        },
        tasks,
        onResult: (k, r) => {
          const { name, firstRow, last } = owner[k];
          const mv = r as Float32Array;
          maxVals.get(name)!.set(mv, firstRow * (mv.length / (tasks[k] as { rows: number }).rows));
          if (last) this.#tick(`awq layers.${l} clip ${name}`);
        },
      };
      for (const name of CLIP_LINEARS) {
        const [rows, cols] = linearShape(c, name);
        const maxVal = maxVals.get(name)!;
        let clipped = 0;
        const ng = maxVal.length / rows, gs = cols / ng;
        for (let r = 0; r < rows; r++) {
          for (let j = 0; j < ng; j++) {
            let amax = 0;
            for (let k = 0; k < gs; k++) {
              amax = Math.max(amax, Math.abs(lw[name][r * cols + j * gs + k]));
            }
            if (maxVal[r * ng + j] < amax) clipped++;
          }
        }
        clips.push({ layer: l, name, maxVal, clipped });
      }
      for (const cl of clips) {
        const [rows, cols] = linearShape(c, cl.name);
        applyClip(lw[cl.name], rows, cols, cl.maxVal);
      }
    }
    stats.clipSeconds += since(t);

    // pseudo_quantize_model_weight.
    t = performance.now();
    const linears = new Map<string, QuantizedLinear>();
    for (const name of LINEAR_NAMES) {
      const [rows, cols] = linearShape(c, name);
      const dense = awqQuantizeTensor(lw[name], rows, cols, this.grid(cols));
      linears.set(`layers.${l}.${name}`, { dense });
      lw[name] = dequantizeDense(dense);
    }
    stats.quantizeSeconds += since(t);
    stats.seconds += since(t0);
    this.opts.log?.(
      `awq: layers.${l} done (${clips.reduce((a, x) => a + x.clipped, 0)} groups clipped)`,
    );
    return { weights: lw, linears, scales, clips };
  }

  /**
   * One stage of {@linkcode AwqRun.block}: fetches its features, samples the
   * clip search's tokens of its inputs, searches the scale groups whose
   * input it holds, and adds its sub-block's output to the residual stream.
   * Its features are dropped when it returns.
   */
  *#stage(
    l: number,
    orig: LayerWeights,
    passLw: LayerWeights,
    hidden: Float32Array[] | null,
    layout: FeatureLayout,
    stage: FeatureStage,
    groups: { prevOp: AwqPrevOp }[],
  ): Generator<
    AwqStep,
    {
      scales: AwqScaleSearch[];
      sampled: Partial<Record<AwqInputName, { x: Float32Array; n: number }>>;
    },
    AwqFeatureSet | undefined
  > {
    const { c, stats } = this;
    let t = performance.now();
    const request: AwqFeatureRequest = {
      layer: l,
      lw: orig,
      x: hidden,
      from: stage.from,
      want: stage.want,
      residual: stage.residual,
      alloc: allocator(this.shared),
    };
    const got = checkFeatureSet(c, request, layout.N, (yield { request })!);
    const f: SomeFeatures = { ...layout, ...got.features };
    const sampled: Partial<Record<AwqInputName, { x: Float32Array; n: number }>> = {};
    if (this.autoClip) {
      for (const name of Object.keys(got.xMax) as AwqInputName[]) {
        sampled[name] = sampleTokens(f[name]!, f.N, featureWidth(c, name), this.nSampleTokens);
      }
    }
    stats.collectSeconds += since(t);
    t = performance.now();
    const mine = groups.filter((g) => stage.want.includes(scaleGroup(g.prevOp).input));
    const scales = mine.length > 0 ? yield* this.#scalePass(l, passLw, f, got.xMax, mine) : [];
    stats.scaleSeconds += since(t);
    // run_awq's `inps = layer(inps)`: the full-precision block's residual additions (on the
    // stream AWQ keeps; a source that owns the stream has made them on its own).
    if (hidden) { for (const name of stage.residual) addResidual(c, hidden, layout, f[name]!); }
    return { scales, sampled };
  }

  /**
   * `_search_module_scale` of `groups` (on the original weights `lw` and
   * the features f) as one pass of tasks, a few ratios each; returns each
   * group's choice.
   */
  *#scalePass(
    l: number,
    lw: LayerWeights,
    f: SomeFeatures,
    xMax: Partial<Record<AwqInputName, Float32Array>>,
    groups: { prevOp: AwqPrevOp }[],
  ): Generator<AwqStep, AwqScaleSearch[], AwqFeatureSet | undefined> {
    const { c, nGrid } = this;
    const histories = groups.map(() => new Float64Array(nGrid));
    const tasks: AwqTask[] = [], taskGroup: number[] = [];
    groups.forEach((g, gi) => {
      const nk = ratiosPerTask(c, scaleGroup(g.prevOp), this.maxT, nGrid);
      for (let k0 = 0; k0 < nGrid; k0 += nk) {
        tasks.push({ kind: "scale", prevOp: g.prevOp, k0, k1: Math.min(nGrid, k0 + nk) });
        taskGroup.push(gi);
      }
    });
    yield {
      init: {
        kind: "scale",
        config: c,
        layer: l,
        lw,
        f,
        xMax,
        maxT: this.maxT,
        grid: {
          bits: this.bits,
          groupSize: this.groupSize,
          sym: this.sym,
          bitBalance: this.bitBalance,
        },
        nGrid,
      },
      tasks,
      onResult: (i, losses) => {
        const gi = taskGroup[i], task = tasks[i] as { k0: number; k1: number };
        histories[gi].set(losses as Float64Array, task.k0);
        const what = `awq layers.${l} scale ${scaleGroup(groups[gi].prevOp).linears.join(",")}`;
        for (let k = task.k0; k < task.k1; k++) this.#tick(what);
      },
    };
    return groups.map((g, gi) => {
      const sg = scaleGroup(g.prevOp);
      return pickRatio(l, sg, xMax[sg.input]!, histories[gi]);
    });
  }
}
