/**
 * The weight × activation (W×A) linear as integer hardware computes it: how
 * squeezebench defines a linear with uniform integer weight codes and
 * per-token quantized activations (quant/act_quant.ts's grid), and how the
 * CPU evaluation computes it.
 *
 * A uniform weight code q_w (quant/format.ts's `UniformTensor`: w = s_w·(q_w − z_w)
 * per row r and group g) and a per-token activation code q_x (x = s_x·(q_x − z_x)
 * per token t, ABQ-LLM's dynamic asymmetric min/max) give
 *
 *     acc[t, r, g] = Σ_{k ∈ g} (q_x[t, k] − z_x[t]) · (q_w[r, k] − z_w[r, g])   (exact integer)
 *     y[t, r]      = Σ_g f32(f32(s_w[r, g] · s_x[t]) · f32(acc[t, r, g]))       (f32, groups in order)
 *
 * exactly what the W×A GPU kernels (kernels/bitplane.ts, kernels/int8.ts)
 * compute with one group per row, bit for bit, and what integer hardware and
 * ABQ-LLM's engine do: integer products summed exactly, then one epilogue.
 * Fake quantization, fakeQuantRows(X) · dequantize(W)ᵀ summed in f32, is the
 * same product up to f32 rounding of the sum; those last bits flip some
 * 8-bit activation codes of the next layer and the difference cascades
 * (≈ 3e-3 relative on stories260K W2*A8 perplexity), so the evaluated model
 * is defined by the integer product, and fake quantization remains what
 * ABQ-LLM's training differentiates through (quant/abq_grad.ts, with the
 * straight-through estimator, as the official code).
 *
 * Which linears: every linear of a model whose linears all have uniform
 * codes and no sparse part (RTN, GPTQ, AWQ, SmoothQuant, ABQ-LLM). A model
 * with lookup-table codes or a sparse part (SqueezeLLM) has no integer
 * product; it is evaluated with fake quantization (quant/act_quant.ts's
 * `replaceLinearInput`).
 *
 * Layout (for WebAssembly SIMD's 8-lane i16 dot products): the columns of a
 * weight are grouped — group g holds its columns in order, act-order weights
 * (gIdx) included — and each group is padded with zeros to `groupStride`
 * slots, a multiple of 8; the activation codes q_x − z_x are written to the
 * same slots. Both are i16: |q − z| ≤ 255 for weights (zeros in the code
 * range) and ≤ 10^4 + 255 for activations (act_quant.ts clamps zeros to
 * ±10^4). The sums wrap in i32, as the GPU kernels'; exact whenever the
 * accumulator fits an i32.
 *
 * @module
 */
import type { LinearName, LlamaConfig } from "../model/config.ts";
import { linearKey } from "../model/config.ts";
import type { BlockHooks } from "../model/forward.ts";
import type { QuantizedLinear, QuantLayout, UniformTensor } from "./format.ts";
import { codeAt, fromF16, groupOf, nGroups } from "./format.ts";
import { roundHalfEven } from "./rtn.ts";
import { ACT_QUANT_KERNELS } from "./abq_kernels.ts";
import {
  ACT_OFF_BITS,
  type ActQuantConfig,
  actQuantHooks,
  asymMaxq,
  tokenParams,
} from "./act_quant.ts";

/** i16 lanes of one WebAssembly SIMD word: the group padding. */
const LANES = 8;

/** A uniform weight in the integer layout (module doc). */
export interface IntWeight {
  rows: number;
  cols: number;
  nGroups: number;
  /** Slots per group: its largest group's columns rounded up to a multiple of 8. */
  groupStride: number;
  /** Slot of column c in a row: group(c) · groupStride + its index among its group's columns. */
  pos: Int32Array; // [cols]
  codes: Int16Array; // [rows, nGroups · groupStride] q_w − z_w, 0 in the padding
  scales: Float32Array; // [rows, nGroups] s_w (the stored fp16 values)
}

