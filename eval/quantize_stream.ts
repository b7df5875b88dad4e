/**
 * Quantize a model block by block straight into a quantized model file, in
 * bounded memory: the path `deno task quantize` takes for every method that
 * can be cut into blocks ({@linkcode streamProblem}). Each method is a
 * {@linkcode BlockQuantizer}, of one of two kinds:
 *
 * - a block from that block alone (quant/blockwise.ts): RTN, and SqueezeLLM
 *   given its Fisher information and a fixed outlier range;
 * - sequential: block l is calibrated on the activations the blocks before it
 *   produce (GPTQ's llama_sequential, quant/sequential.ts; AWQ's run_awq).
 *   The driver embeds the calibration windows once and carries them from
 *   block to block; the method advances them past its block.
 *
 * ```
 * file header (config, method, spec, base)          QModelWriter.create
 * token embedding, final norm, classifier           read, written, dropped one at a time
 * sequential: x = embed(windows)                    [windows][T_j, dim], kept throughout
 * for each block l:
 *   read block l (fp32, decoded from f16/bf16 now)   WeightSource.layer(l)
 *   quantize its seven linears (x: l's inputs →     BlockQuantizer.quantizeBlock
 *     l+1's inputs)
 *   write its norms and linears, drop them           QModelWriter.tensor / .linear
 * index (provenance, every array's sha256), trailer  QModelWriter.finish
 * ```
 *
 * At any moment the process holds one block in fp32 with its quantized
 * linears, or one of the embedding-sized tensors, plus (sequential methods)
 * the calibration activations, windows × T × dim fp32 — never the whole
 * model: a TinyLlama-1.1B checkpoint (4.4 GB in fp32) is quantized with RTN
 * in well under 1.6 GB, with GPTQ (4 windows of 512) in 2.0 GB: a block's
 * fp32 weights and their fake-quantized copy are 0.35 GB, the solver's
 * Hessian of the widest linear (w2, 5632 columns) alone 0.25 GB in float64
 * (`deno task bench scale`). The codes are those of the whole-model
 * quantizers of quant/registry.ts, bit for bit (same functions,
 * same order), and the file is what `saveQuantized` writes for the same
 * model except for the order of its arrays.
 *
 * @module
 */
import type { LayerWeights, LinearName, LlamaConfig, LlamaWeights } from "../model/config.ts";
import type { ProgressCallback } from "../model/pool.ts";
import type { WeightSource } from "../model/weight_source.ts";
import {
  type BlockLinears,
  blockwiseProblem,
  rtnBlock,
  squeezellmBlock,
} from "../quant/blockwise.ts";
import type { SizeReport } from "../quant/format.ts";
import { sizeOf } from "../quant/format.ts";
import {
  type CalibrationIdentity,
  type QuantizeContext,
  type QuantSpec,
  type SpecOf,
  variantName,
} from "../quant/methods.ts";
import { QModelWriter } from "../quant/qmodel.ts";
import { AwqSequential, awqSpecOptions } from "../quant/awq.ts";
import {
  embedWindows,
  type GptqBlockResult,
  type GptqModelOptions,
  type GptqModelStats,
  GptqSequential,
  gptqSpecOptions,
  type HessianAccumulatorFactory,
} from "../quant/sequential.ts";
import { sumSizes } from "../quant/size.ts";

/** One quantized block, as {@linkcode quantizeToFile} writes it. */
export interface QuantizedBlock {
  /** The block's seven linears by "layers.{l}.{name}". */
  linears: BlockLinears;
  /** RMSNorm weights as stored: the checkpoint's, or the method's (AWQ scales them). */
  attnNorm: Float32Array; // [dim]
  ffnNorm: Float32Array; // [dim]
}

