/** The fast weight builders used by tests, benchmarks and GPU decoding. */
import assert from "node:assert/strict";
import { dequantize, fromF16, groupOf } from "../../quant/format.ts";
import { mulberry32Fill, randn } from "../../model/random.ts";
import { csrValues } from "../../quant/format.ts";
import {
  fillF16FromTable,
  normalF16Table,
  normalQuantile,
  quantileLut,
  randomCsr,
  rtnUniform,
  splitOutliers,
} from "./synthetic.ts";
import { validateWeight } from "../../quant/format.ts";
import { rtn } from "../../quant/rtn.ts";
import { unpackCodes } from "../../quant/format.ts";

Deno.test("rtnUniform() is quant/rtn.ts's grid: whole groups equal rtn(), ragged groups use the same grid", () => {
  const [rows, cols] = [6, 48];
  const w = randn(rows * cols, 4);
  for (
    const opts of [{ bits: 3 }, { bits: 4, groupSize: 16 }, { bits: 2, groupSize: 8, sym: true }]
  ) {
    assert.deepEqual(rtnUniform(w, rows, cols, opts), rtn(w, rows, cols, opts));
  }
  // Groups of 20 over 48 columns: 20, 20, 8. The first 40 columns are whole groups of rtn().
  const ragged = rtnUniform(w, rows, cols, { bits: 4, groupSize: 20 });
  const head = Float32Array.from(
    { length: rows * 40 },
    (_, i) => w[Math.floor(i / 40) * cols + (i % 40)],
  );
  const whole = rtn(head, rows, 40, { bits: 4, groupSize: 20 });
  const codes = unpackCodes(ragged.codes, rows, cols, 4),
    want = unpackCodes(whole.codes, rows, 40, 4);
  for (let r = 0; r < rows; r++) {
    assert.deepEqual([...ragged.scales.subarray(3 * r, 3 * r + 2)], [
      ...whole.scales.subarray(2 * r, 2 * r + 2),
    ]);
    assert.deepEqual([...ragged.zeros.subarray(3 * r, 3 * r + 2)], [
      ...whole.zeros.subarray(2 * r, 2 * r + 2),
    ]);
    assert.deepEqual([...codes.subarray(r * cols, r * cols + 40)], [
      ...want.subarray(r * 40, r * 40 + 40),
    ]);
  }
  assert.throws(
    () => rtnUniform(w, rows, cols, { bits: 4, groupSize: 0 }),
    /groupSize must be a positive integer, got 0/,
  );
});

Deno.test("rtnUniform() rounds every weight to within half a step of its group's grid", () => {
  const [rows, cols] = [7, 45];
  const w = randn(rows * cols, 1);
  for (
    const opts of [{ bits: 3 }, { bits: 4, groupSize: 16 }, {
      bits: 5,
      groupSize: 8,
      actOrderSeed: 2,
    }]
  ) {
    const t = rtnUniform(w, rows, cols, opts);
    validateWeight({ dense: t });
    const deq = dequantize({ dense: t });
    const s = fromF16(t.scales), ng = t.scales.length / rows;
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const step = s[r * ng + groupOf(t, c)];
        assert.ok(
          Math.abs(deq[r * cols + c] - w[r * cols + c]) <= step * 0.51,
          `${JSON.stringify(opts)} (${r},${c})`,
        );
      }
    }
    if (opts.actOrderSeed !== undefined) {
      // gIdx is a permutation of the natural grouping: every group keeps groupSize columns.
      const counts = new Map<number, number>();
      for (const g of t.gIdx!) counts.set(g, (counts.get(g) ?? 0) + 1);
      assert.deepEqual([...counts.values()].sort((a, b) => a - b), [5, 8, 8, 8, 8, 8]);
      assert.notDeepEqual([...t.gIdx!], Array.from({ length: cols }, (_, c) => Math.floor(c / 8)));
    }
  }
});

