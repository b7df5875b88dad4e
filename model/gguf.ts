/**
 * GGUF files (ggml / llama.cpp), versions 2 and 3: metadata, tensor infos,
 * F32 / F16 / BF16 / Q8_0 tensors dequantized to float32 on read, the llama
 * architecture's hyper-parameters and the SentencePiece-style tokenizer
 * stored in `tokenizer.ggml.*`.
 *
 * Layout (ggml/docs/gguf.md), all little-endian:
 *
 * | field | type |
 * | ----- | ---- |
 * | magic "GGUF" | 4 bytes |
 * | version | uint32 (2 or 3; v1 used 32-bit counts and is not read) |
 * | tensor_count, metadata_kv_count | uint64 each |
 * | metadata: key (string), value_type (uint32), value | × metadata_kv_count |
 * | tensor infos: name (string), n_dims (uint32), ne[n_dims] (uint64), type (uint32), offset (uint64) | × tensor_count |
 * | padding to `general.alignment` (default 32), then the tensor data | |
 *
 * A string is a uint64 byte length and UTF-8 bytes; an array is an element
 * type (uint32), a uint64 count and the elements. `ne[0]` is the contiguous
 * dimension, so a linear weight [out, in] row-major has ne = [in, out].
 *
 * RoPE: llama.cpp's convert_hf_to_gguf.py (`LlamaModel.permute`) undoes
 * Hugging Face's q/k permutation, and llama.cpp runs LLM_ARCH_LLAMA with
 * LLAMA_ROPE_TYPE_NORM (adjacent pairs), so GGUF llama tensors are already in
 * llama2.c's interleaved convention and are used as stored.
 *
 * Every count and length is checked against the bytes left in the file
 * before anything is allocated.
 *
 * @module
 */
import type { LayerWeights, LlamaConfig, LlamaWeights } from "./config.ts";
import { kvDim } from "./config.ts";
import { materializeWeights, type WeightSource } from "./weight_source.ts";
import {
  type ModelProto,
  ModelType,
  PieceType,
  SentencePieceTokenizer,
  TokenizerError,
} from "./sentencepiece.ts";
import {
  bf16ToF32,
  type ByteSource,
  checkFinite,
  f16ToF32,
  ModelFormatError,
  openReader,
} from "./tensor_file.ts";

/** "GGUF" as a little-endian uint32. */
export const GGUF_MAGIC = 0x46554747;
/** Alignment of the tensor data when `general.alignment` is absent. */
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** GGUF metadata value types. */
export const GgufType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;

/** A metadata value: numbers (64-bit ones as bigint when beyond 2^53), strings, typed arrays. */
export type GgufValue =
  | number
  | bigint
  | boolean
  | string
  | string[]
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array
  | BigUint64Array
  | BigInt64Array
  | GgufValue[];

/** ggml tensor types: name, elements per block, bytes per block (ggml.c `type_traits`). */
export const GGML_TYPES: Readonly<Record<number, { name: string; block: number; bytes: number }>> =
  {
    0: { name: "F32", block: 1, bytes: 4 },
    1: { name: "F16", block: 1, bytes: 2 },
    2: { name: "Q4_0", block: 32, bytes: 18 },
    3: { name: "Q4_1", block: 32, bytes: 20 },
    6: { name: "Q5_0", block: 32, bytes: 22 },
    7: { name: "Q5_1", block: 32, bytes: 24 },
    8: { name: "Q8_0", block: 32, bytes: 34 },
    9: { name: "Q8_1", block: 32, bytes: 36 },
    10: { name: "Q2_K", block: 256, bytes: 84 },
    11: { name: "Q3_K", block: 256, bytes: 110 },
    12: { name: "Q4_K", block: 256, bytes: 144 },
    13: { name: "Q5_K", block: 256, bytes: 176 },
    14: { name: "Q6_K", block: 256, bytes: 210 },
    15: { name: "Q8_K", block: 256, bytes: 292 },
    16: { name: "IQ2_XXS", block: 256, bytes: 66 },
    17: { name: "IQ2_XS", block: 256, bytes: 74 },
    18: { name: "IQ3_XXS", block: 256, bytes: 98 },
    19: { name: "IQ1_S", block: 256, bytes: 50 },
    20: { name: "IQ4_NL", block: 32, bytes: 18 },
    21: { name: "IQ3_S", block: 256, bytes: 110 },
    22: { name: "IQ2_S", block: 256, bytes: 82 },
    23: { name: "IQ4_XS", block: 256, bytes: 136 },
    24: { name: "I8", block: 1, bytes: 1 },
    25: { name: "I16", block: 1, bytes: 2 },
    26: { name: "I32", block: 1, bytes: 4 },
    27: { name: "I64", block: 1, bytes: 8 },
    28: { name: "F64", block: 1, bytes: 8 },
    29: { name: "IQ1_M", block: 256, bytes: 56 },
    30: { name: "BF16", block: 1, bytes: 2 },
    34: { name: "TQ1_0", block: 256, bytes: 54 },
    35: { name: "TQ2_0", block: 256, bytes: 66 },
    39: { name: "MXFP4", block: 32, bytes: 17 },
  };

