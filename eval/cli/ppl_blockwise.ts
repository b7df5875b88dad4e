/**
 * `deno task ppl --blockwise`: perplexity of a checkpoint (fp32) or of a
 * `--quantized FILE` with one block in fp32 at a time
 * (eval/perplexity_blockwise.ts), for models whose fp32 weights do not fit
 * in memory. A quantized file is opened, not loaded (quant/qmodel.ts
 * `openQuantizedModel`): each block's packed arrays are read, verified and
 * dequantized when the block is evaluated. The numbers are bit-identical to `ppl` without it; the figures
 * are printed and returned the same way. Quantizing is done beforehand,
 * block by block too, by `deno task quantize`.
 *
 * @module
 */
import { EVAL_SETS, type EvalSetName, loadEvalSet } from "../../datasets/eval_sets.ts";
import { quantizedMetaInfo } from "../../quant/methods.ts";
import { openQuantizedModel, type QuantizedModelReader } from "../../quant/qmodel.ts";
import { sizeOfLayout } from "../../quant/format.ts";
import { sumSizes } from "../../quant/size.ts";
import type { WeightSource } from "../../model/weight_source.ts";
import { protocolSeqlen } from "../../model/config.ts";
import { perplexityBlockwise } from "../perplexity_blockwise.ts";
import { evalSetNeed, openModelFromOptions } from "./load.ts";
import { CliError, int, str } from "./options.ts";
import { workersOf } from "./quant_options.ts";
import { Progress } from "./progress.ts";
import { pplResultRow } from "./ppl_result.ts";

/** The `--blockwise` and `--chunk` options of ppl. */
export const BLOCKWISE_OPTIONS = {
  blockwise: { type: "boolean" },
  chunk: { type: "string" },
} as const;

/** Help of {@linkcode BLOCKWISE_OPTIONS}. */
export const BLOCKWISE_HELP =
  `  --blockwise          hold one block in fp32 at a time (a checkpoint larger than memory in fp32,
                       or a --quantized FILE): the same numbers, windows in chunks; not with
                       --method (quantize first), --store or --device gpu
  --chunk N            --blockwise: windows evaluated together, each block read once per chunk
                       (default 8)`;

/**
 * Runs `ppl --blockwise` on the options' model or `--quantized FILE`.
 *
 * @param values parsed options
 * @param datasets the evaluation sets
 * @param seqlenGiven --seqlen, or undefined for the model's max_seq_len
 * @param limit --limit
 * @returns one result per dataset (one object when there is one)
 * @throws {CliError} for options it cannot take
 */
export async function pplBlockwise(
  values: Record<string, unknown>,
  datasets: readonly EvalSetName[],
  seqlenGiven: number | undefined,
  limit: number | undefined,
): Promise<object> {
  for (const flag of ["method", "store", "fisher"]) {
    if (values[flag] !== undefined) {
      throw new CliError(
        `--blockwise does not take --${flag}` +
          (flag === "method"
            ? `: quantize block by block first ("deno task quantize --out FILE"), then ` +
              `ppl --blockwise --quantized FILE`
            : ""),
      );
    }
  }
  if (str(values, "device", "cpu") !== "cpu") throw new CliError(`--blockwise runs on the cpu`);
  const chunk = int(values, "chunk", 8, 1)!;
  const file = str(values, "quantized");
  const model = await openModelFromOptions(values, datasets.map(evalSetNeed));
  using checkpoint = model.source;
  // a --quantized file is opened, not read: each block's arrays are read when it is evaluated
  using f: QuantizedModelReader | null = file ? openQuantizedModel(file) : null;
  const q = f
    ? quantizedMetaInfo(
      f,
      sumSizes([...f.layouts.values()].map((l) => sizeOfLayout(l))).avgInfoBits,
      file!,
    )
    : null;
  const src: WeightSource = f ?? checkpoint;
  const seqlen = seqlenGiven ?? protocolSeqlen(src.config);
  const variant = q ? q.variantName : "fp32";
  const results: Record<string, unknown>[] = [];
  for (const dataset of datasets) {
    if (!EVAL_SETS.includes(dataset)) throw new CliError(`unknown dataset ${dataset}`);
    const set = await loadEvalSet(dataset, {
      dataDir: model.dataDir,
      tokenizer: model.tokenizer!,
      seqlen,
      offline: model.offline,
    });
    const total = Math.min(Math.floor(set.tokens.length / seqlen), limit ?? Infinity);
    const bar = new Progress(`ppl ${dataset} (blockwise)`, total, "windows", seqlen, "tok");
    const r = await perplexityBlockwise(src, set.tokens, {
      seqlen,
      limit,
      chunk,
      workers: workersOf(values),
      actQuant: q?.actQuant,
      label: `${file ?? model.name} ${variant}`,
      onProgress: (d) => bar.update(d),
    });
    console.log(
      `${model.name} ${variant} ${dataset}: ppl ${r.ppl.toFixed(4)} over ${r.windows} windows ` +
        `of ${seqlen}, block by block`,
    );
    results.push({ ...pplResultRow(model, variant, q, set, r), device: "cpu", blockwise: true });
  }
  return results.length === 1 ? results[0] : { model: model.name, variant, results };
}
