/**
 * squeezebench's quantized model file (".sqbq"): every quantized linear in
 * the format.ts layout, plus the model's unquantized tensors, in one file.
 *
 * Layout (all integers little-endian):
 *
 * | offset | size | content |
 * |---|---|---|
 * | 0 | 4 | magic, the ASCII bytes "SQBQ" |
 * | 4 | 4 | version, u32 (= {@linkcode QMODEL_VERSION}) |
 * | 8 | 4 | header length L in bytes, u32 |
 * | 12 | L | header: UTF-8 JSON ({@linkcode QModelHeader}) |
 * | D | … | data section: D = 12 + L rounded up to a multiple of 8 |
 *
 * Every array of the header is `{dtype, shape, offset, byteLength}` with
 * `offset` counted from D and a multiple of 8; arrays are raw little-endian
 * typed arrays: "u32" (packed codes), "i32" (gIdx, CSR row pointers and column
 * indices), "f16" (fp16 bit patterns: scales, zeros, lookup tables, fp16
 * sparse values) and "f32". Zero bytes pad each array to the next multiple of 8.
 *
 * The unquantized tensors (token embedding, RMSNorm weights, the classifier
 * when it is not tied) are embedded as fp32, so a file is self-contained: it
 * evaluates without its base checkpoint (whose path and sha256 the header
 * records as provenance). For stories260K they are a few hundred kB; for
 * LLaMA-7B ~1 GB, a cost paid for robustness.
 *
 * @module
 */
import {
  type LayerWeights,
  LINEAR_NAMES,
  type LinearName,
  linearShape,
  type LlamaConfig,
  type LlamaWeights,
} from "../model/config.ts";
import {
  checkBits,
  type CsrMatrix,
  type DenseTensor,
  dequantize,
  type QuantizedLinear,
  wordsPerRow,
} from "./format.ts";

/** The four magic bytes. */
export const QMODEL_MAGIC = "SQBQ";
/** The format version this module writes and reads. */
export const QMODEL_VERSION = 1;

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

