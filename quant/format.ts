/**
 * The one definition of squeezebench's quantized-tensor formats, shared by the
 * quantizers, the WebGPU kernels, size accounting and the results store.
 *
 * A quantized linear weight W [rows = outFeatures, cols = inFeatures] is a
 * dense part (`uniform` or `lut`) plus an optional CSR `sparse` part:
 * W ≈ dequantize(dense) + sparse.
 *
 * Codes are packed per row as a b-bit little-endian bitstream along the input
 * dimension: code c of a row occupies stream bits [c·b, c·b + b), stream bit k
 * is bit (k mod 32) of the row's word ⌊k/32⌋, and codes may straddle two
 * words. Every row starts on a fresh 32-bit word, so a row is
 * `wordsPerRow(cols, bits)` = ⌈cols·b/32⌉ words and row r starts at word
 * r·wordsPerRow.
 *
 * Scales, zeros, lookup tables and sparse values are stored as IEEE fp16 bit
 * patterns (Uint16Array), as the papers count them; sparse values may be fp32
 * when asked for.
 *
 * Unquantized weights have two more dense kinds, `f32` and `f16`; any of the
 * four plus an optional sparse part is a {@linkcode LinearWeight}, what the
 * WebGPU kernels take ({@linkcode validateWeight} checks its array lengths).
 *
 * {@linkcode sizeOf} is the one size accounting of every kind: information
 * bits per part (the papers' "Avg. Bits", quant/size.ts sums a model) and the
 * bytes stored in memory, padding included (what a kernel reads).
 *
 * @module
 */

/** Bit widths every method supports (ABQ-LLM's "arbitrary bits"). */
export const MIN_BITS = 2;
export const MAX_BITS = 8;

/** Throws a RangeError naming `option` unless bits is an integer in 2..8. */
export function checkBits(bits: number, option = "--bits"): number {
  if (!Number.isInteger(bits) || bits < MIN_BITS || bits > MAX_BITS) {
    throw new RangeError(
      `${option} must be an integer from ${MIN_BITS} to ${MAX_BITS}, got ${bits}`,
    );
  }
  return bits;
}

/** b-bit codes with per-group scale and zero: w = scale·(q − zero). */
export interface UniformTensor {
  kind: "uniform";
  bits: number;
  rows: number;
  cols: number;
  /** Columns per group; equals cols for one group per row. */
  groupSize: number;
  /** Symmetric grid: zero fixed at 2^(b−1), as in GPTQ's quantizer. */
  sym: boolean;
  /**
   * Largest code, when below 2^bits − 1: bit balance (ABQ-LLM's W2*) gives a
   * 2-bit grid five levels, codes 0..4, stored as 3-bit codes (bits = 3,
   * maxq = 4) and counted as 3 bits. Absent: 2^bits − 1.
   */
  maxq?: number;
  codes: Uint32Array; // [rows, wordsPerRow(cols, bits)]
  scales: Uint16Array; // fp16 [rows, nGroups]
  zeros: Uint16Array; // fp16 [rows, nGroups]; integers in 0..2^b−1 (GPTQ rounds them)
  /**
   * Group of every column (GPTQ's g_idx) when columns were quantized in a
   * permuted order (act-order); absent means group(c) = ⌊c / groupSize⌋.
   */
  gIdx?: Int32Array; // [cols]
}

/** b-bit codes decoded through one lookup table of 2^b values per row (SqueezeLLM). */
export interface LutTensor {
  kind: "lut";
  bits: number;
  rows: number;
  cols: number;
  codes: Uint32Array; // [rows, wordsPerRow(cols, bits)]
  lut: Uint16Array; // fp16 [rows, 2^bits]
}

/** A sparse matrix in compressed sparse row form (Dense-and-Sparse's sparse part). */
export interface CsrMatrix {
  rows: number;
  cols: number;
  rowPtr: Int32Array; // [rows + 1]
  colIdx: Int32Array; // [nnz]
  /** fp16 bit patterns (Uint16Array) or fp32 values (Float32Array), per `dtype`. */
  values: Uint16Array | Float32Array; // [nnz]
  dtype: "f16" | "f32";
}

/** The dense part of a quantized weight. */
export type DenseTensor = UniformTensor | LutTensor;

/** A quantized linear weight: dense part plus optional sparse part. */
export interface QuantizedLinear {
  dense: DenseTensor;
  sparse?: CsrMatrix;
}

/** Unquantized fp32 weights. */
export interface F32Tensor {
  kind: "f32";
  rows: number;
  cols: number;
  data: Float32Array; // [rows, cols]
}

