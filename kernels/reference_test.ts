/**
 * The CPU references read the packed layout exactly as quant/format.ts's
 * dequantize() does: reference matvec = plain matvec of the dequantized
 * weights, for every format and code width.
 */
import assert from "node:assert/strict";
import { dequantize, f16Tensor, f32Tensor, fromF16 } from "../quant/format.ts";
import type { QuantizedLinear } from "../quant/format.ts";
import { matmulRef } from "../model/matmul.ts";
import { randn } from "../model/random.ts";
import { maxRelError } from "../datasets/testing.ts";
import { denseMatvecRef, matvecRef } from "./reference.ts";
import { csrFrom, quantileLut, randomCsr, rtnUniform } from "../eval/bench/synthetic.ts";

const SHAPES = [[37, 83], [129, 67]] as const;

function plain(w: Float32Array, x: Float32Array, B: number, rows: number, cols: number) {
  const y = new Float32Array(B * rows);
  matmulRef(y, x, w, B, cols, rows);
  return y;
}

Deno.test("matvecRef() equals dequantize() + matmulRef for uniform and lut, b = 2..8, with sparse parts", () => {
  for (const [rows, cols] of SHAPES) {
    const w = randn(rows * cols, rows);
    for (const B of [1, 5]) {
      const x = randn(B * cols, B + cols);
      for (let bits = 2; bits <= 8; bits++) {
        const denses = [
          rtnUniform(w, rows, cols, { bits }),
          rtnUniform(w, rows, cols, { bits, groupSize: 32, sym: true }),
          rtnUniform(w, rows, cols, { bits, groupSize: 10 }),
          rtnUniform(w, rows, cols, { bits, groupSize: 16, actOrderSeed: bits }),
          quantileLut(w, rows, cols, bits),
        ];
        for (const dense of denses) {
          for (
            const sparse of [undefined, randomCsr(rows, cols, 0.05, bits, bits % 2 ? "f16" : "f32")]
          ) {
            const q: QuantizedLinear = { dense, sparse };
            const want = plain(dequantize(q), x, B, rows, cols);
            const got = matvecRef(q, x, B);
            const err = maxRelError(got, want);
            assert.ok(err < 1e-6, `${dense.kind} b=${bits} ${rows}×${cols} B=${B}: ${err}`);
          }
        }
      }
    }
  }
});

Deno.test("denseMatvecRef() on f32 and f16 equals matmulRef of the (rounded) weights", () => {
  const [rows, cols] = [37, 83];
  const w = randn(rows * cols, 3);
  const x = randn(2 * cols, 4);
  const want = plain(w, x, 2, rows, cols);
  assert.ok(maxRelError(denseMatvecRef(f32Tensor(w, rows, cols), x, 2), want) < 1e-6);
  const h = f16Tensor(w, rows, cols);
  const wantH = plain(fromF16(h.data), x, 2, rows, cols);
  assert.ok(maxRelError(denseMatvecRef(h, x, 2), wantH) < 1e-6);
  // fp16 rounding alone stays within the relative 1e-2 the GPU f16 kernel is held to.
  assert.ok(maxRelError(denseMatvecRef(h, x, 2), want) < 1e-2);
});

Deno.test("matvecRef() adds a hand-written CSR part exactly", () => {
  const dense = f32Tensor(new Float32Array(6), 2, 3); // zeros
  const sparse = csrFrom(2, 3, [0, 0, 2], [0, 2], [2, -1], "f32");
  const y = matvecRef({ dense, sparse }, new Float32Array([1, 2, 3, 4, 5, 6]), 2);
  assert.deepEqual([...y], [0, 2 * 1 - 3, 0, 2 * 4 - 6]);
});

Deno.test("matvecRef() rejects x of the wrong length and inconsistent parts", () => {
  const dense = f32Tensor(new Float32Array(6), 2, 3);
  assert.throws(() => matvecRef({ dense }, new Float32Array(5), 2), /x must hold batch×cols = 2×3/);
  const bad = { ...rtnUniform(randn(6, 1), 2, 3, { bits: 4 }), scales: new Uint16Array(1) };
  assert.throws(
    () => matvecRef({ dense: bad }, new Float32Array(3), 1),
    /dense\.scales: expected length 2, found 1/,
  );
});
