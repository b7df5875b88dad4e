import assert from "node:assert/strict";
import {
  growMemory,
  KERNELS_WASM_BYTES,
  solverKernels,
  WASM_SIMD,
  WasmKernels,
} from "./kernels.ts";
import { matmulRef } from "../matmul.ts";
import { randn } from "../random.ts";
import { maxRelError } from "../../datasets/testing.ts";

Deno.test("WASM_SIMD is true in Deno and the kernels export the forward's and GPTQ's kernels and memory", () => {
  assert.equal(WASM_SIMD, true);
  const names = WebAssembly.Module.exports(new WebAssembly.Module(KERNELS_WASM_BYTES))
    .map((e) => e.name).sort();
  assert.deepEqual(names, [
    "attention",
    "attention_hs8",
    "gemm_f32",
    "gemm_f64",
    "gptq_block",
    "matmul",
    "memory",
    "rmsnorm",
    "softmax_sums",
    "swiglu",
  ]);
});

Deno.test("WasmKernels grows its memory to fit a call and keeps it for smaller ones", () => {
  const k = new WasmKernels();
  const before = k.memoryBytes;
  const T = 64, n = 301, d = 90; // padded: n → 304, d → 92
  const need = (T * 304 + 92 * 304 + T * 92) * 4;
  const x = randn(T * n, 1), w = randn(d * n, 2), out = new Float32Array(T * d);
  k.matmul(out, x, w, T, n, d);
  assert.ok(before < need && k.memoryBytes >= need, `${before} → ${k.memoryBytes}, need ${need}`);
  const want = new Float32Array(T * d);
  matmulRef(want, x, w, T, n, d);
  assert.ok(maxRelError(out, want) <= 1e-5);
  const grown = k.memoryBytes;
  k.matmul(new Float32Array(4), new Float32Array(4), new Float32Array(2), 2, 2, 1);
  assert.equal(k.memoryBytes, grown);
});

Deno.test("WasmKernels instances have separate memories and agree bit for bit", () => {
  const a = new WasmKernels(), b = new WasmKernels();
  const T = 17, n = 64, d = 172;
  const x = randn(T * n, 3), w = randn(d * n, 4);
  const outA = new Float32Array(T * d), outB = new Float32Array(T * d);
  a.matmul(outA, x, w, T, n, d);
  b.matmul(new Float32Array(3 * 5), randn(3 * 7, 5), randn(5 * 7, 6), 3, 7, 5); // other data in b
  b.matmul(outB, x, w, T, n, d);
  assert.deepEqual(outB, outA);
});

Deno.test("solverKernels(): gemm_f32 in every mode, fused or not, equals a float64 reference within fp32 rounding", () => {
  const k = solverKernels("kernels_test");
  growMemory("kernels_test", k.memory, 1 << 20);
  const f = new Float32Array(k.memory.buffer);
  const R = 12, J = 16, K = 9, oA = 0, oB = 1024, oC = 4096; // floats
  // A row-major [K, R] (s8 = 32: four rows of a tile are consecutive floats), B packed [J/8, K, 8]
  const A = randn(K * R, 21), B = randn(K * J, 22), C0 = randn(R * J, 23);
  f.set(A, oA);
  for (let kk = 0; kk < K; kk++) {
    for (let j = 0; j < J; j++) f[oB + (j >> 3) * K * 8 + kk * 8 + (j & 7)] = B[kk * J + j];
  }
  const modes = [[0, 0], [1, 0], [1, 4], [2, 0], [2, -4], [3, 0], [3, 2]];
  for (const [mode, doff, fused] of modes.flatMap(([m, d]) => [[m, d, 0], [m, d, 1]])) {
    f.set(C0, oC);
    k.gemm_f32(oA * 4, 32, R * 4, oB * 4, K, oC * 4, J * 4, R, J, 8, mode, doff, fused);
    for (let r = 0; r < R; r++) {
      const t = (r & ~3) + doff; // the tile's row in the triangle
      for (let j = 0; j < J; j++) {
        const j0 = j & ~7;
        const kept = mode === 1 ? j0 + 8 > t : mode === 2 ? j0 <= t + 3 : true;
        let s = C0[r * J + j];
        if (kept) {
          for (let kk = mode === 3 ? Math.max(0, t) : 0; kk < K; kk++) {
            s += A[kk * R + r] * B[kk * J + j];
          }
        }
        const got = f[oC + r * J + j];
        assert.ok(
          Math.abs(got - s) <= 1e-5 * (1 + Math.abs(s)),
          `mode ${mode}/${doff}, fused ${fused} (${r}, ${j}): ${got} vs ${s}`,
        );
      }
    }
  }
});

