/**
 * The W8A8 kernel: its integer accumulators (dot4I8Packed, and the unpacked
 * fallback) equal the CPU integer reference and the bit-plane kernel's
 * exactly; its f32 output equals the reference product.
 */
import assert from "node:assert/strict";
import { gpuTest } from "./_testing.ts";
import { int8MatmulGpu, packInt8Acts, packInt8Weight } from "./int8.ts";
import { bitplaneMatmulGpu } from "./bitplane.ts";
import { waAccRef, waMatmulRef } from "./bitplane_reference.ts";
import { assertInt8Exact, maxCodeOperands, randomActs, randomUniform } from "./_wa_testing.ts";
import { maxRelError } from "../datasets/testing.ts";

Deno.test("packInt8Acts() stores q − 128 as signed bytes in column order, 0 past cols", () => {
  const x = packInt8Acts({
    batch: 1,
    cols: 5,
    bits: 8,
    codes: new Uint8Array([0, 1, 128, 255, 7]),
    scales: new Float32Array([1]),
    zeros: new Int32Array([3]),
  });
  assert.equal(x.words.length, 8);
  assert.deepEqual([...new Int8Array(x.words.buffer, 0, 8)], [-128, -127, 0, 127, -121, 0, 0, 0]);
  assert.equal(x.zeros[0], 3 - 128);
  assert.equal(x.sums[0], 0 + 1 + 128 + 255 + 7 - 5 * 128);
});

Deno.test("packInt8Weight() sums (q − 128) per row and group", () => {
  const w = randomUniform(3, 2, 96, 8, 32);
  const h = packInt8Weight(w);
  assert.equal(h.sums.length, 6);
  const bytes = new Int8Array(h.words.buffer);
  for (let r = 0; r < 2; r++) {
    for (let g = 0; g < 3; g++) {
      let s = 0;
      for (let c = 32 * g; c < 32 * g + 32; c++) s += bytes[r * 96 + c];
      assert.equal(h.sums[r * 3 + g], s);
    }
  }
});

const CASES = [
  // [wBits, aBits, batch, rows, cols, groupSize]
  [8, 8, 1, 37, 83, 83],
  [8, 8, 5, 40, 300, 64],
  [4, 8, 8, 19, 172, 172],
  [8, 6, 2, 33, 4096, 4096],
] as const;

gpuTest(
  "int8 kernel: integer accumulators equal the CPU reference and the bit-plane kernel exactly",
  async (gpu) => {
    for (const [wb, ab, B, rows, cols, group] of CASES) {
      const w = randomUniform(rows + wb, rows, cols, wb, group);
      const x = randomActs(cols + ab, B, cols, ab);
      const want = await assertInt8Exact(
        gpu,
        w,
        x,
        `W${wb}A${ab} B=${B} ${rows}×${cols} g${group}`,
      );
      const planes = await bitplaneMatmulGpu(gpu, w, x, { output: "i32" }) as Int32Array;
      assert.deepEqual(planes, want, `bit-plane W${wb}A${ab}`);
    }
  },
);

gpuTest(
  "int8 kernel: f32 output equals the reference product within 1e-5, worst case exact",
  async (gpu) => {
    for (const [wb, ab, B, rows, cols, group] of CASES) {
      const w = randomUniform(rows * wb, rows, cols, wb, group);
      const x = randomActs(cols * ab, B, cols, ab);
      const got = await int8MatmulGpu(gpu, w, x) as Float32Array;
      const err = maxRelError(got, waMatmulRef(w, x));
      assert.ok(err < 1e-5, `W${wb}A${ab} B=${B}: ${err}`);
    }
    // Codes 255 against zeros 0 (the largest positive accumulator) and codes 0 (the most negative).
    const { w, x } = maxCodeOperands(2);
    const acc = await int8MatmulGpu(gpu, w, x, { output: "i32" }) as Int32Array;
    assert.deepEqual([...acc], new Array(4).fill(4096 * 255 * 255));
    w.zeros.fill(0x5bf8); // fp16 255
    x.codes.fill(0);
    const neg = await int8MatmulGpu(gpu, w, x, { output: "i32" }) as Int32Array;
    assert.deepEqual([...neg], new Array(4).fill(0));
    x.zeros.fill(255);
    const pos = await int8MatmulGpu(gpu, w, x, { output: "i32" }) as Int32Array;
    assert.deepEqual(pos, waAccRef(w, x));
  },
);
