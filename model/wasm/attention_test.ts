import assert from "node:assert/strict";
import { causalAttention, causalAttentionRef, causalAttentionWasm } from "./attention.ts";
import { randn } from "../random.ts";
import { maxRelError } from "../../datasets/testing.ts";

/** q, k, v for a window; q and k scaled by `qkStd` (larger → peakier softmax). */
function operands(T: number, nHeads: number, nKvHeads: number, hs: number, qkStd = 1) {
  const seed = T * 7919 + nHeads * 104729 + nKvHeads * 31 + hs;
  return {
    q: randn(T * nHeads * hs, seed, qkStd),
    k: randn(T * nKvHeads * hs, seed + 1, qkStd),
    v: randn(T * nKvHeads * hs, seed + 2),
  };
}

/** [nHeads, nKvHeads, headSize]: plain, grouped-query, stories260K, 8+4 columns, LLaMA heads. */
const HEADS: [number, number, number][] = [[1, 1, 4], [2, 1, 8], [8, 4, 8], [3, 3, 12], [4, 2, 64]];

Deno.test("causalAttentionWasm() matches causalAttentionRef to 1e-5 for odd windows and head layouts", () => {
  for (const T of [1, 2, 3, 5, 17, 33, 130]) {
    for (const [nh, nkv, hs] of HEADS) {
      const { q, k, v } = operands(T, nh, nkv, hs);
      const want = new Float32Array(T * nh * hs), got = new Float32Array(T * nh * hs).fill(NaN);
      causalAttentionRef(want, q, k, v, T, nh, nkv, hs);
      causalAttentionWasm(got, q, k, v, T, nh, nkv, hs);
      const err = maxRelError(got, want);
      assert.ok(err <= 1e-5, `T=${T} heads=${nh}/${nkv}×${hs}: relative error ${err}`);
    }
  }
});

Deno.test("causalAttentionWasm() stays within 1e-5 on peaked softmaxes (exp far below the max)", () => {
  // Score spreads of hundreds: most exps fall below −87 (the general kernel's clamp) or
  // 2^−126 (attention_hs8's flush to 0).
  for (const [T, hs] of [[40, 16], [41, 8], [300, 8]]) {
    const nh = 2, nkv = 1;
    const { q, k, v } = operands(T, nh, nkv, hs, 6);
    const want = new Float32Array(T * nh * hs), got = new Float32Array(T * nh * hs);
    causalAttentionRef(want, q, k, v, T, nh, nkv, hs);
    causalAttentionWasm(got, q, k, v, T, nh, nkv, hs);
    assert.ok(maxRelError(got, want) <= 1e-5, `T=${T} hs=${hs}`);
  }
});

Deno.test("causalAttentionWasm() computes softmax weights to 1e-6 over score gaps −85..85", () => {
  // Two keys, one head of size 4 (scale 1/2, exact): s0 = 0, s1 = x/2, v0 = 0, v1 = 1 in
  // column 0, so att[1, 0] = e^s1 / (1 + e^s1) exposes the kernel's exp directly.
  const k = new Float32Array([0, 0, 0, 0, 1, 0, 0, 0]),
    v = new Float32Array([0, 0, 0, 0, 1, 0, 0, 0]);
  const att = new Float32Array(8);
  for (let s1 = -85; s1 <= 85; s1 += 0.37) {
    const q = new Float32Array([0, 0, 0, 0, Math.fround(2 * s1), 0, 0, 0]);
    causalAttentionWasm(att, q, k, v, 2, 1, 1, 4);
    const sExact = Math.fround(2 * s1) / 2;
    const want = 1 / (1 + Math.exp(-sExact));
    assert.ok(Math.abs(att[4] - want) <= 1e-6 * want, `s1=${sExact}: ${att[4]} vs ${want}`);
  }
});

Deno.test("causalAttentionWasm() at head size 8 computes softmax weights to 2e-7 + |s|·1.5e-7 over score gaps −85..85", () => {
  // attention_hs8 takes scores in base 2: s·log2 e, rounded to float32, adds |s|·6e-8 to the
  // relative error of e^s (as large as the rounding of the float32 score itself).
  const k = new Float32Array(16), v = new Float32Array(16);
  k[8] = 1, v[8] = 1; // s0 = 0, v0 = 0; s1 = q[8, 0] / √8, v1 = 1 in column 0
  const att = new Float32Array(16);
  for (let s1 = -85; s1 <= 85; s1 += 0.37) {
    const q = new Float32Array(16);
    q[8] = Math.fround(Math.sqrt(8) * s1);
    causalAttentionWasm(att, q, k, v, 2, 1, 1, 8);
    const sExact = q[8] / Math.sqrt(8);
    const want = 1 / (1 + Math.exp(-sExact));
    const tol = (2e-7 + Math.abs(sExact) * 1.5e-7) * want;
    assert.ok(Math.abs(att[8] - want) <= tol, `s1=${sExact}: ${att[8]} vs ${want}`);
  }
});

