/**
 * Safetensors files (huggingface/safetensors), single or sharded, read
 * tensor by tensor.
 *
 * Layout: a little-endian uint64 N, then N bytes of UTF-8 JSON, then the data
 * section. The JSON maps each tensor name to
 * `{"dtype": "F16", "shape": [rows, cols], "data_offsets": [begin, end]}`
 * (offsets relative to the data section) and may hold a `__metadata__`
 * object of strings. A sharded checkpoint adds `model.safetensors.index.json`:
 * `{"metadata": {...}, "weight_map": {"tensor name": "model-00001-of-00002.safetensors"}}`.
 *
 * The header is checked as strictly as the reference implementation does:
 * N ≤ 100 MB and within the file, a JSON object, known dtypes, shape × dtype
 * size = byte span, every span inside the data section and the spans tiling
 * it with no overlap and no hole. Only F32, F16 and BF16 tensors can be read
 * (as float32); another dtype is an error when that tensor is asked for.
 *
 * @module
 */
import {
  bf16ToF32,
  type ByteSource,
  f16ToF32,
  ModelFormatError,
  openReader,
} from "./tensor_file.ts";

/** The reference implementation's limit on the JSON header (100 MB). */
export const MAX_SAFETENSORS_HEADER = 100_000_000;

/** Bytes per element of every safetensors dtype. */
export const SAFETENSORS_DTYPE_BYTES: Readonly<Record<string, number>> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
};

/** The dtypes {@linkcode SafetensorsFile.read} converts to float32. */
export const READABLE_DTYPES: readonly string[] = ["F32", "F16", "BF16"];

/** One tensor of a safetensors header. */
export interface SafetensorsTensor {
  name: string;
  /** A key of {@linkcode SAFETENSORS_DTYPE_BYTES}. */
  dtype: string;
  shape: number[];
  /** Absolute byte offsets in the file: [begin, end). */
  begin: number;
  end: number;
}

/** A parsed, validated safetensors header. */
export interface SafetensorsHeader {
  /** Tensors by name, in file order. */
  tensors: Map<string, SafetensorsTensor>;
  /** The `__metadata__` strings (empty when absent). */
  metadata: Record<string, string>;
  /** Absolute offset of the data section (8 + N). */
  dataStart: number;
}

/**
 * Parses and validates the header of a safetensors file.
 *
 * @param src the file (only the first 8 + N bytes are read)
 * @returns tensors with absolute offsets, and the metadata
 * @throws {ModelFormatError} naming the file and the first thing wrong
 */
