import assert from "node:assert/strict";
import { dequantize, fromF16, unpackCodes } from "./format.ts";
import {
  checkGroupSize,
  findParams,
  quantizeValue,
  roundHalfEven,
  rtn,
  storedScale,
} from "./rtn.ts";
import { randn } from "../model/random.ts";

/** numpy.rint spelled out: nearest integer, ties to the even neighbour. */
function rint(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * A plain recomputation of GPTQ's grid for one group (quant.py find_params +
 * quantize in fp32), with the scale rounded to fp16 before computing codes.
 */
function plainGroup(values: number[], bits: number, sym: boolean) {
  const f = Math.fround;
  const maxq = 2 ** bits - 1;
  let xmin = Math.min(0, ...values), xmax = Math.max(0, ...values);
  if (sym) {
    xmax = Math.max(Math.abs(xmin), xmax);
    if (xmin < 0) xmin = -xmax;
  }
  if (xmin === 0 && xmax === 0) [xmin, xmax] = [-1, 1];
  const scale = f(f(xmax - xmin) / maxq);
  const zero = sym ? (maxq + 1) / 2 : rint(f(-xmin / scale)) + 0; // stored as +0, not −0
  const s16 = Math.f16round(scale);
  const codes = values.map((x) => Math.min(maxq, Math.max(0, rint(f(x / s16)) + zero)));
  return { s16, zero, codes, deq: codes.map((q) => f(s16 * (q - zero))) };
}

/** Weights with rows of varied scale, an all-zero row, an all-positive and an all-negative row. */
function testWeights(rows: number, cols: number, seed: number): Float32Array {
  const W = randn(rows * cols, seed, 0.05);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      if (r === 1) W[i] = 0;
      else if (r === 2) W[i] = Math.abs(W[i]);
      else if (r === 3) W[i] = -Math.abs(W[i]) - 0.01;
      else W[i] *= 1 + r;
    }
  }
  return W;
}

Deno.test("rtn() matches GPTQ's grid formula elementwise for every b in 2..8, per row and grouped", () => {
  const rows = 6, cols = 48;
  const W = testWeights(rows, cols, 11);
  for (let bits = 2; bits <= 8; bits++) {
    for (const sym of [false, true]) {
      for (const groupSize of [undefined, 16, 8]) {
        const gs = groupSize ?? cols;
        const q = rtn(W, rows, cols, { bits, groupSize, sym });
        assert.equal(q.groupSize, gs);
        const codes = unpackCodes(q.codes, rows, cols, bits);
        const scales = fromF16(q.scales), zeros = fromF16(q.zeros);
        const deq = dequantize({ dense: q });
        const ng = cols / gs;
        for (let r = 0; r < rows; r++) {
          for (let g = 0; g < ng; g++) {
            const vals = Array.from(W.subarray(r * cols + g * gs, r * cols + (g + 1) * gs));
            const want = plainGroup(vals, bits, sym);
            const at = `b=${bits} sym=${sym} group=${gs} row ${r} group ${g}`;
            assert.equal(scales[r * ng + g], want.s16, at);
            assert.equal(zeros[r * ng + g], want.zero, at);
            for (let c = 0; c < gs; c++) {
              assert.equal(codes[r * cols + g * gs + c], want.codes[c], `${at} col ${c}`);
              assert.equal(deq[r * cols + g * gs + c], want.deq[c], `${at} col ${c}`);
            }
          }
        }
      }
    }
  }
});

Deno.test("rtn() matches numpy float32 reference values", () => {
  // Produced with numpy 1.x in float32 (/usr/bin/python3): GPTQ's find_params
  // (perchannel, mse=False) and quantize, scale rounded with astype(float16)
  // before the codes were computed.
  const W = Float32Array.from([
    ...[0.31, -0.12, 0.05, -0.47, 0.22, 0.0, 0.125, -0.3],
    ...[0, 0, 0, 0, 0, 0, 0, 0],
    ...[0.02, 0.5, 0.75, 0.1, 0.3, 0.9, 0.45, 0.6],
  ]);
  const cases = [
    {
      bits: 3,
      sym: false,
      scale16: [0.1114501953125, 0.28564453125, 0.1285400390625],
      zero: [4, 3, 0], // the all-zero row: −(−1)/fp32(2/7) = 3.4999998 rounds to 3
      codes: [[7, 3, 4, 0, 6, 4, 5, 1], [3, 3, 3, 3, 3, 3, 3, 3], [0, 4, 6, 1, 2, 7, 4, 5]],
    },
    {
      bits: 3,
      sym: true,
      scale16: [0.13427734375, 0.28564453125, 0.1285400390625],
      zero: [4, 4, 4],
      codes: [[6, 3, 4, 0, 6, 4, 5, 2], [4, 4, 4, 4, 4, 4, 4, 4], [4, 7, 7, 5, 6, 7, 7, 7]],
    },
    {
      bits: 2,
      sym: false,
      scale16: [0.260009765625, 0.66650390625, 0.300048828125],
      zero: [2, 2, 0],
      codes: [[3, 2, 2, 0, 3, 2, 2, 1], [2, 2, 2, 2, 2, 2, 2, 2], [0, 2, 2, 0, 1, 3, 1, 2]],
    },
  ];
  for (const c of cases) {
    const q = rtn(W, 3, 8, { bits: c.bits, sym: c.sym });
    assert.deepEqual(Array.from(fromF16(q.scales)), c.scale16, `b=${c.bits} sym=${c.sym}`);
    assert.deepEqual(Array.from(fromF16(q.zeros)), c.zero, `b=${c.bits} sym=${c.sym}`);
    assert.deepEqual(Array.from(unpackCodes(q.codes, 3, 8, c.bits)), c.codes.flat());
  }
});

