/**
 * squeezebench's quantized model file (".sqbq"): every quantized linear in
 * the format.ts layout, plus the model's unquantized tensors, in one file
 * that detects damage: the header and every array carry a sha256, checked on
 * read, and every header field is checked against the data it describes.
 *
 * Layout, format version 2 (all integers little-endian):
 *
 * | offset | size | content |
 * |---|---|---|
 * | 0 | 4 | magic, the ASCII bytes "SQBQ" |
 * | 4 | 4 | version, u32 (= {@linkcode QMODEL_VERSION}) |
 * | 8 | 4 | header length L in bytes, u32 |
 * | 12 | 32 | sha256 of the L header bytes |
 * | 44 | L | header: UTF-8 JSON ({@linkcode QModelHeader}: config, method, options, base) |
 * | D | … | data section, D = 44 + L rounded up to a multiple of 8: the arrays |
 * | X | N | index: UTF-8 JSON ({@linkcode QModelIndex}: provenance; every array's place, shape and sha256) |
 * | X + N | 32 | sha256 of the N index bytes |
 * | X + N + 32 | 8 | X, u64 |
 * | X + N + 40 | 4 | N, u32 |
 * | X + N + 44 | 4 | end marker, the ASCII bytes "SQBQ" (the file's last 4 bytes) |
 *
 * Every array of the index is `{dtype, shape, offset, byteLength, sha256}`
 * with `offset` counted from D and a multiple of 8; arrays are raw
 * little-endian typed arrays: "u32" (packed codes), "i32" (gIdx, CSR row
 * pointers and column indices), "f16" (fp16 bit patterns: scales, zeros,
 * lookup tables, fp16 sparse values) and "f32". Zero bytes pad each array to
 * the next multiple of 8.
 *
 * The layout can be written front to back without holding the model: the
 * header (what the model is and how it is quantized) is known before the
 * first array, each array is hashed as it is written, and the index (with
 * the provenance, which holds timings and facts known only at the end) and
 * the fixed 48-byte trailer come last (Parquet's footer-plus-magic idea). A
 * file whose writer stopped early has no end marker. A reader checks each
 * array's sha256 when it reads the array, so a damaged byte is reported with
 * the array it lies in; and it can read the preamble, the trailer and the
 * index first and then one block's arrays at a time
 * ({@linkcode openQuantizedModel}), never holding the whole file.
 *
 * The unquantized tensors (token embedding, RMSNorm weights, the classifier
 * when it is not tied) are embedded as fp32, so a file is self-contained: it
 * evaluates without its base checkpoint (whose path and sha256 the header
 * records as provenance). For stories260K they are a few hundred kB; for
 * LLaMA-7B ~1 GB, a cost paid for robustness.
 *
 * Files of format version 1 (no checksums) are refused with a message that
 * says to re-quantize: their numbers cannot be verified.
 *
 * @module
 */
import { createHash } from "node:crypto";
import {
  type LayerWeights,
  LINEAR_NAMES,
  type LinearName,
  linearShape,
  type LlamaConfig,
  type LlamaWeights,
} from "../model/config.ts";
import { materializeWeights, type WeightSource } from "../model/weight_source.ts";
import {
  checkBits,
  type CsrMatrix,
  type DenseTensor,
  dequantize,
  nGroups,
  type QuantizedLinear,
  type QuantLayout,
  wordsPerRow,
} from "./format.ts";

/** The four magic bytes, at the start and (as the end marker) at the end of a file. */
export const QMODEL_MAGIC = "SQBQ";
/** The format version this module writes and reads. */
export const QMODEL_VERSION = 2;

/** Bytes before the header: magic, version, header length, header sha256. */
const PREAMBLE_BYTES = 44;
/** Bytes after the index: index sha256, index offset (u64), index length (u32), end marker. */
const TRAILER_BYTES = 48;

/** A quantized model file that cannot be read or written; the message names the file. */
export class QModelError extends Error {
  override name = "QModelError";
}

/** The unquantized tensors of a model. */
export interface FpTensors {
  tokenEmbedding: Float32Array; // [vocabSize, dim]
  attnNorm: Float32Array[]; // [nLayers][dim]
  ffnNorm: Float32Array[]; // [nLayers][dim]
  finalNorm: Float32Array; // [dim]
  /** Absent when config.sharedClassifier (the classifier is the token embedding). */
  classifier?: Float32Array; // [vocabSize, dim]
}

/** What a quantized model file says about itself (its header, plus the index's provenance). */
export interface QModelMeta {
  config: LlamaConfig;
  /** Quantization method ("rtn", "gptq", "awq", "squeezellm", …). */
  method: string;
  /**
   * The method's options (any JSON). `bits`, `groupSize` (null = one group per
   * row) and `sym`, when present, are checked against every linear.
   */
  options: Record<string, unknown>;
  /** Where the numbers came from: command, calibration data, versions, timings (any JSON). */
  provenance: Record<string, unknown>;
  /** The checkpoint that was quantized. */
  base: { path: string; sha256: string };
}

/** A quantized model: what {@linkcode saveQuantizedModel} writes and {@linkcode loadQuantizedModel} returns. */
export interface QuantizedModelFile extends QModelMeta {
  /** Quantized linears by "layers.{l}.{name}" (name one of LINEAR_NAMES). */
  linears: Map<string, QuantizedLinear>;
  /** The unquantized tensors. */
  rest: FpTensors;
}

/** An array reference in the index. */
export interface ArrayRef {
  dtype: "u32" | "i32" | "f16" | "f32";
  shape: number[];
  /** Byte offset from the start of the data section (a multiple of 8). */
  offset: number;
  byteLength: number;
  /** Lowercase hex sha256 of the array's byteLength bytes. */
  sha256: string;
}

/** The JSON header of a file: what the model is and how it was quantized, hashed on its own. */
export type QModelHeader = Omit<QModelMeta, "provenance">;

/** The JSON index at the end of a file: the provenance, where every array lies, and its sha256. */
export interface QModelIndex {
  provenance: Record<string, unknown>;
  tensors: Record<string, ArrayRef>;
  linears: Record<string, {
    dense:
      & ({ kind: "uniform"; groupSize: number; sym: boolean; maxq?: number } | { kind: "lut" })
      & { bits: number; rows: number; cols: number; arrays: Record<string, ArrayRef> };
    sparse?: { rows: number; cols: number; dtype: "f16" | "f32"; arrays: Record<string, ArrayRef> };
  }>;
}

