import assert from "node:assert/strict";
import {
  CheckpointError,
  loadCheckpoint,
  parseCheckpoint,
  serializeLegacy,
  serializeV1,
} from "./checkpoint.ts";
import { randomWeights, tinyConfig } from "./random.ts";
import { sharedData } from "../datasets/testing.ts";

const STORIES = sharedData("stories260K/stories260K.bin");
const tiny = tinyConfig({
  dim: 8,
  hiddenDim: 12,
  nHeads: 2,
  nKvHeads: 1,
  vocabSize: 11,
  maxSeqLen: 6,
  sharedClassifier: false,
});

Deno.test("loadCheckpoint() reads stories260K's legacy header and all 260,032 parameters", async () => {
  const w = await loadCheckpoint(STORIES);
  assert.deepEqual(
    { ...w.config },
    {
      dim: 64,
      hiddenDim: 172,
      nLayers: 5,
      nHeads: 8,
      nKvHeads: 4,
      vocabSize: 512,
      maxSeqLen: 512,
      sharedClassifier: true,
      normEps: 1e-5,
      ropeTheta: 10000,
    },
  );
  const linears = w.layers.reduce(
    (s, l) =>
      s + l.wq.length + l.wk.length + l.wv.length + l.wo.length + l.w1.length + l.w2.length +
      l.w3.length +
      l.attnNorm.length + l.ffnNorm.length,
    0,
  );
  assert.equal(linears + w.tokenEmbedding.length + w.finalNorm.length, 260_032);
  assert.equal(w.classifier, w.tokenEmbedding);
});

Deno.test("parseCheckpoint() round-trips the legacy and version-1 formats, shared or separate classifier", () => {
  for (const shared of [true, false]) {
    const w = randomWeights({ ...tiny, sharedClassifier: shared }, 3);
    for (const bytes of [serializeLegacy(w), serializeV1(w)]) {
      const r = parseCheckpoint(bytes, "tiny.bin");
      assert.deepEqual(r.config, w.config);
      assert.deepEqual(r.layers[1].w2, w.layers[1].w2);
      assert.deepEqual(r.classifier, w.classifier);
      assert.equal(r.classifier === r.tokenEmbedding, shared);
    }
  }
});

Deno.test("parseCheckpoint() rejects a truncated file, naming the file and both byte counts", () => {
  const bytes = serializeLegacy(randomWeights(tiny, 1));
  const cut = bytes.subarray(0, bytes.length - 10);
  assert.throws(() => parseCheckpoint(cut, "cut.bin"), (e: Error) => {
    assert.ok(e instanceof CheckpointError);
    assert.match(e.message, /cut\.bin/);
    assert.match(
      e.message,
      new RegExp(`needs ${bytes.length} bytes, file has ${bytes.length - 10} \\(truncated\\)`),
    );
    return true;
  });
});

Deno.test("parseCheckpoint() rejects trailing bytes and a header that claims more than the file has", () => {
  const bytes = serializeLegacy(randomWeights(tiny, 1));
  const padded = new Uint8Array(bytes.length + 4);
  padded.set(bytes);
  assert.throws(() => parseCheckpoint(padded, "pad.bin"), /pad\.bin.*trailing bytes/);
  const big = bytes.slice();
  new DataView(big.buffer).setInt32(8, 40, true); // n_layers 2 → 40
  assert.throws(() => parseCheckpoint(big, "big.bin"), /big\.bin.*truncated/);
});

Deno.test("parseCheckpoint() rejects zero or negative dims, a wrong version and tiny files", () => {
  const bytes = serializeLegacy(randomWeights(tiny, 1));
  for (const [field, value] of [[0, 0], [1, -5], [3, 0], [6, -1]]) {
    const b = bytes.slice();
    new DataView(b.buffer).setInt32(field * 4, value, true);
    assert.throws(() => parseCheckpoint(b, "bad.bin"), /bad\.bin.*must be a positive integer/);
  }
  const v1 = serializeV1(randomWeights(tiny, 1));
  new DataView(v1.buffer).setInt32(4, 2, true);
  assert.throws(() => parseCheckpoint(v1, "v2.bin"), /v2\.bin: version 2 is not supported/);
  assert.throws(() => parseCheckpoint(new Uint8Array(5), "short.bin"), /short\.bin.*too short/);
});

Deno.test("parseCheckpoint() rejects NaN weights, naming the tensor", () => {
  const w = randomWeights(tiny, 1);
  w.layers[0].w3[4] = NaN;
  assert.throws(
    () => parseCheckpoint(serializeLegacy(w), "nan.bin"),
    /nan\.bin: tensor w3 has a non-finite value/,
  );
});

Deno.test("loadCheckpoint() names a missing file", async () => {
  await assert.rejects(
    loadCheckpoint("/nonexistent/model.bin"),
    /\/nonexistent\/model\.bin: file not found/,
  );
});
