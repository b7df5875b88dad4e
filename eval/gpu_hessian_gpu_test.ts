/**
 * GPTQ with its Hessians accumulated on the GPU (eval/gpu_calibration.ts →
 * quant/sequential.ts's `hessians` option) on stories260K with real
 * calibration text: every linear's GPU Hessian equals the CPU's (quant/gptq.ts,
 * float64) within 1e-5 relative on the real block inputs, the injected CPU
 * accumulator reproduces the default run bit for bit, and the GPU run's
 * quantized model matches the CPU's.
 */
import assert from "node:assert/strict";
import { maxRelError } from "../datasets/testing.ts";
import type { HessianAccumulatorFactory } from "../quant/sequential.ts";
import { cpuHessians, gptqQuantizeModel, gptqQuantizeModelAsync } from "../quant/sequential.ts";
import { gpuTest } from "../kernels/_testing.ts";
import { gpuHessians } from "./gpu_calibration.ts";
import { tinyStoriesWindows, weights } from "./_ppl_testing.ts";

const windows = await tinyStoriesWindows(4, 128);
const OPTS = { bits: 3, groupSize: 4, actOrder: true } as const;

Deno.test("gptqQuantizeModel() with the injected CPU accumulator equals the default run exactly", () => {
  const a = gptqQuantizeModel(weights, windows, OPTS);
  const b = gptqQuantizeModel(weights, windows, { ...OPTS, hessians: cpuHessians });
  assert.equal(b.linears.size, 35);
  for (const [key, q] of a.linears) assert.deepEqual(b.linears.get(key), q, key);
});

gpuTest(
  "GPU Hessians equal the CPU's (1e-5) on every linear of stories260K; GPTQ on them matches the CPU run",
  async (gpu) => {
    const before = gpu.pool.bytesInUse;
    const h = await gpuHessians(gpu);
    // Both accumulators see the same inputs; the CPU's H is solved, the GPU's compared.
    const errors = new Map<string, number>();
    const both: HessianAccumulatorFactory = (layer, name, cols) => {
      const cpu = cpuHessians(layer, name, cols), dev = h.factory(layer, name, cols);
      return {
        addBatch(x, rows) {
          cpu.addBatch(x, rows);
          dev.addBatch(x, rows);
        },
        async finish() {
          const H = await cpu.finish();
          errors.set(`layers.${layer}.${name}`, maxRelError(await dev.finish(), H));
          return H;
        },
      };
    };
    const checked = await gptqQuantizeModelAsync(weights, windows, { ...OPTS, hessians: both });
    assert.equal(errors.size, 35);
    for (const [key, err] of errors) assert.ok(err < 1e-5, `${key}: H differs by ${err}`);
    const cpu = gptqQuantizeModel(weights, windows, OPTS);
    for (const [key, q] of cpu.linears) assert.deepEqual(checked.linears.get(key), q, key);

    // GPTQ solved on the GPU Hessians: the same codes up to rounding-boundary ties.
    const onGpu = await gptqQuantizeModelAsync(weights, windows, { ...OPTS, hessians: h.factory });
    let same = 0, total = 0;
    for (const [key, q] of cpu.linears) {
      const a = q.dense.codes, b = onGpu.linears.get(key)!.dense.codes;
      for (let i = 0; i < a.length; i++, total++) if (a[i] === b[i]) same++;
    }
    assert.ok(same / total > 0.99, `only ${same} of ${total} code words equal`);
    console.log(
      `max H error ${Math.max(...errors.values()).toExponential(2)}; ` +
        `${same} of ${total} code words equal`,
    );
    cpu.stats.linears.forEach((s, i) => {
      const e = Math.abs(onGpu.stats.linears[i].error - s.error) / s.error;
      assert.ok(e < 1e-2, `${s.key}: GPTQ error ${onGpu.stats.linears[i].error} vs ${s.error}`);
    });
    h.release();
    assert.equal(h.made, 70);
    assert.equal(gpu.pool.bytesInUse, before, "every accumulator returned its buffers");
  },
);
