/**
 * Calibration statistics on the GPU: GPTQ's Hessians (kernels/hessian.ts's
 * {@linkcode GpuHessian}) behind quant/sequential.ts's
 * `HessianAccumulatorFactory`, so that `gptqQuantizeModelAsync` accumulates
 * H = 2/nsamples · Σ xᵀx of every linear's inputs on the device (quant/
 * must not import kernels/; this adapter lives here); GPTQ's whole
 * calibration pass on the GPU ({@linkcode GptqSequentialGpu} block by block
 * for the streamed quantize, {@linkcode gptqQuantizeModelGpu} over the whole
 * model: block inputs kept on the device between blocks, kernels/block.ts,
 * only H read back); and AWQ's calibration features
 * ({@linkcode gpuAwqFeatures}, behind quant/awq.ts's `AwqFeatureSource`:
 * the block forward and mean |x| on the device, the residual stream of
 * every window kept there from the embeddings to the last block, the
 * features read back for AWQ's searches on the host).
 *
 * @module
 */
import { type Gpu, OwnedBuffers, readBuffer } from "../kernels/device.ts";
import { GpuHessian } from "../kernels/hessian.ts";
import { AbsMeanAccumulator, GpuBlock, type GpuBlockStage } from "../kernels/block.ts";
import { guardMemory, unlessLost } from "../kernels/prefill.ts";
import type { LayerWeights, LinearName, LlamaConfig, LlamaWeights } from "../model/config.ts";
import { LINEAR_NAMES, linearKey, linearShape } from "../model/config.ts";
import { checkBits, dequantize, f32Tensor, type QuantizedLinear } from "../quant/format.ts";
import {
  checkWindows,
  embedWindows,
  type GptqBlockResult,
  type GptqModelOptions,
  type GptqModelResult,
  type GptqModelStats,
  gptqSolvers,
  type HessianAccumulatorFactory,
  sharedInput,
  since,
  solveLinear,
  TRUE_SEQUENTIAL_GROUPS,
} from "../quant/sequential.ts";
import type { DeviceHessians } from "./pipeline.ts";
import type { DeviceGptqSequential } from "./quantize_stream.ts";
import {
  AWQ_FEATURES,
  type AwqFeatureName,
  type AwqFeatureRequest,
  type AwqFeatureSet,
  type AwqFeatureSource,
  type AwqInputName,
} from "../quant/awq.ts";

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
  /**
   * GPTQ's block-by-block pass on this device ({@linkcode GptqSequentialGpu}),
   * for the streamed quantize (eval/quantize_stream.ts).
   */
  gptqSequential(
    config: LlamaConfig,
    windows: Int32Array[],
    opts: GptqModelOptions,
  ): DeviceGptqSequential;
  /** AWQ's calibration features on this device ({@linkcode gpuAwqFeatures}: the stream kept there). */
  awqFeatures(config: LlamaConfig): GpuAwqFeatureSource;
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
    gptqSequential: (config, windows, opts) => new GptqSequentialGpu(gpu, config, windows, opts),
    awqFeatures: (config) => gpuAwqFeatures(gpu, config),
  };
  return out;
}

/**
 * The length every window of a GPU pass shares (a block runs over T tokens);
 * throws a RangeError naming `fn` for bad windows or mixed lengths.
 */
function oneLength(fn: string, windows: Int32Array[], c: LlamaConfig): number {
  const T = checkWindows(fn, windows, c);
  windows.forEach((w, j) => {
    if (w.length !== T) {
      throw new RangeError(
        `${fn}: the GPU pass needs windows of one length; window ${j} has ${w.length} tokens, ` +
          `window 0 ${windows[0].length}`,
      );
    }
  });
  return T;
}

/** The block inputs of every window on the GPU, and the block that runs them. */
interface BlockPass {
  /** Block l's inputs, one [T, dim] buffer per window (so no buffer exceeds one window). */
  inps: GPUBuffer[];
  block: GpuBlock;
  release(): void;
}

/**
 * Uploads the block inputs (or residual streams) `x` of every window, one
 * [T, dim] buffer each (so no buffer exceeds one window, whatever the device's
 * maxBufferSize), held by `owned`. Out of memory is an error naming `who` and
 * the bytes.
 */
