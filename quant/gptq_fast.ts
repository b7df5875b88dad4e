/**
 * GPTQ's solver at LLaMA-7B scale: the same lifecycle and results as
 * {@linkcode Gptq} (quant/gptq.ts, the plain transcription of IST-DASLab/gptq
 * gptq.py kept as the tested reference), with every O(n³) step as a blocked
 * matrix product in WebAssembly SIMD (quant/gptq_kernels.wat's `gemm_4x8`;
 * model/wasm/kernels.wat's `gptq_block`; for Hinv, `gemm_f32` and
 * gptq_kernels.wat's `gemm_tri_f32`, loaded together by quant/gptq_kernels.ts)
 * and the work split over worker threads (model/pool.ts):
 *
 * - **Hessian** (`add_batch`): H = 2/nsamples · Σ xᵀx as a symmetric rank-k
 *   update, `gemm_4x8` (4 × 8 register tiles) over X packed in panels of 8
 *   columns, 256 rows of X per pass, only the upper triangle; the rows of H
 *   are split over the workers (tasks of equal area). Rows given to
 *   {@linkcode GptqFast.addBatch} are buffered and accumulated at the next
 *   {@linkcode GptqFast.flush} (or when more than 2²⁶ values are waiting, on
 *   this thread; with 0 workers they are packed as they come, with no
 *   copy, and multiplied 256 at a time, at the same points): fp32 sums per
 *   flush, like torch's `inp.matmul(inp.t())`, added into a float64 Σ xᵀx;
 *   H = (2/nsamples)·Σ xᵀx at the end instead of GPTQ's running rescale
 *   (`H *= nsamples / (nsamples + tmp)`), equal up to rounding.
 * - **Hinv** (`cholesky → cholesky_inverse → cholesky(upper)`): in fp32 like
 *   GPTQ's torch code, by quant/linalg.ts {@linkcode upperCholeskyOfInverseF32}
 *   (the reference's route, all in WebAssembly SIMD); H, its dead columns
 *   and its damping stay float64 until then.
 * - **The sweep** (`fasterquant`'s loop): rows are independent once Hinv is
 *   known, so each worker takes a range of rows, held transposed (one column
 *   of W is a contiguous vector of rows). Per block of `blocksize` columns:
 *   the group parameters of every group starting in the block, from the
 *   block-level W (as GPTQ), here through the grid (the group's columns of
 *   every row gathered by `transpose_f32`); the in-block sweep
 *   `gptq_block` (quantize a column of 64 rows, err1 = (w − q)/d, the rank-1
 *   update of the block's later columns); the lazy update
 *   W[:, i2:] −= Err1 · Hinv[i1:i2, i2:] as one `gemm_4x8`.
 *
 * Floating point, and why a code can differ from the reference: Hinv and
 * the sweep are fp32 like GPTQ's torch code (the in-block update
 * w − err1·Hinv1[i, j] and the lazy update's sums of Err1·Hinv in k order,
 * and the Hessian's and Hinv's products, are relaxed-SIMD multiply-adds:
 * fused, one rounding each, where the host has FMA, as BLAS does, else
 * rounded twice — so the last ulp can differ between hosts), where the
 * reference {@linkcode Gptq} computes Hinv in float64 and rounds each update once. The
 * weights fed to the grid therefore differ by a few fp32 ulps, and a code
 * differs only where a weight lies within those ulps of a rounding boundary
 * of its grid (tests: the same codes on the reference's test layers). Losses
 * (w − q)²/d² are computed per weight in fp32 and summed in float64.
 *
 * Results never depend on the number of workers: every entry of H and every
 * row of the sweep is computed by one task, in the same order.
 *
 * @module
 */
import { packCodes, toF16, type UniformTensor } from "./format.ts";
import { DEFAULT_WORKERS } from "./spec.ts";
import {
  NotPositiveDefiniteError,
  upperCholeskyOfInverseF32,
  upperCholeskyOfInverseSimd,
} from "./linalg.ts";
import {
  checkFinite,
  checkGroupSize,
  codeBits,
  maxqField,
  maxqOf,
  minMaxGrid,
  type UniformGrid,
} from "./rtn.ts";
import { awqGrid } from "./awq.ts";
import {
  descendingOrder,
  GPTQ_BLOCKSIZE,
  GPTQ_PERCDAMP,
  type GptqOptions,
  type GptqResult,
} from "./gptq.ts";
import { checkBits } from "./format.ts";
import { runTasks, type TaskHandler } from "../model/pool.ts";
import { growMemory } from "../model/wasm/kernels.ts";
import { type GptqKernels, gptqKernels } from "./gptq_kernels.ts";

/**
 * A grid by name, so that it can travel to worker threads (a
 * {@linkcode UniformGrid} object holds a function, which cannot).
 */
export type GridSpec =
  | { kind: "minmax"; bits: number; sym: boolean; bitBalance?: boolean }
  | { kind: "awq"; bits: number; sym: boolean };

/**
 * The grid a {@linkcode GridSpec} names: quant/rtn.ts `minMaxGrid` or
 * quant/awq.ts `awqGrid`.
 *
 * @example
 * ```ts
 * gridOf({ kind: "minmax", bits: 3, sym: false }).params([-1, 2], 0, 2, "W");
 * ```
 */
export function gridOf(spec: GridSpec): UniformGrid {
  return spec.kind === "awq"
    ? awqGrid(spec.bits, spec.sym)
    : minMaxGrid(spec.bits, spec.sym, spec.bitBalance ?? false);
}

