import assert from "node:assert/strict";
import { mulberry32, randn } from "../model/random.ts";
import { codeAt, csrValues, dequantize, fromF16, toF16 } from "./format.ts";
import { kmeans1dOptimum } from "./kmeans1d.ts";
import {
  findOutlierRange,
  outlierPercentage,
  outlierThreshold,
  rowSeed,
  type SqueezeLLMOptions,
  squeezellmQuantize,
} from "./squeezellm.ts";
import { withTrackedWorkers } from "../model/_pool_testing.ts";

const ROWS = 96, COLS = 256;

/** A seeded Gaussian layer W [rows, cols] and Fisher F = squares of Gaussians. */
function layer(seed: number, rows = ROWS, cols = COLS) {
  const W = randn(rows * cols, seed, 0.02);
  const F = randn(rows * cols, seed + 1).map((v) => v * v);
  return { W, F };
}

/**
 * squeezellmQuantize() of layer(seed) with its sparse part stored as
 * `opts.sparseDtype`: W, the result and the sparse part, whose dtype is checked.
 */
async function quantizeSparse(
  seed: number,
  opts: SqueezeLLMOptions & { sparseDtype: "f16" | "f32" },
) {
  const { W, F } = layer(seed);
  const { q, stats } = await squeezellmQuantize(W, F, ROWS, COLS, opts);
  const s = q.sparse!;
  assert.equal(s.dtype, opts.sparseDtype);
  return { W, q, s, stats };
}

/** Positions of a CSR matrix as flat indices, in storage order. */
function csrPositions(s: { rows: number; cols: number; rowPtr: Int32Array; colIdx: Int32Array }) {
  const out: number[] = [];
  for (let r = 0; r < s.rows; r++) {
    for (let p = s.rowPtr[r]; p < s.rowPtr[r + 1]; p++) out.push(r * s.cols + s.colIdx[p]);
  }
  return out;
}

Deno.test("squeezellmQuantize() dense + sparse gives back the removed values (f32)", async () => {
  const { W, q, s, stats } = await quantizeSparse(1, {
    bits: 3,
    sensitivePct: 1,
    outlierRange: 1.5,
    sparseDtype: "f32",
  });
  assert.equal(s.colIdx.length, stats.nnz);
  assert.equal(stats.nnz, stats.nSensitive + stats.nOutliers);
  const D = dequantize(q), Dd = dequantize({ dense: q.dense }), v = csrValues(s);
  const pos = csrPositions(s);
  let exact = 0;
  pos.forEach((i, p) => {
    // One f32 rounding of the sum dense + sparse at most; bit-exact whenever an f32 value allows.
    const bound = 2 ** -24 * (Math.abs(W[i]) + Math.abs(v[p]));
    assert.ok(Math.abs(D[i] - W[i]) <= bound, `at ${i}: ${D[i]} vs ${W[i]}`);
    assert.equal(v[p], Math.fround(v[p]));
    // The dense part decodes the zeroed value to the row's centroid nearest 0.
    const row = Math.floor(i / COLS), lut = fromF16(q.dense.lut.subarray(row * 8, row * 8 + 8));
    assert.equal(Math.abs(Dd[i]), Math.min(...lut.map(Math.abs)));
    if (D[i] === W[i]) exact++;
  });
  console.log(`f32 sparse: ${exact}/${pos.length} removed values bit-exact, the rest within 1 ulp`);
  assert.ok(exact >= 0.9 * pos.length, `only ${exact}/${pos.length} bit-exact`);
  // Everywhere else the dense part alone is the nearest fp16 centroid.
  const inSparse = new Set(pos);
  for (let i = 0; i < W.length; i++) if (!inSparse.has(i)) assert.equal(D[i], Dd[i]);
});

Deno.test("squeezellmQuantize() f16 sparse values are off by their fp16 rounding only", async () => {
  const { W, q, s } = await quantizeSparse(2, {
    bits: 4,
    sensitivePct: 0.5,
    outlierRange: 1.8,
    sparseDtype: "f16",
  });
  assert.ok(s.values instanceof Uint16Array);
  const D = dequantize(q), Dd = dequantize({ dense: q.dense });
  for (const i of csrPositions(s)) {
    const residual = W[i] - Dd[i]; // what was stored, before fp16 rounding
    const bound = 2 ** -11 * Math.abs(residual) + 2 ** -24 * (Math.abs(W[i]) + Math.abs(residual));
    assert.ok(Math.abs(D[i] - W[i]) <= bound, `at ${i}: |${D[i]} − ${W[i]}| > ${bound}`);
  }
});

