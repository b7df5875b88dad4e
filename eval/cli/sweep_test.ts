import assert from "node:assert/strict";
import { SHARED_DATA } from "../../datasets/testing.ts";
import { ResultsStore } from "../../reports/store.ts";
import { tempDir } from "../../datasets/_testing.ts";
import { loadCheckpoint } from "../../model/checkpoint.ts";
import { writeHfCheckpoint } from "../../model/_convert_testing.ts";
import { cli, cliWith, lastJson } from "./_testing.ts";

const CLI = new URL("./main.ts", import.meta.url).pathname;
const dec = new TextDecoder();

/** The CLI with `args` as a subprocess command, offline (for runs that are spawned). */
function cliCommand(args: string[]) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    env: { NO_COLOR: "1", HF_HUB_OFFLINE: "1" },
    stdout: "piped",
    stderr: "piped",
  });
}

interface SweepResult {
  variant: string;
  dataset: string;
  ppl: number;
  windows: number;
}

// c4 at seqlen 64 has 256 windows: a full evaluation of stories260K takes seconds.
const C4_64 = ["--data-dir", SHARED_DATA, "--datasets", "c4", "--seqlen", "64"];
/** `ppl` on the same data. */
const PPL_C4_64 = ["ppl", "--data-dir", SHARED_DATA, "--dataset", "c4", "--seqlen", "64"];

