/**
 * Calibration statistics on the GPU: GPTQ's Hessians (kernels/hessian.ts's
 * {@linkcode GpuHessian}) behind quant/sequential.ts's
 * `HessianAccumulatorFactory`, so that `gptqQuantizeModelAsync` accumulates
 * H = 2/nsamples · Σ xᵀx of every linear's inputs on the device (quant/
 * must not import kernels/; this adapter lives here); and the whole
 * calibration pass on the GPU ({@linkcode gptqQuantizeModelGpu},
 * {@linkcode gpuActivationStats}): block inputs kept on the device between
 * blocks (kernels/block.ts), only the statistics read back.
 *
 * @module
 */
import type { Gpu } from "../kernels/device.ts";
import { GpuHessian } from "../kernels/hessian.ts";
import { AbsMeanAccumulator, GpuBlock } from "../kernels/block.ts";
import type { LayerWeights, LinearName, LlamaConfig, LlamaWeights } from "../model/config.ts";
import { LINEAR_NAMES, linearKey, linearShape } from "../model/config.ts";
import { checkBits, dequantize, f32Tensor, type QuantizedLinear } from "../quant/format.ts";
import { Gptq } from "../quant/gptq.ts";
import {
  checkWindows,
  embedWindows,
  type GptqModelOptions,
  type GptqModelResult,
  type GptqModelStats,
  type HessianAccumulatorFactory,
  since,
  solveLinear,
  TRUE_SEQUENTIAL_GROUPS,
} from "../quant/sequential.ts";
import type { DeviceHessians } from "./pipeline.ts";

/** A GPU Hessian factory and the release of whatever it still holds. */
export interface GpuHessians extends DeviceHessians {
  device: "gpu";
  factory: HessianAccumulatorFactory;
  /** Accumulators made so far. */
  made: number;
  /** Releases accumulators that were never finished (e.g. after an error). */
  release(): void;
  /**
   * The whole GPTQ pass on this device ({@linkcode gptqQuantizeModelGpu}:
   * block inputs and Hessians on the GPU), for a caller that can replace
   * quant/sequential.ts's `gptqQuantizeModelAsync` (CPU forward) with it.
   */
  gptqModel(
    weights: LlamaWeights,
    windows: Int32Array[],
    opts: GptqModelOptions,
  ): Promise<GptqModelResult>;
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
    gptqModel: (weights, windows, opts) => gptqQuantizeModelGpu(gpu, weights, windows, opts),
  };
  return out;
}

/**
 * The block inputs of every calibration window on the GPU ([windows, T,
 * dim], from the token embeddings) and one {@linkcode GpuBlock} to run them
 * through: the driver of the two passes below.
 */
async function blockPass(gpu: Gpu, weights: LlamaWeights, windows: Int32Array[], fn: string) {
  const c = weights.config;
  const T = checkWindows(fn, windows, c);
  windows.forEach((w, j) => {
    if (w.length !== T) {
      throw new RangeError(
        `${fn}: the GPU pass needs windows of one length; window ${j} has ${w.length} tokens, ` +
          `window 0 ${windows[0].length}`,
      );
    }
  });
  const bytes = windows.length * T * c.dim * 4;
  if (bytes > gpu.device.limits.maxBufferSize) {
    throw new RangeError(
      `${fn}: the block inputs of ${windows.length} windows of ${T} tokens need ${bytes} bytes, ` +
        `above the device's maxBufferSize ${gpu.device.limits.maxBufferSize}: use fewer windows`,
    );
  }
  const inps = gpu.pool.acquire(
    bytes,
    GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    "calibration-inputs",
  );
  embedWindows(weights, windows).forEach((x, j) =>
    gpu.device.queue.writeBuffer(inps, j * T * c.dim * 4, x as Float32Array<ArrayBuffer>)
  );
  const block = await GpuBlock.create(gpu, c, T);
  return {
    T,
    inps,
    block,
    release() {
      block.release();
      gpu.pool.release(inps);
    },
  };
}

/** The fp32 form of linear `name` of a block's weights. */
const f32Linear = (c: LlamaConfig, lw: LayerWeights, name: LinearName) => ({
  dense: f32Tensor(lw[name], ...linearShape(c, name)),
});

/**
 * GPTQ (llama_sequential, quant/sequential.ts) with the whole calibration
 * pass on the GPU: the block inputs of every window stay on the device
 * between blocks; each group of linears (TRUE_SEQUENTIAL_GROUPS, or all
 * seven) is fed by running the block on the device up to the group's stage
 * and accumulating XᵀX there (kernels/hessian.ts); only H travels to the
 * host, where quant/gptq.ts's solver (the reference, as `gptqQuantizeModel`)
 * quantizes the linear; its dequantized weights go back to the device before
 * the next group runs, and the quantized block's outputs become the next
 * block's inputs in place. Differences from the CPU loop: the forward and
 * the Hessian are fp32 on the device (H within 1e-5), so a code may round
 * the other way at a tie; windows must share one length.
 *
 * @param gpu the device
 * @param weights the full-precision model (not modified)
 * @param windows calibration windows, all of one length
 * @param opts as quant/sequential.ts's `gptqQuantizeModel` (`hessians` is ignored)
 * @returns the fake-quantized weights, the packed linears and per-linear errors
 * @example
 * ```ts
 * const r = await gptqQuantizeModelGpu(gpu, weights, windows, { bits: 3, actOrder: true });
 * ```
 */
