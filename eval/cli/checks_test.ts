/**
 * The CLI checks its options, output files and data files before any work:
 * each test gives one bad input and checks the error names it, and that the
 * work it would have preceded never started (its progress lines are absent).
 */
import assert from "node:assert/strict";
import { SHARED_DATA, sharedData } from "../../datasets/testing.ts";
import { tempDir } from "../../datasets/_testing.ts";
import { loadCheckpoint, serializeLegacy } from "../../model/checkpoint.ts";
import { cli, cliWith, lastJson } from "./_testing.ts";
import { joinNegativeValues } from "./main.ts";
import { checkOutputFile, checkStoreFile, CliError } from "./options.ts";

/** A hub endpoint that refuses every connection (the discard port on loopback). */
const UNREACHABLE = "http://127.0.0.1:9";

/** Asserts a CLI run failed with exit code 2, one error matching `re`, no stack trace. */
function assertCliError(r: { code: number; err: string }, re: RegExp): void {
  assert.equal(r.code, 2, r.err);
  assert.match(r.err, re);
  assert.doesNotMatch(r.err, /\n\s+at /, "stack trace");
}

Deno.test("quantize --out into a missing folder fails before the model is quantized", async () => {
  await using tmp = await tempDir("sqb-cli-checks-");
  const out = `${tmp.path}/no/such/dir/m.sqbq`;
  const r = await cli(
    "quantize",
    ...["--data-dir", SHARED_DATA, "--method", "gptq", "--bits", "3", "--out", out],
  );
  assertCliError(r, /--out .*\/no\/such\/dir\/m\.sqbq: folder .*\/no\/such\/dir does not exist/);
  assert.doesNotMatch(r.err, /quantizing/);
});

Deno.test("ppl --store FILE that is not a DuckDB file fails before the perplexity is computed", async () => {
  await using tmp = await tempDir("sqb-cli-checks-");
  const store = `${tmp.path}/random.duckdb`;
  await Deno.writeFile(store, crypto.getRandomValues(new Uint8Array(4096)));
  const r = await cli(
    "ppl",
    ...["--data-dir", SHARED_DATA, "--dataset", "tinystories", "--limit", "1", "--store", store],
  );
  assertCliError(r, /--store .*random\.duckdb is not a DuckDB file/);
  assert.doesNotMatch(r.out, /ppl/);
});

Deno.test("eval --store and --out that cannot be written fail before the sweep", async () => {
  await using tmp = await tempDir("sqb-cli-checks-");
  const file = `${tmp.path}/a-file`;
  await Deno.writeTextFile(file, "");
  const common = ["eval", "--data-dir", SHARED_DATA, "--preset", "quick", "--limit", "1"];
  const store = await cli(...common, "--store", `${file}/results.duckdb`);
  assertCliError(store, /--store .*a-file\/results\.duckdb: cannot create its folder/);
  assert.doesNotMatch(store.err, /==/);
  const report = await cli(
    ...common,
    ...["--store", `${tmp.path}/r.duckdb`, "--out", `${file}/report`],
  );
  assertCliError(report, /--out .*a-file\/report: cannot create the report folder/);
  assert.doesNotMatch(report.err, /==/);
});

Deno.test("report and bench kernels check --store and --out before reading or benchmarking", async () => {
  await using tmp = await tempDir("sqb-cli-checks-");
  const text = `${tmp.path}/notes.txt`;
  await Deno.writeTextFile(text, "not a database, but long enough to have a header");
  assertCliError(await cli("report", "--store", text), /--store .*notes\.txt is not a DuckDB file/);
  assertCliError(
    await cli("report", "--store", `${tmp.path}/none.duckdb`),
    /--store .*none\.duckdb does not exist/,
  );
  assertCliError(
    await cli("bench", "kernels", "--small", "--store", text),
    /--store .*notes\.txt is not a DuckDB file/,
  );
});

Deno.test("checkOutputFile() and checkStoreFile() accept what can be written and DuckDB files", async () => {
  await using tmp = await tempDir("sqb-cli-checks-");
  await checkOutputFile("--out", `${tmp.path}/new.bin`);
  await checkOutputFile("--report", `${tmp.path}/a/b/report.html`, { createDir: true });
  assert.ok((await Deno.stat(`${tmp.path}/a/b`)).isDirectory);
  await checkStoreFile("--store", `${tmp.path}/new.duckdb`);
  const duck = new Uint8Array(4096);
  duck.set(new TextEncoder().encode("DUCK"), 8);
  await Deno.writeFile(`${tmp.path}/db.duckdb`, duck);
  await checkStoreFile("--store", `${tmp.path}/db.duckdb`, { mustExist: true });
  await checkOutputFile("--store", `${tmp.path}/db.duckdb`);
  await assert.rejects(checkOutputFile("--out", tmp.path), /is a folder/);
  await Deno.writeFile(`${tmp.path}/short`, new Uint8Array(4));
  await assert.rejects(checkStoreFile("--store", `${tmp.path}/short`), CliError);
  // nothing probing writability is left behind
  const names = [...Deno.readDirSync(tmp.path)].map((e) => e.name).sort();
  assert.deepEqual(names, ["a", "db.duckdb", "short"]);
});

