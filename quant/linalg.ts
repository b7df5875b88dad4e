/**
 * Dense symmetric-positive-definite linear algebra for GPTQ, in float64.
 *
 * GPTQ (IST-DASLab/gptq gptq.py, `fasterquant`) needs the upper Cholesky
 * factor of the inverse Hessian: `H = cholesky(H); H = cholesky_inverse(H);
 * Hinv = cholesky(H, upper=True)`, all in fp32 on the GPU. Here every step
 * runs in float64 (JavaScript's native number, so no slower than fp32 on the
 * CPU) which keeps the O(n³) eliminations accurate for n = 11008.
 *
 * All matrices are dense, square and row-major: `a[i * n + j]` is (i, j).
 * The plain route ({@linkcode cholesky} → {@linkcode choleskyInverse} →
 * {@linkcode upperCholesky}) costs n³/6 + n³/3 + n³/6 multiply-adds;
 * {@linkcode upperCholeskyOfInverse} reaches the same factor in n³/3 (see its
 * doc) and is the one GPTQ uses.
 *
 * {@linkcode upperCholeskyOfInverseSimd} is the same factor with the O(n³)
 * products in WebAssembly SIMD; {@linkcode upperCholeskyOfInverseF32} is it
 * in float32, GPTQ's own precision (GPTQ's fast path, quant/gptq_fast.ts).
 *
 * @module
 */
import { growMemory, solverKernels } from "../model/wasm/kernels.ts";
import { gptqKernels } from "./gptq_kernels.ts";

/** A matrix that is not (numerically) symmetric positive definite. */
export class NotPositiveDefiniteError extends RangeError {
  override name = "NotPositiveDefiniteError";
  /**
   * @param fn the function that failed
   * @param order order of the leading (or trailing) minor that is not positive definite
   * @param pivot the non-positive pivot found
   */
  constructor(fn: string, readonly order: number, readonly pivot: number) {
    super(
      `${fn}: the matrix is not positive definite (the minor of order ${order} has pivot ${pivot}, ` +
        `expected > 0)`,
    );
  }
}

function checkSquare(fn: string, a: ArrayLike<number>, n: number): void {
  if (!Number.isInteger(n) || n < 1 || a.length !== n * n) {
    throw new RangeError(`${fn}: expected an ${n}×${n} matrix (${n * n} values), got ${a.length}`);
  }
}

/**
 * Lower Cholesky factor L of a symmetric positive-definite A: A = L Lᵀ
 * (torch.linalg.cholesky). Only the lower triangle of A is read.
 *
 * @param a matrix [n, n], row-major
 * @param n order
 * @returns L [n, n], lower triangular (zeros above the diagonal)
 * @throws {NotPositiveDefiniteError} when a pivot is not positive
 * @example
 * ```ts
 * cholesky([4, 2, 2, 5], 2); // Float64Array [2, 0, 1, 2]
 * ```
 */
export function cholesky(a: ArrayLike<number>, n: number): Float64Array {
  checkSquare("cholesky()", a, n);
  const L = Float64Array.from(a);
  choleskyInPlace(L, n, "cholesky()");
  return L;
}

/** Columns per block of the blocked factorizations. */
const BLOCK = 64;

/**
 * Blocked right-looking Cholesky, in place: the lower triangle of A [n, n]
 * becomes L, the upper triangle is zeroed. Per block of BLOCK columns: factor
 * the diagonal block, solve the panel below it, then subtract the panel's
 * outer product from the trailing lower triangle (4-row × 4-column register
 * tiles over a transposed copy of the panel).
 */
