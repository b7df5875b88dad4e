/**
 * GPU prefill against the CPU forward (model/forward.ts) and eval/perplexity.ts's
 * windowLoss: stories260K (grouped-query attention, 8 heads over 4 KV heads)
 * on a full 512-token window, and a seeded model whose shapes stress the
 * kernels' edges (T = 100 not a multiple of any tile, head size 12, the
 * classifier in chunks, windows split across submits).
 */
import assert from "node:assert/strict";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { forward } from "../model/forward.ts";
import { randomWeights, randomWindows, tinyConfig } from "../model/random.ts";
import { maxRelError, sharedData } from "../datasets/testing.ts";
import { windowLoss } from "../eval/perplexity.ts";
import { gpuTest } from "./_testing.ts";
import { attentionShape, denseSource, GpuPrefill } from "./prefill.ts";
import type { LlamaWeights } from "../model/config.ts";
import { linearShape } from "../model/config.ts";
import { f16Tensor, fromF16 } from "../quant/format.ts";
import type { Gpu } from "./device.ts";

const TOL = 1e-4;

async function compare(
  gpu: Gpu,
  what: string,
  weights: LlamaWeights,
  windows: Int32Array[],
  pf: GpuPrefill,
) {
  const V = weights.config.vocabSize;
  const got = await pf.logits(windows[0]);
  const err = maxRelError(got, forward(weights, windows[0]));
  assert.ok(err < TOL, `${what}: logits differ from the CPU forward by ${err}`);
  const losses = await pf.windowLosses(windows);
  for (let i = 0; i < windows.length; i++) {
    const want = windowLoss(forward(weights, windows[i]), windows[i], V);
    const e = Math.abs(losses[i] - want) / want;
    assert.ok(e < TOL, `${what}: window ${i} loss ${losses[i]} vs CPU ${want}`);
  }
  assert.ok(gpu.pool.bytesInUse > 0);
}

gpuTest(
  "GPU prefill equals the CPU forward on stories260K (fp32, 512 tokens, GQA)",
  async (gpu) => {
    const before = gpu.pool.bytesInUse;
    const w = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));
    const windows = randomWindows(3, 512, w.config.vocabSize, 1);
    const pf = await GpuPrefill.create(gpu, w, denseSource(w), { windowsPerSubmit: 2 });
    try {
      assert.equal(pf.seqlen, 512);
      await compare(gpu, "stories260K", w, windows, pf);
    } finally {
      pf.release();
    }
    assert.equal(gpu.pool.bytesInUse, before, "every buffer returned to the pool");
  },
);

gpuTest(
  "GPU prefill on odd shapes: T = 100, head size 12, 6 heads over 2 KV heads, f16 linears, classifier in 64-token chunks",
  async (gpu) => {
    const c = tinyConfig({
      dim: 72,
      hiddenDim: 80,
      nHeads: 6,
      nKvHeads: 2,
      vocabSize: 97,
      maxSeqLen: 128,
      sharedClassifier: false,
    });
    const w = randomWeights(c, 7);
    const windows = randomWindows(3, 100, c.vocabSize, 2);
    // 32,000 bytes hold every activation (h1: 100 × 80 floats) and 64 tokens of 97 logits,
    // not 100: two classifier chunks; seqlen below max_seq_len.
    const pf32 = await GpuPrefill.create(gpu, w, denseSource(w), {
      seqlen: 100,
      windowsPerSubmit: 2,
      maxBindingBytes: 32000,
    });
    try {
      await compare(gpu, "tiny f32", w, windows, pf32);
    } finally {
      pf32.release();
    }
    // f16 linears: the CPU reference runs the same fp16-rounded weights in fp32.
    const rounded: LlamaWeights = {
      ...w,
      layers: w.layers.map((lw) => {
        const out = { ...lw };
        for (const n of ["wq", "wk", "wv", "wo", "w1", "w2", "w3"] as const) {
          const [r, cc] = linearShape(c, n);
          out[n] = fromF16(f16Tensor(lw[n], r, cc).data);
        }
        return out;
      }),
    };
    const pf16 = await GpuPrefill.create(gpu, w, denseSource(w, "f16"), { seqlen: 100 });
    try {
      await compare(gpu, "tiny f16", rounded, windows, pf16);
    } finally {
      pf16.release();
    }
  },
);

gpuTest(
  "GPU prefill attention over several query tiles: T = 203, head size 32, 4 heads over 1 KV head, " +
    "4 heads and 2 queries per thread (unmasked and masked key loops, T not a multiple of the key step)",
  async (gpu) => {
    const c = tinyConfig({
      dim: 128,
      hiddenDim: 96,
      nHeads: 4,
      nKvHeads: 1,
      vocabSize: 50,
      maxSeqLen: 256,
    });
    assert.deepEqual(attentionShape(32, 4), { headsPerThread: 4, queriesPerThread: 2 });
    const w = randomWeights(c, 11);
    const windows = randomWindows(2, 203, c.vocabSize, 3);
    const pf = await GpuPrefill.create(gpu, w, denseSource(w), { seqlen: 203 });
    try {
      await compare(gpu, "tiles", w, windows, pf);
    } finally {
      pf.release();
    }
  },
);

gpuTest(
  "GpuPrefill rejects bad windows, seqlens and activations beyond the binding limit",
  async (gpu) => {
    const before = gpu.pool.bytesInUse;
    const c = tinyConfig({ maxSeqLen: 16 });
    const w = randomWeights(c, 3);
    await assert.rejects(
      () => GpuPrefill.create(gpu, w, denseSource(w), { seqlen: 17 }),
      /seqlen must be an integer in 2\.\.16/,
    );
    await assert.rejects(
      () => GpuPrefill.create(gpu, w, denseSource(w), { maxBindingBytes: 1100 }),
      /activation "h1" of a 16-token window needs 1536 bytes, above the device.s maxStorageBufferBindingSize 1100: lower --seqlen/,
    );
    const pf = await GpuPrefill.create(gpu, w, denseSource(w), { seqlen: 8 });
    try {
      await assert.rejects(() => pf.windowLosses([new Int32Array(7)]), /window 0 has 7 tokens/);
      await assert.rejects(
        () => pf.windowLosses([new Int32Array(8).fill(20)]),
        /token 20 at position 0 of window 0 is outside the vocabulary/,
      );
    } finally {
      pf.release();
    }
    assert.equal(gpu.pool.bytesInUse, before);
  },
);
