/**
 * Hugging Face LLaMA / Mistral checkpoint folders: `config.json`, the
 * safetensors weights (single file or sharded, F32/F16/BF16) and the
 * tokenizer (`tokenizer.model` when present, else `tokenizer.json`).
 *
 * Tensor names map to llama2.c's (model/config.ts):
 *
 * | Hugging Face                                  | here                 |
 * | --------------------------------------------- | -------------------- |
 * | `model.embed_tokens.weight`                   | tokenEmbedding       |
 * | `model.layers.{i}.self_attn.{q,k,v,o}_proj.weight` | wq, wk, wv, wo  |
 * | `model.layers.{i}.mlp.gate_proj.weight`       | w1                   |
 * | `model.layers.{i}.mlp.down_proj.weight`       | w2                   |
 * | `model.layers.{i}.mlp.up_proj.weight`         | w3                   |
 * | `model.layers.{i}.input_layernorm.weight`     | attnNorm             |
 * | `model.layers.{i}.post_attention_layernorm.weight` | ffnNorm         |
 * | `model.norm.weight`                           | finalNorm            |
 * | `lm_head.weight` (absent when tied)           | classifier           |
 *
 * RoPE convention. Meta's LLaMA and llama2.c rotate adjacent pairs
 * (2i, 2i+1) of each head; Hugging Face's LlamaAttention rotates halves
 * (i, i + headSize/2). HF's convert_llama_weights_to_hf.py therefore permutes
 * the rows of q_proj and k_proj:
 * `w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)`,
 * i.e. HF row `h·hs + p·hs/2 + i` = Meta row `h·hs + 2i + p`. The loader
 * applies the inverse ({@linkcode unpermuteRotateHalf}) so the forward pass's
 * interleaved RoPE computes exactly what HF computes on the stored weights.
 *
 * @module
 */
import type { LayerWeights, LinearName, LlamaConfig, LlamaWeights } from "./config.ts";
import { headSize, HF_LINEAR_NAMES, LINEAR_NAMES, linearShape } from "./config.ts";
import { ShardedSafetensors } from "./safetensors.ts";
import { checkFinite, isFile, ModelFormatError } from "./tensor_file.ts";
import { loadTokenizer, type Tokenizer } from "./tokenizer.ts";
import { loadTokenizerJson } from "./tokenizer_json.ts";
import { materializeWeights, type WeightSource } from "./weight_source.ts";

/** Architectures whose config.json and tensors this loader understands. */
export const HF_ARCHITECTURES: readonly string[] = ["LlamaForCausalLM", "MistralForCausalLM"];

/** A parsed config.json. */
export interface HfConfig {
  /** The model's hyper-parameters in llama2.c terms. */
  config: LlamaConfig;
  /** `architectures[0]`. */
  architecture: string;
  /** `torch_dtype` as stated (informational: tensors carry their own dtype). */
  torchDtype: string | undefined;
}

/**
 * Reads a LlamaForCausalLM / MistralForCausalLM `config.json`.
 *
 * `maxSeqLen` is `max_position_embeddings`, capped by Mistral's
 * `sliding_window` (windows no longer than it attend exactly as the model does).
 *
 * @param text the file content
 * @param path its name, for messages
 * @returns the config in llama2.c terms
 * @throws {ModelFormatError} for another architecture, a missing or invalid
 *   field, or a feature the forward pass lacks (biases, rope_scaling, head_dim ≠ hidden/heads)
 */
