import assert from "node:assert/strict";
import { LINEAR_NAMES, type LinearName, withLinears } from "../model/config.ts";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { openHfFisher, openHfWeights } from "../model/hf.ts";
import { mulberry32, randomWindows } from "../model/random.ts";
import { materializeWeights } from "../model/weight_source.ts";
import { writeHfCheckpoint } from "../model/_convert_testing.ts";
import { sharedData } from "../datasets/testing.ts";
import { tempDir } from "../datasets/_testing.ts";
import {
  type CalibrationIdentity,
  defaultSpec,
  quantizeWith,
  type QuantSpec,
  resolveSpec,
  variantName,
} from "../quant/methods.ts";
import type { GptqModelStats } from "../quant/sequential.ts";
import { loadQuantizedModel } from "../quant/qmodel.ts";
import { quantizeToFile } from "./quantize_stream.ts";
import { hfFolderSha256 } from "./model_source.ts";
import { storedPplRows } from "./_store_testing.ts";
import { cli, cliWith, lastJson } from "./cli/_testing.ts";

const MODEL = sharedData("stories260K/stories260K.bin");
const ref = await loadCheckpoint(MODEL);

/** Seeded positive "squared gradients" of every linear. */
const fisher = ref.layers.map((lw, l) => {
  const u = mulberry32(100 + l);
  return Object.fromEntries(
    LINEAR_NAMES.map((n) => [n, Float32Array.from(lw[n], () => u() ** 2)]),
  ) as Record<LinearName, Float32Array>;
});

/** An identity for the in-memory Fisher (quantizeWith needs one; the file records null). */
const NO_WINDOWS: CalibrationIdentity = {
  source: "c4",
  file: "-",
  fileSha256: "-",
  nsamples: 0,
  seqlen: 0,
  seed: 0,
  tokensSha256: "-",
};

Deno.test("quantizeToFile() writes an fp16 checkpoint block by block with the whole-model RTN and SqueezeLLM codes", async () => {
  await using tmp = await tempDir("sqb-stream-test-");
  const modelDir = `${tmp.path}/model`, fisherDir = `${tmp.path}/fisher`;
  await writeHfCheckpoint(modelDir, ref, { dtype: "F16", untie: true });
  await writeHfCheckpoint(fisherDir, withLinears(ref, (l, n) => fisher[l][n]));
  using src = await openHfWeights(modelDir);
  const whole = materializeWeights(src);
  using fisherSrc = await openHfFisher(fisherDir, src.config);
  const specs: QuantSpec[] = [
    resolveSpec({ ...defaultSpec("rtn", 3), groupSize: 4 }, src.config, { groupGiven: true }),
    resolveSpec({ ...defaultSpec("squeezellm", 3), sensitivePct: 0.5 }, src.config),
  ];
  for (const spec of specs) {
    const out = `${tmp.path}/${spec.method}.sqbq`;
    const r = await quantizeToFile({
      source: src,
      spec,
      fisher: fisherSrc,
      out,
      base: { path: modelDir, sha256: "0".repeat(64) },
      calibration: null,
      calibrationText: null,
      workers: 0,
    });
    const expected = await quantizeWith(
      whole,
      spec,
      spec.method === "rtn"
        ? null
        : { inputs: { fisher, windows: 0 }, identity: NO_WINDOWS, text: "" },
      { workers: 0 },
    );
    const file = await loadQuantizedModel(out);
    assert.equal(r.bytes, (await Deno.stat(out)).size);
    assert.equal(r.avgBits, expected.avgBits, spec.method);
    assert.equal(file.linears.size, expected.linears.size);
    for (const [key, q] of expected.linears) {
      assert.deepEqual(file.linears.get(key), q, `${spec.method} ${key}`);
    }
    assert.deepEqual(file.rest.tokenEmbedding, whole.tokenEmbedding);
    assert.deepEqual(file.rest.classifier, whole.classifier);
    assert.deepEqual(file.rest.ffnNorm[4], whole.layers[4].ffnNorm);
    assert.equal(file.provenance.blockwise, true);
    if (spec.method === "squeezellm") assert.ok((r.details.sparseNnz as number) > 0);
  }
});

