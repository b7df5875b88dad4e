import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { DuckDBInstance } from "@duckdb/node-api";
import {
  currentRun,
  openForReport,
  type PplRecord,
  ResultsStore,
  SCHEMA_V1,
  SCHEMA_VERSION,
  StoreSchemaError,
} from "./store.ts";
import { markdownPplTable, pplTables, renderReport } from "./report.ts";
import {
  type CalibrationIdentity,
  canonicalJson,
  CODE_VERSION,
  datasetIdentity,
  LEGACY_KEY_PREFIX,
  type ResultIdentity,
  resultKeys,
} from "./identity.ts";

const REPO = fileURLToPath(new URL("../", import.meta.url));

const RTN3 = { method: "rtn", bits: 3, groupSize: null, sym: false };
const SQLLM3 = {
  method: "squeezellm",
  bits: 3,
  sensitivePct: 0,
  outlierPct: null,
  outlierRange: null,
  fisherSamples: 16,
  kmeansIters: 50,
  kmeansTol: 1e-6,
  calib: { source: "c4", seqlen: 512, seed: 0 },
};
const CALIB: CalibrationIdentity = {
  source: "c4",
  file: "c4/c4-validation-2k.json.gz",
  fileSha256: "c4sha",
  nsamples: 16,
  seqlen: 512,
  seed: 0,
  tokensSha256: "calibtok",
};

const identity = (
  over: { quant?: object | null; calibration?: ResultIdentity["calibration"] } = {},
  dataset: Partial<ResultIdentity["dataset"]> = {},
): ResultIdentity => ({
  codeVersion: CODE_VERSION,
  model: { sha256: "abc" },
  quant: over.quant === undefined ? RTN3 : over.quant,
  calibration: over.calibration ?? null,
  dataset: {
    name: "wikitext2",
    fileSha256: "wsha",
    protocol: "p",
    seqlen: 512,
    windows: 9,
    tokensSha256: "tok",
    ...dataset,
  },
});

const record = (over: Partial<PplRecord> = {}): PplRecord => ({
  runId: "r1",
  model: "stories260K",
  variant: "rtn.w3",
  method: "rtn",
  bits: 3,
  groupSize: null,
  infoBits: 3.5,
  storedBits: 3.75,
  quantConfig: RTN3,
  calibration: null,
  quantSeconds: 0.1,
  dataFile: "f",
  windowsAvailable: 9,
  tokens: 9 * 512,
  ppl: 12.5,
  evalSeconds: 1,
  gitCommit: "test",
  identity: identity(),
  ...over,
});

const FP32 = { variant: "fp32", method: "fp32", bits: null, infoBits: 32, storedBits: 32 };

