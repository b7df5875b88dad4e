import assert from "node:assert/strict";
import { memoryWeightSource } from "../model/weight_source.ts";
import { openHfWeights } from "../model/hf.ts";
import { writeHfCheckpoint } from "../model/_convert_testing.ts";
import { sharedData } from "../datasets/testing.ts";
import { tempDir } from "../datasets/_testing.ts";
import { evalSet, quantContext, weights } from "./_ppl_testing.ts";
import { quantizeModel } from "./pipeline.ts";
import { defaultSpec, saveQuantized } from "../quant/methods.ts";
import { openQuantizedModel } from "../quant/qmodel.ts";
import { perplexity } from "./perplexity.ts";
import { perplexityBlockwise } from "./perplexity_blockwise.ts";
import { cli } from "./cli/_testing.ts";

const set = await evalSet("tinystories", 128);

Deno.test("perplexityBlockwise() gives perplexity()'s window nll bit for bit, in any chunk, with activation quantization", async () => {
  for (const actQuant of [null, { abits: 4, kvBits: 6, bitBalance: false }]) {
    const whole = await perplexity(weights, set.tokens, { seqlen: 128, limit: 5, actQuant });
    for (const chunk of [1, 3, 8]) {
      const r = await perplexityBlockwise(memoryWeightSource(weights), set.tokens, {
        seqlen: 128,
        limit: 5,
        chunk,
        actQuant,
      });
      assert.deepEqual(r.windowNll, whole.windowNll, `chunk ${chunk}, ${JSON.stringify(actQuant)}`);
      assert.equal(r.ppl, whole.ppl);
    }
  }
});

Deno.test("perplexityBlockwise() on workers gives the single thread's window nll bit for bit, each block read once per chunk", async () => {
  for (const actQuant of [null, { abits: 4, kvBits: 6, bitBalance: false }]) {
    const one = await perplexityBlockwise(memoryWeightSource(weights), set.tokens, {
      seqlen: 128,
      limit: 7,
      chunk: 4,
      actQuant,
    });
    const shapes = actQuant ? [[2, 3]] : [[2, 4], [2, 3], [3, 2], [2, 1]]; // [workers, chunk]
    for (const [workers, chunk] of shapes) {
      const read: number[] = [];
      const src = memoryWeightSource(weights);
      const counting = { ...src, layer: (l: number) => (read.push(l), src.layer(l)) };
      const progress: number[] = [];
      const r = await perplexityBlockwise(counting, set.tokens, {
        seqlen: 128,
        limit: 7,
        chunk,
        workers,
        actQuant,
        onProgress: (done) => progress.push(done),
      });
      const label = `${workers} workers, chunk ${chunk}, ${JSON.stringify(actQuant)}`;
      assert.deepEqual(r.windowNll, one.windowNll, label);
      assert.equal(r.ppl, one.ppl, label);
      const chunks = Math.ceil(7 / chunk);
      assert.deepEqual(read, Array.from({ length: chunks * 5 }, (_, i) => i % 5), label);
      assert.deepEqual(
        progress,
        Array.from({ length: chunks }, (_, i) => Math.min(7, (i + 1) * chunk)),
      );
    }
  }
});

Deno.test("perplexityBlockwise() on workers, of a quantized file with quantized activations (integer W×A linears), equals perplexity() of the loaded model", async () => {
  const q = await quantizeModel(
    weights,
    { ...defaultSpec("rtn", 4), abits: 8 },
    await quantContext("stories260K-test"),
  );
  const opts = { seqlen: 128, limit: 5, actQuant: q.actQuant };
  const loaded = await perplexity(q.weights, set.tokens, { ...opts, linears: q.linears });
  await using tmp = await tempDir("sqb-ppl-blockwise-int-");
  await saveQuantized(`${tmp.path}/m.sqbq`, q, { path: "stories260K.bin", sha256: "0" });
  using file = openQuantizedModel(`${tmp.path}/m.sqbq`);
  for (const workers of [0, 2]) {
    const r = await perplexityBlockwise(file, set.tokens, { ...opts, chunk: 3, workers });
    assert.deepEqual(r.windowNll, loaded.windowNll, `${workers} workers`);
  }
});

