/** Device plumbing: dispatch sizing, the buffer pool's accounting, the pipeline cache, adapter info. */
import assert from "node:assert/strict";
import { randn } from "../model/random.ts";
import { gpuTest } from "./_testing.ts";
import {
  adapterLabel,
  dispatchSize,
  GpuUnavailableError,
  isSoftwareInfo,
  readBuffer,
  ShaderCompileError,
} from "./device.ts";
import type { GpuInfo, Kernel } from "./device.ts";
import { createMatvecPlan, MATVEC_KERNEL, matvecGpu, uploadLinear } from "./matvec.ts";
import { f32Tensor } from "../quant/format.ts";
import { quantileLut, randomCsr, rtnUniform } from "../eval/bench/synthetic.ts";

const LIMITS = { maxComputeWorkgroupsPerDimension: 65535 };

Deno.test("dispatchSize() stays 1-D up to the limit and folds into 2-D beyond it", () => {
  assert.deepEqual(dispatchSize(0, LIMITS), { x: 0, y: 0, nx: 0, count: 0 });
  assert.deepEqual(dispatchSize(65535, LIMITS), { x: 65535, y: 1, nx: 65535, count: 65535 });
  const d = dispatchSize(65536, LIMITS);
  assert.deepEqual(d, { x: 32768, y: 2, nx: 32768, count: 65536 });
  assert.deepEqual(dispatchSize(17, LIMITS, 5), { x: 5, y: 4, nx: 5, count: 17 });
  // Every workgroup id below count is covered exactly once by id = y·nx + x.
  for (const n of [1, 7, 26, 36]) {
    const g = dispatchSize(n, LIMITS, 6);
    assert.ok(
      g.x <= 6 && g.y <= 6 && g.x * g.y >= n && g.x * (g.y - 1) < n,
      `n=${n}: ${JSON.stringify(g)}`,
    );
  }
});

Deno.test("dispatchSize() rejects work that even a 2-D grid cannot hold, naming the limit", () => {
  assert.throws(
    () => dispatchSize(26, LIMITS, 5),
    /26 workgroups exceed 5×5 \(maxComputeWorkgroupsPerDimension\)/,
  );
  assert.throws(() => dispatchSize(-1, LIMITS), /non-negative integer, got -1/);
});

Deno.test("GpuUnavailableError says how to get a software adapter", () => {
  const e = new GpuUnavailableError("no adapter");
  assert.equal(e.name, "GpuUnavailableError");
  assert.match(e.message, /no adapter.*apt-get install -y mesa-vulkan-drivers/s);
});

gpuTest("getGpu() reports the adapter and the limits the kernels use", (gpu) => {
  const { info } = gpu;
  assert.equal(typeof info.description, "string");
  assert.equal(typeof info.isFallbackAdapter, "boolean");
  assert.deepEqual(info.features, [...info.features].sort());
  assert.equal(
    info.limits.maxStorageBufferBindingSize,
    gpu.adapter.limits.maxStorageBufferBindingSize,
  );
  assert.ok(info.limits.maxComputeWorkgroupStorageSize >= 16384);
  assert.equal(gpu.timestamps, gpu.device.features.has("timestamp-query"));
});

gpuTest(
  "BufferPool counts bytes and returns to baseline after uploads, plans and runs",
  async (gpu) => {
    const { pool } = gpu;
    const before = pool.bytesInUse;
    const [rows, cols] = [45, 70];
    const w = randn(rows * cols, 1);
    const sparse = randomCsr(rows, cols, 0.1, 2);
    const weights = [
      { dense: f32Tensor(w, rows, cols) },
      { dense: rtnUniform(w, rows, cols, { bits: 3, groupSize: 10 }), sparse },
      { dense: quantileLut(w, rows, cols, 4), sparse },
    ];
    for (const weight of weights) {
      const lin = uploadLinear(gpu, weight);
      assert.ok(pool.bytesInUse >= before + lin.bytes.total, "uploads are counted");
      const plan = await createMatvecPlan(gpu, lin, { batch: 3, sparseMode: "separate" });
      await matvecGpu(gpu, weight, randn(2 * cols, 3), 2);
      plan.release();
      lin.release();
      assert.equal(pool.bytesInUse, before, "every buffer went back to the pool");
    }
    const extra = pool.acquire(4, GPUBufferUsage.STORAGE);
    pool.release(extra);
    assert.throws(() => pool.release(extra), /not in use \(double release\?\)/);
    pool.trim();
    assert.equal(pool.bytesAllocated, pool.bytesInUse, "trim() destroys every free buffer");
    assert.equal(pool.bytesCreatedTotal - pool.bytesDestroyedTotal, pool.bytesAllocated);
  },
);

