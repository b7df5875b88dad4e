import assert from "node:assert/strict";
import { join } from "node:path";
import { BackwardState, lossAndGradients } from "../model/backward.ts";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { LINEAR_NAMES } from "../model/config.ts";
import { randomWeights, randomWindows, tinyConfig } from "../model/random.ts";
import { sharedData } from "../datasets/testing.ts";
import { FISHER_CODE_VERSION, fisherInformation, sharedWeights } from "./fisher.ts";
import {
  cachedFisher,
  fisherCacheKey,
  type FisherKeyFields,
  windowsSha256,
} from "./fisher_cache.ts";

const config = tinyConfig();

Deno.test("fisherInformation() of two windows equals g1² + g2² from lossAndGradients()", async () => {
  const w = randomWeights(config, 1);
  const windows = randomWindows(2, 10, config.vocabSize, 2);
  const state = new BackwardState(config);
  const g = windows.map((win) => {
    const { grads } = lossAndGradients(w, win, { state });
    return grads.layers.map((lg) =>
      Object.fromEntries(LINEAR_NAMES.map((n) => [n, lg[n].slice()]))
    );
  });
  const seen: number[] = [];
  const r = await fisherInformation(w, windows, { workers: 0, onProgress: (d) => seen.push(d) });
  assert.deepEqual(seen, [1, 2]);
  assert.equal(r.windows, 2);
  for (let l = 0; l < config.nLayers; l++) {
    for (const n of LINEAR_NAMES) {
      const want = g[0][l][n].map((a, i) => a * a + g[1][l][n][i] * g[1][l][n][i]);
      assert.deepEqual(r.fisher[l][n], want, `layers.${l}.${n}`);
      assert.ok(want.some((v) => v > 0));
    }
  }
});

Deno.test("fisherInformation() gives identical results on 0 and 2 workers", async () => {
  const w = randomWeights({ ...config, sharedClassifier: false }, 3);
  const windows = randomWindows(7, 12, config.vocabSize, 4); // chunks of 4 and 3
  const a = await fisherInformation(w, windows, { workers: 0 });
  let last = 0;
  const b = await fisherInformation(w, windows, { workers: 2, onProgress: (d) => (last = d) });
  assert.equal(last, 7);
  assert.deepEqual(b.fisher, a.fisher);
  assert.equal(b.meanLoss, a.meanLoss);
});

Deno.test("fisherInformation() rejects empty and over-long windows", async () => {
  const w = randomWeights(config, 1);
  await assert.rejects(() => fisherInformation(w, [], { workers: 0 }), /no calibration windows/);
  await assert.rejects(
    () => fisherInformation(w, [new Int32Array(13)], { workers: 0 }),
    /window 0 has 13 tokens, expected 2\.\.12/,
  );
});

