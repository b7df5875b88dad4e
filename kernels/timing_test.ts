/** Timing helpers and the kernel benchmark on a small shape. */
import assert from "node:assert/strict";
import { gpuTest } from "./_testing.ts";
import { benchKernels, benchTable, parseShapes } from "../eval/bench/kernels.ts";
import { copyBandwidth, timeGpu } from "./timing.ts";

gpuTest(
  "timeGpu() times a pass with GPU timestamps when available, else the wall clock",
  async (gpu) => {
    const copy = await copyBandwidth(gpu, 1 << 20, { runs: 3, warmup: 1 });
    assert.equal(copy.method, gpu.timestamps ? "timestamp" : "wall");
    assert.equal(copy.bytes, 1 << 20);
    assert.ok(copy.minUs > 0 && copy.minUs <= copy.medianUs, JSON.stringify(copy));
    assert.ok(Math.abs(copy.GBps - (2 * copy.bytes) / (copy.medianUs * 1e3)) < 1e-9);
    const wall = await copyBandwidth(gpu, 1 << 20, { runs: 3, warmup: 0, method: "wall", reps: 2 });
    assert.equal(wall.method, "wall");
    assert.ok(wall.minUs > 0 && wall.minUs <= wall.medianUs);
    await assert.rejects(
      timeGpu(gpu, () => {}, { runs: 0 }),
      /runs must be a positive integer, got 0/,
    );
  },
);

gpuTest(
  "benchKernels() times every format on a small shape and reports consistent rows",
  async (gpu) => {
    const lines: string[] = [];
    const r = await benchKernels({
      gpu,
      shapes: "40x256",
      formats: ["f32", "f16", "uniform", "lut", "lut+sparse", "uniform+sparse"],
      bits: [3],
      batch: [1, 2],
      runs: 2,
      warmup: 1,
      groupSize: 128,
      density: 0.05,
      copyBytes: 1 << 20,
      log: (s) => lines.push(s),
    });
    assert.equal(r.rows.length, 6 * 2);
    assert.equal(r.adapter, gpu.info);
    assert.ok(r.copyGBps > 0);
    for (const row of r.rows) {
      assert.ok(row.medianUs >= row.minUs && row.minUs > 0, JSON.stringify(row));
      assert.ok(Math.abs(row.fractionOfCopy - row.GBps / r.copyGBps) < 1e-12);
      if (row.format === "f16") assert.equal(row.speedupVsF16, 1);
      if (row.format === "f32") assert.equal(row.speedupVsF32, 1);
    }
    const avg = (f: string) => r.rows.find((x) => x.format === f)!.avgBits;
    assert.equal(avg("f32"), 32);
    assert.equal(avg("f16"), 16);
    assert.equal(avg("uniform"), 3 + (2 * 16) / 128); // fp16 scale + zero per 128 weights
    assert.equal(avg("lut"), 3 + (8 * 16) / 256); // 8 fp16 entries per row of 256
    assert.ok(avg("lut+sparse") > avg("lut"));
    assert.equal(r.rows.find((x) => x.format === "uniform")!.groupSize, 128);
    assert.equal(r.rows.find((x) => x.format === "lut")!.groupSize, null);
    assert.match(lines.at(-1)!, /^\| shape +\| format/);
    assert.equal(benchTable(r.rows).split("\n").length, 2 + r.rows.length);
  },
);

Deno.test("parseShapes() knows llama7b and stories260K and rejects malformed lists", () => {
  assert.deepEqual(parseShapes("llama7b"), [[4096, 4096], [11008, 4096], [4096, 11008]]);
  assert.equal(parseShapes("stories260K").length, 5);
  assert.deepEqual(parseShapes("37x83, 129×67"), [[37, 83], [129, 67]]);
  assert.throws(
    () => parseShapes("37x"),
    /--shapes: expected llama7b, stories260K or ROWSxCOLS,…; found "37x"/,
  );
});
