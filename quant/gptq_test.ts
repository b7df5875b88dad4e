import assert from "node:assert/strict";
import { dequantize, fromF16, packCodes, unpackCodes } from "./format.ts";
import { descendingOrder, Gptq, type GptqOptions } from "./gptq.ts";
import { spdInverse, upperCholesky } from "./linalg.ts";
import { findParams, quantizeValue, rtn, storedScale } from "./rtn.ts";
import { awqGrid, awqQuantizeTensor } from "./awq.ts";
import { randn } from "../model/random.ts";
import { calibration, COLS, DEAD, GPTQ_TEST_CONFIGS, ROWS } from "./_gptq_testing.ts";

/** Seeded weights [ROWS, COLS]. */
function weights(seed = 1): Float32Array {
  return randn(ROWS * COLS, seed, 0.05);
}

function accumulate(windows: Float32Array[]): Gptq {
  const g = new Gptq(ROWS, COLS);
  for (const x of windows) g.addBatch(x, x.length / COLS);
  return g;
}

/** tr((W − Q) H (W − Q)ᵀ): the layer-wise objective GPTQ minimizes. */
function objective(W: Float32Array, Q: Float32Array, H: Float64Array): number {
  let total = 0;
  const d = new Float64Array(COLS);
  for (let r = 0; r < ROWS; r++) {
    for (let c = 0; c < COLS; c++) d[c] = W[r * COLS + c] - Q[r * COLS + c];
    for (let i = 0; i < COLS; i++) {
      let s = 0;
      for (let j = 0; j < COLS; j++) s += H[i * COLS + j] * d[j];
      total += d[i] * s;
    }
  }
  return total;
}

/**
 * A plain transcription of IST-DASLab/gptq gptq.py `fasterquant` on 2-D
 * arrays, column by column, with the plain Cholesky route and fp32 stores
 * where torch stores fp32; the grid is quant/rtn.ts's. Returns Q in the
 * original column order and Σ Losses.
 */
