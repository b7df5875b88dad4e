import assert from "node:assert/strict";
import { type UniformTensor, unpackCodes } from "./format.ts";
import { Gptq, type GptqOptions } from "./gptq.ts";
import { fastHessians, GptqFast, gridOf } from "./gptq_fast.ts";
import { awqGrid } from "./awq.ts";
import { randn } from "../model/random.ts";
import { calibration, COLS, DEAD, GPTQ_TEST_CONFIGS, ROWS } from "./_gptq_testing.ts";

function codesOf(q: UniformTensor): Uint8Array {
  return unpackCodes(q.codes, q.rows, q.cols, q.bits);
}

Deno.test("GptqFast gives the reference Gptq's codes, scales and zeros on the reference's test layers", async () => {
  // the configurations of gptq_test.ts's transcription test, plus AWQ's grid
  const configs: GptqOptions[] = [...GPTQ_TEST_CONFIGS, {
    bits: 3,
    groupSize: 10,
    grid: awqGrid(3),
  }];
  for (
    const [seed, W] of [[1, randn(ROWS * COLS, 1, 0.05)], [2, randn(ROWS * COLS, 7, 0.05)]] as const
  ) {
    const cal = calibration(seed + 1);
    for (const o of configs) {
      const ref = new Gptq(ROWS, COLS);
      const fast = new GptqFast(ROWS, COLS, { workers: 0 });
      for (const x of cal) {
        ref.addBatch(x, 40);
        fast.addBatch(x, 40);
      }
      const want = ref.fasterquant(W, o);
      const got = await fast.fasterquant(W, o);
      const what = `seed ${seed} ${JSON.stringify({ ...o, grid: o.grid ? "awq" : undefined })}`;
      assert.deepEqual(codesOf(got.q), codesOf(want.q), `${what}: codes`);
      assert.deepEqual(got.q.scales, want.q.scales, `${what}: scales`);
      assert.deepEqual(got.q.zeros, want.q.zeros, `${what}: zeros`);
      assert.deepEqual(got.q.gIdx, want.q.gIdx, `${what}: gIdx`);
      assert.equal(got.q.bits, want.q.bits);
      assert.ok(
        Math.abs(got.error - want.error) <= 1e-4 * want.error,
        `${what}: error ${got.error} vs ${want.error}`,
      );
    }
  }
});

Deno.test("GptqFast: the same H and the same quantized layer with 0 and 2 workers", async () => {
  const rows = 40, cols = 72;
  const cal = calibration(5, cols);
  const W = randn(rows * cols, 6, 0.05);
  const run = async (workers: number) => {
    const g = new GptqFast(rows, cols, { workers, parallelMinMacs: 0 });
    for (const x of cal) g.addBatch(x, 40);
    await g.flush();
    const H = await g.hessian();
    return { H, r: await g.fasterquant(W, { bits: 3, groupSize: 8, blocksize: 16 }) };
  };
  const a = await run(0), b = await run(2);
  assert.deepEqual(b.H, a.H);
  assert.deepEqual(b.r.q, a.r.q);
  assert.equal(b.r.error, a.r.error);
});

Deno.test("GptqFast with 0 workers packs rows as they come: H as with 2 workers, whatever the batches", async () => {
  // 607 rows in batches that cross the 256-row chunks; 72 columns (the last panel padded)
  const cols = 72, sizes = [100, 200, 7, 300];
  const x = randn(607 * cols, 11);
  const hessian = async (workers: number, batches: number[], flushAfterFirst = false) => {
    const g = new GptqFast(8, cols, { workers, parallelMinMacs: 0 });
    let o = 0;
    for (const N of batches) {
      // one window per batch of `sizes`
      g.addBatch(x.subarray(o * cols, (o += N) * cols), N, sizes.length / batches.length);
      if (flushAfterFirst && o === batches[0]) await g.flush();
    }
    return await g.hessian();
  };
  const streamed = await hessian(0, sizes);
  assert.deepEqual(streamed, await hessian(2, sizes));
  assert.deepEqual(streamed, await hessian(0, [607]));
  // the sums are fp32 per flush, so a flush in between moves some bits: what the above pins
  assert.notDeepEqual(streamed, await hessian(0, sizes, true));
});