/**
 * A uniform weight in the integer layout.
 *
 * @param t the weight (integer zeros, as quant/format.ts stores them)
 * @param what names it in errors
 * @returns codes q_w − z_w in grouped, padded slots, with the scales
 * @throws RangeError for a zero that is not an integer, or so far outside the
 *   code range that code − zero leaves int16
 * @example
 * ```ts
 * const w = intWeight(rtnTensor); // then intLinear(y, quantizeActs(x, T, w, 255), w)
 * ```
 */
export function intWeight(t: UniformTensor, what = "weight"): IntWeight {
  const { rows, cols, bits } = t;
  const ng = nGroups(t);
  const count = new Int32Array(ng); // columns per group
  for (let c = 0; c < cols; c++) count[groupOf(t, c)]++;
  const groupStride = Math.ceil(Math.max(...count) / LANES) * LANES;
  const pos = new Int32Array(cols), filled = new Int32Array(ng);
  for (let c = 0; c < cols; c++) {
    const g = groupOf(t, c);
    pos[c] = g * groupStride + filled[g]++;
  }
  const zeros = fromF16(t.zeros), K = ng * groupStride;
  const codes = new Int16Array(rows * K);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const z = zeros[r * ng + groupOf(t, c)];
      if (!Number.isInteger(z)) {
        throw new RangeError(`${what}: zero point ${z} is not an integer (integer grids only)`);
      }
      const v = codeAt(t.codes, cols, bits, r, c) - z;
      if (v < -32768 || v > 32767) {
        throw new RangeError(
          `${what}: code − zero = ${v} at row ${r}, column ${c} does not fit the integer ` +
            `layout's int16 (zero ${z} far outside the code range)`,
        );
      }
      codes[r * K + pos[c]] = v;
    }
  }
  return { rows, cols, nGroups: ng, groupStride, pos, codes, scales: fromF16(t.scales) };
}

/** Per-token activation codes in a weight's integer layout. */
export interface IntActs {
  /** Tokens. */
  T: number;
  codes: Int16Array; // [T, nGroups · groupStride] q_x − z_x, 0 in the padding
  scales: Float32Array; // [T] s_x
}

/**
 * The per-token codes of x [T, cols] in w's layout: quant/act_quant.ts's
 * grid (`tokenParams`, round half to even), q_x − z_x, so that
 * s_x · (q_x − z_x) is exactly `fakeQuantRows`'s value. In WebAssembly where
 * the engine has SIMD, else {@linkcode quantizeActsScalar}: the same bits.
 *
 * @param x input [T, cols]
 * @param T tokens
 * @param w the weight whose layout the codes take
 * @param maxq largest activation code (act_quant.ts's `asymMaxq`)
 * @param out where to write (codes ≥ T · nGroups · groupStride, scales ≥ T) @default new arrays
 * @returns out, its `T` set
 */
export function quantizeActs(
  x: Float32Array,
  T: number,
  w: IntWeight,
  maxq: number,
  out: IntActs = newActs(T, w),
): IntActs {
  out.T = T;
  if (!ACT_QUANT_KERNELS) return quantizeActsScalar(x, T, w, maxq, out);
  const stride = w.nGroups * w.groupStride;
  ACT_QUANT_KERNELS.quantCodesRows(x, T, w.cols, maxq, w.pos, stride, out.codes, out.scales);
  return out;
}

/** Room for the codes of T tokens in w's layout. */
function newActs(T: number, w: IntWeight): IntActs {
  return { T, codes: new Int16Array(T * w.nGroups * w.groupStride), scales: new Float32Array(T) };
}

/**
 * {@linkcode quantizeActs} in plain TypeScript: what runs without
 * WebAssembly SIMD, and the reference the kernel is tested against.
 *
 * @param out where to write @default new arrays
 */
export function quantizeActsScalar(
  x: Float32Array,
  T: number,
  w: IntWeight,
  maxq: number,
  out: IntActs = newActs(T, w),
): IntActs {
  const { cols, pos } = w, stride = w.nGroups * w.groupStride;
  out.T = T;
  out.codes.fill(0, 0, T * stride);
  for (let t = 0; t < T; t++) {
    const { scale, zero } = tokenParams(x, t * cols, cols, maxq);
    out.scales[t] = scale;
    for (let c = 0; c < cols; c++) {
      let q = roundHalfEven(Math.fround(x[t * cols + c] / scale)) + zero;
      q = q < 0 ? 0 : q > maxq ? maxq : q;
      out.codes[t * stride + pos[c]] = q - zero;
    }
  }
  return out;
}