export function parseSafetensorsHeader(src: ByteSource): SafetensorsHeader {
  const fail = (msg: string): never => {
    throw new ModelFormatError(`Cannot parse safetensors file ${src.path}: ${msg}`);
  };
  if (src.size < 8) fail(`file has ${src.size} bytes, too short for the 8-byte header length`);
  const n = new DataView(src.read(0, 8).buffer).getBigUint64(0, true);
  if (n > BigInt(MAX_SAFETENSORS_HEADER)) {
    fail(`header claims ${n} bytes, more than the ${MAX_SAFETENSORS_HEADER}-byte limit`);
  }
  const headerBytes = Number(n);
  if (8 + headerBytes > src.size) {
    fail(`header claims ${headerBytes} bytes, file has ${src.size - 8} after the length`);
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(src.read(8, headerBytes)));
  } catch (e) {
    fail(`header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (!isObject(json)) fail("header is not a JSON object");
  const dataStart = 8 + headerBytes;
  const dataSize = src.size - dataStart;
  const metadata: Record<string, string> = {};
  const tensors: SafetensorsTensor[] = [];
  for (const [name, v] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (!isObject(v)) fail(`__metadata__ is not an object`);
      for (const [k, s] of Object.entries(v as Record<string, unknown>)) {
        if (typeof s !== "string") fail(`__metadata__.${k} is not a string`);
        metadata[k] = s as string;
      }
      continue;
    }
    if (!isObject(v)) fail(`entry "${name}" is not an object`);
    const { dtype, shape, data_offsets: offs } = v as Record<string, unknown>;
    if (typeof dtype !== "string" || !(dtype in SAFETENSORS_DTYPE_BYTES)) {
      fail(`tensor "${name}" has unknown dtype ${JSON.stringify(dtype)}`);
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(`tensor "${name}" has shape ${JSON.stringify(shape)}, expected non-negative integers`);
    }
    if (
      !Array.isArray(offs) || offs.length !== 2 ||
      !offs.every((o) => Number.isSafeInteger(o) && o >= 0) || offs[0] > offs[1]
    ) {
      fail(`tensor "${name}" has data_offsets ${JSON.stringify(offs)}, expected [begin, end]`);
    }
    const [b, e] = offs as number[];
    if (e > dataSize) {
      fail(
        `tensor "${name}" spans data bytes ${b}..${e}, the data section has ${dataSize} bytes`,
      );
    }
    let numel = (shape as number[]).includes(0) ? 0 : 1;
    for (const d of shape as number[]) {
      if (numel > dataSize) break; // cannot fit (and the product stays exact)
      numel *= d;
    }
    const want = numel * SAFETENSORS_DTYPE_BYTES[dtype as string];
    if (want !== e - b) {
      fail(
        `tensor "${name}" of shape [${shape}] ${dtype} needs ${want} bytes, ` +
          `data_offsets span ${e - b}`,
      );
    }
    tensors.push({
      name,
      dtype: dtype as string,
      shape: shape as number[],
      begin: dataStart + b,
      end: dataStart + e,
    });
  }
  // The spans must tile the data section: sorted, each starting where the last ended.
  const sorted = [...tensors].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = dataStart;
  let last: SafetensorsTensor | undefined;
  for (const t of sorted) {
    if (t.begin < at) {
      fail(
        `tensor "${t.name}" (data bytes ${t.begin - dataStart}..${t.end - dataStart}) overlaps ` +
          `tensor "${last!.name}" (data bytes ${last!.begin - dataStart}..${
            last!.end - dataStart
          })`,
      );
    }
    if (t.begin > at) {
      fail(`data bytes ${at - dataStart}..${t.begin - dataStart} belong to no tensor`);
    }
    at = t.end;
    last = t;
  }
  if (at !== src.size) {
    fail(`data bytes ${at - dataStart}..${dataSize} belong to no tensor`);
  }
  return { tensors: new Map(tensors.map((t) => [t.name, t])), metadata, dataStart };
}

/**
 * Converts the raw bytes of an F32, F16 or BF16 tensor to float32.
 *
 * @param bytes little-endian data in a buffer of its own (offset 0)
 * @param dtype "F32", "F16" or "BF16"
 * @returns `[bytes / size(dtype)]` values
 */
export function decodeFloats(bytes: Uint8Array<ArrayBuffer>, dtype: string): Float32Array {
  if (bytes.byteOffset !== 0) bytes = bytes.slice();
  if (dtype === "F32") return new Float32Array(bytes.buffer, 0, bytes.length / 4);
  const half = new Uint16Array(bytes.buffer, 0, bytes.length / 2);
  return dtype === "F16" ? f16ToF32(half) : bf16ToF32(half);
}

/**
 * One open safetensors file.
 *
 * @example
 * ```ts
 * using st = SafetensorsFile.open("model.safetensors");
 * const w = st.read("model.norm.weight"); // Float32Array
 * ```
 */
export class SafetensorsFile implements Disposable {
  /** Tensors by name. */
  readonly tensors: Map<string, SafetensorsTensor>;
  /** The `__metadata__` strings. */
  readonly metadata: Record<string, string>;

  /**
   * @param src an open source, owned (disposed) by this object from now on
   * @throws {ModelFormatError} for a malformed header
   */
  constructor(readonly src: ByteSource) {
    const h = parseSafetensorsHeader(src);
    this.tensors = h.tensors;
    this.metadata = h.metadata;
  }

  /**
   * Opens and validates `path`; reads only its header.
   *
   * @param path the file
   * @returns the open file (dispose it)
   * @throws {ModelFormatError} when it is missing or malformed
   */
  static open(path: string): SafetensorsFile {
    return openReader(path, (src) => new SafetensorsFile(src));
  }

  /** The file name. */
  get path(): string {
    return this.src.path;
  }

  /**
   * Reads one tensor (only its bytes) as float32.
   *
   * @param name tensor name
   * @returns `[numel]` values, row-major as stored
   * @throws {ModelFormatError} for a missing tensor or a dtype other than F32/F16/BF16
   */
  read(name: string): Float32Array {
    const t = this.tensors.get(name);
    if (!t) throw new ModelFormatError(`No tensor "${name}" in ${this.path}`);
    if (!READABLE_DTYPES.includes(t.dtype)) {
      throw new ModelFormatError(
        `Unsupported dtype ${t.dtype} for tensor "${name}" in ${this.path} ` +
          `(supported: ${READABLE_DTYPES.join(", ")})`,
      );
    }
    return decodeFloats(this.readRaw(name).bytes, t.dtype);
  }

  /**
   * The stored bytes of one tensor, undecoded (any dtype), so that a caller
   * can keep 16-bit weights at 16 bits until they are used.
   *
   * @param name tensor name
   * @returns dtype, shape and the little-endian bytes (a buffer of their own)
   * @throws {ModelFormatError} when absent
   */
  readRaw(name: string): { dtype: string; shape: number[]; bytes: Uint8Array<ArrayBuffer> } {
    const t = this.tensors.get(name);
    if (!t) throw new ModelFormatError(`No tensor "${name}" in ${this.path}`);
    return { dtype: t.dtype, shape: t.shape, bytes: this.src.read(t.begin, t.end - t.begin) };
  }

  [Symbol.dispose](): void {
    this.src[Symbol.dispose]();
  }
}

/** The index file of a sharded checkpoint. */
export const SAFETENSORS_INDEX = "model.safetensors.index.json";

/**
 * Parses `model.safetensors.index.json`: tensor name → shard file name.
 *
 * @param text the file content
 * @param path its name, for messages
 * @returns the weight map
 * @throws {ModelFormatError} unless it is `{"weight_map": {name: "file.safetensors"}}`
 *   with plain file names (no folders, no "..")
 */
export function parseSafetensorsIndex(text: string, path: string): Map<string, string> {
  const fail = (msg: string): never => {
    throw new ModelFormatError(`Cannot parse safetensors index ${path}: ${msg}`);
  };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(`not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(json)) fail("not a JSON object");
  const wm = (json as Record<string, unknown>).weight_map;
  if (!isObject(wm)) fail(`no "weight_map" object`);
  const map = new Map<string, string>();
  for (const [name, file] of Object.entries(wm as Record<string, unknown>)) {
    if (typeof file !== "string" || !/^[^/\\]+\.safetensors$/.test(file) || file.startsWith(".")) {
      fail(`tensor "${name}" maps to ${JSON.stringify(file)}, expected a *.safetensors file name`);
    }
    map.set(name, file as string);
  }
  if (map.size === 0) fail("weight_map is empty");
  return map;
}