export function parseHfConfig(text: string, path: string): HfConfig {
  const fail = (msg: string): never => {
    throw new ModelFormatError(`Cannot use ${path}: ${msg}`);
  };
  let j: Record<string, unknown> = {};
  try {
    const parsed = JSON.parse(text);
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      fail("not a JSON object");
    }
    j = parsed;
  } catch (e) {
    if (e instanceof ModelFormatError) throw e;
    fail(`not valid JSON (${(e as Error).message})`);
  }
  const archs = j.architectures;
  const architecture = Array.isArray(archs) && typeof archs[0] === "string"
    ? archs[0]
    : j.model_type === "llama"
    ? "LlamaForCausalLM"
    : j.model_type === "mistral"
    ? "MistralForCausalLM"
    : String(archs ?? j.model_type);
  if (!HF_ARCHITECTURES.includes(architecture)) {
    fail(`architecture ${architecture} is not supported (only ${HF_ARCHITECTURES.join(", ")})`);
  }
  const int = (key: string, fallback?: number): number => {
    const v = j[key] ?? fallback;
    if (!Number.isSafeInteger(v) || (v as number) <= 0 || (v as number) > 2 ** 31) {
      fail(`${key} is ${JSON.stringify(j[key])}, expected a positive integer`);
    }
    return v as number;
  };
  const num = (key: string, fallback: number): number => {
    const v = j[key] ?? fallback;
    if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
      fail(`${key} is ${JSON.stringify(j[key])}, expected a positive number`);
    }
    return v as number;
  };
  const dim = int("hidden_size");
  const nHeads = int("num_attention_heads");
  const nKvHeads = int("num_key_value_heads", nHeads);
  if (dim % nHeads !== 0) fail(`hidden_size ${dim} is not a multiple of num_attention_heads`);
  if ((dim / nHeads) % 2 !== 0) fail(`head size ${dim / nHeads} must be even for RoPE`);
  if (nKvHeads > nHeads || nHeads % nKvHeads !== 0) {
    fail(`num_attention_heads ${nHeads} is not a multiple of num_key_value_heads ${nKvHeads}`);
  }
  if (j.head_dim !== undefined && j.head_dim !== null && j.head_dim !== dim / nHeads) {
    fail(`head_dim ${j.head_dim} differs from hidden_size / num_attention_heads (${dim / nHeads})`);
  }
  if (j.hidden_act !== undefined && j.hidden_act !== "silu") {
    fail(`hidden_act ${JSON.stringify(j.hidden_act)} is not supported (only "silu")`);
  }
  if (j.rope_scaling !== undefined && j.rope_scaling !== null) {
    fail(`rope_scaling ${JSON.stringify(j.rope_scaling)} is not supported`);
  }
  for (const b of ["attention_bias", "mlp_bias"]) {
    if (j[b] === true) fail(`${b} = true is not supported (the forward pass has no biases)`);
  }
  let maxSeqLen = int("max_position_embeddings", 2048);
  if (typeof j.sliding_window === "number" && j.sliding_window > 0) {
    maxSeqLen = Math.min(maxSeqLen, j.sliding_window);
  }
  const config: LlamaConfig = {
    dim,
    hiddenDim: int("intermediate_size"),
    nLayers: int("num_hidden_layers"),
    nHeads,
    nKvHeads,
    vocabSize: int("vocab_size"),
    maxSeqLen,
    sharedClassifier: j.tie_word_embeddings === true,
    normEps: num("rms_norm_eps", 1e-6),
    ropeTheta: num("rope_theta", 10000),
  };
  const td = j.torch_dtype ?? j.dtype;
  return { config, architecture, torchDtype: typeof td === "string" ? td : undefined };
}

/**
 * The config.json transformers writes for a LlamaForCausalLM of `config`
 * (the inverse of {@linkcode parseHfConfig}).
 *
 * @param config the model
 * @param dtype the safetensors dtype of its tensors ("F32", "F16", "BF16"), for `torch_dtype`
 * @param untie write `tie_word_embeddings: false` even for a tied model @default false
 * @returns the JSON text
 */
export function hfConfigText(config: LlamaConfig, dtype: string, untie = false): string {
  const c = config;
  return JSON.stringify(
    {
      architectures: ["LlamaForCausalLM"],
      model_type: "llama",
      hidden_act: "silu",
      hidden_size: c.dim,
      intermediate_size: c.hiddenDim,
      num_hidden_layers: c.nLayers,
      num_attention_heads: c.nHeads,
      num_key_value_heads: c.nKvHeads,
      max_position_embeddings: c.maxSeqLen,
      rms_norm_eps: c.normEps,
      rope_theta: c.ropeTheta,
      rope_scaling: null,
      vocab_size: c.vocabSize,
      tie_word_embeddings: c.sharedClassifier && !untie,
      torch_dtype: { F32: "float32", F16: "float16", BF16: "bfloat16" }[dtype],
      bos_token_id: 1,
      eos_token_id: 2,
    },
    null,
    2,
  );
}

