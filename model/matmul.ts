/**
 * Matrix multiply for the CPU forward pass: the hot loop of every linear layer.
 *
 * @module
 */

/**
 * out[t, o] = Σ_i x[t, i] · W[o, i] for t < T  (x @ Wᵀ; W is [d, n] row-major).
 * x: [T, n], w: [d, n], out: [T, d]. Plain reference version.
 */
export function matmulRef(
  out: Float32Array,
  x: Float32Array,
  w: Float32Array,
  T: number,
  n: number,
  d: number,
): void {
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < d; o++) {
      let s = 0;
      for (let i = 0; i < n; i++) s += x[t * n + i] * w[o * n + i];
      out[t * d + o] = s;
    }
  }
}

/** Same contract as {@linkcode matmulRef}; the fast version used by the forward pass. */
export const matmul: typeof matmulRef = matmulRef;
