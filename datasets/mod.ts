/**
 * Datasets: the data dir and hub downloads, DuckDB readers, CPython's
 * `random`, GPTQ's evaluation sets (WikiText-2, C4, c4-new, TinyStories) and
 * calibration windows.
 *
 * @example
 * ```ts
 * import { loadEvalSet, resolveDataDir } from "./datasets/mod.ts";
 * const set = await loadEvalSet("c4", { dataDir: resolveDataDir(), tokenizer: tok, seqlen: 512 });
 * ```
 *
 * @module
 */
export * from "./calibration.ts";
export * from "./c4.ts";
export * from "./datadir.ts";
export * from "./duckdb.ts";
export * from "./eval_sets.ts";
export * from "./hub.ts";
export * from "./pyrandom.ts";
export * from "./wikitext2.ts";
export * from "./hf_cache.ts";