/** What a quantized model file says about itself: stored as is in the JSON header. */
export interface QModelMeta {
  config: LlamaConfig;
  /** Quantization method ("rtn", "gptq", "awq", "squeezellm", …). */
  method: string;
  /** The method's options (any JSON). */
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

/** An array reference in the header. */
export interface ArrayRef {
  dtype: "u32" | "i32" | "f16" | "f32";
  shape: number[];
  /** Byte offset from the start of the data section (a multiple of 8). */
  offset: number;
  byteLength: number;
}

/** The JSON header of a file. */
export interface QModelHeader extends QModelMeta {
  tensors: Record<string, ArrayRef>;
  linears: Record<string, {
    dense:
      & ({ kind: "uniform"; groupSize: number; sym: boolean } | { kind: "lut" })
      & { bits: number; rows: number; cols: number; arrays: Record<string, ArrayRef> };
    sparse?: { rows: number; cols: number; dtype: "f16" | "f32"; arrays: Record<string, ArrayRef> };
  }>;
}

type Typed = Uint32Array | Int32Array | Uint16Array | Float32Array;

const ELEMENT_BYTES = { u32: 4, i32: 4, f16: 2, f32: 4 } as const;

function dtypeOf(a: Typed): ArrayRef["dtype"] {
  if (a instanceof Uint32Array) return "u32";
  if (a instanceof Int32Array) return "i32";
  if (a instanceof Uint16Array) return "f16";
  return "f32";
}

const align8 = (n: number) => Math.ceil(n / 8) * 8;

function checkLittleEndian(): void {
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
    throw new QModelError("quantized model files are little-endian; this host is big-endian");
  }
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
 * Serializes a quantized model to bytes (see the module doc for the layout).
 *
 * @param m config, method, options, provenance, base, linears and the base weights
 * @returns the file's bytes
 * @throws {QModelError} when a linear's key or shape does not match the config
 */
export function serializeQuantizedModel(m: SaveQuantizedModelInput, path = "<memory>"): Uint8Array {
  checkLittleEndian();
  const where = `Cannot write quantized model ${path}`;
  const { config } = m;
  const rest = "layers" in m.weights ? restOf(m.weights) : m.weights;
  const arrays: Typed[] = [];
  let offset = 0;
  const ref = (a: Typed, shape: number[]): ArrayRef => {
    const r: ArrayRef = { dtype: dtypeOf(a), shape, offset, byteLength: a.byteLength };
    if (shape.reduce((p, s) => p * s, 1) !== a.length) {
      throw new QModelError(
        `${where}: array of ${a.length} values does not match shape [${shape}]`,
      );
    }
    arrays.push(a);
    offset += align8(a.byteLength);
    return r;
  };
  const tensors: Record<string, ArrayRef> = {};
  tensors.tokenEmbedding = ref(rest.tokenEmbedding, [config.vocabSize, config.dim]);
  tensors.finalNorm = ref(rest.finalNorm, [config.dim]);
  if (!config.sharedClassifier) {
    if (!rest.classifier) {
      throw new QModelError(`${where}: the config has an untied classifier but none was given`);
    }
    tensors.classifier = ref(rest.classifier, [config.vocabSize, config.dim]);
  }
  for (let l = 0; l < config.nLayers; l++) {
    tensors[`layers.${l}.attnNorm`] = ref(rest.attnNorm[l], [config.dim]);
    tensors[`layers.${l}.ffnNorm`] = ref(rest.ffnNorm[l], [config.dim]);
  }
  const linears: QModelHeader["linears"] = {};
  for (const [key, q] of m.linears) {
    const [, name] = parseLinearKey(key, config, where);
    const d = q.dense;
    const [rows, cols] = linearShape(config, name);
    if (d.rows !== rows || d.cols !== cols) {
      throw new QModelError(
        `${where}: ${key} is ${d.rows}×${d.cols}, the config says ${rows}×${cols}`,
      );
    }
    const wpr = wordsPerRow(cols, d.bits);
    const dense: QModelHeader["linears"][string]["dense"] = d.kind === "uniform"
      ? {
        kind: "uniform",
        bits: d.bits,
        rows,
        cols,
        groupSize: d.groupSize,
        sym: d.sym,
        arrays: {
          codes: ref(d.codes, [rows, wpr]),
          scales: ref(d.scales, [rows, d.scales.length / rows]),
          zeros: ref(d.zeros, [rows, d.zeros.length / rows]),
          ...(d.gIdx ? { gIdx: ref(d.gIdx, [cols]) } : {}),
        },
      }
      : {
        kind: "lut",
        bits: d.bits,
        rows,
        cols,
        arrays: { codes: ref(d.codes, [rows, wpr]), lut: ref(d.lut, [rows, 1 << d.bits]) },
      };
    const s = q.sparse;
    linears[key] = {
      dense,
      ...(s
        ? {
          sparse: {
            rows: s.rows,
            cols: s.cols,
            dtype: s.dtype,
            arrays: {
              rowPtr: ref(s.rowPtr, [s.rows + 1]),
              colIdx: ref(s.colIdx, [s.colIdx.length]),
              values: ref(s.values, [s.values.length]),
            },
          },
        }
        : {}),
    };
  }
  const header: QModelHeader = {
    config,
    method: m.method,
    options: m.options,
    provenance: m.provenance,
    base: m.base,
    tensors,
    linears,
  };
  const json = new TextEncoder().encode(JSON.stringify(header));
  const dataStart = align8(12 + json.length);
  const out = new Uint8Array(dataStart + offset);
  out.set(new TextEncoder().encode(QMODEL_MAGIC), 0);
  const view = new DataView(out.buffer);
  view.setUint32(4, QMODEL_VERSION, true);
  view.setUint32(8, json.length, true);
  out.set(json, 12);
  let at = dataStart;
  for (const a of arrays) {
    out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), at);
    at += align8(a.byteLength);
  }
  return out;
}

/**
 * Writes a quantized model file.
 *
 * @param path where to write (the folder must exist)
 * @param m config, method, options, provenance, base {path, sha256}, linears and the base weights
 * @returns the number of bytes written
 * @example
 * ```ts
 * await saveQuantizedModel("out/stories260K.gptq.w3.sqbq", {
 *   config, method: "gptq", options: { bits: 3 }, provenance: {},
 *   base: { path: ckptPath, sha256 }, linears, weights,
 * });
 * ```
 */