/** Options of {@linkcode GptqFast.fasterquant}: GPTQ's, plus where the grid and the work go. */
export interface GptqFastOptions extends Omit<GptqOptions, "grid"> {
  /**
   * The grid: a {@linkcode GridSpec} (runs on workers) or a
   * {@linkcode UniformGrid} object (its sweep then runs on this thread, with
   * the same numbers). @default { kind: "minmax", bits, sym }
   */
  grid?: UniformGrid | GridSpec;
  /**
   * Precision of Hinv: "f32" as GPTQ's torch code
   * ({@linkcode upperCholeskyOfInverseF32}), or "f64" as the reference
   * ({@linkcode upperCholeskyOfInverseSimd}, about 2× slower), rounded to
   * fp32 for the sweep. @default "f32"
   */
  hinv?: "f32" | "f64";
}

/** Options of the {@linkcode GptqFast} constructor. */
export interface GptqFastInit {
  /**
   * Worker threads for the Hessian and the sweep (0: this thread only).
   * Jobs below ~5·10⁸ multiply-adds always run on this thread (starting
   * workers would cost more). @default DEFAULT_WORKERS (quant/spec.ts: the number of cores)
   */
  workers?: number;
  /** Multiply-adds below which a job runs on this thread whatever `workers` says. @default 5e8 */
  parallelMinMacs?: number;
}

/**
 * Values of x (256 MiB) beyond which {@linkcode GptqFast.addBatch}
 * accumulates the waiting rows on this thread instead of at the next flush.
 */
const PENDING_LIMIT = 1 << 26;
/**
 * Rows of X per packed pass of the Hessian: their products are summed in
 * registers, then added to C (fp32).
 */
const HESSIAN_ROWS = 256;
/** Columns per block of a Hessian `gemm_4x8` call (their panels stay in L2). */
const HESSIAN_JBLK = 128;
/** Rows of W copied into the sweep's memory per transpose_f32 call. */
const STAGE_ROWS = 256;
/** Rows of output per gemm_4x8 call: calls stay short. */
const CALL_ROWS = 256;
/** Default of {@linkcode GptqFastInit.parallelMinMacs}. */
const PARALLEL_MIN_MACS = 5e8;

const ceil4 = (v: number) => (v + 3) & ~3;
const ceil8 = (v: number) => (v + 7) & ~7;

/**
 * GPTQ's solver for one linear layer W [rows, cols], fast: accumulate
 * H = 2/nsamples Σ xᵀx with {@linkcode addBatch} (and {@linkcode flush}),
 * solve with {@linkcode fasterquant}, release with {@linkcode free}. Same
 * options and results as {@linkcode Gptq} (see the module doc for the
 * floating-point differences).
 *
 * @example
 * ```ts
 * const g = new GptqFast(rows, cols, { workers: 2 });
 * for (const x of windows) g.addBatch(x, seqlen);
 * const { q, error } = await g.fasterquant(W, { bits: 3, groupSize: 128 });
 * g.free();
 * ```
 */
export class GptqFast {
  /** Output features (rows of W). */
  readonly rows: number;
  /** Input features (columns of W, order of H). */
  readonly columns: number;
  /** Worker threads (0: this thread). */
  readonly workers: number;
  /** Multiply-adds below which a job stays on this thread. */
  readonly parallelMinMacs: number;
  /** Windows accumulated so far (GPTQ's `nsamples`). */
  nsamples = 0;
  /** Σ xᵀx [columns, columns], upper triangle, float64. Null once consumed. */
  private S: Float64Array | null;
  /** Whether S holds only zeros (nothing accumulated yet): the first rows' sums are stored, not added. */
  private sZero = true;
  private pending: Float32Array[] = []; // with workers: rows of x not yet in S, each [N_i, columns]
  /** With 0 workers: the rows not yet in S, packed and partly multiplied already. */
  private open: HessianRows | null = null;
  private pendingRows = 0; // rows not yet in S

  /**
   * @param rows output features of the layer
   * @param cols input features of the layer
   * @param init workers
   */
  constructor(rows: number, cols: number, init: GptqFastInit = {}) {
    if (!Number.isInteger(rows) || rows < 1 || !Number.isInteger(cols) || cols < 1) {
      throw new RangeError(
        `GptqFast: rows and cols must be positive integers, got ${rows}×${cols}`,
      );
    }
    const workers = init.workers ?? DEFAULT_WORKERS;
    if (!Number.isInteger(workers) || workers < 0) {
      throw new RangeError(`GptqFast: --workers must be an integer ≥ 0, got ${workers}`);
    }
    this.rows = rows;
    this.columns = cols;
    this.workers = workers;
    this.parallelMinMacs = init.parallelMinMacs ?? PARALLEL_MIN_MACS;
    this.S = new Float64Array(cols * cols);
  }