/**
 * A quantization method as {@linkcode quantizeToFile} drives it: one block
 * at a time, blocks in order 0, 1, …, each handed in once and dropped after.
 *
 * A method whose block l depends on the blocks before it (GPTQ, AWQ) sets
 * `windows`: the driver embeds them once (GPTQ's `inps`: one `[T_j, dim]`
 * fp32 array per window, held for the whole run) and passes block l's inputs
 * as `x`; `quantizeBlock` must leave in `x` block l+1's inputs as the method
 * defines them (GPTQ: the quantized block's outputs; AWQ's run_awq: the
 * full-precision block's). A method without `windows` gets `x = null`.
 *
 * @example A sequential method (see {@linkcode gptqBlockQuantizer})
 * ```ts
 * const m: BlockQuantizer = {
 *   windows,
 *   async quantizeBlock(l, lw, x) {
 *     const linears = await calibrateAndQuantize(l, lw, x!); // x: block l's inputs
 *     for (const xj of x!) runBlock(l, lw, xj);              // x: block l+1's inputs
 *     return { linears, attnNorm: lw.attnNorm, ffnNorm: lw.ffnNorm };
 *   },
 *   details: () => ({}),
 * };
 * ```
 */
export interface BlockQuantizer {
  /** Calibration windows (token ids, ≤ max_seq_len each) of a sequential method; absent otherwise. */
  readonly windows?: Int32Array[];
  /**
   * A sequential method that keeps the block inputs itself (on a device:
   * {@linkcode DeviceGptqSequential}, AWQ with a device's features) takes
   * block 0's inputs here, once; the driver then drops its copy and passes
   * `x = null`.
   */
  setInputs?(x: Float32Array[]): Promise<void>;
  /**
   * Quantizes block `l`.
   *
   * @param l the block's index
   * @param lw the block's fp32 weights, read for this call (the method may keep or change them)
   * @param x sequential methods: block l's inputs per window, to be advanced to block l+1's; else null
   * @returns the block's quantized linears and norms
   */
  quantizeBlock(l: number, lw: LayerWeights, x: Float32Array[] | null): Promise<QuantizedBlock>;
  /** Method facts for the file's provenance (`details`), asked once after the last block. */
  details(): Record<string, unknown>;
  /** Releases what the method holds (device buffers), after the last block or a failure. */
  release?(): void;
}

/**
 * GPTQ's llama_sequential one block at a time with the block inputs kept on
 * a device between blocks (eval/gpu_calibration.ts `GptqSequentialGpu`):
 * quant/sequential.ts's {@linkcode GptqSequential} whose forward and
 * Hessians run elsewhere.
 */
export interface DeviceGptqSequential {
  /** Takes block 0's inputs ([T, dim] per window, the token embeddings); the caller may drop them. */
  setInputs(x: Float32Array[]): Promise<void>;
  /** Block `l` (in order 0, 1, …), its inputs advanced to block l+1's on the device. */
  quantizeBlock(l: number, lw: LayerWeights): Promise<GptqBlockResult>;
  /** Timings and per-linear errors so far. */
  stats(): GptqModelStats;
  /** Returns the device buffers. */
  release(): void;
}

/** Makes a {@linkcode DeviceGptqSequential} (GPTQ's options as quant/sequential.ts's). */
export type DeviceGptqFactory = (
  config: LlamaConfig,
  windows: Int32Array[],
  opts: GptqModelOptions,
) => DeviceGptqSequential;

/** A block's Fisher information, read when asked for (model/hf.ts `openHfFisher`, or in memory). */
export interface BlockFisher {
  layer(l: number): Record<LinearName, Float32Array>;
}

/** What the block quantizers of {@linkcode blockQuantizer} may need besides the spec. */
export interface BlockQuantizerInputs {
  /** SqueezeLLM's Fisher information; required for SqueezeLLM. */
  fisher?: BlockFisher;
  /** Calibration windows; required for GPTQ and AWQ. */
  windows?: Int32Array[];
  /** GPTQ's Hessian accumulators (eval/gpu_calibration.ts `gpuHessians`). @default the CPU's */
  hessians?: HessianAccumulatorFactory;
  /**
   * GPTQ's whole block pass on a device (eval/gpu_calibration.ts
   * `gpuHessians(gpu).gptqSequential`: forward and Hessians there, block
   * inputs kept there); `hessians` is then unused. @default the CPU forward
   */
  gptqSequential?: DeviceGptqFactory;
  /**
   * AWQ's calibration features from a device (eval/gpu_calibration.ts
   * `gpuAwqFeatures`, which keeps the block inputs there). @default the CPU forward
   */
  awqFeatures?: QuantizeContext["awqFeatures"];
  /** Worker threads (SqueezeLLM's k-means, GPTQ's solver); 0 = this thread. */
  workers: number;
  /** One-line messages. */
  log?: (line: string) => void;
}