Deno.test("squeezellmQuantize() removes the requested sensitive and outlier counts", async () => {
  const numel = ROWS * COLS;
  const { W } = layer(3);
  // A Fisher without ties: 1..numel in a seeded random order.
  const F = new Float32Array(numel), u = mulberry32(33);
  for (let i = 0; i < numel; i++) F[i] = i + 1;
  for (let i = numel - 1; i > 0; i--) {
    const j = Math.floor(u() * (i + 1));
    [F[i], F[j]] = [F[j], F[i]];
  }
  const pct = 0.45, r = 1.6;
  const k = Math.floor((numel * pct) / 100);
  const { q, stats } = await squeezellmQuantize(W, F, ROWS, COLS, {
    bits: 3,
    sensitivePct: pct,
    outlierRange: r,
  });
  // The official rule keeps F > (k-th largest F): with no ties that is the k − 1 largest.
  assert.equal(stats.nSensitive, k - 1);
  // Outliers = |w| ≥ T among the rest, T computed directly.
  const byF = Array.from(F.keys()).sort((a, b) => F[b] - F[a]);
  const sensitive = new Set(byF.slice(0, k - 1));
  const T = outlierThreshold(W, r);
  assert.equal(stats.outlierThreshold, T);
  const expected: number[] = [];
  let outliers = 0;
  for (let i = 0; i < numel; i++) {
    const out = Math.abs(W[i]) >= T;
    if (out && !sensitive.has(i)) outliers++;
    if (out || sensitive.has(i)) expected.push(i);
  }
  assert.equal(stats.nOutliers, outliers);
  assert.ok(outliers > 0);
  assert.deepEqual(csrPositions(q.sparse!), expected);
});

Deno.test("squeezellmQuantize() sensitive selection is strict: ties at the k-th largest F stay dense", async () => {
  const rows = 4, cols = 50, numel = rows * cols; // 1.5% of 200: k = 3
  const W = randn(numel, 4, 0.02);
  const F = new Float32Array(numel).fill(1);
  F[7] = 5;
  F[60] = 3;
  F[61] = 3;
  F[150] = 3; // the 3rd largest is 3 and only F > 3 leaves: 1 value (2 without the ties)
  const a = await squeezellmQuantize(W, F, rows, cols, { bits: 2, sensitivePct: 1.5 });
  assert.equal(a.stats.nSensitive, 1);
  assert.deepEqual(csrPositions(a.q.sparse!), [7]);
  // k = 0 (fewer than one value): nothing leaves, no sparse part.
  const b = await squeezellmQuantize(W, F, rows, cols, { bits: 2, sensitivePct: 0.4 });
  assert.equal(b.stats.nnz, 0);
  assert.equal(b.q.sparse, undefined);
});

Deno.test("squeezellmQuantize() dense LUT has 2^b fp16 entries per row and codes pick the nearest", async () => {
  const rows = 8, cols = 300;
  const { W, F } = layer(5, rows, cols);
  for (let bits = 2; bits <= 8; bits++) {
    const { q } = await squeezellmQuantize(W, F, rows, cols, { bits, seed: bits });
    const k = 1 << bits;
    assert.equal(q.dense.kind, "lut");
    assert.equal(q.dense.lut.length, rows * k);
    const lut = fromF16(q.dense.lut);
    for (let r = 0; r < rows; r++) {
      const row = lut.subarray(r * k, (r + 1) * k);
      for (let j = 1; j < k; j++) assert.ok(row[j] >= row[j - 1], "LUT rows ascend");
      for (let c = 0; c < cols; c++) {
        const code = codeAt(q.dense.codes, cols, bits, r, c);
        assert.ok(code < k);
        const w = W[r * cols + c], d = Math.abs(w - row[code]);
        for (const e of row) assert.ok(d <= Math.abs(w - e), `(${r}, ${c}) not the nearest entry`);
      }
    }
  }
});