/**
 * The Hugging Face names and shapes of a LlamaForCausalLM's tensors, in the
 * order transformers saves them.
 *
 * @param config the model
 * @param only "linears": only the seven linears of each block (what SqueezeLLM's
 *   gradient script's Fisher needs) @default every tensor
 * @returns name and `[rows, cols]` (or `[dim]`) of each
 */
export function hfTensorShapes(
  config: LlamaConfig,
  only?: "linears",
): { name: string; shape: number[] }[] {
  const { dim, vocabSize } = config;
  const out: { name: string; shape: number[] }[] = [];
  if (!only) out.push({ name: "model.embed_tokens.weight", shape: [vocabSize, dim] });
  for (let l = 0; l < config.nLayers; l++) {
    const p = `model.layers.${l}.`;
    const lin = (names: LinearName[]) => {
      for (const n of names) {
        out.push({ name: `${p}${HF_LINEAR_NAMES[n]}.weight`, shape: linearShape(config, n) });
      }
    };
    if (!only) out.push({ name: `${p}input_layernorm.weight`, shape: [dim] });
    lin(["wq", "wk", "wv", "wo"]);
    if (!only) out.push({ name: `${p}post_attention_layernorm.weight`, shape: [dim] });
    lin(["w1", "w2", "w3"]);
  }
  if (!only) {
    out.push({ name: "model.norm.weight", shape: [dim] });
    if (!config.sharedClassifier) out.push({ name: "lm_head.weight", shape: [vocabSize, dim] });
  }
  return out;
}

/**
 * Meta / llama2.c (interleaved pairs) → Hugging Face (rotate-half) row order
 * of a q or k projection: HF's `permute` in convert_llama_weights_to_hf.py.
 *
 * @param w `[rows, cols]` row-major, rows = nHeads · headSize
 * @param nHeads heads of this projection (nKvHeads for k)
 * @param cols input width
 * @returns the permuted copy
 */
export function permuteRotateHalf(w: Float32Array, nHeads: number, cols: number): Float32Array {
  return moveHeadRows(w, nHeads, cols, true);
}

/**
 * Hugging Face (rotate-half) → Meta / llama2.c (interleaved) row order: the
 * inverse of {@linkcode permuteRotateHalf}.
 *
 * @param w `[rows, cols]` row-major, rows = nHeads · headSize
 * @param nHeads heads of this projection (nKvHeads for k)
 * @param cols input width
 * @returns the un-permuted copy
 */
export function unpermuteRotateHalf(w: Float32Array, nHeads: number, cols: number): Float32Array {
  return moveHeadRows(w, nHeads, cols, false);
}

/**
 * Row `h·hs + 2i + p` (Meta, interleaved) ↔ row `h·hs + p·hs/2 + i` (HF,
 * rotate-half) of every head: to HF when `toHf`, back to Meta otherwise.
 */
function moveHeadRows(w: Float32Array, nHeads: number, cols: number, toHf: boolean): Float32Array {
  const hs = w.length / cols / nHeads, half = hs / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      for (let p = 0; p < 2; p++) {
        const meta = h * hs + 2 * i + p, hf = h * hs + p * half + i;
        const [from, to] = toHf ? [meta, hf] : [hf, meta];
        out.set(w.subarray(from * cols, (from + 1) * cols), to * cols);
      }
    }
  }
  return out;
}

/** Reads and checks one tensor of a HF checkpoint as float32. */
export interface TensorReader {
  /** Whether the checkpoint has `name`. */
  has(name: string): boolean;
  /** `[numel]` values of `name`, its stored shape checked against `shape`. */
  read(name: string, shape: readonly number[]): Float32Array;
}

/**
 * The weights of block `l` from HF-named tensors, q and k un-permuted into
 * the interleaved RoPE order. Reads only that block's tensors, so a caller
 * can hold one block at a time.
 *
 * @param config the model config
 * @param t tensor access (see {@linkcode hfTensorReader})
 * @param l block index
 * @returns the block's fp32 weights
 * @throws {ModelFormatError} for a missing tensor or a shape mismatch
 */
