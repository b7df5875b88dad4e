/**
 * Timing of GPU work and the bandwidth yardstick the kernels are compared to.
 *
 * {@linkcode timeGpu} times one compute pass (any number of dispatches) with
 * GPU timestamps (timestamp-query, `timestampWrites` on the pass) when the
 * device has them, else with the wall clock around `reps` passes per submit
 * and `queue.onSubmittedWorkDone()`. Warm-up runs come first; the result is
 * the median and minimum of N runs.
 *
 * {@linkcode copyBandwidth} runs a vec4 copy kernel on the same device:
 * (bytes read + bytes written) / time is the achievable memory bandwidth a
 * memory-bound kernel can hope for.
 *
 * @module
 */
import type { Gpu, Kernel } from "./device.ts";
import { dispatchSize } from "./device.ts";

/** Median and minimum time of one run. */
export interface Timing {
  medianUs: number;
  minUs: number;
  runs: number;
  /** "timestamp": GPU timestamps around the pass; "wall": wall clock around submits. */
  method: "timestamp" | "wall";
}

/** Options of {@linkcode timeGpu}. */
export interface TimeOptions {
  /** Timed runs. @default 20 */
  runs?: number;
  /** Untimed runs first. @default 3 */
  warmup?: number;
  /** Force a method; default timestamps when available. */
  method?: "timestamp" | "wall";
  /** Wall clock only: passes per submit (the time is divided by it). @default 5 */
  reps?: number;
}

/**
 * Times `encode` (which records dispatches into the pass it is given).
 *
 * @param gpu the device
 * @param encode records one run into a compute pass
 * @param opts runs, warm-up and method
 * @returns median and min microseconds per run
 * @example
 * ```ts
 * const t = await timeGpu(gpu, (pass) => plan.encode(pass), { runs: 10 });
 * console.log(t.medianUs);
 * ```
 */
export async function timeGpu(
  gpu: Gpu,
  encode: (pass: GPUComputePassEncoder) => void,
  opts: TimeOptions = {},
): Promise<Timing> {
  const runs = opts.runs ?? 20, warmup = opts.warmup ?? 3;
  if (!(Number.isInteger(runs) && runs >= 1)) {
    throw new RangeError(`timeGpu(): runs must be a positive integer, got ${runs}`);
  }
  const method = opts.method ?? (gpu.timestamps ? "timestamp" : "wall");
  if (method === "timestamp" && !gpu.timestamps) {
    throw new RangeError(`timeGpu(): method "timestamp" needs the timestamp-query feature`);
  }
  const { device } = gpu;
  const submitPasses = (n: number, ts?: (i: number) => GPUComputePassTimestampWrites) => {
    const enc = device.createCommandEncoder();
    for (let i = 0; i < n; i++) {
      const pass = enc.beginComputePass(ts ? { timestampWrites: ts(i) } : {});
      encode(pass);
      pass.end();
    }
    return enc;
  };
  for (let i = 0; i < warmup; i++) {
    device.queue.submit([submitPasses(1).finish()]);
    await device.queue.onSubmittedWorkDone();
  }
  const us: number[] = [];
  if (method === "timestamp") {
    const querySet = device.createQuerySet({ type: "timestamp", count: 2 * runs });
    const resolve = gpu.pool.acquire(
      16 * runs,
      GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      "timestamps",
    );
    const read = gpu.pool.acquire(
      16 * runs,
      GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      "ts-read",
    );
    try {
      // One submit per run so runs do not overlap.
      for (let i = 0; i < runs; i++) {
        const enc = submitPasses(1, () => ({
          querySet,
          beginningOfPassWriteIndex: 2 * i,
          endOfPassWriteIndex: 2 * i + 1,
        }));
        device.queue.submit([enc.finish()]);
      }
      const enc = device.createCommandEncoder();
      enc.resolveQuerySet(querySet, 0, 2 * runs, resolve, 0);
      enc.copyBufferToBuffer(resolve, 0, read, 0, 16 * runs);
      device.queue.submit([enc.finish()]);
      await read.mapAsync(GPUMapMode.READ);
      const t = new BigUint64Array(read.getMappedRange(0, 16 * runs).slice(0));
      read.unmap();
      for (let i = 0; i < runs; i++) us.push(Number(t[2 * i + 1] - t[2 * i]) / 1000);
    } finally {
      querySet.destroy();
      gpu.pool.release(resolve);
      gpu.pool.release(read);
    }
  } else {
    const reps = opts.reps ?? 5;
    for (let i = 0; i < runs; i++) {
      const enc = submitPasses(reps);
      const t0 = performance.now();
      device.queue.submit([enc.finish()]);
      await device.queue.onSubmittedWorkDone();
      us.push(((performance.now() - t0) * 1000) / reps);
    }
  }
  const sorted = [...us].sort((a, b) => a - b);
  const median = sorted.length % 2
    ? sorted[sorted.length >> 1]
    : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
  return { medianUs: median, minUs: sorted[0], runs, method };
}

/** Parameters of the copy kernel (none change the source besides the workgroup size). */
export interface CopyParams {
  workgroupSize: number;
}

/** dst[i] = src[i] over vec4<u32> elements, one element per thread. */
export const COPY_KERNEL: Kernel<CopyParams> = {
  name: "copy",
  key: (p) => `${p.workgroupSize}`,
  wgsl: (p) =>
    `struct Params { n: u32, nx: u32, p0: u32, p1: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;
@compute @workgroup_size(${p.workgroupSize})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * P.nx + wid.x) * ${p.workgroupSize}u + lid;
  if (i < P.n) { dst[i] = src[i]; }
}`,
};

/** Result of {@linkcode copyBandwidth}. */
export interface CopyBandwidth extends Timing {
  /** Bytes copied (read once, written once). */
  bytes: number;
  /** (read + write bytes) / median time, in GB/s (10⁹ bytes). */
  GBps: number;
}

/**
 * Achievable memory bandwidth: times a copy of `bytes` bytes between two
 * device buffers.
 *
 * @param gpu the device
 * @param bytes bytes to copy (rounded down to 16; capped by the binding limit) @default 64 MiB
 * @param opts timing options
 */
export async function copyBandwidth(
  gpu: Gpu,
  bytes = 64 << 20,
  opts: TimeOptions = {},
): Promise<CopyBandwidth> {
  const { device, pool } = gpu;
  const size = Math.floor(Math.min(bytes, device.limits.maxStorageBufferBindingSize) / 16) * 16;
  const n = size / 16, wg = 256;
  const pipeline = await gpu.pipelines.get(COPY_KERNEL, { workgroupSize: wg });
  const grid = dispatchSize(Math.ceil(n / wg), device.limits);
  const u = pool.acquire(16, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, "copy-params");
  const src = pool.acquire(size, GPUBufferUsage.STORAGE, "copy-src");
  const dst = pool.acquire(size, GPUBufferUsage.STORAGE, "copy-dst");
  try {
    device.queue.writeBuffer(u, 0, new Uint32Array([n, grid.nx, 0, 0]));
    const bindGroup = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [u, src, dst].map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    const t = await timeGpu(gpu, (pass) => {
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(grid.x, grid.y);
    }, opts);
    return { ...t, bytes: size, GBps: (2 * size) / (t.medianUs * 1e3) };
  } finally {
    pool.release(u);
    pool.release(src);
    pool.release(dst);
  }
}