Deno.test("quantileLut() builds sorted tables and picks the nearest entry", () => {
  const [rows, cols] = [5, 70];
  const w = randn(rows * cols, 2);
  const t = quantileLut(w, rows, cols, 3);
  const lut = fromF16(t.lut), deq = dequantize({ dense: t });
  for (let r = 0; r < rows; r++) {
    const table = lut.subarray(r * 8, r * 8 + 8);
    assert.deepEqual([...table], [...table].sort((a, b) => a - b));
    for (let c = 0; c < cols; c++) {
      const best = Math.min(...table.map((v) => Math.abs(v - w[r * cols + c])));
      assert.ok(Math.abs(Math.abs(deq[r * cols + c] - w[r * cols + c]) - best) < 1e-6);
    }
  }
});

Deno.test("splitOutliers() moves the largest weights to CSR and dense + sparse is the original", () => {
  const [rows, cols] = [9, 31];
  const w = randn(rows * cols, 3);
  const { dense, sparse } = splitOutliers(w, rows, cols, 0.05);
  const nnz = sparse.rowPtr[rows];
  assert.equal(nnz, Math.round(0.05 * rows * cols));
  const back = Float32Array.from(dense);
  const v = csrValues(sparse);
  let smallestMoved = Infinity;
  for (let r = 0; r < rows; r++) {
    for (let k = sparse.rowPtr[r]; k < sparse.rowPtr[r + 1]; k++) {
      back[r * cols + sparse.colIdx[k]] += v[k];
      smallestMoved = Math.min(smallestMoved, Math.abs(v[k]));
    }
  }
  assert.deepEqual(back, w);
  assert.ok(dense.every((x) => Math.abs(x) <= smallestMoved));
});

Deno.test("randomCsr() is seeded and keeps columns sorted within rows", () => {
  const a = randomCsr(20, 50, 0.1, 7), b = randomCsr(20, 50, 0.1, 7);
  assert.deepEqual(a, b);
  for (let r = 0; r < 20; r++) {
    for (let k = a.rowPtr[r] + 1; k < a.rowPtr[r + 1]; k++) {
      assert.ok(a.colIdx[k] > a.colIdx[k - 1]);
    }
  }
});

Deno.test("normalQuantile() is Φ⁻¹ to 1.2e-9 relative and normalF16Table()'s draws have the normal's moments", () => {
  // (p, Φ⁻¹(p)) from scipy.stats.norm.ppf; Acklam bounds the relative error by 1.15e-9
  const cases: [number, number][] = [
    [0.5, 0],
    [0.8413447460685429, 1],
    [0.15865525393145707, -1],
    [0.975, 1.959963984540054],
    [0.001, -3.090232306167813],
    [1 - 1e-7, 5.199337582192817],
  ];
  for (const [p, z] of cases) {
    assert.ok(Math.abs(normalQuantile(p) - z) <= 1.2e-9 * Math.max(1, Math.abs(z)), `Φ⁻¹(${p})`);
  }
  assert.throws(() => normalQuantile(1), /p must be in \(0, 1\), got 1/);
  const z = fromF16(normalF16Table((x) => x));
  assert.ok(z.every((v, i) => i === 0 || v >= z[i - 1]), "sorted quantiles");
  const mean = z.reduce((s, v) => s + v, 0) / z.length;
  const variance = z.reduce((s, v) => s + v * v, 0) / z.length;
  assert.ok(Math.abs(mean) < 1e-6 && Math.abs(variance - 1) < 1e-3, `${mean} ${variance}`);
});

Deno.test("fillF16FromTable() draws seeded table entries, two per mulberry32 word", () => {
  const table = normalF16Table((x) => 0.02 * x);
  const a = fillF16FromTable(1001, table, 7);
  assert.deepEqual(a, fillF16FromTable(1001, table, 7), "same seed, same bits");
  assert.notDeepEqual(a, fillF16FromTable(1001, table, 8));
  const words = mulberry32Fill(new Uint32Array(501), 7);
  assert.equal(a[0], table[words[0] & 0xffff]);
  assert.equal(a[1], table[words[0] >>> 16]);
  assert.equal(a[1000], table[words[500] & 0xffff]);
  const x = fromF16(fillF16FromTable(1 << 18, table, 3));
  const std = Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length);
  assert.ok(Math.abs(std - 0.02) < 2e-4, `std ${std}`);
  assert.throws(() => fillF16FromTable(4, new Uint16Array(8), 1), /needs 65536 entries, got 8/);
});
