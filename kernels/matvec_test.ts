/**
 * GPU dense kernels equal their CPU references on shapes whose dimensions are
 * not multiples of 32, 64 or the workgroup size, at batch 1 and 5.
 */
import assert from "node:assert/strict";
import { randn } from "../model/random.ts";
import { maxRelError } from "../datasets/testing.ts";
import { gpuTest } from "./_testing.ts";
import { matvecGpu } from "./matvec.ts";
import { matvecRef } from "./reference.ts";
import { f16Tensor, f32Tensor } from "../quant/format.ts";
import type { LinearWeight } from "../quant/format.ts";
import { quantileLut, rtnUniform } from "../eval/bench/synthetic.ts";
import type { Gpu } from "./device.ts";
import type { MatvecPlanOptions } from "./matvec.ts";

/**
 * Odd shapes: 129×167 spans two 128-column tiles. Columns not a multiple of 4
 * take the unaligned paths; ALIGNED (33×300) adds the vec4 paths of x, fp32 and fp16.
 */
const SHAPES = [[37, 83], [129, 167]] as const;
const ALIGNED = [[33, 300]] as const;
const BATCHES = [1, 5];

async function check(
  gpu: Gpu,
  name: string,
  make: (w: Float32Array, rows: number, cols: number) => LinearWeight,
  tol: number,
  opts: Omit<MatvecPlanOptions, "batch"> = {},
  shapes: readonly (readonly [number, number])[] = SHAPES,
) {
  for (const [rows, cols] of shapes) {
    const weight = make(randn(rows * cols, rows * 1000 + cols), rows, cols);
    for (const B of BATCHES) {
      const x = randn(B * cols, 7 + B);
      const got = await matvecGpu(gpu, weight, x, B, opts);
      const err = maxRelError(got, matvecRef(weight, x, B));
      assert.ok(err <= tol, `${name} ${rows}×${cols} B=${B}: relative error ${err} > ${tol}`);
    }
  }
}

gpuTest("f32 kernel equals the CPU reference (1e-5) on odd shapes, batch 1 and 5", async (gpu) => {
  await check(gpu, "f32", (w, r, c) => ({ dense: f32Tensor(w, r, c) }), 1e-5, {}, [
    ...SHAPES,
    ...ALIGNED,
  ]);
});

gpuTest("f16 kernel equals the CPU reference (1e-5) and the fp32 weights (1e-2)", async (gpu) => {
  await check(gpu, "f16", (w, r, c) => ({ dense: f16Tensor(w, r, c) }), 1e-5, {}, [
    ...SHAPES,
    ...ALIGNED,
  ]);
  await check(gpu, "f16 vs f32", (w, r, c) => ({ dense: f16Tensor(w, r, c) }), 1e-2);
  // Against the unrounded fp32 weights: the reference of the f32 tensor.
  const [rows, cols] = [37, 83];
  const w = randn(rows * cols, 5), x = randn(5 * cols, 6);
  const got = await matvecGpu(gpu, { dense: f16Tensor(w, rows, cols) }, x, 5);
  assert.ok(maxRelError(got, matvecRef({ dense: f32Tensor(w, rows, cols) }, x, 5)) < 1e-2);
});

for (let bits = 2; bits <= 8; bits++) {
  gpuTest(
    `uniform ${bits}-bit kernel (per row, groups of 32, groups of 10, act-order gIdx) equals the CPU reference`,
    async (gpu) => {
      await check(
        gpu,
        `uniform b=${bits}`,
        (w, r, c) => ({ dense: rtnUniform(w, r, c, { bits }) }),
        1e-5,
      );
      await check(gpu, `uniform b=${bits} g32`, (w, r, c) => ({
        dense: rtnUniform(w, r, c, { bits, groupSize: 32, sym: true }),
      }), 1e-5);
      await check(gpu, `uniform b=${bits} g10`, (w, r, c) => ({
        dense: rtnUniform(w, r, c, { bits, groupSize: 10 }),
      }), 1e-5);
      await check(gpu, `uniform b=${bits} gIdx`, (w, r, c) => ({
        dense: rtnUniform(w, r, c, { bits, groupSize: 16, actOrderSeed: bits }),
      }), 1e-5);
    },
  );

  gpuTest(`lut ${bits}-bit kernel equals the CPU reference`, async (gpu) => {
    await check(gpu, `lut b=${bits}`, (w, r, c) => ({ dense: quantileLut(w, r, c, bits) }), 1e-5);
  });
}

gpuTest(
  "quantized kernels read vec4-aligned activations (cols % 4 == 0) correctly",
  async (gpu) => {
    for (const bits of [3, 8]) {
      await check(
        gpu,
        `lut b=${bits} aligned`,
        (w, r, c) => ({ dense: quantileLut(w, r, c, bits) }),
        1e-5,
        {},
        ALIGNED,
      );
      await check(
        gpu,
        `uniform b=${bits} g20 aligned`,
        (w, r, c) => ({
          dense: rtnUniform(w, r, c, { bits, groupSize: 20 }),
        }),
        1e-5,
        {},
        ALIGNED,
      );
    }
  },
);

gpuTest("tilings from 2×16 to 32×2 rows × threads gives the same result", async (gpu) => {
  for (const [rowsPerWg, threadsPerRow] of [[2, 16], [8, 8], [32, 2], [3, 5]]) {
    await check(
      gpu,
      `lut b=5 ${rowsPerWg}×${threadsPerRow}`,
      (w, r, c) => ({ dense: quantileLut(w, r, c, 5) }),
      1e-5,
      {
        rowsPerWg,
        threadsPerRow,
      },
    );
  }
});