/** fp16 weights as IEEE half bit patterns (rows are not word-aligned when cols is odd). */
export interface F16Tensor {
  kind: "f16";
  rows: number;
  cols: number;
  data: Uint16Array; // [rows, cols]
}

/** Any dense weight in storage: fp32, fp16, or a quantized {@linkcode DenseTensor}. */
export type StoredDense = F32Tensor | F16Tensor | DenseTensor;

/** The storage format name used in tables: "f32", "f16", "uniform", "lut". */
export type DenseFormat = StoredDense["kind"];

/**
 * A linear layer's weight W [rows = out, cols = in] = dense + sparse in any
 * storage format; a {@linkcode QuantizedLinear} is one.
 */
export interface LinearWeight {
  dense: StoredDense;
  sparse?: CsrMatrix;
}

/** Number of 32-bit words one packed row of `cols` b-bit codes takes. */
export function wordsPerRow(cols: number, bits: number): number {
  return Math.ceil((cols * bits) / 32);
}

/** Number of groups per row. */
export function nGroups(t: Pick<UniformTensor, "cols" | "groupSize" | "gIdx">): number {
  if (t.gIdx) {
    let m = 0;
    for (const g of t.gIdx) m = Math.max(m, g);
    return m + 1;
  }
  return Math.ceil(t.cols / t.groupSize);
}

/**
 * Packs integer codes [rows, cols] (each in 0..2^bits−1) into the row-aligned
 * little-endian bitstream described in the module doc.
 */
export function packCodes(
  codes: ArrayLike<number>,
  rows: number,
  cols: number,
  bits: number,
): Uint32Array {
  checkBits(bits);
  if (codes.length !== rows * cols) {
    throw new RangeError(`packCodes(): expected ${rows}×${cols} codes, got ${codes.length}`);
  }
  const wpr = wordsPerRow(cols, bits);
  const out = new Uint32Array(rows * wpr);
  const maxq = (1 << bits) - 1;
  for (let r = 0; r < rows; r++) {
    const base = r * wpr;
    for (let c = 0; c < cols; c++) {
      const q = codes[r * cols + c];
      if (!(q >= 0 && q <= maxq && Number.isInteger(q))) {
        throw new RangeError(`packCodes(): code ${q} at (${r}, ${c}) is not a ${bits}-bit integer`);
      }
      const bit = c * bits;
      const w = base + (bit >>> 5);
      const s = bit & 31;
      out[w] |= q << s;
      if (s + bits > 32) out[w + 1] |= q >>> (32 - s);
    }
  }
  return out;
}

/** Reads code (r, c) from packed words. */
export function codeAt(
  packed: Uint32Array,
  cols: number,
  bits: number,
  r: number,
  c: number,
): number {
  const bit = c * bits;
  const w = r * wordsPerRow(cols, bits) + (bit >>> 5);
  const s = bit & 31;
  let v = packed[w] >>> s;
  if (s + bits > 32) v |= packed[w + 1] << (32 - s);
  return v & ((1 << bits) - 1);
}

/** Inverse of {@linkcode packCodes}: codes [rows, cols]. */
export function unpackCodes(
  packed: Uint32Array,
  rows: number,
  cols: number,
  bits: number,
): Uint8Array {
  const out = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[r * cols + c] = codeAt(packed, cols, bits, r, c);
  }
  return out;
}

/** Rounds each value to fp16 and returns the bit patterns. */
export function toF16(values: ArrayLike<number>): Uint16Array {
  return new Uint16Array(Float16Array.from(values).buffer);
}

/** fp16 bit patterns to float32 values. */
export function fromF16(bits: Uint16Array): Float32Array {
  return Float32Array.from(new Float16Array(bits.buffer, bits.byteOffset, bits.length));
}

/** Group of column c of a uniform tensor. */
export function groupOf(t: UniformTensor, c: number): number {
  return t.gIdx ? t.gIdx[c] : Math.floor(c / t.groupSize);
}

/** Dequantizes the dense part to fp32 weights [rows, cols]. */
export function dequantizeDense(t: DenseTensor): Float32Array {
  const { rows, cols, bits } = t;
  const out = new Float32Array(rows * cols);
  if (t.kind === "lut") {
    const lut = fromF16(t.lut);
    const k = 1 << bits;
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        out[r * cols + c] = lut[r * k + codeAt(t.codes, cols, bits, r, c)];
      }
    }
    return out;
  }
  const scales = fromF16(t.scales), zeros = fromF16(t.zeros);
  const ng = nGroups(t);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const g = r * ng + groupOf(t, c);
      out[r * cols + c] = scales[g] * (codeAt(t.codes, cols, bits, r, c) - zeros[g]);
    }
  }
  return out;
}