/**
 * y [T, rows] = the W×A product of the module doc: exact integer
 * accumulators per group, then the f32 epilogue. In WebAssembly where the
 * engine has SIMD, else {@linkcode intLinearScalar}: the same bits.
 *
 * @param y output [≥ T, rows] (its first T rows are written)
 * @param x activation codes in w's layout ({@linkcode quantizeActs})
 * @param w the weight
 * @returns y
 * @example
 * ```ts
 * const w = intWeight(t);
 * intLinear(y, quantizeActs(x, T, w, asymMaxq(8, false)), w);
 * ```
 */
export function intLinear(y: Float32Array, x: IntActs, w: IntWeight): Float32Array {
  if (!ACT_QUANT_KERNELS) return intLinearScalar(y, x, w);
  const { rows, nGroups: ng, groupStride: gs } = w;
  ACT_QUANT_KERNELS.intLinear(y, x.codes, x.scales, x.T, w.codes, w.scales, rows, ng, gs);
  return y;
}

/** {@linkcode intLinear} in plain TypeScript (wrapping i32 sums, f32 epilogue). */
export function intLinearScalar(y: Float32Array, x: IntActs, w: IntWeight): Float32Array {
  const { rows, nGroups: ng, groupStride: gs } = w, K = ng * gs, f = Math.fround;
  for (let t = 0; t < x.T; t++) {
    const sx = x.scales[t];
    for (let r = 0; r < rows; r++) {
      let out = 0;
      for (let g = 0; g < ng; g++) {
        let acc = 0;
        for (let k = g * gs; k < (g + 1) * gs; k++) {
          acc = (acc + x.codes[t * K + k] * w.codes[r * K + k]) | 0;
        }
        const term = f(f(w.scales[r * ng + g] * sx) * f(acc));
        out = g === 0 ? term : f(out + term);
      }
      y[t * rows + r] = out;
    }
  }
  return y;
}

/**
 * Whether a linear has an integer W×A product: uniform codes and no sparse
 * part (a packed linear, or a file's layout).
 *
 * @example
 * ```ts
 * isIntLinear({ kind: "uniform", bits: 4, rows: 8, cols: 8 }); // true
 * ```
 */
export function isIntLinear(q: QuantizedLinear | QuantLayout): boolean {
  if ("dense" in q) return q.dense.kind === "uniform" && !q.sparse;
  return q.kind === "uniform" && !(q.sparse ?? (q.nnz ?? 0) > 0);
}

/**
 * The integer weights of a model's linears, each prepared on first use
 * ({@linkcode intWeight}) and kept: all of them, or only the last `keepLayers`
 * blocks' (block-by-block evaluation, eval/perplexity_blockwise.ts).
 */
export class IntWeights {
  readonly #cache = new Map<string, IntWeight>();
  readonly #layers: number[] = [];

  /**
   * @param linear "layers.{l}.{name}" → the packed linear ({@linkcode isIntLinear})
   * @param keepLayers blocks whose weights stay prepared @default Infinity
   */
  constructor(
    readonly linear: (key: string) => QuantizedLinear,
    readonly keepLayers: number = Infinity,
  ) {}

