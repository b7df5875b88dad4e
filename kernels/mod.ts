/**
 * WebGPU (WGSL) matrix-vector kernels for every squeezebench storage format
 * (fp32, fp16, uniform b-bit, lut b-bit, each + optional CSR sparse part, as
 * quant/format.ts defines them), their CPU references, GPU timing against
 * copy bandwidth, and GPU decoding with a KV cache. The kernels import only
 * quant/format.ts and model/config.ts; the benchmarks are in eval/bench/,
 * perplexity through the kernels in eval/gpu_perplexity.ts.
 *
 * @example
 * ```ts
 * import { getGpu, matvecGpu } from "./mod.ts";
 * import { f32Tensor } from "../quant/format.ts";
 * const gpu = await getGpu();
 * const w = new Float32Array(64 * 96).map((_, i) => Math.sin(i));
 * const y = await matvecGpu(gpu, { dense: f32Tensor(w, 64, 96) }, new Float32Array(96).fill(1), 1);
 * ```
 *
 * @module
 */
export * from "./device.ts";
export * from "./matvec.ts";
export * from "./reference.ts";
export * from "./timing.ts";
export * from "./decode.ts";
export * from "./bitplane.ts";
export * from "./bitplane_reference.ts";
export * from "./int8.ts";
export * from "./matmul.ts";
export * from "./prefill.ts";
export * from "./hessian.ts";
export * from "./block.ts";