/** Values of a CSR matrix as fp32. */
export function csrValues(s: CsrMatrix): Float32Array {
  return s.dtype === "f16" ? fromF16(s.values as Uint16Array) : (s.values as Float32Array);
}

/** Adds a CSR matrix into dense weights [rows, cols] in place. */
export function addSparse(dense: Float32Array, s: CsrMatrix): Float32Array {
  const v = csrValues(s);
  for (let r = 0; r < s.rows; r++) {
    for (let k = s.rowPtr[r]; k < s.rowPtr[r + 1]; k++) dense[r * s.cols + s.colIdx[k]] += v[k];
  }
  return dense;
}

/** Fake quantization: the fp32 weights [rows, cols] a quantized linear stands for. */
export function dequantize(q: QuantizedLinear): Float32Array {
  const w = dequantizeDense(q.dense);
  return q.sparse ? addSparse(w, q.sparse) : w;
}

/**
 * fp32 weights as a tensor (no copy).
 *
 * @param data weights [rows, cols]
 * @param rows output features
 * @param cols input features
 * @returns the f32 tensor over `data`
 * @throws RangeError when data does not hold rows·cols values
 * @example
 * ```ts
 * f32Tensor(new Float32Array(6), 2, 3).kind; // "f32"
 * ```
 */
export function f32Tensor(data: Float32Array, rows: number, cols: number): F32Tensor {
  if (data.length !== rows * cols) {
    throw new RangeError(`f32Tensor(): expected ${rows}×${cols} values, found ${data.length}`);
  }
  return { kind: "f32", rows, cols, data };
}

/**
 * fp16 weights: each value rounded to the nearest half.
 *
 * @param data weights [rows, cols]
 * @param rows output features
 * @param cols input features
 * @returns the f16 tensor (a new array of bit patterns)
 * @throws RangeError when data does not hold rows·cols values
 * @example
 * ```ts
 * f16Tensor(new Float32Array([1, 0.1]), 1, 2).data; // Uint16Array [15360, 11878]
 * ```
 */
export function f16Tensor(data: Float32Array, rows: number, cols: number): F16Tensor {
  if (data.length !== rows * cols) {
    throw new RangeError(`f16Tensor(): expected ${rows}×${cols} values, found ${data.length}`);
  }
  return { kind: "f16", rows, cols, data: toF16(data) };
}

/**
 * Checks every array length of `w` against its declared shape.
 *
 * @param w the weight
 * @param what name used in messages @default "weight"
 * @throws RangeError naming the field, the expected and the found length
 * @example
 * ```ts
 * validateWeight({ dense: f32Tensor(new Float32Array(6), 2, 3) }); // passes
 * ```
 */
export function validateWeight(w: LinearWeight, what = "weight"): void {
  const d = w.dense;
  const { rows, cols } = d;
  const expect = (field: string, found: number, expected: number) => {
    if (found !== expected) {
      throw new RangeError(`${what}.${field}: expected length ${expected}, found ${found}`);
    }
  };
  if (!(Number.isInteger(rows) && rows > 0 && Number.isInteger(cols) && cols > 0)) {
    throw new RangeError(`${what}: rows and cols must be positive integers, got ${rows}×${cols}`);
  }
  if (d.kind === "f32" || d.kind === "f16") expect("dense.data", d.data.length, rows * cols);
  else {
    checkBits(d.bits, `${what}.dense.bits`);
    expect("dense.codes", d.codes.length, rows * wordsPerRow(cols, d.bits));
    if (d.kind === "lut") expect("dense.lut", d.lut.length, rows << d.bits);
    else {
      if (d.gIdx) expect("dense.gIdx", d.gIdx.length, cols);
      if (
        d.maxq !== undefined && !(Number.isInteger(d.maxq) && d.maxq >= 1 && d.maxq < (1 << d.bits))
      ) {
        throw new RangeError(
          `${what}.dense.maxq: expected an integer in 1..${(1 << d.bits) - 1}, found ${d.maxq}`,
        );
      }
      const ng = nGroups(d);
      expect("dense.scales", d.scales.length, rows * ng);
      expect("dense.zeros", d.zeros.length, rows * ng);
    }
  }
  const s = w.sparse;
  if (s) {
    if (s.rows !== rows || s.cols !== cols) {
      throw new RangeError(
        `${what}.sparse: shape ${s.rows}×${s.cols} differs from dense ${rows}×${cols}`,
      );
    }
    expect("sparse.rowPtr", s.rowPtr.length, rows + 1);
    const nnz = s.rowPtr[rows];
    expect("sparse.colIdx", s.colIdx.length, nnz);
    expect("sparse.values", s.values.length, nnz);
  }
}