function referenceFasterquant(W0: Float32Array, Hfull: Float64Array, o: GptqOptions) {
  const f = Math.fround;
  const n = COLS, maxq = 2 ** o.bits - 1, sym = o.sym ?? false;
  const groupsize = o.groupSize ?? -1,
    blocksize = o.blocksize ?? 128,
    percdamp = o.percdamp ?? 0.01;
  let W = Array.from({ length: ROWS }, (_, r) => Array.from(W0.subarray(r * n, (r + 1) * n)));
  let H = Array.from({ length: n }, (_, i) => Array.from(Hfull.subarray(i * n, (i + 1) * n)));
  let scale: number[] = [], zero: number[] = [];
  const findParamsRows = (M: number[][], c0: number, c1: number) => {
    const ps = M.map((row) => findParams(row.slice(c0, c1), o.bits, sym));
    return { scale: ps.map((p) => storedScale(p.scale)), zero: ps.map((p) => p.zero) };
  };
  ({ scale, zero } = findParamsRows(W, 0, n));
  for (let i = 0; i < n; i++) {
    if (H[i][i] === 0) {
      H[i][i] = 1;
      for (const row of W) row[i] = 0;
    }
  }
  const groups: { scale: number[]; zero: number[] }[] = [];
  if (o.staticGroups && groupsize !== -1) {
    for (let i = 0; i < n; i += groupsize) groups.push(findParamsRows(W, i, i + groupsize));
  }
  let perm: number[] = [];
  if (o.actOrder) {
    perm = Array.from({ length: n }, (_, i) => i).sort((a, b) => H[b][b] - H[a][a] || a - b);
    W = W.map((row) => perm.map((p) => row[p]));
    H = perm.map((i) => perm.map((j) => H[i][j]));
  }
  let mean = 0;
  for (let i = 0; i < n; i++) mean += H[i][i] / n;
  for (let i = 0; i < n; i++) H[i][i] += percdamp * mean;
  const Hinv = upperCholesky(spdInverse(H.flat(), n), n);
  const hinv = (i: number, j: number) => Hinv[i * n + j];
  const Q = W.map(() => new Array(n).fill(0));
  let Losses = 0;
  for (let i1 = 0; i1 < n; i1 += blocksize) {
    const i2 = Math.min(i1 + blocksize, n), count = i2 - i1;
    const W1 = W.map((row) => row.slice(i1, i2));
    const Err1 = W.map(() => new Array(count).fill(0));
    let Losses1 = 0;
    for (let i = 0; i < count; i++) {
      const w = W1.map((row) => row[i]);
      const d = hinv(i1 + i, i1 + i);
      if (groupsize !== -1) {
        if (!o.staticGroups) {
          if ((i1 + i) % groupsize === 0) {
            ({ scale, zero } = findParamsRows(W, i1 + i, i1 + i + groupsize));
          }
        } else {
          const idx = o.actOrder ? perm[i1 + i] : i1 + i;
          ({ scale, zero } = groups[Math.floor(idx / groupsize)]);
        }
      }
      const q = w.map((x, r) =>
        f(scale[r] * (quantizeValue(x, scale[r], zero[r], maxq) - zero[r]))
      );
      for (let r = 0; r < ROWS; r++) {
        Q[r][i1 + i] = q[r];
        Losses1 += (w[r] - q[r]) ** 2 / d ** 2;
        const err1 = f((w[r] - q[r]) / d);
        for (let j = i; j < count; j++) W1[r][j] = f(W1[r][j] - err1 * hinv(i1 + i, i1 + j));
        Err1[r][i] = err1;
      }
    }
    Losses += Losses1 / 2;
    for (let r = 0; r < ROWS; r++) {
      for (let j = i2; j < n; j++) {
        let s = 0;
        for (let k = 0; k < count; k++) s += Err1[r][k] * hinv(i1 + k, j);
        W[r][j] = f(W[r][j] - s);
      }
    }
  }
  const out = new Float32Array(ROWS * n);
  for (let r = 0; r < ROWS; r++) {
    for (let i = 0; i < n; i++) out[r * n + (o.actOrder ? perm[i] : i)] = Q[r][i];
  }
  return { Q: out, error: Losses };
}

Deno.test("fasterquant() matches a plain transcription of gptq.py", () => {
  const W = weights();
  const cal = calibration();
  const configs = GPTQ_TEST_CONFIGS;
  for (const o of configs) {
    const g = accumulate(cal);
    const H = g.hessian();
    const got = g.fasterquant(W, o);
    const want = referenceFasterquant(W, H, o);
    const deq = dequantize({ dense: got.q });
    const what = JSON.stringify(o);
    for (let i = 0; i < deq.length; i++) {
      assert.ok(
        Math.abs(deq[i] - want.Q[i]) <= 1e-7,
        `${what} weight ${i}: ${deq[i]} vs ${want.Q[i]}`,
      );
    }
    assert.ok(
      Math.abs(got.error - want.error) <= 1e-6 * want.error,
      `${what}: error ${got.error} vs ${want.error}`,
    );
    assert.ok(got.seconds >= 0);
  }
});

Deno.test("GPTQ's objective tr((W−Q) H (W−Q)ᵀ) is below RTN's for every b in 2..8", () => {
  const W = weights(3);
  const cal = calibration(4);
  for (let bits = 2; bits <= 8; bits++) {
    for (
      const o of [{ bits }, { bits, groupSize: 14, actOrder: true }, {
        bits,
        groupSize: 10,
        sym: true,
      }]
    ) {
      const g = accumulate(cal);
      const H = g.hessian();
      const gptq = objective(W, dequantize({ dense: g.fasterquant(W, o).q }), H);
      const base = objective(W, dequantize({ dense: rtn(W, ROWS, COLS, o) }), H);
      assert.ok(gptq < 0.9 * base, `${JSON.stringify(o)}: GPTQ ${gptq} vs RTN ${base}`);
    }
  }
});

