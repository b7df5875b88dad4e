/**
 * The LLaMA architecture: llama2.c checkpoints, tokenizers, the prefill
 * forward pass, the backward pass, and the plain reference decoder.
 *
 * @module
 */
export * from "./config.ts";
export * from "./checkpoint.ts";
export * from "./tokenizer.ts";
export * from "./forward.ts";
export * from "./backward.ts";
export * from "./reference.ts";
export * from "./random.ts";
export { matmul, MATMUL_KIND, matmulRef } from "./matmul.ts";