/** One number per stored part of a weight (0 for absent parts). */
export interface SizeParts {
  /** Packed codes, or the values of an f32 / f16 tensor. */
  codes: number;
  scales: number;
  zeros: number;
  gIdx: number;
  lut: number;
  sparseValues: number;
  sparseIndices: number;
  sparseRowPtr: number;
}

/** The parts of {@linkcode SizeParts}, in order. */
export const SIZE_PARTS: readonly (keyof SizeParts)[] = [
  "codes",
  "scales",
  "zeros",
  "gIdx",
  "lut",
  "sparseValues",
  "sparseIndices",
  "sparseRowPtr",
];

/** A {@linkcode SizeParts} of zeros. */
export function emptySizeParts(): SizeParts {
  return {
    codes: 0,
    scales: 0,
    zeros: 0,
    gIdx: 0,
    lut: 0,
    sparseValues: 0,
    sparseIndices: 0,
    sparseRowPtr: 0,
  };
}

/**
 * The size of one weight or a sum of them, in the two measures that matter:
 * information bits (the papers' "Avg. Bits") and bytes stored in memory.
 */
export interface SizeReport {
  /** Number of weights rows · cols (summed for a model). */
  weights: number;
  /** Information bits per part, as counted in {@linkcode sizeOfLayout}'s doc. */
  infoBits: SizeParts;
  /** Σ infoBits. */
  totalInfoBits: number;
  /** totalInfoBits / weights: the papers' "Avg. Bits". */
  avgInfoBits: number;
  /**
   * Bytes per part as laid out in memory (and uploaded to the GPU): codes
   * padded to whole 32-bit words per row, fp16 scales, zeros, tables and
   * values, int32 gIdx, CSR column indices and row pointers; `total` is their
   * sum. Independent of {@linkcode SizeOptions}.
   */
  storedBytes: SizeParts & { total: number };
  /** 8 · storedBytes.total / weights: the bits per weight a kernel reads. */
  avgStoredBits: number;
}

/** How the sparse part's information bits are counted (stored bytes do not change). */
export interface SizeOptions {
  /** Bits per CSR column index; "auto": 16 when cols ≤ 65536, else 32. @default "auto" */
  indexBits?: "auto" | 16 | 32;
  /** Bits per CSR row pointer (0 leaves them out). @default 32 */
  rowPtrBits?: 0 | 32;
}

/** The shape-level description of a weight, enough to count its bits and bytes. */
export interface QuantLayout {
  kind: DenseFormat;
  /** Code width; f32 / f16 are 32 / 16 bits whatever this says. */
  bits: number;
  rows: number;
  cols: number;
  /** Scale groups per row (uniform only). @default 1 */
  groupsPerRow?: number;
  /** A per-column group index is stored (uniform only). @default false */
  gIdx?: boolean;
  /** Nonzeros of the sparse part. @default 0 */
  nnz?: number;
  /** Value type of the sparse part. @default "f16" */
  sparseDtype?: "f16" | "f32";
  /** Whether a sparse part is stored at all (row pointers are counted even with nnz = 0). @default nnz > 0 */
  sparse?: boolean;
}

/**
 * Information bits and stored bytes of a weight described by its layout.
 *
 * Information bits, for a weight of `rows × cols`:
 * - codes: b · rows · cols, the information content of the packed codes (the
 *   row padding to whole 32-bit words is stored, not counted); 32 or 16 per
 *   weight for f32 / f16.
 * - scales, zeros: 16 bits each per (row, group), as stored (fp16). So b-bit
 *   with groups of 128 costs b + 32/128 = b + 0.25 bits (3-bit g128 → 3.25),
 *   one group per row b + 32/cols. (GPTQ's CUDA format packs zeros as b-bit
 *   integers; squeezebench stores them as fp16 and counts what it stores.)
 * - gIdx: 32 bits per column when present (act-order with dynamic groups,
 *   GPTQ's int32 g_idx): adds 32/rows bits per weight.
 * - lut: 16 · 2^b bits per row (fp16 table per output row, SqueezeLLM's
 *   `lookup_table [outfeatures, 2^b]`): adds 16·2^b/cols bits per weight,
 *   e.g. 3 + 128/4096 = 3.03125 for a 4096-column row.
 * - sparse (CSR): per nonzero 16 (fp16) or 32 (fp32) bits of value and a
 *   column index of 16 bits when cols ≤ 65536, else 32; 32 bits per row
 *   pointer (rows + 1 of them). `opts` changes the index and row-pointer
 *   widths (quant/size.ts's `PAPER_SPARSE_ACCOUNTING`).
 *
 * Stored bytes are the arrays of this module as they are: codes
 * rows · ⌈cols·b/32⌉ · 4, fp16 parts 2 bytes per value, gIdx, CSR column
 * indices and row pointers 4 bytes each (Int32Array), sparse values 2 or 4.
 *
 * @param l kind, bits, rows, cols, groups per row, gIdx, sparse nonzeros
 * @param opts widths of the sparse index and row pointers in the information count
 * @returns the size report
 * @example
 * ```ts
 * sizeOfLayout({ kind: "uniform", bits: 3, rows: 4096, cols: 4096, groupsPerRow: 32 })
 *   .avgInfoBits; // 3.25
 * ```
 */