function uploadWindows(
  who: string,
  gpu: Gpu,
  owned: OwnedBuffers,
  x: Float32Array[],
  T: number,
): Promise<GPUBuffer[]> {
  return guardMemory(
    gpu,
    who,
    `the block inputs of ${x.length} windows of ${T} tokens`,
    4 * x.reduce((n, xj) => n + xj.length, 0),
    () => x.map((xj) => owned.upload(xj, GPUBufferUsage.COPY_SRC, "calibration-inputs")),
  );
}

/** One {@linkcode GpuBlock} for windows of T tokens; out of memory names `who`. */
function createBlock(who: string, gpu: Gpu, c: LlamaConfig, T: number): Promise<GpuBlock> {
  return guardMemory(
    gpu,
    who,
    `one block's activations (T = ${T})`,
    0,
    () => GpuBlock.create(gpu, c, T),
  );
}

/**
 * Uploads block 0's inputs `x` ([T, dim] per window, the token embeddings)
 * and makes one {@linkcode GpuBlock} to run them through: the driver of the
 * GPTQ pass. Out of memory is an error naming `who` and the bytes.
 */
async function blockPass(who: string, gpu: Gpu, c: LlamaConfig, x: Float32Array[], T: number) {
  const owned = new OwnedBuffers(gpu.pool);
  try {
    const inps = await uploadWindows(who, gpu, owned, x, T);
    const block = await createBlock(who, gpu, c, T);
    return {
      inps,
      block,
      release() {
        block.release();
        owned.releaseAll();
      },
    };
  } catch (e) {
    owned.releaseAll();
    throw e;
  }
}

/** The fp32 form of linear `name` of a block's weights. */
const f32Linear = (c: LlamaConfig, lw: LayerWeights, name: LinearName) => ({
  dense: f32Tensor(lw[name], ...linearShape(c, name)),
});

/** Makes `lw` (every linear in fp32) the block's layer; out of memory names `who` and the layer. */
function setLayer(who: string, block: GpuBlock, l: number, lw: LayerWeights): Promise<void> {
  const c = block.config;
  const bytes = LINEAR_NAMES.reduce((n, name) => n + 4 * lw[name].length, 0);
  return guardMemory(
    block.gpu,
    who,
    `layers.${l} in fp32`,
    bytes,
    () => block.setLayer(lw, (name) => f32Linear(c, lw, name)),
  );
}

/**
 * GPTQ's llama_sequential (quant/sequential.ts) one block at a time with the
 * calibration pass on the GPU: block l's inputs of every window stay on the
 * device between blocks; each group of linears (TRUE_SEQUENTIAL_GROUPS, or
 * all seven) is fed by running the block on the device up to the group's
 * stage and accumulating XᵀX there (kernels/hessian.ts; one accumulation per
 * distinct input: wq, wk, wv share one, w1, w3 another); only H travels to
 * the host, where the solver `opts.solver` names (quant/sequential.ts
 * `gptqSolvers`, as the CPU loop) quantizes the linear; its dequantized
 * weights go back to the device before the next group runs, and the
 * quantized block's outputs become the next block's inputs in place.
 *
 * The same steps as quant/sequential.ts's {@linkcode GptqSequential}; the
 * difference is where the forward and the Hessians run: fp32 on the device
 * (H within 1e-5 of the CPU's), so a code may round the other way at a tie
 * (on stories260K none does). Windows must share one length.
 *
 * @example
 * ```ts
 * const g = new GptqSequentialGpu(gpu, config, windows, { bits: 3, solver: "fast" });
 * await g.setInputs(embedWindows(weights, windows));
 * for (let l = 0; l < config.nLayers; l++) await g.quantizeBlock(l, source.layer(l));
 * g.release();
 * ```
 */
export class GptqSequentialGpu implements DeviceGptqSequential {
  readonly #T: number;
  readonly #solvers: ReturnType<typeof gptqSolvers>;
  readonly #sequential: readonly (readonly LinearName[])[];
  readonly #stats: GptqModelStats;
  readonly #t0 = performance.now();
  #pass: BlockPass | null = null;
  #hessian: ((cols: number) => GpuHessian) | null = null;
  #next = 0;