export function hfLayerWeights(config: LlamaConfig, t: TensorReader, l: number): LayerWeights {
  const { dim } = config;
  const p = `model.layers.${l}.`;
  const lin = (name: LinearName) => hfLinear(config, t, l, name);
  return {
    attnNorm: t.read(`${p}input_layernorm.weight`, [dim]),
    wq: lin("wq"),
    wk: lin("wk"),
    wv: lin("wv"),
    wo: lin("wo"),
    ffnNorm: t.read(`${p}post_attention_layernorm.weight`, [dim]),
    w1: lin("w1"),
    w2: lin("w2"),
    w3: lin("w3"),
  };
}

/**
 * One linear of block `l`: `model.layers.{l}.{HF_LINEAR_NAMES[name]}.weight`,
 * shape-checked, q and k un-permuted to the interleaved RoPE order.
 *
 * @param config the model config
 * @param t tensor access
 * @param l block index
 * @param name llama2.c's name of the linear
 * @returns `[out, in]` row-major
 */
export function hfLinear(
  config: LlamaConfig,
  t: TensorReader,
  l: number,
  name: LinearName,
): Float32Array {
  const x = t.read(`model.layers.${l}.${HF_LINEAR_NAMES[name]}.weight`, linearShape(config, name));
  if (name === "wq") return unpermuteRotateHalf(x, config.nHeads, config.dim);
  if (name === "wk") return unpermuteRotateHalf(x, config.nKvHeads, config.dim);
  return x;
}

/** SqueezeLLM's Fisher information per block: linear name → [out, in], llama2.c's layout. */
export type HfFisherLayers = Record<LinearName, Float32Array>[];

/** SqueezeLLM's Fisher information read one block at a time. Dispose it to close its files. */
export interface FisherSource extends Disposable {
  /** The gradient checkpoint folder. */
  readonly path: string;
  /** The Fisher values of block `l`'s seven linears, read now, in llama2.c's layout. */
  layer(l: number): Record<LinearName, Float32Array>;
}

/**
 * Opens the output of SqueezeLLM's official gradient script
 * (kssteven418/SqueezeLLM-gradients `run.py`), which stores the summed
 * squared gradients as a Hugging Face checkpoint with the model's tensor
 * names (safetensors), for block-by-block reads. Only the seven linears of
 * each block are read; q and k are un-permuted like the weights, so each
 * value stays with its weight.
 *
 * @param dir the gradient checkpoint folder (config.json + safetensors)
 * @param config the model's config; the folder's config.json must describe the same shapes
 * @returns the open source (dispose it); `layer()` throws {@linkcode ModelFormatError}
 *   for a missing tensor, or a negative or non-finite value
 * @throws {ModelFormatError} for another model's shapes or a malformed file
 * @example
 * ```ts
 * using fisher = await openHfFisher("/grads/llama-7b", config);
 * const f0 = fisher.layer(0).wq;
 * ```
 */
export async function openHfFisher(dir: string, config: LlamaConfig): Promise<FisherSource> {
  dir = dir.replace(/\/+$/, "") || "/";
  const cfgPath = `${dir}/config.json`;
  const theirs = parseHfConfig(await readConfigText(dir, "Fisher checkpoint "), cfgPath).config;
  for (const k of ["dim", "hiddenDim", "nLayers", "nHeads", "nKvHeads"] as const) {
    if (theirs[k] !== config[k]) {
      throw new ModelFormatError(
        `Fisher checkpoint ${dir} is for another model: its ${k} is ${theirs[k]}, the model's ${
          config[k]
        }`,
      );
    }
  }
  const st = ShardedSafetensors.open(dir);
  const read = hfTensorReader(st);
  const t: TensorReader = {
    has: read.has,
    read(name, shape) {
      const x = read.read(name, shape);
      for (let i = 0; i < x.length; i++) {
        if (x[i] < 0) {
          throw new ModelFormatError(
            `Fisher tensor "${name}" in ${dir} has a negative value (${x[i]}) at index ${i}`,
          );
        }
      }
      return x;
    },
  };
  return {
    path: dir,
    layer: (l) =>
      Object.fromEntries(LINEAR_NAMES.map((n) => [n, hfLinear(config, t, l, n)])) as Record<
        LinearName,
        Float32Array
      >,
    [Symbol.dispose]: () => st[Symbol.dispose](),
  };
}

