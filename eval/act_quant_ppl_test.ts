import assert from "node:assert/strict";
import { perplexity } from "./perplexity.ts";
import { quantizeModel } from "./pipeline.ts";
import { evalSet, LIMIT, pplOf, quantContext, weights } from "./_ppl_testing.ts";
import {
  defaultSpec,
  loadQuantized,
  type QuantizedModel,
  type QuantSpec,
  saveQuantized,
} from "../quant/methods.ts";

// stories260K on the first 4 windows of 512 of TinyStories' validation text.
const set = await evalSet("tinystories", 512);
const ctx = await quantContext("stories260K-test");

async function quantPpl(spec: QuantSpec): Promise<[QuantizedModel, number]> {
  const q = await quantizeModel(weights, spec, ctx);
  return [q, await pplOf(set, q)];
}

Deno.test("stories260K RTN: W8A8 is close to W8A16, W4A4 worse than W4A8 worse than W4A16; same on 2 workers", async () => {
  const [w8, p8] = await quantPpl(defaultSpec("rtn", 8));
  assert.equal(w8.actQuant, null);
  const [w8a8, p8a8] = await quantPpl({ ...defaultSpec("rtn", 8), abits: 8 });
  assert.deepEqual(w8a8.actQuant, { abits: 8, kvBits: 8, bitBalance: false });
  assert.equal(w8a8.variantName, "rtn.w8a8");
  const [, p4] = await quantPpl(defaultSpec("rtn", 4));
  const [w4a8, p4a8] = await quantPpl({ ...defaultSpec("rtn", 4), abits: 8 });
  const [, p4a4] = await quantPpl({ ...defaultSpec("rtn", 4), abits: 4 });
  console.log({ p8, p8a8, p4, p4a8, p4a4 });
  assert.notEqual(p8a8, p8, "activation quantization is applied");
  assert.ok(Math.abs(p8a8 - p8) / p8 < 0.01, `W8A8 ${p8a8} vs W8A16 ${p8}`);
  assert.ok(p4a8 !== p4 && Math.abs(p4a8 - p4) / p4 < 0.02, `W4A8 ${p4a8} vs W4A16 ${p4}`);
  assert.ok(p4a4 > p4a8 * 1.05, `W4A4 ${p4a4} should be clearly worse than W4A8 ${p4a8}`);
  // the config travels to the workers: identical numbers on 2 threads
  assert.equal(await pplOf(set, w4a8, 2), p4a8);
  // K/V only at 4 bits sits between
  const [, p4kv4] = await quantPpl({ ...defaultSpec("rtn", 4), kvBits: 4 });
  assert.ok(p4kv4 > p4 && p4kv4 < p4a4, `W4 KV4 ${p4kv4}`);
});

Deno.test("a quantized file keeps abits, kvBits and bit balance: ppl --quantized evaluates with them", async () => {
  const spec: QuantSpec = { ...defaultSpec("rtn", 2), abits: 6, kvBits: 8, bitBalance: true };
  const q = await quantizeModel(weights, spec, ctx);
  assert.equal(q.variantName, "rtn.w2*a6kv8");
  const dir = await Deno.makeTempDir();
  try {
    await saveQuantized(`${dir}/m.sqbq`, q, { path: "stories260K.bin", sha256: "0" });
    const back = await loadQuantized(`${dir}/m.sqbq`);
    assert.deepEqual(back.spec, q.spec);
    assert.deepEqual(back.actQuant, { abits: 6, kvBits: 8, bitBalance: true });
    assert.equal(back.variantName, "rtn.w2*a6kv8");
    assert.equal(back.avgBits, q.avgBits);
    assert.equal(await pplOf(set, back), await pplOf(set, q));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("stories260K SmoothQuant: W8A8 close to fp32, W4A4 worse", async () => {
  const calib = { source: "tinystories" as const, nsamples: 8, seqlen: 256, seed: 0 };
  const fp = (await perplexity(weights, set.tokens, { seqlen: 512, limit: LIMIT })).ppl;
  const [sq8, p8] = await quantPpl({ ...defaultSpec("smoothquant", 8), abits: 8, calib });
  assert.equal(sq8.variantName, "smoothquant.w8a8");
  assert.ok(Math.abs(p8 - fp) / fp < 0.01, `SmoothQuant W8A8 ${p8} vs fp32 ${fp}`);
  const [, p4] = await quantPpl({ ...defaultSpec("smoothquant", 4), abits: 4, calib });
  const [, r4] = await quantPpl({ ...defaultSpec("rtn", 4), abits: 4 });
  console.log({ fp, smoothquantW8A8: p8, smoothquantW4A4: p4, rtnW4A4: r4 });
  assert.ok(Number.isFinite(p4) && p4 > p8, `W4A4 ${p4}`);
});