/**
 * Whether `spec`'s method is sequential: its block l is calibrated on the
 * activations the blocks before it produce, from calibration windows the
 * caller draws and hands to {@linkcode quantizeToFile} (GPTQ, AWQ).
 *
 * @param spec a spec
 * @returns true for GPTQ and AWQ
 */
export function isSequential(spec: QuantSpec): boolean {
  return spec.method === "gptq" || spec.method === "awq";
}

/**
 * Why `spec` cannot be quantized block by block into a file, or null when
 * it can (RTN; SqueezeLLM with a fixed outlier range; GPTQ; AWQ).
 *
 * @param spec a resolved spec
 * @returns the reason, for people
 */
export function streamProblem(spec: QuantSpec): string | null {
  return isSequential(spec) ? null : blockwiseProblem(spec);
}

/**
 * The {@linkcode BlockQuantizer} of a resolved spec.
 *
 * @param config the model
 * @param spec a resolved spec that {@linkcode streamProblem} accepts
 * @param inputs the Fisher (SqueezeLLM), the windows (GPTQ, AWQ), workers
 * @returns the method, ready for block 0
 * @throws {RangeError} when the spec cannot be streamed or its calibration is missing
 */
export function blockQuantizer(
  config: LlamaConfig,
  spec: QuantSpec,
  inputs: BlockQuantizerInputs,
): BlockQuantizer {
  const problem = streamProblem(spec);
  if (problem) throw new RangeError(`quantizeToFile(): ${problem}`);
  switch (spec.method) {
    case "rtn":
      return {
        quantizeBlock: (l, lw) =>
          Promise.resolve({ linears: rtnBlock(config, lw, l, spec), ...normsOf(lw) }),
        details: () => ({}),
      };
    case "squeezellm":
      return squeezellmBlockQuantizer(config, spec, inputs);
    case "gptq":
      return gptqBlockQuantizer(config, spec, inputs);
    case "awq":
      return awqBlockQuantizer(config, spec, inputs);
    default:
      throw new RangeError(`quantizeToFile(): ${spec.method} is not block by block`);
  }
}

/** A block's norms as the checkpoint has them. */
function normsOf(lw: LayerWeights): Pick<QuantizedBlock, "attnNorm" | "ffnNorm"> {
  return { attnNorm: lw.attnNorm, ffnNorm: lw.ffnNorm };
}

/** SqueezeLLM: each block from its weights and Fisher (quant/blockwise.ts `squeezellmBlock`). */
function squeezellmBlockQuantizer(
  config: LlamaConfig,
  spec: SpecOf<"squeezellm">,
  { fisher, workers }: BlockQuantizerInputs,
): BlockQuantizer {
  if (!fisher) throw new RangeError(`quantizeToFile(): squeezellm needs the Fisher information`);
  let nnz = 0;
  return {
    async quantizeBlock(l, lw) {
      const b = await squeezellmBlock(
        config,
        lw,
        fisher.layer(l),
        l,
        spec,
        spec.outlierRange,
        workers,
      );
      nnz += b.nnz;
      return { linears: b.linears, ...normsOf(lw) };
    },
    details: () => ({ sparseNnz: nnz }),
  };
}