Deno.test("causalAttentionWasm() gives v[0] at position 0 and the running mean of v for equal scores", () => {
  const T = 9, nh = 2, nkv = 2, hs = 4, dim = nh * hs;
  const { v } = operands(T, nh, nkv, hs);
  const q = new Float32Array(T * dim), k = new Float32Array(T * dim); // all scores 0
  const att = new Float32Array(T * dim);
  causalAttentionWasm(att, q, k, v, T, nh, nkv, hs);
  for (let t = 0; t < T; t++) {
    for (let c = 0; c < dim; c++) {
      let mean = 0;
      for (let u = 0; u <= t; u++) mean += v[u * dim + c] / (t + 1);
      if (t === 0) assert.equal(att[c], v[c]);
      else assert.ok(Math.abs(att[t * dim + c] - mean) <= 1e-6, `t=${t} c=${c}`);
    }
  }
});

Deno.test("causalAttentionWasm() is causal: later keys and values do not change earlier outputs", () => {
  const T = 21, nh = 4, nkv = 2, hs = 8, cut = 10, kvw = nkv * hs;
  const { q, k, v } = operands(T, nh, nkv, hs);
  const a = new Float32Array(T * nh * hs), b = new Float32Array(T * nh * hs);
  causalAttentionWasm(a, q, k, v, T, nh, nkv, hs);
  const k2 = k.slice(), v2 = v.slice();
  for (let i = (cut + 1) * kvw; i < T * kvw; i++) k2[i] = 1e3, v2[i] = -1e3;
  causalAttentionWasm(b, q, k2, v2, T, nh, nkv, hs);
  assert.deepEqual(b.subarray(0, (cut + 1) * nh * hs), a.subarray(0, (cut + 1) * nh * hs));
});

Deno.test("causalAttentionWasm() reads only T rows, writes only att[0, T·dim), repeatably", () => {
  const T = 6, nh = 2, nkv = 1, hs = 8, dim = nh * hs;
  const { q, k, v } = operands(T, nh, nkv, hs);
  const pad = (a: Float32Array) => {
    const p = new Float32Array(a.length + 16).fill(1e30);
    p.set(a);
    return p;
  };
  const first = new Float32Array(T * dim), att = new Float32Array(T * dim + 3).fill(-5);
  causalAttentionWasm(first, q, k, v, T, nh, nkv, hs);
  // A larger call in between leaves other data in the kernels' scratch memory.
  const big = operands(70, 8, 4, 8);
  causalAttentionWasm(new Float32Array(70 * 64), big.q, big.k, big.v, 70, 8, 4, 8);
  causalAttentionWasm(att, pad(q), pad(k), pad(v), T, nh, nkv, hs);
  assert.deepEqual(att.subarray(0, T * dim), first);
  assert.deepEqual([...att.subarray(T * dim)], [-5, -5, -5]);
});

Deno.test("causalAttentionWasm() rejects bad shapes naming the operand", () => {
  const z = new Float32Array(64);
  assert.throws(
    () => causalAttentionWasm(z, z, z, z, 2, 2, 1, 6),
    /headSize must be a multiple of 4, found 6/,
  );
  assert.throws(
    () => causalAttentionWasm(z, z, z, z, 2, 3, 2, 4),
    /nHeads \(3\) must be a multiple of nKvHeads \(2\)/,
  );
  assert.throws(
    () => causalAttentionWasm(z, z.subarray(1), z, z, 4, 2, 1, 8),
    /q has 63 elements, expected at least/,
  );
  assert.throws(() => causalAttentionRef(z, z, z, z.subarray(40), 4, 2, 1, 8), /v has 24 elements/);
});

