/**
 * SmoothQuant (Xiao et al., arXiv 2211.10438; mit-han-lab/smoothquant
 * `smooth_lm` for LLaMA-like models), the W8A8 / W6A6 / W4A4 baseline of
 * ABQ-LLM's Table 2.
 *
 * 1. Activation statistics: max|X_c| per input channel c of the linears that
 *    follow a norm — wq/wk/wv (the attention RMSNorm's output) and w1/w3
 *    (the FFN RMSNorm's output) — over every token of the calibration
 *    windows, on the full-precision model (`get_act_scales`).
 * 2. Smoothing factors, per channel (Eq. 4, `smooth_ln_fcs`):
 *    s_c = max|X_c|^α / max|W_c|^(1−α), clamped to ≥ 1e-5, where max|W_c|
 *    is the largest |w| of column c over all the linears the norm feeds.
 * 3. Folding: the norm's weight is divided by s and those linears' columns
 *    multiplied by s, so X·Wᵀ = (X/s)·(W·s)ᵀ: the fp32 model computes the
 *    same function ({@linkcode smoothWeights}), while the linears' inputs
 *    have flatter channels (easier per-token activation quantization).
 * 4. Per-channel (one group per row) RTN of every linear on GPTQ's min-max
 *    grid (quant/rtn.ts), as ABQ-LLM's baseline quantizes weights per
 *    output channel.
 *
 * wo and w2 have no norm before them, so SmoothQuant leaves their inputs as
 * they are (as the official LLaMA smoothing does). A channel whose factor is
 * not finite (a column of zeros in every fed linear) keeps s = 1.
 *
 * @module
 */
import type { LinearName, LlamaWeights } from "../model/config.ts";
import { LINEAR_NAMES, linearKey, linearShape } from "../model/config.ts";
import { block, embed, RunState } from "../model/forward.ts";
import type { ProgressCallback } from "../model/pool.ts";
import { dequantize, type QuantizedLinear } from "./format.ts";
import { rtn } from "./rtn.ts";

/** The norm → linears pairs SmoothQuant folds, per block. */
export const SMOOTH_PAIRS: readonly {
  norm: "attnNorm" | "ffnNorm";
  linears: readonly LinearName[];
}[] = [
  { norm: "attnNorm", linears: ["wq", "wk", "wv"] },
  { norm: "ffnNorm", linears: ["w1", "w3"] },
];

/** Per block, max|X_c| of the attention norm's and the FFN norm's outputs. */
export interface ActMax {
  attnNorm: Float32Array; // [dim]
  ffnNorm: Float32Array; // [dim]
}

/**
 * max|X_c| per channel of the inputs of wq (= wk, wv) and w1 (= w3) of every
 * block, over every token of `windows`, on `base`.
 *
 * @param base the model
 * @param windows calibration windows of token ids (each ≤ max_seq_len)
 * @param onProgress called after each window
 * @returns one {@linkcode ActMax} per block
 */
export function activationAbsMax(
  base: LlamaWeights,
  windows: Int32Array[],
  onProgress?: ProgressCallback,
): ActMax[] {
  const c = base.config;
  const out: ActMax[] = base.layers.map(() => ({
    attnNorm: new Float32Array(c.dim),
    ffnNorm: new Float32Array(c.dim),
  }));
  const maxT = Math.max(1, ...windows.map((w) => w.length));
  const s = new RunState(c, maxT);
  const hooks = {
    onLinearInput(l: number, name: LinearName, x: Float32Array, T: number) {
      if (name !== "wq" && name !== "w1") return;
      const m = name === "wq" ? out[l].attnNorm : out[l].ffnNorm;
      for (let t = 0; t < T; t++) {
        const o = t * c.dim;
        for (let i = 0; i < c.dim; i++) {
          const a = Math.abs(x[o + i]);
          if (a > m[i]) m[i] = a;
        }
      }
    },
  };
  windows.forEach((win, i) => {
    const x = s.x.subarray(0, win.length * c.dim);
    embed(base, win, x);
    for (let l = 0; l < c.nLayers; l++) block(c, base.layers[l], l, x, win.length, s, hooks);
    onProgress?.(i + 1, windows.length, "windows");
  });
  return out;
}