Deno.test("quantizeToFile() GPTQ block by block from an fp16 checkpoint gives the whole-model GPTQ's codes, bit for bit", async () => {
  await using tmp = await tempDir("sqb-stream-gptq-test-");
  const modelDir = `${tmp.path}/model`;
  await writeHfCheckpoint(modelDir, ref, { dtype: "F16" });
  using src = await openHfWeights(modelDir);
  const whole = materializeWeights(src);
  const windows = randomWindows(4, 64, src.config.vocabSize, 3);
  const specs: QuantSpec[] = [
    resolveSpec(defaultSpec("gptq", 3), src.config),
    resolveSpec({ ...defaultSpec("gptq", 4), actOrder: true, groupSize: 4 }, src.config, {
      groupGiven: true,
    }),
  ];
  for (const spec of specs) {
    const out = `${tmp.path}/${variantName(spec)}.sqbq`;
    const r = await quantizeToFile({
      source: src,
      spec,
      windows,
      out,
      base: { path: modelDir, sha256: "0".repeat(64) },
      calibration: NO_WINDOWS,
      calibrationText: "4 random windows",
      workers: 0,
    });
    const expected = await quantizeWith(
      whole,
      spec,
      { inputs: { windows }, identity: NO_WINDOWS, text: "" },
      { workers: 0 },
    );
    const file = await loadQuantizedModel(out);
    assert.equal(r.avgBits, expected.avgBits, spec.method);
    assert.equal(file.linears.size, expected.linears.size);
    for (const [key, q] of expected.linears) {
      assert.deepEqual(file.linears.get(key), q, `${variantName(spec)} ${key}`);
    }
    const stats = (file.provenance.details as { stats: GptqModelStats }).stats;
    const expectedStats = (expected.details as { stats: GptqModelStats }).stats;
    assert.deepEqual(
      stats.linears.map((x) => [x.key, x.error]),
      expectedStats.linears.map((x) => [x.key, x.error]),
    );
    assert.deepEqual(file.provenance.calibration, NO_WINDOWS);
  }
  await assert.rejects(
    () =>
      quantizeToFile({
        source: src,
        spec: specs[0],
        out: `${tmp.path}/none.sqbq`,
        base: { path: modelDir, sha256: "0".repeat(64) },
        calibration: null,
        calibrationText: null,
        workers: 0,
      }),
    /gptq needs calibration windows/,
  );
});

Deno.test("quantize --fisher DIR reads SqueezeLLM-gradients output and records its sha256; bad --fisher is exit 2 naming the problem", async () => {
  await using tmp = await tempDir("sqb-stream-cli-test-");
  const modelDir = `${tmp.path}/model`, fisherDir = `${tmp.path}/fisher`;
  const tokenizer = await Deno.readFile(sharedData("stories260K/tok512.model"));
  await writeHfCheckpoint(modelDir, ref, { files: { "tokenizer.model": tokenizer } });
  await writeHfCheckpoint(fisherDir, withLinears(ref, (l, n) => fisher[l][n]));
  const out = `${tmp.path}/q.sqbq`;
  const base = ["quantize", "--model", modelDir, "--out", out, "--workers", "0", "--json"];
  const ok = await cli(...base, "--method", "squeezellm", "--bits", "3", "--fisher", fisherDir);
  assert.equal(ok.code, 0, ok.err);
  const j = lastJson(ok.out);
  assert.equal(j.blockwise, true);
  assert.deepEqual(j.fisher, { path: fisherDir, sha256: await hfFolderSha256(fisherDir) });
  assert.equal(j.calibration, null);
  assert.ok(j.peakRssBytes > 0);
  const file = await loadQuantizedModel(out);
  assert.deepEqual((file.provenance.details as Record<string, unknown>).fisherFile, j.fisher);

  const rtn = await cli(...base, "--method", "rtn", "--bits", "4", "--fisher", fisherDir);
  assert.equal(rtn.code, 2);
  assert.match(rtn.err, /--fisher applies to --method squeezellm only/);

  await writeHfCheckpoint(
    `${tmp.path}/other`,
    withLinears({ ...ref, config: { ...ref.config } }, (l, n) => fisher[l][n]),
    { dtype: "F16" },
  );
  await Deno.writeTextFile(
    `${tmp.path}/other/config.json`,
    (await Deno.readTextFile(`${tmp.path}/other/config.json`)).replace(
      '"intermediate_size": 172',
      '"intermediate_size": 160',
    ),
  );
  const other = await cli(
    ...base,
    "--method",
    "squeezellm",
    "--bits",
    "3",
    "--fisher",
    `${tmp.path}/other`,
  );
  assert.equal(other.code, 2);
  assert.match(other.err, /Fisher checkpoint .*other is for another model: its hiddenDim is 160/);
  const outliers = await cli(
    ...base,
    "--method",
    "squeezellm",
    "--bits",
    "3",
    "--outliers",
    "0.1",
    "--fisher",
    fisherDir,
  );
  assert.equal(outliers.code, 0, outliers.err); // the whole-model path, the same Fisher file
  assert.deepEqual(lastJson(outliers.out).calibration, null);
  const whole = await loadQuantizedModel(out);
  assert.deepEqual((whole.provenance.details as Record<string, unknown>).fisherFile, j.fisher);
  assert.notEqual(whole.provenance.blockwise, true);
});