/** The ggml types {@linkcode GgufFile.read} dequantizes. */
export const GGUF_READABLE_TYPES: readonly string[] = ["F32", "F16", "BF16", "Q8_0"];

/** One tensor info. */
export interface GgufTensorInfo {
  name: string;
  /** ggml's ne: ne[0] is the contiguous dimension. */
  ne: number[];
  /** ggml type id (a key of {@linkcode GGML_TYPES}). */
  type: number;
  /** Absolute byte offset in the file. */
  begin: number;
  /** Bytes of data. */
  bytes: number;
}

/** A parsed GGUF header. */
export interface GgufHeader {
  version: number;
  metadata: Map<string, GgufValue>;
  tensors: Map<string, GgufTensorInfo>;
  alignment: number;
  /** Absolute offset of the tensor data. */
  dataStart: number;
}

/** Largest nesting of arrays in metadata that is read. */
const MAX_ARRAY_DEPTH = 4;
/** ggml's GGML_MAX_DIMS. */
const MAX_DIMS = 4;
/** Bytes read from the file at a time while parsing the header. */
const WINDOW = 1 << 20;

/** Sequential reads over a ByteSource, through a window of at most {@linkcode WINDOW} bytes. */
class Cursor {
  pos = 0;
  #win = new Uint8Array(0);
  #winStart = 0;
  constructor(readonly src: ByteSource, readonly fail: (msg: string) => never) {}

  get left(): number {
    return this.src.size - this.pos;
  }

  bytes(n: number, what: string): Uint8Array {
    if (n > this.left) {
      this.fail(
        `truncated: ${what} needs ${n} bytes at offset ${this.pos}, file has ${this.src.size}`,
      );
    }
    const off = this.pos - this.#winStart;
    if (off < 0 || off + n > this.#win.length) {
      if (n > WINDOW) {
        const out = this.src.read(this.pos, n);
        this.pos += n;
        return out;
      }
      this.#win = this.src.read(this.pos, Math.min(WINDOW, this.left));
      this.#winStart = this.pos;
    }
    const start = this.pos - this.#winStart;
    this.pos += n;
    return this.#win.subarray(start, start + n);
  }

  view(n: number, what: string): DataView {
    const b = this.bytes(n, what);
    return new DataView(b.buffer, b.byteOffset, n);
  }

  u32(what: string): number {
    return this.view(4, what).getUint32(0, true);
  }

