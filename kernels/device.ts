/**
 * The WebGPU device every kernel runs on, and the three pieces of plumbing
 * the kernels share (tfjs-WebGPU style):
 *
 * - {@linkcode BufferPool}: every GPU buffer is created and released through
 *   it; it counts bytes so tests can check that a run returns to baseline.
 * - {@linkcode PipelineCache}: a kernel is `(params) => wgsl` plus a key built
 *   from every parameter that changes the source; pipelines are compiled once
 *   per key.
 * - {@linkcode dispatchSize}: sizes a dispatch and checks it against
 *   `device.limits`, folding into 2-D when one dimension would exceed
 *   maxComputeWorkgroupsPerDimension (65535 on most devices).
 *
 * {@linkcode getGpu} is the one place that reports the adapter (vendor,
 * architecture, description, fallback flag, features, limits) for the
 * results store.
 *
 * @module
 */

/** Thrown when no WebGPU adapter (or device) can be obtained. */
export class GpuUnavailableError extends Error {
  /** @param detail what failed. */
  constructor(detail: string) {
    super(
      `${detail}. WebGPU needs a GPU driver; without a GPU install Mesa's llvmpipe ` +
        `Vulkan driver (apt-get install -y mesa-vulkan-drivers) and set XDG_RUNTIME_DIR=/tmp`,
    );
    this.name = "GpuUnavailableError";
  }
}

/** What the results store records about the adapter a figure was measured on. */
export interface GpuInfo {
  vendor: string;
  architecture: string;
  device: string;
  /** Driver description, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)". */
  description: string;
  /** True for software adapters such as llvmpipe: timings are CPU timings. */
  isFallbackAdapter: boolean;
  /** Features enabled on the device (sorted). */
  features: string[];
  /** The limits the kernels depend on, as granted to the device. */
  limits: {
    maxStorageBufferBindingSize: number;
    maxBufferSize: number;
    maxComputeWorkgroupStorageSize: number;
    maxComputeInvocationsPerWorkgroup: number;
    maxComputeWorkgroupsPerDimension: number;
    maxStorageBuffersPerShaderStage: number;
    minStorageBufferOffsetAlignment: number;
  };
}

/**
 * True on a software adapter (llvmpipe, SwiftShader, or one the browser
 * calls a fallback): its timings are CPU timings.
 *
 * @example isSoftwareInfo(gpu.info); // true on llvmpipe
 */
export function isSoftwareInfo(info: GpuInfo): boolean {
  return info.isFallbackAdapter || /llvmpipe|swiftshader/i.test(info.description);
}

/**
 * The adapter as the benchmarks print it: its description (or vendor,
 * architecture and device when it has none), "(software)" after a
 * software adapter.
 *
 * @example adapterLabel(gpu.info); // "llvmpipe (LLVM 15.0.6, 256 bits) (software)"
 */
export function adapterLabel(info: GpuInfo): string {
  const what = info.description ||
    [info.vendor, info.architecture, info.device].filter((s) => s).join(" ") ||
    "an unnamed adapter";
  return `${what}${isSoftwareInfo(info) ? " (software)" : ""}`;
}

/** A device with its adapter, info, buffer pool and pipeline cache. */
export interface Gpu {
  adapter: GPUAdapter;
  device: GPUDevice;
  info: GpuInfo;
  /** True when the device can write GPU timestamps (feature "timestamp-query"). */
  timestamps: boolean;
  pool: BufferPool;
  pipelines: PipelineCache;
}

/** Options of {@linkcode getGpu}. */
export interface GetGpuOptions {
  /** Fail unless the adapter supports timestamp-query. @default false */
  requireTimestamps?: boolean;
  /** Power preference passed to requestAdapter. @default "high-performance" */
  powerPreference?: GPUPowerPreference;
}

const LIMIT_NAMES = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBuffersPerShaderStage",
  "minStorageBufferOffsetAlignment",
] as const;

/**
 * Requests an adapter and a device with the limits the kernels need: the
 * adapter's maxima for storage-buffer binding size, buffer size, workgroup
 * storage and storage buffers per stage, and timestamp-query when offered.
 *
 * @param opts see {@linkcode GetGpuOptions}
 * @returns the device with its info, a fresh buffer pool and pipeline cache
 * @throws GpuUnavailableError when there is no adapter or device
 * @example
 * ```ts
 * const gpu = await getGpu();
 * console.log(gpu.info.description);
 * ```
 */