Deno.test("ppl --fisher DIR quantizes with the file's Fisher and keys the stored result by its sha256", async () => {
  await using tmp = await tempDir("sqb-stream-ppl-test-");
  const fisherDir = `${tmp.path}/fisher`;
  await writeHfCheckpoint(fisherDir, withLinears(ref, (l, n) => fisher[l][n]));
  const store = `${tmp.path}/r.duckdb`;
  const args = [
    "ppl",
    "--data-dir",
    sharedData(""),
    "--datasets",
    "tinystories",
    "--limit",
    "2",
    "--method",
    "squeezellm",
    "--bits",
    "3",
    "--workers",
    "0",
    "--json",
  ];
  const r = await cli(...args, "--fisher", fisherDir, "--store", store);
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /Fisher information read from .*fisher \(sha256 [0-9a-f]{12}…\)/);
  const rows = await storedPplRows(store);
  assert.equal(rows.length, 1);
  assert.deepEqual(rows[0].identity.fisher, { sha256: await hfFolderSha256(fisherDir) });
  assert.equal(rows[0].identity.calibration, null);
  assert.equal(rows[0].identityComplete, true);
  const rtn = await cli(
    ...args.slice(0, -7),
    "--method",
    "rtn",
    "--bits",
    "4",
    "--fisher",
    fisherDir,
  );
  assert.equal(rtn.code, 2);
  assert.match(rtn.err, /--fisher applies to --method squeezellm only/);
});

Deno.test("quantize --method squeezellm computes the Fisher block by block and gives ppl's in-memory SqueezeLLM (whole-model Fisher) exactly", async () => {
  await using tmp = await tempDir("sqb-stream-fisher-test-");
  const env = { SQB_CACHE_DIR: `${tmp.path}/cache` };
  const squeeze = [
    "--method",
    "squeezellm",
    "--bits",
    "3",
    "--fisher-samples",
    "5",
    "--calib-seqlen",
    "128",
  ];
  const data = ["--data-dir", sharedData(""), "--workers", "0"];
  const out = `${tmp.path}/m.sqbq`;
  const q = await cliWith(env, "quantize", ...data, ...squeeze, "--out", out, "--json");
  assert.equal(q.code, 0, q.err);
  assert.match(q.err, /fisher: 5 windows, computed block by block in .*fisher-[0-9a-f]{64}\.hf/);
  const common = ["--dataset", "tinystories", "--limit", "2", "--json"];
  const fromFile = await cliWith(env, "ppl", ...data, "--quantized", out, ...common);
  assert.equal(fromFile.code, 0, fromFile.err);
  const inMemory = await cliWith(env, "ppl", ...data, ...squeeze, ...common);
  assert.equal(inMemory.code, 0, inMemory.err);
  assert.equal(lastJson(fromFile.out).ppl, lastJson(inMemory.out).ppl);
  assert.deepEqual(
    lastJson(fromFile.out).quant.calibration,
    lastJson(inMemory.out).quant.calibration,
  );
});

Deno.test("quantize --method gptq streams block by block and gives ppl's in-memory (whole-model) GPTQ exactly, also read back block by block (ppl --blockwise)", async () => {
  await using tmp = await tempDir("sqb-stream-gptq-cli-test-");
  const gptq = ["--method", "gptq", "--bits", "3", "--nsamples", "4", "--calib-seqlen", "128"];
  const data = ["--data-dir", sharedData(""), "--workers", "0"];
  const out = `${tmp.path}/m.sqbq`;
  const q = await cli("quantize", ...data, ...gptq, "--act-order", "--out", out, "--json");
  assert.equal(q.code, 0, q.err);
  const written = lastJson(q.out);
  assert.equal(written.blockwise, true);
  assert.equal(written.device, "cpu");
  assert.equal(written.calibration.nsamples, 4);
  const common = ["--dataset", "tinystories", "--limit", "2", "--json"];
  const fromFile = await cli("ppl", ...data, "--quantized", out, ...common);
  assert.equal(fromFile.code, 0, fromFile.err);
  const inMemory = await cli("ppl", ...data, ...gptq, "--act-order", ...common);
  assert.equal(inMemory.code, 0, inMemory.err);
  // and read back lazily, one block's arrays at a time (quant/qmodel.ts openQuantizedModel)
  const lazy = await cli(
    "ppl",
    ...data,
    "--quantized",
    out,
    "--blockwise",
    "--chunk",
    "1",
    ...common,
  );
  assert.equal(lazy.code, 0, lazy.err);
  for (const r of [fromFile, lazy]) {
    assert.equal(lastJson(r.out).ppl, lastJson(inMemory.out).ppl);
    const seconds = 0; // the quantization time differs
    assert.deepEqual(
      { ...lastJson(r.out).quant, seconds },
      { ...lastJson(inMemory.out).quant, seconds },
    );
  }
  assert.deepEqual(lastJson(inMemory.out).quant.calibration, written.calibration);
});