  /** A uint64 that must fit a JS number exactly (counts, lengths, sizes). */
  u64(what: string): number {
    const v = this.view(8, what).getBigUint64(0, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} is ${v}, too large`);
    return Number(v);
  }

  string(what: string): string {
    const n = this.u64(`${what} length`);
    return new TextDecoder().decode(this.bytes(n, what));
  }
}

/** Bytes per element of the fixed-size metadata types. */
const SCALAR_BYTES: Record<number, number> = {
  0: 1,
  1: 1,
  2: 2,
  3: 2,
  4: 4,
  5: 4,
  6: 4,
  7: 1,
  10: 8,
  11: 8,
  12: 8,
};

function readValue(c: Cursor, type: number, what: string, depth = 0): GgufValue {
  const view = (n: number) => c.view(n, what);
  switch (type) {
    case GgufType.UINT8:
      return view(1).getUint8(0);
    case GgufType.INT8:
      return view(1).getInt8(0);
    case GgufType.UINT16:
      return view(2).getUint16(0, true);
    case GgufType.INT16:
      return view(2).getInt16(0, true);
    case GgufType.UINT32:
      return view(4).getUint32(0, true);
    case GgufType.INT32:
      return view(4).getInt32(0, true);
    case GgufType.FLOAT32:
      return view(4).getFloat32(0, true);
    case GgufType.BOOL: {
      const b = view(1).getUint8(0);
      if (b > 1) c.fail(`${what} is a bool of value ${b}`);
      return b === 1;
    }
    case GgufType.STRING:
      return c.string(what);
    case GgufType.UINT64:
    case GgufType.INT64: {
      const v = type === GgufType.UINT64
        ? view(8).getBigUint64(0, true)
        : view(8).getBigInt64(0, true);
      return v >= -BigInt(Number.MAX_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
        ? Number(v)
        : v;
    }
    case GgufType.FLOAT64:
      return view(8).getFloat64(0, true);
    case GgufType.ARRAY: {
      const et = c.u32(`${what} element type`);
      const n = c.u64(`${what} count`);
      if (et === GgufType.ARRAY && depth >= MAX_ARRAY_DEPTH) {
        c.fail(`${what} nests arrays deeper than ${MAX_ARRAY_DEPTH}`);
      }
      const min = SCALAR_BYTES[et] ?? (et === GgufType.STRING ? 8 : et === GgufType.ARRAY ? 12 : 0);
      if (min === 0) c.fail(`${what} has unknown element type ${et}`);
      if (n * min > c.left) {
        c.fail(`${what} claims ${n} elements, at least ${n * min} bytes, file has ${c.left} left`);
      }
      if (et in SCALAR_BYTES && et !== GgufType.BOOL) {
        const raw = c.bytes(n * min, what).slice();
        const ctor = {
          0: Uint8Array,
          1: Int8Array,
          2: Uint16Array,
          3: Int16Array,
          4: Uint32Array,
          5: Int32Array,
          6: Float32Array,
          10: BigUint64Array,
          11: BigInt64Array,
          12: Float64Array,
        }[et]!;
        return new ctor(raw.buffer, 0, n);
      }
      const out: GgufValue[] = [];
      for (let i = 0; i < n; i++) out.push(readValue(c, et, `${what}[${i}]`, depth + 1));
      return et === GgufType.STRING ? out as string[] : out;
    }
    default:
      return c.fail(`${what} has unknown value type ${type}`);
  }
}

/**
 * Parses and validates a GGUF header: metadata, tensor infos, alignment and
 * the tensor data's extent.
 *
 * @param src the file
 * @returns the header with absolute tensor offsets
 * @throws {ModelFormatError} naming the file and the first thing wrong
 */
export function parseGgufHeader(src: ByteSource): GgufHeader {
  const fail = (msg: string): never => {
    throw new ModelFormatError(`Cannot parse GGUF file ${src.path}: ${msg}`);
  };
  const c = new Cursor(src, fail);
  if (src.size < 24) fail(`file has ${src.size} bytes, too short for a GGUF header (24)`);
  if (c.u32("magic") !== GGUF_MAGIC) fail(`no "GGUF" magic: not a GGUF file`);
  const version = c.u32("version");
  if (version !== 2 && version !== 3) {
    fail(`version ${version} is not supported (only 2 and 3)`);
  }
  const nTensors = c.u64("tensor_count");
  const nKv = c.u64("metadata_kv_count");
  // A key-value pair takes ≥ 13 bytes, a tensor info ≥ 24.
  if (nKv * 13 + nTensors * 24 > c.left) {
    fail(
      `header claims ${nKv} metadata entries and ${nTensors} tensors, more than the ` +
        `${c.left} bytes left can hold`,
    );
  }
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < nKv; i++) {
    const key = c.string(`metadata key ${i}`);
    if (metadata.has(key)) fail(`metadata key "${key}" appears twice`);
    const type = c.u32(`type of metadata "${key}"`);
    metadata.set(key, readValue(c, type, `metadata "${key}"`));
  }
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  if (metadata.has("general.alignment")) {
    const a = metadata.get("general.alignment");
    if (typeof a !== "number" || !Number.isInteger(a) || a <= 0 || (a & (a - 1)) !== 0) {
      fail(`general.alignment is ${String(a)}, expected a power of two`);
    }
    alignment = a as number;
  }
  const infos: GgufTensorInfo[] = [];
  const names = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const name = c.string(`tensor ${i} name`);
    if (names.has(name)) fail(`tensor "${name}" appears twice`);
    names.add(name);
    const nDims = c.u32(`tensor "${name}" n_dims`);
    if (nDims > MAX_DIMS) fail(`tensor "${name}" has ${nDims} dimensions, at most ${MAX_DIMS}`);
    const ne: number[] = [];
    for (let d = 0; d < nDims; d++) ne.push(c.u64(`tensor "${name}" ne[${d}]`));
    const type = c.u32(`tensor "${name}" type`);
    const offset = c.u64(`tensor "${name}" offset`);
    const t = GGML_TYPES[type];
    if (!t) fail(`tensor "${name}" has unknown ggml type ${type}`);
    const ne0 = nDims > 0 ? ne[0] : 1; // a 0-d tensor holds one element
    if (ne0 % t.block !== 0) {
      fail(`tensor "${name}" ${t.name}: ne[0] = ${ne0} is not a multiple of the block ${t.block}`);
    }
    let numel = ne.includes(0) ? 0 : 1;
    for (const d of ne) {
      if (numel > src.size * t.block) break; // cannot fit; stop before the product is inexact
      numel *= d;
    }
    const bytes = (numel / t.block) * t.bytes;
    if (offset % alignment !== 0) {
      fail(`tensor "${name}" offset ${offset} is not a multiple of the alignment ${alignment}`);
    }
    infos.push({ name, ne, type, begin: offset, bytes });
  }
  const dataStart = Math.ceil(c.pos / alignment) * alignment;
  const dataSize = src.size - dataStart;
  const sorted = [...infos].sort((a, b) => a.begin - b.begin);
  let end = 0;
  let last: GgufTensorInfo | undefined;
  for (const t of sorted) {
    if (t.begin + t.bytes > dataSize) {
      fail(
        `tensor "${t.name}" (${GGML_TYPES[t.type].name} [${t.ne}]) needs data bytes ` +
          `${t.begin}..${t.begin + t.bytes}, the file has ${
            Math.max(dataSize, 0)
          } after the header`,
      );
    }
    if (t.begin < end && t.bytes > 0) {
      fail(
        `tensor "${t.name}" (data bytes ${t.begin}..${t.begin + t.bytes}) overlaps "${last!.name}"`,
      );
    }
    if (t.bytes > 0) {
      end = t.begin + t.bytes;
      last = t;
    }
    t.begin += dataStart;
  }
  return {
    version,
    metadata,
    tensors: new Map(infos.map((t) => [t.name, t])),
    alignment,
    dataStart,
  };
}

/**
 * Dequantizes Q8_0 blocks (ggml `dequantize_row_q8_0`): each block of 34
 * bytes is an f16 scale d and 32 int8 q, giving d · q.
 *
 * @param bytes `[nBlocks · 34]` raw blocks
 * @returns `[nBlocks · 32]` values
 */
export function dequantizeQ8_0(bytes: Uint8Array): Float32Array {
  const nb = bytes.length / 34;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const scales = new Uint16Array(nb);
  for (let b = 0; b < nb; b++) scales[b] = view.getUint16(b * 34, true);
  const d = f16ToF32(scales);
  const out = new Float32Array(nb * 32);
  for (let b = 0; b < nb; b++) {
    for (let j = 0; j < 32; j++) out[b * 32 + j] = d[b] * view.getInt8(b * 34 + 2 + j);
  }
  return out;
}

/**
 * An open GGUF file.
 *
 * @example
 * ```ts
 * using g = GgufFile.open("stories260K.gguf");
 * g.header.metadata.get("general.architecture"); // "llama"
 * const emb = g.read("token_embd.weight");
 * ```
 */
export class GgufFile implements Disposable {
  /** Metadata and tensor infos. */
  readonly header: GgufHeader;

  /**
   * @param src an open source, owned (disposed) by this object from now on
   * @throws {ModelFormatError} for a malformed header
   */
  constructor(readonly src: ByteSource) {
    this.header = parseGgufHeader(src);
  }

  /**
   * Opens `path` and reads its header (not its tensors).
   *
   * @param path the file
   * @returns the open file (dispose it)
   * @throws {ModelFormatError} when it is missing or malformed
   */
  static open(path: string): GgufFile {
    return openReader(path, (src) => new GgufFile(src));
  }

  /** The file name. */
  get path(): string {
    return this.src.path;
  }

  /**
   * Reads one tensor (only its bytes) as float32.
   *
   * @param name tensor name
   * @returns `[numel]` values, ne[0] fastest
   * @throws {ModelFormatError} when absent or of a type other than F32/F16/BF16/Q8_0
   */
  read(name: string): Float32Array {
    const t = this.header.tensors.get(name);
    if (!t) throw new ModelFormatError(`No tensor "${name}" in ${this.path}`);
    const type = GGML_TYPES[t.type].name;
    if (!GGUF_READABLE_TYPES.includes(type)) {
      throw new ModelFormatError(
        `Unsupported tensor type ${type} in ${this.path} (tensor "${name}"; supported: ` +
          `${GGUF_READABLE_TYPES.join(", ")})`,
      );
    }
    const raw = this.src.read(t.begin, t.bytes);
    if (type === "F32") return new Float32Array(raw.buffer, 0, t.bytes / 4);
    if (type === "Q8_0") return dequantizeQ8_0(raw);
    const half = new Uint16Array(raw.buffer, 0, t.bytes / 2);
    return type === "F16" ? f16ToF32(half) : bf16ToF32(half);
  }

  [Symbol.dispose](): void {
    this.src[Symbol.dispose]();
  }
}

/**
 * The llama architecture's hyper-parameters from GGUF metadata.
 *
 * @param g the open file
 * @returns the config (sharedClassifier when there is no `output.weight`)
 * @throws {ModelFormatError} for another architecture, a missing / invalid key, RoPE
 *   scaling, or a tensor the forward pass would not read (RoPE frequency factors, biases,
 *   experts: the model's numbers would be wrong)
 */
export function ggufLlamaConfig(g: GgufFile): LlamaConfig {
  const md = g.header.metadata;
  const fail = (msg: string): never => {
    throw new ModelFormatError(`Cannot use GGUF file ${g.path}: ${msg}`);
  };
  const arch = md.get("general.architecture");
  if (arch !== "llama") {
    fail(`general.architecture is ${JSON.stringify(arch)}, only "llama" is supported`);
  }
  const int = (key: string, fallback?: number): number => {
    const v = md.get(key) ?? fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0 || v > 2 ** 31) {
      fail(`${key} is ${String(md.get(key))}, expected a positive integer`);
    }
    return v as number;
  };
  const num = (key: string, fallback: number): number => {
    const v = md.get(key) ?? fallback;
    if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
      fail(`${key} is ${String(md.get(key))}, expected a positive number`);
    }
    return v as number;
  };
  const dim = int("llama.embedding_length");
  const nHeads = int("llama.attention.head_count");
  const nKvHeads = int("llama.attention.head_count_kv", nHeads);
  if (dim % nHeads !== 0 || (dim / nHeads) % 2 !== 0) {
    fail(`embedding_length ${dim} / head_count ${nHeads} is not an even head size`);
  }
  if (nKvHeads > nHeads || nHeads % nKvHeads !== 0) {
    fail(`head_count ${nHeads} is not a multiple of head_count_kv ${nKvHeads}`);
  }
  const ropeDims = md.get("llama.rope.dimension_count");
  if (ropeDims !== undefined && ropeDims !== dim / nHeads) {
    fail(`llama.rope.dimension_count ${ropeDims} is not the head size ${dim / nHeads}`);
  }
  const scaling = md.get("llama.rope.scaling.type");
  if (scaling !== undefined && scaling !== "none") {
    fail(`llama.rope.scaling.type ${JSON.stringify(scaling)} is not supported`);
  }
  const nLayers = int("llama.block_count");
  for (const name of g.header.tensors.keys()) {
    const why = unusedTensor(name, nLayers);
    if (why) fail(`tensor "${name}" ${why}`);
  }
  const emb = g.header.tensors.get("token_embd.weight");
  const vocab = md.get("llama.vocab_size") ?? emb?.ne[1] ??
    (md.get("tokenizer.ggml.tokens") as string[] | undefined)?.length;
  if (typeof vocab !== "number" || !Number.isInteger(vocab) || vocab <= 0) {
    fail(`cannot tell the vocabulary size (no llama.vocab_size, no token_embd.weight)`);
  }
  return {
    dim,
    hiddenDim: int("llama.feed_forward_length"),
    nLayers,
    nHeads,
    nKvHeads,
    vocabSize: vocab as number,
    maxSeqLen: int("llama.context_length", 2048),
    sharedClassifier: !g.header.tensors.has("output.weight"),
    normEps: num("llama.attention.layer_norm_rms_epsilon", 1e-5),
    ropeTheta: num("llama.rope.freq_base", 10000),
  };
}

/** The tensors of a llama GGUF file that the forward pass reads, inside a block. */
const BLOCK_TENSOR =
  /^blk\.(\d+)\.(attn_norm|attn_q|attn_k|attn_v|attn_output|ffn_norm|ffn_gate|ffn_up|ffn_down)\.weight$/;

/**
 * Why the forward pass cannot run a llama GGUF file that holds tensor
 * `name`, or null when it reads it. A tensor it would not read changes the
 * model's outputs in llama.cpp, so ignoring it would give wrong numbers:
 * `rope_freqs.weight` (the RoPE frequency factors that llama.cpp's
 * convert_hf_to_gguf.py writes for LLaMA 3.1's `rope_scaling` instead of a
 * `llama.rope.scaling.type`), biases, a mixture of experts' tensors.
 */
function unusedTensor(name: string, nLayers: number): string | null {
  if (name === "token_embd.weight" || name === "output_norm.weight" || name === "output.weight") {
    return null;
  }
  const m = BLOCK_TENSOR.exec(name);
  if (m) {
    return Number(m[1]) < nLayers
      ? null
      : `belongs to block ${m[1]}, but llama.block_count is ${nLayers}`;
  }
  if (name === "rope_freqs.weight") {
    return "holds RoPE frequency factors (LLaMA 3.1's rope_scaling as llama.cpp's " +
      "convert_hf_to_gguf.py writes it), which the forward pass does not apply";
  }
  if (name.endsWith(".bias")) return "is a bias, and the forward pass has none";
  if (/_exps\.|_inp\./.test(name)) {
    return "belongs to a mixture of experts, which the forward pass does not run";
  }
  return "is not one of a LLaMA model's tensors (token_embd, output_norm, output, " +
    "blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,ffn_norm,ffn_gate,ffn_up,ffn_down}.weight), " +
    "and the forward pass would ignore it";
}

/**
 * Reads one tensor, checking its ne against `ne` and its values for NaN/Inf.
 *
 * @param g the open file
 * @param name tensor name
 * @param ne expected ggml dims (ne[0] fastest)
 * @returns `[numel]` float32 values
 * @throws {ModelFormatError} for a missing tensor, other dims, an unsupported type or a
 *   non-finite value
 */
export function ggufTensor(g: GgufFile, name: string, ne: readonly number[]): Float32Array {
  const t = g.header.tensors.get(name);
  if (!t) throw new ModelFormatError(`Missing tensor "${name}" in ${g.path}`);
  if (t.ne.length !== ne.length || t.ne.some((d, i) => d !== ne[i])) {
    throw new ModelFormatError(
      `Tensor "${name}" in ${g.path} has ne [${t.ne}], the metadata implies [${ne}]`,
    );
  }
  const x = g.read(name);
  checkFinite(x, `Tensor "${name}" in ${g.path}`);
  return x;
}

/**
 * The weights of block `l` (only that block's tensors are read).
 *
 * @param g the open file
 * @param config its config ({@linkcode ggufLlamaConfig})
 * @param l block index
 * @returns the block's fp32 weights, q/k as stored (interleaved RoPE order)
 */
export function ggufLayerWeights(g: GgufFile, config: LlamaConfig, l: number): LayerWeights {
  const { dim, hiddenDim } = config;
  const kv = kvDim(config);
  const p = `blk.${l}.`;
  const read = (name: string, ne: number[]) => ggufTensor(g, p + name, ne);
  return {
    attnNorm: read("attn_norm.weight", [dim]),
    wq: read("attn_q.weight", [dim, dim]),
    wk: read("attn_k.weight", [dim, kv]),
    wv: read("attn_v.weight", [dim, kv]),
    wo: read("attn_output.weight", [dim, dim]),
    ffnNorm: read("ffn_norm.weight", [dim]),
    w1: read("ffn_gate.weight", [dim, hiddenDim]),
    w2: read("ffn_down.weight", [hiddenDim, dim]),
    w3: read("ffn_up.weight", [dim, hiddenDim]),
  };
}

/**
 * fp32 weights of a llama GGUF file (q/k used as stored: see the module doc).
 *
 * @param g the open file
 * @param config its config ({@linkcode ggufLlamaConfig})
 * @returns the weights
 * @throws {ModelFormatError} for a missing tensor, a wrong shape, an unsupported type
 *   or a non-finite value
 */
export function ggufLlamaWeights(g: GgufFile, config: LlamaConfig): LlamaWeights {
  return materializeWeights(ggufWeightSource(g, config, () => {}));
}

/**
 * The block-by-block view (model/weight_source.ts) of an open GGUF file.
 *
 * @param g the open file
 * @param config its config
 * @param dispose what disposing the source does
 */
function ggufWeightSource(g: GgufFile, config: LlamaConfig, dispose: () => void): WeightSource {
  const { dim, vocabSize } = config;
  return {
    config,
    path: g.path,
    layer: (l) => ggufLayerWeights(g, config, l),
    tokenEmbedding: () => ggufTensor(g, "token_embd.weight", [dim, vocabSize]),
    finalNorm: () => ggufTensor(g, "output_norm.weight", [dim]),
    classifier: () =>
      config.sharedClassifier ? undefined : ggufTensor(g, "output.weight", [dim, vocabSize]),
    [Symbol.dispose]: dispose,
  };
}

/**
 * The tokenizer stored in GGUF metadata (`tokenizer.ggml.model` = "llama":
 * tokens, scores, token_type, bos/eos/unk ids, add_space_prefix,
 * remove_extra_whitespaces) as a SentencePiece BPE tokenizer; undefined when
 * the file has no tokenizer.
 *
 * @param g the open file
 * @returns the tokenizer, or undefined
 * @throws {ModelFormatError} for another tokenizer model or inconsistent arrays
 */
export function ggufTokenizer(g: GgufFile): SentencePieceTokenizer | undefined {
  const md = g.header.metadata;
  const fail = (msg: string): never => {
    throw new ModelFormatError(`Cannot use the tokenizer in GGUF file ${g.path}: ${msg}`);
  };
  const model = md.get("tokenizer.ggml.model");
  if (model === undefined) return undefined;
  if (model !== "llama") {
    fail(
      `tokenizer.ggml.model is ${JSON.stringify(model)}, only "llama" (SentencePiece) is supported`,
    );
  }
  const tokens = md.get("tokenizer.ggml.tokens");
  if (!Array.isArray(tokens) || !tokens.every((t) => typeof t === "string")) {
    return fail("tokenizer.ggml.tokens is not an array of strings");
  }
  const n = tokens.length;
  const scores = md.get("tokenizer.ggml.scores") ?? new Float32Array(n);
  const types = md.get("tokenizer.ggml.token_type") ?? new Int32Array(n).fill(PieceType.NORMAL);
  if (!(scores instanceof Float32Array) || scores.length !== n) {
    fail(`tokenizer.ggml.scores is not ${n} float32 values`);
  }
  if (!(types instanceof Int32Array) || types.length !== n) {
    fail(`tokenizer.ggml.token_type is not ${n} int32 values`);
  }
  const id = (key: string, fallback: number): number => {
    const v = md.get(key) ?? fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= n) {
      fail(`${key} is ${String(md.get(key))}, expected a token id below ${n}`);
    }
    return v as number;
  };
  const unk = id("tokenizer.ggml.unknown_token_id", 0);
  const bos = id("tokenizer.ggml.bos_token_id", 1);
  const eos = id("tokenizer.ggml.eos_token_id", 2);
  const flag = (key: string, fallback: boolean): boolean => {
    const v = md.get(key) ?? fallback;
    if (typeof v !== "boolean") fail(`${key} is ${String(v)}, expected a bool`);
    return v as boolean;
  };
  const ty = types as Int32Array;
  const proto: ModelProto = {
    pieces: (tokens as string[]).map((piece, i) => ({
      piece,
      score: (scores as Float32Array)[i],
      type: ty[i],
    })),
    trainerSpec: {
      modelType: ModelType.BPE,
      vocabSize: n,
      treatWhitespaceAsSuffix: false,
      byteFallback: ty.includes(PieceType.BYTE),
      unkId: unk,
      bosId: bos,
      eosId: eos,
      padId: -1,
      unkSurface: undefined,
      unkPiece: tokens[unk] as string,
      bosPiece: tokens[bos] as string,
      eosPiece: tokens[eos] as string,
      padPiece: "<pad>",
    },
    normalizerSpec: {
      name: "identity",
      precompiledCharsmap: new Uint8Array(0),
      addDummyPrefix: flag("tokenizer.ggml.add_space_prefix", true),
      removeExtraWhitespaces: flag("tokenizer.ggml.remove_extra_whitespaces", false),
      escapeWhitespaces: true,
    },
    denormalizerSpec: undefined,
  };
  try {
    return new SentencePieceTokenizer(proto, { source: g.path });
  } catch (e) {
    if (e instanceof TokenizerError) fail(e.message);
    throw e;
  }
}

/** An open llama GGUF file whose weights are read block by block. */
export interface GgufWeightSource extends WeightSource {
  tokenizer: SentencePieceTokenizer | undefined;
  /** All metadata, as read. */
  metadata: Map<string, GgufValue>;
  version: number;
}

/**
 * Opens a llama GGUF file for block-by-block reads (model/weight_source.ts):
 * header, config and tokenizer now, tensors when asked for.
 *
 * @param path the file
 * @returns the open source (dispose it)
 * @throws {ModelFormatError} naming the file and what is wrong
 * @example
 * ```ts
 * using src = openGgufWeights("stories260K-f16.gguf");
 * const block0 = src.layer(0);
 * ```
 */
export function openGgufWeights(path: string): GgufWeightSource {
  const g = GgufFile.open(path);
  try {
    const config = ggufLlamaConfig(g);
    const tokenizer = ggufTokenizer(g);
    if (tokenizer && tokenizer.vocabSize > config.vocabSize) {
      throw new ModelFormatError(
        `GGUF file ${path}: the tokenizer has ${tokenizer.vocabSize} tokens, the model ${config.vocabSize}`,
      );
    }
    return {
      ...ggufWeightSource(g, config, () => g[Symbol.dispose]()),
      tokenizer,
      metadata: g.header.metadata,
      version: g.header.version,
    };
  } catch (e) {
    g[Symbol.dispose]();
    throw e;
  }
}

/** A loaded GGUF model. */
export interface GgufModel {
  config: LlamaConfig;
  weights: LlamaWeights;
  tokenizer: SentencePieceTokenizer | undefined;
  /** All metadata, as read. */
  metadata: Map<string, GgufValue>;
  version: number;
}

/**
 * Loads a llama GGUF file: config, fp32 weights, tokenizer.
 *
 * @param path the file
 * @returns the model
 * @throws {ModelFormatError} naming the file and what is wrong (e.g.
 *   "Unsupported tensor type Q4_K in FILE")
 * @example
 * ```ts
 * const { weights, tokenizer } = loadGgufModel("stories260K-f16.gguf");
 * ```
 */
export function loadGgufModel(path: string): GgufModel {
  using src = openGgufWeights(path);
  const { config, tokenizer, metadata, version } = src;
  return { config, weights: materializeWeights(src), tokenizer, metadata, version };
}