async function withStore(f: (store: ResultsStore, dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir();
  const store = await ResultsStore.open(`${dir}/r.duckdb`);
  try {
    await f(store, dir);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Runs TypeScript in a child Deno process in the repo (its import map); returns the process. */
function child(code: string, stdin: "piped" | "null" = "null") {
  return new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    cwd: REPO,
    stdin,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

Deno.test("ResultsStore keeps every record in the file across reopen, and answers resume queries by result key", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/r.duckdb`;
  let store = await ResultsStore.open(path);
  await store.addRun(await currentRun("test"));
  await store.addPpl(record());
  const c4 = identity({}, { name: "c4", windows: 2 });
  await store.addPpl(record({ ppl: 20.25, identity: c4 }));
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
  assert.equal(await store.hasResult((await resultKeys(c4)).resultKey), true);
  const c4Five = identity({}, { name: "c4", windows: 5 });
  assert.equal(await store.hasResult((await resultKeys(c4Five)).resultKey), false);
  const gptq = identity({ quant: { ...RTN3, method: "gptq" } }, { name: "c4", windows: 2 });
  assert.equal(await store.hasResult((await resultKeys(gptq)).resultKey), false);
  store.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("renderReport() shows the paper-style table and an SVG chart of the stored numbers", async () => {
  await withStore(async (store) => {
    await store.addPpl(record({ ...FP32, ppl: 10.125, identity: identity({ quant: null }) }));
    await store.addPpl(record({ ppl: 14.75 }));
    const [table, ...more] = await pplTables(store);
    assert.equal(more.length, 0);
    assert.deepEqual(table.rows.map((r) => [r.variant, r.ppl.wikitext2]), [[
      "fp32",
      10.125,
    ], ["rtn.w3", 14.75]]);
    assert.match(markdownPplTable(table), /\| rtn\.w3 +\| 3 +\| 3\.50 +\| 14\.750 +\|/);
    const html = await renderReport(store);
    assert.match(html, /<svg/);
    assert.match(html, /<td>14\.750<\/td>/);
  });
});

Deno.test("a --limit result never answers for a full run: the windows evaluated are in the key", async () => {
  // Defect: hasPpl(model, variant, dataset, seqlen, windows = null) matched any stored row, so a
  // full sweep after a --limit 4 sweep skipped everything and showed the 4-window numbers.
  await withStore(async (store) => {
    const tokens = new Int32Array(256 * 64).map((_, i) => i % 500);
    const set = { name: "c4", fileSha256: "c4sha", protocol: "GPTQ c4", tokens };
    const smoke = identity({}, await datasetIdentity(set, 64, 4));
    const full = identity({}, await datasetIdentity(set, 64, 256));
    await store.addPpl(record({ identity: smoke, windowsAvailable: 256 }));
    assert.equal(await store.hasResult((await resultKeys(smoke)).resultKey), true);
    assert.equal(await store.hasResult((await resultKeys(full)).resultKey), false);
    assert.notEqual(smoke.dataset.tokensSha256, full.dataset.tokensSha256);
    await assert.rejects(() => datasetIdentity(set, 64, 257), /257 windows of 64 need/);
  });
});

Deno.test("resultKeys() tell apart every setting the variant name leaves out, and ignore key order and paths", async () => {
  // Defect: the variant name "squeezellm.w3" was the key, so a run with 2 Fisher samples of
  // TinyStories at seed 7 answered for the sweep's 16 C4 samples at seed 0.
  const base = identity({ quant: SQLLM3, calibration: CALIB });
  const variants: ResultIdentity[] = [
    identity({ quant: { ...SQLLM3, fisherSamples: 2 }, calibration: { ...CALIB, nsamples: 2 } }),
    identity({ quant: SQLLM3, calibration: { ...CALIB, source: "tinystories" } }),
    identity({ quant: SQLLM3, calibration: { ...CALIB, seed: 7 } }),
    identity({ quant: SQLLM3, calibration: { ...CALIB, fileSha256: "other" } }),
    identity({ quant: SQLLM3, calibration: { ...CALIB, tokensSha256: "other" } }),
    identity({ quant: { ...SQLLM3, sensitivePct: 0.05 }, calibration: CALIB }),
    identity({ quant: { ...SQLLM3, sensitivePct: 0.05, outlierPct: 0.4 }, calibration: CALIB }),
    { ...base, codeVersion: CODE_VERSION + 1 },
    { ...base, model: { sha256: "other" } },
    identity({ quant: SQLLM3, calibration: CALIB }, { fileSha256: "other" }),
    identity({ quant: SQLLM3, calibration: CALIB }, { protocol: "other" }),
    identity({ quant: SQLLM3, calibration: CALIB }, { seqlen: 256 }),
  ];
  const keys = await Promise.all([base, ...variants].map(resultKeys));
  assert.equal(new Set(keys.map((k) => k.resultKey)).size, keys.length);
  // config keys: every variant but the dataset ones is a different row
  assert.equal(new Set(keys.slice(0, 10).map((k) => k.configKey)).size, 10);
  const reordered = JSON.parse(canonicalJson(base)) as ResultIdentity;
  const moved = {
    dataset: reordered.dataset,
    quant: Object.fromEntries(Object.entries(SQLLM3).reverse()),
    calibration: { ...CALIB, file: "/elsewhere/c4/c4-validation-2k.json.gz" },
    model: reordered.model,
    codeVersion: reordered.codeVersion,
  };
  assert.deepEqual(await resultKeys(moved), keys[0]);
  assert.equal(
    canonicalJson({ b: 1, a: [true, null, { d: 2, c: "x" }] }),
    '{"a":[true,null,{"c":"x","d":2}],"b":1}',
  );
  assert.throws(() => canonicalJson({ a: NaN }), /non-finite/);
});

Deno.test("pplTables() keeps seqlens and window counts apart and says which each table covers", async () => {
  // Defect: the report took the latest row per (model, variant, dataset), so a seqlen-64, 2-window
  // smoke number showed up among seqlen-512 numbers with neither shown.
  await withStore(async (store) => {
    await store.addPpl(record({ ppl: 14.75, windowsAvailable: 9 }));
    await store.addPpl(
      record({
        ppl: 99.5,
        windowsAvailable: 81,
        identity: identity({}, { seqlen: 64, windows: 2 }),
      }),
    );
    await store.addPpl(
      record({
        ppl: 15.25,
        identity: identity({}, { name: "c4", windows: 2 }),
        windowsAvailable: 2,
      }),
    );
    const tables = await pplTables(store);
    assert.deepEqual(tables.map((t) => t.title), [
      "stories260K · seqlen 64 · first 2 windows (--limit)",
      "stories260K · seqlen 512 · every window",
    ]);
    const full = tables[1];
    assert.deepEqual(full.columns.map((c) => c.label), ["c4 (2 w)", "wikitext2 (9 w)"]);
    assert.deepEqual(full.rows.map((r) => r.ppl), [{ c4: 15.25, wikitext2: 14.75 }]);
    assert.deepEqual(tables[0].rows.map((r) => r.ppl), [{ wikitext2: 99.5 }]);
    assert.match(markdownPplTable(tables[0]), /wikitext2 \(2 w\)/);
    // a second config under the same variant name (other calibration) is its own, labelled row
    await store.addPpl(record({
      variant: "squeezellm.w3",
      method: "squeezellm",
      ppl: 13,
      identity: identity({ quant: SQLLM3, calibration: CALIB }),
    }));
    await store.addPpl(record({
      variant: "squeezellm.w3",
      method: "squeezellm",
      ppl: 17,
      identity: identity({ quant: SQLLM3, calibration: { ...CALIB, seed: 7 } }),
    }));
    const rows = (await pplTables(store))[1].rows.filter((r) => r.method === "squeezellm");
    assert.deepEqual(rows.map((r) => [r.calibration, r.ppl.wikitext2]), [
      ["c4 ×16, seed 0", 13],
      ["c4 ×16, seed 7", 17],
    ]);
  });
});

Deno.test("the store records the data and calibration sha256 and both bit counts in both tables", async () => {
  await withStore(async (store) => {
    await store.addPpl(record({ identity: identity({ quant: SQLLM3, calibration: CALIB }) }));
    await store.addKernel({
      runId: "r1",
      adapter: { description: "test" },
      format: "uniform",
      bits: 3,
      rows: 64,
      cols: 64,
      batch: 1,
      medianUs: 5,
      minUs: 4,
      gbps: 1,
      fractionOfCopy: 0.5,
      speedupVsF16: 2,
      infoBits: 3.5,
      storedBits: 4,
    });
    const [p] = await store.query(
      `select data_sha256, calib_sha256, calib_file, calib_tokens_sha256, info_bits, stored_bits,
        identity->>'$.calibration.seed' seed, length(result_key)::integer n from ppl_results`,
    );
    assert.deepEqual(p, {
      data_sha256: "wsha",
      calib_sha256: "c4sha",
      calib_file: "c4/c4-validation-2k.json.gz",
      calib_tokens_sha256: "calibtok",
      info_bits: 3.5,
      stored_bits: 3.75,
      seed: "0",
      n: 64,
    });
    const [k] = await store.query("select info_bits, stored_bits from kernel_results");
    assert.deepEqual(k, { info_bits: 3.5, stored_bits: 4 });
  });
});

async function v1Store(path: string): Promise<void> {
  // A store as squeezebench wrote it before schema versions, built from that schema's statements.
  const db = await DuckDBInstance.create(path);
  const con = await db.connect();
  await con.run(SCHEMA_V1);
  await con.run(`insert into runs values ('old', 'ppl ppl --limit 2', 'f67bc43', '2.9.6', 'vm',
    '2026-12-02 12:40:35')`);
  await con.run(`insert into ppl_results (run_id, model, model_sha256, variant, method, bits,
    group_size, avg_bits, quant_config, calibration, quant_seconds, dataset, protocol, data_file,
    seqlen, windows, windows_available, tokens, ppl, eval_seconds) values
    ('old', 'stories260K', 'abc', 'fp32', 'fp32', null, null, 32, '{"method":"fp32"}', null, 0,
     'wikitext2', 'p', 'f', 512, 2, 1591, 1024, 101.6339, 0.1)`);
  await con.run(`insert into kernel_results (run_id, adapter, format, bits, rows, cols, batch,
    median_us, min_us, gbps, fraction_of_copy, speedup_vs_f16, avg_bits) values
    ('old', '{}', 'lut', 3, 64, 64, 1, 5, 4, 1, 0.5, 2, 3.25)`);
  con.closeSync();
  db.closeSync();
}

Deno.test("a store written before schema versions is migrated: rows kept, keys legacy, never matched", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/old.duckdb`;
  await v1Store(path);
  await assert.rejects(() => ResultsStore.open(path, { readOnly: true }), StoreSchemaError);
  const store = await openForReport(path);
  const [row] = await store.query(
    "select variant, ppl, info_bits, stored_bits, identity_complete, result_key from ppl_results",
  );
  assert.equal(row.ppl, 101.6339);
  assert.equal(row.info_bits, 32);
  assert.equal(row.stored_bits, null);
  assert.equal(row.identity_complete, false);
  assert.ok(String(row.result_key).startsWith(LEGACY_KEY_PREFIX));
  assert.deepEqual(await store.query("select stored_bits, info_bits from kernel_results"), [{
    stored_bits: 3.25,
    info_bits: null,
  }]);
  assert.deepEqual(await store.query("select value from meta where key = 'schema_version'"), [{
    value: String(SCHEMA_VERSION),
  }]);
  assert.deepEqual(await store.query("select command from runs"), [{
    command: "ppl ppl --limit 2",
  }]);
  // the same fp32 run today has a full identity: its key cannot be the legacy one
  const now = identity({ quant: null }, { windows: 2 });
  assert.equal(await store.hasResult((await resultKeys(now)).resultKey), false);
  const [t] = await pplTables(store);
  assert.deepEqual(t.rows.map((r) => r.label), ["fp32 (legacy)"]);
  const writer = await ResultsStore.open(path); // already migrated: opens as is
  await writer.addPpl(record({ ...FP32, ppl: 101.6339, identity: now }));
  assert.equal((await store.query("select count(*)::integer n from ppl_results"))[0].n, 2);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a DuckDB file that is not a squeezebench store is refused by name and left untouched", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/other.duckdb`;
  const db = await DuckDBInstance.create(path);
  const con = await db.connect();
  await con.run("create table people (name varchar); insert into people values ('ada')");
  con.closeSync();
  db.closeSync();
  const before = await Deno.readFile(path);
  for (const readOnly of [true, false]) {
    await assert.rejects(
      () => ResultsStore.open(path, { readOnly }),
      (e: Error) =>
        e instanceof StoreSchemaError && e.message.includes(path) &&
        /not a squeezebench results store/.test(e.message),
    );
  }
  await assert.rejects(() => openForReport(path), /not a squeezebench results store/);
  assert.deepEqual(await Deno.readFile(path), before);
  const check = await DuckDBInstance.create(path, { access_mode: "READ_ONLY" });
  const c = await check.connect();
  const tables = (await c.runAndReadAll("select table_name from duckdb_tables()")).getRows();
  c.closeSync();
  check.closeSync();
  assert.deepEqual(tables, [["people"]]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("another process reads the store while a writer holds it open between writes", async () => {
  // Defect: the writer held DuckDB's write lock for the whole sweep, so `deno task report` failed
  // with "Could not set lock on file" until the sweep ended.
  await withStore(async (store, dir) => {
    await store.addRun(await currentRun("test"));
    await store.addPpl(record({ ppl: 14.75 }));
    const reader = child(`
      import { ResultsStore } from "./reports/store.ts";
      const s = await ResultsStore.open(${JSON.stringify(store.path)}, { readOnly: true });
      console.log(JSON.stringify(await s.query("select ppl from ppl_results")));`);
    const out = await reader.output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.equal(new TextDecoder().decode(out.stdout).trim(), '[{"ppl":14.75}]');
    // the writer goes on writing after the reader
    await store.addPpl(record({ ppl: 15.5, identity: identity({}, { name: "c4" }) }));
    // a writer that finds a reader holding the file waits for it instead of failing
    const holder = child(
      `
      import { DuckDBInstance } from "@duckdb/node-api";
      const db = await DuckDBInstance.create(${
        JSON.stringify(store.path)
      }, { access_mode: "READ_ONLY" });
      console.log("open");
      for await (const _ of Deno.stdin.readable) break;
      db.closeSync();`,
      "piped",
    );
    const lines = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
    assert.equal((await lines.read()).value?.trim(), "open");
    let done = false;
    const write = store.addPpl(record({ ppl: 16.5, identity: identity({}, { name: "c4-new" }) }))
      .then(() => done = true);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(done, false, "the write went through while another process held the file");
    const w = holder.stdin.getWriter();
    await w.write(new TextEncoder().encode("go\n"));
    await w.close();
    await write;
    await lines.cancel();
    await holder.stderr.cancel();
    assert.equal((await holder.status).code, 0);
    assert.equal((await store.query("select count(*)::integer n from ppl_results"))[0].n, 3);
    assert.ok(dir);
  });
});

Deno.test("openForReport() reads a read-only file without writing to it", async () => {
  await withStore(async (store, dir) => {
    await store.addPpl(record({ ppl: 14.75 }));
    await Deno.chmod(store.path, 0o444);
    await Deno.chmod(dir, 0o555);
    try {
      const before = await Deno.readFile(store.path);
      const ro = await openForReport(store.path);
      const [t] = await pplTables(ro);
      assert.equal(t.rows[0].ppl.wikitext2, 14.75);
      assert.match(await renderReport(ro), /<td>14\.750<\/td>/);
      await assert.rejects(() => ro.addPpl(record()), /opened read-only/);
      assert.deepEqual(await Deno.readFile(store.path), before);
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["r.duckdb"]);
    } finally {
      await Deno.chmod(dir, 0o755);
      await Deno.chmod(store.path, 0o644);
    }
  });
});
