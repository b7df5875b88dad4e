/**
 * Evaluation: perplexity under the GPTQ protocol, generation, sweeps and the
 * command line.
 *
 * @module
 */
export * from "./perplexity.ts";
export * from "./generate.ts";
export { runSweep, SWEEPS, type SweepEntry, type SweepOptions } from "./sweep.ts";
export { main } from "./cli.ts";