  /** Linear `name` of block `layer` in the integer layout. */
  get(layer: number, name: LinearName): IntWeight {
    const key = linearKey(layer, name);
    let w = this.#cache.get(key);
    if (w) return w;
    const q = this.linear(key);
    if (!isIntLinear(q)) {
      throw new RangeError(
        `${key}: integer W×A products need uniform codes without a sparse part, found ` +
          `${q.dense.kind}${q.sparse ? " + sparse" : ""}`,
      );
    }
    if (!this.#layers.includes(layer)) {
      this.#layers.push(layer);
      if (this.#layers.length > this.keepLayers) {
        const drop = this.#layers.shift()!;
        for (const k of [...this.#cache.keys()]) {
          if (k.startsWith(`layers.${drop}.`)) this.#cache.delete(k);
        }
      }
    }
    w = intWeight(q.dense as UniformTensor, key);
    this.#cache.set(key, w);
    return w;
  }
}

/** Whether two weights share a layout, so that one input's codes serve both. */
function sameLayout(a: IntWeight, b: IntWeight): boolean {
  if (a.pos === b.pos) return true;
  if (a.groupStride !== b.groupStride || a.nGroups !== b.nGroups || a.cols !== b.cols) return false;
  for (let c = 0; c < a.cols; c++) if (a.pos[c] !== b.pos[c]) return false;
  return true;
}

/**
 * Block hooks (model/forward.ts) that evaluate a quantized model with
 * activation quantization `cfg`: every linear is the integer W×A product of
 * its codes (`linear`), and Q, K, V are fake-quantized after RoPE as
 * quant/act_quant.ts's hooks do (`onQkv`). wk, wv reuse wq's codes, w3
 * reuses w1's (the same input, quantized once).
 *
 * @param cfg what to quantize (abits < 16)
 * @param config the model
 * @param maxT the longest window
 * @param weights the model's linears ({@linkcode IntWeights})
 * @returns the hooks
 * @example
 * ```ts
 * const hooks = intActQuantHooks(act, w.config, T, new IntWeights((k) => q.linears.get(k)!));
 * forward(q.weights, tokens, { hooks });
 * ```
 */
export function intActQuantHooks(
  cfg: ActQuantConfig,
  config: LlamaConfig,
  maxT: number,
  weights: IntWeights,
): BlockHooks {
  if (!(cfg.abits < ACT_OFF_BITS)) {
    throw new RangeError(`intActQuantHooks(): integer linears need quantized activations`);
  }
  const hooks = actQuantHooks({ ...cfg, abits: ACT_OFF_BITS }, config, maxT); // Q, K, V only
  const maxq = asymMaxq(cfg.abits, cfg.bitBalance);
  const acts: IntActs = { T: 0, codes: new Int16Array(0), scales: new Float32Array(maxT) };
  let last: { layer: number; x: Float32Array; T: number; w: IntWeight } | null = null;
  hooks.linear = (layer, name, y, x, T) => {
    if (T > maxT) throw new RangeError(`W×A hooks: window of ${T} > maxT ${maxT}`);
    const w = weights.get(layer, name);
    const shared = name === "wk" || name === "wv" || name === "w3";
    const reuse = shared && last !== null && last.layer === layer && last.x === x &&
      last.T === T && sameLayout(last.w, w);
    if (!reuse) {
      const n = maxT * w.nGroups * w.groupStride;
      if (acts.codes.length < n) acts.codes = new Int16Array(n); // [maxT, nGroups · groupStride]
      quantizeActs(x, T, w, maxq, acts);
    }
    last = name === "wq" || name === "w1" || reuse ? { layer, x, T, w } : null;
    intLinear(y, acts, w);
    return true;
  };
  return hooks;
}

/**
 * The hooks a quantized model is evaluated with under activation
 * quantization: {@linkcode intActQuantHooks} when every linear has an
 * integer product ({@linkcode isIntLinear}), else quant/act_quant.ts's
 * fake-quant hooks (SqueezeLLM's lookup tables, sparse parts).
 *
 * @param cfg what to quantize
 * @param config the model
 * @param maxT the longest window
 * @param linears the model's packed linears by "layers.{l}.{name}"; null or
 *   absent: fake quantization (an fp32 model, or the float reference)
 * @returns the hooks
 */
export function quantizedModelHooks(
  cfg: ActQuantConfig,
  config: LlamaConfig,
  maxT: number,
  linears?: ReadonlyMap<string, QuantizedLinear> | null,
): BlockHooks {
  const integer = cfg.abits < ACT_OFF_BITS && linears && linears.size > 0 &&
    [...linears.values()].every(isIntLinear);
  if (!integer) return actQuantHooks(cfg, config, maxT);
  return intActQuantHooks(cfg, config, maxT, new IntWeights((k) => linears.get(k)!));
}