/**
 * SmoothQuant's factors of one norm: s_c = max|X_c|^α / max|W_c|^(1−α)
 * (fp32, clamped to ≥ 1e-5; 1 where not finite).
 *
 * @param actMax max|X_c| [width]
 * @param linears the linears the norm feeds, each [rows, width]
 * @param width input channels
 * @param alpha migration strength in 0..1
 * @returns s [width]
 * @example
 * ```ts
 * smoothFactors(new Float32Array([4]), [new Float32Array([1])], 1, 0.5); // [2]
 * ```
 */
export function smoothFactors(
  actMax: Float32Array,
  linears: readonly Float32Array[],
  width: number,
  alpha: number,
): Float32Array {
  const wMax = new Float32Array(width);
  for (const W of linears) {
    for (let o = 0; o < W.length; o += width) {
      for (let i = 0; i < width; i++) {
        const a = Math.abs(W[o + i]);
        if (a > wMax[i]) wMax[i] = a;
      }
    }
  }
  const s = new Float32Array(width);
  for (let i = 0; i < width; i++) {
    const v = Math.fround(
      Math.fround(Math.pow(actMax[i], alpha)) / Math.fround(Math.pow(wMax[i], 1 - alpha)),
    );
    s[i] = Number.isFinite(v) ? Math.max(v, Math.fround(1e-5)) : 1;
  }
  return s;
}

/**
 * `base` with SmoothQuant's factors folded in: every block's two norms
 * divided by s, the columns of the linears they feed multiplied by s. The
 * fp32 model computes the same function up to fp32 rounding.
 *
 * @param base the model (not modified)
 * @param actMax per block ({@linkcode activationAbsMax})
 * @param alpha migration strength
 * @returns the smoothed weights (new arrays for the changed tensors) and the factors
 */
export function smoothWeights(
  base: LlamaWeights,
  actMax: ActMax[],
  alpha: number,
): { weights: LlamaWeights; factors: ActMax[] } {
  const dim = base.config.dim;
  const factors: ActMax[] = [];
  const layers = base.layers.map((lw, l) => {
    const next = { ...lw };
    const f = {} as ActMax;
    for (const { norm, linears } of SMOOTH_PAIRS) {
      const s = smoothFactors(actMax[l][norm], linears.map((n) => lw[n]), dim, alpha);
      f[norm] = s;
      next[norm] = Float32Array.from(lw[norm], (v, i) => v / s[i]);
      for (const n of linears) {
        next[n] = Float32Array.from(lw[n], (v, j) => v * s[j % dim]);
      }
    }
    factors.push(f);
    return next;
  });
  return { weights: { ...base, layers }, factors };
}

/** Options of {@linkcode smoothquantQuantizeModel}. */
export interface SmoothQuantOptions {
  bits: number;
  /** Migration strength. */
  alpha: number;
  /** Bit balance of the 2-bit weight grid (quant/rtn.ts). @default false */
  bitBalance?: boolean;
  onProgress?: ProgressCallback;
}

/**
 * SmoothQuant of a whole model: activation maxima from `windows`, factors
 * folded, per-channel RTN.
 *
 * @param base the full-precision model (not modified)
 * @param windows calibration windows
 * @param opts bits, α, bit balance, progress
 * @returns fake-quantized weights (smoothed norms included), packed linears, the factors
 */
export function smoothquantQuantizeModel(
  base: LlamaWeights,
  windows: Int32Array[],
  opts: SmoothQuantOptions,
): { weights: LlamaWeights; linears: Map<string, QuantizedLinear>; factors: ActMax[] } {
  const c = base.config;
  const actMax = activationAbsMax(
    base,
    windows,
    (d, n) => opts.onProgress?.(d, n, "smoothquant windows"),
  );
  const smooth = smoothWeights(base, actMax, opts.alpha);
  const linears = new Map<string, QuantizedLinear>();
  const layers = smooth.weights.layers.map((lw, l) => {
    const next = { ...lw };
    for (const name of LINEAR_NAMES) {
      const [rows, cols] = linearShape(c, name);
      const q: QuantizedLinear = {
        dense: rtn(lw[name], rows, cols, {
          bits: opts.bits,
          bitBalance: opts.bitBalance,
          name: linearKey(l, name),
        }),
      };
      linears.set(linearKey(l, name), q);
      next[name] = dequantize(q);
    }
    return next;
  });
  return { weights: { ...smooth.weights, layers }, linears, factors: smooth.factors };
}