  /**
   * @param gpu the device
   * @param config the model
   * @param windows calibration windows, all of one length
   * @param opts as quant/sequential.ts's `gptqQuantizeModelAsync` (`hessians` is ignored)
   * @throws {RangeError} for bad bits, windows or workers
   */
  constructor(
    readonly gpu: Gpu,
    readonly config: LlamaConfig,
    readonly windows: Int32Array[],
    readonly opts: GptqModelOptions,
  ) {
    checkBits(opts.bits, "GptqSequentialGpu: bits");
    this.#T = oneLength("GptqSequentialGpu", windows, config);
    this.#solvers = gptqSolvers(opts, windows.length);
    this.#sequential = (opts.trueSequential ?? true) ? TRUE_SEQUENTIAL_GROUPS : [LINEAR_NAMES];
    this.#stats = {
      seconds: 0,
      windows: windows.length,
      tokens: windows.length * this.#T,
      linears: [],
    };
  }

  /**
   * Uploads block 0's inputs (the token embeddings of every window); the
   * caller may drop its copy.
   * @param x [T, dim] per window
   */
  async setInputs(x: Float32Array[]): Promise<void> {
    const { dim } = this.config;
    if (x.length !== this.windows.length || x.some((xj) => xj.length !== this.#T * dim)) {
      throw new RangeError(
        `GptqSequentialGpu.setInputs(): expected ${this.windows.length} arrays of ` +
          `${this.#T} × ${dim} floats, got ${x.length} (first ${x[0]?.length})`,
      );
    }
    this.#pass?.release();
    this.#pass = null;
    this.#hessian ??= await GpuHessian.prepare(this.gpu);
    this.#pass = await blockPass("GptqSequentialGpu", this.gpu, this.config, x, this.#T);
  }

  /**
   * Quantizes block `l` (blocks in order 0, 1, …) and advances the inputs on
   * the device to block l+1's.
   * @param l the block's index
   * @param W0 the block's full-precision weights (not modified)
   * @returns the block's quantized linears and fake-quantized weights
   */
  async quantizeBlock(l: number, W0: LayerWeights): Promise<GptqBlockResult> {
    const pass = this.#pass;
    if (!pass) throw new Error("GptqSequentialGpu.quantizeBlock(): call setInputs() first");
    if (l !== this.#next) {
      throw new RangeError(`GptqSequentialGpu: block ${l} given, expected block ${this.#next}`);
    }
    const { config: c, opts } = this, { block, inps } = pass;
    const lw: LayerWeights = { ...W0 }; // arrays replaced, never written
    const linears = new Map<string, QuantizedLinear>();
    await setLayer("GptqSequentialGpu", block, l, lw);
    for (const names of this.#sequential) {
      const H = await this.#hessians(l, names);
      for (const name of names) {
        const t = performance.now();
        const [rows, cols] = linearShape(c, name);
        const key = linearKey(l, name);
        const g = this.#solvers(rows, cols, H.get(sharedInput(name))!);
        const r = await solveLinear(g, W0[name], key, opts);
        const q: QuantizedLinear = { dense: r.q };
        linears.set(key, q);
        lw[name] = dequantize(q);
        await block.setLinear(name, f32Linear(c, lw, name));
        this.#stats.linears.push({ key, error: r.error, seconds: since(t) });
        opts.log?.(`gptq (gpu): ${key} error ${r.error.toPrecision(4)}`);
        opts.onProgress?.(
          this.#stats.linears.length,
          c.nLayers * LINEAR_NAMES.length,
          `gptq ${key}`,
        );
      }
    }
    // outs = layer(inps) with the quantized block, in place on the device.
    for (const x of inps) block.run(x, 0, { writeBack: true });
    this.#next++;
    opts.log?.(`gptq (gpu): layers.${l} done (${since(this.#t0).toFixed(1)} s)`);
    return { linears, layer: lw };
  }

  /**
   * H of every distinct input of `names` (by quant/sequential.ts
   * `sharedInput`), from the block as it stands on every window.
   */
  async #hessians(
    l: number,
    names: readonly LinearName[],
  ): Promise<Map<LinearName, Float64Array>> {
    const { block, inps } = this.#pass!, T = this.#T;
    const inputs = [...new Set(names.map(sharedInput))];
    const hs = new Map<LinearName, GpuHessian>();
    try {
      for (const n of inputs) hs.set(n, this.#hessian!(linearShape(this.config, n)[1]));
      const until = GpuBlock.stageOf(names);
      for (const x of inps) {
        block.run(x, 0, { until });
        for (const [n, h] of hs) h.addBatchGpu(block.input(n), T);
      }
      const H = new Map<LinearName, Float64Array>();
      for (const [n, h] of hs) {
        const what = `the Hessian of layers.${l}.${n}'s input`;
        H.set(n, await unlessLost(this.gpu, "GptqSequentialGpu", what, h.finish()));
      }
      return H;
    } finally {
      for (const h of hs.values()) h.release();
    }
  }

  /** Timings and per-linear errors so far (`seconds` since construction). */
  stats(): GptqModelStats {
    return { ...this.#stats, seconds: since(this.#t0) };
  }

  /** Returns every buffer to the pool (the inputs, the block). */
  release(): void {
    this.#pass?.release();
    this.#pass = null;
  }
}

/**
 * GPTQ (llama_sequential, quant/sequential.ts) of the whole model with the
 * calibration pass on the GPU: {@linkcode GptqSequentialGpu} over every
 * block; the same results as `gptqQuantizeModelAsync` up to rounding ties.
 *
 * @param gpu the device
 * @param weights the full-precision model (not modified)
 * @param windows calibration windows, all of one length
 * @param opts as quant/sequential.ts's `gptqQuantizeModelAsync` (`hessians` is ignored)
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
  const g = new GptqSequentialGpu(gpu, weights.config, windows, opts);
  const linears = new Map<string, QuantizedLinear>();
  const layers: LayerWeights[] = [];
  try {
    await g.setInputs(embedWindows(weights, windows));
    for (const [l, lw] of weights.layers.entries()) {
      const b = await g.quantizeBlock(l, lw);
      for (const [key, q] of b.linears) linears.set(key, q);
      layers.push(b.layer);
    }
  } finally {
    g.release();
  }
  return { weights: { ...weights, layers }, linears, stats: g.stats() };
}

/** Every AWQ feature's width: hiddenDim for w2's input, dim for the others. */
const featureWidth = (c: LlamaConfig, name: AwqFeatureName) =>
  name === "w2In" ? c.hiddenDim : c.dim;

/** The features of the FFN half, computed from the stream after the attention. */
const FFN_FEATURES: ReadonlySet<AwqFeatureName> = new Set(["ffnIn", "w2In", "ffnOut"]);

/** The features that are linear inputs (AWQ takes their mean |x| per channel). */
const AWQ_INPUTS: ReadonlySet<AwqFeatureName> = new Set(["attnIn", "woIn", "ffnIn", "w2In"]);

/** Where a residual stream kept on the device stands: before block `layer`, or after its attention. */
interface StreamAt {
  layer: number;
  from: AwqFeatureRequest["from"];
}

/** AWQ's calibration features on the GPU ({@linkcode gpuAwqFeatures}). */
export interface GpuAwqFeatureSource extends AwqFeatureSource, Disposable {
  /**
   * Uploads block 0's inputs (the token embeddings, [T, dim] per window, all
   * of one length), once: from here on the source owns the residual stream
   * (quant/awq.ts `ownsStream`) and advances it on the device.
   */
  setInputs(x: Float32Array[]): Promise<void>;
}

/**
 * AWQ's calibration features computed on the GPU: an
 * {@linkcode AwqFeatureSource} (quant/awq.ts's seam, `AwqOptions.features`)
 * that runs the full-precision block on the device (kernels/block.ts, every
 * linear in fp32) and copies out the activations asked for as the run passes
 * them — the inputs of the scaled groups and the sub-blocks' outputs, the
 * whole block or its FFN half from the stream after the attention — with
 * the mean |x| per channel of each input summed on the device
 * ({@linkcode AbsMeanAccumulator}); only the features and the means travel
 * back. A block's weights are uploaded once for all the requests of that
 * block.
 *
 * The source owns the residual stream ({@linkcode GpuAwqFeatureSource.setInputs}):
 * AWQ hands it the token embeddings once, uploaded one buffer per window, and
 * keeps no host copy; every request runs from the streams on the device, and
 * a request's `residual` (the sub-block outputs run_awq's `inps =
 * layer(inps)` adds) is added there by the block's own residual additions,
 * the stream written back over the window's buffer (GpuBlock.run
 * `writeBack`): the stream after the attention, or the next block's input.
 * So no window's stream is uploaded again between blocks. These are the f32
 * additions AWQ makes on the host (x + out, correctly rounded on both), so
 * the streams, features and codes are those of a source handed the host's
 * stream. A request that does carry the stream `x` (a caller that keeps it)
 * has it uploaded one window at a time.
 *
 * Differences from quant/awq.ts's `cpuFeatureSource`: fp32 on the device in
 * another summation order (the GPU prefill's, within 1e-6 or so), and mean
 * |x| summed in fp32 per window; so AWQ's scales and clips follow the CPU's
 * within rounding (a ratio or a code may differ where two candidates tie).
 * Windows must share one length.
 *
 * @param gpu the device
 * @param config the model
 * @returns the source; dispose it to return its buffers to the pool
 * @example
 * ```ts
 * using features = gpuAwqFeatures(gpu, weights.config);
 * const r = await awqQuantizeModelParallel(weights, windows, { bits: 3, features });
 * ```
 */
export function gpuAwqFeatures(gpu: Gpu, config: LlamaConfig): GpuAwqFeatureSource {
  const c = config, WHO = "gpuAwqFeatures()";
  /** Sized for windows of T tokens: the block, one tap per feature, one window's upload. */
  let sized: {
    T: number;
    block: GpuBlock;
    taps: Record<AwqFeatureName, GPUBuffer>;
    upload: GPUBuffer;
    owned: OwnedBuffers;
  } | null = null;
  /** The layer whose weights the block holds. */
  let current: { layer: number; lw: LayerWeights } | null = null;
  /** The residual stream of every window (setInputs), and where it stands. */
  let stream: { T: number; windows: GPUBuffer[]; at: StreamAt; owned: OwnedBuffers } | null = null;

  const releaseSized = () => {
    sized?.block.release();
    sized?.owned.releaseAll();
    sized = current = null;
  };
  const releaseStream = () => {
    stream?.owned.releaseAll();
    stream = null;
  };
  /** The block, taps and upload buffer for windows of T tokens. */
  const sizeFor = async (T: number) => {
    if (sized?.T === T) return sized;
    releaseSized();
    const owned = new OwnedBuffers(gpu.pool);
    try {
      const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
      const widths = AWQ_FEATURES.reduce((n, name) => n + featureWidth(c, name), 0);
      const [taps, upload] = await guardMemory(
        gpu,
        WHO,
        `the feature taps of one window (T = ${T})`,
        4 * T * (widths + c.dim),
        () =>
          [
            Object.fromEntries(AWQ_FEATURES.map((n) => [
              n,
              owned.acquire(4 * T * featureWidth(c, n), usage, `awq-${n}`),
            ])) as Record<AwqFeatureName, GPUBuffer>,
            owned.acquire(4 * T * c.dim, usage, "awq-stream"),
          ] as const,
      );
      const block = await createBlock(WHO, gpu, c, T);
      return sized = { T, block, taps, upload, owned };
    } catch (e) {
      owned.releaseAll();
      throw e;
    }
  };
  /** The block of `layer` (weights `lw`) for windows of T tokens. */
  const blockFor = async (T: number, layer: number, lw: LayerWeights) => {
    const s = await sizeFor(T);
    if (current?.layer !== layer || current.lw !== lw) {
      await setLayer(WHO, s.block, layer, lw);
      current = { layer, lw };
    }
    return s;
  };

  return {
    async setInputs(x) {
      const T = windowLength(c, x);
      releaseStream();
      await sizeFor(T);
      const owned = new OwnedBuffers(gpu.pool);
      try {
        const windows = await uploadWindows(WHO, gpu, owned, x, T);
        stream = { T, windows, at: { layer: 0, from: "input" }, owned };
      } catch (e) {
        owned.releaseAll();
        throw e;
      }
    },

    async features({ layer, lw, x, from, want, residual = [], alloc }): Promise<AwqFeatureSet> {
      if (from === "attention" && want.some((n) => !FFN_FEATURES.has(n))) {
        throw new RangeError(
          `gpuAwqFeatures(): from the stream after the attention only ffnIn, w2In and ffnOut ` +
            `can be computed; asked for ${want.join(", ")}`,
        );
      }
      // Where each window's stream is: its buffer on the device, or x uploaded window by window.
      let T: number, windows: number, until: GpuBlockStage, advance = false;
      if (x) {
        T = windowLength(c, x);
        windows = x.length;
        until = GpuBlock.stageReaching(want);
      } else {
        if (!stream) {
          throw new Error(
            `${WHO}: layers.${layer}'s features asked without a stream: give the source block ` +
              `0's inputs first (setInputs)`,
          );
        }
        const at = stream.at;
        if (at.layer !== layer || at.from !== from) {
          throw new RangeError(
            `${WHO}: layers.${layer}'s features asked from the ${from}, but the stream stands at ` +
              `layers.${at.layer}'s ${at.from}`,
          );
        }
        ({ T } = stream);
        windows = stream.windows.length;
        until = GpuBlock.stageReaching([...want, ...residual]);
        const adds = GpuBlock.residualsAdded(from, until);
        advance = residual.length > 0;
        if (advance && adds.join() !== residual.join()) {
          throw new RangeError(
            `${WHO}: cannot add ${residual.join(" and ")} to the stream alone: the run for ` +
              `${want.join(", ")} from the ${from} adds ${adds.join(" and ")}`,
          );
        }
      }
      const { block, taps, upload } = await blockFor(T, layer, lw);
      const N = T * windows;
      const features: Partial<Record<AwqFeatureName, Float32Array>> = {};
      for (const name of want) features[name] = alloc(N * featureWidth(c, name));
      const inputs = want.filter((n) => AWQ_INPUTS.has(n));
      const acc = await Promise.all(
        inputs.map((n) => AbsMeanAccumulator.create(gpu, featureWidth(c, n))),
      );
      try {
        for (let j = 0; j < windows; j++) {
          let xj = stream?.windows[j];
          if (x) {
            gpu.device.queue.writeBuffer(upload, 0, x[j] as Float32Array<ArrayBuffer>);
            xj = upload;
          }
          block.run(xj!, 0, {
            from,
            until,
            taps: Object.fromEntries(want.map((n) => [n, taps[n]])),
            writeBack: advance,
          });
          inputs.forEach((n, i) => acc[i].addGpu(taps[n], T));
          const what = `layers.${layer}'s features of window ${j}`;
          await unlessLost(
            gpu,
            WHO,
            what,
            Promise.all(want.map(async (n) => {
              const w = featureWidth(c, n);
              const got = new Float32Array(await readBuffer(gpu, taps[n], 4 * T * w));
              features[n]!.set(got, j * T * w);
            })),
          );
        }
        if (advance) {
          stream!.at = residual.includes("ffnOut")
            ? { layer: layer + 1, from: "input" }
            : { layer, from: "attention" };
        }
        const xMax: Partial<Record<AwqInputName, Float32Array>> = {};
        for (const [i, n] of inputs.entries()) {
          xMax[n as AwqInputName] = Float32Array.from(await acc[i].finish());
        }
        return { features, xMax };
      } catch (e) {
        for (const a of acc) a.release();
        throw e;
      }
    },

    [Symbol.dispose]() {
      releaseStream();
      releaseSized();
    },
  };
}

/** The one length (tokens) of streams x [T, dim] per window; a RangeError names mixed ones. */
function windowLength(c: LlamaConfig, x: Float32Array[]): number {
  const lengths = x.map((xj) => xj.length / c.dim);
  if (lengths.length === 0 || lengths.some((n) => n !== lengths[0])) {
    throw new RangeError(
      `gpuAwqFeatures(): the GPU pass needs windows of one length; got ${
        lengths.length === 0 ? "none" : [...new Set(lengths)].join(", ")
      } tokens`,
    );
  }
  return lengths[0];
}
