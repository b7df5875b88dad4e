/**
 * The LLaMA architecture: llama2.c checkpoints, tokenizers, the prefill
 * forward pass, the backward pass, the plain reference decoder, and the one
 * worker pool every parallel pass runs on.
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
export {
  type ProgressCallback,
  runTasks,
  type RunTasksOptions,
  serveTasks,
  type TaskHandler,
} from "./pool.ts";
export { matmul, MATMUL_KIND, matmulRef } from "./matmul.ts";
export * from "./tensor_file.ts";
export * from "./safetensors.ts";
export * from "./hf.ts";
export * from "./gguf.ts";
export * from "./tokenizer_json.ts";
