/**
 * The methods that quantize each block from that block alone: RTN (the
 * weights only) and SqueezeLLM (the weights and the block's Fisher
 * information, given a fixed outlier range). Each is one function of a
 * block, used twice: by the whole-model quantizers of quant/registry.ts over
 * every block of a model in memory, and by the block-by-block path
 * (eval/quantize_stream.ts), which reads one block from disk, quantizes it,
 * writes it to the quantized file and drops it, so the model is never in
 * memory whole. Both paths give the same codes, bit for bit.
 *
 * GPTQ, AWQ, SmoothQuant and ABQ-LLM need the activations that the blocks
 * before produce, and SqueezeLLM's `outlierPct` needs the weights of every
 * block to search its range: {@linkcode blockwiseProblem} says so.
 *
 * @module
 */
import {
  type LayerWeights,
  LINEAR_NAMES,
  linearKey,
  type LinearName,
  linearShape,
  type LlamaConfig,
} from "../model/config.ts";
import type { QuantizedLinear } from "./format.ts";
import { rtn } from "./rtn.ts";
import { squeezellmQuantize } from "./squeezellm.ts";
import type { QuantSpec, SpecOf } from "./spec.ts";

/** The seven linears of one block by "layers.{l}.{name}". */
export type BlockLinears = Map<string, QuantizedLinear>;

/**
 * Why `spec` cannot be quantized one block at a time, or null when it can.
 *
 * @param spec a resolved spec
 * @returns the reason, for people
 */
export function blockwiseProblem(spec: QuantSpec): string | null {
  if (spec.method !== "rtn" && spec.method !== "squeezellm") {
    return `${spec.method} calibrates each block on the outputs of the blocks before it`;
  }
  if (spec.method === "squeezellm" && spec.outlierPct !== null) {
    return `squeezellm --outliers searches one outlier range over every block's weights ` +
      `(give --outlier-range R instead)`;
  }
  return null;
}

/**
 * RTN of block `l`'s seven linears (quant/rtn.ts `rtn`).
 *
 * @param config the model
 * @param lw the block's fp32 weights (not modified)
 * @param l the block's index
 * @param spec a resolved RTN spec
 * @returns the quantized linears
 * @example
 * ```ts
 * const q = rtnBlock(w.config, w.layers[0], 0, resolveSpec(defaultSpec("rtn", 4), w.config));
 * q.get("layers.0.wq")!.dense.bits; // 4
 * ```
 */
export function rtnBlock(
  config: LlamaConfig,
  lw: LayerWeights,
  l: number,
  spec: SpecOf<"rtn">,
): BlockLinears {
  const linears: BlockLinears = new Map();
  for (const name of LINEAR_NAMES) {
    const [rows, cols] = linearShape(config, name);
    const dense = rtn(lw[name], rows, cols, {
      bits: spec.bits,
      groupSize: spec.groupSize,
      sym: spec.sym,
      bitBalance: spec.bitBalance,
      name: linearKey(l, name),
    });
    linears.set(linearKey(l, name), { dense });
  }
  return linears;
}

/**
 * SqueezeLLM of block `l`'s seven linears (quant/squeezellm.ts
 * `squeezellmQuantize`): Fisher-weighted k-means, plus the sparse part of
 * sensitive weights and of outliers beyond `outlierRange`.
 *
 * @param config the model
 * @param lw the block's fp32 weights (not modified)
 * @param fisher the block's Fisher information, `[rows, cols]` per linear
 * @param l the block's index
 * @param spec a resolved SqueezeLLM spec
 * @param outlierRange r (T = max(|q1 − r·IQR|, |q3 + r·IQR|)), or null for no outliers
 * @param workers k-means worker threads; 0 = this thread
 * @returns the quantized linears and the count of sparse values
 */
export async function squeezellmBlock(
  config: LlamaConfig,
  lw: LayerWeights,
  fisher: Record<LinearName, Float32Array>,
  l: number,
  spec: SpecOf<"squeezellm">,
  outlierRange: number | null,
  workers: number,
): Promise<{ linears: BlockLinears; nnz: number }> {
  const linears: BlockLinears = new Map();
  let nnz = 0;
  for (const name of LINEAR_NAMES) {
    const [rows, cols] = linearShape(config, name);
    const q = await squeezellmQuantize(lw[name], fisher[name], rows, cols, {
      bits: spec.bits,
      seed: spec.calib.seed,
      sensitivePct: spec.sensitivePct,
      outlierRange: outlierRange ?? undefined,
      maxIter: spec.kmeansIters,
      tol: spec.kmeansTol,
      workers,
    });
    nnz += q.stats.nnz;
    linears.set(linearKey(l, name), q.q);
  }
  return { linears, nnz };
}