  /**
   * GPTQ's `add_batch`: takes the N rows of x (one per token) from `samples`
   * calibration windows (GPTQ's tmp). With workers, the rows are copied and
   * accumulated at the next {@linkcode flush} (on the workers), or here on
   * this thread once more than 2²⁶ values are waiting; with 0 workers they
   * are packed for the kernel at once (no copy of x), their products added
   * a chunk of 256 rows at a time, and S updated at the same points: the
   * same bits either way.
   *
   * @param x layer inputs [N, cols]
   * @param N number of rows of x
   * @param samples calibration windows x stands for @default 1
   */
  addBatch(x: Float32Array, N: number, samples = 1): void {
    this.live("addBatch()");
    const n = this.columns;
    if (x.length !== N * n) {
      throw new RangeError(
        `GptqFast.addBatch(): expected x of ${N}×${n} = ${N * n} values, got ${x.length}`,
      );
    }
    if (!(samples > 0)) {
      throw new RangeError(`GptqFast.addBatch(): samples must be > 0, got ${samples}`);
    }
    if (!allFinite(x)) {
      const i = x.findIndex((v) => !Number.isFinite(v));
      throw new RangeError(
        `GptqFast.addBatch(): input row ${Math.floor(i / n)} has a non-finite value ${x[i]}`,
      );
    }
    this.nsamples += samples;
    if (N === 0) return;
    if (this.workers === 0) {
      this.open ??= new HessianRows(gptqKernels("GptqFast.addBatch()"), n, 0, ceil8(n));
      this.open.push(x, N);
    } else {
      // on a SharedArrayBuffer, which the workers read (no second copy at the flush)
      const copy = newF32(x.length, true);
      copy.set(x);
      this.pending.push(copy);
    }
    this.pendingRows += N;
    if (this.pendingRows * n > PENDING_LIMIT) this.accumulate();
  }

  /** Accumulates the rows waiting from {@linkcode addBatch} into H, on the workers. */
  async flush(): Promise<void> {
    this.live("flush()");
    const n = this.columns;
    if (this.pendingRows === 0) return;
    if (this.open || (n * n * this.pendingRows) / 2 < this.parallelMinMacs) {
      return this.accumulate();
    }
    await this.accumulateOnWorkers(this.takePending());
  }

  /**
   * A solver seeded with an accumulated H (see {@linkcode Gptq.fromHessian}).
   *
   * @param H 2/nsamples · Σ xᵀx [cols, cols] (only its upper triangle is read; copied)
   * @param nsamples windows H stands for
   * @param init workers
   */
  static fromHessian(
    rows: number,
    cols: number,
    H: Float64Array,
    nsamples: number,
    init: GptqFastInit = {},
  ): GptqFast {
    const g = new GptqFast(rows, cols, init);
    if (H.length !== cols * cols) {
      throw new RangeError(
        `GptqFast.fromHessian(): expected H of ${cols}×${cols} = ${
          cols * cols
        } values, got ${H.length}`,
      );
    }
    if (!(nsamples > 0)) {
      throw new RangeError(`GptqFast.fromHessian(): nsamples must be > 0, got ${nsamples}`);
    }
    const S = g.S!, f = nsamples / 2; // S = nsamples/2 · H
    g.sZero = false;
    for (let i = 0; i < cols; i++) {
      for (let j = i; j < cols; j++) S[i * cols + j] = f * H[i * cols + j];
    }
    g.nsamples = nsamples;
    return g;
  }

  /**
   * A new solver for another layer that reads the same inputs: same
   * columns, a copy of this H and nsamples.
   *
   * @param rows output features of the other layer
   */
  async copyFor(rows: number): Promise<GptqFast> {
    await this.flush();
    const g = new GptqFast(rows, this.columns, {
      workers: this.workers,
      parallelMinMacs: this.parallelMinMacs,
    });
    g.S!.set(this.live("copyFor()"));
    g.sZero = this.sZero;
    g.nsamples = this.nsamples;
    return g;
  }

  /** The accumulated H [cols, cols], full and symmetric (flushes first). */
  async hessian(): Promise<Float64Array> {
    await this.flush();
    return this.H(this.live("hessian()"));
  }

