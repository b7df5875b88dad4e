import assert from "node:assert/strict";
import {
  addSparse,
  checkBits,
  codeAt,
  type CsrMatrix,
  dequantize,
  f16Tensor,
  f32Tensor,
  fromF16,
  groupOf,
  type LutTensor,
  nGroups,
  packCodes,
  toF16,
  type UniformTensor,
  unpackCodes,
  validateWeight,
  wordsPerRow,
} from "./format.ts";
import { mulberry32 } from "../model/random.ts";

/** Plain bit-by-bit packing: a different implementation of the format.ts layout. */
function packByBits(
  codes: ArrayLike<number>,
  rows: number,
  cols: number,
  bits: number,
): Uint32Array {
  const wpr = Math.ceil((cols * bits) / 32);
  const out = new Uint32Array(rows * wpr);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      for (let b = 0; b < bits; b++) {
        if ((codes[r * cols + c] >> b) & 1) {
          const k = c * bits + b; // stream bit
          out[r * wpr + Math.floor(k / 32)] |= 1 << (k % 32);
        }
      }
    }
  }
  return out;
}

function randomCodes(n: number, bits: number, seed: number): Uint8Array {
  const u = mulberry32(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(u() * (1 << bits)));
}

Deno.test("packCodes()/unpackCodes() round-trip every b in 2..8 for widths not a multiple of 32", () => {
  for (let bits = 2; bits <= 8; bits++) {
    for (const cols of [1, 31, 32, 33, 100]) {
      const rows = 3;
      const codes = randomCodes(rows * cols, bits, bits * 1000 + cols);
      const packed = packCodes(codes, rows, cols, bits);
      assert.equal(packed.length, rows * wordsPerRow(cols, bits));
      assert.deepEqual(packed, packByBits(codes, rows, cols, bits), `b=${bits} cols=${cols}`);
      assert.deepEqual(unpackCodes(packed, rows, cols, bits), codes, `b=${bits} cols=${cols}`);
    }
  }
});

Deno.test("codeAt() reads codes that straddle two words", () => {
  // 3 bits, 11 codes: code 10 occupies stream bits 30..32 (word 0 bits 30, 31 and word 1 bit 0).
  const codes = [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 5];
  const packed = packCodes(codes, 1, 11, 3);
  assert.equal(packed.length, 2);
  // 5 = 0b101: bit 0 → word 0 bit 30, bit 1 (0) → word 0 bit 31, bit 2 → word 1 bit 0
  assert.equal((packed[0] >>> 30) & 3, 0b01);
  assert.equal(packed[1], 1);
  assert.equal(codeAt(packed, 11, 3, 0, 10), 5);
  // 5 bits: code 6 occupies bits 30..34; code 12 occupies 60..64
  const c5 = Array.from({ length: 13 }, (_, i) => (i * 7 + 3) % 32);
  const packed5 = packCodes(c5, 1, 13, 5);
  assert.equal(packed5.length, 3); // 65 bits
  assert.equal(packed5[2], c5[12] >>> 4); // the last code's top bit alone in word 2
  for (let c = 0; c < 13; c++) assert.equal(codeAt(packed5, 13, 5, 0, c), c5[c], `code ${c}`);
  // 7 bits: the code at stream bits 28..34 (c = 4)
  const c7 = [127, 0, 127, 0, 101, 3];
  const packed7 = packCodes(c7, 1, 6, 7);
  assert.equal(codeAt(packed7, 6, 7, 0, 4), 101);
});

Deno.test("packCodes() starts every row on a fresh word", () => {
  // 3 bits × 11 columns = 33 bits → 2 words per row; row 1 starts at word 2
  const codes = [...Array(11).fill(7), ...Array(11).fill(1)];
  const packed = packCodes(codes, 2, 11, 3);
  assert.equal(packed.length, 4);
  assert.equal(packed[1], 1); // only the last bit of row 0's 33rd bit
  assert.equal(packed[2] & 7, 1); // row 1 code 0
  assert.equal(codeAt(packed, 11, 3, 1, 0), 1);
  assert.equal(codeAt(packed, 11, 3, 0, 10), 7);
});

Deno.test("packCodes() rejects out-of-range codes, wrong lengths and bad bit widths", () => {
  assert.throws(() => packCodes([4], 1, 1, 2), /code 4 at \(0, 0\) is not a 2-bit integer/);
  assert.throws(() => packCodes([1, 2], 1, 3, 2), /expected 1×3 codes, got 2/);
  for (const b of [1, 9, 2.5, 0]) {
    assert.throws(() => checkBits(b), /--bits must be an integer from 2 to 8/);
  }
  assert.throws(() => checkBits(9, "--wbits"), /--wbits/);
});

Deno.test("toF16()/fromF16() round to nearest fp16", () => {
  const v = [0, 1, -2.5, 0.1, 65504, 1 / 3];
  const back = fromF16(toF16(v));
  assert.deepEqual(Array.from(back.slice(0, 3)), [0, 1, -2.5]);
  assert.equal(back[3], 0.0999755859375); // 0.1 in fp16
  assert.equal(back[4], 65504);
  assert.equal(back[5], 0.333251953125);
});