Deno.test("GptqFast keeps H = 2/nsamples · Σ xᵀx (the reference's, to fp32 rounding); batches sum like one batch", async () => {
  const cal = calibration(10);
  const ref = new Gptq(ROWS, COLS);
  const fast = new GptqFast(ROWS, COLS, { workers: 0 });
  for (const x of cal) {
    ref.addBatch(x, 40);
    fast.addBatch(x, 40);
  }
  assert.equal(fast.nsamples, 3);
  const want = ref.hessian(), got = await fast.hessian();
  let scale = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < want.length; i++) {
    assert.ok(Math.abs(got[i] - want[i]) <= 1e-6 * scale, `H[${i}]: ${got[i]} vs ${want[i]}`);
  }
  for (let i = 0; i < COLS; i++) assert.equal(got[i * COLS + DEAD], 0);
  const one = new GptqFast(ROWS, COLS, { workers: 0 });
  one.addBatch(new Float32Array([...cal[0], ...cal[1], ...cal[2]]), 120, 3);
  assert.deepEqual(await one.hessian(), got);
});

Deno.test("GptqFast runs on a grid object with the numbers of its GridSpec", async () => {
  const cal = calibration(12);
  const W = randn(ROWS * COLS, 13, 0.05);
  const run = async (grid: Parameters<GptqFast["fasterquant"]>[1]["grid"], workers: number) => {
    const g = new GptqFast(ROWS, COLS, { workers, parallelMinMacs: 0 });
    for (const x of cal) g.addBatch(x, 40);
    return await g.fasterquant(W, { bits: 4, groupSize: 14, grid });
  };
  const spec = { kind: "awq", bits: 4, sym: false } as const;
  const a = await run(awqGrid(4), 0), b = await run(spec, 0);
  assert.deepEqual(a.q, b.q);
  assert.deepEqual(gridOf(spec).params(W, 0, 14, "W"), awqGrid(4).params(W, 0, 14, "W"));
});

Deno.test("GptqFast rejects missing calibration, a consumed H, a wrong grid and non-finite data", async () => {
  const W = randn(ROWS * COLS, 1, 0.05);
  const cal = calibration(2);
  await assert.rejects(
    () => new GptqFast(ROWS, COLS, { workers: 0 }).fasterquant(W, { bits: 3 }),
    /no calibration data/,
  );
  const g = new GptqFast(ROWS, COLS, { workers: 0 });
  g.addBatch(cal[0], 40);
  await g.fasterquant(W, { bits: 3 });
  await assert.rejects(() => g.fasterquant(W, { bits: 3 }), /already consumed/);
  assert.throws(() => g.addBatch(cal[0], 40), /already consumed/);
  const h = new GptqFast(ROWS, COLS, { workers: 0 });
  h.addBatch(cal[0], 40);
  await assert.rejects(
    () => h.fasterquant(W, { bits: 3, grid: { kind: "minmax", bits: 4, sym: false } }),
    /grid of 4 bits given for bits 3/,
  );
  const x = cal[0].slice();
  x[2 * COLS] = NaN;
  assert.throws(() => h.addBatch(x, 40), /input row 2 has a non-finite value NaN/);
  assert.throws(() => new GptqFast(ROWS, COLS, { workers: -1 }), /--workers must be an integer/);
});

Deno.test("fastHessians() and fromHessian(): a solver seeded with an accumulated H quantizes as one that accumulated it", async () => {
  const cal = calibration(14);
  const W = randn(ROWS * COLS, 15, 0.05);
  const acc = fastHessians(0)(0, "wq", COLS);
  const direct = new GptqFast(ROWS, COLS, { workers: 0 });
  for (const x of cal) {
    acc.addBatch(x, 40);
    direct.addBatch(x, 40);
  }
  const H = await acc.finish();
  assert.deepEqual(H, await direct.hessian());
  const o = { bits: 3, groupSize: 10 };
  const seeded = await GptqFast.fromHessian(ROWS, COLS, H, 3, { workers: 0 }).fasterquant(W, o);
  assert.deepEqual(seeded.q, (await direct.fasterquant(W, o)).q);
  const ref = Gptq.fromHessian(ROWS, COLS, H, 3).fasterquant(W, o);
  assert.deepEqual(codesOf(seeded.q), codesOf(ref.q));
  assert.throws(() => Gptq.fromHessian(ROWS, COLS, H.subarray(1), 3), /expected H of 70×70/);
  assert.throws(() => GptqFast.fromHessian(ROWS, COLS, H, 0), /nsamples must be > 0/);
});
