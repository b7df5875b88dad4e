import assert from "node:assert/strict";
import { mulberry32 } from "../model/random.ts";
import { forward } from "../model/forward.ts";
import { randomWeights, tinyConfig } from "../model/random.ts";
import { LINEAR_NAMES, linearKey, linearShape, type LlamaWeights } from "../model/config.ts";
import {
  codeAt,
  dequantize,
  fromF16,
  groupOf,
  nGroups,
  type QuantizedLinear,
  type UniformTensor,
} from "./format.ts";
import { roundHalfEven, rtn } from "./rtn.ts";
import { ACT_QUANT_KERNELS } from "./abq_kernels.ts";
import { actQuantHooks, asymMaxq, fakeQuantRows, tokenParams } from "./act_quant.ts";
import {
  intActQuantHooks,
  intLinear,
  intLinearScalar,
  intWeight,
  IntWeights,
  quantizeActs,
  quantizeActsScalar,
  quantizedModelHooks,
} from "./wa_int.ts";

/** Tokens [T, cols]: random, plus the rows that stress the activation grid. */
function tokens(T: number, cols: number, seed: number): Float32Array {
  const u = mulberry32(seed), x = new Float32Array(T * cols);
  for (let t = 0; t < T; t++) {
    for (let c = 0; c < cols; c++) {
      const o = t * cols + c;
      if (t === 0) x[o] = 0.7; // constant: the clamped scale and zero
      else if (t === 1) x[o] = (c % 5) - 2; // ties on the grid
      else if (t === 2) x[o] = 3 + u(); // one sign, far from 0: a large zero
      else x[o] = (u() - 0.5) * 4 * t;
    }
  }
  return x;
}

/** A uniform weight [rows, cols]: RTN of random values, optionally with act-order groups. */
function weight(
  rows: number,
  cols: number,
  bits: number,
  gs: number,
  act = false,
  bitBalance = false,
): UniformTensor {
  const u = mulberry32(rows * 131 + cols + bits);
  const W = Float32Array.from({ length: rows * cols }, () => u() - 0.5);
  const t = rtn(W, rows, cols, { bits, groupSize: gs, bitBalance });
  if (!act) return t;
  // GPTQ act-order's g_idx: group = ⌊rank / gs⌋ in a permuted column order
  const order = Array.from({ length: cols }, (_, c) => c).sort((a, b) =>
    ((a * 7) % cols) - ((b * 7) % cols)
  );
  const gIdx = new Int32Array(cols);
  order.forEach((c, rank) => gIdx[c] = Math.floor(rank / gs));
  return { ...t, gIdx };
}

/** The definition (module doc) evaluated directly from the packed codes, per group in order. */
function naive(w: UniformTensor, x: Float32Array, T: number, maxq: number): Float32Array {
  const { rows, cols } = w, ng = nGroups(w), f = Math.fround;
  const sw = fromF16(w.scales), zw = fromF16(w.zeros), y = new Float32Array(T * rows);
  for (let t = 0; t < T; t++) {
    const { scale, zero } = tokenParams(x, t * cols, cols, maxq);
    const qx = (c: number) => {
      const q = roundHalfEven(f(x[t * cols + c] / scale));
      return Math.min(Math.max(q + zero, 0), maxq) - zero;
    };
    for (let r = 0; r < rows; r++) {
      const acc = new Float64Array(ng);
      for (let c = 0; c < cols; c++) {
        const g = groupOf(w, c);
        acc[g] += qx(c) * (codeAt(w.codes, cols, w.bits, r, c) - zw[r * ng + g]);
      }
      let out = 0;
      for (let g = 0; g < ng; g++) {
        const term = f(f(sw[r * ng + g] * scale) * f(acc[g]));
        out = g === 0 ? term : f(out + term);
      }
      y[t * rows + r] = out;
    }
  }
  return y;
}

const SHAPES: [rows: number, cols: number, gs: number, act: boolean][] = [
  [1, 3, 3, false],
  [7, 13, 13, false],
  [13, 64, 64, false],
  [9, 70, 70, false],
  [6, 172, 172, false],
  [5, 64, 16, false],
  [11, 96, 32, true],
  [4, 40, 8, true],
];

Deno.test("intLinear(): the WebAssembly kernel is the scalar reference bit for bit, and both the definition", () => {
  assert.ok(ACT_QUANT_KERNELS, "this engine has WebAssembly SIMD");
  for (const [rows, cols, gs, act] of SHAPES) {
    for (
      const [bits, bb, maxq] of [[2, true, 4], [4, false, 15], [8, false, 255], [
        3,
        false,
        63,
      ]] as const
    ) {
      const t = weight(rows, cols, bits, gs, act, bb), w = intWeight(t), T = 9;
      const x = tokens(T, cols, rows + cols + maxq);
      const a = quantizeActs(x, T, w, maxq), b = quantizeActsScalar(x, T, w, maxq);
      assert.deepEqual(a.codes, b.codes, `codes ${rows}×${cols} g${gs} maxq ${maxq}`);
      assert.deepEqual(a.scales, b.scales);
      const got = intLinear(new Float32Array(T * rows), a, w);
      const ref = intLinearScalar(new Float32Array(T * rows), b, w);
      assert.deepEqual(got, ref, `${rows}×${cols} g${gs}${act ? " act" : ""} maxq ${maxq}`);
      assert.deepEqual(ref, naive(t, x, T, maxq), "the definition, from the packed codes");
    }
  }
});

