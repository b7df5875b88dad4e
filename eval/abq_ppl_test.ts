import assert from "node:assert/strict";
import { quantizeModel } from "./pipeline.ts";
import { evalSet, pplOf, quantContext, weights } from "./_ppl_testing.ts";
import {
  defaultSpec,
  loadQuantized,
  type QuantSpec,
  resolveSpec,
  saveQuantized,
} from "../quant/methods.ts";

// stories260K on the first 4 windows of 512 of TinyStories' validation text. ABQ kept fast:
// 8 calibration windows of 128 tokens (the default source, C4), 2 epochs per block
// (the official setting is 128 windows of max_seq_len and 20 epochs: eval/bench, README).
const set = await evalSet("tinystories", 512);
const ctx = await quantContext("stories260K-test");
const FAST = { epochs: 2, calib: { source: "c4" as const, nsamples: 8, seqlen: 128, seed: 2 } };

Deno.test("stories260K ABQ W3A16 (8 windows of 128, 2 epochs) is below RTN W3A16 on TinyStories, and its file round-trips", async () => {
  const spec: QuantSpec = { ...defaultSpec("abq", 3), ...FAST };
  const abq = await quantizeModel(weights, spec, ctx);
  assert.equal(abq.variantName, "abq.w3");
  const rtn = await quantizeModel(weights, defaultSpec("rtn", 3), ctx);
  const [pa, pr] = [await pplOf(set, abq), await pplOf(set, rtn)];
  console.log({ abqW3A16: pa, rtnW3A16: pr });
  assert.ok(pa < pr, `ABQ W3A16 ${pa} should be below RTN W3A16 ${pr}`);
  const dir = await Deno.makeTempDir();
  try {
    await saveQuantized(`${dir}/m.sqbq`, abq, { path: "stories260K.bin", sha256: "0" });
    const back = await loadQuantized(`${dir}/m.sqbq`);
    assert.deepEqual(back.spec, abq.spec);
    assert.equal(await pplOf(set, back), pa);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("abq spec: seed 2, bit balance on at 2 bits (w2*), --no-bit-balance kept, W4A8 names", () => {
  const c = weights.config;
  const w2 = resolveSpec(defaultSpec("abq", 2), c);
  assert.equal(w2.calib.seed, 2);
  assert.equal(w2.bitBalance, true);
  const plain = resolveSpec({ ...defaultSpec("abq", 2), bitBalance: false }, c);
  assert.equal(plain.bitBalance, false);
  assert.deepEqual(resolveSpec(plain, c), plain);
  const w4a8 = resolveSpec({ ...defaultSpec("abq", 4), abits: 8 }, c);
  assert.equal(w4a8.abits, 8);
  assert.equal(w4a8.epochs, null);
});
