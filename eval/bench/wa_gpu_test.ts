/**
 * `deno task bench wa` on a tiny shape: one row per kernel and batch, the
 * baselines at ratio 1, and `--pairs` parsing.
 */
import assert from "node:assert/strict";
import { gpuTest } from "../../kernels/_testing.ts";
import { ALL_PAIRS, benchWa, parsePairs, parseRounds } from "./wa.ts";

Deno.test("parsePairs() and parseRounds() read their lists and name the option on a bad entry", () => {
  assert.equal(parsePairs("all").length, 49);
  assert.deepEqual(ALL_PAIRS[0], { w: 2, a: 2 });
  assert.deepEqual(parsePairs("w2a8, W4A4"), [{ w: 2, a: 8 }, { w: 4, a: 4 }]);
  assert.throws(() => parsePairs("w2a16"), /--pairs/);
  assert.throws(() => parsePairs("w1a8"), /--pairs weight bits/);
  assert.deepEqual(parseRounds(undefined, "runs", [10, 3], 1), [10, 3]);
  assert.deepEqual(parseRounds("5", "runs", [10, 3], 1), [5, 5]);
  assert.deepEqual(parseRounds("5,1", "runs", [10, 3], 1), [5, 1]);
  assert.throws(() => parseRounds("5,0", "runs", [10, 3], 1), /--runs/);
});

gpuTest(
  "benchWa() times f16, int8 and every asked pair at every batch and prefill window, with ratios",
  async (gpu) => {
    const r = await benchWa({
      gpu,
      shapes: "64x96",
      pairs: [{ w: 2, a: 8 }, { w: 4, a: 4 }],
      batch: [1, 3],
      prefill: [37],
      runs: 1,
      warmup: 0,
      log: () => {},
    });
    assert.deepEqual(
      r.rows.map((x) => `${x.kernel}/${x.batch}`),
      [
        ...["f16/1", "int8/1", "w2a8/1", "w4a4/1", "f16/3", "int8/3", "w2a8/3", "w4a4/3"],
        ...["f16/37", "int8/37", "w2a8/37", "w4a4/37"],
      ],
    );
    assert.deepEqual([...new Set(r.rows.map((x) => x.phase))], ["decode", "prefill"]);
    for (const row of r.rows) {
      assert.ok(row.medianUs > 0 && Number.isFinite(row.speedupVsW8A8), `${row.kernel}`);
      assert.ok(Math.abs(row.tokensPerS * row.medianUs * 1e-6 - row.batch) < 1e-9 * row.batch);
      if (row.kernel === "int8") assert.equal(row.speedupVsW8A8, 1);
      if (row.kernel === "f16") assert.equal(row.speedupVsF16, 1);
    }
  },
);