/**
 * Reads the whole output of SqueezeLLM's gradient script
 * ({@linkcode openHfFisher}) into memory.
 *
 * @param dir the gradient checkpoint folder (config.json + safetensors)
 * @param config the model's config; the folder's config.json must describe the same shapes
 * @returns Fisher values per block, float32
 * @throws {ModelFormatError} for another model's shapes, a missing tensor, or a
 *   negative or non-finite value
 * @example
 * ```ts
 * const fisher = await loadHfFisher("/grads/llama-7b", weights.config);
 * ```
 */
export async function loadHfFisher(dir: string, config: LlamaConfig): Promise<HfFisherLayers> {
  using src = await openHfFisher(dir, config);
  return Array.from({ length: config.nLayers }, (_, l) => src.layer(l));
}

/**
 * A {@linkcode TensorReader} over open safetensors: checks shape, rejects
 * non-finite values.
 *
 * @param st the open checkpoint
 * @returns the reader
 */
export function hfTensorReader(st: ShardedSafetensors): TensorReader {
  return {
    has: (name) => st.has(name),
    read(name, shape) {
      const info = st.info(name);
      if (!info) {
        throw new ModelFormatError(`Missing tensor "${name}" in ${st.dir}`);
      }
      if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
        throw new ModelFormatError(
          `Tensor "${name}" in ${st.dir} has shape [${info.shape}], config.json implies [${shape}]`,
        );
      }
      const x = st.read(name);
      checkFinite(x, `Tensor "${name}" in ${st.dir}`);
      return x;
    },
  };
}

/** A loaded Hugging Face checkpoint folder. */
export interface HfModel extends HfConfig {
  /** fp32 weights in llama2.c's layout and RoPE convention. */
  weights: LlamaWeights;
  /** `tokenizer.model`, else `tokenizer.json`; undefined when the folder has neither. */
  tokenizer: Tokenizer | undefined;
}

/** An open Hugging Face checkpoint folder whose weights are read block by block. */
export type HfWeightSource = WeightSource & HfConfig;

/**
 * Opens a Hugging Face LLaMA / Mistral checkpoint folder for block-by-block
 * reads: config.json and the safetensors headers are read now, tensors when
 * asked for (model/weight_source.ts).
 *
 * @param dir folder with config.json and the safetensors
 * @returns the open source (dispose it)
 * @throws {ModelFormatError} naming the file and what is wrong
 * @example
 * ```ts
 * using src = await openHfWeights("/models/Llama-2-7b-hf");
 * const block0 = src.layer(0); // fp32, only block 0's tensors read
 * ```
 */
export async function openHfWeights(dir: string): Promise<HfWeightSource> {
  dir = dir.replace(/\/+$/, "") || "/";
  const cfg = parseHfConfig(await readConfigText(dir, ""), `${dir}/config.json`);
  const { config } = cfg;
  const st = ShardedSafetensors.open(dir);
  try {
    checkTensorNames(config, st);
  } catch (e) {
    st[Symbol.dispose]();
    throw e;
  }
  const t = hfTensorReader(st);
  const { dim, vocabSize } = config;
  return {
    ...cfg,
    path: dir,
    // q and k un-permuted into the interleaved RoPE order by hfLinear
    layer: (l) => hfLayerWeights(config, t, l),
    tokenEmbedding: () => t.read("model.embed_tokens.weight", [vocabSize, dim]),
    finalNorm: () => t.read("model.norm.weight", [dim]),
    classifier: () =>
      config.sharedClassifier ? undefined : t.read("lm_head.weight", [vocabSize, dim]),
    [Symbol.dispose]: () => st[Symbol.dispose](),
  };
}

/** A LLaMA checkpoint's RoPE buffer: older transformers save and load it, newer ones recompute it from rope_theta. */
const INV_FREQ = /^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/;

/**
 * Throws unless every tensor of the checkpoint is one the forward pass
 * reads ({@linkcode hfTensorShapes}), the `lm_head.weight` of a tied model
 * (transformers ties it to the embedding and ignores it), or a saved
 * `rotary_emb.inv_freq` equal to rope_theta's frequencies 1 / θ^(2i/d)
 * within 5e-3 relative (bf16's rounding): a bias or any other tensor the
 * forward pass would skip changes the model's outputs in transformers, so
 * its numbers would be wrong.
 */