Deno.test("squeezellmQuantize() method dp stores the fp16 of the exact optimum", async () => {
  const rows = 3, cols = 200;
  const { W, F } = layer(6, rows, cols);
  const { q } = await squeezellmQuantize(W, F, rows, cols, { bits: 3, method: "dp" });
  for (let r = 0; r < rows; r++) {
    const x = W.subarray(r * cols, (r + 1) * cols), g = F.subarray(r * cols, (r + 1) * cols);
    assert.deepEqual(
      q.dense.lut.subarray(r * 8, r * 8 + 8),
      toF16(kmeans1dOptimum(x, g, 8).centroids),
    );
  }
});

Deno.test("squeezellmQuantize() removed values take no part in their row's k-means (weight 0, as nuq.py)", async () => {
  // nuq.py clusters the zeroed row with sample_weight = g · (w ≠ 0): a removed
  // value neither keeps its Fisher weight nor is clipped, so the row's LUT is
  // the k-means of its kept values alone. Checked on the exact optimum ("dp").
  const rows = 6, cols = 128;
  const { W, F } = layer(8, rows, cols);
  for (let i = 0; i < rows * cols; i += 37) W[i] *= 6; // a few clear outliers
  const { q, stats } = await squeezellmQuantize(W, F, rows, cols, {
    bits: 3,
    method: "dp",
    sensitivePct: 2,
    outlierRange: 1.5,
  });
  assert.ok(stats.nSensitive > 0 && stats.nOutliers > 0);
  const removed = new Set(csrPositions(q.sparse!));
  for (let r = 0; r < rows; r++) {
    const x: number[] = [], g: number[] = [];
    for (let c = 0; c < cols; c++) {
      if (!removed.has(r * cols + c)) x.push(W[r * cols + c]), g.push(F[r * cols + c]);
    }
    assert.ok(x.length < cols, `row ${r} has no removed value`);
    assert.deepEqual(
      q.dense.lut.subarray(r * 8, r * 8 + 8),
      toF16(kmeans1dOptimum(x, g, 8).centroids),
      `row ${r}`,
    );
  }
});

Deno.test("squeezellmQuantize() Dense-and-Sparse changes only the rows that lose values", async () => {
  // As in the official code (one random_state for every row), a row without
  // removed values gets the same LUT and codes as in the dense-only run with
  // the same seed, so dense-only vs Dense-and-Sparse is a paired comparison.
  const { W, F } = layer(9);
  const opts = { bits: 3, seed: 4 };
  const dense = (await squeezellmQuantize(W, F, ROWS, COLS, opts)).q.dense;
  const { q } = await squeezellmQuantize(W, F, ROWS, COLS, {
    ...opts,
    sensitivePct: 0.05,
    outlierRange: 2.5,
  });
  const s = q.sparse!, wpr = q.dense.codes.length / ROWS;
  let untouched = 0;
  for (let r = 0; r < ROWS; r++) {
    if (s.rowPtr[r + 1] > s.rowPtr[r]) continue;
    untouched++;
    assert.deepEqual(q.dense.lut.subarray(r * 8, r * 8 + 8), dense.lut.subarray(r * 8, r * 8 + 8));
    assert.deepEqual(
      q.dense.codes.subarray(r * wpr, (r + 1) * wpr),
      dense.codes.subarray(r * wpr, (r + 1) * wpr),
    );
  }
  assert.ok(untouched > 0 && untouched < ROWS, `${untouched} of ${ROWS} rows untouched`);
});

Deno.test("squeezellmQuantize() gives identical results with 0 and 2 workers", async () => {
  const { W, F } = layer(7);
  const opts = { bits: 3, seed: 9, sensitivePct: 0.3, outlierRange: 1.7 };
  const a = await squeezellmQuantize(W, F, ROWS, COLS, { ...opts, workers: 0 });
  const b = await squeezellmQuantize(W, F, ROWS, COLS, { ...opts, workers: 2, chunkRows: 7 });
  assert.deepEqual(b.q, a.q);
  // Options passed as undefined take their defaults.
  const u = await squeezellmQuantize(W, F, ROWS, COLS, {
    ...opts,
    workers: undefined,
    tol: undefined,
  });
  assert.deepEqual(u.q, a.q);
  assert.equal(b.stats.kmeansIterations, a.stats.kmeansIterations);
  // The seed matters, and each row has its own.
  const c = await squeezellmQuantize(W, F, ROWS, COLS, { ...opts, seed: 10 });
  assert.notDeepEqual(c.q.dense.lut, a.q.dense.lut);
  assert.notEqual(rowSeed(9, 0), rowSeed(9, 1));
});

