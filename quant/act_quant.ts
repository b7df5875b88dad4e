/**
 * Activation quantization as ABQ-LLM evaluates it (bytedance/ABQ-LLM
 * quantize/quantizer.py `UniformAffineQuantizer` with `dynamic_method =
 * "per_token"`, models/int_llama_layer.py): dynamic, per token, asymmetric,
 * min/max, fake-quantized (quantized and dequantized in fp32).
 *
 * - The input of every linear (wq, wk, wv, wo, w1, w3, w2) at `abits`, one
 *   (scale, zero) per token over the whole input vector (`QuantLinear`'s
 *   `act_quantizer`).
 * - Q and K after RoPE and V at `kvBits`, one (scale, zero) per head and
 *   token vector of headSize values (`qkt_matmul.quant_x1/x2`,
 *   `pv_matmul.quant_x2`). ABQ-LLM quantizes K and V after `repeat_kv`; each
 *   repeated copy of a KV head is the same vector, so quantizing the KV heads
 *   once is the same. The softmax output stays unquantized
 *   (`p_quant_params` has 16 bits).
 *
 * One token vector x (or one head of it), with maxq = 2^b − 1, or 2^b = 4
 * with bit balance at 2 bits (five levels, ABQ-LLM's released code always at
 * 2 bits):
 *
 *   xmin = min(x), xmax = max(x)                       (0 is not included, unlike GPTQ's weights)
 *   scale = clamp((xmax − xmin) / maxq, 1e-5, 1e4)
 *   zero = round(clamp(−xmin / scale, −1e4, 1e4))
 *   x̂ = (clamp(round(x / scale) + zero, 0, maxq) − zero) · scale
 *
 * every step rounded to fp32 as torch computes it, `round` half to even
 * (in WebAssembly where the engine has SIMD, quant/abq_kernels.ts: the same
 * bits). A
 * constant vector gets scale 1e-5 and, beyond |x| ≈ 0.1, a clamped zero:
 * ABQ-LLM's quantizer then returns a wrong value, and so does this one (kept
 * on purpose, to be the same function).
 *
 * The weights of a quantized model are unaffected: the evaluated model
 * applies these on the fly. Where a quantized model's linears have uniform
 * integer codes (RTN, GPTQ, AWQ, SmoothQuant, ABQ-LLM), its evaluation
 * computes each linear as the integer W×A product of the codes
 * (quant/wa_int.ts, the kernels' arithmetic); the fake quantization here
 * ({@linkcode actQuantHooks}) is what ABQ-LLM's training differentiates
 * (quant/abq_grad.ts, straight-through), what evaluates lookup-table
 * weights (SqueezeLLM) × A, and the Q/K/V quantizer everywhere.
 *
 * @module
 */
import type { LinearName, LlamaConfig } from "../model/config.ts";
import { headSize, kvDim } from "../model/config.ts";
import type { BlockBuffers, BlockHooks } from "../model/forward.ts";
import { roundHalfEven } from "./rtn.ts";
import { checkBits } from "./format.ts";
import { ACT_QUANT_KERNELS } from "./abq_kernels.ts";

/** Bits that mean "not quantized" (ABQ-LLM: `n_bits >= 16` returns x). */
export const ACT_OFF_BITS = 16;

/** Smallest and largest scale (ABQ-LLM's CLIPMIN and 1e4), as fp32. */
export const ACT_SCALE_MIN: number = Math.fround(1e-5);
export const ACT_SCALE_MAX = 1e4;
/** Bound of |zero| before rounding. */
export const ACT_ZERO_MAX = 1e4;

/**
 * What the evaluated model quantizes besides its weights: a plain JSON value
 * (workers receive it), derived from a spec by {@linkcode actQuantOf}.
 */
export interface ActQuantConfig {
  /** Bits of every linear's input, per token, 2..8; 16 = off. */
  abits: number;
  /** Bits of Q, K (after RoPE) and V, per head and token, 2..8; 16 = off. */
  kvBits: number;
  /** 2-bit grids get five levels (maxq 4, step range / 4). */
  bitBalance: boolean;
}

