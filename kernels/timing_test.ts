/** Timing helpers and the kernel benchmark on a small shape. */
import assert from "node:assert/strict";
import { gpuTest } from "./_testing.ts";
import { benchKernels, benchTable, parseShapes } from "../eval/bench/kernels.ts";
import { copyBandwidth, timeGpu } from "./timing.ts";

/** Asserts |got / want − 1| < 1e-9 (the figures are products and quotients of floats). */
function near(got: number, want: number, what: string): void {
  assert.ok(Math.abs(got / want - 1) < 1e-9, `${what}: ${got} vs ${want}`);
}

gpuTest(
  "timeGpu() times a pass with GPU timestamps when available, else the wall clock",
  async (gpu) => {
    const copy = await copyBandwidth(gpu, 1 << 20, { runs: 3, warmup: 1 });
    assert.equal(copy.method, gpu.timestamps ? "timestamp" : "wall");
    assert.equal(copy.bytes, 1 << 20);
    assert.ok(copy.minUs > 0 && copy.minUs <= copy.medianUs, JSON.stringify(copy));
    // A copy of 1 MiB reads 1 MiB and writes 1 MiB: 2²¹ bytes in medianUs µs.
    near(copy.GBps * copy.medianUs * 1e3, 2 ** 21, "copy bytes");
    // Rounded down to whole vec4s: 1 MiB + 15 bytes copies 1 MiB.
    const odd = await copyBandwidth(gpu, (1 << 20) + 15, { runs: 1, warmup: 0 });
    assert.equal(odd.bytes, 1 << 20);
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
    // Bytes of the 40×256 weight, by hand: f32 4 and f16 2 per weight; 3-bit
    // codes are 256·3/32 = 24 words per row; uniform adds an fp16 scale and
    // zero per row and group of 128, lut 2³ fp16 entries per row.
    const weightBytes: Record<string, number> = {
      f32: 40 * 256 * 4,
      f16: 40 * 256 * 2,
      uniform: 40 * 24 * 4 + 40 * 2 * (2 + 2),
      lut: 40 * 24 * 4 + 40 * 8 * 2,
    };
    // The sparse part: 41 int32 row pointers, then an int32 index and an fp16 value per nonzero.
    const at1 = (f: string) => r.rows.find((x) => x.format === f && x.batch === 1)!;
    const sparseBytes = at1("lut+sparse").bytesMoved - at1("lut").bytesMoved - 41 * 4;
    const nnz = sparseBytes / 6;
    assert.ok(Number.isInteger(nnz) && nnz > 0.02 * 40 * 256 && nnz < 0.08 * 40 * 256, `${nnz}`);
    weightBytes["lut+sparse"] = weightBytes.lut + 41 * 4 + 6 * nnz;
    weightBytes["uniform+sparse"] = weightBytes.uniform + 41 * 4 + 6 * nnz;
    for (const row of r.rows) {
      const what = `${row.format} B=${row.batch}`;
      assert.ok(row.medianUs >= row.minUs && row.minUs > 0, JSON.stringify(row));
      const bytes = weightBytes[row.format] + 4 * row.batch * (40 + 256); // + x in, y out (fp32)
      assert.equal(row.bytesMoved, bytes, what);
      near(row.GBps * row.medianUs * 1e3, bytes, `${what}: GB/s`);
      near(row.fractionOfCopy * r.copyGBps * row.medianUs * 1e3, bytes, `${what}: of copy`);
      const f16 = r.rows.find((x) => x.format === "f16" && x.batch === row.batch)!;
      near(row.speedupVsF16 * row.medianUs, f16.medianUs, `${what}: vs f16`);
      if (row.format === "f16") assert.equal(row.speedupVsF16, 1);
      if (row.format === "f32") assert.equal(row.speedupVsF32, 1);
    }
    const avg = (f: string) => at1(f).avgStoredBits;
    assert.equal(avg("f32"), 32);
    assert.equal(avg("f16"), 16);
    assert.equal(avg("uniform"), 3 + (2 * 16) / 128); // fp16 scale + zero per 128 weights
    assert.equal(avg("lut"), 3 + (8 * 16) / 256); // 8 fp16 entries per row of 256
    assert.ok(avg("lut+sparse") > avg("lut"));
    // no row padding here, so information bits equal stored bits for the dense formats;
    // the sparse part counts 16-bit column indices but stores int32
    for (const f of ["f32", "f16", "uniform", "lut"]) assert.equal(at1(f).avgInfoBits, avg(f), f);
    near(avg("lut+sparse") - at1("lut+sparse").avgInfoBits, (16 * nnz) / (40 * 256), "index bits");
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
