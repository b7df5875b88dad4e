import assert from "node:assert/strict";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { LINEAR_NAMES, type LinearName } from "../model/config.ts";
import { loadHfFisher } from "../model/hf.ts";
import { mulberry32, randomWeights } from "../model/random.ts";
import { memoryWeightSource } from "../model/weight_source.ts";
import { sharedData } from "../datasets/testing.ts";
import { tempDir } from "../datasets/_testing.ts";
import { fisherInformation } from "./fisher.ts";
import {
  cachedFisherCheckpoint,
  fisherInformationBlockwise,
  writeFisherCheckpoint,
} from "./fisher_blockwise.ts";

const weights = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));
const c = weights.config;

/** Seeded windows of several lengths: two partial sums of FISHER_CHUNK (4), the second short. */
const windows = [96, 128, 40, 128, 2, 77].map((T, i) => {
  const u = mulberry32(7 + i);
  return Int32Array.from({ length: T }, () => Math.floor(u() * c.vocabSize));
});
const whole = await fisherInformation(weights, windows, { workers: 0 });

Deno.test("fisherInformationBlockwise() gives quant/fisher.ts's Fisher bit for bit, one block at a time, last block first", async () => {
  const got: Record<LinearName, Float32Array>[] = [];
  const order: number[] = [], read: number[] = [];
  const src = memoryWeightSource(weights);
  const counting = {
    ...src,
    layer(l: number) {
      read.push(l);
      return src.layer(l);
    },
  };
  const r = await fisherInformationBlockwise(counting, windows, (l, f) => {
    order.push(l);
    got[l] = f;
  }, { workers: 0 });
  const L = c.nLayers;
  assert.deepEqual(order, Array.from({ length: L }, (_, i) => L - 1 - i));
  assert.deepEqual(read, [...Array(L).keys(), ...order], "each block read once per sweep");
  for (let l = 0; l < L; l++) {
    for (const n of LINEAR_NAMES) {
      assert.deepEqual(got[l][n], whole.fisher[l][n], `layers.${l}.${n}`);
    }
  }
  assert.equal(r.windows, windows.length);
  assert.equal(r.meanLoss, whole.meanLoss);
  assert.ok(whole.fisher[0].wq.some((x) => x > 0), "a Fisher of zeros would prove nothing");
});

Deno.test("fisherInformationBlockwise() gives the same Fisher on 0 and 2 workers", async () => {
  const w = randomWeights({
    dim: 8,
    hiddenDim: 12,
    nLayers: 2,
    nHeads: 2,
    nKvHeads: 1,
    vocabSize: 10,
    maxSeqLen: 6,
    sharedClassifier: false,
    normEps: 1e-5,
    ropeTheta: 10000,
  }, 3);
  const u = mulberry32(5);
  const wins = [6, 3, 5, 6, 2, 4].map((T) =>
    Int32Array.from({ length: T }, () => Math.floor(u() * 10))
  );
  const run = async (workers: number) => {
    const F: Record<LinearName, Float32Array>[] = [];
    await fisherInformationBlockwise(memoryWeightSource(w), wins, (l, f) => F[l] = f, { workers });
    return F;
  };
  const alone = await run(0);
  assert.deepEqual(await run(2), alone);
  assert.deepEqual(
    alone,
    (await fisherInformation(w, wins, { workers: 0 })).fisher.map((f) => ({ ...f })),
  );
});

Deno.test("writeFisherCheckpoint() writes SqueezeLLM-gradients' layout, which openHfFisher reads back as the same Fisher", async () => {
  await using tmp = await tempDir("sqb-fisher-blockwise-");
  const dir = `${tmp.path}/fisher`;
  const r = await writeFisherCheckpoint(dir, memoryWeightSource(weights), windows.slice(0, 2), {
    workers: 0,
  });
  const back = await loadHfFisher(dir, c);
  const want = await fisherInformation(weights, windows.slice(0, 2), { workers: 0 });
  assert.deepEqual(back, want.fisher.map((f) => ({ ...f })));
  assert.ok(r.bytes > 0);
  const left = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.startsWith("sqb-"));
  assert.deepEqual(left, [], "the scratch file is removed");
});

Deno.test("cachedFisherCheckpoint() computes once per model, data and windows", async () => {
  await using tmp = await tempDir("sqb-fisher-cache-");
  const opts = { cacheDir: tmp.path, key: "model|c4|sha", workers: 0 };
  const two = windows.slice(0, 2);
  const first = await cachedFisherCheckpoint(memoryWeightSource(weights), two, opts);
  assert.equal(first.computed, true);
  assert.deepEqual(await cachedFisherCheckpoint(memoryWeightSource(weights), two, opts), {
    dir: first.dir,
    computed: false,
  });
  const other = await cachedFisherCheckpoint(
    memoryWeightSource(weights),
    windows.slice(1, 3),
    opts,
  );
  assert.equal(other.computed, true);
  assert.notEqual(other.dir, first.dir);
  const keyed = await cachedFisherCheckpoint(memoryWeightSource(weights), two, {
    ...opts,
    key: "x",
  });
  assert.notEqual(keyed.dir, first.dir);
  assert.deepEqual(
    await loadHfFisher(first.dir, c),
    (await fisherInformation(weights, two, { workers: 0 })).fisher.map((f) => ({ ...f })),
  );
});
