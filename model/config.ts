/**
 * LLaMA architecture hyper-parameters and weight layout.
 *
 * Every linear weight is stored row-major as [outFeatures, inFeatures], so a
 * linear layer computes y[o] = Σ_i W[o, i] · x[i] (llama2.c's `matmul`).
 *
 * @module
 */

/** Hyper-parameters of a LLaMA-family model (llama2.c's `Config`). */
export interface LlamaConfig {
  /** Transformer width. */
  dim: number;
  /** Width of the SwiGLU hidden layer. */
  hiddenDim: number;
  nLayers: number;
  /** Number of query heads. */
  nHeads: number;
  /** Number of key/value heads (grouped-query attention when < nHeads). */
  nKvHeads: number;
  vocabSize: number;
  /**
   * Longest sequence the model was trained on; the default perplexity and
   * calibration window is {@linkcode protocolSeqlen} (at most 2048 tokens).
   */
  maxSeqLen: number;
  /** True when the classifier is the token embedding matrix (weight tying). */
  sharedClassifier: boolean;
  /** RMSNorm epsilon. @default 1e-5 */
  normEps: number;
  /** RoPE base frequency. @default 10000 */
  ropeTheta: number;
}

/**
 * The window of the papers' protocol: GPTQ's llama.py, SqueezeLLM's llama.py
 * and ABQ-LLM's main.py all set `model.seqlen = 2048` whatever the
 * checkpoint's max_position_embeddings (4,096 for LLaMA-2, 8,192 and more
 * for LLaMA-3), for perplexity and for calibration windows.
 */
export const PROTOCOL_SEQLEN = 2048;

/**
 * The default window length of perplexity and of calibration windows:
 * {@linkcode PROTOCOL_SEQLEN}, or the model's max_seq_len where it is
 * shorter (llama2.c models: 256..1024).
 *
 * @example
 * ```ts
 * protocolSeqlen({ ...config, maxSeqLen: 4096 }); // 2048 (LLaMA-2)
 * protocolSeqlen({ ...config, maxSeqLen: 512 }); // 512 (stories260K)
 * ```
 */
export function protocolSeqlen(c: LlamaConfig): number {
  return Math.min(PROTOCOL_SEQLEN, c.maxSeqLen);
}

/** The seven quantizable linear layers of a LLaMA block, in llama2.c's names. */
export const LINEAR_NAMES = ["wq", "wk", "wv", "wo", "w1", "w2", "w3"] as const;
/** One of {@linkcode LINEAR_NAMES}. */
export type LinearName = typeof LINEAR_NAMES[number];

/** The Hugging Face names of the same layers, used in reports and tables. */
export const HF_LINEAR_NAMES: Record<LinearName, string> = {
  wq: "self_attn.q_proj",
  wk: "self_attn.k_proj",
  wv: "self_attn.v_proj",
  wo: "self_attn.o_proj",
  w1: "mlp.gate_proj",
  w2: "mlp.down_proj",
  w3: "mlp.up_proj",
};

/** Weights of one transformer block. Linear weights are [out, in], row-major. */
export interface LayerWeights {
  attnNorm: Float32Array; // [dim]
  wq: Float32Array; // [nHeads * headSize, dim]
  wk: Float32Array; // [nKvHeads * headSize, dim]
  wv: Float32Array; // [nKvHeads * headSize, dim]
  wo: Float32Array; // [dim, nHeads * headSize]
  ffnNorm: Float32Array; // [dim]
  w1: Float32Array; // [hiddenDim, dim]  (gate_proj)
  w2: Float32Array; // [dim, hiddenDim]  (down_proj)
  w3: Float32Array; // [hiddenDim, dim]  (up_proj)
}

/** All weights of a model. Read-only by convention: quantizers make new objects. */
export interface LlamaWeights {
  config: LlamaConfig;
  tokenEmbedding: Float32Array; // [vocabSize, dim]
  layers: LayerWeights[]; // [nLayers]
  finalNorm: Float32Array; // [dim]
  /** Same array as tokenEmbedding when config.sharedClassifier. */
  classifier: Float32Array; // [vocabSize, dim]
}

