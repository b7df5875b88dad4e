import assert from "node:assert/strict";
import { loadTokenizer } from "../model/tokenizer.ts";
import { awqCalibrationBlocks, concatBlocks } from "./awq_calibration.ts";
import { SHARED_DATA, sharedData } from "./testing.ts";

Deno.test("concatBlocks() keeps the first nsamples texts of 1..blockSize tokens and cuts ⌊Σ / blockSize⌋ blocks", async () => {
  const r = await concatBlocks([[1, 2], [1, 3, 4], [], [1, 5], [1], [1, 6]], 3, 2);
  // [1, 3, 4] (3 > 2) and [] are skipped; [1, 6] is never read: 3 texts were kept.
  assert.deepEqual(r.blocks.map((b) => Array.from(b)), [[1, 2], [1, 5]]);
  assert.equal(r.kept, 3);
  assert.equal(r.read, 5);
  assert.equal(r.tokens, 5);
  assert.deepEqual((await concatBlocks([[1]], 4, 2)).blocks, []);
});

Deno.test("awqCalibrationBlocks() on the C4 proxy with the stories260K tokenizer: 128 texts make 69 blocks of 512", async () => {
  const tokenizer = await loadTokenizer(sharedData("stories260K/tok512.model"));
  const opts = {
    source: "c4" as const,
    nsamples: 128,
    seqlen: 512,
    seed: 0,
    dataDir: SHARED_DATA,
    tokenizer,
    offline: true,
  };
  const set = await awqCalibrationBlocks(opts);
  assert.equal(set.windows.length, 69);
  assert.ok(set.windows.every((w) => w.length === 512));
  assert.equal(set.windows[0][0], 1, "the first text starts with BOS");
  assert.match(set.source, /docs 1100\.\.1999 of c4\/c4-validation-2k\.json\.gz in order/);
  assert.match(set.source, /the first 128 texts of ≤ 512 tokens/);
  const again = await awqCalibrationBlocks({ ...opts, seed: 7 });
  assert.deepEqual(again.windows, set.windows, "the seed does not enter");
  await assert.rejects(
    () => awqCalibrationBlocks({ ...opts, source: "tinystories", nsamples: 1, seqlen: 4096 }),
    /AWQ calibration \(tinystories: .*\): 1 texts of ≤ 4096 tokens give \d+ tokens, less than one block of 4096; raise --nsamples/,
  );
});