Deno.test("GPTQ with H ∝ I equals RTN exactly", () => {
  // x = the identity: H = 2·I, Hinv diagonal, so no error is fed forward.
  const x = Float32Array.from({ length: COLS * COLS }, (_, i) => (i % (COLS + 1) === 0 ? 1 : 0));
  const W = weights(5);
  for (let bits = 2; bits <= 8; bits++) {
    for (
      const o of [{ bits }, { bits, sym: true }, { bits, groupSize: 10 }, {
        bits,
        groupSize: 35,
        actOrder: true,
      }]
    ) {
      const g = new Gptq(ROWS, COLS);
      g.addBatch(x, COLS);
      const got = g.fasterquant(W, o).q;
      const want = rtn(W, ROWS, COLS, o);
      assert.deepEqual(got.codes, want.codes, JSON.stringify(o));
      assert.deepEqual(got.scales, want.scales, JSON.stringify(o));
      assert.deepEqual(got.zeros, want.zeros, JSON.stringify(o));
      assert.deepEqual(dequantize({ dense: got }), dequantize({ dense: want }));
    }
  }
});

Deno.test("act-order with groups stores GPTQ's g_idx in original column order and round-trips through packCodes/dequantize", () => {
  const W = weights(6);
  const cal = calibration(7);
  const g = accumulate(cal);
  const H = g.hessian();
  const perm = descendingOrder(H, COLS);
  assert.notDeepEqual(
    Array.from(perm),
    Array.from({ length: COLS }, (_, i) => i),
    "a non-trivial order",
  );
  for (let i = 1; i < COLS; i++) assert.ok(H[perm[i - 1] * (COLS + 1)] >= H[perm[i] * (COLS + 1)]);
  const { q } = g.fasterquant(W, { bits: 3, groupSize: 10, actOrder: true });
  assert.ok(q.gIdx, "gIdx present");
  const gIdx: Int32Array = q.gIdx;
  for (let i = 0; i < COLS; i++) assert.equal(gIdx[perm[i]], Math.floor(i / 10));
  const codes = unpackCodes(q.codes, ROWS, COLS, 3);
  assert.deepEqual(packCodes(codes, ROWS, COLS, 3), q.codes);
  const scales = fromF16(q.scales), zeros = fromF16(q.zeros);
  const deq = dequantize({ dense: q });
  for (let r = 0; r < ROWS; r++) {
    for (let c = 0; c < COLS; c++) {
      const k = r * 7 + gIdx[c];
      assert.equal(deq[r * COLS + c], Math.fround(scales[k] * (codes[r * COLS + c] - zeros[k])));
    }
  }
  // static groups keep the natural grouping: no gIdx needed
  const s =
    accumulate(cal).fasterquant(W, { bits: 3, groupSize: 10, actOrder: true, staticGroups: true })
      .q;
  assert.equal(s.gIdx, undefined);
});

Deno.test("fasterquant() zeroes dead columns (diag(H) = 0)", () => {
  const W = weights(8);
  const deq = dequantize({ dense: accumulate(calibration(9)).fasterquant(W, { bits: 4 }).q });
  for (let r = 0; r < ROWS; r++) assert.equal(deq[r * COLS + DEAD], 0);
});

Deno.test("addBatch() keeps H = 2/nsamples · Σ xᵀx, counting windows like GPTQ", () => {
  const cal = calibration(10);
  const g = accumulate(cal);
  assert.equal(g.nsamples, 3);
  const H = g.hessian();
  const c = 7, d = 40;
  let want = 0;
  for (const x of cal) for (let t = 0; t < 40; t++) want += x[t * COLS + c] * x[t * COLS + d];
  want *= 2 / 3;
  assert.ok(Math.abs(H[c * COLS + d] - want) < 1e-9 * Math.abs(want));
  assert.equal(H[d * COLS + c], H[c * COLS + d]);
  // one call for two windows (GPTQ's batch of 2) gives the same H as two calls
  const two = new Gptq(ROWS, COLS);
  const both = new Float32Array([...cal[0], ...cal[1]]);
  two.addBatch(both, 80, 2);
  const g2 = new Gptq(ROWS, COLS);
  g2.addBatch(cal[0], 40);
  g2.addBatch(cal[1], 40);
  const a = two.hessian(), b = g2.hessian();
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i] - b[i]) <= 1e-12 * (1 + Math.abs(b[i])));
  }
});

