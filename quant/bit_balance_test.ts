import assert from "node:assert/strict";
import { codeBits, gridMaxq, minMaxGrid, rtn } from "./rtn.ts";
import {
  dequantizeDense,
  sizeOf,
  type UniformTensor,
  unpackCodes,
  validateWeight,
} from "./format.ts";
import { Gptq } from "./gptq.ts";
import { awqGrid, awqQuantizeTensor } from "./awq.ts";
import { randn, tinyConfig } from "../model/random.ts";
import { defaultSpec, type QuantSpec, resolveSpec, variantName } from "./spec.ts";

const levels = (t: UniformTensor) => new Set(unpackCodes(t.codes, t.rows, t.cols, t.bits));

Deno.test("bit balance: a 2-bit asymmetric grid has five levels, step range/4, stored as 3-bit codes", () => {
  assert.equal(gridMaxq(2, false, true), 4);
  assert.equal(gridMaxq(2, true, true), 3, "symmetric grids are not balanced");
  assert.equal(gridMaxq(3, false, true), 7, "only 2 bits");
  assert.equal(codeBits(4), 3);
  assert.equal(codeBits(3), 2);
  // [0, 4] on five levels is exact: scale (4 − 0)/4 = 1, zero 0
  const row = Float32Array.from([0, 1, 2, 3, 4, 2.4, 0.6, 3.5]);
  const t = rtn(row, 1, 8, { bits: 2, bitBalance: true });
  assert.equal(t.bits, 3);
  assert.equal(t.maxq, 4);
  assert.deepEqual([...levels(t)].sort(), [0, 1, 2, 3, 4]);
  assert.deepEqual([...dequantizeDense(t)], [0, 1, 2, 3, 4, 2, 1, 4]); // 0.6→1, 3.5→4 (even)
  validateWeight({ dense: t });
  // without bit balance: four levels, 2-bit codes, step 4/3
  const plain = rtn(row, 1, 8, { bits: 2 });
  assert.equal(plain.bits, 2);
  assert.equal(plain.maxq, undefined);
  assert.ok(levels(plain).size <= 4);
  // at 3..8 bits the option changes nothing
  for (let b = 3; b <= 8; b++) {
    assert.deepEqual(rtn(row, 1, 8, { bits: b, bitBalance: true }), rtn(row, 1, 8, { bits: b }));
  }
});

Deno.test("bit balance lowers RTN's 2-bit error on Gaussian rows, and is counted as 3-bit codes", () => {
  const rows = 16, cols = 64;
  const W = randn(rows * cols, 7);
  const err = (t: UniformTensor) => {
    const d = dequantizeDense(t);
    return d.reduce((s, v, i) => s + (v - W[i]) ** 2, 0);
  };
  const bal = rtn(W, rows, cols, { bits: 2, bitBalance: true });
  const plain = rtn(W, rows, cols, { bits: 2 });
  assert.ok(err(bal) < err(plain), `${err(bal)} vs ${err(plain)}`);
  // codes at 3 bits, fp16 scale and zero per row: 3 + 32/64
  assert.equal(sizeOf({ dense: bal }).avgInfoBits, 3 + 32 / cols);
  assert.equal(sizeOf({ dense: plain }).avgInfoBits, 2 + 32 / cols);
  assert.equal(sizeOf({ dense: bal }).storedBytes.codes, rows * Math.ceil((cols * 3) / 32) * 4);
  assert.throws(
    () => validateWeight({ dense: { ...bal, maxq: 8 } }),
    /dense\.maxq: expected an integer in 1\.\.7, found 8/,
  );
});

Deno.test("GPTQ and AWQ take the bit-balanced grid: codes 0..4 in 3-bit words", () => {
  const rows = 8, cols = 16, N = 64;
  const W = randn(rows * cols, 3);
  const X = randn(N * cols, 4);
  const g = new Gptq(rows, cols);
  g.addBatch(X, N);
  const { q } = g.fasterquant(W, { bits: 2, grid: minMaxGrid(2, false, true) });
  assert.equal(q.bits, 3);
  assert.equal(q.maxq, 4);
  assert.ok(Math.max(...levels(q)) <= 4 && levels(q).size === 5, `${[...levels(q)]}`);
  // AWQ's grid: scale (max − min)/4
  assert.deepEqual(awqGrid(2, false, true).params([0, 1, 2, 3, 4], 0, 5, "W"), {
    scale: 1,
    zero: 0,
  });
  const a = awqQuantizeTensor(W, rows, cols, { bits: 2, groupSize: 8, bitBalance: true });
  assert.equal(a.bits, 3);
  assert.equal(a.maxq, 4);
  assert.ok(Math.max(...levels(a)) <= 4);
});

Deno.test("spec: activation fields are absent when off, canonical when on, and feed the variant name", () => {
  const c = tinyConfig();
  // weight-only specs are what they were: no abits / kvBits / bitBalance keys
  for (const m of ["rtn", "gptq", "awq", "squeezellm", "smoothquant"] as const) {
    const s = resolveSpec(defaultSpec(m, 3), c);
    for (const k of ["abits", "kvBits", "bitBalance"]) assert.ok(!(k in s), `${m}: ${k}`);
  }
  const r = (s: Partial<QuantSpec>) =>
    resolveSpec({ ...defaultSpec("gptq", 2), ...s } as QuantSpec, c);
  assert.deepEqual(r({ abits: 8, kvBits: 8 }), r({ abits: 8 }));
  assert.equal(r({ abits: 8 }).kvBits, undefined);
  assert.equal(r({ abits: 8, kvBits: 16 }).kvBits, 16);
  assert.equal(r({ bitBalance: true }).bitBalance, true);
  assert.equal(variantName(r({ bitBalance: true, abits: 8 })), "gptq.w2*a8");
  // bit balance that changes nothing is dropped (one identity for one result)
  assert.deepEqual(
    resolveSpec({ ...defaultSpec("gptq", 4), bitBalance: true }, c),
    resolveSpec(defaultSpec("gptq", 4), c),
  );
  assert.equal(r({ bitBalance: true, sym: true }).bitBalance, undefined);
  // SqueezeLLM's weights are non-uniform: only its 2-bit activations are balanced
  const sq = { ...defaultSpec("squeezellm", 2), bitBalance: true };
  assert.equal(resolveSpec(sq, c).bitBalance, undefined);
  assert.equal(variantName(resolveSpec({ ...sq, abits: 2 }, c)), "squeezellm.w2a2*");
  assert.throws(() => resolveSpec({ ...defaultSpec("rtn", 4), abits: 12 }, c), /--abits must be/);
});