Deno.test("dequantize() of a hand-built uniform tensor, with and without gIdx", () => {
  const base: UniformTensor = {
    kind: "uniform",
    bits: 2,
    rows: 2,
    cols: 4,
    groupSize: 2,
    sym: false,
    codes: packCodes([0, 1, 2, 3, 3, 3, 0, 1], 2, 4, 2),
    scales: toF16([0.5, 2, 1, 0.25]), // [rows, groups]
    zeros: toF16([1, 2, 0, 3]),
  };
  assert.equal(nGroups(base), 2);
  // row 0: 0.5·(0−1), 0.5·(1−1), 2·(2−2), 2·(3−2); row 1: 1·(3−0), 1·(3−0), 0.25·(0−3), 0.25·(1−3)
  assert.deepEqual(Array.from(dequantize({ dense: base })), [-0.5, 0, 0, 2, 3, 3, -0.75, -0.5]);
  const permuted: UniformTensor = { ...base, gIdx: Int32Array.from([1, 0, 1, 0]) };
  assert.equal(groupOf(permuted, 0), 1);
  assert.equal(nGroups(permuted), 2);
  // columns 0 and 2 use group 1, columns 1 and 3 group 0
  assert.deepEqual(Array.from(dequantize({ dense: permuted })), [
    2 * (0 - 2),
    0.5 * (1 - 1),
    2 * (2 - 2),
    0.5 * (3 - 1),
    0.25 * (3 - 3),
    1 * (3 - 0),
    0.25 * (0 - 3),
    1 * (1 - 0),
  ]);
});

Deno.test("dequantize() of a hand-built lookup-table tensor plus a sparse part", () => {
  const lut: LutTensor = {
    kind: "lut",
    bits: 2,
    rows: 2,
    cols: 3,
    codes: packCodes([0, 3, 1, 2, 2, 0], 2, 3, 2),
    lut: toF16([-1, -0.25, 0.25, 1, 0, 1, 2, 3]), // [rows, 4]
  };
  assert.deepEqual(Array.from(dequantize({ dense: lut })), [-1, 1, -0.25, 2, 2, 0]);
  const sparse16: CsrMatrix = {
    rows: 2,
    cols: 3,
    rowPtr: Int32Array.from([0, 1, 3]),
    colIdx: Int32Array.from([2, 0, 2]),
    values: toF16([10, -4, 0.5]),
    dtype: "f16",
  };
  assert.deepEqual(Array.from(dequantize({ dense: lut, sparse: sparse16 })), [
    -1,
    1,
    9.75,
    -2,
    2,
    0.5,
  ]);
  const sparse32: CsrMatrix = { ...sparse16, values: Float32Array.from([0.1, 0, 0]), dtype: "f32" };
  const d = dequantize({ dense: lut, sparse: sparse32 });
  assert.equal(d[2], Math.fround(-0.25 + Math.fround(0.1)));
  assert.deepEqual(Array.from(addSparse(new Float32Array(6), sparse16)), [0, 0, 10, -4, 0, 0.5]);
});

Deno.test("f32Tensor()/f16Tensor() wrap or round the data and reject a wrong length", () => {
  const data = Float32Array.from([1, 0.1, -2, 65504]);
  const f32 = f32Tensor(data, 2, 2);
  assert.equal(f32.data, data); // no copy
  const f16 = f16Tensor(data, 2, 2);
  // 1 = 0x3c00, 0.1 → 0x2e66 (0.0999755859375), −2 = 0xc000, 65504 = 0x7bff (largest half)
  assert.deepEqual(Array.from(f16.data), [0x3c00, 0x2e66, 0xc000, 0x7bff]);
  assert.throws(() => f32Tensor(data, 3, 2), /f32Tensor\(\): expected 3×2 values, found 4/);
  assert.throws(() => f16Tensor(data, 1, 3), /f16Tensor\(\): expected 1×3 values, found 4/);
});

Deno.test("validateWeight() names the field whose length disagrees with the shape", () => {
  const rows = 2, cols = 5, bits = 3;
  const uniform: UniformTensor = {
    kind: "uniform",
    bits,
    rows,
    cols,
    groupSize: 5,
    sym: false,
    codes: new Uint32Array(rows * wordsPerRow(cols, bits)),
    scales: new Uint16Array(rows),
    zeros: new Uint16Array(rows),
  };
  const sparse: CsrMatrix = {
    rows,
    cols,
    rowPtr: Int32Array.from([0, 1, 2]),
    colIdx: Int32Array.from([0, 4]),
    values: toF16([1, 2]),
    dtype: "f16",
  };
  validateWeight({ dense: uniform, sparse });
  validateWeight({ dense: f16Tensor(new Float32Array(rows * cols), rows, cols) });
  assert.throws(
    () => validateWeight({ dense: { ...uniform, scales: new Uint16Array(3) } }, "layers.0.wq"),
    /layers\.0\.wq\.dense\.scales: expected length 2, found 3/,
  );
  assert.throws(
    () => validateWeight({ dense: { ...uniform, codes: new Uint32Array(1) } }),
    /weight\.dense\.codes: expected length 2, found 1/,
  );
  assert.throws(
    () => validateWeight({ dense: uniform, sparse: { ...sparse, colIdx: new Int32Array(1) } }),
    /weight\.sparse\.colIdx: expected length 2, found 1/,
  );
  assert.throws(
    () => validateWeight({ dense: uniform, sparse: { ...sparse, cols: 4 } }),
    /weight\.sparse: shape 2×4 differs from dense 2×5/,
  );
  assert.throws(
    () => validateWeight({ dense: { kind: "f32", rows: 0, cols, data: new Float32Array(0) } }),
    /weight: rows and cols must be positive integers, got 0×5/,
  );
  assert.throws(
    () => validateWeight({ dense: { ...uniform, bits: 9 } }),
    /weight\.dense\.bits must be an integer from 2 to 8, got 9/,
  );
});
