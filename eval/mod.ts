/**
 * Evaluation: perplexity under the GPTQ protocol, generation, sweeps and the
 * command line.
 *
 * @module
 */
export {
  drawCalibration,
  type DrawnCalibration,
  loadCalibration,
  type QuantContext,
  quantizeModel,
  type QuantizeModelOptions,
} from "./pipeline.ts";
export * from "./perplexity.ts";
export * from "./generate.ts";
export * from "./gpu_perplexity.ts";
export * from "./gpu_calibration.ts";
export * from "./bench/prefill.ts";
export * from "./wa_linear.ts";
export * from "./wa_perplexity.ts";
export * from "./bench/wa.ts";
export * from "./bench/kernels.ts";
export * from "./bench/decode.ts";
export * from "./bench/synthetic.ts";
export { runSweep, type SweepOptions } from "./cli/sweep.ts";
export { applyOverrides, loadPreset, type Preset, presetNames } from "./cli/presets.ts";
export { main } from "./cli/main.ts";
export * from "./model_source.ts";
