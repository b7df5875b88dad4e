/**
 * AWQ's calibration features on the GPU (eval/gpu_calibration.ts
 * `gpuAwqFeatures`, quant/awq.ts's `AwqFeatureSource` seam) against the CPU
 * forward's (`cpuFeatureSource`) on stories260K with real calibration text:
 * the features and mean |x| agree within fp32 rounding; AWQ streamed to a
 * file with them follows the CPU run (the scaled norms within 1e-6, the
 * codes equal but at rounding ties); every buffer goes back to the pool.
 */
import assert from "node:assert/strict";
import { RunState } from "../model/forward.ts";
import { memoryWeightSource } from "../model/weight_source.ts";
import { maxRelError } from "../datasets/testing.ts";
import { tempDir } from "../datasets/_testing.ts";
import {
  actScale,
  AWQ_FEATURES,
  type AwqFeatureName,
  awqQuantizeModelParallel,
  awqSpecOptions,
  cpuFeatureSource,
} from "../quant/awq.ts";
import { defaultSpec, resolveSpec } from "../quant/methods.ts";
import { loadQuantizedModel } from "../quant/qmodel.ts";
import { embedWindows } from "../quant/sequential.ts";
import { gpuTest } from "../kernels/_testing.ts";
import { tinyStoriesWindows, weights } from "./_ppl_testing.ts";
import { gpuAwqFeatures } from "./gpu_calibration.ts";
import { quantizeToFile } from "./quantize_stream.ts";

const c = weights.config;

gpuTest(
  "gpuAwqFeatures() gives the CPU forward's features and mean |x|, from the block's input and from after the attention (1e-5)",
  async (gpu) => {
    const windows = await tinyStoriesWindows(2, 96);
    const x = embedWindows(weights, windows);
    const cpu = cpuFeatureSource(c, new RunState(c, 96));
    const before = gpu.pool.bytesInUse;
    {
      using onGpu = gpuAwqFeatures(gpu, c);
      const ffn: readonly AwqFeatureName[] = ["ffnIn", "w2In", "ffnOut"];
      const requests = [
        { layer: 0, from: "input", want: AWQ_FEATURES },
        { layer: 1, from: "input", want: ["attnIn", "woIn", "attnOut"] },
        { layer: 1, from: "attention", want: ffn },
        { layer: 1, from: "attention", want: ["ffnIn"] },
      ] as const;
      for (const { layer, from, want } of requests) {
        const req = {
          layer,
          lw: weights.layers[layer],
          x,
          from,
          want,
          alloc: (n: number) => new Float32Array(n),
        };
        const [g, e] = [await onGpu.features(req), await cpu.features(req)];
        for (const name of want) {
          const err = maxRelError(g.features[name]!, e.features[name]!);
          assert.ok(err < 1e-5, `layers.${layer} ${name} (from ${from}): ${err}`);
          if (name === "attnOut" || name === "ffnOut") continue;
          const width = name === "w2In" ? c.hiddenDim : c.dim;
          const xMax = actScale(e.features[name]!, 2 * 96, width);
          const m = maxRelError(g.xMax![name]!, xMax);
          assert.ok(m < 1e-5, `layers.${layer} ${name} mean |x|: ${m}`);
        }
      }
      await assert.rejects(
        async () => await onGpu.features({ ...requestOf(x), from: "attention", want: ["woIn"] }),
        /from the stream after the attention only ffnIn, w2In and ffnOut can be computed; asked for woIn/,
      );
    }
    assert.equal(gpu.pool.bytesInUse, before, "every buffer returned to the pool");
  },
);

/** A request of block 0's features from `x`. */
const requestOf = (x: Float32Array[]) => ({
  layer: 0,
  lw: weights.layers[0],
  x,
  alloc: (n: number) => new Float32Array(n),
});

gpuTest(
  "quantizeToFile() AWQ with its features on the GPU follows the CPU run: scaled norms within 1e-6, codes equal but at ties",
  async (gpu) => {
    await using tmp = await tempDir("sqb-gpu-awq-test-");
    const windows = await tinyStoriesWindows(2, 64);
    const spec = resolveSpec(defaultSpec("awq", 3), c);
    const before = gpu.pool.bytesInUse;
    let requests = 0;
    const out = `${tmp.path}/awq.sqbq`;
    await quantizeToFile({
      source: memoryWeightSource(weights),
      spec,
      windows,
      awqFeatures: (config) => {
        const onGpu = gpuAwqFeatures(gpu, config);
        return {
          features: (req) => (requests++, onGpu.features(req)),
          [Symbol.dispose]: () => onGpu[Symbol.dispose](),
        };
      },
      out,
      base: { path: "<memory>", sha256: "0".repeat(64) },
      calibration: null,
      calibrationText: "2 TinyStories windows of 64",
      workers: 0,
    });
    assert.ok(requests >= 5, `${requests} feature requests: each block asks at least once`);
    assert.equal(gpu.pool.bytesInUse, before, "every buffer returned to the pool");
    const file = await loadQuantizedModel(out);
    const cpu = await awqQuantizeModelParallel(
      weights,
      windows,
      awqSpecOptions(spec, { workers: 0 }),
    );
    // The norms carry the chosen scales (attnNorm / s, ffnNorm / s): a different ratio would
    // move them by far more than the GPU forward's rounding (measured 3.3e-7).
    cpu.weights.layers.forEach((lw, l) => {
      for (
        const [name, a] of [["attnNorm", file.rest.attnNorm[l]], [
          "ffnNorm",
          file.rest.ffnNorm[l],
        ]] as const
      ) {
        const err = maxRelError(a, lw[name]);
        assert.ok(err < 1e-6, `layers.${l}.${name}: ${err}`);
      }
    });
    let same = 0, total = 0;
    for (const [key, q] of cpu.linears) {
      const a = q.dense.codes, b = file.linears.get(key)!.dense.codes;
      for (let i = 0; i < a.length; i++, total++) if (a[i] === b[i]) same++;
    }
    assert.equal(total, 21_520);
    // measured: every code equal on these windows (on 4 windows of 128, 21,514 of 21,520: one
    // clip choice of 2,520 falls the other way at a tie)
    assert.ok(same / total >= 0.999, `only ${same} of ${total} codes equal`);
    console.log(`${same} of ${total} codes equal`);
  },
);