export async function gptqQuantizeModelGpu(
  gpu: Gpu,
  weights: LlamaWeights,
  windows: Int32Array[],
  opts: GptqModelOptions,
): Promise<GptqModelResult> {
  const t0 = performance.now();
  const c = weights.config;
  checkBits(opts.bits, "gptqQuantizeModelGpu(): bits");
  const pass = await blockPass(gpu, weights, windows, "gptqQuantizeModelGpu()");
  const hessian = await GpuHessian.prepare(gpu);
  const sequential = (opts.trueSequential ?? true) ? TRUE_SEQUENTIAL_GROUPS : [LINEAR_NAMES];
  const linears = new Map<string, QuantizedLinear>();
  const stats: GptqModelStats = {
    seconds: 0,
    windows: windows.length,
    tokens: windows.length * pass.T,
    linears: [],
  };
  const layers: LayerWeights[] = [];
  const live = new Set<GpuHessian>();
  try {
    for (let l = 0; l < c.nLayers; l++) {
      const lw: LayerWeights = { ...weights.layers[l] }; // arrays replaced, never written
      await pass.block.setLayer(lw, (name) => f32Linear(c, lw, name));
      for (const names of sequential) {
        const hs = new Map(names.map((n) => [n, hessian(linearShape(c, n)[1])]));
        for (const h of hs.values()) live.add(h);
        const until = GpuBlock.stageOf(names);
        for (let j = 0; j < windows.length; j++) {
          pass.block.run(pass.inps, j, until);
          for (const [name, h] of hs) h.addBatchGpu(pass.block.input(name), pass.T);
        }
        for (const name of names) {
          const t = performance.now();
          const [rows, cols] = linearShape(c, name);
          const h = hs.get(name)!;
          const H = await h.finish();
          h.release();
          live.delete(h);
          const key = linearKey(l, name);
          const g = Gptq.fromHessian(rows, cols, H, windows.length);
          const r = await solveLinear(g, weights.layers[l][name], key, opts);
          const q: QuantizedLinear = { dense: r.q };
          linears.set(key, q);
          lw[name] = dequantize(q);
          await pass.block.setLinear(name, f32Linear(c, lw, name));
          stats.linears.push({ key, error: r.error, seconds: since(t) });
          opts.log?.(`gptq (gpu): ${key} error ${r.error.toPrecision(4)}`);
          opts.onProgress?.(stats.linears.length, c.nLayers * LINEAR_NAMES.length, `gptq ${key}`);
        }
      }
      // outs = layer(inps) with the quantized block, in place on the device.
      for (let j = 0; j < windows.length; j++) pass.block.run(pass.inps, j, "block", true);
      layers.push(lw);
      opts.log?.(`gptq (gpu): layers.${l} done (${since(t0).toFixed(1)} s)`);
    }
  } finally {
    for (const h of live) h.release();
    pass.release();
  }
  stats.seconds = since(t0);
  return { weights: { ...weights, layers }, linears, stats };
}

/**
 * AWQ's activation statistics on the GPU: the per-channel mean |x| of every
 * linear's input (llm-awq `get_act_scale`), block by block from the token
 * embeddings of `windows`, each block's outputs feeding the next on the
 * device. `weights` is run as given (for AWQ's search, the model whose
 * earlier blocks are already scaled and quantized).
 *
 * @param gpu the device
 * @param weights the model
 * @param windows calibration windows, all of one length
 * @returns mean |x| per channel, keyed "layers.{l}.{name}"
 */
export async function gpuActivationStats(
  gpu: Gpu,
  weights: LlamaWeights,
  windows: Int32Array[],
): Promise<Map<string, Float64Array>> {
  const c = weights.config;
  const pass = await blockPass(gpu, weights, windows, "gpuActivationStats()");
  const out = new Map<string, Float64Array>();
  try {
    for (let l = 0; l < c.nLayers; l++) {
      const lw = weights.layers[l];
      await pass.block.setLayer(lw, (name) => f32Linear(c, lw, name));
      // One accumulator per distinct input: wq/wk/wv share one, w1/w3 another. A run to "qkv"
      // leaves the first in xn; the whole block (written back: the next block's input) leaves
      // the others in att, xn and h1.
      const inputs: LinearName[][] = [["wq", "wk", "wv"], ["wo"], ["w1", "w3"], ["w2"]];
      const acc = await Promise.all(
        inputs.map((names) => AbsMeanAccumulator.create(gpu, linearShape(c, names[0])[1])),
      );
      for (let j = 0; j < windows.length; j++) {
        pass.block.run(pass.inps, j, "qkv");
        acc[0].addGpu(pass.block.input("wq"), pass.T);
        pass.block.run(pass.inps, j, "block", true);
        for (let i = 1; i < inputs.length; i++) {
          acc[i].addGpu(pass.block.input(inputs[i][0]), pass.T);
        }
      }
      for (const [i, names] of inputs.entries()) {
        const mean = await acc[i].finish();
        for (const name of names) out.set(linearKey(l, name), mean);
      }
    }
  } finally {
    pass.release();
  }
  return out;
}
