import assert from "node:assert/strict";
import { currentRun, type PplRecord, ResultsStore } from "./store.ts";
import { markdownTable, pplTable, renderReport } from "./report.ts";

const record = (over: Partial<PplRecord>): PplRecord => ({
  runId: "r1",
  model: "stories260K",
  modelSha256: "abc",
  variant: "rtn.w3",
  method: "rtn",
  bits: 3,
  groupSize: null,
  avgBits: 3.5,
  quantConfig: { method: "rtn", bits: 3 },
  calibration: null,
  quantSeconds: 0.1,
  dataset: "wikitext2",
  protocol: "p",
  dataFile: "f",
  seqlen: 512,
  windows: 2,
  windowsAvailable: 9,
  tokens: 1024,
  ppl: 12.5,
  evalSeconds: 1,
  ...over,
});

Deno.test("ResultsStore keeps every record in the file across reopen, and answers resume queries", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/r.duckdb`;
  let store = await ResultsStore.open(path);
  await store.addRun(await currentRun("test"));
  await store.addPpl(record({}));
  await store.addPpl(record({ dataset: "c4", ppl: 20.25 }));
  store.close();
  store = await ResultsStore.open(path); // a new process would see the same
  const rows = await store.query(
    "select dataset, ppl, quant_config->>'method' m from ppl_results order by dataset",
  );
  assert.deepEqual(rows, [{ dataset: "c4", ppl: 20.25, m: "rtn" }, {
    dataset: "wikitext2",
    ppl: 12.5,
    m: "rtn",
  }]);
  assert.equal(await store.hasPpl("abc", "rtn.w3", "c4", 512, 2), true);
  assert.equal(await store.hasPpl("abc", "rtn.w3", "c4", 512, 5), false);
  assert.equal(await store.hasPpl("abc", "gptq.w3", "c4", 512, null), false);
  store.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("renderReport() shows the paper-style table and an SVG chart of the stored numbers", async () => {
  const dir = await Deno.makeTempDir();
  const store = await ResultsStore.open(`${dir}/r.duckdb`);
  await store.addPpl(
    record({ variant: "fp32", method: "fp32", bits: null, avgBits: 32, ppl: 10.125 }),
  );
  await store.addPpl(record({ ppl: 14.75 }));
  const tables = await pplTable(store);
  assert.deepEqual(tables.get("stories260K")!.map((r) => [r.variant, r.ppl.wikitext2]), [[
    "fp32",
    10.125,
  ], ["rtn.w3", 14.75]]);
  assert.match(markdownTable(tables.get("stories260K")!), /\| rtn\.w3 \| 3 \| 3\.50 \| 14\.750 \|/);
  const html = await renderReport(store);
  assert.match(html, /<svg/);
  assert.match(html, /<td>14\.750<\/td>/);
  store.close();
  await Deno.remove(dir, { recursive: true });
});