/**
 * The activation quantization of a spec (quant/spec.ts `ActSpec`), or null
 * when nothing is quantized (weight-only).
 *
 * @param s a spec, resolved or not (absent fields are off)
 * @returns the config, kvBits resolved (null in the spec means abits)
 * @example
 * ```ts
 * actQuantOf({ abits: 8 }); // { abits: 8, kvBits: 8, bitBalance: false }
 * actQuantOf({}); // null
 * ```
 */
export function actQuantOf(
  s: { abits?: number; kvBits?: number | null; bitBalance?: boolean },
): ActQuantConfig | null {
  const abits = s.abits ?? ACT_OFF_BITS;
  const kvBits = s.kvBits ?? abits;
  if (abits >= ACT_OFF_BITS && kvBits >= ACT_OFF_BITS) return null;
  checkActBits(abits, "--abits");
  checkActBits(kvBits, "--kv-bits");
  return { abits, kvBits, bitBalance: s.bitBalance ?? false };
}

/** Throws a RangeError naming `option` unless bits is 2..8 or 16 (off). */
export function checkActBits(bits: number, option = "--abits"): number {
  if (bits === ACT_OFF_BITS) return bits;
  try {
    return checkBits(bits, option);
  } catch (e) {
    throw new RangeError(`${(e as Error).message} (or ${ACT_OFF_BITS}: off)`);
  }
}

/**
 * The largest code of an asymmetric b-bit grid: 2^b − 1, or 2^b with bit
 * balance at 2 bits (ABQ-LLM: `qmax + 1` when n_bits is 2).
 *
 * @example
 * ```ts
 * asymMaxq(2, true); // 4: five levels 0..4
 * asymMaxq(4, true); // 15
 * ```
 */
export function asymMaxq(bits: number, bitBalance: boolean): number {
  return bitBalance && bits === 2 ? 4 : (1 << bits) - 1;
}

/** Scale and integer zero of one token vector: x̂ = scale · (q − zero). */
export interface TokenParams {
  scale: number;
  zero: number;
}

/**
 * ABQ-LLM's per-token parameters of x[off, off + n): scale and zero as in the
 * module doc.
 *
 * @param x values
 * @param off first index
 * @param n values in the vector (≥ 1)
 * @param maxq largest code ({@linkcode asymMaxq})
 * @returns fp32 scale in [1e-5, 1e4], integer zero in [−1e4, 1e4]
 * @example
 * ```ts
 * tokenParams(new Float32Array([-1, 0, 2]), 0, 3, 3); // { scale: 1, zero: 1 }
 * ```
 */
export function tokenParams(
  x: ArrayLike<number>,
  off: number,
  n: number,
  maxq: number,
): TokenParams {
  let xmin = x[off], xmax = x[off];
  for (let i = off + 1; i < off + n; i++) {
    const v = x[i];
    if (v < xmin) xmin = v;
    if (v > xmax) xmax = v;
  }
  let scale = Math.fround(Math.fround(Math.fround(xmax) - Math.fround(xmin)) / maxq);
  scale = scale < ACT_SCALE_MIN ? ACT_SCALE_MIN : scale > ACT_SCALE_MAX ? ACT_SCALE_MAX : scale;
  let z = Math.fround(-xmin / scale);
  z = z < -ACT_ZERO_MAX ? -ACT_ZERO_MAX : z > ACT_ZERO_MAX ? ACT_ZERO_MAX : z;
  // `+ 0`: torch's −0 zero is 0
  return { scale, zero: roundHalfEven(z) + 0 };
}

/**
 * Fake-quantizes `rows` vectors of `width` values each (consecutive in x),
 * each with its own {@linkcode tokenParams}: out[i] = x̂[i].
 *
 * @param x input [rows, width]
 * @param rows vectors (tokens, or tokens × heads)
 * @param width values per vector
 * @param maxq largest code ({@linkcode asymMaxq})
 * @param out output [rows, width]; may be x (in place) @default x
 * @returns out
 * @example
 * ```ts
 * fakeQuantRows(new Float32Array([0, 0.4, 1]), 1, 3, 3); // [0, 1/3, 1]
 * ```
 */