export async function saveQuantizedModel(
  path: string,
  m: SaveQuantizedModelInput,
): Promise<number> {
  const bytes = serializeQuantizedModel(m, path);
  try {
    await Deno.writeFile(path, bytes);
  } catch (e) {
    throw new QModelError(`Cannot write quantized model ${path}: ${(e as Error).message}`);
  }
  return bytes.length;
}

/**
 * Parses the bytes of a quantized model file.
 *
 * @param bytes the file's content
 * @param path the file's name, for error messages
 * @returns the model; its arrays are views into `bytes` where aligned, else copies
 * @throws {QModelError} on a wrong magic or version, a truncated file, an
 *   array outside the file, or arrays that do not match their shapes
 */
export function parseQuantizedModel(bytes: Uint8Array, path = "<memory>"): QuantizedModelFile {
  checkLittleEndian();
  const where = `Cannot read quantized model ${path}`;
  const fail = (msg: string): never => {
    throw new QModelError(`${where}: ${msg}`);
  };
  if (bytes.length < 12) fail(`file has ${bytes.length} bytes, too short for the 12-byte preamble`);
  const magic = new TextDecoder().decode(bytes.subarray(0, 4));
  if (magic !== QMODEL_MAGIC) fail(`magic is ${JSON.stringify(magic)}, expected "${QMODEL_MAGIC}"`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(4, true);
  if (version !== QMODEL_VERSION) {
    fail(`version ${version} is not supported (this reader knows ${QMODEL_VERSION})`);
  }
  const headerLength = view.getUint32(8, true);
  if (12 + headerLength > bytes.length) {
    fail(
      `header claims ${headerLength} bytes, file has ${
        bytes.length - 12
      } after the preamble (truncated?)`,
    );
  }
  let header: QModelHeader;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + headerLength)));
  } catch (e) {
    return fail(`header is not valid JSON (${(e as Error).message})`);
  }
  const dataStart = align8(12 + headerLength);
  const { config } = header;
  if (!config || typeof config.dim !== "number" || typeof config.nLayers !== "number") {
    fail(`header has no valid "config"`);
  }
  const arr = (
    r: ArrayRef | undefined,
    name: string,
    dtype: ArrayRef["dtype"],
    length: number,
  ): Typed => {
    if (!r) return fail(`${name} is missing`);
    if (r.dtype !== dtype) fail(`${name} has dtype ${r.dtype}, expected ${dtype}`);
    const nbytes = length * ELEMENT_BYTES[dtype];
    if (r.byteLength !== nbytes) {
      fail(`${name} has ${r.byteLength} bytes, expected ${nbytes} (${length} × ${dtype})`);
    }
    const start = dataStart + r.offset;
    if (!Number.isInteger(r.offset) || r.offset < 0 || start + nbytes > bytes.length) {
      fail(
        `${name} lies at bytes ${start}..${
          start + nbytes
        }, beyond the end of the file (${bytes.length} bytes; truncated?)`,
      );
    }
    const abs = bytes.byteOffset + start;
    const src = abs % ELEMENT_BYTES[dtype] === 0
      ? bytes.buffer as ArrayBuffer
      : bytes.slice(start, start + nbytes).buffer as ArrayBuffer;
    const off = abs % ELEMENT_BYTES[dtype] === 0 ? abs : 0;
    switch (dtype) {
      case "u32":
        return new Uint32Array(src, off, length);
      case "i32":
        return new Int32Array(src, off, length);
      case "f16":
        return new Uint16Array(src, off, length);
      case "f32":
        return new Float32Array(src, off, length);
    }
  };
  const { dim, vocabSize, nLayers } = config;
  const t = header.tensors ?? {};
  const rest: FpTensors = {
    tokenEmbedding: arr(t.tokenEmbedding, "tokenEmbedding", "f32", vocabSize * dim) as Float32Array,
    finalNorm: arr(t.finalNorm, "finalNorm", "f32", dim) as Float32Array,
    attnNorm: Array.from(
      { length: nLayers },
      (_, l) => arr(t[`layers.${l}.attnNorm`], `layers.${l}.attnNorm`, "f32", dim) as Float32Array,
    ),
    ffnNorm: Array.from(
      { length: nLayers },
      (_, l) => arr(t[`layers.${l}.ffnNorm`], `layers.${l}.ffnNorm`, "f32", dim) as Float32Array,
    ),
    ...(config.sharedClassifier
      ? {}
      : { classifier: arr(t.classifier, "classifier", "f32", vocabSize * dim) as Float32Array }),
  };
  const linears = new Map<string, QuantizedLinear>();
  for (const [key, e] of Object.entries(header.linears ?? {})) {
    const [, name] = parseLinearKey(key, config, where);
    const [rows, cols] = linearShape(config, name);
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
      rows * wordsPerRow(cols, d.bits),
    ) as Uint32Array;
    let dense: DenseTensor;
    if (d.kind === "uniform") {
      const ng = d.arrays.scales?.shape?.[1] ?? 0;
      if (!d.arrays.gIdx && (d.groupSize < 1 || ng !== Math.ceil(cols / d.groupSize))) {
        fail(
          `${key}: ${ng} groups per row do not match groupSize ${d.groupSize} over ${cols} columns`,
        );
      }
      dense = {
        kind: "uniform",
        bits: d.bits,
        rows,
        cols,
        groupSize: d.groupSize,
        sym: d.sym,
        codes,
        scales: arr(d.arrays.scales, `${key}.scales`, "f16", rows * ng) as Uint16Array,
        zeros: arr(d.arrays.zeros, `${key}.zeros`, "f16", rows * ng) as Uint16Array,
      };
      if (d.arrays.gIdx) {
        const gIdx = arr(d.arrays.gIdx, `${key}.gIdx`, "i32", cols) as Int32Array;
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
        lut: arr(d.arrays.lut, `${key}.lut`, "f16", rows << d.bits) as Uint16Array,
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
      const rowPtr = arr(s.arrays.rowPtr, `${key}.rowPtr`, "i32", rows + 1) as Int32Array;
      const nnz = rowPtr[rows];
      for (let r = 0; r < rows; r++) {
        if (rowPtr[r] > rowPtr[r + 1] || rowPtr[0] !== 0) {
          fail(`${key}.rowPtr is not non-decreasing from 0`);
        }
      }
      const colIdx = arr(s.arrays.colIdx, `${key}.colIdx`, "i32", nnz) as Int32Array;
      for (const c of colIdx) {
        if (c < 0 || c >= cols) fail(`${key}.colIdx has column ${c}, outside 0..${cols - 1}`);
      }
      const sparse: CsrMatrix = {
        rows,
        cols,
        rowPtr,
        colIdx,
        values: arr(s.arrays.values, `${key}.values`, s.dtype === "f32" ? "f32" : "f16", nnz) as
          | Uint16Array
          | Float32Array,
        dtype: s.dtype === "f32" ? "f32" : "f16",
      };
      q.sparse = sparse;
    }
    linears.set(key, q);
  }
  return {
    config,
    method: header.method,
    options: header.options ?? {},
    provenance: header.provenance ?? {},
    base: header.base,
    linears,
    rest,
  };
}