Deno.test("--limit -1, --limit=-1 and --limit 2.5 name the flag and what it accepts", async () => {
  for (const args of [["--limit", "-1"], ["--limit=-1"], ["--limit", "2.5"]]) {
    const r = await cli("ppl", "--data-dir", SHARED_DATA, ...args);
    assertCliError(r, /--limit must be an integer ≥ 1, got "(-1|2\.5)"/);
    assert.doesNotMatch(r.err, /ambiguous/);
  }
  assertCliError(
    await cli("generate", "--data-dir", SHARED_DATA, "--temperature", "-0.5"),
    /--temperature must be ≥ 0, got -0\.5/,
  );
});

Deno.test("joinNegativeValues() joins a string option and a negative number, nothing else", () => {
  const opts = { limit: { type: "string" }, json: { type: "boolean" } } as const;
  assert.deepEqual(joinNegativeValues(["--limit", "-1", "--json"], opts), ["--limit=-1", "--json"]);
  assert.deepEqual(joinNegativeValues(["--limit", "-.5"], opts), ["--limit=-.5"]);
  assert.deepEqual(joinNegativeValues(["--limit", "--json"], opts), ["--limit", "--json"]);
  assert.deepEqual(joinNegativeValues(["--json", "-1"], opts), ["--json", "-1"]);
  assert.deepEqual(joinNegativeValues(["--", "--limit", "-1"], opts), ["--", "--limit", "-1"]);
});

Deno.test("a --data-dir that does not exist is an error, and is not created", async () => {
  await using tmp = await tempDir("sqb-cli-checks-");
  const dir = `${tmp.path}/nonexistent`;
  const r = await cliWith(
    { HF_HUB_OFFLINE: "0", HF_ENDPOINT: UNREACHABLE },
    "generate",
    "--data-dir",
    dir,
  );
  assertCliError(r, /--data-dir .*\/nonexistent does not exist/);
  await assert.rejects(Deno.stat(dir), Deno.errors.NotFound);
});

Deno.test("bench quant with an empty cache and no network says so before any benchmark runs", async () => {
  await using tmp = await tempDir("sqb-cli-checks-");
  const env = {
    HF_HUB_OFFLINE: "0",
    HF_ENDPOINT: UNREACHABLE,
    SQB_DATA_DIR: "",
    XDG_CACHE_HOME: tmp.path,
    SQB_CACHE_DIR: `${tmp.path}/cache`,
  };
  const r = await cliWith(env, "bench", "quant", "--small");
  assertCliError(r, /network is unreachable/);
  assert.match(
    r.err,
    new RegExp(`Put it at ${tmp.path}/squeezebench/stories260K/stories260K\\.bin`),
  );
  assert.equal(r.out, "", "a benchmark ran before the data check");
});

Deno.test("ppl names every missing data file of the run before loading anything", async () => {
  await using tmp = await tempDir("sqb-cli-checks-");
  await Deno.mkdir(`${tmp.path}/stories260K`);
  for (const f of ["stories260K/stories260K.bin", "stories260K/tok512.model"]) {
    await Deno.symlink(sharedData(f), `${tmp.path}/${f}`);
  }
  const r = await cli(
    "ppl",
    ...["--data-dir", tmp.path, "--dataset", "c4", "--method", "gptq", "--bits", "3"],
  );
  assertCliError(r, /2 data files are missing/);
  assert.match(r.err, /C4 validation/);
  assert.match(r.err, /C4 train \(calibration\)/);
  assert.doesNotMatch(r.err, /quantizing/);
});

Deno.test("--model given a quantized file or a folder says what it is and what to use", async () => {
  await using tmp = await tempDir("sqb-cli-checks-");
  const q = `${tmp.path}/m.sqbq`;
  const made = await cli(
    ...["quantize", "--data-dir", SHARED_DATA, "--method", "rtn", "--bits", "4", "--out", q],
  );
  assert.equal(made.code, 0, made.err);
  assertCliError(
    await cli("ppl", "--data-dir", SHARED_DATA, "--model", q),
    /--model ".*m\.sqbq" is a quantized model .*--quantized .*m\.sqbq/,
  );
  assertCliError(
    await cli("generate", "--data-dir", SHARED_DATA, "--model", tmp.path),
    /--model ".*" is a folder/,
  );
});

Deno.test("ppl --quantized FILE of a model with max_seq_len 64 uses windows of 64 unless told", async () => {
  await using tmp = await tempDir("sqb-cli-checks-");
  const base = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));
  const short = { ...base, config: { ...base.config, maxSeqLen: 64 } };
  await Deno.writeFile(`${tmp.path}/s64.bin`, serializeLegacy(short));
  await Deno.copyFile(sharedData("stories260K/tok512.model"), `${tmp.path}/tok512.model`);
  const q = `${tmp.path}/s64.sqbq`;
  const made = await cli(
    "quantize",
    ...["--model", `${tmp.path}/s64.bin`, "--method", "rtn", "--bits", "4", "--out", q],
  );
  assert.equal(made.code, 0, made.err);
  const common = ["--data-dir", SHARED_DATA, "--quantized", q, "--dataset", "tinystories"];
  const r = await cli("ppl", ...common, "--limit", "2", "--json");
  assert.equal(r.code, 0, r.err);
  const j = lastJson(r.out);
  assert.equal(j.seqlen, 64);
  assert.equal(j.windows, 2);
  assertCliError(
    await cli("ppl", ...common, "--seqlen", "128"),
    /--seqlen 128 exceeds the model's max_seq_len 64 \(the quantized model .*s64\.sqbq\)/,
  );
});