export async function getGpu(opts: GetGpuOptions = {}): Promise<Gpu> {
  if (!("gpu" in navigator) || !navigator.gpu) {
    throw new GpuUnavailableError("navigator.gpu is missing in this runtime");
  }
  const adapter = await navigator.gpu.requestAdapter({
    powerPreference: opts.powerPreference ?? "high-performance",
  });
  if (!adapter) throw new GpuUnavailableError("navigator.gpu.requestAdapter() returned null");
  const timestamps = adapter.features.has("timestamp-query");
  if (opts.requireTimestamps && !timestamps) {
    throw new GpuUnavailableError(
      `adapter "${adapter.info.description}" lacks the timestamp-query feature (requireTimestamps)`,
    );
  }
  const requiredFeatures: GPUFeatureName[] = timestamps ? ["timestamp-query"] : [];
  // Native f16 loads in kernels/matmul.ts where offered; kernels fall back to unpack2x16float.
  if (adapter.features.has("shader-f16")) requiredFeatures.push("shader-f16");
  const requiredLimits: Record<string, number> = {};
  for (const name of LIMIT_NAMES) {
    if (name === "minStorageBufferOffsetAlignment") continue; // better is smaller; keep default
    requiredLimits[name] = adapter.limits[name];
  }
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  } catch (e) {
    throw new GpuUnavailableError(`requestDevice() failed: ${(e as Error).message}`);
  }
  const ai = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const limits = {} as GpuInfo["limits"];
  for (const name of LIMIT_NAMES) limits[name] = device.limits[name];
  const info: GpuInfo = {
    vendor: ai.vendor,
    architecture: ai.architecture,
    device: ai.device,
    description: ai.description,
    isFallbackAdapter: Boolean(
      ai.isFallbackAdapter ?? (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter,
    ),
    features: [...device.features].map(String).sort(),
    limits,
  };
  return {
    adapter,
    device,
    info,
    timestamps,
    pool: new BufferPool(device),
    pipelines: new PipelineCache(device),
  };
}

/**
 * Why GPU tests cannot run here, or undefined when an adapter exists. Probes
 * once per process. With CI=true a missing adapter is not a reason to skip:
 * the function returns undefined and the tests fail loudly instead.
 *
 * @returns a one-line reason to skip, or undefined to run
 */
export function gpuSkipReason(): Promise<string | undefined> {
  probe ??= (async () => {
    if (Deno.env.get("CI") === "true") return undefined;
    try {
      const a = "gpu" in navigator && navigator.gpu ? await navigator.gpu.requestAdapter() : null;
      if (a) return undefined;
      return new GpuUnavailableError("no WebGPU adapter").message;
    } catch (e) {
      return `WebGPU adapter probe failed: ${(e as Error).message}`;
    }
  })();
  return probe;
}
let probe: Promise<string | undefined> | undefined;

/**
 * Creates GPU buffers, reuses released ones of the same size and usage, and
 * counts bytes. `bytesInUse` is what callers hold; `bytesAllocated` includes
 * released buffers kept for reuse until {@linkcode BufferPool.trim}.
 */
export class BufferPool {
  /** Bytes of buffers handed out and not yet released. */
  bytesInUse = 0;
  /** Bytes of all live GPU buffers the pool created (in use + free list). */
  bytesAllocated = 0;
  /** Bytes ever created (monotone). */
  bytesCreatedTotal = 0;
  /** Bytes ever destroyed (monotone). */
  bytesDestroyedTotal = 0;
  readonly #free = new Map<string, GPUBuffer[]>();
  readonly #live = new Set<GPUBuffer>();

  /** @param device the device buffers are created on. */
  constructor(readonly device: GPUDevice) {}

  /**
   * A buffer of at least `size` bytes (rounded up to 4, minimum 16) with `usage`.
   * @param size bytes
   * @param usage GPUBufferUsage flags
   * @param label debugging label (ignored for reused buffers)
   */
  acquire(size: number, usage: GPUBufferUsageFlags, label = "pool"): GPUBuffer {
    if (!(size >= 0 && Number.isFinite(size))) {
      throw new RangeError(`BufferPool.acquire(): size must be a finite byte count, got ${size}`);
    }
    const bytes = Math.max(16, Math.ceil(size / 4) * 4);
    if (bytes > this.device.limits.maxBufferSize) {
      throw new RangeError(
        `BufferPool.acquire(): ${label} needs ${bytes} bytes, device maxBufferSize is ${this.device.limits.maxBufferSize}`,
      );
    }
    const key = `${bytes}:${usage}`;
    let buf = this.#free.get(key)?.pop();
    if (!buf) {
      buf = this.device.createBuffer({ size: bytes, usage, label });
      this.bytesAllocated += bytes;
      this.bytesCreatedTotal += bytes;
    }
    this.#live.add(buf);
    this.bytesInUse += bytes;
    return buf;
  }

