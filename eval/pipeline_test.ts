import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { loadCheckpoint } from "../model/checkpoint.ts";
import type { LlamaWeights } from "../model/config.ts";
import { loadTokenizer } from "../model/tokenizer.ts";
import { loadEvalSet } from "../datasets/eval_sets.ts";
import { calibrationWindows } from "../datasets/calibration.ts";
import { perplexity } from "./perplexity.ts";
import { SHARED_DATA, sharedData } from "../datasets/testing.ts";
import { defaultSpec, loadQuantized, saveQuantized, variantName } from "../quant/methods.ts";
import { windowsSha256 } from "../quant/fisher_cache.ts";
import { type QuantContext, quantizeModel } from "./pipeline.ts";

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

Deno.test("quantizeModel() records the calibration's identity and keeps the Fisher cache in the cache dir", async () => {
  const spec = { ...defaultSpec("gptq", 3), calib: { ...defaultSpec("gptq", 3).calib } };
  spec.calib = { ...spec.calib, source: "tinystories", nsamples: 2, seqlen: 64 };
  const q = await quantizeModel(weights, spec, ctx);
  const file = "tinystories/tinystories-train-sample.txt";
  const bytes = await Deno.readFile(sharedData(file));
  const again = await calibrationWindows({
    source: "tinystories",
    nsamples: 2,
    seqlen: 64,
    seed: 0,
    dataDir: SHARED_DATA,
    tokenizer,
    offline: true,
  });
  assert.deepEqual(q.calibration, {
    source: "tinystories",
    file,
    fileSha256: createHash("sha256").update(bytes).digest("hex"),
    nsamples: 2,
    seqlen: 64,
    seed: 0,
    tokensSha256: windowsSha256(again.windows),
  });
  assert.match(q.calibrationText!, /^tinystories: .*; 2 windows of 64, seed 0$/);
  assert.equal(q.variantName, "gptq.w3");
  assert.equal(q.spec.method === "gptq" && q.spec.calib.seqlen, 64);

  const sq = { ...defaultSpec("squeezellm", 3), fisherSamples: 2 };
  sq.calib = { ...sq.calib, source: "tinystories", seqlen: 64 };
  const s = await quantizeModel(weights, sq, ctx);
  assert.equal(s.calibration?.nsamples, 2);
  const cached = [...Deno.readDirSync(`${cacheDir}/fisher`)].map((e) => e.name);
  assert.equal(cached.length, 1);
  assert.match(cached[0], /^fisher-[0-9a-f]{64}\.bin$/);
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
  assert.deepEqual(back.calibration, a.calibration);
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
    const spec = <M extends "gptq" | "awq">(method: M) => {
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