gpuTest(
  "BufferPool.upload() pads fp16 arrays of odd length and reads back byte for byte",
  async (gpu) => {
    const data = new Uint16Array([1, 2, 3, 0xffff, 5]);
    const buf = gpu.pool.upload(data, GPUBufferUsage.COPY_SRC);
    const back = new Uint16Array(await readBuffer(gpu, buf, 12));
    assert.deepEqual([...back], [1, 2, 3, 0xffff, 5, 0]);
    gpu.pool.release(buf);
  },
);

gpuTest(
  "PipelineCache compiles once per key and reports WGSL errors with the kernel key",
  async (gpu) => {
    const params = {
      format: "lut",
      bits: 5,
      batch: 2,
      rowsPerWg: 8,
      threadsPerRow: 8,
      groups: "none",
      aligned: false,
      xAligned: false,
    } as const;
    const n = gpu.pipelines.compiles;
    const a = await gpu.pipelines.get(MATVEC_KERNEL, params);
    const b = await gpu.pipelines.get(MATVEC_KERNEL, { ...params });
    assert.equal(a, b);
    assert.ok(gpu.pipelines.compiles <= n + 1);
    const broken: Kernel<number> = { name: "broken", key: (p) => `${p}`, wgsl: () => "fn main( {" };
    await assert.rejects(
      gpu.pipelines.get(broken, 1),
      (e) => e instanceof ShaderCompileError && /broken\|1/.test(e.message),
    );
  },
);

gpuTest(
  "a plan splits a weight larger than the binding limit into windows, one dispatch each",
  async (gpu) => {
    const [rows, cols] = [50, 64];
    const lin = uploadLinear(gpu, { dense: f32Tensor(randn(rows * cols, 1), rows, cols) });
    const one = await createMatvecPlan(gpu, lin, { batch: 1 });
    const many = await createMatvecPlan(gpu, lin, { batch: 1, maxBindingBytes: 2048 });
    // (2048 − 256 − 4) / 256 bytes per row = 6 rows per window → 9 windows.
    assert.equal(one.dispatchCount, 1);
    assert.equal(many.dispatchCount, 9);
    await assert.rejects(
      createMatvecPlan(gpu, lin, { batch: 9 }),
      /batch must be an integer in 1\.\.8, got 9/,
    );
    one.release();
    many.release();
    lin.release();
  },
);

Deno.test("adapterLabel() names the adapter and marks a software one, whichever way it is known", () => {
  const info = (o: Partial<GpuInfo>): GpuInfo => ({
    vendor: "",
    architecture: "",
    device: "",
    description: "",
    isFallbackAdapter: false,
    features: [],
    limits: {} as GpuInfo["limits"],
    ...o,
  });
  const llvmpipe = info({ description: "llvmpipe (LLVM 15.0.6, 256 bits)" });
  assert.ok(isSoftwareInfo(llvmpipe), "llvmpipe by its description");
  assert.equal(adapterLabel(llvmpipe), "llvmpipe (LLVM 15.0.6, 256 bits) (software)");
  const fallback = info({ description: "Some Adapter", isFallbackAdapter: true });
  assert.equal(adapterLabel(fallback), "Some Adapter (software)");
  const h200 = info({ vendor: "nvidia", architecture: "hopper", description: "NVIDIA H200" });
  assert.ok(!isSoftwareInfo(h200));
  assert.equal(adapterLabel(h200), "NVIDIA H200");
  assert.equal(adapterLabel(info({ vendor: "nvidia", architecture: "hopper" })), "nvidia hopper");
  assert.equal(adapterLabel(info({})), "an unnamed adapter");
});
