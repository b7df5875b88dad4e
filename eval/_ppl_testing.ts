/**
 * Fixture shared by the perplexity tests of quantized models: stories260K and the first
 * {@linkcode LIMIT} windows of 512 of TinyStories' validation text, offline from the shared data.
 *
 * @module
 */
import { loadCheckpoint } from "../model/checkpoint.ts";
import { loadTokenizer } from "../model/tokenizer.ts";
import { loadEvalSet } from "../datasets/eval_sets.ts";
import { SHARED_DATA, sharedData } from "../datasets/testing.ts";
import type { QuantizedModel } from "../quant/methods.ts";
import { perplexity } from "./perplexity.ts";

/** Windows of 512 tokens scored by {@linkcode pplOf}. */
export const LIMIT = 4;

/** stories260K's weights and tokenizer, TinyStories' validation set, and a quantization context. */
export const weights = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));
export const tokenizer = await loadTokenizer(sharedData("stories260K/tok512.model"));
export const set = await loadEvalSet("tinystories", {
  dataDir: SHARED_DATA,
  tokenizer,
  seqlen: 512,
  offline: true,
});
export const ctx = {
  tokenizer,
  dataDir: SHARED_DATA,
  offline: true,
  modelKey: "stories260K-test",
  workers: 0,
  cacheDir: await Deno.makeTempDir(),
};

/**
 * Perplexity of a quantized model on the first {@linkcode LIMIT} windows of {@linkcode set}.
 *
 * @param q the quantized model (its activation quantization applies)
 * @param workers perplexity workers
 * @default workers 0
 * @returns the perplexity
 */
export async function pplOf(q: QuantizedModel, workers = 0): Promise<number> {
  return (await perplexity(q.weights, set.tokens, {
    seqlen: 512,
    limit: LIMIT,
    workers,
    actQuant: q.actQuant,
  })).ppl;
}