function choleskyInPlace(A: Float64Array, n: number, fn: string): void {
  const PT = new Float64Array(BLOCK * n); // [BLOCK, n]: the panel transposed
  for (let kb = 0; kb < n; kb += BLOCK) {
    const be = Math.min(kb + BLOCK, n);
    // 1. diagonal block and 2. panel: for i ≥ kb, j in [kb, min(i, be)):
    //    A[i,j] = (A[i,j] − Σ_{kb≤k<j} A[i,k] A[j,k]) / A[j,j]; A[i,i] = sqrt(…)
    for (let i = kb; i < n; i++) {
      const ri = i * n;
      const je = Math.min(i + 1, be);
      for (let j = kb; j < je; j++) {
        const rj = j * n;
        let s = A[ri + j];
        for (let k = kb; k < j; k++) s -= A[ri + k] * A[rj + k];
        if (i === j) {
          if (!(s > 0)) throw new NotPositiveDefiniteError(fn, i + 1, s);
          A[ri + i] = Math.sqrt(s);
        } else {
          A[ri + j] = s / A[rj + j];
        }
      }
    }
    if (be >= n) break;
    // 3. trailing update A[i, j] −= Σ_{k in block} L[i,k] L[j,k] for be ≤ j ≤ i.
    const bw = be - kb;
    for (let t = 0; t < bw; t++) {
      const p = t * n, c = kb + t;
      for (let j = be; j < n; j++) PT[p + j] = A[j * n + c];
    }
    for (let i = be; i < n; i += 4) {
      const rowsHere = Math.min(4, n - i);
      // rows i..i+3 need columns be..i+3 (entries above the diagonal are scratch)
      subtractPanel(A, i * n, n, rowsHere, A, i * n + kb, n, bw, PT, 0, n, be, Math.min(i + 4, n));
    }
  }
  for (let i = 0; i < n; i++) A.fill(0, i * n + i + 1, (i + 1) * n);
}

/**
 * A register-tiled panel product on up to four rows:
 * C[r, j] −= Σ_{t<K} A[r, t] · B[t, j] for r < rows (≤ 4) and j0 ≤ j < j1,
 * with C[r, j] = C[cOff + r·ldc + j], A[r, t] = A[aOff + r·lda + t],
 * B[t, j] = B[bOff + t·ldb + j]. Four rows × four t per pass over j, so each
 * B value loaded serves four rows. The building block of the blocked
 * factorizations here and of GPTQ's H accumulation.
 */
export function subtractPanel(
  C: Float64Array,
  cOff: number,
  ldc: number,
  rows: number,
  A: Float64Array,
  aOff: number,
  lda: number,
  K: number,
  B: Float64Array,
  bOff: number,
  ldb: number,
  j0: number,
  j1: number,
): void {
  if (rows < 4) {
    for (let r = 0; r < rows; r++) {
      const c = cOff + r * ldc, ar = aOff + r * lda;
      for (let t = 0; t < K; t++) {
        const a = A[ar + t];
        if (a === 0) continue;
        const b = bOff + t * ldb;
        for (let j = j0; j < j1; j++) C[c + j] -= a * B[b + j];
      }
    }
    return;
  }
  const c0 = cOff, c1 = c0 + ldc, c2 = c1 + ldc, c3 = c2 + ldc;
  const r0 = aOff, r1 = r0 + lda, r2 = r1 + lda, r3 = r2 + lda;
  let t = 0;
  for (; t + 3 < K; t += 4) {
    const a00 = A[r0 + t], a01 = A[r0 + t + 1], a02 = A[r0 + t + 2], a03 = A[r0 + t + 3];
    const a10 = A[r1 + t], a11 = A[r1 + t + 1], a12 = A[r1 + t + 2], a13 = A[r1 + t + 3];
    const a20 = A[r2 + t], a21 = A[r2 + t + 1], a22 = A[r2 + t + 2], a23 = A[r2 + t + 3];
    const a30 = A[r3 + t], a31 = A[r3 + t + 1], a32 = A[r3 + t + 2], a33 = A[r3 + t + 3];
    const b0 = bOff + t * ldb, b1 = b0 + ldb, b2 = b1 + ldb, b3 = b2 + ldb;
    for (let j = j0; j < j1; j++) {
      const x0 = B[b0 + j], x1 = B[b1 + j], x2 = B[b2 + j], x3 = B[b3 + j];
      C[c0 + j] -= a00 * x0 + a01 * x1 + a02 * x2 + a03 * x3;
      C[c1 + j] -= a10 * x0 + a11 * x1 + a12 * x2 + a13 * x3;
      C[c2 + j] -= a20 * x0 + a21 * x1 + a22 * x2 + a23 * x3;
      C[c3 + j] -= a30 * x0 + a31 * x1 + a32 * x2 + a33 * x3;
    }
  }
  for (; t < K; t++) {
    const a0 = A[r0 + t], a1 = A[r1 + t], a2 = A[r2 + t], a3 = A[r3 + t];
    const b = bOff + t * ldb;
    for (let j = j0; j < j1; j++) {
      const x = B[b + j];
      C[c0 + j] -= a0 * x;
      C[c1 + j] -= a1 * x;
      C[c2 + j] -= a2 * x;
      C[c3 + j] -= a3 * x;
    }
  }
}