Deno.test("eval resumes by result identity: --limit runs, other calibrations and over-large limits never stand in for a result", async () => {
  const dir = await Deno.makeTempDir();
  const store = `${dir}/r.duckdb`;
  const out = ["--store", store, "--out", `${dir}/report`, "--kernels", "none", "--json"];
  const sweep = async (...extra: string[]) => {
    const r = await cli("eval", "--preset", "quick", ...C4_64, ...out, ...extra);
    assert.equal(r.code, 0, r.err);
    return { ...r, results: lastJson(r.out).results as SweepResult[] };
  };
  // SqueezeLLM with settings its variant name leaves out (defect: it answered for the sweep's).
  const own = await cli(
    ...PPL_C4_64,
    "--limit",
    "4",
    "--method",
    "squeezellm",
    "--bits",
    "3",
    "--fisher-samples",
    "2",
    "--calib",
    "tinystories",
    "--seed",
    "7",
    "--store",
    store,
    "--json",
  );
  assert.equal(own.code, 0, own.err);
  const smoke = await sweep("--limit", "4");
  assert.deepEqual(smoke.results.map((r) => [r.variant, r.windows]), [
    ["fp32", 4],
    ["rtn.w3", 4],
    ["squeezellm.w3", 4],
  ]);
  assert.notEqual(smoke.results[2].ppl, lastJson(own.out).ppl);
  // A full run after a --limit run evaluates everything (defect: it skipped all of it and
  // printed the 4-window numbers as the result).
  const full = await sweep("--limit", "all");
  assert.deepEqual(full.results.map((r) => [r.variant, r.windows]), [
    ["fp32", 256],
    ["rtn.w3", 256],
    ["squeezellm.w3", 256],
  ]);
  assert.match(full.out, /stories260K · seqlen 64 · every window/);
  assert.match(full.out, /c4 \(256 w\)/);
  assert.doesNotMatch(full.out, /first 4 windows/);
  // --limit above the available windows is the full run: nothing to redo, said as such
  // (defect: every rerun redid the work, and the header said "first 300 windows").
  const over = await sweep("--limit", "300");
  assert.deepEqual(over.results, []);
  assert.match(over.err, /squeezellm\.w3 c4 \(256 windows of 64\): already in/);
  assert.doesNotMatch(over.out, /first 300/);
  // the same model and data give the same number from ppl as from the sweep
  const fp32 = await cli(
    ...PPL_C4_64,
    "--json",
  );
  assert.equal(lastJson(fp32.out).ppl, full.results[0].ppl);

  // ppl --store records the same settings under the sweep's key
  const rtn = await cli(
    ...PPL_C4_64,
    ...["--method", "rtn", "--bits", "3", "--store", store, "--json"],
  );
  assert.equal(lastJson(rtn.out).ppl, full.results[1].ppl);

  const s = await ResultsStore.open(store, { readOnly: true });
  const counts = await s.query(
    "select windows, count(*)::integer n, count(distinct result_key)::integer k from ppl_results group by windows order by windows",
  );
  assert.deepEqual(counts, [{ windows: 4, n: 4, k: 4 }, { windows: 256, n: 4, k: 3 }]);
  const [row] = await s.query(
    `select data_sha256, calib_sha256, calib_source, calib_seed, calib_nsamples, info_bits, stored_bits
     from ppl_results where variant = 'squeezellm.w3' and calib_seed = 7`,
  );
  assert.match(String(row.data_sha256), /^[0-9a-f]{64}$/);
  assert.match(String(row.calib_sha256), /^[0-9a-f]{64}$/);
  assert.deepEqual([row.calib_source, row.calib_seed, row.calib_nsamples], ["tinystories", 7, 2]);
  assert.ok(Number(row.stored_bits) > Number(row.info_bits));
  // the command line is recorded once, not as "eval eval …"
  const commands = (await s.query("select command from runs order by started_at")).map((r) =>
    String(r.command)
  );
  assert.match(commands[0], /^ppl --data-dir /);
  assert.match(commands[1], /^eval --preset quick /);
  s.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a sweep killed with SIGKILL loses nothing recorded, is readable while it runs, and resumes", async () => {
  const dir = await Deno.makeTempDir();
  const store = `${dir}/r.duckdb`;
  const args = [
    "eval",
    "--preset",
    "quick",
    "--kernels",
    "none",
    "--data-dir",
    SHARED_DATA,
    "--datasets",
    "c4,tinystories",
    "--seqlen",
    "64",
    "--limit",
    "8",
    "--store",
    store,
    "--out",
    `${dir}/report`,
  ];
  const proc = cliCommand(args).spawn();
  const stderr = proc.stderr.pipeThrough(new TextDecoderStream()).getReader();
  // Read the store from this process while the sweep writes to it, until one result is in.
  const rowsNow = async () => {
    try {
      const s = await ResultsStore.open(store, { readOnly: true });
      return await s.query("select result_key, ppl from ppl_results order by result_key");
    } catch (e) {
      if (/does not exist|has no tables/.test((e as Error).message)) return [];
      throw e;
    }
  };
  let seen: Record<string, unknown>[] = [];
  while (seen.length === 0) {
    const { done } = await stderr.read(); // wait for the sweep to say something
    assert.equal(done, false, "the sweep ended before storing a result");
    seen = await rowsNow();
  }
  // `deno task report` works while the sweep runs (defect: "Could not set lock on file")
  const report = await cli("report", "--store", store, "--out", `${dir}/during.html`);
  assert.equal(report.code, 0, report.err);
  assert.match(report.out, /stories260K · seqlen 64 · first 8 windows/);
  proc.kill("SIGKILL");
  await proc.status;
  await stderr.cancel();
  await proc.stdout.cancel();
  const kept = await rowsNow();
  assert.ok(kept.length >= seen.length);
  // rerun: what was stored is skipped, the rest is computed, nothing is duplicated
  const again = await cli(...args);
  assert.equal(again.code, 0, again.err);
  assert.equal((again.err.match(/already in/g) ?? []).length, kept.length);
  const all = await rowsNow();
  assert.equal(all.length, 6);
  assert.equal(new Set(all.map((r) => r.result_key)).size, 6);
  for (const r of kept) assert.deepEqual(all.find((x) => x.result_key === r.result_key), r);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("eval errors: one message naming the option or file, exit code 2, nothing written", async () => {
  const dir = await Deno.makeTempDir();
  const store = `${dir}/r.duckdb`;
  const base = ["eval", "--data-dir", SHARED_DATA, "--store", store, "--out", `${dir}/report`];
  const cases: [string[], RegExp][] = [
    [
      ["--preset", "table2"],
      /--preset: unknown preset "table2"; the presets are abq, abq-quick, bits, kernels, quick/,
    ],
    [["--methods", "rtn,hqq"], /--methods: unknown method "hqq"/],
    [
      ["--datasets", "c4,ptb"],
      /--datasets must be one of wikitext2, c4, c4-new, tinystories; got "ptb"/,
    ],
    [["--bits", "3,9"], /--bits: each width must be an integer in 2\.\.8, got "9"/],
    [
      ["--methods", "gptq", "--group", "128"],
      /--group 128 does not divide every layer's input width/,
    ],
    [["--shard", "2/2"], /--shard 2\/2: expected 0 ≤ i < n/],
    [["--shard", "auto"], /--shard auto: SLURM_ARRAY_TASK_ID is not set/],
  ];
  for (const [args, re] of cases) {
    const r = await cli(...base, ...args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.err}`);
    assert.match(r.err, re);
    assert.equal(r.err.trim().split("\n").filter((l) => l.startsWith("error:")).length, 1);
  }
  // data missing offline: names the file
  const empty = await Deno.makeTempDir();
  const offline = await cli(
    ...["eval", "--data-dir", empty, "--offline", "--store", store, "--out", `${dir}/report`],
  );
  assert.equal(offline.code, 2);
  assert.match(offline.err, /stories260K\.bin/);
  // nothing was written: no store, no report
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n !== "report"), []);
  // a store locked by another writer
  using lock = await Deno.open(`${store}.lock`, { create: true, write: true });
  await lock.lock(true);
  const locked = await cli(
    ...base,
    ...[
      "--preset",
      "quick",
      "--methods",
      "fp32",
      "--datasets",
      "c4",
      "--limit",
      "1",
      "--kernels",
      "none",
    ],
  );
  assert.equal(locked.code, 2);
  assert.match(locked.err, /--store .*r\.duckdb is locked by another writer/);
  await lock.unlock();
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(empty, { recursive: true });
});

Deno.test("eval --dry-run prints the plan with what is stored and cached; a cached quantized model gives the same numbers", async () => {
  const dir = await Deno.makeTempDir();
  const args = [
    ...["eval", "--preset", "quick", "--methods", "fp32,rtn", "--data-dir", SHARED_DATA],
    ...["--datasets", "c4,tinystories", "--seqlen", "64", "--limit", "2", "--kernels", "none"],
    ...["--store", `${dir}/r.duckdb`, "--out", `${dir}/report`],
  ];
  const env = { SQB_CACHE_DIR: `${dir}/cache` };
  const run = async (...extra: string[]) => {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CLI, ...args, ...extra],
      env: { NO_COLOR: "1", HF_HUB_OFFLINE: "1", ...env },
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
  };
  const before = await run("--dry-run");
  assert.equal(before.code, 0, before.err);
  assert.match(before.out, /jobs: 5 \(5 to do, 0 stored, 0 cached, 0 not needed\)/);
  assert.match(before.out, /\[todo {6}\] evaluate rtn\.w3 on c4 \(2 windows\)/);
  await assert.rejects(Deno.stat(`${dir}/r.duckdb`)); // a dry run writes nothing
  const first = await run("--json");
  assert.equal(first.code, 0, first.err);
  const events = first.err.split("\n").filter((l) => l.startsWith('{"event"')).map((l) =>
    JSON.parse(l)
  );
  assert.deepEqual(events.map((e) => e.id), [
    "evaluate fp32 c4",
    "evaluate fp32 tinystories",
    "quantize rtn.w3",
    "evaluate rtn.w3 c4",
    "evaluate rtn.w3 tinystories",
  ]);
  const after = await run("--dry-run");
  assert.match(after.out, /jobs: 5 \(0 to do, 4 stored, 1 cached, 0 not needed\)/);
  assert.match(after.out, /\[cached {4}\] quantize rtn\.w3/);
  // --no-resume re-evaluates with the quantized model read back from the cache: same numbers
  const again = await run("--no-resume", "--json");
  assert.equal(again.code, 0, again.err);
  assert.match(again.err, /rtn\.w3: quantized model read from the cache/);
  const ppl = (out: string) => lastJson(out).results.map((r: SweepResult) => [r.variant, r.ppl]);
  assert.deepEqual(ppl(again.out), ppl(first.out));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a sweep killed with SIGKILL during the Fisher pass and again mid-evaluation ends with exactly a clean run's rows", async () => {
  const dir = await Deno.makeTempDir();
  const args = (store: string) => [
    ...["eval", "--preset", "quick", "--data-dir", SHARED_DATA, "--kernels", "none"],
    ...["--datasets", "c4,tinystories", "--seqlen", "64", "--limit", "4"],
    ...["--store", store, "--out", `${dir}/report`],
  ];
  const spawn = (store: string, cache: string) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CLI, ...args(store)],
      env: { NO_COLOR: "1", HF_HUB_OFFLINE: "1", SQB_CACHE_DIR: cache },
      stdout: "null",
      stderr: "piped",
    }).spawn();
  const rows = async (store: string) => {
    const s = await ResultsStore.open(store, { readOnly: true });
    const r = await s.query("select result_key, ppl from ppl_results order by result_key");
    s.close();
    return r;
  };
  // the clean run, with its own cache
  const clean = await spawn(`${dir}/clean.duckdb`, `${dir}/cache-clean`).output();
  assert.equal(clean.code, 0, dec.decode(clean.stderr));
  // killed when the stderr says `when`, then run to the end
  const killedAt = async (when: RegExp) => {
    const p = spawn(`${dir}/killed.duckdb`, `${dir}/cache-killed`);
    let text = "";
    for await (const chunk of p.stderr.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      if (when.test(text)) break;
    }
    p.kill("SIGKILL");
    await p.status;
    return text;
  };
  assert.match(await killedAt(/calibrate: fisher/), /calibrate: fisher/);
  assert.match(await killedAt(/squeezellm\.w3[\s\S]*c4: ppl/), /c4: ppl/);
  const rest = await spawn(`${dir}/killed.duckdb`, `${dir}/cache-killed`).output();
  assert.equal(rest.code, 0, dec.decode(rest.stderr));
  assert.deepEqual(await rows(`${dir}/killed.duckdb`), await rows(`${dir}/clean.duckdb`));
  assert.equal((await rows(`${dir}/clean.duckdb`)).length, 6);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("deno task eval on a fresh machine (no --data-dir, empty caches) downloads everything from a loopback hub", async () => {
  const home = await Deno.makeTempDir({ prefix: "sqb-fresh-" });
  const shared = (rel: string) => Deno.readFile(`${SHARED_DATA}/${rel}`);
  const head = await Deno.readTextFile(`${SHARED_DATA}/tinystories/tinystories-valid-head.txt`);
  const tinystories = new TextEncoder().encode(
    head.split("\n\n").slice(0, 300).join("\n<|endoftext|>\n") + "\n",
  );
  const c4 = await shared("c4/c4-validation-2k.json.gz"); // served as both C4 shards
  const files = new Map<string, Uint8Array>([
    [
      "/karpathy/tinyllamas/resolve/main/stories260K/stories260K.bin",
      await shared("stories260K/stories260K.bin"),
    ],
    [
      "/karpathy/tinyllamas/resolve/main/stories260K/tok512.model",
      await shared("stories260K/tok512.model"),
    ],
    [
      "/datasets/Salesforce/wikitext/resolve/main/wikitext-2-raw-v1/test-00000-of-00001.parquet",
      await shared("wikitext-2-raw-v1/test-00000-of-00001.parquet"),
    ],
    ["/datasets/allenai/c4/resolve/main/en/c4-validation.00000-of-00008.json.gz", c4],
    ["/datasets/allenai/c4/resolve/main/en/c4-train.00000-of-01024.json.gz", c4],
    ["/datasets/roneneldan/TinyStories/resolve/main/TinyStories-valid.txt", tinystories],
  ]);
  const seen: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const path = new URL(req.url).pathname;
    seen.push(path);
    const body = files.get(path);
    return body
      ? new Response(body.slice(), { headers: { "content-length": String(body.length) } })
      : new Response("Entry not found", { status: 404 });
  });
  try {
    const r = await new Deno.Command(Deno.execPath(), {
      args: [
        ...["run", "-A", CLI, "eval", "--preset", "quick", "--kernels", "none"],
        ...["--seqlen", "64", "--limit", "2", "--json"],
        ...["--store", `${home}/r.duckdb`, "--out", `${home}/report`],
      ],
      env: {
        NO_COLOR: "1",
        HOME: home,
        XDG_CACHE_HOME: "",
        SQB_DATA_DIR: "",
        SQB_CACHE_DIR: "",
        HF_HUB_OFFLINE: "",
        HF_ENDPOINT: `http://127.0.0.1:${server.addr.port}`,
      },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(r.code, 0, dec.decode(r.stderr));
    assert.deepEqual(new Set(seen), new Set(files.keys()));
    const data = `${home}/.cache/squeezebench`;
    assert.ok((await Deno.stat(`${data}/tinystories/TinyStories-valid.txt`)).isFile);
    const s = await ResultsStore.open(`${home}/r.duckdb`, { readOnly: true });
    const rows = await s.query(
      "select distinct data_file, data_sha256 from ppl_results where dataset = 'tinystories'",
    );
    s.close();
    const { sha256File } = await import("../../datasets/hub.ts");
    assert.deepEqual(rows, [{
      data_file: `${data}/tinystories/TinyStories-valid.txt`,
      data_sha256: await sha256File(`${data}/tinystories/TinyStories-valid.txt`),
    }]);
    assert.equal(lastJson(dec.decode(r.stdout)).results.length, 3 * 3);
    // the quantized models went to the cache dir, not the data dir
    assert.ok([...Deno.readDirSync(`${data}/cache/quantized`)].length >= 2);
  } finally {
    await server.shutdown();
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("ppl --datasets takes a list (the model quantized once); --dataset is its one-dataset alias", async () => {
  const common = ["ppl", "--data-dir", SHARED_DATA, "--seqlen", "64", "--limit", "2"];
  const both = await cli(
    ...common,
    "--datasets",
    "c4,tinystories",
    "--method",
    "rtn",
    "--bits",
    "3",
    "--json",
  );
  assert.equal(both.code, 0, both.err);
  const results = lastJson(both.out).results as { dataset: string; ppl: number }[];
  assert.deepEqual(results.map((r) => r.dataset), ["c4", "tinystories"]);
  const one = await cli(
    ...common,
    "--dataset",
    "tinystories",
    "--method",
    "rtn",
    "--bits",
    "3",
    "--json",
  );
  assert.equal(lastJson(one.out).ppl, results[1].ppl);
  const clash = await cli(...common, "--dataset", "c4", "--datasets", "c4");
  assert.equal(clash.code, 2);
  assert.match(clash.err, /give --datasets LIST or its alias --dataset, not both/);
});

// GPTQ's and SqueezeLLM's block-by-block codes are the whole-model ones (eval/quantize_stream_test.ts);
// here the sweep's own paths, with RTN (cheap): quantize into the cache, read back, evaluate.
Deno.test("eval --blockwise never loads the model whole and stores the numbers and keys of eval without it; the default for a model larger than memory", async () => {
  await using tmp = await tempDir("sqb-eval-blockwise-");
  const run = async (name: string, ...extra: string[]) => {
    const r = await cliWith(
      { SQB_CACHE_DIR: `${tmp.path}/cache-${name}` },
      "eval",
      ...["--preset", "quick", "--methods", "fp32,rtn", "--limit", "2"],
      ...["--data-dir", SHARED_DATA, "--datasets", "tinystories", "--kernels", "none"],
      ...["--store", `${tmp.path}/${name}.duckdb`, "--out", `${tmp.path}/report`],
      "--json",
      ...extra,
    );
    assert.equal(r.code, 0, r.err);
    return r;
  };
  const whole = await run("whole"), streamed = await run("streamed", "--blockwise");
  assert.match(streamed.err, /rtn\.w3: quantizing block by block/);
  const ppl = (r: { out: string }) =>
    (lastJson(r.out).results as (SweepResult & { resultKey: string })[])
      .map((x) => [x.variant, x.ppl, x.resultKey]);
  assert.equal(ppl(whole).length, 2);
  assert.deepEqual(ppl(streamed), ppl(whole));
  // the cached quantized model is read back block by block
  const again = await run("streamed", "--blockwise", "--no-resume");
  assert.match(again.err, /rtn\.w3: quantized model read from the cache/);
  assert.deepEqual(ppl(again), ppl(whole));
  // a model larger than memory in fp32 goes block by block without being asked
  const huge = `${tmp.path}/huge`;
  await writeHfCheckpoint(
    huge,
    await loadCheckpoint(`${SHARED_DATA}/stories260K/stories260K.bin`),
    {
      files: { "tokenizer.model": await Deno.readFile(`${SHARED_DATA}/stories260K/tok512.model`) },
    },
  );
  const config = JSON.parse(await Deno.readTextFile(`${huge}/config.json`));
  await Deno.writeTextFile(
    `${huge}/config.json`,
    JSON.stringify({ ...config, intermediate_size: 1 << 28, num_hidden_layers: 64 }),
  );
  const planned = await cli(
    ...["eval", "--model", huge, "--data-dir", SHARED_DATA, "--methods", "fp32,rtn"],
    ...["--datasets", "tinystories", "--kernels", "none", "--dry-run"],
  );
  assert.equal(planned.code, 0, planned.err);
  assert.match(planned.err, /is larger than memory in fp32: evaluating block by block/);
  const refused = await cli(
    ...["eval", "--data-dir", SHARED_DATA, "--methods", "smoothquant", "--blockwise"],
  );
  assert.equal(refused.code, 2);
  assert.match(refused.err, /--blockwise: smoothquant.* cannot be quantized block by block/);
});
