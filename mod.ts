/**
 * squeezebench's public API. Data flows one way:
 * model → calibrate → quantize → (evaluate | pack → kernels) → store → report.
 *
 * @example
 * ```ts
 * import { defaultSpec, loadCheckpoint, loadEvalSet, loadTokenizer, perplexity, quantizeModel } from "./mod.ts";
 * const weights = await loadCheckpoint("../shared/data/stories260K/stories260K.bin");
 * const tokenizer = await loadTokenizer("../shared/data/stories260K/tok512.model");
 * const ctx = { tokenizer, dataDir: "../shared/data", offline: true, modelKey: "stories260K", workers: 2 };
 * const q = await quantizeModel(weights, defaultSpec("squeezellm", 3), ctx);
 * const set = await loadEvalSet("wikitext2", { dataDir: "../shared/data", tokenizer, seqlen: 512 });
 * console.log((await perplexity(q.weights, set.tokens)).ppl);
 * ```
 *
 * @module
 */
export * from "./model/mod.ts";
export * from "./datasets/mod.ts";
export * from "./quant/mod.ts";
// the producer's definition (quant/methods.ts); reports/identity.ts reads a compatible shape
export type { CalibrationIdentity } from "./quant/mod.ts";
export * from "./eval/mod.ts";
export * from "./reports/mod.ts";
export * from "./kernels/mod.ts";
