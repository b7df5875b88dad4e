import assert from "node:assert/strict";
import { matmul, MATMUL_KIND, matmulBlocked, matmulRef, matmulWasm } from "./matmul.ts";
import { randn } from "./random.ts";
import { benchAttention, benchMatmul } from "../eval/bench/matmul.ts";
import { maxRelError } from "../datasets/testing.ts";

const VARIANTS = { matmulBlocked, matmulWasm, matmul } as const;
const TS = [1, 3, 4, 17];
const NS = [1, 5, 64, 172];
const DS = [1, 7, 32, 512];

/** x [T, n], w [d, n] ~ N(0, 1), deterministic in the shape. */
function operands(T: number, n: number, d: number): { x: Float32Array; w: Float32Array } {
  const seed = T * 1_000_003 + n * 1009 + d;
  return { x: randn(T * n, seed), w: randn(d * n, seed + 1) };
}

for (const [name, fn] of Object.entries(VARIANTS)) {
  Deno.test(`${name}() matches matmulRef to 1e-5 on odd and stories260K shapes`, () => {
    for (const T of TS) {
      for (const n of NS) {
        for (const d of DS) {
          const { x, w } = operands(T, n, d);
          const want = new Float32Array(T * d), got = new Float32Array(T * d).fill(NaN);
          matmulRef(want, x, w, T, n, d);
          fn(got, x, w, T, n, d);
          const err = maxRelError(got, want);
          assert.ok(err <= 1e-5, `${name} T=${T} n=${n} d=${d}: relative error ${err}`);
        }
      }
    }
  });

  Deno.test(`${name}() matches matmulRef on a LLaMA-wide shape (n = 4100, d = 37)`, () => {
    const T = 5, n = 4100, d = 37;
    const { x, w } = operands(T, n, d);
    const want = new Float32Array(T * d), got = new Float32Array(T * d);
    matmulRef(want, x, w, T, n, d);
    fn(got, x, w, T, n, d);
    assert.ok(maxRelError(got, want) <= 1e-5);
  });

  Deno.test(`${name}() writes only out[0, T·d) and reads only x[0, T·n), w[0, d·n)`, () => {
    const T = 3, n = 5, d = 7;
    const { x, w } = operands(T, n, d);
    // Longer operands: the extra elements must be ignored / left untouched.
    const xl = new Float32Array(T * n + 9).fill(1e30), wl = new Float32Array(d * n + 9).fill(1e30);
    xl.set(x), wl.set(w);
    const want = new Float32Array(T * d), got = new Float32Array(T * d + 4).fill(-7);
    matmulRef(want, x, w, T, n, d);
    fn(got, xl, wl, T, n, d);
    assert.ok(maxRelError(got.subarray(0, T * d), want) <= 1e-5);
    assert.deepEqual([...got.subarray(T * d)], [-7, -7, -7, -7]);
  });

  Deno.test(`${name}() gives zeros for n = 0 and nothing for T = 0 or d = 0`, () => {
    const out = new Float32Array(6).fill(3);
    fn(out, new Float32Array(0), new Float32Array(0), 2, 0, 3);
    assert.deepEqual([...out], [0, 0, 0, 0, 0, 0]);
    const untouched = new Float32Array(2).fill(5);
    fn(untouched, new Float32Array(4), new Float32Array(0), 2, 2, 0);
    fn(untouched, new Float32Array(0), new Float32Array(4), 0, 2, 2);
    assert.deepEqual([...untouched], [5, 5]);
  });

  Deno.test(`${name}() rejects operands shorter than the shape`, () => {
    const out = new Float32Array(4), x = new Float32Array(6), w = new Float32Array(6);
    assert.throws(() => fn(out, x.subarray(1), w, 2, 3, 2), /x has 5 elements, expected at least/);
    assert.throws(() => fn(out, x, w.subarray(1), 2, 3, 2), /w has 5 elements/);
    assert.throws(() => fn(out.subarray(1), x, w, 2, 3, 2), /out has 3 elements/);
    assert.throws(() => fn(out, x, w, 2.5, 3, 2), /T must be a non-negative integer, found 2.5/);
  });
}

Deno.test("matmulBlocked() is bit-identical to matmulRef (same float64 summation order)", () => {
  for (const [T, n, d] of [[17, 172, 7], [9, 64, 33], [4, 5, 4]]) {
    const { x, w } = operands(T, n, d);
    const want = new Float32Array(T * d), got = new Float32Array(T * d);
    matmulRef(want, x, w, T, n, d);
    matmulBlocked(got, x, w, T, n, d);
    assert.deepEqual(got, want);
  }
});

Deno.test("matmulWasm() reuses its memory across shapes: a small call after a large one is exact", () => {
  const big = operands(64, 300, 90), small = operands(3, 5, 7);
  const outBig = new Float32Array(64 * 90),
    first = new Float32Array(21),
    again = new Float32Array(21);
  matmulWasm(first, small.x, small.w, 3, 5, 7);
  matmulWasm(outBig, big.x, big.w, 64, 300, 90); // leaves non-zero data in the padding regions
  matmulWasm(again, small.x, small.w, 3, 5, 7);
  assert.deepEqual(again, first);
});

Deno.test("matmulWasm() accumulates in float32 per lane, lanes combined as (l0+l2)+(l1+l3)", () => {
  const ones = new Float32Array(12).fill(1), out = new Float32Array(1), ref = new Float32Array(1);
  // Lane 0 sums 1e8, 1, −1e8 in float32: 1e8 + 1 rounds to 1e8, so 0 (float64 gives 1).
  const x1 = new Float32Array([1e8, 0, 0, 0, 1, 0, 0, 0, -1e8, 0, 0, 0]);
  matmulWasm(out, x1, ones, 1, 12, 1);
  matmulRef(ref, x1, ones, 1, 12, 1);
  assert.equal(out[0], 0);
  assert.equal(ref[0], 1);
  // Lane sums (1e8, 1, −1e8, 1): (l0+l2)+(l1+l3) = 2, where ((l0+l1)+l2)+l3 would give 1.
  matmulWasm(out, new Float32Array([1e8, 1, -1e8, 1]), ones, 1, 4, 1);
  assert.equal(out[0], 2);
});

Deno.test("matmul is the WebAssembly SIMD version in Deno", () => {
  assert.equal(MATMUL_KIND, "wasm");
  assert.equal(matmul, matmulWasm);
});

Deno.test("benchMatmul() and benchAttention() return one timed row per variant and shape", () => {
  const opts = { batches: 2, minBatchMs: 1, print: false };
  const rows = [
    ...benchMatmul([{ label: "tiny", T: 5, n: 6, d: 7 }], opts),
    ...benchAttention([{ label: "tiny", T: 9, nHeads: 2, nKvHeads: 1, headSize: 4 }], opts),
  ];
  assert.deepEqual(rows.map((r) => r.variant), [
    "matmulRef",
    "matmulBlocked",
    "matmulWasm",
    "causalAttentionRef",
    "causalAttentionWasm",
  ]);
  for (const r of rows) {
    assert.ok(
      r.ms > 0 && r.cpuMs >= 0 && r.gflops > 0 && Number.isFinite(r.gflops),
      `${r.variant}`,
    );
    assert.equal(r.label, "tiny");
  }
});