Deno.test("cachedFisher() computes once, then returns identical arrays from the cache", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const w = randomWeights(config, 5);
    const windows = randomWindows(3, 8, config.vocabSize, 6);
    const opts = {
      cacheDir: join(dir, "fisher"),
      key: "ckpt-sha|tinystories; 3 windows",
      workers: 0,
    };
    const first = await cachedFisher(w, windows, opts);
    assert.equal(first.cached, false);
    let calls = 0;
    const second = await cachedFisher(w, windows, { ...opts, onProgress: () => calls++ });
    assert.equal(second.cached, true);
    assert.equal(calls, 0);
    assert.equal(second.path, first.path);
    assert.deepEqual(second.fisher, first.fisher);
    assert.equal(second.meanLoss, first.meanLoss);
    // Other inputs → another file.
    const other = await cachedFisher(w, windows.slice(0, 2), opts);
    assert.equal(other.cached, false);
    assert.notEqual(other.path, first.path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cachedFisher() recomputes a corrupt or truncated cache file with a warning", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const w = randomWeights(config, 7);
    const windows = randomWindows(2, 8, config.vocabSize, 8);
    const warnings: string[] = [];
    const opts = { cacheDir: dir, key: "k", workers: 0, warn: (m: string) => warnings.push(m) };
    const first = await cachedFisher(w, windows, opts);
    const good = await Deno.readFile(first.path);
    // One flipped payload bit: the checksum catches it.
    const bad = good.slice();
    bad[bad.length - 5] ^= 0x10;
    await Deno.writeFile(first.path, bad);
    const again = await cachedFisher(w, windows, opts);
    assert.equal(again.cached, false);
    assert.match(warnings[0], /Fisher cache .* is unusable: payload sha256 .* recomputing/);
    assert.deepEqual(again.fisher, first.fisher);
    assert.notDeepEqual(await Deno.readFile(first.path), bad); // rewritten
    // Truncated.
    await Deno.writeFile(first.path, good.subarray(0, good.length - 4));
    assert.equal((await cachedFisher(w, windows, opts)).cached, false);
    assert.match(warnings[1], /expected \d+ bytes .* file has \d+/);
    // Not a cache file at all.
    await Deno.writeFile(first.path, new TextEncoder().encode("hello"));
    assert.equal((await cachedFisher(w, windows, opts)).cached, false);
    assert.match(warnings[2], /too short for a header/);
    assert.equal((await cachedFisher(w, windows, opts)).cached, true);
    assert.equal(warnings.length, 3);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fisherCacheKey() changes with every input", () => {
  const windows = randomWindows(2, 8, 20, 1);
  const base: FisherKeyFields = {
    key: "sha|c4",
    nsamples: 2,
    seqlen: 8,
    windowsSha256: windowsSha256(windows),
    codeVersion: FISHER_CODE_VERSION,
  };
  const k0 = fisherCacheKey(base);
  assert.match(k0, /^[0-9a-f]{64}$/);
  assert.equal(fisherCacheKey({ ...base }), k0);
  const changed = windows.map((w) => w.slice());
  changed[1][3] = (changed[1][3] + 1) % 20;
  for (
    const f of [
      { key: "sha2|c4" },
      { nsamples: 3 },
      { seqlen: 9 },
      { windowsSha256: windowsSha256(changed) },
      { codeVersion: FISHER_CODE_VERSION + 1 },
    ]
  ) {
    assert.notEqual(fisherCacheKey({ ...base, ...f }), k0, JSON.stringify(f));
  }
});

Deno.test("fisherInformation() on stories260K: finite, non-negative, nonzero for every linear", async () => {
  const w = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));
  const windows = randomWindows(2, 64, w.config.vocabSize, 9);
  const r = await fisherInformation(w, windows, { workers: 0 });
  assert.ok(r.meanLoss > 0 && Number.isFinite(r.meanLoss));
  r.fisher.forEach((rec, l) =>
    LINEAR_NAMES.forEach((n) => {
      let sum = 0;
      for (const v of rec[n]) {
        assert.ok(v >= 0 && Number.isFinite(v), `layers.${l}.${n}`);
        sum += v;
      }
      assert.ok(sum > 0, `layers.${l}.${n} is all zero`);
    })
  );
});

Deno.test("fisherInformation() passes a worker's error on with its class, naming the pool", async () => {
  const w = randomWeights(config, 1);
  const windows = randomWindows(6, 8, config.vocabSize, 5);
  windows[5][2] = -1; // in the second chunk only
  const message = /token -1 at position 2 is outside the vocabulary/;
  await assert.rejects(() => fisherInformation(w, windows, { workers: 0 }), message);
  await assert.rejects(
    () => fisherInformation(w, windows, { workers: 2 }),
    (e: Error) =>
      e instanceof RangeError && /^Fisher worker: /.test(e.message) && message.test(e.message),
  );
});

Deno.test("sharedWeights() copies the model into shared memory, a shared classifier staying one array", () => {
  const c = tinyConfig({ sharedClassifier: true });
  const w = randomWeights(c, 3);
  const s = sharedWeights(w);
  assert.ok(s.layers[1].w2.buffer instanceof SharedArrayBuffer);
  assert.ok(s.tokenEmbedding.buffer instanceof SharedArrayBuffer);
  assert.equal(s.classifier, s.tokenEmbedding);
  assert.deepEqual(Array.from(s.layers[1].w2), Array.from(w.layers[1].w2));
  assert.deepEqual(Array.from(s.finalNorm), Array.from(w.finalNorm));
  assert.notEqual(s.layers[0].wq, w.layers[0].wq, "a copy, not the caller's array");
});
