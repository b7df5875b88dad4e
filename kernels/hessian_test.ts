/**
 * GPU Hessians equal GPTQ's CPU accumulation (quant/gptq.ts `Gptq.addBatch`
 * + `hessian()`, float64) within 1e-5 relative: several windows of odd
 * lengths and widths (not multiples of the 32 × 32 tile), rows bound in
 * slices, inputs already on the GPU.
 */
import assert from "node:assert/strict";
import { randn } from "../model/random.ts";
import { maxRelError } from "../datasets/testing.ts";
import { Gptq } from "../quant/gptq.ts";
import { gpuTest } from "./_testing.ts";
import { GpuHessian } from "./hessian.ts";

const TOL = 1e-5;

function cpuHessian(windows: Float32Array[], lengths: number[], cols: number): Float64Array {
  const g = new Gptq(1, cols);
  windows.forEach((x, i) => g.addBatch(x, lengths[i]));
  return g.hessian();
}

gpuTest(
  "GpuHessian equals GPTQ's CPU Hessian (1e-5) on windows of 37, 100 and 300 rows, widths 83 and 172",
  async (gpu) => {
    const before = gpu.pool.bytesInUse;
    for (const cols of [83, 172]) {
      const lengths = [37, 100, 300];
      // Activation-like inputs: a few large channels over a unit background.
      const windows = lengths.map((T, i) =>
        randn(T * cols, 10 * cols + i).map((v, k) => (k % cols) % 17 === 0 ? 20 * v : v)
      );
      const h = await GpuHessian.create(gpu, cols);
      try {
        for (let i = 0; i < windows.length; i++) h.addBatch(windows[i], lengths[i]);
        assert.equal(h.nsamples, 3);
        const err = maxRelError(await h.finish(), cpuHessian(windows, lengths, cols));
        assert.ok(err < TOL, `cols ${cols}: relative error ${err}`);
      } finally {
        h.release();
      }
    }
    assert.equal(gpu.pool.bytesInUse, before, "every buffer returned");
  },
);

gpuTest(
  "GpuHessian: rows bound in 64-row slices and rows already on the GPU give the same H",
  async (gpu) => {
    const cols = 50, T = 200;
    const x = randn(T * cols, 3);
    const h = await GpuHessian.create(gpu, cols, { maxBindingBytes: 64 * 4 * cols + 100 });
    const buf = gpu.pool.upload(x, 0, "rows");
    try {
      h.addBatchGpu(buf, T);
      h.addBatch(x.subarray(0, 64 * cols), 64);
      const want = cpuHessian([x, x.subarray(0, 64 * cols)], [T, 64], cols);
      const err = maxRelError(await h.finish(), want);
      assert.ok(err < TOL, `relative error ${err}`);
      assert.throws(() => h.addBatch(new Float32Array(cols).fill(NaN), 1), /non-finite/);
    } finally {
      h.release();
      gpu.pool.release(buf);
    }
    await assert.rejects(
      () => GpuHessian.create(gpu, 100, { maxBindingBytes: 1000 }),
      /above the binding limit/,
    );
  },
);