export function sizeOfLayout(l: QuantLayout, opts: SizeOptions = {}): SizeReport {
  const { rows, cols } = l;
  const weights = rows * cols;
  const info = emptySizeParts();
  const bytes = { ...emptySizeParts(), total: 0 };
  if (l.kind === "f32" || l.kind === "f16") {
    const b = l.kind === "f32" ? 32 : 16;
    info.codes = b * weights;
    bytes.codes = (b / 8) * weights;
  } else {
    info.codes = l.bits * weights;
    bytes.codes = rows * wordsPerRow(cols, l.bits) * 4;
  }
  if (l.kind === "uniform") {
    const groups = rows * (l.groupsPerRow ?? 1);
    info.scales = info.zeros = 16 * groups;
    bytes.scales = bytes.zeros = 2 * groups;
    if (l.gIdx) {
      info.gIdx = 32 * cols;
      bytes.gIdx = 4 * cols;
    }
  } else if (l.kind === "lut") {
    info.lut = 16 * (1 << l.bits) * rows;
    bytes.lut = 2 * (1 << l.bits) * rows;
  }
  const nnz = l.nnz ?? 0;
  if (l.sparse ?? nnz > 0) {
    const indexBits = opts.indexBits === undefined || opts.indexBits === "auto"
      ? (cols <= 65536 ? 16 : 32)
      : opts.indexBits;
    const valueBits = l.sparseDtype === "f32" ? 32 : 16;
    info.sparseValues = nnz * valueBits;
    info.sparseIndices = nnz * indexBits;
    info.sparseRowPtr = (opts.rowPtrBits ?? 32) * (rows + 1);
    bytes.sparseValues = nnz * (valueBits / 8);
    bytes.sparseIndices = 4 * nnz;
    bytes.sparseRowPtr = 4 * (rows + 1);
  }
  bytes.total = SIZE_PARTS.reduce((s, p) => s + bytes[p], 0);
  const totalInfoBits = SIZE_PARTS.reduce((s, p) => s + info[p], 0);
  return {
    weights,
    infoBits: info,
    totalInfoBits,
    avgInfoBits: totalInfoBits / weights,
    storedBytes: bytes,
    avgStoredBits: (8 * bytes.total) / weights,
  };
}

/**
 * The layout of a weight in any storage format.
 *
 * @param w the weight
 * @returns its {@linkcode QuantLayout}
 */
export function layoutOf(w: LinearWeight): QuantLayout {
  const d = w.dense;
  const base = {
    rows: d.rows,
    cols: d.cols,
    nnz: w.sparse ? w.sparse.rowPtr[w.sparse.rows] : 0,
    sparse: w.sparse !== undefined,
    sparseDtype: w.sparse?.dtype ?? "f16",
  };
  if (d.kind === "f32") return { kind: "f32", bits: 32, ...base };
  if (d.kind === "f16") return { kind: "f16", bits: 16, ...base };
  if (d.kind === "lut") return { kind: "lut", bits: d.bits, ...base };
  return {
    kind: "uniform",
    bits: d.bits,
    ...base,
    groupsPerRow: nGroups(d),
    gIdx: d.gIdx !== undefined,
  };
}

/**
 * Information bits and stored bytes of a weight, part by part: the one size
 * accounting of quantizers, kernels, benchmarks and the results store.
 *
 * @param w the weight (any storage format, optional sparse part)
 * @param opts widths of the sparse index and row pointers in the information count
 * @returns the size report (`avgInfoBits`, `avgStoredBits`, per-part figures)
 * @example
 * ```ts
 * const s = sizeOf({ dense: f16Tensor(new Float32Array(8), 2, 4) });
 * s.avgInfoBits; // 16
 * s.storedBytes.total; // 16
 * ```
 */
export function sizeOf(w: LinearWeight, opts: SizeOptions = {}): SizeReport {
  return sizeOfLayout(layoutOf(w), opts);
}