/**
 * What the methods squeezebench knows write: the dense kind of every linear
 * and whether a sparse part may accompany it. Other method names are not
 * checked (tests and experiments write their own).
 */
const METHOD_LAYOUT: Record<string, { dense: DenseTensor["kind"]; sparse: boolean }> = {
  rtn: { dense: "uniform", sparse: false },
  gptq: { dense: "uniform", sparse: false },
  awq: { dense: "uniform", sparse: false },
  squeezellm: { dense: "lut", sparse: true },
  smoothquant: { dense: "uniform", sparse: false },
  abq: { dense: "uniform", sparse: false },
};

type Typed = Uint32Array | Int32Array | Uint16Array | Float32Array;

const ELEMENT_BYTES = { u32: 4, i32: 4, f16: 2, f32: 4 } as const;

function dtypeOf(a: Typed): ArrayRef["dtype"] {
  if (a instanceof Uint32Array) return "u32";
  if (a instanceof Int32Array) return "i32";
  if (a instanceof Uint16Array) return "f16";
  return "f32";
}

const align8 = (n: number) => Math.ceil(n / 8) * 8;

/** Lowercase hex sha256 of some bytes, synchronously. */
function sha256Sync(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function bytesOf(a: Typed): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

function checkLittleEndian(): void {
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
    throw new QModelError("quantized model files are little-endian; this host is big-endian");
  }
}

/**
 * Index and value of the first NaN or ±Infinity of a float array ("f16" bit
 * patterns or "f32"), or null when every value is finite.
 */
function firstNonFinite(a: Typed, dtype: ArrayRef["dtype"]): [number, number] | null {
  if (dtype === "f16") {
    const h = a as Uint16Array;
    for (let i = 0; i < h.length; i++) {
      if ((h[i] & 0x7c00) === 0x7c00) {
        return [i, new Float16Array(h.buffer, h.byteOffset + 2 * i, 1)[0]];
      }
    }
  } else if (dtype === "f32") {
    const f = a as Float32Array;
    for (let i = 0; i < f.length; i++) if (!Number.isFinite(f[i])) return [i, f[i]];
  }
  return null;
}

/** "layers.{l}.{name}" → [l, name], checked against the config. */
function parseLinearKey(key: string, config: LlamaConfig, where: string): [number, LinearName] {
  const m = /^layers\.(\d+)\.(\w+)$/.exec(key);
  const l = m ? Number(m[1]) : -1;
  if (!m || !(LINEAR_NAMES as readonly string[]).includes(m[2]) || l >= config.nLayers) {
    throw new QModelError(
      `${where}: linear "${key}" is not "layers.{0..${config.nLayers - 1}}.{${
        LINEAR_NAMES.join("|")
      }}"`,
    );
  }
  return [l, m[2] as LinearName];
}

/** The reason `config` is not a usable LLaMA config, or null. */
function configProblem(config: LlamaConfig | undefined): string | null {
  if (!config || typeof config !== "object") return `header has no "config"`;
  for (const k of ["dim", "hiddenDim", "nLayers", "nHeads", "nKvHeads", "vocabSize", "maxSeqLen"]) {
    const v = (config as unknown as Record<string, unknown>)[k];
    if (!Number.isInteger(v) || (v as number) < 1) {
      return `config.${k} is ${JSON.stringify(v)}, expected a positive integer`;
    }
  }
  if (config.dim % config.nHeads !== 0 || config.nHeads % config.nKvHeads !== 0) {
    return `config has dim ${config.dim}, ${config.nHeads} heads and ${config.nKvHeads} key/value heads: ` +
      `dim must be a multiple of nHeads and nHeads a multiple of nKvHeads`;
  }
  if (typeof config.sharedClassifier !== "boolean") {
    return `config.sharedClassifier is ${
      JSON.stringify(config.sharedClassifier)
    }, expected a boolean`;
  }
  const eps = config.normEps, theta = config.ropeTheta;
  if (typeof eps !== "number" || !(eps > 0 && eps < 1)) {
    return `config.normEps is ${JSON.stringify(eps)}, expected a number in (0, 1)`;
  }
  if (typeof theta !== "number" || !(theta > 1 && Number.isFinite(theta))) {
    return `config.ropeTheta is ${JSON.stringify(theta)}, expected a finite number > 1`;
  }
  return null;
}

/** The reason the header's method and options do not describe `linears`, or null. */
function optionsProblem(
  meta: QModelHeader,
  linears: Map<string, QuantizedLinear>,
): string | null {
  const bad = headerOptionsProblem(meta);
  if (bad) return bad;
  for (const [key, q] of linears) {
    const wrong = linearOptionsProblem(meta, key, q);
    if (wrong) return wrong;
  }
  return null;
}

/** The reason the header's options are not of their types, or null. */
function headerOptionsProblem({ options }: QModelHeader): string | null {
  const { bits, groupSize, sym } = options;
  if ("bits" in options && (typeof bits !== "number" || !Number.isInteger(bits))) {
    return `options.bits is ${JSON.stringify(bits)}, expected an integer`;
  }
  if ("groupSize" in options && groupSize !== null && !Number.isInteger(groupSize)) {
    return `options.groupSize is ${JSON.stringify(groupSize)}, expected an integer or null`;
  }
  if ("sym" in options && typeof sym !== "boolean") {
    return `options.sym is ${JSON.stringify(sym)}, expected a boolean`;
  }
  return null;
}

/** The reason the header's method and options do not describe linear `key`, or null. */
function linearOptionsProblem(
  { method, options }: QModelHeader,
  key: string,
  { dense, sparse }: QuantizedLinear,
): string | null {
  const layout = METHOD_LAYOUT[method];
  const { bits, groupSize, sym } = options;
  if (layout && dense.kind !== layout.dense) {
    return `method "${method}" stores ${layout.dense} tensors, but ${key} is ${dense.kind}`;
  }
  if (layout && sparse && !layout.sparse) {
    return `method "${method}" stores no sparse part, but ${key} has one`;
  }
  // bit balance stores a 2-bit grid's five levels as 3-bit codes (maxq 4)
  const balanced = options.bitBalance === true && dense.kind === "uniform" &&
    dense.maxq === 4 && dense.bits === 3 && bits === 2;
  if ("bits" in options && dense.bits !== bits && !balanced) {
    return `options.bits is ${bits}, but ${key} holds ${dense.bits}-bit codes`;
  }
  if (dense.kind !== "uniform") return null;
  if ("groupSize" in options && dense.groupSize !== (groupSize ?? dense.cols)) {
    return `options.groupSize is ${groupSize}${
      groupSize === null ? " (one group per row)" : ""
    }, but ${key} has groups of ${dense.groupSize} of its ${dense.cols} columns`;
  }
  if ("sym" in options && dense.sym !== sym) {
    return `options.sym is ${sym}, but ${key} has sym ${dense.sym}`;
  }
  return null;
}

