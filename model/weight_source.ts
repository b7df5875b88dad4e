/**
 * A model's weights read one block at a time: the bounded-memory view of a
 * checkpoint.
 *
 * A {@linkcode WeightSource} keeps nothing in fp32: it holds an open file
 * (safetensors, GGUF) and its header, and every call reads only the tensors
 * asked for, by offset, decoding f16/bf16 to fp32 at that moment. A caller
 * that asks for block l, uses it and lets it go holds one block in fp32 at a
 * time, so a 13 GB fp16 checkpoint is quantized in about one block's fp32
 * size (eval/quantize_stream.ts) instead of its whole fp32 size (27 GB for
 * LLaMA-7B). {@linkcode materializeWeights} builds the whole fp32
 * {@linkcode LlamaWeights} from a source for the passes that need every block
 * at once (the forward pass over a window).
 *
 * The loaders provide the sources: model/hf.ts `openHfWeights`, model/gguf.ts
 * `openGgufWeights`; {@linkcode memoryWeightSource} wraps weights already in
 * memory (llama2.c files, tests).
 *
 * @module
 */
import type { LayerWeights, LlamaConfig, LlamaWeights } from "./config.ts";

/** Lazy, block-by-block access to a model's fp32 weights. Dispose it to close its files. */
export interface WeightSource extends Disposable {
  readonly config: LlamaConfig;
  /** The file or folder read, for messages. */
  readonly path: string;
  /**
   * The fp32 weights of block `l`, read now; nothing is kept, so each call
   * reads again.
   */
  layer(l: number): LayerWeights;
  /** `[vocabSize, dim]`, read now. */
  tokenEmbedding(): Float32Array;
  /** `[dim]`, read now. */
  finalNorm(): Float32Array;
  /** `[vocabSize, dim]`, read now; undefined when config.sharedClassifier (the token embedding is the classifier). */
  classifier(): Float32Array | undefined;
}

/**
 * A source over weights already in memory (returns its arrays, not copies).
 *
 * @param w the weights
 * @param path a name for messages @default "<memory>"
 * @returns the source; disposing it does nothing
 * @example
 * ```ts
 * const src = memoryWeightSource(weights);
 * src.layer(0).wq === weights.layers[0].wq; // true
 * ```
 */
export function memoryWeightSource(w: LlamaWeights, path = "<memory>"): WeightSource {
  return {
    config: w.config,
    path,
    layer: (l) => w.layers[l],
    tokenEmbedding: () => w.tokenEmbedding,
    finalNorm: () => w.finalNorm,
    classifier: () => w.config.sharedClassifier ? undefined : w.classifier,
    [Symbol.dispose]() {},
  };
}

/**
 * Every block of a source in fp32: the whole model in memory.
 *
 * @param src the source (not disposed)
 * @returns the weights; the classifier is the token embedding when tied
 * @example
 * ```ts
 * import { openHfWeights } from "./hf.ts";
 * using src = await openHfWeights("/models/tiny");
 * const weights = materializeWeights(src);
 * ```
 */
export function materializeWeights(src: WeightSource): LlamaWeights {
  const { config } = src;
  const tokenEmbedding = src.tokenEmbedding();
  const layers = Array.from({ length: config.nLayers }, (_, l) => src.layer(l));
  const finalNorm = src.finalNorm();
  const classifier = src.classifier() ?? tokenEmbedding;
  return { config, tokenEmbedding, layers, finalNorm, classifier };
}
