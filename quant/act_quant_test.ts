import assert from "node:assert/strict";
import {
  actQuantHooks,
  actQuantOf,
  asymMaxq,
  checkActBits,
  fakeQuantRows,
  tokenParams,
} from "./act_quant.ts";
import { randn, randomWeights, tinyConfig } from "../model/random.ts";
import { forward, RunState } from "../model/forward.ts";
import { headSize, kvDim } from "../model/config.ts";

const f32 = (a: number[]) => Float32Array.from(a);

Deno.test("fakeQuantRows() on hand-computed vectors: 2 bits, bit balance, no zero in the range", () => {
  // xmin −1, xmax 2: scale 3/3 = 1, zero round(1) = 1; 0.5 rounds to even 0
  assert.deepEqual([...fakeQuantRows(f32([-1, 0, 0.5, 2]), 1, 4, 3)], [-1, 0, 0, 2]);
  assert.deepEqual(tokenParams(f32([-1, 0, 0.5, 2]), 0, 4, 3), { scale: 1, zero: 1 });
  // bit balance: maxq 4, scale 3/4, zero round(4/3) = 1; 2/0.75 = 2.67 → 3, +1 = 4
  assert.equal(asymMaxq(2, true), 4);
  assert.deepEqual([...fakeQuantRows(f32([-1, 0, 0.5, 2]), 1, 4, 4)], [-0.75, 0, 0.75, 2.25]);
  // per token, 0 is not added to the range (GPTQ's weight grid would): [1, 4] is exact
  assert.deepEqual(tokenParams(f32([1, 2, 3, 4]), 0, 4, 3), { scale: 1, zero: -1 });
  assert.deepEqual([...fakeQuantRows(f32([1, 2, 3, 4]), 1, 4, 3)], [1, 2, 3, 4]);
  // two tokens, each with its own parameters; out-of-place leaves x alone
  const x = f32([0, 0.4, 1, -8, -4, 0]);
  const out = fakeQuantRows(x, 2, 3, 3, new Float32Array(6));
  assert.deepEqual([...x], [...f32([0, 0.4, 1, -8, -4, 0])]);
  // token 2: scale 8/3, zero 3; −4/(8/3) = −1.5 rounds to even −2: (−2 + 3 − 3) · 8/3
  const third = Math.fround(1 / 3), s2 = Math.fround(8 / 3);
  assert.deepEqual([...out], [0, third, 1, -8, Math.fround(-2 * s2), 0]);
});

Deno.test("fakeQuantRows() mirrors ABQ-LLM's clamps on a constant vector (scale 1e-5, |zero| ≤ 1e4)", () => {
  // |x| ≤ 0.1: exact
  const v0 = fakeQuantRows(f32([0.05, 0.05]), 1, 2, 255)[0];
  assert.equal(v0, Math.fround(5000 * Math.fround(1e-5))); // 0.05 up to the fp32 step 1e-5
  assert.ok(Math.abs(v0 - 0.05) < 1e-8);
  // beyond, ABQ-LLM's quantizer returns (255 + 1e4) · 1e-5 ≈ 0.10255, and so does this one
  const v = fakeQuantRows(f32([0.5, 0.5]), 1, 2, 255)[0];
  assert.equal(v, Math.fround((255 + 1e4) * Math.fround(1e-5)));
});

Deno.test("fakeQuantRows() grid properties on random tokens: ≤ maxq+1 levels, error ≤ scale, for 2..8 bits", () => {
  const width = 37, rows = 5;
  for (let bits = 2; bits <= 8; bits++) {
    for (const balance of [false, true]) {
      const maxq = asymMaxq(bits, balance);
      const x = randn(rows * width, bits * 10 + (balance ? 1 : 0), 3);
      const q = fakeQuantRows(x, rows, width, maxq, new Float32Array(x.length));
      for (let r = 0; r < rows; r++) {
        const { scale } = tokenParams(x, r * width, width, maxq);
        const levels = new Set<number>();
        for (let i = r * width; i < (r + 1) * width; i++) {
          levels.add(q[i]);
          assert.ok(Math.abs(q[i] - x[i]) <= scale * 1.0001, `${bits} bits: ${x[i]} → ${q[i]}`);
          // every value is scale · integer
          const k = q[i] / scale;
          assert.ok(Math.abs(k - Math.round(k)) < 1e-3, `${q[i]} is not on the grid of ${scale}`);
        }
        assert.ok(levels.size <= maxq + 1, `${levels.size} levels at maxq ${maxq}`);
        if (bits === 2) assert.ok(levels.size >= (balance ? 4 : 3), `${levels.size} levels`);
      }
    }
  }
});