/** The unquantized tensors of `weights` (shared, not copied). */
export function restOf(weights: LlamaWeights): FpTensors {
  return {
    tokenEmbedding: weights.tokenEmbedding,
    attnNorm: weights.layers.map((l) => l.attnNorm),
    ffnNorm: weights.layers.map((l) => l.ffnNorm),
    finalNorm: weights.finalNorm,
    ...(weights.config.sharedClassifier ? {} : { classifier: weights.classifier }),
  };
}

/** What {@linkcode saveQuantizedModel} needs: the file's content with the base weights' unquantized tensors. */
export interface SaveQuantizedModelInput extends Omit<QuantizedModelFile, "rest"> {
  /** The model the linears were quantized from (its unquantized tensors are embedded), or those tensors. */
  weights: LlamaWeights | FpTensors;
}

/**
 * The preamble and header of a file (everything before the data section,
 * padding included).
 */
function encodeHead(meta: QModelHeader): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(meta));
  const out = new Uint8Array(align8(PREAMBLE_BYTES + json.length));
  out.set(new TextEncoder().encode(QMODEL_MAGIC), 0);
  const view = new DataView(out.buffer);
  view.setUint32(4, QMODEL_VERSION, true);
  view.setUint32(8, json.length, true);
  out.set(createHash("sha256").update(json).digest(), 12);
  out.set(json, PREAMBLE_BYTES);
  return out;
}

/** The index and trailer of a file whose data section starts at `dataStart` and is `dataBytes` long. */
function encodeTail(index: QModelIndex, dataStart: number, dataBytes: number): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(index));
  const out = new Uint8Array(json.length + TRAILER_BYTES);
  out.set(json, 0);
  out.set(createHash("sha256").update(json).digest(), json.length);
  const view = new DataView(out.buffer);
  view.setBigUint64(json.length + 32, BigInt(dataStart + dataBytes), true);
  view.setUint32(json.length + 40, json.length, true);
  out.set(new TextEncoder().encode(QMODEL_MAGIC), json.length + 44);
  return out;
}

/** The names and shapes of the unquantized tensors a file of `config` holds, in writing order. */
function restShapes(config: LlamaConfig): Map<string, number[]> {
  const { vocabSize, dim } = config;
  const shapes = new Map<string, number[]>([
    ["tokenEmbedding", [vocabSize, dim]],
    ["finalNorm", [dim]],
  ]);
  if (!config.sharedClassifier) shapes.set("classifier", [vocabSize, dim]);
  for (let l = 0; l < config.nLayers; l++) {
    shapes.set(`layers.${l}.attnNorm`, [dim]);
    shapes.set(`layers.${l}.ffnNorm`, [dim]);
  }
  return shapes;
}

/**
 * Writes a quantized model file front to back (see the module doc for the
 * layout) without holding the model: the header goes out on construction,
 * each array is hashed and written when it is given, and
 * {@linkcode QModelWriter.finish} writes the index and trailer. A caller
 * quantizing block by block hands over each block's tensors and linears and
 * drops them (eval/quantize_stream.ts). Every check of
 * {@linkcode serializeQuantizedModel} is made as the data arrives.
 *
 * @example
 * ```ts
 * const w = QModelWriter.create("m.sqbq", { config, method: "rtn", options: { bits: 4 }, base });
 * w.tensor("tokenEmbedding", emb);
 * w.linear("layers.0.wq", q);
 * // … every tensor of the config, and the linears
 * w.finish({ command: "quantize" });
 * ```
 */
export class QModelWriter {
  readonly #sink: (bytes: Uint8Array) => void;
  readonly #close: () => void;
  readonly #where: string;
  readonly #meta: QModelHeader;
  readonly #headBytes: number;
  /** Unquantized tensors still to be written: name → shape. */
  readonly #pending: Map<string, number[]>;
  readonly #tensors: Record<string, ArrayRef> = {};
  readonly #linears: QModelIndex["linears"] = {};
  /** Bytes of the data section written so far. */
  #offset = 0;
  #done = false;

  /**
   * Writes the preamble and header to `sink` (a file: {@linkcode QModelWriter.create}).
   *
   * @param meta config, method, options and base
   * @param sink takes the file's bytes in order
   * @param path the file's name, for messages @default "<memory>"
   * @param close called once when the writer finishes or aborts @default nothing
   * @throws {QModelError} for an invalid config or options of the wrong types
   */
  constructor(
    meta: QModelHeader,
    sink: (bytes: Uint8Array) => void,
    path = "<memory>",
    close: () => void = () => {},
  ) {
    checkLittleEndian();
    this.#where = `Cannot write quantized model ${path}`;
    const bad = configProblem(meta.config) ?? headerOptionsProblem(meta);
    if (bad) throw new QModelError(`${this.#where}: ${bad}`);
    this.#meta = {
      config: meta.config,
      method: meta.method,
      options: meta.options,
      base: meta.base,
    };
    this.#sink = sink;
    this.#close = close;
    this.#pending = restShapes(meta.config);
    const head = encodeHead(this.#meta);
    this.#headBytes = head.length;
    sink(head);
  }

  /**
   * Creates (or truncates) the file `path` and writes its header.
   *
   * @param path where to write (the folder must exist)
   * @param meta config, method, options and base
   * @returns the writer; call {@linkcode QModelWriter.finish}, or
   *   {@linkcode QModelWriter.abort} to delete the partial file
   * @throws {QModelError} when the file cannot be created or the header is invalid
   */
  static create(path: string, meta: QModelHeader): QModelWriter {
    let file: Deno.FsFile;
    try {
      file = Deno.openSync(path, { write: true, create: true, truncate: true });
    } catch (e) {
      throw new QModelError(`Cannot write quantized model ${path}: ${(e as Error).message}`);
    }
    const sink = (bytes: Uint8Array) => {
      try {
        for (let at = 0; at < bytes.length;) at += file.writeSync(bytes.subarray(at));
      } catch (e) {
        throw new QModelError(`Cannot write quantized model ${path}: ${(e as Error).message}`);
      }
    };
    try {
      return new QModelWriter(meta, sink, path, () => file.close());
    } catch (e) {
      file.close();
      Deno.removeSync(path);
      throw e;
    }
  }

