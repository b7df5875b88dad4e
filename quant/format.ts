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
