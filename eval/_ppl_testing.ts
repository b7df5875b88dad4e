/**
 * Fixture shared by the perplexity tests on stories260K: its weights and tokenizer, a quantization
 * context, evaluation sets read offline from the shared data, and the perplexity of a quantized
 * model on the first {@linkcode LIMIT} windows of a set.
 *
 * @module
 */
import { loadCheckpoint } from "../model/checkpoint.ts";
import { loadTokenizer } from "../model/tokenizer.ts";
import { type EvalSet, type EvalSetName, loadEvalSet } from "../datasets/eval_sets.ts";
import { SHARED_DATA, sharedData } from "../datasets/testing.ts";
import type { QuantizedModel } from "../quant/methods.ts";
import type { QuantContext } from "./pipeline.ts";
import { perplexity } from "./perplexity.ts";
import { calibrationWindows } from "../datasets/calibration.ts";

/** Windows scored by {@linkcode pplOf}. */
export const LIMIT = 4;

/** stories260K's weights. */
export const weights = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));
/** stories260K's tokenizer. */
export const tokenizer = await loadTokenizer(sharedData("stories260K/tok512.model"));

/**
 * Calibration windows of stories260K's tokens drawn offline from the shared TinyStories sample,
 * seed 0 (the GPU calibration tests' inputs).
 *
 * @param nsamples how many windows
 * @param seqlen tokens per window
 * @returns the windows
 */
export async function tinyStoriesWindows(nsamples: number, seqlen: number): Promise<Int32Array[]> {
  const { windows } = await calibrationWindows({
    source: "tinystories",
    nsamples,
    seqlen,
    seed: 0,
    dataDir: SHARED_DATA,
    tokenizer,
    offline: true,
  });
  return windows;
}

/**
 * A quantization context on the shared data, offline, in a fresh cache directory, on this thread
 * (worker start-up costs more than stories260K's solvers).
 *
 * @param modelKey the model key of the context
 * @returns the context
 */
export async function quantContext(modelKey: string): Promise<QuantContext> {
  return {
    tokenizer,
    dataDir: SHARED_DATA,
    offline: true,
    modelKey,
    workers: 0,
    cacheDir: await Deno.makeTempDir(),
  };
}

/**
 * An evaluation set tokenized by stories260K's tokenizer, offline from the shared data.
 *
 * @param name the set
 * @param seqlen the window length
 * @returns the set
 */
export function evalSet(name: EvalSetName, seqlen: number): Promise<EvalSet> {
  return loadEvalSet(name, { dataDir: SHARED_DATA, tokenizer, seqlen, offline: true });
}

/**
 * Perplexity of a quantized model on the first {@linkcode LIMIT} windows of `set`.
 *
 * @param set the evaluation set (its `seqlen` is the window length)
 * @param q the quantized model (its activation quantization applies, uniform linears as integer
 *   W×A products, as the CLI evaluates it)
 * @param workers perplexity workers
 * @default workers 0
 * @returns the perplexity
 */
export async function pplOf(set: EvalSet, q: QuantizedModel, workers = 0): Promise<number> {
  return (await perplexity(q.weights, set.tokens, {
    seqlen: set.seqlen,
    limit: LIMIT,
    workers,
    actQuant: q.actQuant,
    linears: q.linears,
  })).ppl;
}