Deno.test("causalAttention() uses the reference for head sizes that are not a multiple of 4", () => {
  const T = 7, nh = 2, nkv = 1, hs = 6;
  const { q, k, v } = operands(T, nh, nkv, hs);
  const want = new Float32Array(T * nh * hs), got = new Float32Array(T * nh * hs);
  causalAttentionRef(want, q, k, v, T, nh, nkv, hs);
  causalAttention(got, q, k, v, T, nh, nkv, hs);
  assert.deepEqual(got, want);
  // …and the WebAssembly kernel for the rest.
  const w = operands(T, 8, 4, 8),
    viaWasm = new Float32Array(T * 64),
    direct = new Float32Array(T * 64);
  causalAttention(viaWasm, w.q, w.k, w.v, T, 8, 4, 8);
  causalAttentionWasm(direct, w.q, w.k, w.v, T, 8, 4, 8);
  assert.deepEqual(viaWasm, direct);
});

/**
 * kernels.wat's general attention kernel transcribed operation by operation
 * in float32 (Math.fround after every operation): scores summed over the
 * head's columns in order, the Cephes exp, the four lane sums combined as
 * (l0 + l2) + (l1 + l3), and the weighted sum with key u in accumulator
 * u mod 4, combined as (a0 + a1) + (a2 + a3). The kernel's memory layout
 * (how it copies k and v) must not change these bits.
 */
function attentionF32(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  T: number,
  nh: number,
  nkv: number,
  hs: number,
): Float32Array {
  const f = Math.fround, dim = nh * hs, kvw = nkv * hs, group = nh / nkv;
  const scale = f(1 / Math.sqrt(hs)), Tp = (T + 3) & ~3;
  const [lo, log2e, ln2hi, ln2lo, round] = [
    -87.33654,
    1.44269504088896341,
    0.693359375,
    -2.12194440e-4,
    12582912,
  ].map(f);
  const [p0, p1, p2, p3, p4, p5] = [
    1.9875691500e-4,
    1.3981999507e-3,
    8.3334519073e-3,
    4.1665795894e-2,
    1.6666665459e-1,
    5.0000001201e-1,
  ].map(f);
  const exp = (x: number) => {
    const kf = f(f(x * log2e) + round), kk = f(kf - round);
    const r = f(f(x - f(kk * ln2hi)) - f(kk * ln2lo)), r2 = f(r * r);
    let y = f(f(f(f(p0 * r) + p1) * f(r2 * r2)) + f(f(f(f(p2 * r) + p3) * r2) + f(f(p4 * r) + p5)));
    y = f(f(f(y * r2) + r) + 1);
    return f(y * 2 ** kk);
  };
  const att = new Float32Array(T * dim), p = new Float64Array(Tp);
  const kv = (
    a: Float32Array,
    u: number,
    g: number,
    j: number,
  ) => (u < T ? a[u * kvw + g * hs + j] : 0);
  for (let h = 0; h < nh; h++) {
    const g = Math.floor(h / group);
    for (let t = 0; t < T; t++) {
      const n = ((t + 4) >> 2) * 4; // keys of the groups read: 0 .. n − 1
      let m = -Infinity;
      for (let u = 0; u < n; u++) {
        let s = 0;
        for (let j = 0; j < hs; j++) s = f(s + f(q[t * dim + h * hs + j] * kv(k, u, g, j)));
        p[u] = f(s * scale);
        if (u <= t) m = Math.max(m, p[u]);
      }
      const lane = [0, 0, 0, 0];
      for (let u = 0; u < n; u++) {
        const d = f(p[u] - m);
        p[u] = u <= t ? exp(d < lo ? lo : d) : 0;
        lane[u & 3] = f(lane[u & 3] + p[u]);
      }
      const inv = f(1 / f(f(lane[0] + lane[2]) + f(lane[1] + lane[3])));
      for (let j = 0; j < hs; j++) {
        const a = [0, 0, 0, 0];
        for (let u = 0; u < n; u++) a[u & 3] = f(a[u & 3] + f(p[u] * kv(v, u, g, j)));
        att[t * dim + h * hs + j] = f(f(f(a[0] + a[1]) + f(a[2] + a[3])) * inv);
      }
    }
  }
  return att;
}

Deno.test("causalAttentionWasm() at head sizes other than 8 gives, bit for bit, its float32 transcription (layouts of k and v change no bit)", () => {
  for (const [T, nh, nkv, hs] of [[33, 4, 2, 12], [70, 2, 1, 64], [5, 3, 3, 4], [130, 2, 2, 20]]) {
    const { q, k, v } = operands(T, nh, nkv, hs);
    const got = new Float32Array(T * nh * hs);
    causalAttentionWasm(got, q, k, v, T, nh, nkv, hs);
    assert.deepEqual(got, attentionF32(q, k, v, T, nh, nkv, hs), `T=${T} heads=${nh}/${nkv}×${hs}`);
  }
});
