/**
 * GPTQ's Hessian H = 2/nsamples · Σ XᵀX of a linear layer's inputs,
 * accumulated on the GPU ({@linkcode GpuHessian}), for quant/sequential.ts's
 * injectable accumulator (`HessianAccumulator`).
 *
 * ## Kernel ({@linkcode GRAM_KERNEL})
 *
 * One workgroup of 64 threads (8 × 8) owns a 32 × 32 tile (i, j) of the
 * upper triangle (tiles below the diagonal return at once); thread (tx, ty)
 * owns the 4 × 4 block i = i0 + 4ty + a, j = j0 + 4tx + b (a, b < 4) in four
 * vec4 accumulators, so each row t costs it two vec4 loads (its four i and
 * its four j inputs) for sixteen multiply-adds (loads are what a software
 * adapter pays for). The batch's rows are walked 32 at a time, staging
 * X[rows, i-tile] and X[rows, j-tile] in workgroup memory as vec4s; the batch's Gram tile is
 * summed in fp32 (one window of ≤ max_seq_len rows), then added into the
 * running sum held as an unevaluated pair hi + lo of fp32 buffers with
 * Knuth's TwoSum (s = hi + v; lo += (hi − (s − b′)) + (v − b′), b′ = s − hi),
 * so the sum over hundreds of windows keeps about 48 bits. finish() reads
 * both back and forms H = 2/nsamples · (hi + lo) in float64, mirrored from
 * the upper triangle: GPTQ's running rescaling
 * (H *= n/(n+tmp); H += 2/(n+tmp) · XᵀX) is the same number.
 *
 * X larger than one binding is bound in slices of rows (offsets 256-byte
 * aligned: slices of a multiple of 64 rows).
 *
 * @module
 */
import type { Gpu, Kernel } from "./device.ts";
import { dispatchSize, readBuffer } from "./device.ts";
import { UniformLayout } from "./matmul.ts";

const TILE = 32;
const WG = 64;

const GRAM_PARAMS = new UniformLayout("Params", {
  N: "u32", // rows of this slice of X
  n: "u32", // columns = order of H
  tiles: "u32", // tiles per dimension
  nx: "u32",
});

/** The Gram kernel (module doc). Its source has no parameters. */
export const GRAM_KERNEL: Kernel<Record<string, never>> = {
  name: "gram",
  key: () => "",
  wgsl: () => {
    const I4 = [0, 1, 2, 3];
    return `${GRAM_PARAMS.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>; // [N, n]
@group(0) @binding(2) var<storage, read_write> HI: array<f32>; // [n, n] upper triangle
@group(0) @binding(3) var<storage, read_write> LO: array<f32>; // [n, n] TwoSum residuals
var<workgroup> xa: array<vec4<f32>, ${(TILE * TILE) / 4}>; // [32 rows, 8 vec4 of the i-tile]
var<workgroup> xb: array<vec4<f32>, ${(TILE * TILE) / 4}>; // [32 rows, 8 vec4 of the j-tile]
fn xAt(t: u32, c: u32) -> f32 {
  if (t >= P.N || c >= P.n) { return 0.0; }
  return X[t * P.n + c];
}
fn accumulate(i: u32, j: u32, v: f32) {
  if (i >= P.n || j >= P.n || j < i) { return; }
  let k = i * P.n + j;
  let hi = HI[k];
  let s = hi + v;
  let b = s - hi;
  LO[k] += (hi - (s - b)) + (v - b);
  HI[k] = s;
}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let id = wid.y * P.nx + wid.x;
  if (id >= P.tiles * P.tiles) { return; }
  let ti = id / P.tiles;
  let tj = id % P.tiles;
  if (tj < ti) { return; } // upper triangle only
  let i0 = ti * ${TILE}u;
  let j0 = tj * ${TILE}u;
  let tx = tid % 8u;
  let ty = tid / 8u;
  ${I4.map((a) => `var acc${a} = vec4<f32>();`).join("\n  ")}
  for (var t0 = 0u; t0 < P.N; t0 += ${TILE}u) {
    workgroupBarrier();
    for (var e = tid; e < ${(TILE * TILE) / 4}u; e += ${WG}u) {
      let t = t0 + e / 8u;
      let c = 4u * (e % 8u);
      xa[e] = vec4<f32>(${I4.map((k) => `xAt(t, i0 + c + ${k}u)`).join(", ")});
      xb[e] = vec4<f32>(${I4.map((k) => `xAt(t, j0 + c + ${k}u)`).join(", ")});
    }
    workgroupBarrier();
    for (var t = 0u; t < ${TILE}u; t++) {
      let a = xa[t * 8u + ty];
      let b = xb[t * 8u + tx];
      ${I4.map((a) => `acc${a} += a[${a}] * b;`).join("\n      ")}
    }
  }
  ${
      I4.flatMap((a) =>
        I4.map((b) => `accumulate(i0 + 4u * ty + ${a}u, j0 + 4u * tx + ${b}u, acc${a}[${b}]);`)
      ).join("\n  ")
    }
}`;
  },
};