Deno.test("perplexityBlockwise() on workers fails with the error of a bad token or an unreadable block, and stops", async () => {
  const bad = set.tokens.slice(0, 5 * 128);
  bad[3 * 128 + 7] = 100000;
  await assert.rejects(
    () =>
      perplexityBlockwise(memoryWeightSource(weights), bad, { seqlen: 128, chunk: 4, workers: 2 }),
    (e: Error) =>
      e instanceof RangeError &&
      /token 100000 at position 7 is outside the vocabulary/.test(e.message),
  );
  class ReadError extends Error {}
  const src = memoryWeightSource(weights);
  const broken = {
    ...src,
    layer(l: number) {
      if (l === 3) throw new ReadError("block 3 is unreadable");
      return src.layer(l);
    },
  };
  await assert.rejects(
    () => perplexityBlockwise(broken, set.tokens, { seqlen: 128, limit: 4, chunk: 4, workers: 2 }),
    (e: Error) => e instanceof ReadError && e.message === "block 3 is unreadable",
  );
  await assert.rejects(
    () => perplexityBlockwise(src, set.tokens, { seqlen: 128, workers: -1 }),
    /workers must be an integer ≥ 0, got -1/,
  );
});

Deno.test("perplexityBlockwise() reads an fp16 checkpoint one block at a time with its whole-model perplexity", async () => {
  await using tmp = await tempDir("sqb-ppl-blockwise-");
  await writeHfCheckpoint(tmp.path, weights, { dtype: "F16" });
  using src = await openHfWeights(tmp.path);
  const read: number[] = [];
  const counting = {
    ...src,
    layer(l: number) {
      read.push(l);
      return src.layer(l);
    },
  };
  const r = await perplexityBlockwise(counting, set.tokens, { seqlen: 128, limit: 4, chunk: 2 });
  assert.deepEqual(read, [0, 1, 2, 3, 4, 0, 1, 2, 3, 4], "each block read once per chunk");
  const { loadHfModel } = await import("../model/hf.ts");
  const whole = await perplexity((await loadHfModel(tmp.path)).weights, set.tokens, {
    seqlen: 128,
    limit: 4,
  });
  assert.deepEqual(r.windowNll, whole.windowNll);
});

Deno.test("ppl --blockwise refuses --method and --store, naming what to do", async () => {
  const base = ["ppl", "--data-dir", sharedData(""), "--blockwise", "--limit", "1"];
  const m = await cli(...base, "--method", "rtn", "--bits", "4");
  assert.equal(m.code, 2);
  assert.match(m.err, /--blockwise does not take --method: quantize block by block first/);
  const s = await cli(...base, "--store", "/tmp/x.duckdb");
  assert.equal(s.code, 2);
  assert.match(s.err, /--blockwise does not take --store/);
});

Deno.test("ppl refuses a model whose fp32 weights exceed the machine's memory, naming what runs block by block", async () => {
  await using tmp = await tempDir("sqb-ppl-too-big-");
  await writeHfCheckpoint(tmp.path, weights, {
    files: { "tokenizer.model": await Deno.readFile(sharedData("stories260K/tok512.model")) },
  });
  const config = JSON.parse(await Deno.readTextFile(`${tmp.path}/config.json`));
  const huge = { ...config, hidden_size: 65536, intermediate_size: 262144, num_hidden_layers: 200 };
  huge.num_attention_heads = huge.num_key_value_heads = 512;
  await Deno.writeTextFile(`${tmp.path}/config.json`, JSON.stringify(huge));
  const r = await cli("ppl", "--model", tmp.path, "--data-dir", sharedData(""), "--limit", "1");
  assert.equal(r.code, 2, r.err);
  assert.match(
    r.err,
    /needs [\d.]+ GB in fp32, more than this machine's [\d.]+ GB of memory; what runs block by block: quantize --method rtn \| gptq \| awq \| squeezellm .* ppl --blockwise .* eval --blockwise/,
  );
});