export function fakeQuantRows(
  x: Float32Array,
  rows: number,
  width: number,
  maxq: number,
  out: Float32Array = x,
): Float32Array {
  if (ACT_QUANT_KERNELS) return ACT_QUANT_KERNELS.fakeQuantRows(x, rows, width, maxq, out);
  return fakeQuantRowsScalar(x, rows, width, maxq, out);
}

/**
 * {@linkcode fakeQuantRows} in plain TypeScript, one value at a time: what
 * runs without WebAssembly SIMD, and the reference the WebAssembly kernel
 * (quant/abq_kernels.ts) is tested against bit for bit.
 */
export function fakeQuantRowsScalar(
  x: Float32Array,
  rows: number,
  width: number,
  maxq: number,
  out: Float32Array = x,
): Float32Array {
  for (let r = 0; r < rows; r++) {
    const o = r * width;
    const { scale, zero } = tokenParams(x, o, width, maxq);
    for (let i = o; i < o + width; i++) {
      let q = roundHalfEven(Math.fround(x[i] / scale)) + zero;
      q = q < 0 ? 0 : q > maxq ? maxq : q;
      out[i] = Math.fround((q - zero) * scale);
    }
  }
  return out;
}

/**
 * Block hooks (model/forward.ts) that apply `cfg` to every block: each
 * linear reads its fake-quantized input (`replaceLinearInput`, into a scratch
 * buffer: the block's own buffer is shared by wq, wk, wv and by w1, w3), and
 * Q, K, V are fake-quantized in place after RoPE (`onQkv`).
 *
 * @param cfg what to quantize ({@linkcode actQuantOf})
 * @param config the model (widths, heads)
 * @param maxT the longest window the hooks will see
 * @returns the hooks; they own one scratch buffer [maxT, max(dim, hiddenDim)]
 * @example
 * ```ts
 * const hooks = actQuantHooks({ abits: 8, kvBits: 8, bitBalance: false }, w.config, T);
 * forward(w, tokens, { hooks });
 * ```
 */
export function actQuantHooks(cfg: ActQuantConfig, config: LlamaConfig, maxT: number): BlockHooks {
  const hooks: BlockHooks = {};
  if (cfg.abits < ACT_OFF_BITS) {
    const maxq = asymMaxq(cfg.abits, cfg.bitBalance);
    const { dim, hiddenDim } = config;
    const scratch = new Float32Array(maxT * Math.max(dim, hiddenDim)); // [maxT, inFeatures]
    // wk, wv read wq's input and w3 reads w1's, right after it (model/forward.ts): the input
    // quantized for wq (w1) is reused when the next call is wk, wv (w3) of the same layer and x.
    let last: { layer: number; x: Float32Array; T: number } | null = null;
    hooks.replaceLinearInput = (layer: number, name: LinearName, x: Float32Array, T: number) => {
      const inF = name === "w2" ? hiddenDim : dim;
      if (T > maxT) throw new RangeError(`act-quant hooks: window of ${T} > maxT ${maxT}`);
      const out = scratch.subarray(0, T * inF);
      const shared = name === "wk" || name === "wv" || name === "w3";
      if (shared && last && last.layer === layer && last.x === x && last.T === T) return out;
      last = name === "wq" || name === "w1" ? { layer, x, T } : null;
      return fakeQuantRows(x, T, inF, maxq, out);
    };
  }
  if (cfg.kvBits < ACT_OFF_BITS) {
    const maxq = asymMaxq(cfg.kvBits, cfg.bitBalance);
    const hs = headSize(config), kv = kvDim(config);
    hooks.onQkv = (_l: number, b: BlockBuffers, T: number) => {
      fakeQuantRows(b.q, (T * config.dim) / hs, hs, maxq);
      fakeQuantRows(b.k, (T * kv) / hs, hs, maxq);
      fakeQuantRows(b.v, (T * kv) / hs, hs, maxq);
    };
  }
  return hooks;
}