/** Options of {@linkcode GpuHessian}. */
export interface GpuHessianOptions {
  /** Largest binding (tests use a small one to force row slices). */
  maxBindingBytes?: number;
}

/**
 * GPTQ's `add_batch` on the GPU for one layer input of width `cols`:
 * {@linkcode GpuHessian.addBatch} (host rows) or
 * {@linkcode GpuHessian.addBatchGpu} (rows already on the GPU) per window,
 * then {@linkcode GpuHessian.finish} for H [cols, cols] (float64, full
 * symmetric), then {@linkcode GpuHessian.release}.
 *
 * @example
 * ```ts
 * const h = await GpuHessian.create(gpu, 64);
 * h.addBatch(x, 512); // x: [512, 64], copied at once
 * const H = await h.finish(); // 2/1 · xᵀx
 * h.release();
 * ```
 */
export class GpuHessian {
  /** Windows accumulated (GPTQ's nsamples). */
  nsamples = 0;
  readonly #hi: GPUBuffer;
  readonly #lo: GPUBuffer;
  #x: GPUBuffer | null = null;
  #pipeline: GPUComputePipeline | null = null;
  /** Uniforms of the dispatches submitted so far (released with the accumulator). */
  readonly #uniforms: GPUBuffer[] = [];
  #released = false;
  readonly #maxBind: number;

