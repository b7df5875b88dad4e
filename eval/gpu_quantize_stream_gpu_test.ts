/**
 * The streamed GPTQ quantize on the GPU (eval/quantize_stream.ts with
 * eval/gpu_calibration.ts `GptqSequentialGpu`: block inputs kept on the
 * device, forward and Hessians there, the fast solver on the host) against
 * the CPU streamed path on stories260K with real calibration text: the same
 * codes and GPTQ's errors within 1e-3, every buffer back in
 * the pool; and the whole-model GPU pass (ppl/eval --device gpu) is the
 * same block pass.
 */
import assert from "node:assert/strict";
import { memoryWeightSource } from "../model/weight_source.ts";
import { defaultSpec, resolveSpec } from "../quant/methods.ts";
import { loadQuantizedModel } from "../quant/qmodel.ts";
import { type GptqModelStats, gptqSpecOptions } from "../quant/sequential.ts";
import { tempDir } from "../datasets/_testing.ts";
import { gpuTest } from "../kernels/_testing.ts";
import { tinyStoriesWindows, weights } from "./_ppl_testing.ts";
import { gpuHessians } from "./gpu_calibration.ts";
import { quantizeToFile } from "./quantize_stream.ts";

const windows = await tinyStoriesWindows(4, 128);

gpuTest(
  "quantizeToFile() GPTQ with the block pass on the GPU writes the CPU streamed path's codes",
  async (gpu) => {
    await using tmp = await tempDir("sqb-gpu-stream-test-");
    const spec = resolveSpec({ ...defaultSpec("gptq", 3), actOrder: true }, weights.config);
    const h = await gpuHessians(gpu);
    const before = gpu.pool.bytesInUse;
    const write = (out: string, onGpu: boolean) =>
      quantizeToFile({
        source: memoryWeightSource(weights),
        spec,
        windows,
        gptqSequential: onGpu ? h.gptqSequential : undefined,
        out,
        base: { path: "<memory>", sha256: "0".repeat(64) },
        calibration: null,
        calibrationText: "4 TinyStories windows of 128",
        workers: 0,
      });
    const created = gpu.pool.bytesCreatedTotal;
    await write(`${tmp.path}/gpu.sqbq`, true);
    assert.ok(gpu.pool.bytesCreatedTotal > created, "the block pass ran on the GPU");
    assert.equal(gpu.pool.bytesInUse, before, "every buffer returned to the pool");
    await write(`${tmp.path}/cpu.sqbq`, false);
    const [g, c] = await Promise.all(
      ["gpu", "cpu"].map((d) => loadQuantizedModel(`${tmp.path}/${d}.sqbq`)),
    );
    assert.equal(g.linears.size, 35);
    let same = 0, total = 0;
    for (const [key, q] of c.linears) {
      const a = q.dense.codes, b = g.linears.get(key)!.dense.codes;
      for (let i = 0; i < a.length; i++, total++) if (a[i] === b[i]) same++;
    }
    // H on the GPU is within 1e-5 of the CPU's, so a code could round the other way at a tie;
    // measured on these windows: none does.
    assert.equal(same, total, `${total - same} of ${total} codes differ`);
    const stats = (f: typeof g) => (f.provenance.details as { stats: GptqModelStats }).stats;
    stats(c).linears.forEach((s, i) => {
      const e = stats(g).linears[i];
      assert.equal(e.key, s.key);
      assert.ok(Math.abs(e.error - s.error) / s.error < 1e-3, `${s.key}: ${e.error} vs ${s.error}`);
    });
    // the whole-model GPU pass (ppl/eval --device gpu: QuantizeContext.gptqModel) is the same
    // block pass: the same codes
    const whole = await h.gptqModel(weights, windows, gptqSpecOptions(spec, { workers: 0 }));
    for (const [key, q] of whole.linears) {
      assert.deepEqual(q.dense.codes, g.linears.get(key)!.dense.codes, key);
    }
    assert.equal(gpu.pool.bytesInUse, before);
  },
);