function checkTensorNames(config: LlamaConfig, st: ShardedSafetensors): void {
  const known = new Set(hfTensorShapes(config).map((t) => t.name));
  known.add("lm_head.weight");
  const hs = headSize(config);
  const freq = (i: number) => config.ropeTheta ** (-2 * i / hs);
  for (const name of st.names()) {
    if (known.has(name)) continue;
    if (INV_FREQ.test(name)) {
      const f = st.read(name);
      const bad = f.length === hs / 2
        ? f.findIndex((v, i) => !(Math.abs(v - freq(i)) <= 5e-3 * freq(i)))
        : -2;
      if (bad === -1) continue;
      throw new ModelFormatError(
        `Cannot use ${st.dir}: tensor "${name}" holds RoPE frequencies other than ` +
          `rope_theta's (${config.ropeTheta}) 1 / θ^(2i/${hs}), i < ${hs / 2}` +
          (bad >= 0 ? ` (entry ${bad}: ${f[bad]})` : ` (${f.length} entries)`) +
          `; the forward pass computes them from rope_theta`,
      );
    }
    const block = /^model\.layers\.(\d+)\./.exec(name);
    const why = name.endsWith(".bias")
      ? "is a bias, and the forward pass has none"
      : block && Number(block[1]) >= config.nLayers
      ? `belongs to block ${block[1]}, past num_hidden_layers (${config.nLayers})`
      : "is not one of a LLaMA model's tensors, and the forward pass would ignore it";
    throw new ModelFormatError(`Cannot use ${st.dir}: tensor "${name}" ${why}`);
  }
}

/** The text of `dir`/config.json; `what` prefixes the file in the message ("Fisher checkpoint "). */
async function readConfigText(dir: string, what: string): Promise<string> {
  const cfgPath = `${dir}/config.json`;
  try {
    return await Deno.readTextFile(cfgPath);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "file not found" : (e as Error).message;
    throw new ModelFormatError(`Cannot read ${what}${cfgPath}: ${why}`);
  }
}

/**
 * Loads a Hugging Face LLaMA / Mistral checkpoint folder whole, in fp32
 * ({@linkcode openHfWeights} for block-by-block reads).
 *
 * @param dir folder with config.json, the safetensors and usually a tokenizer
 * @returns config, fp32 weights and tokenizer
 * @throws {ModelFormatError} naming the file and what is wrong
 * @throws {TokenizerError} for a malformed tokenizer file
 * @example
 * ```ts
 * const { weights, tokenizer } = await loadHfModel("/models/Llama-2-7b-hf");
 * ```
 */
export async function loadHfModel(dir: string): Promise<HfModel> {
  let cfg: HfConfig, weights: LlamaWeights;
  {
    using src = await openHfWeights(dir);
    const { config, architecture, torchDtype } = src;
    cfg = { config, architecture, torchDtype };
    weights = materializeWeights(src);
  }
  const tokenizer = await loadHfTokenizer(dir.replace(/\/+$/, "") || "/", cfg.config.vocabSize);
  return { ...cfg, weights, tokenizer };
}

/**
 * The tokenizer of a checkpoint folder: `tokenizer.model` (SentencePiece)
 * when present, else `tokenizer.json`, else undefined.
 *
 * @param dir the folder
 * @param vocabSize the model's vocabulary size; the tokenizer may not have more tokens
 * @returns the tokenizer, or undefined
 */
export async function loadHfTokenizer(
  dir: string,
  vocabSize?: number,
): Promise<Tokenizer | undefined> {
  let tok: Tokenizer | undefined;
  if (await isFile(`${dir}/tokenizer.model`)) tok = await loadTokenizer(`${dir}/tokenizer.model`);
  else if (await isFile(`${dir}/tokenizer.json`)) {
    tok = await loadTokenizerJson(`${dir}/tokenizer.json`);
  }
  if (tok && vocabSize !== undefined && tok.vocabSize > vocabSize) {
    throw new ModelFormatError(
      `Tokenizer ${tok.source} has ${tok.vocabSize} tokens, the model's vocab_size is ${vocabSize}`,
    );
  }
  return tok;
}