Deno.test("actQuantOf() reads a spec: off is null, kvBits defaults to abits, 16 turns K/V off", () => {
  assert.equal(actQuantOf({}), null);
  assert.equal(actQuantOf({ abits: 16 }), null);
  assert.deepEqual(actQuantOf({ abits: 8 }), { abits: 8, kvBits: 8, bitBalance: false });
  assert.deepEqual(actQuantOf({ abits: 4, kvBits: 16 }), {
    abits: 4,
    kvBits: 16,
    bitBalance: false,
  });
  assert.deepEqual(actQuantOf({ kvBits: 4, bitBalance: true }), {
    abits: 16,
    kvBits: 4,
    bitBalance: true,
  });
  assert.throws(() => actQuantOf({ abits: 9 }), /--abits must be an integer from 2 to 8.*16: off/);
  assert.throws(() => checkActBits(1, "--kv-bits"), /--kv-bits/);
});

Deno.test("actQuantHooks() quantizes Q, K, V per head and token, and every linear's input per token", () => {
  const config = tinyConfig({ nKvHeads: 2 });
  const w = randomWeights(config, 3);
  const T = 6;
  const hs = headSize(config), kv = kvDim(config);
  // Q/K/V: each head vector of each token has at most maxq + 1 = 4 distinct values
  const hooks = actQuantHooks({ abits: 16, kvBits: 2, bitBalance: false }, config, T);
  assert.equal(hooks.replaceLinearInput, undefined);
  const s = new RunState(config, T);
  s.q.set(randn(T * config.dim, 1));
  s.k.set(randn(T * kv, 2));
  s.v.set(randn(T * kv, 3));
  const v0 = s.v.slice(0, T * kv);
  hooks.onQkv!(0, s, T);
  for (const [a, width] of [[s.q, config.dim], [s.k, kv], [s.v, kv]] as const) {
    for (let o = 0; o < T * width; o += hs) {
      assert.ok(new Set(a.subarray(o, o + hs)).size <= 4);
    }
  }
  assert.deepEqual(s.v.subarray(0, T * kv), fakeQuantRows(v0, (T * kv) / hs, hs, 3));
  // linears: the input returned is x quantized per token; x itself is untouched
  const lin = actQuantHooks({ abits: 3, kvBits: 16, bitBalance: false }, config, T);
  assert.equal(lin.onQkv, undefined);
  const x = randn(T * config.hiddenDim, 5);
  const x0 = x.slice();
  const got = lin.replaceLinearInput!(0, "w2", x, T)!;
  assert.deepEqual(x, x0);
  assert.deepEqual(got, fakeQuantRows(x0, T, config.hiddenDim, 7, new Float32Array(x.length)));
  // through forward(): 8 bits moves the logits a little, 2 bits a lot more
  const tokens = [1, 5, 9, 2, 7, 3];
  const fp = forward(w, tokens).slice();
  const err = (bits: number) => {
    const h = actQuantHooks({ abits: bits, kvBits: bits, bitBalance: false }, config, T);
    const l = forward(w, tokens, { hooks: h });
    let e = 0, n = 0;
    for (let i = 0; i < fp.length; i++) {
      e += (l[i] - fp[i]) ** 2;
      n += fp[i] ** 2;
    }
    return Math.sqrt(e / n);
  };
  const e8 = err(8), e2 = err(2);
  // the input quantized for wq (w1) serves wk, wv (w3): the same as quantizing at every linear
  const naive = forward(w, tokens, {
    hooks: {
      replaceLinearInput: (_l, name, x, T) => {
        const inF = name === "w2" ? config.hiddenDim : config.dim;
        return fakeQuantRows(x, T, inF, 7, new Float32Array(T * inF));
      },
    },
  }).slice();
  const cfg3 = { abits: 3, kvBits: 16, bitBalance: false };
  assert.deepEqual(forward(w, tokens, { hooks: actQuantHooks(cfg3, config, T) }), naive);
  assert.ok(e8 > 0 && e8 < 0.02, `8-bit relative error ${e8}`);
  assert.ok(e2 > 5 * e8, `2-bit ${e2} vs 8-bit ${e8}`);
});