  /**
   * GPTQ's `fasterquant` (see {@linkcode Gptq.fasterquant}): quantizes W
   * [rows, cols] column by column with error feedback through Hinv.
   * Consumes H.
   *
   * @param W weights [rows, cols] (not modified)
   * @param opts bits, groupSize, sym, grid, actOrder, staticGroups, blocksize, percdamp, name
   * @returns the uniform tensor, Σ Losses and the seconds taken (from before
   *   the solve: GPTQ's `tick`; the flush of waiting rows is not counted)
   * @throws {RangeError} as {@linkcode Gptq.fasterquant}
   */
  async fasterquant(W: ArrayLike<number>, opts: GptqFastOptions): Promise<GptqResult> {
    await this.flush();
    const tick = performance.now();
    const what = opts.name ?? "W";
    const S = this.live("fasterquant()");
    const { rows, columns } = this;
    const bits = checkBits(opts.bits);
    const grouped = opts.groupSize !== undefined && opts.groupSize !== null;
    const groupsize = checkGroupSize(opts.groupSize, columns, what);
    const sym = opts.sym ?? false;
    const gridIn = opts.grid ?? { kind: "minmax", bits, sym };
    const spec = "kind" in gridIn ? gridIn as GridSpec : null;
    const grid = spec ? gridOf(spec) : gridIn as UniformGrid;
    if (grid.bits !== bits || grid.sym !== sym) {
      throw new RangeError(
        `GPTQ on ${what}: grid of ${grid.bits} bits${grid.sym ? ", symmetric" : ""} given for ` +
          `bits ${bits}${sym ? ", symmetric" : ""}`,
      );
    }
    const actorder = opts.actOrder ?? false;
    const staticGroups = (opts.staticGroups ?? false) && grouped;
    const blocksize = opts.blocksize ?? GPTQ_BLOCKSIZE;
    const percdamp = opts.percdamp ?? GPTQ_PERCDAMP;
    if (!Number.isInteger(blocksize) || blocksize < 1) {
      throw new RangeError(`GPTQ blocksize must be a positive integer, got ${blocksize}`);
    }
    if (!(percdamp >= 0) || !Number.isFinite(percdamp)) {
      throw new RangeError(`--percdamp must be a finite number ≥ 0, got ${percdamp}`);
    }
    if (this.nsamples === 0) {
      throw new RangeError(
        `GPTQ on ${what}: no calibration data (call addBatch() before fasterquant())`,
      );
    }
    checkFinite(W, rows, columns, what);
    const H = this.upperH(S, S); // [columns, columns], upper triangle, in S's memory
    this.S = null; // consumed, as GPTQ's `del self.H`
    const maxq = grid.maxq ?? maxqOf(bits);
    const ng = columns / groupsize;
    const parallel = spec !== null && rows * columns * columns / 2 >= this.parallelMinMacs;
    const workers = parallel ? this.workers : 0;
    const share = workers > 0;

    const Wf = newF32(rows * columns, share); // [rows, columns], permuted below
    Wf.set(W);
    // Parameters fixed before the sweep ([rows, ng]): per row without groups
    // (from W before dead columns are zeroed), per group with static groups.
    const preScales = new Float32Array(rows * ng), preZeros = new Float32Array(rows * ng);
    if (!grouped) {
      for (let r = 0; r < rows; r++) {
        const p = grid.params(Wf, r * columns, (r + 1) * columns, `${what} row ${r}`);
        preScales[r] = p.scale;
        preZeros[r] = p.zero;
      }
    }
    for (let i = 0; i < columns; i++) {
      if (H[i * columns + i] === 0) {
        H[i * columns + i] = 1;
        for (let r = 0; r < rows; r++) Wf[r * columns + i] = 0;
      }
    }
    if (staticGroups) {
      for (let r = 0; r < rows; r++) {
        for (let g = 0; g < ng; g++) {
          const c0 = r * columns + g * groupsize;
          const p = grid.params(Wf, c0, c0 + groupsize, `${what} row ${r}`);
          preScales[r * ng + g] = p.scale;
          preZeros[r * ng + g] = p.zero;
        }
      }
    }
    let perm: Int32Array | null = null;
    let Hp = H;
    if (actorder) {
      perm = descendingOrder(H, columns);
      const row = new Float32Array(columns);
      for (let r = 0; r < rows; r++) {
        const o = r * columns;
        for (let i = 0; i < columns; i++) row[i] = Wf[o + perm[i]];
        Wf.set(row, o);
      }
      Hp = new Float64Array(columns * columns);
      for (let i = 0; i < columns; i++) {
        const a = perm[i], dst = i * columns;
        for (let j = i; j < columns; j++) {
          const b = perm[j];
          Hp[dst + j] = a <= b ? H[a * columns + b] : H[b * columns + a];
        }
      }
    }
    let mean = 0;
    for (let i = 0; i < columns; i++) mean += Hp[i * columns + i];
    const damp = percdamp * (mean / columns);
    for (let i = 0; i < columns; i++) Hp[i * columns + i] += damp;
    let Hinv: Float32Array; // [columns, columns], fp32
    try {
      Hinv = (opts.hinv ?? "f32") === "f32"
        ? upperCholeskyOfInverseF32(Hp, columns)
        : Float32Array.from(upperCholeskyOfInverseSimd(Hp, columns));
    } catch (e) {
      if (e instanceof NotPositiveDefiniteError) {
        throw new RangeError(
          `GPTQ on ${what}: H is not positive definite after damping with percdamp=${percdamp} ` +
            `(${e.message}); increase --percdamp`,
        );
      }
      throw e;
    }
    const U = share ? newF32(columns * columns, true) : Hinv;
    if (share) U.set(Hinv);

    const codes = new Uint8Array(rows * columns); // [rows, columns], original column order
    const scales = new Float32Array(rows * ng), zeros = new Float32Array(rows * ng);
    let losses = 0;
    const nTasks = workers > 0 ? Math.min(rows, 2 * workers) : 1;
    const bounds = Array.from({ length: nTasks + 1 }, (_, t) => Math.round((t * rows) / nTasks));
    await runTasks<GptqInit, GptqTask, GptqTaskResult>({
      name: "GPTQ sweep",
      worker: new URL("./gptq_worker.ts", import.meta.url),
      handler: gptqTasks,
      workers,
      init: {
        kind: "sweep",
        W: Wf,
        U,
        rows,
        cols: columns,
        blocksize,
        groupsize,
        grouped,
        staticGroups,
        perm,
        grid: spec ?? grid,
        maxq,
        what,
        preScales,
        preZeros,
      },
      tasks: nTasks,
      task: (t) => ({ kind: "sweep", r0: bounds[t], r1: bounds[t + 1] }),
      onResult: (t, res) => {
        const r = res as SweepResult;
        codes.set(r.codes, bounds[t] * columns);
        scales.set(r.scales, bounds[t] * ng);
        zeros.set(r.zeros, bounds[t] * ng);
        losses += r.losses;
      },
    });

    let gIdx: Int32Array | undefined;
    if (grouped && actorder && !staticGroups) {
      gIdx = new Int32Array(columns);
      for (let i = 0; i < columns; i++) gIdx[perm![i]] = Math.floor(i / groupsize);
    }
    const cb = codeBits(maxq);
    const q: UniformTensor = {
      kind: "uniform",
      bits: cb,
      rows,
      cols: columns,
      groupSize: groupsize,
      sym,
      ...maxqField(cb, maxq),
      codes: packCodes(codes, rows, columns, cb),
      scales: toF16(scales),
      zeros: toF16(zeros),
      ...(gIdx ? { gIdx } : {}),
    };
    return { q, error: losses / 2, seconds: (performance.now() - tick) / 1000 };
  }