  /**
   * A storage buffer holding `data` (padded with zeros to a multiple of 4 bytes):
   * typed arrays are uploaded byte for byte, e.g. fp16 bit patterns as-is.
   * @param data the contents
   * @param extraUsage usage flags added to STORAGE | COPY_DST
   * @param label debugging label
   */
  upload(data: ArrayBufferView, extraUsage: GPUBufferUsageFlags = 0, label = "upload"): GPUBuffer {
    const buf = this.acquire(
      data.byteLength,
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | extraUsage,
      label,
    );
    const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
    const whole = bytes.byteLength & ~3;
    if (whole > 0) this.device.queue.writeBuffer(buf, 0, bytes, 0, whole);
    if (whole < bytes.byteLength) {
      const tail = new Uint8Array(4);
      tail.set(bytes.subarray(whole));
      this.device.queue.writeBuffer(buf, whole, tail);
    }
    return buf;
  }

  /** Returns a buffer to the pool for reuse. Releasing twice throws. */
  release(buf: GPUBuffer): void {
    if (!this.#live.delete(buf)) {
      throw new Error(
        `BufferPool.release(): buffer "${buf.label}" is not in use (double release?)`,
      );
    }
    this.bytesInUse -= buf.size;
    const key = `${buf.size}:${buf.usage}`;
    const list = this.#free.get(key);
    if (list) list.push(buf);
    else this.#free.set(key, [buf]);
  }

  /** Destroys every released buffer kept for reuse. */
  trim(): void {
    for (const list of this.#free.values()) {
      for (const b of list) {
        this.bytesAllocated -= b.size;
        this.bytesDestroyedTotal += b.size;
        b.destroy();
      }
    }
    this.#free.clear();
  }
}

/**
 * The buffers one owner (a weight, a plan, a model) takes from a pool, given
 * back together.
 *
 * @example
 * ```ts
 * const owned = new OwnedBuffers(gpu.pool);
 * const y = owned.acquire(64, GPUBufferUsage.STORAGE, "y");
 * owned.releaseAll();
 * ```
 */
export class OwnedBuffers {
  readonly #held: GPUBuffer[] = [];
  readonly #adopted: { release(): void }[] = [];

  /** @param pool the pool the buffers come from and go back to */
  constructor(readonly pool: BufferPool) {}

  /** {@linkcode BufferPool.acquire}, held until {@linkcode OwnedBuffers.releaseAll}. */
  acquire(size: number, usage: GPUBufferUsageFlags, label: string): GPUBuffer {
    const b = this.pool.acquire(size, usage, label);
    this.#held.push(b);
    return b;
  }

  /** {@linkcode BufferPool.upload}, held until {@linkcode OwnedBuffers.releaseAll}. */
  upload(data: ArrayBufferView, extraUsage: GPUBufferUsageFlags, label: string): GPUBuffer {
    const b = this.pool.upload(data, extraUsage, label);
    this.#held.push(b);
    return b;
  }

  /**
   * Holds `x` (an uploaded linear, a plan) until {@linkcode OwnedBuffers.releaseAll}.
   * @returns `x`
   */
  adopt<T extends { release(): void }>(x: T): T {
    this.#adopted.push(x);
    return x;
  }