/** Width of one attention head. */
export function headSize(c: LlamaConfig): number {
  return c.dim / c.nHeads;
}

/** Width of the key/value projections (nKvHeads * headSize). */
export function kvDim(c: LlamaConfig): number {
  return (c.dim * c.nKvHeads) / c.nHeads;
}

/**
 * Key of one linear layer in a quantized model's `linears` map
 * (quant/methods.ts's `QuantizedModel.linears`, GPU decoding's sources).
 *
 * @param layer block index
 * @param name the linear's name
 * @returns "layers.{layer}.{name}"
 * @example
 * ```ts
 * linearKey(2, "wq"); // "layers.2.wq"
 * ```
 */
export const linearKey = (layer: number, name: string): string => `layers.${layer}.${name}`;

/**
 * RoPE rotation tables as llama2.c computes them in float32:
 * freq_i = 1 / theta^(2i / headSize), angle = pos · freq_i. Shared by the CPU
 * forward and backward passes and the GPU decoder.
 *
 * @param config the model (headSize, ropeTheta)
 * @param maxT positions to tabulate
 * @returns [cos, sin], each [maxT, headSize / 2]
 */
export function ropeTables(config: LlamaConfig, maxT: number): [Float32Array, Float32Array] {
  const hs = headSize(config), half = hs / 2;
  const f = Math.fround;
  const cos = new Float32Array(maxT * half), sin = new Float32Array(maxT * half);
  for (let i = 0; i < half; i++) {
    const freq = f(1 / f(Math.pow(config.ropeTheta, f((2 * i) / hs))));
    for (let pos = 0; pos < maxT; pos++) {
      const val = f(pos * freq);
      cos[pos * half + i] = Math.cos(val);
      sin[pos * half + i] = Math.sin(val);
    }
  }
  return [cos, sin];
}

/**
 * Number of weights of a model: embedding, every block's linears and norms,
 * the final norm, and the classifier when it is not tied.
 *
 * @param c the model
 * @returns the count (× 4 = its fp32 size in bytes)
 * @example
 * ```ts
 * parameterCount(config) * 4; // bytes of the whole model in fp32
 * ```
 */
export function parameterCount(c: LlamaConfig): number {
  const kv = kvDim(c);
  const linears = 2 * c.dim * c.dim + 2 * kv * c.dim + 3 * c.hiddenDim * c.dim;
  return c.vocabSize * c.dim * (c.sharedClassifier ? 1 : 2) + c.dim +
    c.nLayers * (2 * c.dim + linears);
}

/** [outFeatures, inFeatures] of a linear layer. */
export function linearShape(c: LlamaConfig, name: LinearName): [number, number] {
  switch (name) {
    case "wq":
    case "wo":
      return [c.dim, c.dim];
    case "wk":
    case "wv":
      return [kvDim(c), c.dim];
    case "w1":
    case "w3":
      return [c.hiddenDim, c.dim];
    case "w2":
      return [c.dim, c.hiddenDim];
  }
}

/**
 * A copy of `weights` whose linear layers are replaced where `replace` returns
 * an array (for fake quantization); everything else is shared, not copied.
 */
export function withLinears(
  weights: LlamaWeights,
  replace: (layer: number, name: LinearName, w: Float32Array) => Float32Array | undefined,
): LlamaWeights {
  const layers = weights.layers.map((lw, l) => {
    const next = { ...lw };
    for (const name of LINEAR_NAMES) {
      const r = replace(l, name, lw[name]);
      if (r) {
        if (r.length !== lw[name].length) {
          throw new RangeError(
            `withLinears(): layers.${l}.${name} has ${
              lw[name].length
            } weights, replacement has ${r.length}`,
          );
        }
        next[name] = r;
      }
    }
    return next;
  });
  return { ...weights, layers };
}
