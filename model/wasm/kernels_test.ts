import assert from "node:assert/strict";
import { KERNELS_WASM_BYTES, WASM_SIMD, WasmKernels } from "./kernels.ts";
import { matmulRef } from "../matmul.ts";
import { randn } from "../random.ts";
import { maxRelError } from "../../datasets/testing.ts";

Deno.test("WASM_SIMD is true in Deno and the kernels export the forward's and GPTQ's kernels and memory", () => {
  assert.equal(WASM_SIMD, true);
  const names = WebAssembly.Module.exports(new WebAssembly.Module(KERNELS_WASM_BYTES))
    .map((e) => e.name).sort();
  assert.deepEqual(names, ["attention", "gemm_f32", "gemm_f64", "gptq_block", "matmul", "memory"]);
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
