/**
 * The weights a matrix-vector kernel takes: a dense part in one of four
 * storage formats (fp32, fp16, or quant/format.ts's `uniform` / `lut`) plus an
 * optional CSR sparse part, exactly as quant/format.ts lays them out.
 *
 * @module
 */
import type { CsrMatrix, DenseTensor } from "../quant/format.ts";
import { checkBits, nGroups, wordsPerRow } from "../quant/format.ts";

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

/** Any dense weight a kernel accepts. */
export type KernelDense = F32Tensor | F16Tensor | DenseTensor;

/** A linear layer's weight W [rows = out, cols = in] = dense + sparse. */
export interface LinearWeight {
  dense: KernelDense;
  sparse?: CsrMatrix;
}

/** The storage format name used in tables: "f32", "f16", "uniform", "lut". */
export type DenseFormat = KernelDense["kind"];

/** Bytes of each stored part of a weight, as the kernels read them. */
export interface WeightBytes {
  /** Codes or fp32/fp16 values. */
  dense: number;
  /** Scales + zeros (uniform) or lookup tables (lut). */
  meta: number;
  /** gIdx (act-order uniform only). */
  gIdx: number;
  /** rowPtr + colIdx + values of the sparse part. */
  sparse: number;
  total: number;
}

/**
 * Bytes of every part of `w` (what a matvec must read at least once).
 * @param w the weight
 */
export function weightBytes(w: LinearWeight): WeightBytes {
  const d = w.dense;
  let dense = 0, meta = 0, gIdx = 0;
  if (d.kind === "f32" || d.kind === "f16") dense = d.data.byteLength;
  else {
    dense = d.codes.byteLength;
    if (d.kind === "lut") meta = d.lut.byteLength;
    else {
      meta = d.scales.byteLength + d.zeros.byteLength;
      gIdx = d.gIdx?.byteLength ?? 0;
    }
  }
  const s = w.sparse;
  const sparse = s ? s.rowPtr.byteLength + s.colIdx.byteLength + s.values.byteLength : 0;
  return { dense, meta, gIdx, sparse, total: dense + meta + gIdx + sparse };
}

/**
 * Average stored bits per weight (all parts) over rows·cols.
 * @param w the weight
 */
export function averageBits(w: LinearWeight): number {
  return (weightBytes(w).total * 8) / (w.dense.rows * w.dense.cols);
}

/**
 * Checks every array length of `w` against its declared shape; throws a
 * RangeError naming the field, the expected and the found length.
 * @param w the weight
 * @param what name used in messages
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