  /** GPTQ's `free`: drops H and the rows waiting. */
  free(): void {
    this.S = null;
    this.pending = [];
    this.open = null;
    this.pendingRows = 0;
  }

  /** H = (2 / nsamples) · S, full and symmetric. */
  private H(S: Float64Array): Float64Array {
    const n = this.columns;
    const H = this.upperH(S);
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) H[j * n + i] = H[i * n + j];
    return H;
  }

  /**
   * H = (2 / nsamples) · S, upper triangle only (the lower one zero), into
   * `H` (S itself when S is consumed).
   */
  private upperH(S: Float64Array, H: Float64Array = new Float64Array(S.length)): Float64Array {
    const n = this.columns;
    const f = this.nsamples > 0 ? 2 / this.nsamples : 0;
    for (let i = 0; i < n; i++) {
      const o = i * n;
      for (let j = i; j < n; j++) H[o + j] = f * S[o + j];
    }
    return H;
  }

  /** The waiting rows as one array [pendingRows, columns]. */
  private takePending(): Float32Array {
    if (this.pending.length === 1) {
      const x = this.pending[0];
      this.pending = [];
      this.pendingRows = 0;
      return x;
    }
    const x = newF32(this.pendingRows * this.columns, true);
    let o = 0;
    for (const p of this.pending) x.set(p, (o += p.length) - p.length);
    this.pending = [];
    this.pendingRows = 0;
    return x;
  }

  /** S += xᵀx of the rows not yet in S, on this thread. */
  private accumulate(): void {
    const S = this.live("addBatch()");
    const n = this.columns, np = ceil8(n);
    const rows = this.open ??
      new HessianRows(gptqKernels("GptqFast.addBatch()"), n, 0, np).push(this.takePending());
    addUpper(S, n, rows.finish(false), 0, np, this.sZero);
    this.open = null;
    this.pendingRows = 0;
    this.sZero = false;
  }

  /** S += xᵀx, the rows of H split over the workers (x on a SharedArrayBuffer). */
  private async accumulateOnWorkers(x: Float32Array): Promise<void> {
    const S = this.live("flush()");
    const { workers } = this;
    const n = this.columns, N = x.length / n, np = ceil8(n);
    const bounds = equalAreaRows(np, 2 * workers);
    await runTasks<GptqInit, GptqTask, GptqTaskResult>({
      name: "GPTQ Hessian",
      worker: new URL("./gptq_worker.ts", import.meta.url),
      handler: gptqTasks,
      workers,
      init: { kind: "hessian", x, N, n },
      tasks: bounds.length - 1,
      task: (t) => ({ kind: "hessian", i0: bounds[t], i1: bounds[t + 1] }),
      onResult: (t, r) => addUpper(S, n, r as Float32Array, bounds[t], bounds[t + 1], this.sZero),
    });
    this.sZero = false;
  }

  private live(fn: string): Float64Array {
    if (!this.S) {
      throw new Error(`GptqFast.${fn}: H was already consumed by fasterquant() or free()`);
    }
    return this.S;
  }
}

/**
 * Whether every value of x is finite: Σ 0·x[i] is NaN exactly when one is
 * infinite or NaN (four independent sums: no branch per value).
 */
function allFinite(x: Float32Array): boolean {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  const n4 = x.length & ~3;
  for (let i = 0; i < n4; i += 4) {
    s0 += 0 * x[i];
    s1 += 0 * x[i + 1];
    s2 += 0 * x[i + 2];
    s3 += 0 * x[i + 3];
  }
  for (let i = n4; i < x.length; i++) s0 += 0 * x[i];
  return Number.isFinite(s0 + s1 + s2 + s3);
}

/** A Float32Array of `n` zeros, on a SharedArrayBuffer when `shared` (handed to workers without a copy). */
function newF32(n: number, shared: boolean): Float32Array {
  return shared ? new Float32Array(new SharedArrayBuffer(n * 4)) : new Float32Array(n);
}

/**
 * Boundaries (multiples of 8) splitting rows 0..np of an upper triangle
 * into `parts` ranges of about equal area (row i costs np − i).
 */
function equalAreaRows(np: number, parts: number): number[] {
  const total = (np * (np + 1)) / 2;
  const out = [0];
  let acc = 0, i = 0;
  for (let p = 1; p < parts; p++) {
    const target = (total * p) / parts;
    while (i < np && acc + (np - i) <= target) acc += np - i++;
    const b = Math.min(np, (i + 7) & ~7);
    if (b > out[out.length - 1] && b < np) out.push(b);
  }
  out.push(np);
  return out;
}

/**
 * S[i0 + r, i0 + j] += C[r, j] for j ≥ r inside the n × n upper triangle;
 * C [i1 − i0, np − i0] from {@linkcode HessianRows}. When S holds only
 * zeros (`zero`), C is stored instead (a native conversion, and S's fresh
 * pages are written without being read first): the same numbers, as C never
 * holds −0 (its sums are added to a zeroed C: +0 + x) and 0 + c = c.
 */
function addUpper(
  S: Float64Array,
  n: number,
  C: Float32Array,
  i0: number,
  i1: number,
  zero: boolean,
): void {
  const J = ceil8(n) - i0;
  for (let i = i0; i < Math.min(i1, n); i++) {
    const c = C.subarray((i - i0) * J + i - i0, (i - i0) * J + n - i0);
    if (zero) {
      S.set(c, i * n + i);
      continue;
    }
    const s = S.subarray(i * n + i, i * n + n);
    for (let j = 0; j < s.length; j++) s[j] += c[j];
  }
}