/**
 * Inverse X = L⁻¹ of a lower-triangular L [n, n] with a non-zero diagonal,
 * blocked by rows: X[i, :] = (e_i − Σ_{k<i} L[i,k] X[k, :]) / L[i,i], the
 * sum over earlier blocks done as one panel product per block of rows.
 *
 * @param L lower triangular [n, n] (entries above the diagonal are ignored)
 * @param n order
 * @returns L⁻¹ [n, n], lower triangular
 */
export function lowerTriangularInverse(L: Float64Array, n: number): Float64Array {
  checkSquare("lowerTriangularInverse()", L, n);
  const X = new Float64Array(n * n);
  for (let ib = 0; ib < n; ib += BLOCK) {
    const ie = Math.min(ib + BLOCK, n);
    // X[i, 0:ib] = −Σ_{k<ib} L[i,k] X[k, 0:ib]   (X[k, j] = 0 for j > k)
    if (ib > 0) {
      for (let i = ib; i < ie; i += 4) {
        const rowsHere = Math.min(4, ie - i);
        for (let k = 0; k < ib; k += BLOCK) {
          const kw = Math.min(BLOCK, ib - k);
          // rows k..k+kw of X are zero beyond column k+kw−1
          subtractPanel(X, i * n, n, rowsHere, L, i * n + k, n, kw, X, k * n, n, 0, k + kw);
        }
      }
    }
    // within the block: X[i, :] −= L[i,k] X[k, :] for ib ≤ k < i, then X[i,i] += 1, divide by L[i,i]
    for (let i = ib; i < ie; i++) {
      const ri = i * n;
      for (let k = ib; k < i; k++) {
        const l = L[ri + k];
        if (l === 0) continue;
        const rk = k * n;
        for (let j = 0; j <= k; j++) X[ri + j] -= l * X[rk + j];
      }
      X[ri + i] += 1;
      const d = L[ri + i];
      for (let j = 0; j <= i; j++) X[ri + j] /= d;
    }
  }
  return X;
}

/**
 * Upper Cholesky factor U of a symmetric positive-definite A: A = Uᵀ U
 * (torch.linalg.cholesky(A, upper=True)); U = Lᵀ.
 *
 * @param a matrix [n, n], row-major
 * @param n order
 * @returns U [n, n], upper triangular
 * @throws {NotPositiveDefiniteError} when a pivot is not positive
 */
export function upperCholesky(a: ArrayLike<number>, n: number): Float64Array {
  const L = cholesky(a, n);
  const U = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) U[j * n + i] = L[i * n + j];
  return U;
}

/**
 * A⁻¹ from the lower Cholesky factor L of A (torch.cholesky_inverse):
 * A⁻¹ = L⁻ᵀ L⁻¹. The result is exactly symmetric.
 *
 * @param L lower factor [n, n] from {@linkcode cholesky}
 * @param n order
 * @returns A⁻¹ [n, n]
 */
export function choleskyInverse(L: ArrayLike<number>, n: number): Float64Array {
  checkSquare("choleskyInverse()", L, n);
  // Linv = L⁻¹ (lower), row by row of Linvᵀ: solve L x = e_c for each column c.
  const Li = new Float64Array(n * n); // Li[c * n + r] = (L⁻¹)[r, c]: columns of L⁻¹ as rows
  for (let c = 0; c < n; c++) {
    const x = c * n;
    for (let r = c; r < n; r++) {
      let s = r === c ? 1 : 0;
      const lr = r * n;
      for (let k = c; k < r; k++) s -= L[lr + k] * Li[x + k];
      Li[x + r] = s / L[lr + r];
    }
  }
  // (A⁻¹)[i, j] = Σ_r (L⁻¹)[r, i] (L⁻¹)[r, j] = Σ_{r ≥ max(i,j)} Li[i, r] Li[j, r]
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let r = i; r < n; r++) s += Li[i * n + r] * Li[j * n + r];
      out[i * n + j] = s;
      out[j * n + i] = s;
    }
  }
  return out;
}

/**
 * Inverse of a symmetric positive-definite matrix through its Cholesky factor.
 *
 * @param a matrix [n, n]
 * @param n order
 * @returns A⁻¹ [n, n]
 * @throws {NotPositiveDefiniteError} when A is not positive definite
 */