  /** The config of the file being written. */
  get config(): LlamaConfig {
    return this.#meta.config;
  }

  /**
   * Writes one unquantized tensor.
   *
   * @param name "tokenEmbedding", "finalNorm", "classifier" (untied only),
   *   "layers.{l}.attnNorm" or "layers.{l}.ffnNorm"
   * @param a its fp32 values (`[vocabSize, dim]` or `[dim]`)
   * @throws {QModelError} for an unknown or repeated name, a wrong length or a non-finite value
   */
  tensor(name: string, a: Float32Array): void {
    const shape = this.#pending.get(name);
    if (!shape) {
      throw new QModelError(
        `${this.#where}: ${
          name in this.#tensors ? `${name} was already written` : `no tensor ${name} in this model`
        }`,
      );
    }
    this.#tensors[name] = this.#array(a, shape, name);
    this.#pending.delete(name);
  }

  /**
   * Writes one quantized linear.
   *
   * @param key "layers.{l}.{name}"
   * @param q its dense part and optional sparse part
   * @throws {QModelError} when the key or shape does not match the config, the
   *   options do not describe it, it was already written, or a float is non-finite
   */
  linear(key: string, q: QuantizedLinear): void {
    const where = this.#where, config = this.#meta.config;
    const [, name] = parseLinearKey(key, config, where);
    if (key in this.#linears) throw new QModelError(`${where}: ${key} was already written`);
    const d = q.dense;
    const [rows, cols] = linearShape(config, name);
    if (d.rows !== rows || d.cols !== cols) {
      throw new QModelError(
        `${where}: ${key} is ${d.rows}×${d.cols}, the config says ${rows}×${cols}`,
      );
    }
    const inconsistent = linearOptionsProblem(this.#meta, key, q);
    if (inconsistent) throw new QModelError(`${where}: ${inconsistent}`);
    const ref = (a: Typed, shape: number[], what: string) =>
      this.#array(a, shape, `${key}.${what}`);
    const wpr = wordsPerRow(cols, d.bits);
    const dense: QModelIndex["linears"][string]["dense"] = d.kind === "uniform"
      ? {
        kind: "uniform",
        bits: d.bits,
        rows,
        cols,
        groupSize: d.groupSize,
        sym: d.sym,
        ...(d.maxq !== undefined ? { maxq: d.maxq } : {}),
        arrays: {
          codes: ref(d.codes, [rows, wpr], "codes"),
          scales: ref(d.scales, [rows, d.scales.length / rows], "scales"),
          zeros: ref(d.zeros, [rows, d.zeros.length / rows], "zeros"),
          ...(d.gIdx ? { gIdx: ref(d.gIdx, [cols], "gIdx") } : {}),
        },
      }
      : {
        kind: "lut",
        bits: d.bits,
        rows,
        cols,
        arrays: {
          codes: ref(d.codes, [rows, wpr], "codes"),
          lut: ref(d.lut, [rows, 1 << d.bits], "lut"),
        },
      };
    const s = q.sparse;
    this.#linears[key] = {
      dense,
      ...(s
        ? {
          sparse: {
            rows: s.rows,
            cols: s.cols,
            dtype: s.dtype,
            arrays: {
              rowPtr: ref(s.rowPtr, [s.rows + 1], "rowPtr"),
              colIdx: ref(s.colIdx, [s.colIdx.length], "colIdx"),
              values: ref(s.values, [s.values.length], "values"),
            },
          },
        }
        : {}),
    };
  }

  /**
   * Writes the index (with `provenance`) and the trailer, and closes the file.
   *
   * @param provenance command, calibration, timings (any JSON)
   * @returns the file's size in bytes
   * @throws {QModelError} naming the first unquantized tensor not written
   */
  finish(provenance: Record<string, unknown>): number {
    const missing = this.#pending.keys().next();
    if (!missing.done) {
      this.abort();
      throw new QModelError(
        missing.value === "classifier"
          ? `${this.#where}: the config has an untied classifier but none was given`
          : `${this.#where}: ${missing.value} was not written`,
      );
    }
    const tail = encodeTail(
      { provenance, tensors: this.#tensors, linears: this.#linears },
      this.#headBytes,
      this.#offset,
    );
    this.#sink(tail);
    this.#end();
    return this.#headBytes + this.#offset + tail.length;
  }

  /** Stops writing and closes the file (a file sink's partial file is left to the caller). */
  abort(): void {
    this.#end();
  }

  #end(): void {
    if (this.#done) return;
    this.#done = true;
    this.#close();
  }

  /** Checks, hashes and writes one array (padded to 8 bytes); returns its index entry. */
  #array(a: Typed, shape: number[], name: string): ArrayRef {
    if (this.#done) throw new QModelError(`${this.#where}: the file is already finished`);
    const dtype = dtypeOf(a);
    if (shape.reduce((p, s) => p * s, 1) !== a.length) {
      throw new QModelError(
        `${this.#where}: ${name} has ${a.length} values, which does not match shape [${shape}]`,
      );
    }
    const nonFinite = firstNonFinite(a, dtype);
    if (nonFinite) {
      throw new QModelError(
        `${this.#where}: ${name} has a non-finite value (${nonFinite[1]}) at index ${
          nonFinite[0]
        }` + (dtype === "f16" ? " (fp16 holds magnitudes up to 65504)" : ""),
      );
    }
    const bytes = bytesOf(a);
    const r: ArrayRef = {
      dtype,
      shape,
      offset: this.#offset,
      byteLength: a.byteLength,
      sha256: sha256Sync(bytes),
    };
    this.#sink(bytes);
    const pad = align8(a.byteLength) - a.byteLength;
    if (pad) this.#sink(new Uint8Array(pad));
    this.#offset += a.byteLength + pad;
    return r;
  }
}

/**
 * Serializes a quantized model to bytes (see the module doc for the layout)
 * through a {@linkcode QModelWriter}.
 *
 * @param m config, method, options, provenance, base, linears and the base weights
 * @param path the file's name, for error messages
 * @returns the file's bytes
 * @throws {QModelError} when a linear's key or shape does not match the config,
 *   the options do not describe the linears, or a float array holds NaN/±Infinity
 */
export function serializeQuantizedModel(m: SaveQuantizedModelInput, path = "<memory>"): Uint8Array {
  const chunks: Uint8Array[] = [];
  const w = new QModelWriter(m, (b) => chunks.push(b), path);
  writeModel(w, m);
  const out = new Uint8Array(w.finish(m.provenance));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** Hands every tensor and linear of `m` to `w`: the unquantized tensors first, then the linears. */
function writeModel(w: QModelWriter, m: SaveQuantizedModelInput): void {
  const rest = "layers" in m.weights ? restOf(m.weights) : m.weights;
  w.tensor("tokenEmbedding", rest.tokenEmbedding);
  w.tensor("finalNorm", rest.finalNorm);
  if (!m.config.sharedClassifier && rest.classifier) w.tensor("classifier", rest.classifier);
  for (let l = 0; l < m.config.nLayers; l++) {
    w.tensor(`layers.${l}.attnNorm`, rest.attnNorm[l]);
    w.tensor(`layers.${l}.ffnNorm`, rest.ffnNorm[l]);
  }
  for (const [key, q] of m.linears) w.linear(key, q);
}

/**
 * Writes a quantized model file, front to back ({@linkcode QModelWriter}).
 *
 * @param path where to write (the folder must exist)
 * @param m config, method, options, provenance, base {path, sha256}, linears and the base weights
 * @returns the number of bytes written
 * @throws {QModelError} as {@linkcode serializeQuantizedModel}, or when the
 *   file cannot be written (no partial file is left)
 * @example
 * ```ts
 * await saveQuantizedModel("out/stories260K.gptq.w3.sqbq", {
 *   config, method: "gptq", options: { bits: 3 }, provenance: {},
 *   base: { path: ckptPath, sha256 }, linears, weights,
 * });
 * ```
 */
export function saveQuantizedModel(
  path: string,
  m: SaveQuantizedModelInput,
): Promise<number> {
  let w: QModelWriter | undefined;
  try {
    w = QModelWriter.create(path, m);
    writeModel(w, m);
    return Promise.resolve(w.finish(m.provenance));
  } catch (e) {
    if (w) {
      w.abort();
      Deno.removeSync(path);
    }
    return Promise.reject(e);
  }
}

/**
 * Parses the bytes of a quantized model file, verifying the sha256 of the
 * header, the index and every array, and every header field against the
 * data it describes.
 *
 * @param bytes the file's content
 * @param path the file's name, for error messages
 * @returns the model; its arrays are views into `bytes` where aligned, else copies
 * @throws {QModelError} naming the file and what is wrong: a wrong magic or
 *   version (version 1: written without checksums, re-quantize), a truncated
 *   file, a checksum mismatch (naming the section: "header", "index" or
 *   "data" with the array), an array outside the data section or not of its
 *   shape, options that do not describe the linears, an invalid config, or
 *   a NaN/±Infinity among the stored floats
 * @example
 * ```ts
 * const m = parseQuantizedModel(await Deno.readFile("m.sqbq"), "m.sqbq");
 * ```
 */
export function parseQuantizedModel(bytes: Uint8Array, path = "<memory>"): QuantizedModelFile {
  checkLittleEndian();
  const where = `Cannot read quantized model ${path}`;
  const fail = (msg: string): never => {
    throw new QModelError(`${where}: ${msg}`);
  };
  const src = memoryBytes(bytes);
  const { meta, index, dataStart, dataEnd } = readSections(src, fail);
  const arr = arrayReader(src, dataStart, dataEnd, fail);
  const { config } = meta;
  const { dim, vocabSize, nLayers } = config;
  const t = index.tensors ?? {};
  const f32 = (name: string, shape: number[]) => arr(t[name], name, "f32", shape) as Float32Array;
  const rest: FpTensors = {
    tokenEmbedding: f32("tokenEmbedding", [vocabSize, dim]),
    finalNorm: f32("finalNorm", [dim]),
    attnNorm: Array.from({ length: nLayers }, (_, l) => f32(`layers.${l}.attnNorm`, [dim])),
    ffnNorm: Array.from({ length: nLayers }, (_, l) => f32(`layers.${l}.ffnNorm`, [dim])),
    ...(config.sharedClassifier ? {} : { classifier: f32("classifier", [vocabSize, dim]) }),
  };
  const linears = new Map<string, QuantizedLinear>();
  for (const [key, entry] of Object.entries(index.linears ?? {})) {
    const [, name] = parseLinearKey(key, config, where);
    linears.set(key, readLinear(key, entry, linearShape(config, name), arr, fail));
  }
  const inconsistent = optionsProblem(meta, linears);
  if (inconsistent) fail(inconsistent);
  return {
    config,
    method: meta.method,
    options: meta.options,
    provenance: index.provenance,
    base: meta.base,
    linears,
    rest,
  };
}

/** Throws a {@linkcode QModelError} naming the file. */
type Fail = (msg: string) => never;

/**
 * A file's bytes by offset: the whole file in memory, or an open file read
 * when asked. `read` is called only for ranges inside the file.
 */
interface ByteSource {
  readonly size: number;
  read(offset: number, length: number): Uint8Array;
}

/** The bytes of a file in memory: reads are views. */
function memoryBytes(bytes: Uint8Array): ByteSource {
  return { size: bytes.length, read: (o, n) => bytes.subarray(o, o + n) };
}

/** A checksum mismatch: names the section ("header", "index", "data") and the array. */
function damaged(fail: Fail, section: string, stored: string, computed: string, array = ""): never {
  return fail(
    `${section} checksum mismatch${array ? ` in ${array}` : ""} (sha256 stored ${
      stored.slice(0, 12)
    }…, computed ${
      computed.slice(0, 12)
    }…): the file was damaged or changed after it was written; re-quantize it ` +
      `("deno task quantize")`,
  );
}

/**
 * The preamble, header, trailer and index of a file, checked: magic,
 * version, lengths, end marker, both checksums, the config.
 */
function readSections(
  src: ByteSource,
  fail: Fail,
): { meta: QModelHeader; index: QModelIndex; dataStart: number; dataEnd: number } {
  const size = src.size;
  if (size < 12) {
    fail(`file has ${size} bytes, too short for the ${PREAMBLE_BYTES}-byte preamble`);
  }
  const preamble = src.read(0, Math.min(size, PREAMBLE_BYTES));
  const magic = new TextDecoder().decode(preamble.subarray(0, 4));
  if (magic !== QMODEL_MAGIC) fail(`magic is ${JSON.stringify(magic)}, expected "${QMODEL_MAGIC}"`);
  const view = new DataView(preamble.buffer, preamble.byteOffset, preamble.byteLength);
  const version = view.getUint32(4, true);
  if (version === 1) {
    fail(
      `it was written by an older squeezebench (format version 1, without checksums), so its ` +
        `numbers cannot be verified; re-quantize the model ("deno task quantize") to get a ` +
        `version ${QMODEL_VERSION} file`,
    );
  }
  if (version !== QMODEL_VERSION) {
    fail(`version ${version} is not supported (this reader knows ${QMODEL_VERSION})`);
  }
  if (size < PREAMBLE_BYTES) {
    fail(
      `file has ${size} bytes, too short for the ${PREAMBLE_BYTES}-byte preamble (truncated?)`,
    );
  }
  const headerLength = view.getUint32(8, true);
  if (PREAMBLE_BYTES + headerLength > size) {
    fail(
      `header claims ${headerLength} bytes, file has ${
        size - PREAMBLE_BYTES
      } after the preamble (truncated?)`,
    );
  }
  const dataStart = align8(PREAMBLE_BYTES + headerLength);
  const end = size - TRAILER_BYTES;
  if (
    end < dataStart ||
    new TextDecoder().decode(src.read(size - 4, 4)) !== QMODEL_MAGIC
  ) {
    fail(
      `file has ${size} bytes and does not end with the end marker "${QMODEL_MAGIC}": ` +
        `it was truncated or not completely written`,
    );
  }
  const trailer = src.read(end, TRAILER_BYTES);
  const trailerView = new DataView(trailer.buffer, trailer.byteOffset, trailer.byteLength);
  // header
  const headerBytes = src.read(PREAMBLE_BYTES, headerLength);
  const headerSha = sha256Sync(headerBytes), storedHeaderSha = hex(preamble.subarray(12, 44));
  if (headerSha !== storedHeaderSha) damaged(fail, "header", storedHeaderSha, headerSha);
  let meta: QModelHeader;
  try {
    meta = JSON.parse(new TextDecoder().decode(headerBytes));
  } catch (e) {
    return fail(`header is not valid JSON (${(e as Error).message})`);
  }
  const badConfig = configProblem(meta?.config);
  if (badConfig) fail(badConfig);
  if (typeof meta.method !== "string") fail(`header's method is ${JSON.stringify(meta.method)}`);
  for (const k of ["options", "base"] as const) {
    if (!meta[k] || typeof meta[k] !== "object" || Array.isArray(meta[k])) {
      fail(`header's ${k} is ${JSON.stringify(meta[k])}, expected an object`);
    }
  }
  if (typeof meta.base.path !== "string" || typeof meta.base.sha256 !== "string") {
    fail(`header's base is ${JSON.stringify(meta.base)}, expected {path, sha256} strings`);
  }
  // index
  const indexOffset = Number(trailerView.getBigUint64(32, true));
  const indexLength = trailerView.getUint32(40, true);
  if (indexOffset < dataStart || indexOffset + indexLength !== end) {
    fail(
      `the trailer places the index at bytes ${indexOffset}..${indexOffset + indexLength}, ` +
        `but it must end where the trailer starts (byte ${end}): the trailer is damaged`,
    );
  }
  const indexBytes = src.read(indexOffset, indexLength);
  const indexSha = sha256Sync(indexBytes), storedIndexSha = hex(trailer.subarray(0, 32));
  if (indexSha !== storedIndexSha) damaged(fail, "index", storedIndexSha, indexSha);
  let index: QModelIndex;
  try {
    index = JSON.parse(new TextDecoder().decode(indexBytes));
  } catch (e) {
    return fail(`index is not valid JSON (${(e as Error).message})`);
  }
  if (!index || typeof index !== "object") fail(`index is ${JSON.stringify(index)}, not an object`);
  const { provenance } = index;
  if (!provenance || typeof provenance !== "object" || Array.isArray(provenance)) {
    fail(`index's provenance is ${JSON.stringify(provenance)}, expected an object`);
  }
  return { meta, index, dataStart, dataEnd: indexOffset };
}

/** Reads array `name` of `dtype` and `shape` from its index entry, checked (see arrayReader). */
type ArrayReader = (
  r: ArrayRef | undefined,
  name: string,
  dtype: ArrayRef["dtype"],
  shape: number[],
  what?: string,
) => Typed;

/**
 * Reads arrays from the data section [dataStart, dataEnd) of `bytes`: each
 * checked for dtype, byte length, shape, place and sha256, and (floats) for
 * NaN/±Infinity. Arrays are views into `bytes` where aligned, else copies.
 */
function arrayReader(
  src: ByteSource,
  dataStart: number,
  dataEnd: number,
  fail: Fail,
): ArrayReader {
  return (r, name, dtype, shape, what = "") => {
    if (!r) return fail(`${name} is missing`);
    if (r.dtype !== dtype) fail(`${name} has dtype ${r.dtype}, expected ${dtype}`);
    const length = shape.reduce((p, s) => p * s, 1);
    const nbytes = length * ELEMENT_BYTES[dtype];
    if (r.byteLength !== nbytes) {
      fail(`${name} has ${r.byteLength} bytes, expected ${nbytes} (${length} × ${dtype}${what})`);
    }
    if (!Array.isArray(r.shape) || r.shape.join(",") !== shape.join(",")) {
      fail(`${name} has shape [${r.shape}], expected [${shape}]`);
    }
    if (!Number.isInteger(r.offset) || r.offset < 0 || r.offset % 8 !== 0) {
      fail(`${name} has offset ${r.offset}, expected a multiple of 8`);
    }
    if (dataStart + r.offset + nbytes > dataEnd) {
      fail(
        `${name} lies at bytes ${dataStart + r.offset}..${dataStart + r.offset + nbytes}, ` +
          `beyond the end of the file's data section (byte ${dataEnd})`,
      );
    }
    const bytes = src.read(dataStart + r.offset, nbytes);
    const sha = sha256Sync(bytes);
    if (sha !== r.sha256) damaged(fail, "data", String(r.sha256), sha, name);
    const aligned = bytes.byteOffset % ELEMENT_BYTES[dtype] === 0;
    const buf = (aligned ? bytes.buffer : bytes.slice().buffer) as ArrayBuffer;
    const off = aligned ? bytes.byteOffset : 0;
    const a = dtype === "u32"
      ? new Uint32Array(buf, off, length)
      : dtype === "i32"
      ? new Int32Array(buf, off, length)
      : dtype === "f16"
      ? new Uint16Array(buf, off, length)
      : new Float32Array(buf, off, length);
    const nonFinite = firstNonFinite(a, dtype);
    if (nonFinite) {
      fail(`${name} has a non-finite value (${nonFinite[1]}) at index ${nonFinite[0]}`);
    }
    return a;
  };
}

/** One linear from its index entry: shapes and values checked against `[rows, cols]` of the config. */
function readLinear(
  key: string,
  e: QModelIndex["linears"][string],
  [rows, cols]: [number, number],
  arr: ArrayReader,
  fail: Fail,
): QuantizedLinear {
  const d = e.dense;
  if (d.rows !== rows || d.cols !== cols) {
    fail(`${key} is ${d.rows}×${d.cols}, the config says ${rows}×${cols}`);
  }
  try {
    checkBits(d.bits);
  } catch (err) {
    fail(`${key}: ${(err as Error).message}`);
  }
  const codes = arr(
    d.arrays.codes,
    `${key}.codes`,
    "u32",
    [rows, wordsPerRow(cols, d.bits)],
    ` = ${rows} rows of ${cols} ${d.bits}-bit codes`,
  ) as Uint32Array;
  let dense: DenseTensor;
  if (d.kind === "uniform") {
    if (!Number.isInteger(d.groupSize) || d.groupSize < 1 || d.groupSize > cols) {
      fail(`${key}: groupSize ${d.groupSize} is not an integer in 1..${cols}`);
    }
    if (typeof d.sym !== "boolean") fail(`${key}: sym is ${JSON.stringify(d.sym)}`);
    if (
      d.maxq !== undefined && !(Number.isInteger(d.maxq) && d.maxq >= 1 && d.maxq < (1 << d.bits))
    ) {
      fail(`${key}: maxq ${JSON.stringify(d.maxq)} is not an integer in 1..${(1 << d.bits) - 1}`);
    }
    // ⌈cols / groupSize⌉ groups per row; with act-order's gIdx, as many as the scales hold
    const ng = d.arrays.gIdx ? d.arrays.scales?.shape?.[1] : Math.ceil(cols / d.groupSize);
    if (!Number.isInteger(ng) || ng < 1) fail(`${key}.scales has ${ng} groups per row`);
    dense = {
      kind: "uniform",
      bits: d.bits,
      rows,
      cols,
      groupSize: d.groupSize,
      sym: d.sym,
      ...(d.maxq !== undefined ? { maxq: d.maxq } : {}),
      codes,
      scales: arr(d.arrays.scales, `${key}.scales`, "f16", [rows, ng]) as Uint16Array,
      zeros: arr(d.arrays.zeros, `${key}.zeros`, "f16", [rows, ng]) as Uint16Array,
    };
    if (d.arrays.gIdx) {
      const gIdx = arr(d.arrays.gIdx, `${key}.gIdx`, "i32", [cols]) as Int32Array;
      for (const g of gIdx) {
        if (g < 0 || g >= ng) fail(`${key}.gIdx has group ${g}, outside 0..${ng - 1}`);
      }
      dense.gIdx = gIdx;
    }
  } else if (d.kind === "lut") {
    dense = {
      kind: "lut",
      bits: d.bits,
      rows,
      cols,
      codes,
      lut: arr(
        d.arrays.lut,
        `${key}.lut`,
        "f16",
        [rows, 1 << d.bits],
        ` = ${rows} rows of 2^${d.bits} entries`,
      ) as Uint16Array,
    };
  } else {
    return fail(`${key} has unknown kind ${JSON.stringify((d as { kind: unknown }).kind)}`);
  }
  const q: QuantizedLinear = { dense };
  if (e.sparse) {
    const s = e.sparse;
    if (s.rows !== rows || s.cols !== cols) {
      fail(`${key}.sparse is ${s.rows}×${s.cols}, expected ${rows}×${cols}`);
    }
    if (s.dtype !== "f16" && s.dtype !== "f32") {
      fail(`${key}.sparse has dtype ${JSON.stringify(s.dtype)}, expected "f16" or "f32"`);
    }
    const rowPtr = arr(s.arrays.rowPtr, `${key}.rowPtr`, "i32", [rows + 1]) as Int32Array;
    const nnz = rowPtr[rows];
    for (let r = 0; r < rows; r++) {
      if (rowPtr[r] > rowPtr[r + 1] || rowPtr[0] !== 0) {
        fail(`${key}.rowPtr is not non-decreasing from 0`);
      }
    }
    const colIdx = arr(s.arrays.colIdx, `${key}.colIdx`, "i32", [nnz]) as Int32Array;
    for (const c of colIdx) {
      if (c < 0 || c >= cols) fail(`${key}.colIdx has column ${c}, outside 0..${cols - 1}`);
    }
    const sparse: CsrMatrix = {
      rows,
      cols,
      rowPtr,
      colIdx,
      values: arr(s.arrays.values, `${key}.values`, s.dtype, [nnz]) as Uint16Array | Float32Array,
      dtype: s.dtype,
    };
    q.sparse = sparse;
  }
  return q;
}

/**
 * Reads a quantized model file and verifies it (see {@linkcode parseQuantizedModel}).
 *
 * @param path the file
 * @returns the model
 * @throws {QModelError} when the file is missing, truncated, damaged, of another format or version
 * @example
 * ```ts
 * const m = await loadQuantizedModel("out/stories260K.rtn.w4.sqbq");
 * ```
 */
export async function loadQuantizedModel(path: string): Promise<QuantizedModelFile> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "file not found" : (e as Error).message;
    throw new QModelError(`Cannot read quantized model ${path}: ${why}`);
  }
  return parseQuantizedModel(bytes, path);
}

/**
 * A quantized model file opened, not read: the header and index are read
 * and verified now, every array when it is asked for (its sha256 checked
 * then), so a model is evaluated block by block holding one block's packed
 * and dequantized weights (eval/perplexity_blockwise.ts) instead of the
 * whole file. As a {@linkcode WeightSource}, `layer(l)` is block l
 * dequantized (dense + sparse), the same arrays {@linkcode dequantizedLayer}
 * gives for the loaded file. Dispose it to close the file.
 */
export interface QuantizedModelReader extends Omit<QModelMeta, "config">, WeightSource {
  /** Every linear's layout by "layers.{l}.{name}", from the index (sizes, without its codes). */
  readonly layouts: Map<string, QuantLayout>;
  /**
   * Linear `key`, read and verified now.
   *
   * @throws {QModelError} when it is missing, damaged or not what the header describes
   */
  linear(key: string): QuantizedLinear;
}

/**
 * Opens a quantized model file for block-by-block reads (see
 * {@linkcode QuantizedModelReader}); every check of
 * {@linkcode parseQuantizedModel} is made, each when its data is read.
 *
 * @param path the file
 * @returns the reader; dispose it to close the file
 * @throws {QModelError} when the file is missing, truncated, damaged, of another format or version
 * @example
 * ```ts
 * using m = openQuantizedModel("out/tiny.gptq.w3.sqbq");
 * const r = await perplexityBlockwise(m, tokens, { seqlen: 2048 });
 * ```
 */
export function openQuantizedModel(path: string): QuantizedModelReader {
  checkLittleEndian();
  const where = `Cannot read quantized model ${path}`;
  const fail = (msg: string): never => {
    throw new QModelError(`${where}: ${msg}`);
  };
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { read: true });
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "file not found" : (e as Error).message;
    throw new QModelError(`${where}: ${why}`);
  }
  try {
    const src = fileBytes(file, file.statSync().size, fail);
    const { meta, index, dataStart, dataEnd } = readSections(src, fail);
    const bad = headerOptionsProblem(meta);
    if (bad) fail(bad);
    const arr = arrayReader(src, dataStart, dataEnd, fail);
    const { config } = meta;
    const { dim, vocabSize } = config;
    const t = index.tensors ?? {};
    const f32 = (name: string, shape: number[]) => arr(t[name], name, "f32", shape) as Float32Array;
    const entries = new Map(Object.entries(index.linears ?? {}));
    const shapes = new Map<string, [number, number]>();
    for (const key of entries.keys()) {
      shapes.set(key, linearShape(config, parseLinearKey(key, config, where)[1]));
    }
    const linear = (key: string): QuantizedLinear => {
      const e = entries.get(key);
      if (!e) return fail(`it has no linear ${key}`);
      const q = readLinear(key, e, shapes.get(key)!, arr, fail);
      const wrong = linearOptionsProblem(meta, key, q);
      return wrong ? fail(wrong) : q;
    };
    const layouts = new Map<string, QuantLayout>();
    for (const [key, e] of entries) layouts.set(key, indexLayout(key, e, shapes.get(key)!, arr));
    return {
      ...meta,
      provenance: index.provenance,
      path,
      layouts,
      linear,
      layer(l) {
        const lin = {} as Record<LinearName, Float32Array>;
        for (const name of LINEAR_NAMES) lin[name] = dequantize(linear(`layers.${l}.${name}`));
        return {
          attnNorm: f32(`layers.${l}.attnNorm`, [dim]),
          ffnNorm: f32(`layers.${l}.ffnNorm`, [dim]),
          ...lin,
        };
      },
      tokenEmbedding: () => f32("tokenEmbedding", [vocabSize, dim]),
      finalNorm: () => f32("finalNorm", [dim]),
      classifier: () => config.sharedClassifier ? undefined : f32("classifier", [vocabSize, dim]),
      [Symbol.dispose]: () => file.close(),
    };
  } catch (e) {
    file.close();
    throw e;
  }
}

