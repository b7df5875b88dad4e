import assert from "node:assert/strict";
import {
  checkWindowLoss,
  NonFinitePerplexityError,
  perplexity,
  perplexityResult,
  windowLoss,
  windowPlan,
} from "./perplexity.ts";
import { gpuPerplexity } from "./gpu_perplexity.ts";
import type { GpuDecoder } from "../kernels/decode.ts";
import { ReferenceDecoder } from "../model/reference.ts";
import { randomWeights, tinyConfig } from "../model/random.ts";
import { PROTOCOL_SEQLEN, protocolSeqlen } from "../model/config.ts";

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

Deno.test("perplexity() cuts windows of the protocol's 2048 tokens from a model trained on 4096 (LLaMA-2), as llama.py's model.seqlen", async () => {
  const long = randomWeights(tinyConfig({ vocabSize: 23, maxSeqLen: 4096, nLayers: 1 }), 12);
  const text = Int32Array.from({ length: 4096 + 100 }, (_, i) => (i * 7 + 3) % 23);
  const r = await perplexity(long, text);
  assert.equal(r.seqlen, 2048);
  assert.equal(r.windows, 2); // 4196 tokens: two windows of 2048, one of 4096 would be one
  assert.equal(protocolSeqlen(long.config), PROTOCOL_SEQLEN);
  assert.equal(protocolSeqlen(config), 8); // a shorter model keeps its own length
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

Deno.test("perplexity() throws NonFinitePerplexityError naming the model and window for a 1e30 norm weight, on 0 and 2 workers", async () => {
  const huge = randomWeights(config, 11);
  huge.finalNorm[0] = 1e30; // finite, but the logits' loss overflows exp: ppl would be Infinity
  for (const workers of [0, 2]) {
    await assert.rejects(
      perplexity(huge, tokens, { seqlen: 8, workers, label: "tiny fp32" }),
      (e: Error) => {
        assert.ok(e instanceof NonFinitePerplexityError, `${workers} workers: ${e}`);
        assert.equal(e.window, 0);
        assert.equal(e.model, "tiny fp32");
        assert.match(
          e.message,
          /^perplexity of tiny fp32 is not finite: window 0 has a mean loss of [\d.]+e\+\d+ nats per token over tokens 0\.\.7, whose exp overflows to Infinity/,
        );
        return true;
      },
    );
  }
  const nan = randomWeights(config, 11);
  nan.layers[0].attnNorm[3] = 1e30; // overflows inside the block: NaN logits
  await assert.rejects(
    perplexity(nan, tokens, { seqlen: 8, workers: 2 }),
    /perplexity of the model is not finite: window 0 has a non-finite loss \(NaN\) over tokens 0\.\.7/,
  );
});

Deno.test("perplexityResult() refuses a window whose loss is NaN, infinite or overflows exp, naming the first", () => {
  const ok = perplexityResult(new Float64Array([8, 16]), 8, 2, 0, "m");
  assert.equal(ok.ppl, Math.exp(24 / 16));
  for (const bad of [NaN, Infinity, 8 * 710]) {
    assert.throws(
      () => perplexityResult(new Float64Array([8, bad, NaN]), 8, 3, 0, "m.sqbq"),
      (e: Error) =>
        e instanceof NonFinitePerplexityError && e.window === 1 &&
        /^perplexity of m\.sqbq/.test(e.message),
      String(bad),
    );
  }
  assert.equal(checkWindowLoss(709, 0, 8), 709, "exp(709) is finite");
});

Deno.test("gpuPerplexity() throws NonFinitePerplexityError when the kernels return NaN or overflowing logits", async () => {
  for (
    const [value, re] of [[NaN, /non-finite loss \(NaN\)/], [1e30, /whose exp overflows/]] as const
  ) {
    const dec = {
      config,
      reset() {},
      forward: (win: ArrayLike<number>) => {
        const logits = new Float32Array(win.length * config.vocabSize);
        logits[config.vocabSize * 3 + 1] = value; // one bad logit at position 3
        return Promise.resolve(logits);
      },
    } as unknown as GpuDecoder;
    await assert.rejects(
      gpuPerplexity(dec, tokens, { seqlen: 8, label: "tiny rtn.w3" }),
      (e: Error) => {
        assert.ok(e instanceof NonFinitePerplexityError, String(e));
        assert.match(e.message, /^perplexity of tiny rtn\.w3 is not finite: window 0 /);
        assert.match(e.message, re);
        assert.match(e.message, /the kernels produced/);
        return true;
      },
    );
  }
});
