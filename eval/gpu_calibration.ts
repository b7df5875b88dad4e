/**
 * Calibration statistics on the GPU: GPTQ's Hessians (kernels/hessian.ts's
 * {@linkcode GpuHessian}) behind quant/sequential.ts's
 * `HessianAccumulatorFactory`, so that `gptqQuantizeModelAsync` accumulates
 * H = 2/nsamples · Σ xᵀx of every linear's inputs on the device (quant/
 * must not import kernels/; this adapter lives here).
 *
 * @module
 */
import type { Gpu } from "../kernels/device.ts";
import { GpuHessian } from "../kernels/hessian.ts";
import type { HessianAccumulatorFactory } from "../quant/sequential.ts";
import type { DeviceHessians } from "./pipeline.ts";

/** A GPU Hessian factory and the release of whatever it still holds. */
export interface GpuHessians extends DeviceHessians {
  device: "gpu";
  factory: HessianAccumulatorFactory;
  /** Accumulators made so far. */
  made: number;
  /** Releases accumulators that were never finished (e.g. after an error). */
  release(): void;
}

/**
 * GPTQ's Hessians on `gpu`: each accumulator uploads a window's inputs and
 * adds their Gram matrix on the device; `finish()` reads H back once and
 * releases the accumulator's buffers.
 *
 * @param gpu the device
 * @returns the factory for quant/sequential.ts's `hessians` option
 * @example
 * ```ts
 * const h = await gpuHessians(gpu);
 * const r = await gptqQuantizeModelAsync(weights, windows, { bits: 3, hessians: h.factory });
 * h.release();
 * ```
 */
export async function gpuHessians(gpu: Gpu): Promise<GpuHessians> {
  const make = await GpuHessian.prepare(gpu);
  const live = new Set<GpuHessian>();
  const out: GpuHessians = {
    device: "gpu",
    made: 0,
    factory: (_layer, _name, cols) => {
      const h = make(cols);
      live.add(h);
      out.made++;
      return {
        addBatch: (x, rows) => h.addBatch(x, rows),
        finish: async () => {
          try {
            return await h.finish();
          } finally {
            live.delete(h);
            h.release();
          }
        },
      };
    },
    release() {
      for (const h of live) h.release();
      live.clear();
    },
  };
  return out;
}