Deno.test("squeezellmQuantize() terminates its workers, also when a row fails", async () => {
  const { W, F } = layer(8, 16, 64);
  const ok = await withTrackedWorkers(async () => {
    await squeezellmQuantize(W, F, 16, 64, { bits: 3, workers: 2, chunkRows: 2 });
  });
  assert.deepEqual(ok, { created: 2, live: 0 });
  W.fill(1e6, 5 * 64, 6 * 64); // row 5: its centroid 1e6 overflows fp16
  const failed = await withTrackedWorkers(async () => {
    await assert.rejects(
      () => squeezellmQuantize(W, F, 16, 64, { bits: 3, workers: 2, chunkRows: 2 }),
      (e: Error) =>
        e instanceof RangeError && /row 5: centroid 1000000 does not fit in fp16/.test(e.message),
    );
  });
  assert.deepEqual(failed, { created: 2, live: 0 });
});

Deno.test("squeezellmQuantize() rejects bad bits, NaN, negative Fisher and bad shapes", async () => {
  const { W, F } = layer(9, 4, 16);
  for (const bits of [1, 9, 2.5]) {
    await assert.rejects(
      () => squeezellmQuantize(W, F, 4, 16, { bits }),
      /squeezellmQuantize\(\) option bits must be an integer from 2 to 8/,
    );
  }
  const Wn = W.slice();
  Wn[1 * 16 + 3] = NaN;
  await assert.rejects(() => squeezellmQuantize(Wn, F, 4, 16, { bits: 3 }), /W\[1, 3\] is NaN/);
  const Fn = F.slice();
  Fn[2 * 16 + 5] = NaN;
  await assert.rejects(() => squeezellmQuantize(W, Fn, 4, 16, { bits: 3 }), /F\[2, 5\] is NaN/);
  Fn[2 * 16 + 5] = -1;
  await assert.rejects(() => squeezellmQuantize(W, Fn, 4, 16, { bits: 3 }), /F\[2, 5\] is -1/);
  await assert.rejects(() => squeezellmQuantize(W, F, 4, 15, { bits: 3 }), /rows×cols = 60/);
  await assert.rejects(
    () => squeezellmQuantize(W, F, 4, 16, { bits: 3, sensitivePct: 101 }),
    /sensitivePct must be in 0\.\.100/,
  );
});

Deno.test("outlierThreshold() matches numpy (quantileLinear() and kthLargest(): quant/stats_test.ts)", () => {
  // /usr/bin/python3, numpy 1.24.2: a = np.array([0.3,-1.2,2.5,0.7,-0.1,1.9,-2.2,0.05], np.float32)
  // np.quantile(a, 0.25) -> -0.3750000074505806, np.quantile(a, 0.75) -> 1.0
  const a = Float32Array.of(0.3, -1.2, 2.5, 0.7, -0.1, 1.9, -2.2, 0.05);
  const iqr = 1.0 - -0.3750000074505806;
  assert.equal(
    outlierThreshold(a, 1.8),
    Math.max(Math.abs(-0.3750000074505806 - 1.8 * iqr), 1 + 1.8 * iqr),
  );
});

Deno.test("findOutlierRange() picks the largest r reaching the target percentage", () => {
  const layers = [0.01, 0.02, 0.05].map((std, i) => randn(20000 + 1000 * i, 30 + i, std));
  for (const target of [0.1, 0.45, 2]) {
    const r = findOutlierRange(layers, target);
    assert.ok(outlierPercentage(layers, r) >= target);
    assert.ok(outlierPercentage(layers, r * (1 + 1e-9)) < target);
    // The percentage is the direct count over all layers.
    let count = 0, total = 0;
    for (const W of layers) {
      const T = outlierThreshold(W, r);
      for (const w of W) if (Math.abs(w) >= T) count++;
      total += W.length;
    }
    assert.equal(outlierPercentage(layers, r), (100 * count) / total);
  }
  assert.throws(() => findOutlierRange(layers, 0), /targetPct must be in \(0, 100\)/);
  assert.throws(() => findOutlierRange(layers, 90), /even r = 0 gives only/);
});
