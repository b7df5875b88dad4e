import assert from "node:assert/strict";
import { CODE_VERSION, type ResultIdentity } from "./identity.ts";
import { type KernelRecord, type PplRecord, ResultsStore } from "./store.ts";
import { expandStorePaths, MergedResults } from "./results.ts";
import {
  familyLabel,
  kernelFormat,
  kernelSpeedups,
  layerWeights,
  markdownReport,
  paperTable,
  pplTables,
  reportData,
  settingLabel,
  type TableRow,
  waTables,
  writeReport,
} from "./report.ts";
import { paretoFront } from "./charts.ts";
import { serveReport } from "./serve.ts";

// Records of the store's shape; the numbers only need to be told apart (the browser test runs a
// store of real results).
const spec = (method: string, bits: number, over: object = {}) => ({
  method,
  bits,
  groupSize: null,
  ...over,
});

const identity = (quant: object | null, dataset: string): ResultIdentity => ({
  codeVersion: CODE_VERSION,
  model: { sha256: "m" },
  quant,
  calibration: null,
  dataset: {
    name: dataset,
    fileSha256: `${dataset}-sha`,
    protocol: dataset === "c4"
      ? "GPTQ c4: random.seed(0), 256 windows of 512 from docs 0..1099 of the 2000-document proxy"
      : "GPTQ wikitext2",
    seqlen: 512,
    windows: 2,
    tokensSha256: `${dataset}-tok`,
  },
});

function ppl(
  variant: string,
  quant: Record<string, unknown> | null,
  dataset: string,
  value: number,
  infoBits: number,
): PplRecord {
  return {
    runId: "run-1",
    model: "stories260K",
    variant,
    method: quant ? String(quant.method) : "fp32",
    bits: quant ? Number(quant.bits) : null,
    groupSize: null,
    infoBits,
    storedBits: infoBits + 0.25,
    quantConfig: quant ?? { method: "fp32" },
    calibration: null,
    quantSeconds: 0,
    dataFile: `${dataset}.file`,
    windowsAvailable: 9,
    tokens: 1024,
    ppl: value,
    evalSeconds: 0,
    gitCommit: "abc1234",
    identity: identity(quant, dataset),
  };
}

function kernel(
  format: string,
  bits: number,
  rows: number,
  cols: number,
  us: number,
  f16Us: number,
) {
  return {
    runId: "run-k",
    adapter: { description: "test adapter" },
    format,
    bits,
    rows,
    cols,
    batch: 1,
    medianUs: us,
    minUs: us,
    gbps: 1,
    fractionOfCopy: 0.5,
    speedupVsF16: f16Us / us,
    infoBits: bits,
    storedBits: bits,
  } satisfies KernelRecord;
}

