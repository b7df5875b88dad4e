import assert from "node:assert/strict";
import { LINEAR_NAMES, withLinears } from "../../model/config.ts";
import { loadCheckpoint } from "../../model/checkpoint.ts";
import { mulberry32 } from "../../model/random.ts";
import { writeHfCheckpoint } from "../../model/_convert_testing.ts";
import { sharedData } from "../../datasets/testing.ts";
import { tempDir } from "../../datasets/_testing.ts";
import { storedPplRows } from "../_store_testing.ts";
import { hfFolderSha256 } from "../model_source.ts";
import { cliWith, lastJson } from "./_testing.ts";

interface PlannedJob {
  id: string;
  kind: string;
  status: string;
  resultKey?: string;
}

Deno.test("eval --fisher DIR: SqueezeLLM reads the folder's Fisher, no Fisher pass is planned, keys hold its sha256; a rerun skips", async () => {
  await using tmp = await tempDir("sqb-eval-fisher-");
  const ref = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));
  const fisherDir = `${tmp.path}/fisher`;
  await writeHfCheckpoint(
    fisherDir,
    withLinears(ref, (l, n) => {
      const u = mulberry32(100 + l * LINEAR_NAMES.length + LINEAR_NAMES.indexOf(n));
      return Float32Array.from(ref.layers[l][n], () => u() ** 2);
    }),
  );
  const sha256 = await hfFolderSha256(fisherDir);
  const store = `${tmp.path}/r.duckdb`;
  const env = { SQB_CACHE_DIR: `${tmp.path}/cache` };
  const base = [
    "eval",
    "--data-dir",
    sharedData(""),
    "--preset",
    "quick",
    "--methods",
    "squeezellm",
    "--bits",
    "3",
    "--datasets",
    "tinystories",
    "--seqlen",
    "64",
    "--limit",
    "2",
    "--kernels",
    "none",
    "--workers",
    "0",
    "--store",
    store,
    "--out",
    `${tmp.path}/report`,
    "--json",
  ];
  const jobsOf = (out: string) => lastJson(out).jobs as PlannedJob[];

  // Without --fisher the plan computes the Fisher: a calibrate job (the baseline of this test).
  const computed = await cliWith(env, ...base, "--dry-run");
  assert.equal(computed.code, 0, computed.err);
  assert.ok(jobsOf(computed.out).some((j) => j.kind === "calibrate"));

  const dry = await cliWith(env, ...base, "--fisher", fisherDir, "--dry-run");
  assert.equal(dry.code, 0, dry.err);
  const planned = jobsOf(dry.out);
  assert.deepEqual(planned.map((j) => j.kind), ["quantize", "evaluate"], "no calibrate job");
  assert.match(
    dry.out,
    new RegExp(
      `Fisher information read from .*fisher \\(sha256 ${sha256.slice(0, 12)}…\\).*no Fisher pass`,
    ),
  );
  assert.match(dry.out, /quantize squeezellm\.w3 with the Fisher of .*fisher/);
  const key = planned[1].resultKey!;
  assert.notEqual(key, jobsOf(computed.out).find((j) => j.kind === "evaluate")!.resultKey);

  const run = await cliWith(env, ...base, "--fisher", fisherDir);
  assert.equal(run.code, 0, run.err);
  assert.doesNotMatch(run.err, /calibrate: fisher/);
  const results = lastJson(run.out).results as { resultKey: string; windows: number }[];
  assert.deepEqual(results.map((r) => [r.resultKey, r.windows]), [[key, 2]]);
  const rows = await storedPplRows(store);
  assert.equal(rows.length, 1);
  assert.equal(rows[0].resultKey, key);
  assert.deepEqual(rows[0].identity.fisher, { sha256 });
  assert.equal(rows[0].identity.calibration, null);
  assert.equal(rows[0].identityComplete, true);

  const again = await cliWith(env, ...base, "--fisher", fisherDir);
  assert.equal(again.code, 0, again.err);
  assert.match(again.err, /already in .* under key/);
  assert.deepEqual(lastJson(again.out).results, []);

  const rtn = await cliWith(
    env,
    ...base.map((a) => a === "squeezellm" ? "rtn" : a),
    "--fisher",
    fisherDir,
  );
  assert.equal(rtn.code, 2);
  assert.match(rtn.err, /--fisher applies to SqueezeLLM rows only/);
});
