import assert from "node:assert/strict";
import {
  cholesky,
  choleskyInverse,
  lowerTriangularInverse,
  NotPositiveDefiniteError,
  spdInverse,
  upperCholesky,
  upperCholeskyOfInverse,
  upperCholeskyOfInverseF32,
  upperCholeskyOfInverseSimd,
} from "./linalg.ts";
import { randn } from "../model/random.ts";

// The classic example A = L Lᵀ with L = [[2,0,0],[6,1,0],[−8,5,3]].
const A3 = [4, 12, -16, 12, 37, -43, -16, -43, 98];

function close(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(a.length, b.length, what);
  let scale = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  for (let i = 0; i < a.length; i++) {
    assert.ok(
      Math.abs(a[i] - b[i]) <= tol * Math.max(scale, 1),
      `${what}[${i}]: ${a[i]} vs ${b[i]}`,
    );
  }
}

/** A random SPD matrix XᵀX/m + 0.01·I of order n. */
function randomSpd(n: number, seed: number): Float64Array {
  const m = n + 3;
  const X = randn(m * n, seed);
  const A = new Float64Array(n * n);
  for (let t = 0; t < m; t++) {
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) A[i * n + j] += (X[t * n + i] * X[t * n + j]) / m;
    }
  }
  for (let i = 0; i < n; i++) A[i * n + i] += 0.01;
  return A;
}

function matmul(a: ArrayLike<number>, b: ArrayLike<number>, n: number): Float64Array {
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < n; k++) {
      for (let j = 0; j < n; j++) c[i * n + j] += a[i * n + k] * b[k * n + j];
    }
  }
  return c;
}

function transpose(a: ArrayLike<number>, n: number): Float64Array {
  const t = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) t[j * n + i] = a[i * n + j];
  return t;
}

const identity = (n: number) =>
  Float64Array.from({ length: n * n }, (_, i) => (i % (n + 1) === 0 ? 1 : 0));

Deno.test("cholesky() factors the textbook 3×3 example", () => {
  assert.deepEqual(Array.from(cholesky(A3, 3)), [2, 0, 0, 6, 1, 0, -8, 5, 3]);
  assert.deepEqual(Array.from(upperCholesky(A3, 3)), [2, 6, -8, 0, 1, 5, 0, 0, 3]);
});

Deno.test("spdInverse() and upperCholeskyOfInverse() match numpy on the 3×3 example", () => {
  // numpy.linalg.inv(A) · 36, and numpy.linalg.cholesky(inv(A)).T (float64)
  const inv36 = [1777, -488, 76, -488, 136, -20, 76, -20, 4];
  close(spdInverse(A3, 3), inv36.map((v) => v / 36), 1e-13, "inverse");
  const U = [
    ...[7.025746302786002, -1.9294114776362234, 0.3004821153695758],
    ...[0, 0.23483851418237925, 0.10304138887594266],
    ...[0, 0, 0.10101525445522072],
  ];
  close(upperCholeskyOfInverse(Float64Array.from(A3), 3), U, 1e-13, "U");
});

Deno.test("upperCholeskyOfInverse() agrees with cholesky → choleskyInverse → upperCholesky across block edges", () => {
  for (const n of [1, 2, 5, 63, 64, 65, 130]) {
    const A = randomSpd(n, n);
    const L = cholesky(A, n);
    close(matmul(L, transpose(L, n), n), A, 1e-12, `L·Lᵀ n=${n}`);
    const plain = upperCholesky(choleskyInverse(L, n), n);
    const fast = upperCholeskyOfInverse(Float64Array.from(A), n);
    close(fast, plain, 1e-9, `U n=${n}`);
    // Uᵀ U A = I
    close(matmul(matmul(transpose(fast, n), fast, n), A, n), identity(n), 1e-9, `UᵀU·A n=${n}`);
    for (let i = 0; i < n; i++) {
      assert.ok(fast[i * n + i] > 0, "positive diagonal");
      for (let j = 0; j < i; j++) assert.equal(fast[i * n + j], 0, "upper triangular");
    }
  }
});

Deno.test("lowerTriangularInverse() inverts a lower-triangular matrix", () => {
  const n = 70;
  const L = cholesky(randomSpd(n, 7), n);
  const X = lowerTriangularInverse(L, n);
  close(matmul(L, X, n), identity(n), 1e-10, "L·L⁻¹");
});

Deno.test("cholesky() and upperCholeskyOfInverse() reject matrices that are not positive definite", () => {
  assert.throws(() => cholesky([1, 2, 2, 1], 2), NotPositiveDefiniteError);
  assert.throws(() => cholesky([1, 2, 2, 1], 2), /minor of order 2 has pivot -3, expected > 0/);
  assert.throws(
    () => upperCholeskyOfInverse(Float64Array.from([0, 0, 0, 1]), 2),
    NotPositiveDefiniteError,
  );
  assert.throws(() => cholesky([1, 2, 3], 2), /expected an 2×2 matrix \(4 values\), got 3/);
});

Deno.test("upperCholeskyOfInverseSimd() and upperCholeskyOfInverseF32() give upperCholeskyOfInverse()'s factor (every block path, padded orders)", () => {
  // 1..7: padding only; 70, 133: partial blocks; 200: several blocks of both
  for (const n of [1, 3, 7, 70, 133, 200]) {
    const A = randomSpd(n, 40 + n);
    const want = upperCholeskyOfInverse(A.slice(), n);
    const keep = A.slice();
    const got64 = upperCholeskyOfInverseSimd(A, n);
    assert.deepEqual(A, keep, "the input is not modified");
    close(got64, want, 1e-10, `f64 n=${n}`);
    const got32 = upperCholeskyOfInverseF32(A, n);
    assert.ok(got32 instanceof Float32Array);
    close(got32, want, 2e-4, `f32 n=${n}`);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < i; j++) {
        assert.equal(got64[i * n + j], 0, `f64 (${i}, ${j}) below the diagonal`);
        assert.equal(got32[i * n + j], 0, `f32 (${i}, ${j}) below the diagonal`);
      }
    }
  }
});

Deno.test("upperCholeskyOfInverseSimd() and upperCholeskyOfInverseF32() reject a matrix that is not positive definite", () => {
  const bad = new Float64Array([1, 2, 2, 1]); // eigenvalues 3 and −1
  assert.throws(() => upperCholeskyOfInverseSimd(bad, 2), NotPositiveDefiniteError);
  assert.throws(() => upperCholeskyOfInverseF32(bad, 2), NotPositiveDefiniteError);
  assert.throws(() => upperCholeskyOfInverseF32(bad, 3), /expected an 3×3 matrix/);
});