async function withTemp(f: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "sqb-report-test-" });
  try {
    await f(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const SQ45 = spec("squeezellm", 3, { sensitivePct: 0.05, outlierPct: 0.4, outlierRange: null });

async function fillStore(path: string): Promise<void> {
  const s = await ResultsStore.open(path);
  await s.addRun({
    runId: "run-1",
    command: "eval --preset table1",
    gitCommit: "abc1234",
    codeVersion: CODE_VERSION,
    denoVersion: "2.9.6",
    host: "test",
    startedAt: "2026-12-02T10:00:00Z",
  });
  for (const d of ["wikitext2", "c4"]) {
    const k = d === "c4" ? 2 : 1;
    await s.addPpl(ppl("fp32", null, d, 10 * k, 32));
    await s.addPpl(ppl("rtn.w3", spec("rtn", 3), d, 30 * k, 3.5));
    await s.addPpl(ppl("rtn.w4", spec("rtn", 4), d, 25 * k, 4.5)); // off the Pareto front
    await s.addPpl(ppl("squeezellm.w3.s0.45", SQ45, d, 20 * k, 3.6));
    await s.addPpl(ppl("squeezellm.w4.s0.45", { ...SQ45, bits: 4 }, d, 12 * k, 4.6));
    await s.addPpl(ppl("rtn.w8", spec("rtn", 8), d, 10.5 * k, 8.5));
  }
  s.close();
}

Deno.test("paperTable() lays results out as Table 1: methods × (3-bit, 4-bit) with speedups", async () => {
  await withTemp(async (dir) => {
    await fillStore(`${dir}/a.duckdb`);
    const k = await ResultsStore.open(`${dir}/k.duckdb`);
    await k.addRun({
      runId: "run-k",
      command: "bench kernels --store k.duckdb",
      gitCommit: "abc1234",
      codeVersion: CODE_VERSION,
      denoVersion: "2.9.6",
      host: "test",
      startedAt: "2026-12-02T11:00:00Z",
    });
    // f16 takes 100 and 300 µs; uniform 3-bit 50 and 100 µs
    await k.addKernels([
      kernel("f16", 16, 64, 64, 100, 100),
      kernel("f16", 16, 172, 64, 300, 300),
      kernel("uniform", 3, 64, 64, 50, 100),
      kernel("uniform", 3, 172, 64, 100, 300),
      kernel("lut+sparse", 3, 64, 64, 80, 100),
    ]);
    k.close();
    const merged = await MergedResults.open([`${dir}/a.duckdb`, `${dir}/k.duckdb`]);
    const data = await reportData(merged);
    merged.close();
    const p = paperTable(data.tables[0], data.kernels);
    assert.deepEqual(p.bits, [3, 4]); // 8-bit rows stay in the flat table and the charts
    assert.deepEqual(p.rows.map((r) => r.family), ["FP32", "RTN", "SqueezeLLM 0.45%"]);
    const rtn = p.rows[1];
    assert.deepEqual(
      [rtn.cells[3].row.ppl.wikitext2, rtn.cells[4].row.ppl.c4, rtn.cells[3].row.avgBits],
      [30, 50, 3.5],
    );
    assert.deepEqual(p.speedupSets, ["model shapes"]);
    // 64×64 is wq, wk, wv, wo (4 linears); 172×64 has no w2 beside it: not in the layer
    assert.equal(rtn.cells[3].speedup["model shapes"], 100 / 50);
    assert.equal(p.rows[2].cells[3].speedup["model shapes"], 100 / 80);
    assert.deepEqual(rtn.cells[4].speedup, {}); // 4-bit uniform not timed: empty
    assert.deepEqual(p.rows[0].cells[3], p.rows[0].cells[4]); // FP32 in both groups
    assert.ok(data.protocols.some((x) => /proxy/.test(x.protocol)));
    assert.equal(data.runs.length, 2);
    assert.equal(data.runs.find((r) => r.runId === "run-1")!.pplCount, 12);
    assert.equal(data.runs.find((r) => r.runId === "run-k")!.kernelCount, 5);
  });
});

Deno.test("familyLabel() and kernelFormat() name a row as the paper and the run plan do", () => {
  const row = (variant: string, method: string, quantConfig: Record<string, unknown>) =>
    ({ variant, label: variant, method, quantConfig, bits: 3 }) as unknown as TableRow;
  const cases: [TableRow, string, string | null][] = [
    [row("rtn.w3", "rtn", spec("rtn", 3)), "RTN", "uniform"],
    [
      row("gptq.w3.g128.act", "gptq", spec("gptq", 3, { groupSize: 128, actOrder: true })),
      "GPTQ g128 act-order",
      "uniform.g128",
    ],
    [
      row("squeezellm.w3", "squeezellm", spec("squeezellm", 3, { sensitivePct: 0 })),
      "SqueezeLLM",
      "lut",
    ],
    [row("squeezellm.w3.s0.45", "squeezellm", SQ45), "SqueezeLLM 0.45%", "lut+sparse"],
    [
      row(
        "squeezellm.w3.s0.05",
        "squeezellm",
        spec("squeezellm", 3, { sensitivePct: 0.05, outlierPct: null }),
      ),
      "SqueezeLLM 0.05%",
      "lut+sparse.s0.05",
    ],
    [row("fp32", "fp32", { method: "fp32" }), "FP32", "f32"],
  ];
  for (const [r, label, format] of cases) {
    assert.equal(familyLabel(r), label);
    assert.equal(kernelFormat(r), format);
  }
  const legacy = { ...row("rtn.w3", "rtn", {}), quantConfig: null, label: "rtn.w3 (legacy)" };
  assert.equal(familyLabel(legacy), "RTN (legacy)");
});

Deno.test("kernelSpeedups() weights each shape by its linears per decoder layer", () => {
  // LLaMA-7B: f16 80 µs per shape; lut 10 µs on 4096², 40 µs on the MLP shapes
  const ks = [[4096, 4096], [11008, 4096], [4096, 11008]].map(([r, c]) => {
    const k = kernel("lut", 3, r, c, r === c ? 10 : 40, 80);
    return { ...k, speedup: k.speedupVsF16, adapter: "a" };
  });
  const sp = kernelSpeedups(ks as never)!;
  // f16: 4·80 + 2·80 + 80 = 560 µs; lut: 4·10 + 2·40 + 40 = 160 µs
  assert.equal(sp.speedup.get("lut|3|LLaMA-7B"), 560 / 160);
  assert.deepEqual(sp.source.shapes, {
    "LLaMA-7B": { "11008×4096": 2, "4096×11008": 1, "4096×4096": 4 },
  });
  assert.equal(kernelSpeedups([]), null);
});

Deno.test("layerWeights() reads a LLaMA layer off its shapes: stories260K as eval/cli/plan.ts counts it", () => {
  // dim 64, kv 32, hidden 172, vocab 512: wq wo, wk wv, w1 w3, w2; the classifier is no layer's
  const w = layerWeights(["64×64", "32×64", "172×64", "64×172", "512×64"]);
  assert.deepEqual(Object.fromEntries(w), {
    "64×64": 2,
    "32×64": 2,
    "172×64": 2,
    "64×172": 1,
    "512×64": 0,
  });
  assert.deepEqual(Object.fromEntries(layerWeights(["172×64", "64×172"])), {
    "172×64": 1,
    "64×172": 1,
  });
});

Deno.test("paretoFront() keeps the points no smaller-or-equal-bits point beats", () => {
  const pts = [
    { avgBits: 3.5, ppl: 30 },
    { avgBits: 3.6, ppl: 20 },
    { avgBits: 4.5, ppl: 25 },
    { avgBits: 4.6, ppl: 12 },
    { avgBits: 4.6, ppl: 11 },
    { avgBits: 8.5, ppl: 10.5 },
  ];
  assert.deepEqual(paretoFront(pts), [pts[0], pts[1], pts[4], pts[5]]);
});

Deno.test("MergedResults merges shards, keeps a store given twice once, and expands patterns", async () => {
  await withTemp(async (dir) => {
    await fillStore(`${dir}/shard-0.duckdb`);
    const s1 = await ResultsStore.open(`${dir}/shard-1.duckdb`);
    await s1.addPpl({ ...ppl("rtn.w2", spec("rtn", 2), "wikitext2", 90, 2.5), runId: "run-2" });
    s1.close();
    const paths = await expandStorePaths([`${dir}/shard-*.duckdb`, `${dir}/shard-0.duckdb`]);
    assert.deepEqual(paths, [`${dir}/shard-0.duckdb`, `${dir}/shard-1.duckdb`]);
    await assert.rejects(() => expandStorePaths([`${dir}/none-*.duckdb`]), /matches no file/);
    await assert.rejects(
      () => expandStorePaths([`${dir}/missing.duckdb`]),
      /missing\.duckdb does not exist/,
    );
    // a copy of a shard adds nothing
    await Deno.copyFile(`${dir}/shard-1.duckdb`, `${dir}/copy.duckdb`);
    const m = await MergedResults.open([...paths, `${dir}/copy.duckdb`]);
    const [n] = await m.query(
      "select count(*)::integer n, count(distinct store_file)::integer files from ppl_results",
    );
    assert.deepEqual(n, { n: 13, files: 2 });
    const t = (await pplTables(m))[0];
    assert.deepEqual(t.rows.find((r) => r.variant === "rtn.w2")!.ppl, { wikitext2: 90 });
    m.close();
  });
});

Deno.test("writeReport() writes the page, chart specs, the results as DuckDB and Parquet, and duckdb-wasm", async () => {
  await withTemp(async (dir) => {
    await fillStore(`${dir}/a.duckdb`);
    const m = await MergedResults.open([`${dir}/a.duckdb`]);
    const w = await writeReport(m, `${dir}/report`);
    m.close();
    for (const f of w.files) assert.ok((await Deno.stat(`${dir}/report/${f}`)).size > 0, f);
    assert.deepEqual(
      w.files.filter((f) => f.startsWith("charts/")).sort(),
      ["charts/pareto-t1.vl.json", "charts/ppl-vs-bits-t1.vl.json"],
    );
    const spec = JSON.parse(await Deno.readTextFile(`${dir}/report/charts/pareto-t1.vl.json`));
    const front = spec.data.values.filter((v: { pareto?: boolean }) => v.pareto);
    assert.deepEqual(
      front.filter((v: { dataset: string }) => v.dataset.startsWith("wikitext2")).map((
        v: { variant: string },
      ) => v.variant),
      ["rtn.w3", "squeezellm.w3.s0.45", "squeezellm.w4.s0.45", "rtn.w8"],
    );
    const html = await Deno.readTextFile(w.index);
    assert.match(html, /href="charts\/pareto-t1\.vl\.json" download/);
    assert.match(html, /C4 proxy/);
    assert.match(html, /<b>20\.00<\/b>/); // best 3-bit wikitext2 perplexity, marked
    assert.match(html, /eval --preset table1/);
    assert.equal((html.match(/<svg/g) ?? []).length, 2);
    // the shipped DuckDB file holds the merged rows, JSON as text
    const copy = `${dir}/report/data/results.duckdb`;
    const { DuckDBInstance } = await import("@duckdb/node-api");
    const db = await DuckDBInstance.create(copy, { access_mode: "READ_ONLY" });
    const con = await db.connect();
    const rows = (await con.runAndReadAll(
      "select count(*)::integer n, any_value(typeof(identity)) t from ppl_results",
    )).getRowObjectsJson();
    con.closeSync();
    db.closeSync();
    assert.deepEqual(rows, [{ n: 12, t: "VARCHAR" }]);
  });
});

Deno.test("serveReport() serves the folder's files with their types, nothing outside it", async () => {
  await withTemp(async (dir) => {
    await Deno.mkdir(`${dir}/site/assets`, { recursive: true });
    await Deno.writeTextFile(`${dir}/site/index.html`, "<p>hi</p>");
    await Deno.writeFile(`${dir}/site/assets/x.wasm`, new Uint8Array([0, 97, 115, 109]));
    await Deno.writeTextFile(`${dir}/secret.txt`, "no");
    const s = serveReport(`${dir}/site`, { port: 0 });
    try {
      assert.match(s.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
      const index = await fetch(s.url);
      assert.equal(index.headers.get("content-type"), "text/html; charset=utf-8");
      assert.equal(await index.text(), "<p>hi</p>");
      const wasm = await fetch(`${s.url}assets/x.wasm`);
      assert.equal(wasm.headers.get("content-type"), "application/wasm");
      assert.deepEqual(new Uint8Array(await wasm.arrayBuffer()), new Uint8Array([0, 97, 115, 109]));
      for (const p of ["../secret.txt", "%2e%2e/secret.txt", "assets/", "nope.html"]) {
        const r = await fetch(`${s.url}${p}`);
        assert.equal(r.status, 404, p);
        await r.body?.cancel();
      }
      const post = await fetch(s.url, { method: "POST" });
      assert.equal(post.status, 405);
      await post.body?.cancel();
    } finally {
      await s.shutdown();
    }
  });
});

Deno.test("waTables() lays W×A results out as ABQ-LLM's Tables 1–2 (methods × settings), which paperTable() leaves out", async () => {
  await withTemp(async (dir) => {
    const s = await ResultsStore.open(`${dir}/wa.duckdb`);
    await s.addRun({
      runId: "run-1",
      command: "eval --preset abq",
      gitCommit: "abc1234",
      codeVersion: CODE_VERSION,
      denoVersion: "2.9.6",
      host: "test",
      startedAt: "2026-12-02T10:00:00Z",
    });
    const abq = (bits: number, over: object = {}) =>
      spec("abq", bits, { bitBalance: false, ...over });
    for (const d of ["wikitext2", "c4"]) {
      const k = d === "c4" ? 2 : 1;
      await s.addPpl(ppl("fp32", null, d, 10 * k, 32));
      await s.addPpl(ppl("rtn.w3", spec("rtn", 3), d, 30 * k, 3.5));
      await s.addPpl(ppl("rtn.w4a8", spec("rtn", 4, { abits: 8 }), d, 28 * k, 4.5));
      await s.addPpl(ppl("abq.w3", abq(3), d, 20 * k, 3.5));
      await s.addPpl(ppl("abq.w2*", abq(2, { bitBalance: true }), d, 40 * k, 3.5));
      await s.addPpl(ppl("abq.w2*a8", abq(2, { bitBalance: true, abits: 8 }), d, 45 * k, 3.5));
      await s.addPpl(ppl("abq.w4a8", abq(4, { abits: 8 }), d, 15 * k, 4.5));
      await s.addPpl(ppl("abq.w4a4kv8", abq(4, { abits: 4, kvBits: 8 }), d, 16 * k, 4.5));
    }
    const data = await reportData(s);
    s.close();
    const t = data.tables[0];
    assert.deepEqual(t.rows.map((r) => settingLabel(r)).sort(), [
      "W2*A16",
      "W2*A8",
      "W3A16",
      "W3A16",
      "W4A4KV8",
      "W4A8",
      "W4A8",
      null,
    ]);
    // SqueezeLLM's layout keeps the plain weight-only rows
    const p = paperTable(t);
    assert.deepEqual(p.bits, [3]);
    assert.deepEqual(p.rows.map((r) => r.family), ["FP32", "RTN", "ABQ-LLM"]);
    const [wo, wa] = waTables(t);
    assert.deepEqual(wo.groups.map((g) => g.key), ["W3A16", "W2*A16"]);
    assert.deepEqual(wa.groups.map((g) => g.key), ["W4A8", "W2*A8", "W4A4KV8"]); // ABQ's order first
    assert.deepEqual(wa.rows.map((r) => r.family), ["FP32", "RTN", "ABQ-LLM"]);
    const abqRow = wa.rows[2];
    assert.equal(abqRow.cells["W4A8"].row.ppl.wikitext2, 15);
    assert.equal(abqRow.cells["W4A4KV8"].row.ppl.c4, 32);
    assert.equal(wa.rows[1].cells["W4A4KV8"], undefined);
    assert.deepEqual(wa.rows[0].cells["W4A8"], wa.rows[0].cells["W4A4KV8"]); // FP32 in every group
    assert.equal(wo.rows[2].cells["W2*A16"].row.ppl.wikitext2, 40);
    const md = markdownReport(data.tables);
    assert.match(md, /Weight-activation quantization \(ABQ-LLM Table 2 layout\)/);
    assert.match(
      md,
      /\| ABQ-LLM +\| 30\.00 +\| 15\.00 +\| 90\.00 +\| 45\.00 +\| 32\.00 +\| 16\.00 +\|/,
    );
    // ABQ-LLM on two calibrations: its rows in one order in both tables, whatever order the
    // store lists them in (here the other calibration's W×A row first, its weight-only row last)
    const abqRows = t.rows.filter((r) => r.method === "abq");
    const other = (setting: string) => ({
      ...abqRows.find((r) => settingLabel(r) === setting)!,
      calibration: "wikitext2: 128 windows of 2048",
    });
    const mixed = {
      ...t,
      rows: [
        ...t.rows.filter((r) => r.method !== "abq"),
        other("W4A8"),
        ...abqRows,
        other("W3A16"),
      ],
    };
    const orders = waTables(mixed).map((x) =>
      x.rows.filter((r) => r.method === "abq").map((r) => r.calibration)
    );
    assert.equal(orders.length, 2);
    assert.equal(orders[0].length, 2);
    assert.deepEqual(orders[0], orders[1]);
    // weight-only rows of SqueezeLLM's kind alone: no W×A tables
    const plain = {
      ...t,
      rows: t.rows.filter((r) => r.method !== "abq" && !r.variant.includes("a")),
    };
    assert.deepEqual(waTables(plain), []);
  });
});