export function spdInverse(a: ArrayLike<number>, n: number): Float64Array {
  return choleskyInverse(cholesky(a, n), n);
}

/**
 * The upper Cholesky factor U of A⁻¹ (A⁻¹ = Uᵀ U, U upper triangular with a
 * positive diagonal): GPTQ's `Hinv`, without forming A⁻¹.
 *
 * Route: let J be the order-reversing permutation. With L the Cholesky
 * factor of J A J (lower), A = M Mᵀ for the upper-triangular M = J L J, so
 * A⁻¹ = M⁻ᵀ M⁻¹ and U = M⁻¹ = J L⁻¹ J: upper triangular with a positive
 * diagonal, hence *the* upper Cholesky factor of A⁻¹. J X J of a row-major
 * matrix is its flat array reversed. Cost n³/6 (Cholesky) + n³/6 (triangular
 * inverse) multiply-adds, versus n³/6 + n³/3 + n³/6 for GPTQ's
 * cholesky → cholesky_inverse → cholesky(upper); tests check both agree.
 *
 * The matrix `a` is overwritten with scratch data (pass a copy to keep it).
 *
 * @param a symmetric positive-definite matrix [n, n], row-major (only its upper triangle is read)
 * @param n order
 * @returns U [n, n], upper triangular
 * @throws {NotPositiveDefiniteError} when A is not positive definite (the order
 *   reported counts from the last row, as the factorization runs backwards)
 */
export function upperCholeskyOfInverse(a: Float64Array, n: number): Float64Array {
  checkSquare("upperCholeskyOfInverse()", a, n);
  a.reverse(); // J A J: its lower triangle is A's upper triangle
  choleskyInPlace(a, n, "upperCholeskyOfInverse()");
  return lowerTriangularInverse(a, n).reverse();
}

/** Columns per block of {@linkcode upperCholeskyOfInverseSimd}. */
const SIMD_BLOCK = 32;
/** Columns per block of {@linkcode upperCholeskyOfInverseF32} (more reuse per pass over the trailing matrix). */
const F32_BLOCK = 64;
/** Rows per gemm_f64 call: calls stay short (model/wasm/kernels.ts `warmUp`). */
const CALL_ROWS = 256;
/** k per gemm_f64 call, or gemm_tri_f32 chunk, of the triangular inverse (a chunk of X's rows stays in L2). */
const K_CHUNK = 256;
/** Columns per block of a gemm_f64 call (K_CHUNK rows of them stay in L2). */
const J_BLOCK = 64;

/**
 * {@linkcode upperCholeskyOfInverse} with the O(n³) products in WebAssembly
 * SIMD (model/wasm/kernels.wat `gemm_f64`, float64, 4 × 4 register tiles):
 * the same route (Cholesky of J A J, then the inverse of the triangular
 * factor, reversed), the same blocked algorithms with blocks of 32 columns.
 * The Cholesky's trailing updates and the inverse's off-diagonal block rows
 * are `gemm_f64` calls (n³/6 multiply-adds each); the diagonal blocks and
 * panels (n²·16 multiply-adds each) stay in TypeScript. The matrix is
 * padded to a multiple of 4 with the identity, which changes nothing in
 * the n × n factor. Results agree with {@linkcode upperCholeskyOfInverse}
 * to rounding (the sums of a product are taken in another order).
 *
 * Memory: a fresh kernel instance per call holding 2·n'² doubles
 * (n' = ⌈n/4⌉·4; 256 MiB at n = 4096), released with it.
 *
 * @param a symmetric positive-definite matrix [n, n], row-major (only its upper triangle is read; not modified)
 * @param n order
 * @returns U [n, n], upper triangular, with A⁻¹ = Uᵀ U
 * @throws {NotPositiveDefiniteError} when A is not positive definite
 * @example
 * ```ts
 * upperCholeskyOfInverseSimd(new Float64Array([4, 0, 0, 1]), 2); // [0.5, 0, 0, 1]
 * ```
 */