/**
 * Rows i0..i1 (multiples of 8) of Σ_t x[t]ᵀ x[t] on one thread, columns from
 * i0, as the rows of x arrive ({@linkcode HessianRows.push}):
 * C [i1 − i0, np − i0] with C[r, j] = H[i0 + r, i0 + j] for j ≥ r (fp32
 * sums; entries left of the diagonal are not computed). Each row's columns
 * i0..np go straight from x into panels of 8 (zeros beyond n), the layout
 * `gemm_4x8` reads, HESSIAN_ROWS rows to a chunk; each full chunk, and the
 * last one at {@linkcode HessianRows.finish}, is multiplied at once
 * (`gemm_4x8`, upper), its products added to C. The chunks, and so the
 * bits, are the same however the rows arrive.
 */
class HessianRows {
  /** The kernels' memory: panels [J/8, HESSIAN_ROWS, 8] at 0, C [R, J] at offC. */
  private readonly f: Float32Array;
  private readonly offC: number;
  private readonly J: number;
  private readonly R: number;
  /** Panels with no column beyond n. */
  private readonly full: number;
  /** Rows in the current chunk. */
  private t = 0;

  constructor(
    private readonly k: GptqKernels,
    private readonly n: number,
    private readonly i0: number,
    i1: number,
  ) {
    const J = this.J = ceil8(n) - i0;
    this.R = i1 - i0;
    this.offC = J * HESSIAN_ROWS * 4;
    growMemory("GptqFast Hessian", k.memory, this.offC + this.R * J * 4);
    this.f = new Float32Array(k.memory.buffer);
    this.full = n - i0 >= J ? J / 8 : Math.floor((n - i0) / 8);
  }

  /** Packs the N rows of x [N, n], multiplying every chunk that fills. */
  push(x: Float32Array, N: number = x.length / this.n): this {
    const { f, n, i0, J, full } = this, step = HESSIAN_ROWS * 8;
    for (let row = 0; row < N; row++) {
      const xr = row * n + i0;
      let p = this.t * 8;
      for (let c8 = 0; c8 < full; c8++, p += step) {
        const s = xr + c8 * 8;
        f[p] = x[s], f[p + 1] = x[s + 1], f[p + 2] = x[s + 2], f[p + 3] = x[s + 3];
        f[p + 4] = x[s + 4], f[p + 5] = x[s + 5], f[p + 6] = x[s + 6], f[p + 7] = x[s + 7];
      }
      for (let c8 = full; c8 < J / 8; c8++, p += step) {
        for (let l = 0; l < 8; l++) {
          const c = i0 + c8 * 8 + l;
          f[p + l] = c < n ? x[xr - i0 + c] : 0;
        }
      }
      if (++this.t === HESSIAN_ROWS) this.multiply();
    }
    return this;
  }

  /** C, after the last chunk's products (a view of the kernels' memory unless `copy`). */
  finish(copy = true): Float32Array {
    if (this.t > 0) this.multiply();
    const { f, offC } = this, end = offC / 4 + this.R * this.J;
    return (copy ? f.slice : f.subarray).call(f, offC / 4, end);
  }

  /**
   * C[r, j] += Σ_t X[t, i0 + r] X[t, i0 + j], j ≥ r, over the current chunk
   * (A = B = its panels), in calls of CALL_ROWS rows of C. A chunk of
   * kc < HESSIAN_ROWS rows first closes the gaps between its panels.
   */
  private multiply(): void {
    const { k, f, J, R, offC } = this, kc = this.t;
    if (kc < HESSIAN_ROWS) {
      for (let p = 1; p < J / 8; p++) {
        f.copyWithin(p * kc * 8, p * HESSIAN_ROWS * 8, p * HESSIAN_ROWS * 8 + kc * 8);
      }
    }
    for (let r0 = 0; r0 < R; r0 += CALL_ROWS) {
      k.gemm_4x8(
        (r0 >> 3) * kc * 32,
        kc * 32,
        0,
        kc,
        HESSIAN_ROWS,
        offC + r0 * J * 4,
        J * 4,
        Math.min(CALL_ROWS, R - r0),
        J,
        HESSIAN_JBLK,
        1,
        r0,
      );
    }
    this.t = 0;
  }
}

/** What a sweep task returns: rows r0..r1 of the result. */
interface SweepResult {
  codes: Uint8Array; // [r1 − r0, cols], original column order
  scales: Float32Array; // [r1 − r0, ng]
  zeros: Float32Array; // [r1 − r0, ng]
  losses: number;
}

/** Shared state of the GPTQ tasks (Hessian rows or a sweep over rows). */
type GptqInit =
  | { kind: "hessian"; x: Float32Array; N: number; n: number }
  | {
    kind: "sweep";
    W: Float32Array; // [rows, cols], permuted, dead columns zeroed
    U: Float32Array; // Hinv [cols, cols], fp32
    rows: number;
    cols: number;
    blocksize: number;
    groupsize: number;
    grouped: boolean;
    staticGroups: boolean;
    perm: Int32Array | null;
    grid: GridSpec | UniformGrid; // a UniformGrid object only on this thread
    maxq: number;
    what: string;
    preScales: Float32Array; // [rows, ng]: per row without groups, static groups
    preZeros: Float32Array;
  };