/**
 * GPTQ: llama_sequential one block at a time (quant/sequential.ts
 * {@linkcode GptqSequential}, with the arguments and the fast solver of
 * quant/registry.ts's GPTQ), so the codes are the whole-model GPTQ's.
 *
 * @param config the model
 * @param spec a resolved GPTQ spec
 * @param inputs the calibration windows (required), Hessian accumulators, workers, log
 * @returns the method; its details are the whole-model GPTQ's (`stats`)
 */
export function gptqBlockQuantizer(
  config: LlamaConfig,
  spec: SpecOf<"gptq">,
  { windows, hessians, gptqSequential, workers, log }: BlockQuantizerInputs,
): BlockQuantizer {
  if (!windows) throw new RangeError(`quantizeToFile(): gptq needs calibration windows`);
  if (gptqSequential) {
    const d = gptqSequential(config, windows, gptqSpecOptions(spec, { workers, log }));
    return {
      windows,
      setInputs: (x) => d.setInputs(x),
      async quantizeBlock(l, lw) {
        const b = await d.quantizeBlock(l, lw);
        return { linears: b.linears, ...normsOf(lw) };
      },
      details: () => ({ stats: d.stats() }),
      release: () => d.release(),
    };
  }
  const g = new GptqSequential(
    config,
    windows,
    gptqSpecOptions(spec, { workers, hessians, log }),
  );
  return {
    windows,
    async quantizeBlock(l, lw, x) {
      const b = await g.quantizeBlock(l, lw, x!);
      return { linears: b.linears, ...normsOf(lw) };
    },
    details: () => ({ stats: g.stats() }),
  };
}

/**
 * AWQ: run_awq one block at a time (quant/awq.ts {@linkcode AwqSequential},
 * with the settings of quant/registry.ts's AWQ), so the codes and the scaled
 * norms are the whole-model AWQ's; block l+1's inputs are the
 * full-precision block l's outputs, as run_awq's: advanced on the host, or
 * kept on the device by a feature source that owns the stream
 * (`awqFeatures`, eval/gpu_calibration.ts `gpuAwqFeatures`: the driver hands
 * it block 0's inputs once, `setInputs`).
 *
 * @param config the model
 * @param spec a resolved AWQ spec
 * @param inputs the calibration windows (required), the feature source, workers, log
 * @returns the method; its details are the whole-model AWQ's (`stats`)
 */
export function awqBlockQuantizer(
  config: LlamaConfig,
  spec: SpecOf<"awq">,
  { windows, awqFeatures, workers, log }: BlockQuantizerInputs,
): BlockQuantizer {
  if (!windows) throw new RangeError(`quantizeToFile(): awq needs calibration windows`);
  const features = awqFeatures?.(config);
  const awq = new AwqSequential(config, windows, {
    ...awqSpecOptions(spec, { workers, log }),
    features,
  });
  return {
    windows,
    // A feature source that owns the residual stream (a device) takes block 0's inputs once;
    // the driver then holds no copy.
    ...(awq.run.ownsStream ? { setInputs: (x: Float32Array[]) => awq.setInputs(x) } : {}),
    async quantizeBlock(l, lw, x) {
      const b = await awq.quantizeBlock(l, lw, x);
      return { linears: b.linears, attnNorm: b.weights.attnNorm, ffnNorm: b.weights.ffnNorm };
    },
    details: () => ({ stats: awq.stats() }),
    release: () => features?.[Symbol.dispose](),
  };
}

/** What {@linkcode quantizeToFile} needs. */
export interface QuantizeToFileInput extends BlockQuantizerInputs {
  /** The model, read block by block. */
  source: WeightSource;
  /** A resolved spec (quant/spec.ts `resolveSpec`) that {@linkcode streamProblem} accepts. */
  spec: QuantSpec;
  /** The file to write. */
  out: string;
  /** The checkpoint quantized: path and sha256 (the file's header records them). */
  base: { path: string; sha256: string };
  /** The calibration data the windows or the Fisher came from (null: none, or a Fisher file). */
  calibration: CalibrationIdentity | null;
  calibrationText: string | null;
  /** Facts recorded in the file's provenance beside the method's own (e.g. the Fisher file). */
  details?: Record<string, unknown>;
  /** Command, model name, dates: recorded in the file's provenance. */
  provenance?: Record<string, unknown>;
  /** Blocks done: (done, nLayers, "block l"). */
  onProgress?: ProgressCallback;
}