  /**
   * Releases what was adopted, last first, then returns every held buffer to
   * the pool; a second call has nothing left to release.
   */
  releaseAll(): void {
    for (const x of this.#adopted.splice(0).reverse()) x.release();
    for (const b of this.#held) this.pool.release(b);
    this.#held.length = 0;
  }

  /**
   * The owner's `release()`: returns every held buffer once.
   * @param owner the owner's type, named in the error
   * @returns a function that throws `Error` when called a second time
   */
  releaser(owner: string): () => void {
    let released = false;
    return () => {
      if (released) throw new Error(`${owner}.release(): already released`);
      released = true;
      this.releaseAll();
    };
  }
}

/** A WGSL kernel: its source as a function of params, and a key naming that source. */
export interface Kernel<P> {
  /** Short name for labels and errors. */
  name: string;
  /** A string built from every parameter that changes `wgsl(params)`. */
  key(params: P): string;
  /** The WGSL source for params; entry point `main`. */
  wgsl(params: P): string;
}

/** Thrown when a kernel's WGSL does not compile; the message holds the compiler's report. */
export class ShaderCompileError extends Error {
  /**
   * @param key the kernel key
   * @param report compiler messages
   */
  constructor(key: string, report: string) {
    super(`WGSL of kernel ${key} does not compile:\n${report}`);
    this.name = "ShaderCompileError";
  }
}

/** Compute pipelines compiled once per kernel key (layout "auto"). */
export class PipelineCache {
  readonly #map = new Map<string, Promise<GPUComputePipeline>>();
  /** Number of compiles so far (cache misses). */
  compiles = 0;

  /** @param device the device pipelines are created on. */
  constructor(readonly device: GPUDevice) {}

  /**
   * The pipeline of `kernel` for `params`, compiled on first use.
   * @param kernel the kernel
   * @param params its parameters
   * @throws ShaderCompileError when the source does not compile
   */
  get<P>(kernel: Kernel<P>, params: P): Promise<GPUComputePipeline> {
    const key = `${kernel.name}|${kernel.key(params)}`;
    let p = this.#map.get(key);
    if (!p) {
      this.compiles++;
      p = this.#compile(key, kernel.wgsl(params));
      this.#map.set(key, p);
      p.catch(() => this.#map.delete(key));
    }
    return p;
  }

  async #compile(key: string, code: string): Promise<GPUComputePipeline> {
    const module = this.device.createShaderModule({ code, label: key });
    const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === "error");
    if (errors.length) {
      throw new ShaderCompileError(
        key,
        errors.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join("\n"),
      );
    }
    return await this.device.createComputePipelineAsync({
      layout: "auto",
      compute: { module, entryPoint: "main" },
      label: key,
    });
  }

  /** Number of cached pipelines. */
  get size(): number {
    return this.#map.size;
  }
}

/** Workgroup counts of a dispatch; `nx` is the row length the shader uses to linearize. */
export interface DispatchSize {
  x: number;
  y: number;
  /** Workgroups per row of the grid (= x): linear id = wid.y · nx + wid.x. */
  nx: number;
  /** Number of workgroups that do work (x·y may exceed it by less than x). */
  count: number;
}

/**
 * Lays out `workgroups` workgroups as 1-D, or 2-D when they exceed the
 * per-dimension limit; kernels compute `id = wid.y * nx + wid.x` and return
 * when `id >= count`.
 *
 * @param workgroups how many workgroups the work needs (≥ 0)
 * @param limits the device limits (maxComputeWorkgroupsPerDimension)
 * @param maxPerDim override of the per-dimension limit (tests use a small one)
 * @throws RangeError when even a 2-D grid cannot hold the work
 */
export function dispatchSize(
  workgroups: number,
  limits: Pick<GPUSupportedLimits, "maxComputeWorkgroupsPerDimension">,
  maxPerDim: number = limits.maxComputeWorkgroupsPerDimension,
): DispatchSize {
  if (!(Number.isInteger(workgroups) && workgroups >= 0)) {
    throw new RangeError(
      `dispatchSize(): workgroups must be a non-negative integer, got ${workgroups}`,
    );
  }
  const cap = Math.min(maxPerDim, limits.maxComputeWorkgroupsPerDimension);
  if (workgroups <= cap) {
    return { x: workgroups, y: workgroups > 0 ? 1 : 0, nx: workgroups, count: workgroups };
  }
  const y = Math.ceil(workgroups / cap);
  if (y > cap) {
    throw new RangeError(
      `dispatchSize(): ${workgroups} workgroups exceed ${cap}×${cap} (maxComputeWorkgroupsPerDimension)`,
    );
  }
  const x = Math.ceil(workgroups / y);
  return { x, y, nx: x, count: workgroups };
}

/**
 * Reads a GPU buffer back to the CPU (copy into a MAP_READ staging buffer from the pool).
 * @param gpu the device
 * @param src buffer with COPY_SRC usage
 * @param bytes how many bytes from offset 0
 */
export async function readBuffer(gpu: Gpu, src: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
  const staging = gpu.pool.acquire(
    bytes,
    GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    "readback",
  );
  try {
    const enc = gpu.device.createCommandEncoder();
    enc.copyBufferToBuffer(src, 0, staging, 0, Math.ceil(bytes / 4) * 4);
    gpu.device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const out = staging.getMappedRange(0, Math.ceil(bytes / 4) * 4).slice(0, bytes);
    staging.unmap();
    return out;
  } finally {
    gpu.pool.release(staging);
  }
}
