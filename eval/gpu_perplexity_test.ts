/**
 * llm-awq issue #109's check on stories260K with the real quantizers: the
 * perplexity through the packed GPU kernels (token-at-a-time decoding with
 * the KV cache) equals the fake-quant perplexity of eval/perplexity.ts on the
 * same windows, and a deliberately wrong packing is caught.
 *
 * Windows: the first 2 windows of 128 tokens of the TinyStories eval set.
 */
import assert from "node:assert/strict";
import { forward } from "../model/forward.ts";
import { perplexity } from "./perplexity.ts";
import type { QuantizedLinear } from "../quant/format.ts";
import { wordsPerRow } from "../quant/format.ts";
import type { QuantizedModel, QuantSpec } from "../quant/methods.ts";
import { defaultSpec, variantName } from "../quant/methods.ts";
import { quantizeModel } from "./pipeline.ts";
import { evalSet, quantContext, weights } from "./_ppl_testing.ts";
import { linearKey } from "../model/config.ts";
import { maxRelError } from "../datasets/testing.ts";
import { gpuTest } from "../kernels/_testing.ts";
import type { Gpu } from "../kernels/device.ts";
import { GpuDecoder, quantizedSource } from "../kernels/decode.ts";
import type { GpuDecoderOptions } from "../kernels/decode.ts";
import { gpuPerplexity } from "./gpu_perplexity.ts";

const SEQLEN = 128, WINDOWS = 2, TOL = 1e-4;

const ctx = await quantContext("stories260K-kernels-test");
const set = await evalSet("tinystories", SEQLEN);

/** SqueezeLLM 3-bit with 0.45 % sparse (0.05 % sensitive + 0.4 % outliers), 4 Fisher windows. */
function squeezellmSparse(): QuantSpec {
  const s = { ...defaultSpec("squeezellm", 3), sensitivePct: 0.05, outlierPct: 0.4 };
  return { ...s, fisherSamples: 4, calib: { ...s.calib, source: "tinystories" } };
}

/** Largest relative error of the GPU logits of `win` against the CPU fake-quant forward. */
async function logitsError(
  gpu: Gpu,
  q: QuantizedModel,
  linears: Map<string, QuantizedLinear>,
  win: Int32Array,
  opts: GpuDecoderOptions = {},
): Promise<number> {
  const dec = await GpuDecoder.create(gpu, q.weights, quantizedSource(linears), opts);
  try {
    return maxRelError(await dec.forward(win), forward(q.weights, win));
  } finally {
    dec.release();
  }
}

/** `q` with the packed codes of rows r1 and r2 of layers.{layer}.{name} swapped. */
function swapRows(q: QuantizedModel, key: string, r1: number, r2: number) {
  const linears = new Map(q.linears);
  const w = linears.get(key)!;
  const wpr = wordsPerRow(w.dense.cols, w.dense.bits);
  const codes = Uint32Array.from(w.dense.codes);
  codes.set(w.dense.codes.subarray(r2 * wpr, (r2 + 1) * wpr), r1 * wpr);
  codes.set(w.dense.codes.subarray(r1 * wpr, (r1 + 1) * wpr), r2 * wpr);
  assert.notDeepEqual(codes, w.dense.codes, `${key}: rows ${r1} and ${r2} hold different codes`);
  linears.set(key, { ...w, dense: { ...w.dense, codes } });
  return linears;
}

gpuTest(
  `GPU kernel perplexity equals fake-quant perplexity (1e-4) on ${WINDOWS} TinyStories windows of ${SEQLEN}: RTN w4, w3, SqueezeLLM w3 + 0.45% sparse`,
  async (gpu) => {
    const before = gpu.pool.bytesInUse;
    const specs = [defaultSpec("rtn", 4), defaultSpec("rtn", 3), squeezellmSparse()];
    for (const spec of specs) {
      const q = await quantizeModel(weights, spec, ctx);
      const name = variantName(q.spec);
      if (spec.method === "squeezellm") {
        assert.ok(
          q.linears.get(linearKey(0, "w2"))!.sparse!.rowPtr.at(-1)! > 0,
          "has a sparse part",
        );
      }
      const cpu = await perplexity(q.weights, set.tokens, { seqlen: SEQLEN, limit: WINDOWS });
      const dec = await GpuDecoder.create(gpu, q.weights, quantizedSource(q.linears));
      try {
        const r = await gpuPerplexity(dec, set.tokens, {
          seqlen: SEQLEN,
          limit: WINDOWS,
          onLogits: (i, logits) => {
            const win = set.tokens.subarray(i * SEQLEN, (i + 1) * SEQLEN);
            const err = maxRelError(logits, forward(q.weights, win));
            assert.ok(err < TOL, `${name}: logits of window ${i} differ by ${err}`);
          },
        });
        assert.equal(r.windows, WINDOWS);
        for (let i = 0; i < WINDOWS; i++) {
          const e = Math.abs(r.windowNll[i] - cpu.windowNll[i]) / cpu.windowNll[i];
          assert.ok(e < TOL, `${name}: window ${i} nll ${r.windowNll[i]} vs ${cpu.windowNll[i]}`);
        }
        const e = Math.abs(r.ppl - cpu.ppl) / cpu.ppl;
        assert.ok(e < TOL, `${name}: GPU ppl ${r.ppl} vs fake-quant ${cpu.ppl}`);
        console.log(`${name}: ppl GPU ${r.ppl.toFixed(4)}, fake-quant ${cpu.ppl.toFixed(4)}`);
      } finally {
        dec.release();
      }
    }
    assert.equal(gpu.pool.bytesInUse, before, "every decoder returned its buffers");
  },
);

gpuTest(
  "the kernel-vs-fake-quant comparison catches two swapped rows of packed codes (uniform and lut); separate sparse pass agrees",
  async (gpu) => {
    const win = set.tokens.subarray(0, 32);
    const rtn3 = await quantizeModel(weights, defaultSpec("rtn", 3), ctx);
    const sq = await quantizeModel(weights, squeezellmSparse(), ctx);
    const separate = await logitsError(gpu, sq, sq.linears, win, { sparseMode: "separate" });
    assert.ok(separate < TOL, `SqueezeLLM with the separate sparse pass: ${separate}`);
    for (const [q, key] of [[rtn3, linearKey(2, "wq")], [sq, linearKey(4, "w1")]] as const) {
      assert.ok((await logitsError(gpu, q, q.linears, win)) < TOL);
      const err = await logitsError(gpu, q, swapRows(q, key, 3, 5), win);
      assert.ok(err > 100 * TOL, `${variantName(q.spec)} ${key} rows 3↔5: error only ${err}`);
    }
  },
);
