/**
 * Test converters: write a model held as {@linkcode LlamaWeights} (e.g.
 * stories260K) as a Hugging Face checkpoint folder (config.json +
 * safetensors, F32/F16/BF16, single or sharded, tied or untied classifier),
 * as a GGUF file (F32/F16/BF16/Q8_0, v2 or v3, with its tokenizer), and a
 * SentencePiece model as a Hugging Face `tokenizer.json`, the way the public
 * converters do (transformers' convert_llama_weights_to_hf.py and
 * LlamaConverter, llama.cpp's convert_hf_to_gguf.py). Also the byte-level
 * builders the fuzzers mutate.
 *
 * @module
 */
import type { LlamaWeights } from "./config.ts";
import { HF_LINEAR_NAMES } from "./config.ts";
import { hfConfigText, permuteRotateHalf } from "./hf.ts";
import { GGML_TYPES, GgufType, type GgufValue } from "./gguf.ts";
import { type ModelProto, PieceType, SPACE_SYMBOL } from "./sentencepiece.ts";
import { f32ToBf16Bits, f32ToF16Bits } from "./tensor_file.ts";

/** A tensor to write: raw little-endian bytes with dtype and shape. */
export interface RawTensor {
  name: string;
  /** safetensors dtype ("F32", "F16", "BF16", ...). */
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

/** Encodes float32 values as `dtype` bytes (F32, F16 or BF16, round to nearest even). */
export function encodeFloats(x: Float32Array, dtype: string): Uint8Array {
  if (dtype === "F32") return new Uint8Array(x.slice().buffer);
  const out = new Uint16Array(x.length);
  const conv = dtype === "F16" ? f32ToF16Bits : f32ToBf16Bits;
  for (let i = 0; i < x.length; i++) out[i] = conv(x[i]);
  return new Uint8Array(out.buffer);
}

/**
 * The bytes of a safetensors file holding `tensors` in order.
 *
 * @param tensors tensors to store
 * @param metadata `__metadata__` strings
 * @returns the file content
 */
export function safetensorsBytes(
  tensors: RawTensor[],
  metadata: Record<string, string> = { format: "pt" },
): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let off = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.data.length] };
    off += t.data.length;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - ((8 + json.length) % 8)) % 8); // the reference writer pads to 8
  const hb = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + hb.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
  out.set(hb, 8);
  let p = 8 + hb.length;
  for (const t of tensors) {
    out.set(t.data, p);
    p += t.data.length;
  }
  return out;
}

/** Options of {@linkcode writeHfCheckpoint}. */
export interface HfCheckpointOptions {
  /** Storage dtype of every tensor. @default "F32" */
  dtype?: "F32" | "F16" | "BF16";
  /** Number of shards (> 1 writes model.safetensors.index.json). @default 1 */
  shards?: number;
  /** Write lm_head.weight and tie_word_embeddings false even when the model is tied. */
  untie?: boolean;
  /** Tokenizer files to add: name → content. */
  files?: Record<string, string | Uint8Array>;
}

/**
 * The Hugging Face tensors of `w` in HF order, q/k permuted to rotate-half.
 *
 * @param w the model
 * @param dtype storage dtype
 * @param untie include lm_head.weight even when tied
 * @returns the tensors
 */
export function hfTensors(w: LlamaWeights, dtype: string, untie = false): RawTensor[] {
  const c = w.config;
  const t = (name: string, x: Float32Array, shape: number[]): RawTensor => ({
    name,
    dtype,
    shape,
    data: encodeFloats(x, dtype),
  });
  const out = [t("model.embed_tokens.weight", w.tokenEmbedding, [c.vocabSize, c.dim])];
  const kv = (c.dim * c.nKvHeads) / c.nHeads;
  w.layers.forEach((lw, l) => {
    const p = `model.layers.${l}.`;
    out.push(t(`${p}input_layernorm.weight`, lw.attnNorm, [c.dim]));
    out.push(t(`${p}${HF_LINEAR_NAMES.wq}.weight`, permuteRotateHalf(lw.wq, c.nHeads, c.dim), [
      c.dim,
      c.dim,
    ]));
    out.push(t(`${p}${HF_LINEAR_NAMES.wk}.weight`, permuteRotateHalf(lw.wk, c.nKvHeads, c.dim), [
      kv,
      c.dim,
    ]));
    out.push(t(`${p}${HF_LINEAR_NAMES.wv}.weight`, lw.wv, [kv, c.dim]));
    out.push(t(`${p}${HF_LINEAR_NAMES.wo}.weight`, lw.wo, [c.dim, c.dim]));
    out.push(t(`${p}post_attention_layernorm.weight`, lw.ffnNorm, [c.dim]));
    out.push(t(`${p}${HF_LINEAR_NAMES.w1}.weight`, lw.w1, [c.hiddenDim, c.dim]));
    out.push(t(`${p}${HF_LINEAR_NAMES.w2}.weight`, lw.w2, [c.dim, c.hiddenDim]));
    out.push(t(`${p}${HF_LINEAR_NAMES.w3}.weight`, lw.w3, [c.hiddenDim, c.dim]));
  });
  out.push(t("model.norm.weight", w.finalNorm, [c.dim]));
  if (!c.sharedClassifier || untie) {
    out.push(t("lm_head.weight", w.classifier, [c.vocabSize, c.dim]));
  }
  return out;
}