/**
 * Reads a quantized model file.
 *
 * @param path the file
 * @returns the model
 * @throws {QModelError} when the file is missing, truncated, of another format or version
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
 * The fake-quantized fp32 weights of a quantized model: every linear
 * dequantized (dense + sparse), the other tensors as stored.
 *
 * @param m a model with all 7 · nLayers linears
 * @returns weights for the forward pass
 * @throws {QModelError} naming the first missing linear
 */
export function dequantizedWeights(m: QuantizedModelFile): LlamaWeights {
  const { config, rest } = m;
  const layers: LayerWeights[] = [];
  for (let l = 0; l < config.nLayers; l++) {
    const lin = {} as Record<LinearName, Float32Array>;
    for (const name of LINEAR_NAMES) {
      const q = m.linears.get(`layers.${l}.${name}`);
      if (!q) throw new QModelError(`quantized model has no linear layers.${l}.${name}`);
      lin[name] = dequantize(q);
    }
    layers.push({ attnNorm: rest.attnNorm[l], ffnNorm: rest.ffnNorm[l], ...lin });
  }
  return {
    config,
    tokenEmbedding: rest.tokenEmbedding,
    layers,
    finalNorm: rest.finalNorm,
    classifier: config.sharedClassifier ? rest.tokenEmbedding : rest.classifier!,
  };
}

/** Lowercase hex sha256 of some bytes (for `base.sha256`). */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}
