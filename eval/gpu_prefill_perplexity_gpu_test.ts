/**
 * GPU prefill perplexity (kernels/prefill.ts through eval/gpu_perplexity.ts's
 * gpuPrefillPerplexity) equals the CPU perplexity of eval/perplexity.ts
 * within 1e-4 relative, per window and overall, on stories260K for fp32 and
 * real RTN, GPTQ act-order (groups of 4, the only size dividing 64 and 172 but 1, 2: a gIdx table), AWQ and SqueezeLLM
 * with 0.45 % sparse models, on WikiText-2 and TinyStories.
 *
 * Windows: the first 6 windows of 512 tokens of each set. The full sets
 * (1,591 and 767 windows) take minutes per model on llvmpipe, beyond this
 * suite's CI budget; they are run by `deno task ppl --device gpu` (the
 * figures are in the closing note).
 */
import assert from "node:assert/strict";
import { perplexity } from "./perplexity.ts";
import type { QuantSpec } from "../quant/methods.ts";
import { defaultSpec, variantName } from "../quant/methods.ts";
import { quantizeModel } from "./pipeline.ts";
import { evalSet, quantContext, weights } from "./_ppl_testing.ts";
import { linearKey } from "../model/config.ts";
import { gpuTest } from "../kernels/_testing.ts";
import { quantizedSource } from "../kernels/decode.ts";
import { denseSource, GpuPrefill } from "../kernels/prefill.ts";
import { gpuPrefillPerplexity } from "./gpu_perplexity.ts";

const SEQLEN = 512, WINDOWS = 6, TOL = 1e-4;

const ctx = await quantContext("stories260K-prefill-test");
const sets = await Promise.all(
  (["wikitext2", "tinystories"] as const).map((name) => evalSet(name, SEQLEN)),
);

/** Small calibration (4 TinyStories windows of 128) keeps the CPU quantization quick. */
const calib = { source: "tinystories", nsamples: 4, seqlen: 128, seed: 0 } as const;
const SPECS: QuantSpec[] = [
  defaultSpec("rtn", 3),
  { ...defaultSpec("gptq", 3), actOrder: true, groupSize: 4, calib },
  { ...defaultSpec("awq", 4), calib },
  {
    ...defaultSpec("squeezellm", 3),
    sensitivePct: 0.05,
    outlierPct: 0.4,
    fisherSamples: 4,
    calib: { source: "tinystories", seqlen: 128, seed: 0 },
  },
];

gpuTest(
  `GPU prefill perplexity equals CPU perplexity (1e-4) on stories260K: fp32, RTN w3, GPTQ w3 act-order g4, AWQ w4, SqueezeLLM w3 + 0.45% sparse; ${WINDOWS} windows of ${SEQLEN} of WikiText-2 and TinyStories`,
  async (gpu) => {
    const before = gpu.pool.bytesInUse;
    const models = [{ name: "fp32", weights, source: denseSource(weights) }];
    for (const spec of SPECS) {
      const q = await quantizeModel(weights, spec, ctx);
      if (spec.method === "gptq") {
        assert.ok(q.linears.get(linearKey(0, "wq"))!.dense.kind === "uniform");
        assert.ok(
          "gIdx" in q.linears.get(linearKey(0, "wq"))!.dense,
          "act-order GPTQ stores a gIdx table",
        );
      }
      if (spec.method === "squeezellm") {
        assert.ok(q.linears.get(linearKey(0, "w2"))!.sparse!.rowPtr.at(-1)! > 0);
      }
      models.push({
        name: variantName(q.spec),
        weights: q.weights,
        source: quantizedSource(q.linears),
      });
    }
    for (const m of models) {
      const pf = await GpuPrefill.create(gpu, m.weights, m.source, { seqlen: SEQLEN });
      try {
        for (const set of sets) {
          const cpu = await perplexity(m.weights, set.tokens, { seqlen: SEQLEN, limit: WINDOWS });
          const r = await gpuPrefillPerplexity(pf, set.tokens, { limit: WINDOWS, label: m.name });
          assert.equal(r.windows, WINDOWS);
          for (let i = 0; i < WINDOWS; i++) {
            const e = Math.abs(r.windowNll[i] - cpu.windowNll[i]) / cpu.windowNll[i];
            assert.ok(
              e < TOL,
              `${m.name} ${set.name} window ${i}: ${r.windowNll[i]} vs ${cpu.windowNll[i]}`,
            );
          }
          const e = Math.abs(r.ppl - cpu.ppl) / cpu.ppl;
          assert.ok(e < TOL, `${m.name} ${set.name}: GPU ppl ${r.ppl} vs CPU ${cpu.ppl}`);
          console.log(
            `${m.name} ${set.name}: ppl GPU ${r.ppl.toFixed(5)}, CPU ${cpu.ppl.toFixed(5)} (rel ${
              e.toExponential(1)
            })`,
          );
        }
      } finally {
        pf.release();
      }
    }
    assert.equal(gpu.pool.bytesInUse, before, "every prefill returned its buffers");
  },
);
