import assert from "node:assert/strict";
import { mulberry32 } from "../model/random.ts";
import { ACT_QUANT_KERNELS } from "./abq_kernels.ts";
import { fakeQuantRowsScalar } from "./act_quant.ts";
import { fakeQuantGrad } from "./abq_grad.ts";

/** Rows of width values: random, with the cases that stress the grid. */
function cases(width: number, seed: number): Float32Array {
  const u = mulberry32(seed), rows = 12, x = new Float32Array(rows * width);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < width; i++) {
      const o = r * width + i;
      if (r === 0) x[o] = 0.7; // a constant row: the clamped scale
      else if (r === 1) x[o] = 0; // all zeros
      else if (r === 2) x[o] = (i % 5) - 2; // ties on the grid
      else if (r === 3) x[o] = (u() - 0.5) * 1e-7; // a range below the smallest scale
      else if (r === 4) x[o] = (u() - 0.5) * 2e5; // a range beyond the largest scale
      else if (r === 5) x[o] = i === 3 ? 50 : u(); // an outlier
      else x[o] = (u() - 0.5) * 4 * r;
    }
  }
  return x;
}

Deno.test("ACT_QUANT_KERNELS.fakeQuantRows() is act_quant.ts's scalar quantizer bit for bit (widths 3..172, maxq 4, 15, 255)", () => {
  assert.ok(ACT_QUANT_KERNELS, "this engine has WebAssembly SIMD");
  for (const width of [3, 8, 13, 64, 172]) {
    for (const maxq of [4, 15, 255]) {
      const x = cases(width, width + maxq), rows = x.length / width;
      const want = fakeQuantRowsScalar(x, rows, width, maxq, new Float32Array(x.length));
      const got = ACT_QUANT_KERNELS.fakeQuantRows(x, rows, width, maxq, new Float32Array(x.length));
      assert.deepEqual(got, want, `width ${width}, maxq ${maxq}`);
    }
  }
});

Deno.test("ACT_QUANT_KERNELS.fakeQuantRowsGrad() is abq_grad.ts's fakeQuantGrad bit for bit", () => {
  assert.ok(ACT_QUANT_KERNELS, "this engine has WebAssembly SIMD");
  const u = mulberry32(9);
  for (const width of [3, 8, 13, 64, 172]) {
    for (const maxq of [4, 15, 255]) {
      const x = cases(width, 3 * width + maxq), rows = x.length / width;
      const g = Float32Array.from({ length: x.length }, () => u() - 0.5);
      const want = g.slice();
      for (let r = 0; r < rows; r++) fakeQuantGrad(want, r * width, x, r * width, width, maxq);
      const got = g.slice();
      ACT_QUANT_KERNELS.fakeQuantRowsGrad(got, x, rows, width, maxq);
      assert.deepEqual(got, want, `width ${width}, maxq ${maxq}`);
    }
  }
});
