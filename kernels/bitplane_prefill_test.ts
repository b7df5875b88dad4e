/**
 * The W×A kernels on whole windows (the prefill tiles of
 * kernels/_wa_kernel.ts): for every pair W2..8 × A2..8 at T = 37 and 130
 * tokens (neither a multiple of the token tile) on odd shapes (columns not
 * a multiple of 32, rows not a multiple of the row tile), the bit-plane
 * kernel's integer accumulators equal the CPU integer reference exactly;
 * so do the W8A8 kernel's; the f32 outputs equal the reference product.
 */
import assert from "node:assert/strict";
import { gpuTest } from "./_testing.ts";
import { bitplaneMatmulGpu } from "./bitplane.ts";
import { int8MatmulGpu } from "./int8.ts";
import { waAccRef, waMatmulRef } from "./bitplane_reference.ts";
import type { WaTiling } from "./_wa_kernel.ts";
import { WA_MAX_BATCH, waTiling } from "./_wa_kernel.ts";
import { assertInt8Exact, firstDiff, randomActs, randomUniform } from "./_wa_testing.ts";
import { maxRelError } from "../datasets/testing.ts";

const BITS = [2, 3, 4, 5, 6, 7, 8];

/**
 * Small tiles (4 tokens × 16 rows, 2 rows per thread) for most pairs: the
 * same generator as the default prefill tiles, many tiles on a small shape,
 * and a pipeline llvmpipe compiles in a fraction of a second.
 */
const SMALL: Partial<WaTiling> = { tokensPerWg: 4, rowsPerThread: 2, rowsPerWg: 16 };

Deno.test("waTiling() takes one tile of every token up to WA_MAX_BATCH, prefill tiles above", () => {
  assert.deepEqual(waTiling(WA_MAX_BATCH), {
    tokensPerWg: WA_MAX_BATCH,
    rowsPerThread: 1,
    rowsPerWg: 16,
    threadsPerRow: 4,
  });
  const p = waTiling(WA_MAX_BATCH + 1);
  assert.equal(p.threadsPerRow, 1);
  assert.ok(p.tokensPerWg < WA_MAX_BATCH + 1 && p.rowsPerThread > 1);
  assert.equal(waTiling(500, { tokensPerWg: 3 }).tokensPerWg, 3);
});

gpuTest(
  "prefill tiles: bit-plane integer accumulators equal the CPU reference exactly, W2..8 × A2..8, T = 37 and 130",
  async (gpu) => {
    // Pairs alternate T = 37 / 130 and one group per row (83 columns = 2 blocks + 19) /
    // groups of 64 (300 columns); every tenth pair takes the default prefill tiles, two
    // take two threads per row (the reduction) and a 2-D grid.
    let p = 0;
    for (const wb of BITS) {
      for (const ab of BITS) {
        p++;
        const T = p % 2 ? 37 : 130;
        const [cols, group] = p % 3 ? [83, 83] : [300, 64];
        const tiling: Partial<WaTiling> = p % 10 === 0
          ? {}
          : p % 17 === 0
          ? { ...SMALL, rowsPerWg: 8, threadsPerRow: 2 }
          : SMALL;
        const w = randomUniform(300 + p, 37, cols, wb, group);
        const x = randomActs(400 + p, T, cols, ab);
        const got = await bitplaneMatmulGpu(gpu, w, x, {
          output: "i32",
          maxWorkgroupsPerDim: p % 17 === 0 ? 16 : undefined,
          ...tiling,
        }) as Int32Array;
        const want = waAccRef(w, x);
        assert.deepEqual(got, want, `W${wb}A${ab} T=${T} g${group}: ${firstDiff(got, want)}`);
      }
    }
  },
);

gpuTest(
  "prefill tiles: W8A8 int8 accumulators equal the CPU reference exactly; f32 outputs equal the reference product",
  async (gpu) => {
    for (
      const [wb, ab, T, rows, cols, group] of [
        [8, 8, 130, 600, 83, 83], // default tiles: two row tiles, the second partial
        [4, 8, 37, 70, 300, 64],
      ] as const
    ) {
      const w = randomUniform(rows + T, rows, cols, wb, group);
      const x = randomActs(cols + T, T, cols, ab);
      await assertInt8Exact(gpu, w, x, `int8 W${wb}A${ab} T=${T}`);
      const ref = waMatmulRef(w, x);
      const y8 = await int8MatmulGpu(gpu, w, x) as Float32Array;
      assert.ok(maxRelError(y8, ref) < 1e-5, `int8 f32 W${wb}A${ab} T=${T}`);
      const yb = await bitplaneMatmulGpu(gpu, w, x) as Float32Array;
      assert.ok(maxRelError(yb, ref) < 1e-5, `bit-plane f32 W${wb}A${ab} T=${T}`);
    }
    // Bit-plane f32 on small tiles, both group kinds.
    for (const [wb, ab, group] of [[2, 8, 300], [6, 6, 64], [3, 4, 64]]) {
      const w = randomUniform(wb * ab, 45, 300, wb, group);
      const x = randomActs(ab * wb, 37, 300, ab);
      const y = await bitplaneMatmulGpu(gpu, w, x, SMALL) as Float32Array;
      const err = maxRelError(y, waMatmulRef(w, x));
      assert.ok(err < 1e-5, `W${wb}A${ab} g${group}: ${err}`);
    }
  },
);