Deno.test("quantizeActs(): s_x · (q − z) is act_quant.ts's fake-quantized value, and the padding is 0", () => {
  const w = intWeight(weight(3, 70, 4, 70)), T = 6, maxq = 255;
  const x = tokens(T, 70, 5), a = quantizeActs(x, T, w, maxq);
  const fake = fakeQuantRows(x, T, 70, maxq, new Float32Array(x.length));
  const K = w.nGroups * w.groupStride;
  assert.equal(K, 72);
  for (let t = 0; t < T; t++) {
    for (let c = 0; c < 70; c++) {
      assert.equal(Math.fround(a.codes[t * K + w.pos[c]] * a.scales[t]), fake[t * 70 + c]);
    }
    assert.deepEqual([...a.codes.subarray(t * K + 70, (t + 1) * K)], [0, 0]);
  }
});

/** A random model's linears quantized by RTN at `bits`, and the model with them dequantized. */
function quantizedModel(
  bits: number,
): { fake: LlamaWeights; linears: Map<string, QuantizedLinear> } {
  const w = randomWeights(tinyConfig(), 3), linears = new Map<string, QuantizedLinear>();
  const layers = w.layers.map((lw, l) => {
    const out = { ...lw };
    for (const name of LINEAR_NAMES) {
      const [rows, cols] = linearShape(w.config, name);
      const q = { dense: rtn(lw[name], rows, cols, { bits }) };
      linears.set(linearKey(l, name), q);
      out[name] = dequantize(q);
    }
    return out;
  });
  return { fake: { ...w, layers }, linears };
}

Deno.test("intActQuantHooks(): the forward with integer linears is close to fake quantization, not equal", () => {
  const { fake, linears } = quantizedModel(4);
  const act = { abits: 8, kvBits: 8, bitBalance: false }, T = 12;
  const toks = Array.from({ length: T }, (_, i) => (i * 37) % fake.config.vocabSize);
  const hooks = quantizedModelHooks(act, fake.config, T, linears);
  assert.ok(hooks.linear, "uniform linears get the integer product");
  const y = forward(fake, toks, { hooks }).slice();
  const ref = forward(fake, toks, { hooks: actQuantHooks(act, fake.config, T) }).slice();
  let diff = 0, norm = 0;
  for (let i = 0; i < y.length; i++) {
    diff = Math.max(diff, Math.abs(y[i] - ref[i]));
    norm = Math.max(norm, Math.abs(ref[i]));
  }
  assert.ok(diff > 0, "the f32 sums of fake quantization differ in the last bits");
  assert.ok(diff < 0.05 * norm, `integer vs fake: max |Δ| ${diff} of ${norm}`);
  // the same hooks again (codes of wq reused for wk, wv): the same logits
  const again = intActQuantHooks(act, fake.config, T, new IntWeights((k) => linears.get(k)!, 1));
  assert.deepEqual(forward(fake, toks, { hooks: again }), y);
});

Deno.test("quantizedModelHooks(): lookup-table or sparse linears, or none, keep fake quantization", () => {
  const { fake, linears } = quantizedModel(4);
  const act = { abits: 8, kvBits: 16, bitBalance: false };
  assert.equal(quantizedModelHooks(act, fake.config, 4, null).linear, undefined);
  const key = linearKey(0, "wq"), q = linears.get(key)!;
  const sparse = new Map(linears).set(key, {
    ...q,
    sparse: {
      rows: q.dense.rows,
      cols: q.dense.cols,
      rowPtr: new Int32Array(q.dense.rows + 1),
      colIdx: new Int32Array(0),
      values: new Uint16Array(0),
    },
  } as QuantizedLinear);
  const h = quantizedModelHooks(act, fake.config, 4, sparse);
  assert.equal(h.linear, undefined);
  assert.ok(h.replaceLinearInput);
  assert.throws(
    () => new IntWeights((k) => sparse.get(k)!).get(0, "wq"),
    /layers\.0\.wq: integer W×A products need uniform codes without a sparse part/,
  );
});

Deno.test("intWeight(): codes minus zeros in grouped, padded slots; asymMaxq's five levels fit", () => {
  const t = weight(2, 40, 2, 8, true, true), w = intWeight(t);
  assert.equal(t.maxq, 4);
  assert.equal(w.nGroups, 5);
  assert.equal(w.groupStride, 8);
  const zw = fromF16(t.zeros);
  for (let r = 0; r < 2; r++) {
    for (let c = 0; c < 40; c++) {
      const g = groupOf(t, c);
      assert.equal(Math.floor(w.pos[c] / 8), g);
      assert.equal(w.codes[r * 40 + w.pos[c]], codeAt(t.codes, 40, t.bits, r, c) - zw[r * 5 + g]);
    }
  }
  assert.equal(asymMaxq(2, true), 4);
});

Deno.test("intWeight() names the weight whose zero is not an integer or leaves int16", () => {
  const t = weight(2, 8, 4, 8);
  const zeros = (z: number) => ({ ...t, zeros: new Uint16Array(new Float16Array([z, z]).buffer) });
  assert.throws(
    () => intWeight(zeros(2.5), "layers.0.wq"),
    /layers\.0\.wq: zero point 2\.5 is not an integer/,
  );
  assert.throws(
    () => intWeight(zeros(-40000), "layers.0.wk"),
    /layers\.0\.wk: code − zero = \d+ .* int16/,
  );
});
