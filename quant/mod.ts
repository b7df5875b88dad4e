/**
 * Quantized-tensor formats and packing, the quantizers (RTN, GPTQ, AWQ,
 * SqueezeLLM, SmoothQuant) behind one interface, activation quantization,
 * size accounting and the quantized model file.
 *
 * @module
 */
export * from "./format.ts";
export * from "./methods.ts";
export * from "./size.ts";
export * from "./qmodel.ts";
export {
  codeBits,
  findParams,
  gridMaxq,
  minMaxGrid,
  quantizeUniform,
  quantizeValue,
  rtn,
  type UniformGrid,
} from "./rtn.ts";
export { Gptq } from "./gptq.ts";
export {
  cpuHessians,
  gptqQuantizeModel,
  gptqQuantizeModelAsync,
  type HessianAccumulator,
  type HessianAccumulatorFactory,
} from "./sequential.ts";
export { awqGrid, awqQuantizeModel, awqQuantizeModelParallel } from "./awq.ts";
export { findOutlierRange, outlierThreshold, squeezellmQuantize } from "./squeezellm.ts";
export { kmeans1d, kmeans1dOptimum } from "./kmeans1d.ts";
export {
  type ActQuantConfig,
  actQuantHooks,
  actQuantOf,
  asymMaxq,
  fakeQuantRows,
  tokenParams,
} from "./act_quant.ts";
export { activationAbsMax, smoothquantQuantizeModel, smoothWeights } from "./smoothquant.ts";
export { fisherInformation } from "./fisher.ts";
export { cachedFisher } from "./fisher_cache.ts";
export {
  abqLoss,
  type AbqOptions,
  abqQuantizeModel,
  type AbqResult,
  defaultEpochs,
  lwcBackward,
  lwcForward,
  transformBlock,
} from "./abq.ts";
export { AbqBlockState, fakeQuantGrad } from "./abq_grad.ts";