/** An open file's bytes, read at each call (a new buffer, so every array in it is aligned). */
function fileBytes(file: Deno.FsFile, size: number, fail: Fail): ByteSource {
  return {
    size,
    read(offset, length) {
      const b = new Uint8Array(length);
      file.seekSync(offset, Deno.SeekMode.Start);
      for (let at = 0; at < length;) {
        const n = file.readSync(b.subarray(at));
        if (n === null) fail(`file ended at byte ${offset + at} (changed while it was read?)`);
        at += n!;
      }
      return b;
    },
  };
}

/**
 * The layout of a linear from its index entry: the groups per row of an
 * act-order linear come from its gIdx (read and verified now, `cols`
 * integers), as format.ts `layoutOf` counts them.
 */
function indexLayout(
  key: string,
  e: QModelIndex["linears"][string],
  [rows, cols]: [number, number],
  arr: ArrayReader,
): QuantLayout {
  const d = e.dense;
  const sparse = {
    nnz: e.sparse ? (e.sparse.arrays.colIdx?.shape?.[0] ?? 0) : 0,
    sparse: e.sparse !== undefined,
    sparseDtype: e.sparse?.dtype ?? "f16",
  };
  if (d.kind !== "uniform") return { kind: d.kind, bits: d.bits, rows, cols, ...sparse };
  const gIdx = d.arrays.gIdx
    ? arr(d.arrays.gIdx, `${key}.gIdx`, "i32", [cols]) as Int32Array
    : undefined;
  return {
    kind: "uniform",
    bits: d.bits,
    rows,
    cols,
    ...sparse,
    groupsPerRow: nGroups({ cols, groupSize: d.groupSize, gIdx }),
    gIdx: gIdx !== undefined,
  };
}