/** What {@linkcode quantizeToFile} wrote. */
export interface QuantizeToFileResult {
  variantName: string;
  /** The file's size in bytes. */
  bytes: number;
  /** Average information bits per weight of the linears (quant/size.ts). */
  avgBits: number;
  /** Size of the linears, summed over the model. */
  size: SizeReport;
  /** Quantization time, reads and writes included. */
  seconds: number;
  /** Method facts (SqueezeLLM: sparse count; GPTQ: stats) and the input's details. */
  details: Record<string, unknown>;
}

/**
 * Quantizes `input.source` block by block into `input.out` (see the module
 * doc); the partial file is removed when anything fails.
 *
 * @param input the model source, resolved spec, calibration, output file and provenance
 * @returns the file's size, the average bits and the time taken
 * @throws {RangeError} when the spec cannot be quantized block by block or its calibration is missing
 * @throws {ModelFormatError} for a malformed checkpoint or Fisher tensor
 * @throws {QModelError} when the file cannot be written
 * @example
 * ```ts
 * using src = await openHfWeights("/models/TinyLlama-1.1B");
 * const spec = resolveSpec(defaultSpec("rtn", 4), src.config);
 * await quantizeToFile({ source: src, spec, out: "tiny.rtn.w4.sqbq",
 *   base: { path: src.path, sha256 }, calibration: null, calibrationText: null, workers: 0 });
 * ```
 */
export async function quantizeToFile(input: QuantizeToFileInput): Promise<QuantizeToFileResult> {
  const t0 = performance.now();
  const { source, spec } = input;
  const { config } = source;
  const method = blockQuantizer(config, spec, input);
  const writer = QModelWriter.create(input.out, {
    config,
    method: spec.method,
    options: { ...spec },
    base: input.base,
  });
  try {
    let tokenEmbedding: Float32Array | undefined = source.tokenEmbedding();
    writer.tensor("tokenEmbedding", tokenEmbedding);
    // GPTQ's inps: block 0's inputs, carried from block to block by the method (on the host, in
    // shared memory, which GPTQ's passes on workers update in place; or where the method keeps them)
    let x = method.windows
      ? embedWindows({ config, tokenEmbedding } as LlamaWeights, method.windows, !method.setInputs)
      : null;
    tokenEmbedding = undefined; // dropped before the classifier is read
    if (x && method.setInputs) {
      await method.setInputs(x);
      x = null;
    }
    writer.tensor("finalNorm", source.finalNorm());
    const classifier = source.classifier();
    if (classifier) writer.tensor("classifier", classifier);
    const sizes: SizeReport[] = [];
    for (let l = 0; l < config.nLayers; l++) {
      const b = await method.quantizeBlock(l, source.layer(l), x);
      writer.tensor(`layers.${l}.attnNorm`, b.attnNorm);
      writer.tensor(`layers.${l}.ffnNorm`, b.ffnNorm);
      for (const [key, q] of b.linears) {
        writer.linear(key, q);
        sizes.push(sizeOf(q));
      }
      input.onProgress?.(l + 1, config.nLayers, `block ${l}`);
    }
    const details: Record<string, unknown> = { ...method.details(), ...input.details };
    const seconds = (performance.now() - t0) / 1000;
    const bytes = writer.finish({
      ...input.provenance,
      calibration: input.calibration,
      calibrationText: input.calibrationText,
      seconds,
      details,
      blockwise: true,
    });
    const size = sumSizes(sizes);
    return {
      variantName: variantName(spec),
      bytes,
      avgBits: size.avgInfoBits,
      size,
      seconds,
      details,
    };
  } catch (e) {
    writer.abort();
    await Deno.remove(input.out); // the partial file (no end marker) must not stay behind
    throw e;
  } finally {
    method.release?.();
  }
}