Deno.test("Gptq rejects bad options, missing calibration and non-finite data", () => {
  const W = weights();
  const cal = calibration();
  assert.throws(
    () => accumulate(cal).fasterquant(W, { bits: 3, groupSize: 16, name: "layers.1.wo" }),
    /--group must be a positive integer dividing the row width of layers\.1\.wo \(70 columns\), got 16/,
  );
  for (const bits of [1, 9]) {
    assert.throws(
      () => accumulate(cal).fasterquant(W, { bits }),
      /--bits must be an integer from 2 to 8/,
    );
  }
  assert.throws(() => new Gptq(ROWS, COLS).fasterquant(W, { bits: 3 }), /no calibration data/);
  const g = accumulate(cal);
  g.fasterquant(W, { bits: 3 });
  assert.throws(() => g.fasterquant(W, { bits: 3 }), /already consumed/);
  assert.throws(() => g.addBatch(cal[0], 40), /already consumed/);
  const bad = W.slice();
  bad[3 * COLS + 9] = NaN;
  assert.throws(
    () => accumulate(cal).fasterquant(bad, { bits: 3, name: "layers.0.wq" }),
    /layers\.0\.wq: weight \(3, 9\) is NaN/,
  );
  const x = cal[0].slice();
  x[2 * COLS] = Infinity;
  assert.throws(
    () => new Gptq(ROWS, COLS).addBatch(x, 40),
    /input row 2 has a non-finite value Infinity/,
  );
  assert.throws(() => new Gptq(ROWS, COLS).addBatch(x, 41), /expected x of 41×70/);
  assert.throws(() => accumulate(cal).fasterquant(W, { bits: 3, percdamp: -1 }), /--percdamp/);
});

Deno.test("copyFor() gives a layer with the same inputs the same H", () => {
  const cal = calibration(11);
  const g = accumulate(cal);
  const other = g.copyFor(5);
  assert.equal(other.rows, 5);
  assert.equal(other.nsamples, 3);
  assert.deepEqual(other.hessian(), g.hessian());
  const W = weights(12);
  const a = g.fasterquant(W, { bits: 3 });
  assert.throws(() => g.copyFor(5), /already consumed/);
  const b = accumulate(cal).fasterquant(W, { bits: 3 });
  assert.deepEqual(a.q, b.q);
});

Deno.test("fasterquant() runs on any grid passed in: AWQ's grid, GPTQ objective below AWQ's RTN", () => {
  const W = weights(5);
  const cal = calibration(6);
  for (const bits of [3, 4]) {
    for (const sym of [false, true]) {
      const g = accumulate(cal);
      const H = g.hessian();
      let calls = 0;
      const grid = awqGrid(bits, sym);
      const counted = {
        ...grid,
        params: (...a: Parameters<typeof grid.params>) => (calls++, grid.params(...a)),
      };
      const q = g.fasterquant(W, { bits, sym, groupSize: 10, grid: counted }).q;
      assert.equal(calls, ROWS * (COLS / 10), "every group's parameters come from the grid");
      const base = awqQuantizeTensor(W, ROWS, COLS, { bits, groupSize: 10, sym });
      const gptq = objective(W, dequantize({ dense: q }), H);
      const rtnAwq = objective(W, dequantize({ dense: base }), H);
      assert.ok(gptq < 0.9 * rtnAwq, `bits ${bits} sym ${sym}: GPTQ ${gptq} vs AWQ RTN ${rtnAwq}`);
    }
  }
  assert.throws(
    () => accumulate(cal).fasterquant(W, { bits: 3, grid: awqGrid(4) }),
    /grid of 4 bits given for bits 3/,
  );
});