Deno.test("solverKernels(): gemm_f64 in every mode equals a float64 reference", () => {
  const k = solverKernels("kernels_test");
  growMemory("kernels_test", k.memory, 1 << 20);
  const d = new Float64Array(k.memory.buffer);
  const R = 8, J = 12, K = 10, oA = 0, oB = 512, oC = 2048; // doubles, all row-major
  const A = Float64Array.from(randn(R * K, 31)), B = Float64Array.from(randn(K * J, 32));
  const C0 = Float64Array.from(randn(R * J, 33));
  d.set(A, oA);
  d.set(B, oB);
  for (const [mode, doff] of [[0, 0], [1, 0], [1, 4], [2, 0], [2, -3]]) {
    d.set(C0, oC);
    k.gemm_f64(oA * 8, K * 8, oB * 8, J * 8, oC * 8, J * 8, R, J, K, mode, doff, 4);
    for (let r = 0; r < R; r++) {
      for (let j = 0; j < J; j++) {
        const kept = mode !== 1 || (j & ~3) <= (r & ~3) + 3 + doff;
        let s = 0;
        if (kept) {
          for (let kk = mode === 2 ? Math.max(0, (j & ~3) + doff) : 0; kk < K; kk++) {
            s += A[r * K + kk] * B[kk * J + j];
          }
        }
        const want = C0[r * J + j] - s, got = d[oC + r * J + j];
        assert.ok(
          Math.abs(got - want) <= 1e-12 * (1 + Math.abs(want)),
          `mode ${mode}/${doff} (${r}, ${j})`,
        );
      }
    }
  }
});

Deno.test("solverKernels(): gptq_block quantizes a column, feeds err1 forward and writes −Err1 in gemm_f32's panels", () => {
  const k = solverKernels("kernels_test");
  growMemory("kernels_test", k.memory, 1 << 20);
  const f = new Float32Array(k.memory.buffer);
  const R = 8, count = 3, ldw = 8; // floats
  const oW = 0, oH = 64, oS = 128, oZ = 192, oQ = 256, oE = 320, oT = 448, oL = 512;
  const W = Float32Array.from(randn(count * R, 41));
  const H = new Float32Array([2, 0.5, -0.25, 0, 1.5, 0.75, 0, 0, 1.25]); // upper [count, count]
  f.set(W, oW);
  f.set(H, oH);
  f.fill(0.25, oS, oS + count * ldw);
  f.fill(4, oZ, oZ + count * ldw);
  new Float64Array(k.memory.buffer, oL * 4, 4).fill(0);
  k.gptq_block(
    oW * 4,
    ldw * 4,
    R,
    count,
    oH * 4,
    oS * 4,
    oZ * 4,
    oQ * 4,
    oE * 4,
    oT * 4,
    oL * 4,
    7,
  );
  const fr = Math.fround;
  // gptq.py's sweep in f32; the update w −= e·h is relaxed_nmadd: fused (one
  // rounding: e·h of two floats is exact in float64) or not, as the host does.
  const sweep = (fused: boolean) => {
    const w = Array.from({ length: count }, (_, i) => Array.from(W.subarray(i * ldw, i * ldw + R)));
    const codes: number[] = [], errs: number[] = [];
    let loss = 0;
    for (let i = 0; i < count; i++) {
      const d = H[i * count + i];
      for (let r = 0; r < R; r++) {
        const code = Math.min(7, Math.max(0, Math.round(fr(w[i][r] / 0.25)) + 4)); // no exact halves here
        const diff = fr(w[i][r] - fr(0.25 * (code - 4))), e = fr(diff / d);
        codes.push(code);
        errs.push(-e);
        loss += fr(fr(diff * diff) / fr(d * d));
        for (let j = i + 1; j < count; j++) {
          const h = H[i * count + j];
          w[j][r] = fused ? fr(w[j][r] - e * h) : fr(w[j][r] - fr(e * h));
        }
      }
    }
    return { codes, errs, w: w.flat(), loss };
  };
  const got = {
    codes: Array.from({ length: count * R }, (_, x) => f[oQ + Math.floor(x / R) * ldw + (x % R)]),
    errs: Array.from({ length: count * R }, (_, x) => f[oE + Math.floor(x / R) * 8 + (x % R)]),
    w: Array.from({ length: count * R }, (_, x) => f[oW + Math.floor(x / R) * ldw + (x % R)]),
  };
  const fused = sweep(true), split = sweep(false);
  const want = got.w.every((v, x) => v === fused.w[x]) ? fused : split;
  assert.deepEqual(got, { codes: want.codes, errs: want.errs, w: want.w });
  const loss = want.loss;
  const l = new Float64Array(k.memory.buffer, oL * 4, 4);
  assert.ok(Math.abs(l[0] + l[1] + l[2] + l[3] - loss) <= 1e-9 * loss);
});