/**
 * The fake-quantized fp32 weights of block `l`: its linears dequantized
 * (dense + sparse), its norms as stored.
 *
 * @param m a model with the block's 7 linears
 * @param l block index
 * @returns the block's weights for the forward pass
 * @throws {QModelError} naming the first missing linear
 */
export function dequantizedLayer(m: QuantizedModelFile, l: number): LayerWeights {
  const lin = {} as Record<LinearName, Float32Array>;
  for (const name of LINEAR_NAMES) {
    const q = m.linears.get(`layers.${l}.${name}`);
    if (!q) throw new QModelError(`quantized model has no linear layers.${l}.${name}`);
    lin[name] = dequantize(q);
  }
  return { attnNorm: m.rest.attnNorm[l], ffnNorm: m.rest.ffnNorm[l], ...lin };
}

/**
 * A quantized model as a block-by-block source (model/weight_source.ts):
 * each block is dequantized when asked for and not kept, so the model is
 * held at its packed size plus one fp32 block.
 *
 * @param m the model
 * @param path its file, for messages @default "<memory>"
 * @returns the source
 */
export function dequantizedWeightSource(m: QuantizedModelFile, path = "<memory>"): WeightSource {
  return {
    config: m.config,
    path,
    layer: (l) => dequantizedLayer(m, l),
    tokenEmbedding: () => m.rest.tokenEmbedding,
    finalNorm: () => m.rest.finalNorm,
    classifier: () => m.config.sharedClassifier ? undefined : m.rest.classifier,
    [Symbol.dispose]() {},
  };
}

/**
 * The fake-quantized fp32 weights of a quantized model: every linear
 * dequantized (dense + sparse), the other tensors as stored.
 *
 * @param m a model with all 7 · nLayers linears
 * @returns weights for the forward pass
 * @throws {QModelError} naming the first missing linear
 */
export function dequantizedWeights(m: QuantizedModelFile): LlamaWeights {
  return materializeWeights(dequantizedWeightSource(m));
}
