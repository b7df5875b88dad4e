/**
 * The bit-plane W×A kernel: its integer accumulators equal the CPU integer
 * reference exactly for every pair W2..8 × A2..8 and batch 1..8 on odd
 * shapes, with one group per row and with groups of 64; its f32 output
 * equals the fake-quant product (dequantized W times dequantized X).
 */
import assert from "node:assert/strict";
import { gpuTest } from "./_testing.ts";
import { bitplaneMatmulGpu, bitplaneScheme } from "./bitplane.ts";
import {
  bitplaneAccRef,
  packActPlanes,
  packWeightPlanes,
  popcount,
  waAccRef,
  waMatmulRef,
} from "./bitplane_reference.ts";
import { firstDiff, maxCodeOperands, randomActs, randomUniform } from "./_wa_testing.ts";
import { maxRelError } from "../datasets/testing.ts";
import { dequantizeDense } from "../quant/format.ts";

const BITS = [2, 3, 4, 5, 6, 7, 8];

Deno.test("popcount() counts the set bits of any 32-bit word", () => {
  assert.equal(popcount(0), 0);
  assert.equal(popcount(0xffffffff), 32);
  assert.equal(popcount(0x80000001), 2);
  assert.equal(popcount(0x12345678), 13);
});

Deno.test("packActPlanes() puts bit i of code c at bit c % 32 of plane i of block ⌊c/32⌋", () => {
  const codes = Uint8Array.from({ length: 40 }, (_, c) => c % 8);
  const x = packActPlanes({
    batch: 1,
    cols: 40,
    bits: 3,
    codes,
    scales: new Float32Array([1]),
    zeros: new Int32Array([0]),
  });
  assert.equal(x.kBlocks, 2);
  assert.equal(x.planes.length, 6);
  for (let c = 0; c < 40; c++) {
    for (let i = 0; i < 3; i++) {
      const bit = (x.planes[(c >> 5) * 3 + i] >>> (c & 31)) & 1;
      assert.equal(bit, (codes[c] >> i) & 1, `column ${c} plane ${i}`);
    }
  }
  assert.equal(x.planes[3] >>> 8, 0, "columns past cols are zero");
  assert.equal(x.sums[0], codes.reduce((s, v) => s + v, 0));
});

Deno.test("bitplaneAccRef() equals the direct integer sum for every W×A pair (odd shape, groups)", () => {
  for (const wb of BITS) {
    for (const ab of BITS) {
      for (const group of [83, 64]) {
        const cols = group === 83 ? 83 : 160;
        const w = randomUniform(wb * 10 + ab, 5, cols, wb, group);
        const x = randomActs(ab * 10 + wb, 3, cols, ab);
        const got = bitplaneAccRef(packWeightPlanes(w), packActPlanes(x));
        const want = waAccRef(w, x);
        assert.deepEqual(got, want, `W${wb}A${ab} g${group}: ${firstDiff(got, want)}`);
      }
    }
  }
});

Deno.test("packWeightPlanes() refuses act-order weights and groups of partial blocks", () => {
  const w = randomUniform(1, 4, 96, 4, 48);
  assert.throws(() => packWeightPlanes(w), /multiples of 32/);
  const g = { ...randomUniform(1, 4, 64, 4), gIdx: new Int32Array(64) };
  assert.throws(() => packWeightPlanes(g), /act-order/);
});

Deno.test("bitplaneScheme() costs W·A popcounts per block and token", () => {
  for (const [wb, ab] of [[2, 8], [4, 4], [8, 8]]) {
    const n = bitplaneScheme(wb, ab).dot("x", "w").match(/countOneBits/g)?.length;
    assert.equal(n, wb * ab);
  }
});

gpuTest(
  "bit-plane kernel: integer accumulators equal the CPU reference exactly, W2..8 × A2..8, batch 1..8",
  async (gpu) => {
    // 37×83: rows not a multiple of the 16-row workgroup, 83 columns = 2 full blocks + 19.
    // Batch 1, every fourth pair batch 2, and six pairs take batch 3..8 (a pipeline of a
    // large batch takes llvmpipe about a second to compile).
    const large = new Map([[0, 8], [8, 3], [16, 7], [24, 4], [32, 6], [48, 5]]);
    let p = 0;
    for (const wb of BITS) {
      for (const ab of BITS) {
        const B = large.get(p) ?? (p % 4 === 1 ? 2 : 1);
        p++;
        const w = randomUniform(100 + p, 37, 83, wb);
        const x = randomActs(200 + p, B, 83, ab);
        const got = await bitplaneMatmulGpu(gpu, w, x, { output: "i32" }) as Int32Array;
        const want = waAccRef(w, x);
        assert.deepEqual(got, want, `W${wb}A${ab} B=${B}: ${firstDiff(got, want)}`);
      }
    }
  },
);

gpuTest(
  "bit-plane kernel: groups of 64, two tiles, a 2-D grid and the worst-case magnitudes are exact",
  async (gpu) => {
    for (const [wb, ab, B] of [[2, 8, 8], [4, 8, 3], [8, 8, 1], [3, 5, 6]]) {
      const w = randomUniform(wb + ab, 70, 300, wb, 64);
      const x = randomActs(wb * ab, B, 300, ab);
      const got = await bitplaneMatmulGpu(gpu, w, x, {
        output: "i32",
        threadsPerRow: 2,
        rowsPerWg: 8,
        maxWorkgroupsPerDim: 4,
      }) as Int32Array;
      const want = waAccRef(w, x);
      assert.deepEqual(got, want, `W${wb}A${ab} g64 B=${B}: ${firstDiff(got, want)}`);
    }
    // Every code at its maximum and every zero 0: the largest accumulator, K · 255².
    const { w, x } = maxCodeOperands(3);
    const got = await bitplaneMatmulGpu(gpu, w, x, { output: "i32" }) as Int32Array;
    assert.deepEqual([...got], new Array(6).fill(4096 * 255 * 255));
  },
);

gpuTest(
  "bit-plane kernel: f32 output equals the fake-quant product (dequantized W × dequantized X) within 1e-5",
  async (gpu) => {
    for (
      const [wb, ab, B, rows, cols, group] of [
        [4, 8, 4, 45, 172, 172],
        [3, 8, 2, 33, 256, 128], // three-bit codes of five levels (W2*): 3 planes
        [6, 6, 8, 64, 64, 64],
        [2, 4, 1, 50, 300, 64],
      ]
    ) {
      const w = randomUniform(rows + ab, rows, cols, wb, group, wb === 3 ? 4 : undefined);
      const x = randomActs(cols + wb, B, cols, ab);
      const got = await bitplaneMatmulGpu(gpu, w, x) as Float32Array;
      assert.ok(maxRelError(got, waMatmulRef(w, x)) < 1e-5, `W${wb}A${ab} vs the reference`);
      // Fake quant: dequantize both sides to fp32 and multiply in float64.
      const wq = dequantizeDense(w);
      const fake = new Float64Array(B * rows);
      for (let b = 0; b < B; b++) {
        for (let r = 0; r < rows; r++) {
          let s = 0;
          for (let c = 0; c < cols; c++) {
            const xq = x.scales[b] * (x.codes[b * cols + c] - x.zeros[b]);
            s += xq * wq[r * cols + c];
          }
          fake[b * rows + r] = s;
        }
      }
      const err = maxRelError(got, fake);
      assert.ok(err < 1e-5, `W${wb}A${ab} B=${B} g${group}: ${err} vs fake quant`);
    }
  },
);