Deno.test("WasmKernels.swiglu() equals the float64 formula within 4e-7 relative (its exp within 2e-7), with extremes", () => {
  const k = new WasmKernels();
  const n = 4 * 2001 + 3; // not a multiple of 4
  const h1 = Float32Array.from({ length: n }, (_, i) => -40 + (80 * i) / n); // e^−a over e^−40..e^40
  h1.set([0, -87, -88.5, -100, -1e30, 89, 1e30, Number.NaN], 0);
  const h3 = randn(n, 31);
  const out = new Float32Array(n);
  k.swiglu(out, h1, h3, n);
  for (let i = 0; i < n; i++) {
    const a = h1[i], want = (a / (1 + Math.exp(-a))) * h3[i];
    if (Number.isNaN(a)) assert.ok(Number.isNaN(out[i]), `NaN at ${i}`);
    else if (a < -80) assert.ok(Math.abs(out[i]) < 1e-30, `silu(${a}) → ${out[i]}`);
    else {
      // a·log2 e rounded to float32 adds |a| · 6e-8 to the exp's own 2e-7
      const tol = (3e-7 + Math.abs(a) * 6e-8) * Math.abs(want) + 1e-37;
      assert.ok(Math.abs(out[i] - want) <= tol, `silu at ${a}: ${out[i]} vs ${want}`);
    }
  }
  const inPlace = h1.slice();
  k.swiglu(inPlace, inPlace, h3, n); // out may be h1
  assert.deepEqual(inPlace, out);
});

Deno.test("WasmKernels.logSumExp() equals a float64 log-sum-exp within 3e-7, for any width; NaN rows give NaN", () => {
  const k = new WasmKernels();
  for (const V of [1, 5, 512, 1003]) {
    const T = 7;
    const x = randn(T * V, V).map((v) => 8 * v);
    x[2 * V] = 1e4; // one dominant logit
    if (V > 1) x[3 * V + 1] = -1e30;
    const lse = new Float64Array(T);
    k.logSumExp(lse, x, T, V);
    for (let t = 0; t < T; t++) {
      const row = x.subarray(t * V, (t + 1) * V);
      const m = Math.max(...row);
      const want = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
      assert.ok(
        Math.abs(lse[t] - want) <= 3e-7 * Math.max(1, Math.abs(want)),
        `V ${V} row ${t}: ${lse[t]} vs ${want}`,
      );
    }
  }
  const uniform = new Float64Array(2);
  k.logSumExp(uniform, new Float32Array(2 * 6), 2, 6);
  assert.deepEqual([...uniform], [Math.log(6), Math.log(6)]);
  const x = new Float32Array(8).fill(1);
  x[5] = Number.NaN;
  const lse = new Float64Array(2);
  k.logSumExp(lse, x, 2, 4);
  assert.equal(lse[0], 1 + Math.log(4));
  assert.ok(Number.isNaN(lse[1]));
});

Deno.test("WasmKernels.rmsnorm() equals the float64 formula rounded to float32 (in place too)", () => {
  const k = new WasmKernels();
  const T = 9, dim = 68, eps = 1e-5;
  const x = randn(T * dim, 41).map((v, i) => (i < dim ? 1e-4 * v : 30 * v)), w = randn(dim, 42);
  const out = new Float32Array(T * dim);
  k.rmsnorm(out, x, w, T, dim, eps);
  for (let t = 0; t < T; t++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[t * dim + i] ** 2;
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) {
      const want = Math.fround(w[i] * (x[t * dim + i] * inv));
      const got = out[t * dim + i];
      assert.ok(
        Math.abs(got - want) <= 1.2e-7 * Math.abs(want),
        `t ${t} i ${i}: ${got} vs ${want}`,
      );
    }
  }
  const inPlace = x.slice();
  k.rmsnorm(inPlace, inPlace, w, T, dim, eps);
  assert.deepEqual(inPlace, out);
  assert.throws(
    () => k.rmsnorm(out, x, w, 2, 6, eps),
    /dim must be a positive multiple of 4, found 6/,
  );
});
