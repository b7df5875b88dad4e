import assert from "node:assert/strict";
import { perplexity, windowLoss, windowPlan } from "./perplexity.ts";
import { ReferenceDecoder } from "../model/reference.ts";
import { randomWeights, tinyConfig } from "../model/random.ts";

const config = tinyConfig({ vocabSize: 23, maxSeqLen: 8 });
const weights = randomWeights(config, 11);
// 37 tokens: 4 windows of 8 and a dropped tail of 5, as GPTQ does.
const tokens = Int32Array.from({ length: 37 }, (_, i) => (i * 7 + 3) % 23);

/** exp(mean over windows and positions of −log p(next)), straight from the definition. */
function bruteForce(seqlen: number, windows: number): number {
  let nll = 0;
  for (let w = 0; w < windows; w++) {
    const dec = new ReferenceDecoder(weights);
    let win = 0;
    for (let t = 0; t < seqlen - 1; t++) {
      const logits = dec.step(tokens[w * seqlen + t]);
      const z = Math.log(logits.reduce((s, l) => s + Math.exp(l), 0));
      win += z - logits[tokens[w * seqlen + t + 1]];
    }
    nll += (win / (seqlen - 1)) * seqlen; // GPTQ: mean loss × seqlen per window
  }
  return Math.exp(nll / (windows * seqlen));
}

Deno.test("perplexity() equals a brute-force computation of GPTQ's formula", async () => {
  const r = await perplexity(weights, tokens, { seqlen: 8 });
  assert.equal(r.windows, 4);
  assert.equal(r.tokens, 32);
  assert.ok(Math.abs(r.ppl - bruteForce(8, 4)) / r.ppl < 1e-5, `${r.ppl} vs ${bruteForce(8, 4)}`);
  const limited = await perplexity(weights, tokens, { seqlen: 8, limit: 2 });
  assert.equal(limited.windows, 2);
  assert.equal(limited.windowsAvailable, 4);
  assert.ok(Math.abs(limited.ppl - bruteForce(8, 2)) / limited.ppl < 1e-5);
});

Deno.test("perplexity() gives identical numbers on 0 and 2 worker threads", async () => {
  const a = await perplexity(weights, tokens, { seqlen: 6 });
  const b = await perplexity(weights, tokens, { seqlen: 6, workers: 2 });
  assert.equal(a.ppl, b.ppl);
  assert.deepEqual(a.windowNll, b.windowNll);
});

Deno.test("windowLoss() is stable for huge logits and uniform logits give log(vocab)", () => {
  const V = 4;
  const logits = new Float32Array([1e4, 0, 0, 0, 0, 0, 0, 0]);
  assert.ok(Math.abs(windowLoss(logits, [0, 0], V) - 0) < 1e-9);
  assert.ok(Math.abs(windowLoss(new Float32Array(8), [0, 2], V) - Math.log(4)) < 1e-12);
});

Deno.test("windowPlan() rejects a seqlen beyond the model, too little text and a bad --limit", () => {
  assert.throws(
    () => windowPlan(100, 16, undefined, 8),
    /--seqlen 16 exceeds the model's max_seq_len 8/,
  );
  assert.throws(() => windowPlan(5, 8, undefined, 8), /has 5 tokens, fewer than one window of 8/);
  assert.throws(() => windowPlan(100, 8, 0, 8), /--limit must be a positive integer/);
  assert.deepEqual(windowPlan(100, 8, 50, 8), { windows: 12, available: 12 });
});

Deno.test("perplexity() refuses NaN weights with a clear error instead of a NaN result", async () => {
  const bad = randomWeights(config, 11);
  bad.layers[1].w2.fill(NaN);
  await assert.rejects(perplexity(bad, tokens, { seqlen: 8 }), /window 0 has a non-finite loss/);
});
