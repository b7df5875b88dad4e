/**
 * Quantize a model block by block straight into a quantized model file, in
 * bounded memory: the path `deno task quantize` takes for the methods that
 * quantize each block from that block alone (quant/blockwise.ts: RTN, and
 * SqueezeLLM given its Fisher information and a fixed outlier range).
 *
 * ```
 * file header (config, method, spec, base)          QModelWriter.create
 * token embedding, final norm, classifier           read, written, dropped one at a time
 * for each block l:
 *   read block l (fp32, decoded from f16/bf16 now)   WeightSource.layer(l)
 *   read block l's Fisher (SqueezeLLM)               FisherSource.layer(l)
 *   quantize its seven linears                       rtnBlock / squeezellmBlock
 *   write its norms and linears, drop them           QModelWriter.tensor / .linear
 * index (provenance, every array's sha256), trailer  QModelWriter.finish
 * ```
 *
 * At any moment the process holds one block in fp32 with its quantized
 * linears, or one of the embedding-sized tensors, never the whole model: a
 * TinyLlama-1.1B checkpoint (4.4 GB in fp32) is quantized in well under
 * 1.6 GB (`deno task bench scale`). The codes are those of the whole-model
 * quantizers of quant/registry.ts, bit for bit (same functions, same order),
 * and the file is what `saveQuantized` writes for the same model except for
 * the order of its arrays.
 *
 * @module
 */
import type { LinearName } from "../model/config.ts";
import type { ProgressCallback } from "../model/pool.ts";
import type { WeightSource } from "../model/weight_source.ts";
import { blockwiseProblem, rtnBlock, squeezellmBlock } from "../quant/blockwise.ts";
import type { QuantizedLinear, SizeReport } from "../quant/format.ts";
import { sizeOf } from "../quant/format.ts";
import { type CalibrationIdentity, type QuantSpec, variantName } from "../quant/methods.ts";
import { QModelWriter } from "../quant/qmodel.ts";
import { sumSizes } from "../quant/size.ts";

/** A block's Fisher information, read when asked for (model/hf.ts `openHfFisher`, or in memory). */
export interface BlockFisher {
  layer(l: number): Record<LinearName, Float32Array>;
}

/** What {@linkcode quantizeToFile} needs. */
export interface QuantizeToFileInput {
  /** The model, read block by block. */
  source: WeightSource;
  /** A resolved spec (quant/spec.ts `resolveSpec`) that {@linkcode blockwiseProblem} accepts. */
  spec: QuantSpec;
  /** SqueezeLLM's Fisher information; required for SqueezeLLM, unused otherwise. */
  fisher?: BlockFisher;
  /** The file to write. */
  out: string;
  /** The checkpoint quantized: path and sha256 (the file's header records them). */
  base: { path: string; sha256: string };
  /** The calibration data the Fisher came from (null: none, or a Fisher file). */
  calibration: CalibrationIdentity | null;
  calibrationText: string | null;
  /** Facts recorded in the file's provenance beside the method's own (e.g. the Fisher file). */
  details?: Record<string, unknown>;
  /** Command, model name, dates: recorded in the file's provenance. */
  provenance?: Record<string, unknown>;
  /** k-means worker threads (SqueezeLLM); 0 = this thread. */
  workers: number;
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
  /** Method facts (SqueezeLLM: sparse count) and the input's details. */
  details: Record<string, unknown>;
}

/**
 * Quantizes `input.source` block by block into `input.out` (see the module
 * doc); the partial file is removed when anything fails.
 *
 * @param input the model source, resolved spec, Fisher, output file and provenance
 * @returns the file's size, the average bits and the time taken
 * @throws {RangeError} when the spec cannot be quantized block by block or SqueezeLLM has no Fisher
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
  const { source, spec, fisher } = input;
  const problem = blockwiseProblem(spec);
  if (problem) throw new RangeError(`quantizeToFile(): ${problem}`);
  if (spec.method === "squeezellm" && !fisher) {
    throw new RangeError(`quantizeToFile(): squeezellm needs the Fisher information`);
  }
  const { config } = source;
  const writer = QModelWriter.create(input.out, {
    config,
    method: spec.method,
    options: { ...spec },
    base: input.base,
  });
  try {
    writer.tensor("tokenEmbedding", source.tokenEmbedding());
    writer.tensor("finalNorm", source.finalNorm());
    const classifier = source.classifier();
    if (classifier) writer.tensor("classifier", classifier);
    const sizes: SizeReport[] = [];
    let nnz = 0;
    for (let l = 0; l < config.nLayers; l++) {
      const lw = source.layer(l);
      let linears: Map<string, QuantizedLinear>;
      if (spec.method === "rtn") linears = rtnBlock(config, lw, l, spec);
      else if (spec.method === "squeezellm") {
        const b = await squeezellmBlock(
          config,
          lw,
          fisher!.layer(l),
          l,
          spec,
          spec.outlierRange,
          input.workers,
        );
        linears = b.linears;
        nnz += b.nnz;
      } else throw new RangeError(`quantizeToFile(): ${spec.method} is not block by block`);
      writer.tensor(`layers.${l}.attnNorm`, lw.attnNorm);
      writer.tensor(`layers.${l}.ffnNorm`, lw.ffnNorm);
      for (const [key, q] of linears) {
        writer.linear(key, q);
        sizes.push(sizeOf(q));
      }
      input.onProgress?.(l + 1, config.nLayers, `block ${l}`);
    }
    const details: Record<string, unknown> = {
      ...(spec.method === "squeezellm" ? { sparseNnz: nnz } : {}),
      ...input.details,
    };
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
  }
}