  /**
   * Use {@linkcode GpuHessian.create}.
   * @param gpu the device
   * @param cols input features of the layer (order of H)
   * @param opts binding limit
   */
  private constructor(readonly gpu: Gpu, readonly cols: number, opts: GpuHessianOptions = {}) {
    if (!(Number.isInteger(cols) && cols >= 1)) {
      throw new RangeError(`GpuHessian: cols must be a positive integer, got ${cols}`);
    }
    this.#maxBind = Math.min(
      opts.maxBindingBytes ?? Infinity,
      gpu.device.limits.maxStorageBufferBindingSize,
    );
    const bytes = 4 * cols * cols;
    if (bytes > this.#maxBind) {
      throw new RangeError(
        `GpuHessian: H of ${cols}×${cols} needs ${bytes} bytes, above the binding limit ` +
          `${this.#maxBind}`,
      );
    }
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    this.#hi = gpu.pool.acquire(bytes, usage, "hessian-hi");
    this.#lo = gpu.pool.acquire(bytes, usage, "hessian-lo");
    const enc = gpu.device.createCommandEncoder();
    enc.clearBuffer(this.#hi);
    enc.clearBuffer(this.#lo);
    gpu.device.queue.submit([enc.finish()]);
  }

  #live(what: string): void {
    if (this.#released) throw new Error(`GpuHessian.${what}: already released`);
  }

  /**
   * Adds xᵀx of `rows` host rows (uploaded into a scratch buffer).
   * @param x inputs [rows, cols]
   * @param rows number of rows
   * @param samples calibration windows the rows stand for (GPTQ's tmp) @default 1
   */
  addBatch(x: Float32Array, rows: number, samples = 1): void {
    this.#live("addBatch()");
    if (x.length !== rows * this.cols) {
      throw new RangeError(
        `GpuHessian.addBatch(): expected x of ${rows}×${this.cols} values, got ${x.length}`,
      );
    }
    for (let i = 0; i < x.length; i++) {
      if (!Number.isFinite(x[i])) {
        throw new RangeError(
          `GpuHessian.addBatch(): input row ${Math.floor(i / this.cols)} has a non-finite value ${
            x[i]
          }`,
        );
      }
    }
    const { pool, device } = this.gpu;
    if (!this.#x || this.#x.size < x.byteLength) {
      if (this.#x) pool.release(this.#x);
      this.#x = pool.acquire(
        x.byteLength,
        GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
        "hessian-x",
      );
    }
    device.queue.writeBuffer(this.#x, 0, x as Float32Array<ArrayBuffer>);
    this.addBatchGpu(this.#x, rows, 0, samples);
  }

  /**
   * Adds xᵀx of `rows` rows already on the GPU (e.g. a block input kept there).
   * @param x buffer holding [rows, cols] floats from `offset`
   * @param rows number of rows
   * @param offset byte offset of row 0 (a multiple of 256) @default 0
   * @param samples calibration windows the rows stand for @default 1
   */
  addBatchGpu(x: GPUBuffer, rows: number, offset = 0, samples = 1): void {
    this.#live("addBatchGpu()");
    if (!(samples > 0)) throw new RangeError(`GpuHessian: samples must be > 0, got ${samples}`);
    const { device, pool } = this.gpu;
    if (!this.#pipeline) {
      throw new Error("GpuHessian: create it with GpuHessian.create() (compiles the kernel)");
    }
    const n = this.cols, rowBytes = 4 * n;
    const perSlice = rows * rowBytes <= this.#maxBind
      ? rows
      : Math.floor(this.#maxBind / rowBytes / 64) * 64;
    if (perSlice < 1) {
      throw new RangeError(
        `GpuHessian: 64 rows of ${n} inputs exceed the binding limit ${this.#maxBind}`,
      );
    }
    const tiles = Math.ceil(n / TILE);
    const grid = dispatchSize(tiles * tiles, device.limits);
    const uniforms = this.#uniforms;
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(this.#pipeline);
    for (let r0 = 0; r0 < rows; r0 += perSlice) {
      const N = Math.min(perSlice, rows - r0);
      const u = pool.acquire(
        GRAM_PARAMS.size,
        GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
        "gram-params",
      );
      uniforms.push(u);
      device.queue.writeBuffer(u, 0, GRAM_PARAMS.pack({ N, n, tiles, nx: grid.nx }));
      pass.setBindGroup(
        0,
        device.createBindGroup({
          layout: this.#pipeline.getBindGroupLayout(0),
          entries: [
            { binding: 0, resource: { buffer: u } },
            {
              binding: 1,
              resource: { buffer: x, offset: offset + r0 * rowBytes, size: N * rowBytes },
            },
            { binding: 2, resource: { buffer: this.#hi } },
            { binding: 3, resource: { buffer: this.#lo } },
          ],
        }),
      );
      pass.dispatchWorkgroups(grid.x, grid.y);
    }
    pass.end();
    device.queue.submit([enc.finish()]);
    this.nsamples += samples;
  }

  /**
   * H [cols, cols] = 2/nsamples · Σ xᵀx, float64, symmetric.
   * @throws RangeError when nothing was added
   */
  async finish(): Promise<Float64Array> {
    this.#live("finish()");
    if (this.nsamples === 0) {
      throw new RangeError("GpuHessian.finish(): no batches added (call addBatch() first)");
    }
    const n = this.cols;
    const hi = new Float32Array(await readBuffer(this.gpu, this.#hi, 4 * n * n));
    const lo = new Float32Array(await readBuffer(this.gpu, this.#lo, 4 * n * n));
    const H = new Float64Array(n * n);
    const s = 2 / this.nsamples;
    for (let i = 0; i < n; i++) {
      for (let j = i; j < n; j++) {
        const v = s * (hi[i * n + j] + lo[i * n + j]);
        H[i * n + j] = v;
        H[j * n + i] = v;
      }
    }
    return H;
  }

  /** Returns the buffers to the pool. */
  release(): void {
    this.#live("release()");
    this.#released = true;
    this.gpu.pool.release(this.#hi);
    this.gpu.pool.release(this.#lo);
    if (this.#x) this.gpu.pool.release(this.#x);
    for (const u of this.#uniforms) this.gpu.pool.release(u);
    this.#uniforms.length = 0;
  }

  /**
   * A compiled accumulator (the constructor alone cannot compile the kernel, which is async).
   * @param gpu the device
   * @param cols input features of the layer
   * @param opts binding limit
   */
  static async create(gpu: Gpu, cols: number, opts: GpuHessianOptions = {}): Promise<GpuHessian> {
    return (await GpuHessian.prepare(gpu))(cols, opts);
  }

  /**
   * Compiles the kernel once and returns a synchronous maker of
   * accumulators (for callers that create them inside a synchronous loop).
   * @param gpu the device
   * @returns (cols, opts) => a new accumulator
   */
  static async prepare(gpu: Gpu): Promise<(cols: number, opts?: GpuHessianOptions) => GpuHessian> {
    const pipeline = await gpu.pipelines.get(GRAM_KERNEL, {});
    return (cols, opts = {}) => {
      const h = new GpuHessian(gpu, cols, opts);
      h.#pipeline = pipeline;
      return h;
    };
  }
}