Deno.test("findParams() and quantizeValue() follow GPTQ on hand-computed cases", () => {
  assert.deepEqual(findParams([-1, 0.5, 2], 2, false), { scale: 1, zero: 1 });
  assert.deepEqual(findParams([-1, 0.5, 2], 2, true), { scale: Math.fround(4 / 3), zero: 2 });
  // positive-only row: xmin is clamped to 0
  assert.deepEqual(findParams([1, 2, 3], 2, false), { scale: 1, zero: 0 });
  // all zero: the grid spans [−1, 1]
  assert.deepEqual(findParams([0, 0], 2, false), { scale: Math.fround(2 / 3), zero: 2 });
  // a sub-range [start, end)
  assert.deepEqual(findParams([9, -1, 0.5, 2, 9], 2, false, 1, 4), { scale: 1, zero: 1 });
  // round half to even, like torch.round
  assert.equal(quantizeValue(0.25, 0.5, 2, 3), 2); // 0.5 → 0
  assert.equal(quantizeValue(0.75, 0.5, 0, 3), 2); // 1.5 → 2
  assert.equal(quantizeValue(1.25, 0.5, 0, 7), 2); // 2.5 → 2
  assert.equal(quantizeValue(-0.75, 0.5, 4, 7), 2); // −1.5 → −2
  // clamping
  assert.equal(quantizeValue(-10, 1, 1, 3), 0);
  assert.equal(quantizeValue(10, 1, 1, 3), 3);
  assert.deepEqual([0.5, 1.5, 2.5, -0.5, -2.5, 2.4, -2.6].map(roundHalfEven), [
    0,
    2,
    2,
    -0,
    -2,
    2,
    -3,
  ]);
});

Deno.test("storedScale() rounds to fp16 and keeps tiny scales positive", () => {
  assert.equal(storedScale(0.1), 0.0999755859375);
  assert.equal(storedScale(1e-12), 2 ** -24);
  assert.throws(
    () => storedScale(1e6, "layers.0.wq row 3"),
    /layers\.0\.wq row 3: grid scale 1000000 overflows fp16/,
  );
  // a row whose range underflows fp16 quantizes to its zero point (value 0)
  const q = rtn(Float32Array.from([1e-9, -1e-9, 0, 2e-9]), 1, 4, { bits: 4 });
  assert.deepEqual(Array.from(dequantize({ dense: q })), [0, 0, 0, 0]);
});

Deno.test("rtn() rejects bad bit widths, groups that do not divide the row, and non-finite weights", () => {
  const W = new Float32Array(2 * 8);
  for (const bits of [1, 9]) {
    assert.throws(() => rtn(W, 2, 8, { bits }), /--bits must be an integer from 2 to 8, got/);
  }
  assert.throws(
    () => rtn(W, 2, 8, { bits: 3, groupSize: 3, name: "layers.0.wq" }),
    /--group must be a positive integer dividing the row width of layers\.0\.wq \(8 columns\), got 3/,
  );
  assert.throws(() => rtn(W, 2, 8, { bits: 3, groupSize: 0 }), /--group/);
  const bad = W.slice();
  bad[8 + 5] = NaN;
  assert.throws(
    () => rtn(bad, 2, 8, { bits: 3, name: "layers.2.w1" }),
    /layers\.2\.w1: weight \(1, 5\) is NaN; row 1/,
  );
  bad[8 + 5] = Infinity;
  assert.throws(() => rtn(bad, 2, 8, { bits: 3 }), /W: weight \(1, 5\) is Infinity/);
  assert.throws(() => rtn(W, 3, 8, { bits: 3 }), /expected 3×8 = 24 weights, got 16/);
  // one encoding of "one group per row": null (or an absent option); GPTQ's −1 is not another
  assert.equal(checkGroupSize(null, 8), 8);
  assert.equal(checkGroupSize(undefined, 8), 8);
  assert.throws(() => checkGroupSize(-1, 8), /--group must be a positive integer/);
});

Deno.test("rtn() error shrinks as bits grow and the grid covers every row's range", () => {
  const rows = 4, cols = 64;
  const W = randn(rows * cols, 5, 0.1);
  let prev = Infinity;
  for (let bits = 2; bits <= 8; bits++) {
    const deq = dequantize({ dense: rtn(W, rows, cols, { bits }) });
    let err = 0, maxErr = 0;
    for (let i = 0; i < W.length; i++) {
      err += (W[i] - deq[i]) ** 2;
      maxErr = Math.max(maxErr, Math.abs(W[i] - deq[i]));
    }
    assert.ok(err < prev, `b=${bits}: ${err} < ${prev}`);
    prev = err;
    // asymmetric grids cover [min, max]: every error is at most half a step (plus fp16/zero rounding)
    let maxRange = 0;
    for (let r = 0; r < rows; r++) {
      const row = Array.from(W.subarray(r * cols, (r + 1) * cols));
      maxRange = Math.max(maxRange, Math.max(...row, 0) - Math.min(...row, 0));
    }
    assert.ok(maxErr <= (maxRange / (2 ** bits - 1)) * 1.01, `b=${bits}: max error ${maxErr}`);
  }
});