export function upperCholeskyOfInverseSimd(a: Float64Array, n: number): Float64Array {
  const fn = "upperCholeskyOfInverseSimd()";
  checkSquare(fn, a, n);
  const np = (n + 3) & ~3;
  const ldt = np + 8; // row stride of PT and X: off multiples of 4 KiB (no L1 set aliasing)
  const offA = 0, offT = np * np * 8, offX = offT + SIMD_BLOCK * ldt * 8;
  const k = solverKernels(fn);
  growMemory(fn, k.memory, offX + np * ldt * 8);
  const mem = new Float64Array(k.memory.buffer);
  const A = mem.subarray(0, np * np); // [np, np]: J a J, identity beyond n
  const PT = mem.subarray(offT / 8, offT / 8 + SIMD_BLOCK * ldt); // [BLOCK, ldt]
  const X = mem.subarray(offX / 8, offX / 8 + np * ldt); // [np, ldt]
  loadReversedLower(a, n, A, np);

  // Cholesky, right-looking: per block, the diagonal block and the panel
  // below it here, the trailing lower triangle by gemm_f64 (mode 1).
  for (let kb = 0; kb < np; kb += SIMD_BLOCK) {
    const be = Math.min(kb + SIMD_BLOCK, np);
    factorBlockColumns(fn, A, np, kb, be);
    if (be >= np) break;
    const bw = be - kb, m = np - be;
    for (let t = 0; t < bw; t++) {
      const p = t * ldt, c = kb + t;
      for (let j = 0; j < m; j++) PT[p + j] = A[(be + j) * np + c];
    }
    // A[be:, be:] −= L[be:, kb:be] · PT, lower triangle (diagonal tiles whole),
    // in calls of CALL_ROWS rows (C[r, j] is entry (r + r0, j): doff = r0)
    for (let r0 = 0; r0 < m; r0 += CALL_ROWS) {
      const rows = Math.min(CALL_ROWS, m - r0), ro = (be + r0) * np;
      const cols = Math.min(m, r0 + rows); // no tile right of the diagonal
      k.gemm_f64(
        offA + (ro + kb) * 8,
        np * 8,
        offT,
        ldt * 8,
        offA + (ro + be) * 8,
        np * 8,
        rows,
        cols,
        bw,
        1,
        r0,
        J_BLOCK,
      );
    }
  }

  // X = L⁻¹ by block rows: X[ib:ie, :ib] = −L[ib:ie, :ib] · X[:ib, :ib] by
  // gemm_f64 (mode 2: X is lower triangular), then the block's own rows here.
  for (let ib = 0; ib < np; ib += SIMD_BLOCK) {
    const ie = Math.min(ib + SIMD_BLOCK, np);
    // in chunks of K_CHUNK k (their rows of X stay in L2); in chunk k0..k1 only
    // the columns j < k1 of X[k, j] (lower triangular) are non-zero: doff = −k0
    for (let k0 = 0; k0 < ib; k0 += K_CHUNK) {
      const k1 = Math.min(k0 + K_CHUNK, ib);
      k.gemm_f64(
        offA + (ib * np + k0) * 8,
        np * 8,
        offX + k0 * ldt * 8,
        ldt * 8,
        offX + ib * ldt * 8,
        ldt * 8,
        ie - ib,
        k1,
        k1 - k0,
        2,
        -k0,
        J_BLOCK,
      );
    }
    invertBlockRows(A, np, X, ldt, ib, ie);
  }

  // U = J X J on the leading n × n block: U[i, j] = X[n−1−i, n−1−j]
  return reversedUpper(X, ldt, n, new Float64Array(n * n));
}

/**
 * {@linkcode upperCholeskyOfInverse} in float32, in WebAssembly SIMD: GPTQ's
 * own precision (torch's fp32 `cholesky`, `cholesky_inverse`,
 * `cholesky(upper=True)` on the GPU), the reference's route (Cholesky of
 * J A J, inverse of the factor, reversed), blocks of 64 columns. Entries are
 * stored as float32. The O(n³) products (n³/6 multiply-adds each) are the
 * Cholesky's trailing updates, model/wasm/kernels.wat's `gemm_f32`, and the
 * inverse's block rows, quant/gptq_kernels.wat's `gemm_tri_f32` (X = L⁻¹
 * held in panels of 8 columns, read in order), both 4 × 8 register tiles of
 * fused multiply-adds; the diagonal blocks' and panels' eliminations (n²·32
 * multiply-adds each) are gptq_kernels.wat's `chol_panel_f32` and
 * `trinv_rows_f32`, which sum in float64 before each store exactly as plain
 * JavaScript would (the same bits on every engine). The matrix is padded to
 * a multiple of 8 with the identity. GPTQ's fast path (quant/gptq_fast.ts)
 * uses this factor, whose relative error is that of fp32 elimination (about
 * n·2⁻²⁴ times the condition number of A).
 *
 * @param a symmetric positive-definite matrix [n, n], row-major (only its upper triangle is read; not modified)
 * @param n order
 * @returns U [n, n] in float32, upper triangular, with A⁻¹ ≈ Uᵀ U
 * @throws {NotPositiveDefiniteError} when a pivot is not positive
 * @example
 * ```ts
 * upperCholeskyOfInverseF32(new Float64Array([4, 0, 0, 1]), 2); // [0.5, 0, 0, 1]
 * ```
 */