type GptqTask = { kind: "hessian"; i0: number; i1: number } | {
  kind: "sweep";
  r0: number;
  r1: number;
};
type GptqTaskResult = Float32Array | SweepResult;

/** The tasks of quant/gptq_worker.ts: Hessian rows, or the sweep of a range of rows. */
export const gptqTasks: TaskHandler<GptqInit, GptqTask, GptqTaskResult> = {
  setup(init) {
    return (task) => {
      if (init.kind === "hessian" && task.kind === "hessian") {
        const k = gptqKernels("GptqFast Hessian");
        return new HessianRows(k, init.n, task.i0, task.i1).push(init.x, init.N).finish();
      }
      if (init.kind === "sweep" && task.kind === "sweep") return sweepRows(init, task.r0, task.r1);
      throw new Error(`GPTQ task ${task.kind} sent to a ${init.kind} pool`);
    };
  },
  transfer(r) {
    const bufs = r instanceof Float32Array
      ? [r.buffer]
      : [r.codes.buffer, r.scales.buffer, r.zeros.buffer];
    return bufs.filter((b): b is ArrayBuffer => b instanceof ArrayBuffer);
  },
};

/**
 * fasterquant's sweep over rows r0..r1, on one thread (module doc). W is
 * held transposed: WT[c, r] = W[r0 + r, c], rows padded to a multiple of 8
 * (zero weights, scale 1, zero point 0: they quantize to 0 and feed nothing
 * back).
 */
function sweepRows(
  init: Extract<GptqInit, { kind: "sweep" }>,
  r0: number,
  r1: number,
): SweepResult {
  const { W, U, cols: n, blocksize: bs, groupsize: gs, grouped, staticGroups, perm, maxq } = init;
  const grid = "kind" in init.grid ? gridOf(init.grid) : init.grid;
  const ng = n / gs;
  const R = r1 - r0, Rp = ceil8(R);
  const ldw = Rp + 16; // floats per row of WT (off multiples of 4 KiB)
  const R4 = ceil4(R), ldg = ceil4(gs);
  // Memory (bytes): WT [n + 8, ldw]; Hinv[i1:i2, i2:] in panels of 8 columns
  // [ceil8(n)/8, bs, 8]; H1 [bs, bs]; scale, zero and codes [bs, ldw] each;
  // −Err1 panels [Rp/8, bs, 8]; err scratch; losses; one group of every row
  // G [R4, ldg]; STAGE_ROWS rows of W on their way into WT [STAGE_ROWS, n4].
  const offW = 0;
  const offHb = offW + (n + 8) * ldw * 4;
  const offH1 = offHb + bs * ceil8(n) * 4;
  const offS = offH1 + bs * bs * 4;
  const offZ = offS + bs * ldw * 4;
  const offQ = offZ + bs * ldw * 4;
  const offE = offQ + bs * ldw * 4;
  const offT = offE + Rp * bs * 4;
  const offL = offT + 256;
  const offG = (offL + 32 + 15) & ~15;
  const n4 = ceil4(n), offX = offG + R4 * ldg * 4;
  const k = gptqKernels("GptqFast.fasterquant()");
  growMemory("GptqFast.fasterquant()", k.memory, offX + STAGE_ROWS * n4 * 4);
  const f = new Float32Array(k.memory.buffer);
  const Hb = f.subarray(offHb / 4, offH1 / 4);
  const H1 = f.subarray(offH1 / 4, offS / 4);
  const Sc = f.subarray(offS / 4, offZ / 4);
  const Zc = f.subarray(offZ / 4, offQ / 4);
  const Qc = f.subarray(offQ / 4, offE / 4);
  const G = f.subarray(offG / 4, offG / 4 + R4 * ldg);
  // WT[c, r] = W[r0 + r, c]: STAGE_ROWS rows at a time copied in (zeros beyond n and
  // beyond R), then transpose_f32
  const X = f.subarray(offX / 4, offX / 4 + STAGE_ROWS * n4);
  for (let a = 0; a < R; a += STAGE_ROWS) {
    const rows = Math.min(STAGE_ROWS, R - a), rows4 = ceil4(rows);
    for (let r = 0; r < rows; r++) {
      X.set(W.subarray((r0 + a + r) * n, (r0 + a + r + 1) * n), r * n4);
    }
    X.fill(0, rows * n4, rows4 * n4);
    k.transpose_f32(offX, n4 * 4, offW + a * 4, ldw * 4, rows4, n4);
  }
  const scales = init.preScales.slice(r0 * ng, r1 * ng); // [R, ng]
  const zeros = init.preZeros.slice(r0 * ng, r1 * ng);
  const codesT = new Uint8Array(n * R); // [n, R]: codes by (original) column
  // the grid of column i of the block for every row (padding rows: scale 1,
  // zero 0), copied from column i − 1 when it has the same group g
  const setColumn = (i: number, g: number, sameAsPrevious: boolean) => {
    const o = i * ldw;
    if (sameAsPrevious) {
      Sc.copyWithin(o, o - ldw, o - ldw + Rp);
      Zc.copyWithin(o, o - ldw, o - ldw + Rp);
      return;
    }
    for (let r = 0; r < R; r++) {
      Sc[o + r] = scales[r * ng + g];
      Zc[o + r] = zeros[r * ng + g];
    }
    for (let r = R; r < Rp; r++) Sc[o + r] = 1, Zc[o + r] = 0;
  };
  if (!grouped) { for (let i = 0; i < bs; i++) setColumn(i, 0, i > 0); }
  for (let i1 = 0; i1 < n; i1 += bs) {
    const i2 = Math.min(i1 + bs, n), count = i2 - i1;
    if (grouped && !staticGroups) {
      // find_params(W[:, c:c+gs]) of every group starting in the block, on the block-level W
      for (let c = Math.ceil(i1 / gs) * gs; c < i2; c += gs) {
        k.transpose_f32(offW + c * ldw * 4, ldw * 4, offG, ldg * 4, ldg, R4); // G[r, t] = WT[c + t, r]
        const g = c / gs;
        for (let r = 0; r < R; r++) {
          const p = grid.params(G, r * ldg, r * ldg + gs, `${init.what} row ${r0 + r}`);
          scales[r * ng + g] = p.scale;
          zeros[r * ng + g] = p.zero;
        }
      }
    }
    if (grouped) {
      let previous = -1;
      for (let i = 0; i < count; i++) {
        const col = i1 + i, g = Math.floor((staticGroups && perm ? perm[col] : col) / gs);
        setColumn(i, g, g === previous);
        previous = g;
      }
    }
    for (let a = 0; a < count; a++) {
      H1.set(U.subarray((i1 + a) * n + i1, (i1 + a) * n + i2), a * count);
    }
    k.gptq_block(
      offW + i1 * ldw * 4,
      ldw * 4,
      Rp,
      count,
      offH1,
      offS,
      offZ,
      offQ,
      offE,
      offT,
      offL,
      maxq,
    );
    for (let i = 0; i < count; i++) {
      const col = i1 + i, oc = perm ? perm[col] : col;
      codesT.set(Qc.subarray(i * ldw, i * ldw + R), oc * R);
    }
    if (i2 < n) {
      // W[:, i2:] −= Err1 · Hinv[i1:i2, i2:]: WTᵀ rows i2.. += Hinv[i1:i2, i2:]ᵀ · (−Err1)ᵀ,
      // Hb[j, a] = Hinv[i1 + a, i2 + j] in panels of 8 rows j (zeros beyond n)
      const m = n - i2, Jr = ceil4(m), m8 = ceil8(m);
      const full = m >> 3, step = count * 8; // panels with no column beyond n
      for (let a = 0; a < count; a++) {
        const src = (i1 + a) * n + i2;
        let p = a * 8;
        for (let c8 = 0; c8 < full; c8++, p += step) {
          const s = src + c8 * 8;
          Hb[p] = U[s], Hb[p + 1] = U[s + 1], Hb[p + 2] = U[s + 2], Hb[p + 3] = U[s + 3];
          Hb[p + 4] = U[s + 4], Hb[p + 5] = U[s + 5], Hb[p + 6] = U[s + 6], Hb[p + 7] = U[s + 7];
        }
        for (let j = full * 8; j < m8; j++) Hb[p + (j & 7)] = j < m ? U[src + j] : 0;
      }
      for (let j0 = 0; j0 < Jr; j0 += CALL_ROWS) {
        k.gemm_4x8(
          offHb + (j0 >> 3) * count * 32,
          count * 32,
          offE,
          count,
          count,
          offW + (i2 + j0) * ldw * 4,
          ldw * 4,
          Math.min(CALL_ROWS, Jr - j0),
          Rp,
          128,
          0,
          0,
        );
      }
    }
  }
  const codes = new Uint8Array(R * n);
  transpose(codesT, 0, R, codes, 0, n, n, R);
  const l = new Float64Array(k.memory.buffer, offL, 4);
  return { codes, scales, zeros, losses: l[0] + l[1] + l[2] + l[3] };
}