/** The config.json transformers writes for `w` (LlamaForCausalLM; model/hf.ts `hfConfigText`). */
export function hfConfigJson(w: LlamaWeights, dtype: string, untie = false): string {
  return hfConfigText(w.config, dtype, untie);
}

/**
 * Writes `w` as a Hugging Face checkpoint folder.
 *
 * @param dir folder to create
 * @param w the model
 * @param options dtype, shards, untie, extra files
 */
export async function writeHfCheckpoint(
  dir: string,
  w: LlamaWeights,
  options: HfCheckpointOptions = {},
): Promise<void> {
  const dtype = options.dtype ?? "F32";
  const shards = options.shards ?? 1;
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/config.json`, hfConfigJson(w, dtype, options.untie));
  const tensors = hfTensors(w, dtype, options.untie);
  if (shards <= 1) {
    await Deno.writeFile(`${dir}/model.safetensors`, safetensorsBytes(tensors));
  } else {
    const per = Math.ceil(tensors.length / shards);
    const weightMap: Record<string, string> = {};
    for (let s = 0; s < shards; s++) {
      const name = `model-${String(s + 1).padStart(5, "0")}-of-${
        String(shards).padStart(5, "0")
      }.safetensors`;
      const part = tensors.slice(s * per, (s + 1) * per);
      for (const t of part) weightMap[t.name] = name;
      await Deno.writeFile(`${dir}/${name}`, safetensorsBytes(part));
    }
    const total = tensors.reduce((a, t) => a + t.data.length, 0);
    await Deno.writeTextFile(
      `${dir}/model.safetensors.index.json`,
      JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2),
    );
  }
  for (const [name, content] of Object.entries(options.files ?? {})) {
    if (typeof content === "string") await Deno.writeTextFile(`${dir}/${name}`, content);
    else await Deno.writeFile(`${dir}/${name}`, content);
  }
}

/** One metadata entry to write: key, GGUF value type, value (element type for arrays). */
export interface GgufKv {
  key: string;
  type: number;
  /** For ARRAY: the element type. */
  elemType?: number;
  value: GgufValue | number[] | boolean[];
}

/** A tensor to write into GGUF: ggml type id and raw block bytes, ne[0] fastest. */
export interface GgufRawTensor {
  name: string;
  ne: number[];
  type: number;
  data: Uint8Array;
  /** Data offset to write instead of the next aligned one (fuzzers: overlaps, misalignment). */
  offset?: number;
}

/**
 * The bytes of a GGUF file.
 *
 * @param kvs metadata in order
 * @param tensors tensors in order (each placed at the next aligned offset)
 * @param version 2 or 3 @default 3
 * @param alignment data alignment (write `general.alignment` yourself when not 32) @default 32
 * @returns the file content
 */
export function ggufBytes(
  kvs: GgufKv[],
  tensors: GgufRawTensor[],
  version = 3,
  alignment = 32,
): Uint8Array {
  const parts: number[] = [];
  const enc = new TextEncoder();
  const bytes = (b: Uint8Array) => {
    for (const x of b) parts.push(x);
  };
  const dv = (n: number, f: (v: DataView) => void) => {
    const b = new Uint8Array(n);
    f(new DataView(b.buffer));
    bytes(b);
  };
  const u32 = (v: number) => dv(4, (d) => d.setUint32(0, v, true));
  const u64 = (v: number) => dv(8, (d) => d.setBigUint64(0, BigInt(v), true));
  const str = (s: string) => {
    const b = enc.encode(s);
    u64(b.length);
    bytes(b);
  };
  const scalar = (type: number, v: unknown) => {
    switch (type) {
      case GgufType.UINT8:
      case GgufType.INT8:
        return dv(1, (d) => d.setUint8(0, Number(v) & 0xff));
      case GgufType.BOOL:
        return dv(1, (d) => d.setUint8(0, v ? 1 : 0));
      case GgufType.UINT16:
      case GgufType.INT16:
        return dv(2, (d) => d.setUint16(0, Number(v) & 0xffff, true));
      case GgufType.UINT32:
        return dv(4, (d) => d.setUint32(0, Number(v), true));
      case GgufType.INT32:
        return dv(4, (d) => d.setInt32(0, Number(v), true));
      case GgufType.FLOAT32:
        return dv(4, (d) => d.setFloat32(0, Number(v), true));
      case GgufType.UINT64:
        return dv(8, (d) => d.setBigUint64(0, BigInt(v as number), true));
      case GgufType.INT64:
        return dv(8, (d) => d.setBigInt64(0, BigInt(v as number), true));
      case GgufType.FLOAT64:
        return dv(8, (d) => d.setFloat64(0, Number(v), true));
      case GgufType.STRING:
        return str(String(v));
      default:
        throw new RangeError(`ggufBytes(): cannot write value type ${type}`);
    }
  };
  bytes(enc.encode("GGUF"));
  u32(version);
  u64(tensors.length);
  u64(kvs.length);
  for (const kv of kvs) {
    str(kv.key);
    u32(kv.type);
    if (kv.type === GgufType.ARRAY) {
      const arr = Array.from(kv.value as ArrayLike<unknown>);
      u32(kv.elemType!);
      u64(arr.length);
      for (const v of arr) scalar(kv.elemType!, v);
    } else scalar(kv.type, kv.value);
  }
  let off = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    str(t.name);
    u32(t.ne.length);
    for (const d of t.ne) u64(d);
    u32(t.type);
    u64(t.offset ?? off);
    offsets.push(off);
    off = Math.ceil((off + t.data.length) / alignment) * alignment;
  }
  while (parts.length % alignment !== 0) parts.push(0);
  const dataStart = parts.length;
  const out = new Uint8Array(dataStart + off);
  out.set(parts);
  tensors.forEach((t, i) => out.set(t.data, dataStart + offsets[i]));
  return out;
}

/**
 * Q8_0 blocks of `x` as llama.cpp's `quantize_row_q8_0_ref`: d = amax / 127,
 * q = round(x / d), d stored as f16.
 *
 * @param x `[n]` values, n a multiple of 32
 * @returns `[n / 32 · 34]` bytes
 */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  const nb = x.length / 32;
  const out = new Uint8Array(nb * 34);
  const dv = new DataView(out.buffer);
  const f = Math.fround;
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]));
    const d = f(amax / 127);
    const id = d ? f(1 / d) : 0;
    dv.setUint16(b * 34, f32ToF16Bits(d), true);
    for (let j = 0; j < 32; j++) {
      const v = f(x[b * 32 + j] * id);
      dv.setInt8(b * 34 + 2 + j, Math.sign(v) * Math.round(Math.abs(v))); // C roundf: half away from 0
    }
  }
  return out;
}

/** GGUF storage of a tensor: "F32", "F16", "BF16" or "Q8_0". */
export type GgufStorage = "F32" | "F16" | "BF16" | "Q8_0";

/** Options of {@linkcode ggufModelBytes}. */
export interface GgufModelOptions {
  /** Storage of the 2-D tensors (norms stay F32; Q8_0 falls back to F16 when ne[0] % 32 ≠ 0). */
  type?: GgufStorage;
  version?: 2 | 3;
  /** Non-default alignment, written as general.alignment. */
  alignment?: number;
  /** The tokenizer to store in tokenizer.ggml.*. */
  tokenizer?: ModelProto;
}

/**
 * `w` as a llama GGUF file, as llama.cpp's convert_hf_to_gguf.py writes it
 * (q/k in the interleaved order, i.e. as llama2.c holds them).
 *
 * @param w the model
 * @param options storage type, version, alignment, tokenizer
 * @returns the file content
 */
export function ggufModelBytes(w: LlamaWeights, options: GgufModelOptions = {}): Uint8Array {
  const { kvs, tensors } = ggufModelParts(w, options);
  return ggufBytes(kvs, tensors, options.version ?? 3, options.alignment ?? 32);
}

/**
 * The metadata and tensors {@linkcode ggufModelBytes} writes, for fuzzers to
 * alter before {@linkcode ggufBytes}.
 *
 * @param w the model
 * @param options storage type, alignment, tokenizer
 * @returns metadata entries and tensors in file order
 */
export function ggufModelParts(
  w: LlamaWeights,
  options: GgufModelOptions = {},
): { kvs: GgufKv[]; tensors: GgufRawTensor[] } {
  const c = w.config;
  const storage = options.type ?? "F32";
  const alignment = options.alignment ?? 32;
  const typeId = (name: string) =>
    Number(Object.entries(GGML_TYPES).find(([, t]) => t.name === name)![0]);
  const tensor = (name: string, x: Float32Array, ne: number[]): GgufRawTensor => {
    let s: string = ne.length === 1 ? "F32" : storage;
    if (s === "Q8_0" && ne[0] % 32 !== 0) s = "F16"; // llama.cpp's fallback
    const data = s === "Q8_0" ? quantizeQ8_0(x) : encodeFloats(x, s);
    return { name, ne, type: typeId(s), data };
  };
  const kv = (c.dim * c.nKvHeads) / c.nHeads;
  const tensors = [tensor("token_embd.weight", w.tokenEmbedding, [c.dim, c.vocabSize])];
  w.layers.forEach((lw, l) => {
    const p = `blk.${l}.`;
    tensors.push(
      tensor(`${p}attn_norm.weight`, lw.attnNorm, [c.dim]),
      tensor(`${p}attn_q.weight`, lw.wq, [c.dim, c.dim]),
      tensor(`${p}attn_k.weight`, lw.wk, [c.dim, kv]),
      tensor(`${p}attn_v.weight`, lw.wv, [c.dim, kv]),
      tensor(`${p}attn_output.weight`, lw.wo, [c.dim, c.dim]),
      tensor(`${p}ffn_norm.weight`, lw.ffnNorm, [c.dim]),
      tensor(`${p}ffn_gate.weight`, lw.w1, [c.dim, c.hiddenDim]),
      tensor(`${p}ffn_down.weight`, lw.w2, [c.hiddenDim, c.dim]),
      tensor(`${p}ffn_up.weight`, lw.w3, [c.dim, c.hiddenDim]),
    );
  });
  tensors.push(tensor("output_norm.weight", w.finalNorm, [c.dim]));
  if (!c.sharedClassifier) {
    tensors.push(tensor("output.weight", w.classifier, [c.dim, c.vocabSize]));
  }
  const T = GgufType;
  const kvs: GgufKv[] = [
    { key: "general.architecture", type: T.STRING, value: "llama" },
    { key: "general.name", type: T.STRING, value: "stories260K" },
    { key: "llama.context_length", type: T.UINT32, value: c.maxSeqLen },
    { key: "llama.embedding_length", type: T.UINT32, value: c.dim },
    { key: "llama.block_count", type: T.UINT32, value: c.nLayers },
    { key: "llama.feed_forward_length", type: T.UINT32, value: c.hiddenDim },
    { key: "llama.rope.dimension_count", type: T.UINT32, value: c.dim / c.nHeads },
    { key: "llama.attention.head_count", type: T.UINT32, value: c.nHeads },
    { key: "llama.attention.head_count_kv", type: T.UINT32, value: c.nKvHeads },
    { key: "llama.attention.layer_norm_rms_epsilon", type: T.FLOAT32, value: c.normEps },
    { key: "llama.rope.freq_base", type: T.FLOAT32, value: c.ropeTheta },
    {
      key: "general.file_type",
      type: T.UINT32,
      value: { F32: 0, F16: 1, BF16: 32, Q8_0: 7 }[storage],
    },
  ];
  if (options.alignment !== undefined) {
    kvs.push({ key: "general.alignment", type: T.UINT32, value: alignment });
  }
  const tp = options.tokenizer;
  if (tp) {
    kvs.push(
      { key: "tokenizer.ggml.model", type: T.STRING, value: "llama" },
      {
        key: "tokenizer.ggml.tokens",
        type: T.ARRAY,
        elemType: T.STRING,
        value: tp.pieces.map((p) => p.piece),
      },
      {
        key: "tokenizer.ggml.scores",
        type: T.ARRAY,
        elemType: T.FLOAT32,
        value: tp.pieces.map((p) => p.score),
      },
      {
        key: "tokenizer.ggml.token_type",
        type: T.ARRAY,
        elemType: T.INT32,
        value: tp.pieces.map((p) => p.type),
      },
      { key: "tokenizer.ggml.bos_token_id", type: T.UINT32, value: tp.trainerSpec.bosId },
      { key: "tokenizer.ggml.eos_token_id", type: T.UINT32, value: tp.trainerSpec.eosId },
      { key: "tokenizer.ggml.unknown_token_id", type: T.UINT32, value: tp.trainerSpec.unkId },
      {
        key: "tokenizer.ggml.add_space_prefix",
        type: T.BOOL,
        value: tp.normalizerSpec.addDummyPrefix,
      },
      {
        key: "tokenizer.ggml.remove_extra_whitespaces",
        type: T.BOOL,
        value: tp.normalizerSpec.removeExtraWhitespaces,
      },
    );
  }
  return { kvs, tensors };
}

/**
 * A Hugging Face `tokenizer.json` for a SentencePiece BPE model, as
 * transformers' LlamaConverter writes it: the vocabulary with ids, merges from
 * transformers' SentencePieceExtractor (every split of every piece into two
 * pieces, ordered by the piece's score), byte fallback, `<unk>` fused, and the
 * normalizer `Prepend("▁")` + `Replace(" ", "▁")`. For a model with
 * `remove_extra_whitespaces` (as tok512) two Replace steps come first that
 * do what sentencepiece does: runs of spaces → one, then a space at the very
 * start or end of the text removed (lookarounds, so Oniguruma and JavaScript
 * agree).
 *
 * @param proto a parsed SentencePiece BPE model
 * @returns the tokenizer.json content
 */
export function tokenizerJsonFromSentencePiece(proto: ModelProto): string {
  const vocab: Record<string, number> = {};
  proto.pieces.forEach((p, id) => (vocab[p.piece] = id));
  const has = (s: string) => Object.hasOwn(vocab, s);
  const merges: { l: string; r: string; score: number; order: number }[] = [];
  let order = 0;
  proto.pieces.forEach((p) => {
    const cps = [...p.piece];
    const local: { l: string; r: string }[] = [];
    for (let i = 1; i < cps.length; i++) {
      const l = cps.slice(0, i).join(""), r = cps.slice(i).join("");
      if (has(l) && has(r)) local.push({ l, r });
    }
    local.sort((a, b) => vocab[a.l] - vocab[b.l] || vocab[a.r] - vocab[b.r]);
    for (const m of local) merges.push({ ...m, score: p.score, order: order++ });
  });
  // Python's sorted(..., key=score, reverse=True) is stable: equal scores keep their order.
  merges.sort((a, b) => b.score - a.score || a.order - b.order);
  const { normalizerSpec: ns, trainerSpec: ts } = proto;
  const normalizers: unknown[] = [];
  if (ns.removeExtraWhitespaces) {
    normalizers.push(
      { type: "Replace", pattern: { Regex: " {2,}" }, content: " " },
      { type: "Replace", pattern: { Regex: "(?<![\\s\\S]) | (?![\\s\\S])" }, content: "" },
    );
  }
  if (ns.addDummyPrefix) normalizers.push({ type: "Prepend", prepend: SPACE_SYMBOL });
  normalizers.push({ type: "Replace", pattern: { String: " " }, content: SPACE_SYMBOL });
  const special = proto.pieces
    .map((p, id) => ({ p, id }))
    .filter(({ p }) => p.type === PieceType.CONTROL || p.type === PieceType.UNKNOWN);
  const bos = proto.pieces[ts.bosId]?.piece ?? "<s>";
  return JSON.stringify(
    {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: special.map(({ p, id }) => ({
        id,
        content: p.piece,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: true,
      })),
      normalizer: { type: "Sequence", normalizers },
      pre_tokenizer: null,
      post_processor: {
        type: "TemplateProcessing",
        single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
        pair: [
          { SpecialToken: { id: bos, type_id: 0 } },
          { Sequence: { id: "A", type_id: 0 } },
          { SpecialToken: { id: bos, type_id: 1 } },
          { Sequence: { id: "B", type_id: 1 } },
        ],
        special_tokens: { [bos]: { id: bos, ids: [ts.bosId], tokens: [bos] } },
      },
      decoder: {
        type: "Sequence",
        decoders: [
          { type: "Replace", pattern: { String: SPACE_SYMBOL }, content: " " },
          { type: "ByteFallback" },
          { type: "Fuse" },
          { type: "Strip", content: " ", start: 1, stop: 0 },
        ],
      },
      model: {
        type: "BPE",
        dropout: null,
        unk_token: proto.pieces[ts.unkId]?.piece ?? "<unk>",
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: true,
        byte_fallback: ts.byteFallback,
        ignore_merges: false,
        vocab,
        merges: merges.map((m) => [m.l, m.r]),
      },
    },
    null,
    1,
  );
}
