import assert from "node:assert/strict";
import { loadCheckpoint } from "../model/checkpoint.ts";
import type { LlamaWeights } from "../model/config.ts";
import { loadTokenizer } from "../model/tokenizer.ts";
import { loadEvalSet } from "../datasets/eval_sets.ts";
import { perplexity } from "../eval/perplexity.ts";
import { SHARED_DATA, sharedData } from "../datasets/testing.ts";
import {
  defaultSpec,
  loadQuantized,
  type QuantContext,
  quantizeModel,
  resolveGroup,
  saveQuantized,
  variantName,
} from "./methods.ts";

const weights = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));
const tokenizer = await loadTokenizer(sharedData("stories260K/tok512.model"));
const cacheDir = await Deno.makeTempDir();
const ctx: QuantContext = {
  tokenizer,
  dataDir: SHARED_DATA,
  offline: true,
  modelKey: "stories260K-test",
  workers: 2,
  cacheDir,
};

/** Perplexity on TinyStories' validation text (seqlen 512; the first `limit` windows, or all). */
async function tinyStoriesPpl(w: LlamaWeights, limit?: number): Promise<number> {
  const set = await loadEvalSet("tinystories", {
    dataDir: SHARED_DATA,
    tokenizer,
    seqlen: 512,
    offline: true,
  });
  return (await perplexity(w, set.tokens, { seqlen: 512, limit, workers: 2 })).ppl;
}

Deno.test("variantName() carries the config; resolveGroup() names the valid groups", () => {
  assert.equal(variantName(defaultSpec("rtn", 3)), "rtn.w3");
  assert.equal(
    variantName({ ...defaultSpec("gptq", 4), groupSize: 128, actOrder: true }),
    "gptq.w4.g128.act",
  );
  assert.equal(
    variantName({ ...defaultSpec("squeezellm", 3), sensitivePct: 0.05, outlierPct: 0.4 }),
    "squeezellm.w3.s0.45",
  );
  assert.throws(() => defaultSpec("rtn", 9), /--bits must be an integer from 2 to 8, got 9/);
  const c = weights.config;
  assert.equal(resolveGroup({ ...defaultSpec("rtn", 3), groupSize: 4 }, c, true), 4);
  assert.equal(resolveGroup(defaultSpec("awq", 3), c, false), null); // 128 does not divide 64, 172
  assert.throws(
    () => resolveGroup({ ...defaultSpec("rtn", 3), groupSize: 32 }, c, true),
    /--group 32 does not divide every layer's input width \(64, 172\); valid groups for this model: 1, 2, 4/,
  );
});

Deno.test("quantizeModel() is deterministic and its file round-trips to the same weights", async () => {
  const spec = {
    ...defaultSpec("squeezellm", 3),
    sensitivePct: 0.05,
    outlierPct: 0.4,
    fisherSamples: 4,
  };
  spec.calib.source = "tinystories";
  const a = await quantizeModel(weights, spec, ctx);
  const b = await quantizeModel(weights, spec, { ...ctx, workers: 0 });
  assert.deepEqual(a.weights.layers, b.weights.layers);
  assert.ok(Number(a.details.sparseNnz) > 0);
  const path = `${cacheDir}/m.sqbq`;
  await saveQuantized(path, a, { path: "stories260K.bin", sha256: "x" });
  const back = await loadQuantized(path);
  assert.deepEqual(back.weights.layers, a.weights.layers);
  assert.equal(back.avgBits, a.avgBits);
  assert.equal(variantName(back.spec), "squeezellm.w3.s0.45");
});

Deno.test({
  name:
    "stories260K at 3 bits on the full TinyStories set: SqueezeLLM beats RTN, and 0.45% sparse helps",
  async fn() {
    const ppl = (w: LlamaWeights) => tinyStoriesPpl(w);
    const sq = (over: object) => {
      // 16 Fisher windows (the official default is 100) keep this test within CI's time.
      const s = { ...defaultSpec("squeezellm", 3), fisherSamples: 16, ...over };
      s.calib = { ...s.calib, source: "tinystories" };
      return quantizeModel(weights, s, ctx);
    };
    const rtn = await quantizeModel(weights, defaultSpec("rtn", 3), ctx);
    const dense = await sq({});
    const sparse = await sq({ sensitivePct: 0.05, outlierPct: 0.4 });
    const [pRtn, pDense, pSparse] = [
      await ppl(rtn.weights),
      await ppl(dense.weights),
      await ppl(sparse.weights),
    ];
    console.log(
      `TinyStories ppl at 3 bits: RTN ${pRtn.toFixed(3)}, SqueezeLLM ${pDense.toFixed(3)}, 0.45% ${
        pSparse.toFixed(3)
      }`,
    );
    assert.ok(pDense < pRtn, `SqueezeLLM ${pDense} vs RTN ${pRtn}`);
    assert.ok(pSparse <= pDense, `0.45% ${pSparse} vs dense-only ${pDense}`);
  },
});

Deno.test({
  name: "stories260K at 3 bits per row on TinyStories: GPTQ beats RTN and AWQ is no worse than RTN",
  async fn() {
    const ppl = (w: LlamaWeights) => tinyStoriesPpl(w, 64);
    // 32 calibration windows of 512 from the TinyStories train sample (GPTQ's default is 128).
    const spec = (method: "gptq" | "awq") => {
      const s = { ...defaultSpec(method, 3), groupSize: null };
      s.calib = { ...s.calib, source: "tinystories" as const, nsamples: 32 };
      return s;
    };
    const rtn = await quantizeModel(weights, defaultSpec("rtn", 3), ctx);
    const gptq = await quantizeModel(weights, spec("gptq"), ctx);
    const awq = await quantizeModel(weights, spec("awq"), ctx);
    const [pRtn, pGptq, pAwq] = [
      await ppl(rtn.weights),
      await ppl(gptq.weights),
      await ppl(awq.weights),
    ];
    console.log(
      `TinyStories ppl (first 64 windows) at 3 bits: RTN ${pRtn.toFixed(3)}, GPTQ ${
        pGptq.toFixed(3)
      }, AWQ ${pAwq.toFixed(3)}`,
    );
    assert.ok(pGptq < pRtn, `GPTQ ${pGptq} vs RTN ${pRtn}`);
    assert.ok(pAwq <= pRtn, `AWQ ${pAwq} vs RTN ${pRtn}`);
    assert.equal(
      (awq.details.stats as { skipped: unknown[] }).skipped.length,
      5,
      "GQA: wv→wo is skipped in every block",
    );
    const again = await quantizeModel(weights, spec("gptq"), ctx);
    assert.deepEqual(again.weights.layers, gptq.weights.layers, "same seed, same GPTQ model");
  },
});
