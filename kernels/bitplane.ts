/**
 * Arbitrary-precision weight × activation kernels from bit planes (ABQ-LLM,
 * arXiv 2408.08554, §3.4 and its engine/): a W-bit uniform weight and
 * per-token A-bit activations, both as bit planes packed 32 columns per u32
 * (kernels/bitplane_reference.ts, "Plane layout"), multiplied as binary
 * matrices,
 *
 *     D = Σ_i Σ_j 2^(i+j) · Σ_k countOneBits(x_i & w_j),
 *
 * for every pair W2..8 × A2..8 and any number of tokens (a decode batch or
 * a whole prefill window, each in its tile shape), with the asymmetric zero
 * points of both sides applied exactly (the integer correction of
 * kernels/bitplane_reference.ts) and the epilogue s_w · s_x · acc → f32.
 * The work per 32 columns and token is W·A AND + popcount pairs, so every
 * bit dropped from either side saves time, not only 4 and 8.
 *
 * In the source, the sum over (i, j) is unrolled and grouped by shift,
 * Σ_s (Σ_{i+j=s} countOneBits(x_i & w_j)) << s, so a W×A pair costs W·A
 * popcounts and W + A − 1 shifts. The kernel skeleton (tiling, staging,
 * zero points, epilogue) is kernels/_wa_kernel.ts, shared with the W8A8
 * kernel of kernels/int8.ts.
 *
 * @module
 */
import type { UniformTensor } from "../quant/format.ts";
import { checkBits } from "../quant/format.ts";
import type { Gpu } from "./device.ts";
import type { WaPlan, WaPlanOptions, WaScheme, WaWeight } from "./_wa_kernel.ts";
import { createWaPlan, runWaOnce, uploadWaWeight } from "./_wa_kernel.ts";
import type { ActCodes, ActPlanes, WeightPlanes } from "./bitplane_reference.ts";
import { packActPlanes, packWeightPlanes } from "./bitplane_reference.ts";

export type { WaPlan, WaPlanOptions, WaTiling, WaWeight } from "./_wa_kernel.ts";
export { TOKEN_FIELDS, WA_KERNEL, WA_MAX_BATCH, waTiling } from "./_wa_kernel.ts";

/** Σ_s (terms of shift s) << s for s = 0..maxShift, as one WGSL u32 expression. */
function shiftedSum(terms: (s: number) => string[], maxShift: number): string {
  const parts: string[] = [];
  for (let s = 0; s <= maxShift; s++) {
    const t = terms(s);
    if (!t.length) continue;
    const sum = t.length === 1 ? t[0] : `(${t.join(" + ")})`;
    parts.push(s === 0 ? sum : `(${sum} << ${s}u)`);
  }
  return parts.join(" + ");
}

/**
 * The bit-plane scheme of a W×A pair: `wBits` weight planes and `aBits`
 * activation planes per 32-column block.
 *
 * @param wBits weight planes (2..8)
 * @param aBits activation planes (2..8)
 * @returns the scheme for kernels/_wa_kernel.ts
 */
export function bitplaneScheme(wBits: number, aBits: number): WaScheme {
  checkBits(wBits, "weight bits");
  checkBits(aBits, "activation bits");
  const popc = (a: string, b: string) => `countOneBits(${a} & ${b})`;
  const dot = (x: string, w: string) =>
    shiftedSum((s) => {
      const t: string[] = [];
      for (let i = 0; i < aBits; i++) {
        const j = s - i;
        if (j >= 0 && j < wBits) t.push(popc(`${x}${i}`, `${w}${j}`));
      }
      return t;
    }, aBits + wBits - 2);
  const sum = (v: string, n: number) =>
    `i32(${shiftedSum((s) => (s < n ? [`countOneBits(${v}${s})`] : []), n - 1)})`;
  return {
    name: `bitplane.w${wBits}a${aBits}`,
    wWords: wBits,
    xWords: aBits,
    prelude: "",
    dot: (x, w) => `i32(${dot(x, w)})`,
    wSum: (w) => sum(w, wBits),
    xSum: (x) => sum(x, aBits),
  };
}

/**
 * Uploads a weight's bit planes, scales, zeros and per-group code sums.
 *
 * @param gpu the device
 * @param w the weight as planes (kernels/bitplane_reference.ts's `packWeightPlanes`)
 * @returns the buffers; call `release()` when done
 * @example
 * ```ts
 * const lin = uploadWeightPlanes(gpu, packWeightPlanes(uniformTensor));
 * ```
 */
export function uploadWeightPlanes(gpu: Gpu, w: WeightPlanes): WaWeight {
  return uploadWaWeight(gpu, { ...w, words: w.planes }, w.bits);
}

/** A bit-plane kernel bound to its buffers. */
export interface BitplanePlan extends WaPlan {
  readonly wBits: number;
  readonly aBits: number;
  /** Writes activation planes of `batch` tokens (their scales, zeros, sums). */
  write(x: ActPlanes): void;
}

/**
 * Binds an uploaded weight to activations of `aBits` bits for a batch size.
 *
 * @param gpu the device
 * @param lin the weight, from {@linkcode uploadWeightPlanes}
 * @param aBits activation planes (2..8)
 * @param opts tokens (`batch`: any T), output kind, tiling
 * @returns the plan; release it before releasing `lin`
 */
export async function createBitplanePlan(
  gpu: Gpu,
  lin: WaWeight,
  aBits: number,
  opts: WaPlanOptions,
): Promise<BitplanePlan> {
  const plan = await createWaPlan(gpu, bitplaneScheme(lin.wWords, aBits), lin, opts);
  return {
    ...plan,
    wBits: lin.wWords,
    aBits,
    write(x: ActPlanes) {
      if (x.bits !== aBits || x.cols !== lin.cols || x.batch !== plan.batch) {
        throw new RangeError(
          `BitplanePlan.write(): the plan takes ${plan.batch}×${lin.cols} activations of ` +
            `${aBits} bits, found ${x.batch}×${x.cols} of ${x.bits}`,
        );
      }
      plan.writeTokens(x.planes, x.scales, x.zeros, x.sums);
    },
  };
}

/**
 * One-shot W×A product on the GPU through bit planes: packs and uploads the
 * weight and the activations, runs, reads back and releases everything.
 *
 * @param gpu the device
 * @param w the uniform weight [rows, cols] (no gIdx; groups of whole 32-column blocks or one per row)
 * @param x per-token activation codes [T, cols] (any T: decode or prefill tiles)
 * @param opts `output: "i32"` returns the exact integer accumulators; tiling
 * @returns y [batch, rows] (Float32Array), or the accumulators (Int32Array)
 * @example
 * ```ts
 * const y = await bitplaneMatmulGpu(gpu, w, { batch: 1, cols: w.cols, bits: 8, codes,
 *   scales: new Float32Array([0.01]), zeros: new Int32Array([128]) });
 * ```
 */
export async function bitplaneMatmulGpu(
  gpu: Gpu,
  w: UniformTensor,
  x: ActCodes,
  opts: Omit<WaPlanOptions, "batch"> = {},
): Promise<Float32Array | Int32Array> {
  if (x.cols !== w.cols) {
    throw new RangeError(
      `bitplaneMatmulGpu(): weight has ${w.cols} columns, activations ${x.cols}`,
    );
  }
  const lin = uploadWeightPlanes(gpu, packWeightPlanes(w));
  return await runWaOnce(
    gpu,
    lin,
    () => createBitplanePlan(gpu, lin, x.bits, { ...opts, batch: x.batch }),
    (plan) => plan.write(packActPlanes(x)),
    opts.output,
  );
}
