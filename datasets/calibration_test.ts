// Reference values from /usr/bin/python3 with sentencepiece (tok512.model),
// running GPTQ's get_c4 / get_wikitext2 train-loader loops on the same files
// (documents tokenized as [1] + sp.encode(text)); see datasets/c4_test.ts.
import assert from "node:assert/strict";
import { SHARED_DATA, sharedData } from "./testing.ts";
import { loadTokenizer } from "../model/tokenizer.ts";
import { calibrationWindows } from "./calibration.ts";
import { openC4Documents } from "./c4.ts";
import { MissingDataError } from "./datadir.ts";
import { tempDir, wikitextDataDir } from "./_testing.ts";

const tok = await loadTokenizer(sharedData("stories260K/tok512.model"));
const base = { dataDir: SHARED_DATA, tokenizer: tok, offline: true };
const total = (ws: Int32Array[]) => ws.reduce((s, w) => s + w.reduce((a, b) => a + b, 0), 0);

/**
 * First 24 (document, offset) pairs of random.seed(0), 128 windows of 512,
 * documents 1100 + randint(0, 899) of c4/c4-validation-2k.json.gz; total of all
 * 128 windows' ids 23941181.
 */
// deno-fmt-ignore
const C4_SEED0_PAIRS: [number, number][] = [
  [1494, 107], [1141, 66], [1623, 497], [1514, 77], [1588, 733], [1697, 456], [1323, 1033], [1242, 577],
  [1873, 48], [1356, 545], [1929, 0], [1417, 101], [1175, 2704], [1462, 444], [1725, 1311], [1309, 141],
  [1588, 906], [1986, 1067], [1366, 255], [1661, 234], [1114, 47], [1508, 4], [1726, 505], [1947, 2729],
];

Deno.test("calibrationWindows('c4') uses proxy docs 1100..1999 when the train shard is absent", async () => {
  const { windows, source } = await calibrationWindows({
    ...base,
    source: "c4",
    nsamples: 128,
    seqlen: 512,
    seed: 0,
  });
  assert.equal(windows.length, 128);
  assert.ok(windows.every((w) => w.length === 512));
  assert.equal(total(windows), 23941181);
  using docs = await openC4Documents(sharedData("c4/c4-validation-2k.json.gz"), tok);
  for (const [k, [doc, start]] of C4_SEED0_PAIRS.entries()) {
    assert.deepEqual(windows[k], (await docs.tokens(doc)).slice(start, start + 512), `window ${k}`);
  }
  assert.match(source, /docs 1100\.\.1999 of the validation proxy c4\/c4-validation-2k\.json\.gz/);
  assert.match(source, /c4-train\.00000-of-01024\.json\.gz absent/);
});

Deno.test("calibrationWindows() is deterministic per seed and returns fresh arrays", async () => {
  const opts = { ...base, source: "c4" as const, nsamples: 8, seqlen: 256 };
  const a = await calibrationWindows({ ...opts, seed: 3 });
  const b = await calibrationWindows({ ...opts, seed: 3 });
  const c = await calibrationWindows({ ...opts, seed: 4 });
  assert.deepEqual(a.windows, b.windows);
  assert.notDeepEqual(a.windows, c.windows);
  a.windows[0].fill(0);
  assert.notDeepEqual(a.windows[0], b.windows[0]);
});

Deno.test("calibrationWindows('tinystories') draws randint(0, numel - seqlen - 1) from the train sample", async () => {
  const { windows, source } = await calibrationWindows({
    ...base,
    source: "tinystories",
    nsamples: 16,
    seqlen: 512,
    seed: 0,
  });
  // ids = [1] + sp.encode(open("tinystories-train-sample.txt").read()) has 1064887 tokens;
  // random.seed(0); starts = [random.randint(0, len(ids) - 512 - 1) for _ in range(16)]
  const starts = [
    807917,
    882002,
    84901,
    542987,
    1019064,
    849208,
    636092,
    999496,
    750883,
    458107,
    1058405,
    292078,
    591056,
    293068,
    198874,
    525349,
  ];
  const stream = tok.encodeWithBos(
    await Deno.readTextFile(sharedData("tinystories/tinystories-train-sample.txt")),
  );
  assert.equal(stream.length, 1064887);
  starts.forEach((s, k) => assert.deepEqual(windows[k], stream.slice(s, s + 512)));
  assert.equal(total(windows), 2862946);
  assert.match(source, /tinystories-train-sample\.txt/);
});

Deno.test("calibrationWindows('wikitext2') needs the train split and says so", async () => {
  await assert.rejects(
    calibrationWindows({
      ...base,
      env: () => undefined, // the public hub, whatever HF_ENDPOINT says
      source: "wikitext2",
      nsamples: 4,
      seqlen: 512,
      seed: 0,
    }),
    (e: Error) =>
      e instanceof MissingDataError &&
      e.message.includes("wikitext-2-raw-v1/train-00000-of-00001.parquet") &&
      e.message.includes("https://huggingface.co/datasets/Salesforce/wikitext/resolve/main/"),
  );
});

Deno.test("calibrationWindows('wikitext2') samples the joined train rows (test rows standing in)", async () => {
  // A data dir whose "train" file is the test split's raw file, to exercise the rule:
  // random.seed(0); [random.randint(0, 815066 - 512 - 1) for _ in range(4)]
  await using tmp = await wikitextDataDir("sqb-calib-test-", "wiki.train.raw");
  const dir = tmp.path;
  const { windows, source } = await calibrationWindows({
    ...base,
    dataDir: dir,
    source: "wikitext2",
    nsamples: 4,
    seqlen: 512,
    seed: 0,
  });
  const rows = (await Deno.readTextFile(sharedData("wikitext-2-raw-v1/wiki.test.raw")))
    .split(/(?<=\n)/).map((l) => (l.trim() === "" ? "" : l));
  const stream = tok.encodeWithBos(rows.join("\n\n"));
  assert.equal(stream.length, 815066);
  [403958, 794772, 441001, 42450].forEach((s, k) =>
    assert.deepEqual(windows[k], stream.slice(s, s + 512))
  );
  assert.match(source, /wiki\.train\.raw/);
});

Deno.test("calibrationWindows('c4') offline with no C4 file names the train shard and the proxy", async () => {
  await using tmp = await tempDir("sqb-calib-test-");
  const dir = tmp.path;
  await assert.rejects(
    calibrationWindows({ ...base, dataDir: dir, source: "c4", nsamples: 1, seqlen: 64, seed: 0 }),
    (e: Error) =>
      e instanceof MissingDataError &&
      e.message.includes(`${dir}/c4/en/c4-train.00000-of-01024.json.gz`) &&
      e.message.includes(`${dir}/c4/c4-validation-2k.json.gz`),
  );
  await assert.rejects(
    calibrationWindows({ ...base, source: "c4", nsamples: 0, seqlen: 64, seed: 0 }),
    /nsamples/,
  );
});