export function upperCholeskyOfInverseF32(a: Float64Array, n: number): Float32Array {
  const fn = "upperCholeskyOfInverseF32()";
  checkSquare(fn, a, n);
  const B = F32_BLOCK;
  const np = (n + 7) & ~7;
  const ldt = np + 16; // floats per row of PT: off multiples of 4 KiB
  // Memory (floats): A [np, np]; PT [B, ldt]; packed panels [np/8, B, 8];
  // X [np/8, np, 8] (panels of 8 columns); D [B, B] float64
  const oA = 0, oT = np * np, oP = oT + B * ldt, oX = oP + np * B, oD = oX + np * np;
  const k = gptqKernels(fn);
  growMemory(fn, k.memory, (oD + 2 * B * B) * 4);
  const mem = new Float32Array(k.memory.buffer);
  const A = mem.subarray(oA, oT), XP = mem.subarray(oX, oD);
  const D = new Float64Array(k.memory.buffer, oD * 4, B * B); // [bw, bw]: a diagonal block of L
  loadReversedLower(a, n, A, np);

  // Cholesky, right-looking, per block of columns kb..be: the diagonal block
  // here; the panel below it by chol_panel_f32 on its transpose PT; the
  // trailing lower triangle A[be:, be:] += PTᵀ · (−PT) by gemm_f32 (mode 2)
  for (let kb = 0; kb < np; kb += B) {
    const be = Math.min(kb + B, np), bw = be - kb, m = np - be;
    factorBlockColumns(fn, A, np, kb, be, be);
    if (be >= np) break;
    diagonalBlock(A, np, kb, bw, D);
    const panel = (oA + be * np + kb) * 4; // L[be:, kb:be], np floats a row
    k.transpose_f32(panel, np * 4, oT * 4, ldt * 4, m, bw); // PT[t, j] = A[be + j, kb + t]
    k.chol_panel_f32(oT * 4, ldt * 4, oD * 4, bw, m);
    k.transpose_f32(oT * 4, ldt * 4, panel, np * 4, bw, m);
    k.pack_t_f32(panel, np * 4, oP * 4, m, bw, 1); // P = −PT in panels of 8 columns
    for (let r0 = 0; r0 < m; r0 += CALL_ROWS) {
      const rows = Math.min(CALL_ROWS, m - r0);
      k.gemm_f32(
        (oT + r0) * 4,
        32,
        ldt * 4,
        oP * 4,
        bw,
        (oA + (be + r0) * np + be) * 4,
        np * 4,
        rows,
        r0 + rows,
        128,
        2,
        r0,
        1, // fused multiply-add
      );
    }
  }

  // X = L⁻¹ by block rows, X in panels of 8 columns (X[i, j] at
  // XP[(j >> 3)·np·8 + i·8 + (j & 7)]): X[ib:ie, :ib] = −L[ib:ie, :ib] · X[:ib, :ib]
  // by gemm_tri_f32 (X[k, j] = 0 for k < j), then the block's own rows by
  // trinv_rows_f32.
  for (let ib = 0; ib < np; ib += B) {
    const ie = Math.min(ib + B, np), w = ie - ib;
    if (ib > 0) {
      k.pack_t_f32((oA + ib * np) * 4, np * 4, oP * 4, w, ib, 1); // P[r, t] = −L[ib + r, t], 8-row panels
      k.gemm_tri_f32(oP * 4, ib * 32, oX * 4, np * 32, (oX + ib * 8) * 4, w, ib, ib, K_CHUNK);
    }
    diagonalBlock(A, np, ib, w, D);
    k.trinv_rows_f32(oX * 4, 32, np * 32, oD * 4, ib, w);
  }

  // U = J X J on the leading n × n block: U[i, i + m] = X[n−1−i, n−1−i−m]
  const U = new Float32Array(n * n);
  for (let i = 0; i < n; i++) {
    const s = n - 1 - i, dst = i * n + i;
    for (let j = 0; j <= s; j++) U[dst + s - j] = XP[(j >> 3) * np * 8 + s * 8 + (j & 7)];
  }
  return U;
}

