/**
 * A linear layer with quantized weights and quantized activations through
 * the W×A kernels: the input tokens are quantized per token exactly as
 * quant/act_quant.ts fake-quantizes them (ABQ-LLM's dynamic asymmetric
 * min/max, the same scale, zero and rounding), as integer codes instead of
 * dequantized values, and multiplied with the weight's codes by
 * kernels/bitplane.ts (or kernels/int8.ts) in chunks of at most 8 tokens.
 * With one group per row the result is bit for bit quant/wa_int.ts's
 * integer product, which eval/perplexity.ts evaluates on the CPU (and, up
 * to f32 rounding, the fake-quant product fakeQuantRows(X) · dequantize(W)ᵀ).
 *
 * @module
 */
import { fromF16, type UniformTensor } from "../quant/format.ts";
import { tokenParams } from "../quant/act_quant.ts";
import { roundHalfEven } from "../quant/rtn.ts";
import type { ActCodes } from "../kernels/bitplane_reference.ts";
import { packActPlanes, packWeightPlanes, waAccRef } from "../kernels/bitplane_reference.ts";
import type { Gpu } from "../kernels/device.ts";
import { readBuffer } from "../kernels/device.ts";
import { createBitplanePlan, uploadWeightPlanes, WA_MAX_BATCH } from "../kernels/bitplane.ts";
import { createInt8Plan, packInt8Acts, uploadInt8Weight } from "../kernels/int8.ts";

/**
 * Bit planes that codes 0..maxq need: ⌈log2(maxq + 1)⌉ (3 for the five
 * levels of bit balance at 2 bits).
 *
 * @param maxq largest code
 * @returns planes, at least 2 (the kernels' smallest width)
 */
export function planesFor(maxq: number): number {
  return Math.max(2, Math.ceil(Math.log2(maxq + 1)));
}

/**
 * Per-token integer codes of rows [first, first + n) of x [T, width], with
 * quant/act_quant.ts's `tokenParams` and its rounding:
 * q = clamp(roundHalfEven(x / scale) + zero, 0, maxq), so that
 * scale · (q − zero) is exactly `fakeQuantRows`'s value.
 *
 * @param x input [T, width]
 * @param width values per token
 * @param first first token
 * @param n tokens
 * @param maxq largest code (quant/act_quant.ts's `asymMaxq`)
 * @returns the codes with their scales and zeros, `bits` = {@linkcode planesFor}(maxq)
 */
export function quantizeTokens(
  x: Float32Array,
  width: number,
  first: number,
  n: number,
  maxq: number,
): ActCodes {
  const codes = new Uint8Array(n * width);
  const scales = new Float32Array(n), zeros = new Int32Array(n);
  for (let t = 0; t < n; t++) {
    const o = (first + t) * width;
    const { scale, zero } = tokenParams(x, o, width, maxq);
    scales[t] = scale;
    zeros[t] = zero;
    for (let i = 0; i < width; i++) {
      const q = roundHalfEven(Math.fround(x[o + i] / scale)) + zero;
      codes[t * width + i] = q < 0 ? 0 : q > maxq ? maxq : q;
    }
  }
  return { batch: n, cols: width, bits: planesFor(maxq), codes, scales, zeros };
}

/**
 * y [T, rows] = Q_act(x) · Wᵀ computed on the CPU exactly as the W×A kernels
 * compute it with one group per weight row: the exact integer accumulator
 * Σ_k (q_x − z_x)(q_w − z_w) (kernels/bitplane_reference.ts `waAccRef`), then
 * the kernels' f32 epilogue (s_w · s_x) · acc. Its outputs are the kernels'
 * bit for bit, and quant/wa_int.ts's `intLinear` (the CPU evaluation's,
 * eval/wa_linear_test.ts); they differ from fake quantization's
 * fakeQuantRows(X) · dequantize(W)ᵀ, summed in f32, in the last bits.
 *
 * @param w the uniform weight [rows, cols], one group per row
 * @param x input [T, cols]
 * @param T tokens
 * @param maxq largest activation code
 * @returns y [T, rows]
 */
export function waLinearCpu(
  w: UniformTensor,
  x: Float32Array,
  T: number,
  maxq: number,
): Float32Array {
  if (w.groupSize < w.cols) {
    throw new RangeError(`waLinearCpu(): one group per row only, found groups of ${w.groupSize}`);
  }
  const codes = quantizeTokens(x, w.cols, 0, T, maxq), acc = waAccRef(w, codes);
  const sw = fromF16(w.scales), y = new Float32Array(T * w.rows), f = Math.fround;
  for (let t = 0; t < T; t++) {
    for (let r = 0; r < w.rows; r++) {
      y[t * w.rows + r] = f(f(sw[r] * codes.scales[t]) * acc[t * w.rows + r]);
    }
  }
  return y;
}

/** Options of {@linkcode waLinearGpu}. */
export interface WaLinearOptions {
  /** "bitplane" (kernels/bitplane.ts) or "int8" (kernels/int8.ts). @default "bitplane" */
  kernel?: "bitplane" | "int8";
}

/**
 * y [T, rows] = Q_act(x) · Wᵀ through a W×A kernel, 8 tokens per dispatch.
 *
 * @param gpu the device
 * @param w the uniform weight [rows, cols] (no gIdx; groups of whole 32-column blocks or one per row)
 * @param x input [T, cols]
 * @param T tokens
 * @param maxq largest activation code (quant/act_quant.ts's `asymMaxq(abits, bitBalance)`)
 * @param opts which kernel
 * @returns y [T, rows]
 * @example
 * ```ts
 * const y = await waLinearGpu(gpu, rtn(W, rows, cols, { bits: 4 }), x, T, asymMaxq(8, false));
 * ```
 */
export async function waLinearGpu(
  gpu: Gpu,
  w: UniformTensor,
  x: Float32Array,
  T: number,
  maxq: number,
  opts: WaLinearOptions = {},
): Promise<Float32Array> {
  const { rows, cols } = w;
  if (x.length < T * cols) {
    throw new RangeError(
      `waLinearGpu(): x holds ${x.length} values, ${T} tokens × ${cols} need more`,
    );
  }
  const int8 = opts.kernel === "int8";
  const lin = int8 ? uploadInt8Weight(gpu, w) : uploadWeightPlanes(gpu, packWeightPlanes(w));
  const y = new Float32Array(T * rows);
  try {
    for (let t0 = 0; t0 < T; t0 += WA_MAX_BATCH) {
      const n = Math.min(WA_MAX_BATCH, T - t0);
      const codes = quantizeTokens(x, cols, t0, n, maxq);
      const plan = int8
        ? await createInt8Plan(gpu, lin, { batch: n })
        : await createBitplanePlan(gpu, lin, codes.bits, { batch: n });
      try {
        if ("packed" in plan) plan.write(packInt8Acts(codes));
        else plan.write(packActPlanes(codes));
        const enc = gpu.device.createCommandEncoder();
        const pass = enc.beginComputePass();
        plan.encode(pass);
        pass.end();
        gpu.device.queue.submit([enc.finish()]);
        y.set(new Float32Array(await readBuffer(gpu, plan.y, n * rows * 4)), t0 * rows);
      } finally {
        plan.release();
      }
    }
  } finally {
    lin.release();
  }
  return y;
}
