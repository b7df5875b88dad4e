/**
 * CPU references of every GPU matrix-vector kernel: the same math, read from
 * the same packed layout (quant/format.ts's codeAt / fromF16), written as
 * plainly as possible. Weights are decoded to fp32 exactly as the kernels do
 * (uniform: s·(q − z); lut: lut[q]; fp16: the half's value) and products are
 * accumulated in float64.
 *
 * @module
 */
import type { LinearWeight, StoredDense } from "../quant/format.ts";
import { codeAt, csrValues, fromF16, groupOf, nGroups, validateWeight } from "../quant/format.ts";

/**
 * y[b, r] = Σ_c W[r, c] · x[b, c] for the dense part of a weight.
 *
 * @param dense the dense weight [rows, cols]
 * @param x activations [batch, cols]
 * @param batch number of activation rows
 * @returns y [batch, rows]
 */
export function denseMatvecRef(dense: StoredDense, x: Float32Array, batch: number): Float32Array {
  const { rows, cols } = dense;
  checkX(x, batch, cols);
  const y = new Float32Array(batch * rows);
  const wRow = new Float32Array(cols);
  const f = Math.fround;
  let lut: Float32Array | undefined,
    scales: Float32Array | undefined,
    zeros: Float32Array | undefined;
  let halves: Float32Array | undefined;
  if (dense.kind === "lut") lut = fromF16(dense.lut);
  if (dense.kind === "uniform") [scales, zeros] = [fromF16(dense.scales), fromF16(dense.zeros)];
  if (dense.kind === "f16") halves = fromF16(dense.data);
  const ng = dense.kind === "uniform" ? nGroups(dense) : 0;
  for (let r = 0; r < rows; r++) {
    // Decode row r to fp32 the way the kernels do.
    for (let c = 0; c < cols; c++) {
      switch (dense.kind) {
        case "f32":
          wRow[c] = dense.data[r * cols + c];
          break;
        case "f16":
          wRow[c] = halves![r * cols + c];
          break;
        case "lut":
          wRow[c] = lut![(r << dense.bits) + codeAt(dense.codes, cols, dense.bits, r, c)];
          break;
        case "uniform": {
          const g = r * ng + groupOf(dense, c);
          const q = codeAt(dense.codes, cols, dense.bits, r, c);
          wRow[c] = f(scales![g] * f(q - zeros![g]));
          break;
        }
      }
    }
    for (let b = 0; b < batch; b++) {
      let s = 0;
      for (let c = 0; c < cols; c++) s += wRow[c] * x[b * cols + c];
      y[b * rows + r] = s;
    }
  }
  return y;
}

/**
 * Adds the sparse part: y[b, r] += Σ_k values[k] · x[b, colIdx[k]] over row r's nonzeros.
 *
 * @param sparse CSR matrix [rows, cols]
 * @param x activations [batch, cols]
 * @param batch number of activation rows
 * @param y output [batch, rows], updated in place
 * @returns y
 */
export function sparseMatvecAddRef(
  sparse: LinearWeight["sparse"] & object,
  x: Float32Array,
  batch: number,
  y: Float32Array,
): Float32Array {
  const { rows, cols, rowPtr, colIdx } = sparse;
  checkX(x, batch, cols);
  const v = csrValues(sparse);
  for (let b = 0; b < batch; b++) {
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let k = rowPtr[r]; k < rowPtr[r + 1]; k++) s += v[k] * x[b * cols + colIdx[k]];
      y[b * rows + r] += s;
    }
  }
  return y;
}

/**
 * The reference of every kernel: y [batch, rows] = (dense + sparse) · xᵀ.
 *
 * @param w the weight
 * @param x activations [batch, cols]
 * @param batch number of activation rows
 * @returns y [batch, rows]
 * @example
 * ```ts
 * const w = { dense: { kind: "f32", rows: 2, cols: 2, data: new Float32Array([1, 2, 3, 4]) } } as const;
 * matvecRef(w, new Float32Array([1, 1]), 1); // Float32Array [3, 7]
 * ```
 */
export function matvecRef(w: LinearWeight, x: Float32Array, batch: number): Float32Array {
  validateWeight(w);
  const y = denseMatvecRef(w.dense, x, batch);
  return w.sparse ? sparseMatvecAddRef(w.sparse, x, batch, y) : y;
}

function checkX(x: Float32Array, batch: number, cols: number): void {
  if (!(Number.isInteger(batch) && batch >= 1)) {
    throw new RangeError(`matvec: batch must be a positive integer, got ${batch}`);
  }
  if (x.length !== batch * cols) {
    throw new RangeError(
      `matvec: x must hold batch×cols = ${batch}×${cols} values, found ${x.length}`,
    );
  }
}