/**
 * The tensors of a Hugging Face checkpoint directory: `model.safetensors`, or
 * the shards named by `model.safetensors.index.json`. Shards are opened
 * (headers read) on construction and closed on dispose.
 *
 * @example
 * ```ts
 * using st = ShardedSafetensors.open("/models/llama-7b");
 * st.read("model.layers.0.self_attn.q_proj.weight");
 * ```
 */
export class ShardedSafetensors implements Disposable {
  readonly #files = new Map<string, SafetensorsFile>(); // shard name → file
  readonly #where = new Map<string, SafetensorsFile>(); // tensor name → file

  /**
   * @param dir the checkpoint folder
   * @param shards shard file names (relative to `dir`)
   * @param weightMap tensor → shard, when from an index (checked against the shards)
   */
  private constructor(readonly dir: string, shards: string[], weightMap?: Map<string, string>) {
    try {
      for (const s of shards) this.#files.set(s, SafetensorsFile.open(`${dir}/${s}`));
      for (const [shard, f] of this.#files) {
        for (const name of f.tensors.keys()) {
          const other = this.#where.get(name);
          if (other) {
            throw new ModelFormatError(
              `Tensor "${name}" is in both ${other.path} and ${f.path}`,
            );
          }
          if (weightMap && weightMap.get(name) !== shard) {
            throw new ModelFormatError(
              `Tensor "${name}" is in ${f.path}, but ${dir}/${SAFETENSORS_INDEX} ` +
                `puts it in ${weightMap.get(name) ?? "no shard"}`,
            );
          }
          this.#where.set(name, f);
        }
      }
      for (const [name, shard] of weightMap ?? []) {
        if (!this.#where.has(name)) {
          throw new ModelFormatError(
            `${dir}/${SAFETENSORS_INDEX} puts tensor "${name}" in ${shard}, which lacks it`,
          );
        }
      }
    } catch (e) {
      this[Symbol.dispose]();
      throw e;
    }
  }