// Steps shared by upperCholeskyOfInverseSimd (float64) and
// upperCholeskyOfInverseF32 (float32 storage, sums in float64 before each
// store): A [np, np] and X [np, ldt] are row-major views of wasm memory.

/** A [np, np] = lower triangle of J a J (J reverses the order), identity beyond n. */
function loadReversedLower<M extends Float32Array | Float64Array>(
  a: Float64Array,
  n: number,
  A: M,
  np: number,
): void {
  for (let i = 0; i < n; i++) {
    // A[i, j] = a[n−1−i, n−1−j] for j ≤ i: row n−1−i of a from its diagonal on, reversed
    const s = n - 1 - i, row = A.subarray(i * np, i * np + i + 1);
    row.set(a.subarray(s * n + s, s * n + n));
    row.reverse();
  }
  for (let i = n; i < np; i++) A[i * np + i] = 1;
}

/**
 * Cholesky of columns kb..be of A [np, np] in place (their trailing update
 * done), rows kb..ie: the diagonal block and the panel below it down to row
 * ie, L in the lower triangle.
 *
 * @throws {NotPositiveDefiniteError} when a pivot is not positive
 */
function factorBlockColumns<M extends Float32Array | Float64Array>(
  fn: string,
  A: M,
  np: number,
  kb: number,
  be: number,
  ie: number = np,
): void {
  for (let i = kb; i < ie; i++) {
    const ri = i * np;
    const je = Math.min(i + 1, be);
    for (let j = kb; j < je; j++) {
      const rj = j * np;
      let s = A[ri + j];
      for (let t = kb; t < j; t++) s -= A[ri + t] * A[rj + t];
      if (i === j) {
        if (!(s > 0)) throw new NotPositiveDefiniteError(fn, i + 1, s);
        A[ri + i] = Math.sqrt(s);
      } else {
        A[ri + j] = s / A[rj + j];
      }
    }
  }
}

/** D [w, w] = the lower triangle of A's diagonal block at (b, b), as float64 (the kernels' L_d). */
function diagonalBlock(A: Float32Array, np: number, b: number, w: number, D: Float64Array): void {
  for (let r = 0; r < w; r++) D.set(A.subarray((b + r) * np + b, (b + r) * np + b + r + 1), r * w);
}

/**
 * Rows ib..ie of X = L⁻¹ (L in the lower triangle of A [np, np], X [np, ldt]),
 * X[ib:ie, :ib] already holding −L[ib:ie, :ib] · X[:ib, :ib]: the block's own
 * forward substitution.
 */
function invertBlockRows(
  A: Float64Array,
  np: number,
  X: Float64Array,
  ldt: number,
  ib: number,
  ie: number,
): void {
  for (let i = ib; i < ie; i++) {
    const ri = i * ldt, li = i * np;
    for (let t = ib; t < i; t++) {
      const l = A[li + t];
      if (l === 0) continue;
      const rt = t * ldt;
      for (let j = 0; j <= t; j++) X[ri + j] -= l * X[rt + j];
    }
    X[ri + i] += 1;
    const d = A[li + i];
    for (let j = 0; j <= i; j++) X[ri + j] /= d;
  }
}

/** U [n, n] = J X J on the leading n × n block of X [np, ldt]: U[i, j] = X[n−1−i, n−1−j], upper triangle; X is scratch. */
function reversedUpper<M extends Float32Array | Float64Array>(
  X: M,
  ldt: number,
  n: number,
  U: M,
): M {
  for (let i = 0; i < n; i++) {
    // U[i, i..n) = row n−1−i of X up to its diagonal, reversed (in place)
    const s = n - 1 - i, row = X.subarray(s * ldt, s * ldt + s + 1);
    row.reverse();
    U.set(row, i * n + i);
  }
  return U;
}
