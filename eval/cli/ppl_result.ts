/**
 * The result row `ppl` returns for one dataset, the same fields whichever
 * evaluator ran (the whole-model CPU or GPU forward, or block by block);
 * each caller adds the fields that only it knows (device, adapter,
 * blockwise).
 *
 * @module
 */
import type { EvalSet } from "../../datasets/eval_sets.ts";
import type { QuantizedModel } from "../../quant/methods.ts";
import type { PerplexityResult } from "../perplexity.ts";

/**
 * One dataset's `ppl` result.
 *
 * @param model the checkpoint: its name and sha256
 * @param variant the variant's name ("fp32" unquantized)
 * @param q the quantized model's facts, or null for fp32
 * @param set the evaluation set
 * @param r its perplexity
 * @returns the row, JSON-able
 */
export function pplResultRow(
  model: { name: string; checkpointSha256: string },
  variant: string,
  q: Pick<QuantizedModel, "spec" | "avgBits" | "calibration" | "seconds"> | null,
  set: EvalSet,
  r: PerplexityResult,
): Record<string, unknown> {
  return {
    model: model.name,
    modelSha256: model.checkpointSha256,
    variant,
    quant: q
      ? { spec: q.spec, avgBits: q.avgBits, calibration: q.calibration, seconds: q.seconds }
      : null,
    dataset: set.name,
    protocol: set.protocol,
    dataFile: set.file,
    ppl: r.ppl,
    windows: r.windows,
    windowsAvailable: r.windowsAvailable,
    limited: r.windows < r.windowsAvailable,
    tokens: r.tokens,
    seqlen: r.seqlen,
    seconds: r.seconds,
    tokensPerSecond: r.tokens / r.seconds,
  };
}
