/**
 * The whole calibration pass on the GPU (eval/gpu_calibration.ts over
 * kernels/block.ts) against the CPU loop on stories260K with real
 * calibration text: GPTQ's codes and errors match quant/sequential.ts's
 * `gptqQuantizeModel` up to rounding ties; every buffer goes back to the
 * pool. (AWQ's features on the GPU: eval/gpu_awq_gpu_test.ts.)
 */
import assert from "node:assert/strict";
import { gptqQuantizeModel } from "../quant/sequential.ts";
import { gpuTest } from "../kernels/_testing.ts";
import { tinyStoriesWindows, weights } from "./_ppl_testing.ts";
import { gptqQuantizeModelGpu, gpuHessians } from "./gpu_calibration.ts";

const windows = await tinyStoriesWindows(4, 128);

gpuTest(
  "gptqQuantizeModelGpu() (block inputs on the GPU) matches the CPU loop on stories260K",
  async (gpu) => {
    const before = gpu.pool.bytesInUse;
    const opts = { bits: 3, actOrder: true } as const;
    const onGpu = await gptqQuantizeModelGpu(gpu, weights, windows, opts);
    assert.equal(gpu.pool.bytesInUse, before, "every buffer returned to the pool");
    const cpu = gptqQuantizeModel(weights, windows, opts);
    let same = 0, total = 0;
    for (const [key, q] of cpu.linears) {
      const a = q.dense.codes, b = onGpu.linears.get(key)!.dense.codes;
      for (let i = 0; i < a.length; i++, total++) if (a[i] === b[i]) same++;
    }
    assert.equal(total, 21_520);
    assert.ok(same / total >= 0.99, `only ${same} of ${total} codes equal`);
    cpu.stats.linears.forEach((s, i) => {
      assert.equal(onGpu.stats.linears[i].key, s.key);
      const e = Math.abs(onGpu.stats.linears[i].error - s.error) / s.error;
      assert.ok(e < 1e-2, `${s.key}: GPTQ error ${onGpu.stats.linears[i].error} vs ${s.error}`);
    });
    console.log(`${same} of ${total} codes equal`);
    // gpuHessians(gpu).gptqModel is this pass: the same codes, bit for bit (deterministic)
    const viaHessians = await (await gpuHessians(gpu)).gptqModel(weights, windows, opts);
    for (const [key, q] of onGpu.linears) {
      assert.deepEqual(viaHessians.linears.get(key)!.dense.codes, q.dense.codes, key);
    }
  },
);
