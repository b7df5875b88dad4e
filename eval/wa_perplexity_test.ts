/**
 * The CPU evaluation of a weight × activation model on stories260K (RTN
 * W4A8 and W2*A8, first 4 windows of 128 tokens of TinyStories): with the
 * model's packed linears every linear is quant/wa_int.ts's integer product
 * (the same on worker threads and block by block from the file), close to
 * but not equal to fake quantization; SqueezeLLM's lookup tables keep fake
 * quantization.
 */
import assert from "node:assert/strict";
import { perplexity } from "./perplexity.ts";
import { perplexityBlockwise } from "./perplexity_blockwise.ts";
import { quantizeModel } from "./pipeline.ts";
import { evalSet, quantContext, weights } from "./_ppl_testing.ts";
import { defaultSpec, saveQuantized } from "../quant/methods.ts";
import { openQuantizedModel } from "../quant/qmodel.ts";
import { tempDir } from "../datasets/_testing.ts";

const set = await evalSet("tinystories", 128);
const ctx = await quantContext("stories260K-test");
const OPTS = { seqlen: 128, limit: 4 };

Deno.test("perplexity() with the packed linears: integer W×A products, close to fake quantization, equal on 2 workers and block by block from the file", async () => {
  for (const [bits, bitBalance] of [[4, false], [2, true]] as const) {
    const q = await quantizeModel(
      weights,
      { ...defaultSpec("rtn", bits), abits: 8, bitBalance },
      ctx,
    );
    const act = { ...OPTS, actQuant: q.actQuant };
    const int = await perplexity(q.weights, set.tokens, { ...act, linears: q.linears });
    const fake = await perplexity(q.weights, set.tokens, act);
    const rel = Math.abs(int.ppl - fake.ppl) / fake.ppl;
    console.log(`${q.variantName}: integer ${int.ppl}, fake quant ${fake.ppl}, relative ${rel}`);
    assert.notEqual(int.ppl, fake.ppl, "the f32 sums of fake quantization differ");
    assert.ok(rel < 1e-2, `${q.variantName}: ${rel}`);
    if (bits === 4) {
      const two = await perplexity(q.weights, set.tokens, {
        ...act,
        linears: q.linears,
        workers: 2,
      });
      assert.deepEqual(two.windowNll, int.windowNll);
    }
    await using tmp = await tempDir("sqb-wa-ppl-");
    await saveQuantized(`${tmp.path}/m.sqbq`, q, { path: "stories260K.bin", sha256: "0" });
    using file = openQuantizedModel(`${tmp.path}/m.sqbq`);
    const blockwise = await perplexityBlockwise(file, set.tokens, { ...act, chunk: 3 });
    assert.deepEqual(blockwise.windowNll, int.windowNll);
  }
});

Deno.test("perplexity() of SqueezeLLM (lookup tables) with quantized activations is fake quantization, linears given or not", async () => {
  const q = await quantizeModel(
    weights,
    {
      ...defaultSpec("squeezellm", 3),
      abits: 8,
      fisherSamples: 2,
      calib: { source: "tinystories", seqlen: 128, seed: 0 },
    },
    ctx,
  );
  const act = { ...OPTS, actQuant: q.actQuant };
  const withLinears = await perplexity(q.weights, set.tokens, { ...act, linears: q.linears });
  assert.equal(withLinears.ppl, (await perplexity(q.weights, set.tokens, act)).ppl);
});