/**
 * dst[dOff + c·ldd + r] = src[sOff + r·lds + c] for r < rows, c < cols, in
 * tiles of 32 × 32 so that both sides stay in cache (a plain loop writes
 * one cache line per value when rows are long).
 */
function transpose<T extends Float32Array | Uint8Array>(
  src: T,
  sOff: number,
  lds: number,
  dst: T,
  dOff: number,
  ldd: number,
  rows: number,
  cols: number,
): void {
  for (let r0 = 0; r0 < rows; r0 += 32) {
    const r1 = Math.min(r0 + 32, rows);
    for (let c0 = 0; c0 < cols; c0 += 32) {
      const c1 = Math.min(c0 + 32, cols);
      for (let r = r0; r < r1; r++) {
        const s = sOff + r * lds, d = dOff + r;
        for (let c = c0; c < c1; c++) dst[d + c * ldd] = src[s + c];
      }
    }
  }
}

/**
 * GPTQ's Hessian accumulation on the fast path, in the shape of
 * quant/sequential.ts's `HessianAccumulatorFactory` (for
 * `gptqQuantizeModelAsync`): each accumulator buffers its windows and
 * `finish()` accumulates them on `workers` threads.
 *
 * @param workers worker threads @default DEFAULT_WORKERS
 * @example
 * ```ts
 * const acc = fastHessians(2)(0, "wq", 4096);
 * acc.addBatch(x, 2048);
 * const H = await acc.finish();
 * ```
 */
export function fastHessians(
  workers: number = DEFAULT_WORKERS,
): (layer: number, name: string, cols: number) => {
  addBatch(x: Float32Array, rows: number): void;
  finish(): Promise<Float64Array>;
} {
  return (_layer, _name, cols) => {
    const g = new GptqFast(1, cols, { workers });
    return {
      addBatch: (x, rows) => g.addBatch(x.subarray(0, rows * cols), rows),
      finish: async () => {
        const H = await g.hessian();
        g.free();
        return H;
      },
    };
  };
}
