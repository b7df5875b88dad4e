/**
 * Matrix multiply for the CPU forward pass: the hot loop of every linear layer.
 *
 * Three versions of one contract ({@linkcode MatmulFn}, model/wasm/kernels.ts),
 * out [T, d] = x [T, n] @ Wᵀ with W [d, n]:
 *
 * - {@linkcode matmulRef}: plain triple loop, float64 accumulation.
 * - {@linkcode matmulBlocked}: pure TypeScript, 4 × 4 register tiles,
 *   float64 accumulation in the same order as the reference, so its results
 *   are bit-identical to {@linkcode matmulRef} (about 2.2× its speed).
 * - {@linkcode matmulWasm}: WebAssembly SIMD (model/wasm/kernels.wat),
 *   2 × 4 tiles of f32x4 accumulators, float32 accumulation; within a
 *   relative 1e-5 of the reference (tested up to n = 4100).
 *
 * Speed on one core of the 2-core CI machine (`deno run -A
 * eval/bench/matmul.ts`, CPU time): on the stories260K shapes at T = 512,
 * ref ≈ 2.5, blocked ≈ 5.7, wasm ≈ 31–39 GFLOP/s (copies included); on
 * 4096 × 4096 at T = 8, 2.1 / 5.7 / 13.7 GFLOP/s.
 *
 * {@linkcode matmul} is the fastest available, chosen once at load:
 * matmulWasm wherever WebAssembly SIMD exists (every current Deno), else
 * matmulBlocked. {@linkcode MATMUL_KIND} says which.
 *
 * @module
 */
import {
  checkMatmulArgs,
  FORWARD_KERNELS,
  type MatmulFn,
  WASM_SIMD,
  withoutSimd,
} from "./wasm/kernels.ts";

/**
 * out[t, o] = Σ_i x[t, i] · W[o, i] for t < T  (x @ Wᵀ; W is [d, n] row-major).
 * x: [T, n], w: [d, n], out: [T, d]. Plain reference version.
 */
export const matmulRef: MatmulFn = (out, x, w, T, n, d) => {
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < d; o++) {
      let s = 0;
      for (let i = 0; i < n; i++) s += x[t * n + i] * w[o * n + i];
      out[t * d + o] = s;
    }
  }
};

/**
 * Same contract as {@linkcode matmulRef}, in pure TypeScript: 4 rows of x ×
 * 4 rows of W per register tile (16 accumulators), single rows and columns
 * for the tails. Each output is summed in float64 in i order, exactly as in
 * the reference, so the results are bit-identical to it.
 *
 * @param out [T, d], written
 * @param x [T, n]
 * @param w [d, n], row-major
 * @example
 * ```ts
 * const out = new Float32Array(1);
 * matmulBlocked(out, new Float32Array([1, 2]), new Float32Array([3, 4]), 1, 2, 1); // out[0] = 11
 * ```
 */
export const matmulBlocked: MatmulFn = (out, x, w, T, n, d) => {
  checkMatmulArgs("matmulBlocked", out, x, w, T, n, d);
  let t = 0;
  for (; t + 4 <= T; t += 4) {
    const x0 = t * n, x1 = x0 + n, x2 = x1 + n, x3 = x2 + n;
    let o = 0;
    for (; o + 4 <= d; o += 4) {
      const w0 = o * n, w1 = w0 + n, w2 = w1 + n, w3 = w2 + n;
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      let s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
      for (let i = 0; i < n; i++) {
        const a0 = x[x0 + i], a1 = x[x1 + i], a2 = x[x2 + i], a3 = x[x3 + i];
        const b0 = w[w0 + i], b1 = w[w1 + i], b2 = w[w2 + i], b3 = w[w3 + i];
        s00 += a0 * b0, s01 += a0 * b1, s02 += a0 * b2, s03 += a0 * b3;
        s10 += a1 * b0, s11 += a1 * b1, s12 += a1 * b2, s13 += a1 * b3;
        s20 += a2 * b0, s21 += a2 * b1, s22 += a2 * b2, s23 += a2 * b3;
        s30 += a3 * b0, s31 += a3 * b1, s32 += a3 * b2, s33 += a3 * b3;
      }
      let q = t * d + o;
      out[q] = s00, out[q + 1] = s01, out[q + 2] = s02, out[q + 3] = s03, q += d;
      out[q] = s10, out[q + 1] = s11, out[q + 2] = s12, out[q + 3] = s13, q += d;
      out[q] = s20, out[q + 1] = s21, out[q + 2] = s22, out[q + 3] = s23, q += d;
      out[q] = s30, out[q + 1] = s31, out[q + 2] = s32, out[q + 3] = s33;
    }
    for (; o < d; o++) { // 4 × 1 tail
      const wo = o * n;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let i = 0; i < n; i++) {
        const b = w[wo + i];
        s0 += x[x0 + i] * b, s1 += x[x1 + i] * b, s2 += x[x2 + i] * b, s3 += x[x3 + i] * b;
      }
      out[t * d + o] = s0, out[(t + 1) * d + o] = s1;
      out[(t + 2) * d + o] = s2, out[(t + 3) * d + o] = s3;
    }
  }
  for (; t < T; t++) { // single rows of x: 1 × 4, then 1 × 1
    const x0 = t * n;
    let o = 0;
    for (; o + 4 <= d; o += 4) {
      const w0 = o * n, w1 = w0 + n, w2 = w1 + n, w3 = w2 + n;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let i = 0; i < n; i++) {
        const a = x[x0 + i];
        s0 += a * w[w0 + i], s1 += a * w[w1 + i], s2 += a * w[w2 + i], s3 += a * w[w3 + i];
      }
      const q = t * d + o;
      out[q] = s0, out[q + 1] = s1, out[q + 2] = s2, out[q + 3] = s3;
    }
    for (; o < d; o++) {
      const wo = o * n;
      let s = 0;
      for (let i = 0; i < n; i++) s += x[x0 + i] * w[wo + i];
      out[t * d + o] = s;
    }
  }
};

/**
 * Same contract as {@linkcode matmulRef}, in WebAssembly SIMD
 * (model/wasm/kernels.wat, the shared `FORWARD_KERNELS` instance): copies x
 * and W into the module's memory (rows zero-padded to a multiple of 4),
 * computes with 2 × 4 tiles of f32x4 accumulators in float32 (blocks of x
 * rows sized for L1 inside blocks of W rows sized for L2), copies out
 * back. Any T, n, d.
 *
 * @param out [T, d], written
 * @param x [T, n]
 * @param w [d, n], row-major
 * @throws Error when the engine has no WebAssembly SIMD; RangeError on bad shapes.
 * @example
 * ```ts
 * const out = new Float32Array(1);
 * matmulWasm(out, new Float32Array([1, 2]), new Float32Array([3, 4]), 1, 2, 1); // out[0] = 11
 * ```
 */
export const matmulWasm: MatmulFn = FORWARD_KERNELS?.matmul ??
  withoutSimd("matmulWasm", "use matmulBlocked");

/** Which version {@linkcode matmul} is: "wasm" where WebAssembly SIMD exists, else "blocked". */
export const MATMUL_KIND: "wasm" | "blocked" = WASM_SIMD ? "wasm" : "blocked";

/**
 * Same contract as {@linkcode matmulRef}; the fast version used by the forward
 * pass: {@linkcode matmulWasm}, or {@linkcode matmulBlocked} on an engine
 * without WebAssembly SIMD (see {@linkcode MATMUL_KIND}).
 */
export const matmul: MatmulFn = WASM_SIMD ? matmulWasm : matmulBlocked;