  /**
   * Opens the safetensors of `dir`: the index and its shards when
   * `model.safetensors.index.json` exists, else `model.safetensors`.
   *
   * @param dir a Hugging Face checkpoint folder
   * @returns the open checkpoint (dispose it)
   * @throws {ModelFormatError} when neither exists or a file is malformed
   */
  static open(dir: string): ShardedSafetensors {
    const index = `${dir}/${SAFETENSORS_INDEX}`;
    let text: string | undefined;
    try {
      text = Deno.readTextFileSync(index);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) {
        throw new ModelFormatError(`Cannot read ${index}: ${(e as Error).message}`);
      }
    }
    if (text === undefined) {
      try {
        Deno.statSync(`${dir}/model.safetensors`);
      } catch {
        throw new ModelFormatError(
          `No weights in ${dir}: neither model.safetensors nor ${SAFETENSORS_INDEX} exists`,
        );
      }
      return new ShardedSafetensors(dir, ["model.safetensors"]);
    }
    const map = parseSafetensorsIndex(text, index);
    return new ShardedSafetensors(dir, [...new Set(map.values())].sort(), map);
  }

  /** Whether the checkpoint has tensor `name`. */
  has(name: string): boolean {
    return this.#where.has(name);
  }

  /** The header entry of `name`, or undefined. */
  info(name: string): SafetensorsTensor | undefined {
    return this.#where.get(name)?.tensors.get(name);
  }

  /** Every tensor name. */
  names(): string[] {
    return [...this.#where.keys()];
  }

  /**
   * Reads one tensor as float32 (only its bytes).
   *
   * @param name tensor name
   * @returns `[numel]` values
   * @throws {ModelFormatError} when absent or of an unsupported dtype
   */
  read(name: string): Float32Array {
    return this.#file(name).read(name);
  }

  /**
   * The stored bytes of one tensor, undecoded ({@linkcode SafetensorsFile.readRaw}).
   *
   * @param name tensor name
   * @returns dtype, shape and bytes
   * @throws {ModelFormatError} when absent
   */
  readRaw(name: string): { dtype: string; shape: number[]; bytes: Uint8Array<ArrayBuffer> } {
    return this.#file(name).readRaw(name);
  }

  #file(name: string): SafetensorsFile {
    const f = this.#where.get(name);
    if (!f) throw new ModelFormatError(`No tensor "${name}" in ${this.dir}`);
    return f;
  }

  [Symbol.dispose](): void {
    for (const f of this.#files.values()) f[Symbol.dispose]();
    this.#files.clear();
  }
}

function isObject(v: unknown): boolean {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** One tensor to write: name, dtype and shape (its bytes come later). */
export interface SafetensorsEntry {
  name: string;
  /** A key of {@linkcode SAFETENSORS_DTYPE_BYTES}. */
  dtype: string;
  shape: number[];
}

/**
 * Writes a safetensors file front to back, one tensor at a time: the header
 * (offsets follow from the shapes, so it is known first, padded with spaces
 * to a multiple of 8 bytes as the reference writer does), then each
 * tensor's bytes as `data` produces them. Only one tensor is in memory at a
 * time, so a checkpoint larger than memory can be written.
 *
 * @param path the file to create (or truncate)
 * @param entries the tensors, in file order
 * @param data the little-endian bytes of entry `i` (exactly shape × dtype size)
 * @param metadata `__metadata__` strings @default none
 * @returns the file's size in bytes
 * @throws {ModelFormatError} for an unknown dtype, a repeated name or data of the wrong length
 * @example
 * ```ts
 * writeSafetensors("m.safetensors", [{ name: "w", dtype: "F32", shape: [2] }],
 *   () => new Uint8Array(new Float32Array([1, 2]).buffer));
 * ```
 */
export function writeSafetensors(
  path: string,
  entries: readonly SafetensorsEntry[],
  data: (entry: SafetensorsEntry, i: number) => Uint8Array,
  metadata?: Record<string, string>,
): number {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  let offset = 0;
  const sizes = entries.map((e) => {
    const bytes = SAFETENSORS_DTYPE_BYTES[e.dtype];
    if (!bytes) throw new ModelFormatError(`Cannot write ${path}: unknown dtype ${e.dtype}`);
    if (e.name in header) throw new ModelFormatError(`Cannot write ${path}: ${e.name} twice`);
    const n = e.shape.reduce((p, d) => p * d, 1) * bytes;
    header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + n] };
    offset += n;
    return n;
  });
  let json = JSON.stringify(header);
  json += " ".repeat((8 - ((8 + new TextEncoder().encode(json).length) % 8)) % 8);
  const head = new TextEncoder().encode(json);
  using file = Deno.openSync(path, { write: true, create: true, truncate: true });
  const write = (b: Uint8Array) => {
    for (let at = 0; at < b.length;) at += file.writeSync(b.subarray(at));
  };
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(head.length), true);
  write(len);
  write(head);
  entries.forEach((e, i) => {
    const b = data(e, i);
    if (b.length !== sizes[i]) {
      throw new ModelFormatError(
        `Cannot write ${path}: tensor "${e.name}" of shape [${e.shape}] ${e.dtype} needs ` +
          `${sizes[i]} bytes, got ${b.length}`,
      );
    }
    write(b);
  });
  return 8 + head.length + offset;
}
