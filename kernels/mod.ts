/**
 * WebGPU (WGSL) matrix-vector kernels for every squeezebench storage format
 * (fp32, fp16, uniform b-bit, lut b-bit, each + optional CSR sparse part),
 * their CPU references, timing, the kernel benchmark, GPU decoding, perplexity
 * through the kernels and the decode benchmark with the real quantizers.
 *
 * @example
 * ```ts
 * import { getGpu, matvecGpu, rtnUniform } from "./mod.ts";
 * const gpu = await getGpu();
 * const w = new Float32Array(64 * 96).map((_, i) => Math.sin(i));
 * const y = await matvecGpu(gpu, { dense: rtnUniform(w, 64, 96, { bits: 3 }) }, new Float32Array(96).fill(1), 1);
 * ```
 *
 * @module
 */
export * from "./device.ts";
export * from "./weight.ts";
export * from "./matvec.ts";
export * from "./reference.ts";
export * from "../eval/bench/synthetic.ts";
export * from "./timing.ts";
export * from "../eval/bench/kernels.ts";
export * from "./decode.ts";
export * from "../eval/gpu_perplexity.ts";
export * from "../eval/bench/decode.ts";
