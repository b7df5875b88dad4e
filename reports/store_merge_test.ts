import assert from "node:assert/strict";
import { type KernelRecord, mergeStores, type PplRecord, ResultsStore } from "./store.ts";
import { CODE_VERSION, type ResultIdentity } from "./identity.ts";

const identity = (windows: number): ResultIdentity => ({
  codeVersion: CODE_VERSION,
  model: { sha256: "abc" },
  quant: null,
  calibration: null,
  dataset: { name: "c4", fileSha256: "c", protocol: "p", seqlen: 64, windows, tokensSha256: "t" },
});

const ppl = (runId: string, windows: number, value: number): PplRecord => ({
  runId,
  model: "m",
  variant: "fp32",
  method: "fp32",
  bits: null,
  groupSize: null,
  infoBits: 32,
  storedBits: 32,
  quantConfig: { method: "fp32" },
  calibration: null,
  quantSeconds: 0,
  dataFile: "f",
  windowsAvailable: 256,
  tokens: windows * 64,
  ppl: value,
  evalSeconds: 1,
  gitCommit: "test",
  identity: identity(windows),
});

const kernel = (runId: string, format: string): KernelRecord => ({
  runId,
  adapter: { description: "test" },
  format,
  bits: 3,
  rows: 64,
  cols: 64,
  batch: 1,
  medianUs: 10,
  minUs: 9,
  gbps: 1,
  fractionOfCopy: 0.5,
  speedupVsF16: 2,
  infoBits: 3.5,
  storedBits: 3.5,
});

Deno.test("mergeStores() keeps each result and each kernel job once, every run, and writes nothing on failure", async () => {
  const dir = await Deno.makeTempDir();
  const run = (id: string) => ({
    runId: id,
    command: "eval",
    gitCommit: "g",
    codeVersion: CODE_VERSION,
    denoVersion: "2",
    host: "h",
    startedAt: "2026-01-01T00:00:00Z",
  });
  const a = await ResultsStore.open(`${dir}/a.duckdb`);
  await a.addRun(run("ra"));
  await a.addPpl(ppl("ra", 4, 10));
  await a.addPpl(ppl("ra", 8, 11));
  await a.addKernels([kernel("ra", "lut")], { key: "job1", kind: "bench", label: "b" });
  const b = await ResultsStore.open(`${dir}/b.duckdb`);
  await b.addRun(run("rb"));
  await b.addPpl(ppl("rb", 8, 11)); // the same result as in a (a shard run twice)
  await b.addPpl(ppl("rb", 16, 12));
  await b.addKernels([kernel("rb", "lut")], { key: "job1", kind: "bench", label: "b" }); // same job
  await b.addKernels([kernel("rb", "uniform")], { key: "job2", kind: "bench", label: "b" });
  const n = await mergeStores([`${dir}/a.duckdb`, `${dir}/b.duckdb`], `${dir}/m.duckdb`);
  assert.deepEqual(n, { ppl: 3, kernels: 2 });
  const m = await ResultsStore.open(`${dir}/m.duckdb`, { readOnly: true });
  assert.deepEqual(
    (await m.query("select windows, ppl, run_id from ppl_results order by windows")).map((r) => [
      r.windows,
      r.ppl,
      r.run_id,
    ]),
    [[4, 10, "ra"], [8, 11, "ra"], [16, 12, "rb"]],
  );
  assert.deepEqual(await m.doneJobs(), new Set(["job1", "job2"]));
  assert.deepEqual(
    (await m.query("select run_id from runs order by run_id")).map((r) => r.run_id),
    ["ra", "rb"],
  );
  // a source that is not a store: an error, and no destination file
  await Deno.writeTextFile(`${dir}/x.duckdb`, "not a store");
  await assert.rejects(mergeStores([`${dir}/a.duckdb`, `${dir}/x.duckdb`], `${dir}/n.duckdb`));
  await assert.rejects(Deno.stat(`${dir}/n.duckdb`));
  await Deno.remove(dir, { recursive: true });
});
