/**
 * SqueezeLLM (Kim et al., 2023): sensitivity-based non-uniform quantization
 * with Dense-and-Sparse decomposition, for one linear layer.
 *
 * Following the official code (SqueezeAILab/SqueezeLLM `quantization/nuq.py`,
 * `squeezellm/outliers.py`, `quantization/generate_outlier_config.py`,
 * `squeezellm/quant.py`):
 *
 * 1. Sensitive values (§4.2): with k = ⌊numel · sensitivePct / 100⌋, the
 *    weights whose Fisher information F is strictly greater than the k-th
 *    largest F of the layer (`gweight > topk(k).values[-1]`): k − 1 values
 *    when F has no ties (the k-th largest itself stays), fewer with ties at
 *    the threshold; none when k = 0.
 * 2. Outliers (§4.2): q1, q3 = the layer's 25% / 75% quantiles (numpy's
 *    default linear interpolation), IQR = q3 − q1, the threshold
 *    T = max(|q1 − r·IQR|, |q3 + r·IQR|), and the non-zero weights with
 *    |w| ≥ T (of those not already sensitive) leave. One range r serves the
 *    whole model; {@linkcode findOutlierRange} picks it for a target
 *    percentage, as the README asks users to do by hand.
 * 3. The removed values are zeroed in the dense matrix W_d, and every zero of
 *    W_d gets k-means sample weight 0 (`sample_weight = g · (w != 0)`).
 * 4. Each row of W_d is clustered into 2^b centroids by Fisher-weighted 1-D
 *    k-means ({@linkcode kmeans1d}; the official code runs scikit-learn's
 *    KMeans per row). The row's lookup table is its centroids in fp16, and
 *    each code is the nearest fp16 entry, so `dequantize()` is exactly what
 *    gets evaluated.
 * 5. The sparse part (CSR) holds, at every removed position, the original
 *    value minus the dense reconstruction there (the removed zero decodes to
 *    the centroid nearest 0: quant.py's "zero mapping"), so dense + sparse
 *    gives back the original value. In fp32 the value is chosen so that the
 *    fp32 sum is bit-exact whenever some fp32 value allows it (otherwise it
 *    is off by one rounding of the sum); in fp16 it is off by the fp16
 *    rounding of the residual.
 *
 * Deviation from the official code: a sensitive weight that is exactly 0 is
 * kept in the sparse part (value −l) so that it is reconstructed as 0; the
 * official `to_sparse()` drops it and leaves the dense code's centroid.
 *
 * Checked step by step against a re-implementation of the official pipeline
 * (`eval/bench/peers/squeezellm_official.py`, scikit-learn ≥ 1.3 as nuq.py's
 * pinned 1.3.1) on stories260K at 3 bits with the same Fisher: identical
 * range r, sensitive and outlier sets and sample weights; from the same
 * k-means++ init, scikit-learn's Lloyd and {@linkcode kmeans1d} give the same
 * centroids (to float32 rounding); the same sparse rule. Perplexity
 * differences between the two are k-means seed draws (±2% on this tiny
 * model). With scikit-learn < 1.3, whose k-means++ ignores sample_weight,
 * the official dense-only result is worse and Dense-and-Sparse gains more.
 *
 * Rows can run on worker threads (`quant/kmeans_worker.ts`); a row's k-means
 * seed is {@linkcode rowSeed}(seed, row), so results do not depend on the
 * number of workers or on which worker ran a row.
 *
 * @module
 */
import {
  checkBits,
  codeAt,
  type CsrMatrix,
  fromF16,
  type LutTensor,
  packCodes,
  type QuantizedLinear,
  toF16,
  wordsPerRow,
} from "./format.ts";
import { kmeans1d, type KMeansMethod, nearestCodes } from "./kmeans1d.ts";
import { f32Residual, kthLargest, quantilesLinear } from "./stats.ts";
import { DEFAULT_WORKERS, DEFAULTS } from "./spec.ts";
import { runTasks, type TaskHandler } from "../model/pool.ts";

/**
 * Defaults of {@linkcode SqueezeLLMOptions}; those a spec holds come from
 * quant/spec.ts's table, the one source for the library and the CLI.
 */
export const SQUEEZELLM_DEFAULTS = {
  seed: DEFAULTS.squeezellm.calib.seed,
  sensitivePct: DEFAULTS.squeezellm.sensitivePct,
  sparseDtype: "f16",
  method: "lloyd",
  workers: DEFAULT_WORKERS,
  maxIter: DEFAULTS.squeezellm.kmeansIters,
  tol: DEFAULTS.squeezellm.kmeansTol,
} as const;

/** Options of {@linkcode squeezellmQuantize}. */
export interface SqueezeLLMOptions {
  /** Bits per weight: the LUT has 2^bits entries per row. 2..8. */
  bits: number;
  /** Seed of the k-means++ initializations. @default 0 */
  seed?: number;
  /** Percentage (0..100) of the layer's weights to keep sparse by Fisher information: 0.05 means 0.05%. @default 0 */
  sensitivePct?: number;
  /** Outlier range r (the official `--range`, e.g. 1.8); absent: no outliers removed. */
  outlierRange?: number;
  /** Storage of the sparse values. @default "f16" */
  sparseDtype?: "f16" | "f32";
  /** k-means by Lloyd's algorithm (as the official code) or the exact DP optimum. @default "lloyd" */
  method?: KMeansMethod;
  /** Worker threads for the rows (0 = this thread). @default DEFAULT_WORKERS (quant/spec.ts) */
  workers?: number;
  /** Most Lloyd iterations per row. @default 50 */
  maxIter?: number;
  /** Lloyd's relative tolerance (see {@linkcode kmeans1d}). @default 1e-4 */
  tol?: number;
  /** Rows per worker task. @default ⌈rows / (8 · workers)⌉, at most 256 */
  chunkRows?: number;
}

/** What {@linkcode squeezellmQuantize} did. */
export interface SqueezeLLMStats {
  /** Weights removed for their Fisher information. */
  nSensitive: number;
  /** Weights removed as outliers (not counting sensitive ones). */
  nOutliers: number;
  /** Non-zeros of the sparse part (nSensitive + nOutliers). */
  nnz: number;
  /** The outlier threshold T of this layer, when outlierRange was given. */
  outlierThreshold?: number;
  /** Mean Lloyd iterations per row. */
  kmeansIterations: number;
  /** Wall time of the whole call. */
  seconds: number;
}

/** The result of {@linkcode squeezellmQuantize}. */
export interface SqueezeLLMResult {
  q: QuantizedLinear & { dense: LutTensor };
  stats: SqueezeLLMStats;
}

/**
 * The k-means seed of row `row` for a layer quantized with `seed`: a 32-bit
 * hash of both, so a row's result does not depend on who computes it.
 *
 * @example
 * ```ts
 * rowSeed(0, 1) !== rowSeed(0, 2); // true
 * ```
 */
export function rowSeed(seed: number, row: number): number {
  let h = Math.imul((seed >>> 0) ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(row + 1, 0xc2b2ae35);
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Quantizes one linear weight with SqueezeLLM (see the module doc).
 *
 * @param W weights [rows, cols] (row = output feature)
 * @param F Fisher information [rows, cols] (squared gradients), ≥ 0
 * @param rows output features
 * @param cols input features
 * @param opts see {@linkcode SqueezeLLMOptions}
 * @returns the LUT dense part, the CSR sparse part (absent when empty), and stats
 * @throws RangeError on bad bits/options/shapes, NaN/±Inf in W or F, negative F,
 *   or a centroid or sparse value beyond fp16 range
 *
 * @example
 * ```ts
 * const W = new Float32Array(64 * 64).map((_, i) => Math.sin(i * 1.3) / 50); // [64, 64]
 * const F = W.map((w, i) => (w * (i % 7)) ** 2); // Fisher [64, 64]
 * const { q, stats } = await squeezellmQuantize(W, F, 64, 64, { bits: 3, sensitivePct: 0.05, outlierRange: 1.8 });
 * const Wq = dequantize(q); // [64, 64]; stats.nnz sparse values
 * ```
 */
export async function squeezellmQuantize(
  W: Float32Array,
  F: Float32Array,
  rows: number,
  cols: number,
  opts: SqueezeLLMOptions,
): Promise<SqueezeLLMResult> {
  const t0 = performance.now();
  const D = SQUEEZELLM_DEFAULTS; // options given as undefined take the default too
  const o = {
    seed: opts.seed ?? D.seed,
    sensitivePct: opts.sensitivePct ?? D.sensitivePct,
    sparseDtype: opts.sparseDtype ?? D.sparseDtype,
    method: opts.method ?? D.method,
    workers: opts.workers ?? D.workers,
    maxIter: opts.maxIter ?? D.maxIter,
    tol: opts.tol ?? D.tol,
    chunkRows: opts.chunkRows,
  };
  const bits = checkBits(opts.bits, "squeezellmQuantize() option bits");
  const where = "squeezellmQuantize()";
  if (!Number.isInteger(rows) || rows < 1 || !Number.isInteger(cols) || cols < 1) {
    throw new RangeError(`${where}: rows and cols must be positive integers, got ${rows}×${cols}`);
  }
  const numel = rows * cols;
  for (const [name, a] of [["W", W], ["F", F]] as const) {
    if (a.length !== numel) {
      throw new RangeError(
        `${where}: ${name} must have rows×cols = ${numel} values, got ${a.length}`,
      );
    }
  }
  checkFinite(W, cols, "W");
  checkFinite(F, cols, "F");
  for (let i = 0; i < numel; i++) {
    if (F[i] < 0) {
      throw new RangeError(
        `${where}: Fisher information must be ≥ 0, F[${(i / cols) | 0}, ${i % cols}] is ${F[i]}`,
      );
    }
  }
  if (!(o.sensitivePct >= 0 && o.sensitivePct <= 100)) {
    throw new RangeError(`${where}: option sensitivePct must be in 0..100, got ${o.sensitivePct}`);
  }
  if (opts.outlierRange !== undefined && !(opts.outlierRange >= 0)) {
    throw new RangeError(`${where}: option outlierRange must be ≥ 0, got ${opts.outlierRange}`);
  }
  if (o.sparseDtype !== "f16" && o.sparseDtype !== "f32") {
    throw new RangeError(
      `${where}: option sparseDtype must be "f16" or "f32", got ${o.sparseDtype}`,
    );
  }
  if (!Number.isInteger(o.workers) || o.workers < 0) {
    throw new RangeError(`${where}: option workers must be an integer ≥ 0, got ${o.workers}`);
  }

  // 1–2. Positions that leave for the sparse part.
  const removed = new Uint8Array(numel); // [rows, cols] 1 = sparse
  let nSensitive = 0, nOutliers = 0;
  const kSens = Math.floor((numel * o.sensitivePct) / 100);
  if (kSens > 0) {
    const thres = kthLargest(F, kSens);
    for (let i = 0; i < numel; i++) {
      if (F[i] > thres) {
        removed[i] = 1;
        nSensitive++;
      }
    }
  }
  let T: number | undefined;
  if (opts.outlierRange !== undefined) {
    T = outlierThreshold(W, opts.outlierRange);
    for (let i = 0; i < numel; i++) {
      if (!removed[i] && W[i] !== 0 && Math.abs(W[i]) >= T) {
        removed[i] = 1;
        nOutliers++;
      }
    }
  }
  // 3. Dense part with the removed values zeroed.
  const Wd = Float32Array.from(W); // [rows, cols]
  for (let i = 0; i < numel; i++) if (removed[i]) Wd[i] = 0;

  // 4. Per-row LUTs and codes.
  const k = 1 << bits, wpr = wordsPerRow(cols, bits);
  const lut = new Uint16Array(rows * k); // fp16 [rows, 2^bits]
  const codes = new Uint32Array(rows * wpr); // [rows, wpr]
  const rowOpts: LutRowOptions = {
    bits,
    seed: o.seed,
    method: o.method,
    maxIter: o.maxIter,
    tol: o.tol,
  };
  let iterations: number;
  if (o.workers === 0) {
    const r = quantizeLutRows(Wd, F, rows, cols, 0, rowOpts);
    lut.set(r.lut);
    codes.set(r.codes);
    iterations = r.iterations;
  } else {
    const chunk = o.chunkRows ?? Math.min(256, Math.ceil(rows / (8 * o.workers)));
    if (!Number.isInteger(chunk) || chunk < 1) {
      throw new RangeError(`${where}: option chunkRows must be a positive integer, got ${chunk}`);
    }
    iterations = await rowsOnWorkers(Wd, F, rows, cols, rowOpts, o.workers, chunk, lut, codes);
  }
  const dense: LutTensor = { kind: "lut", bits, rows, cols, codes, lut };

  // 5. Sparse part: original − dense reconstruction at the removed positions.
  const nnz = nSensitive + nOutliers;
  let sparse: CsrMatrix | undefined;
  if (nnz > 0) sparse = sparseResidual(W, removed, dense, nnz, o.sparseDtype);

  const stats: SqueezeLLMStats = {
    nSensitive,
    nOutliers,
    nnz,
    kmeansIterations: iterations / rows,
    seconds: (performance.now() - t0) / 1000,
  };
  if (T !== undefined) stats.outlierThreshold = T;
  return { q: sparse ? { dense, sparse } : { dense }, stats };
}

/** Options of {@linkcode quantizeLutRows} (what a worker task needs). */
export interface LutRowOptions {
  bits: number;
  seed: number;
  method: KMeansMethod;
  maxIter: number;
  tol: number;
}

/**
 * Steps 3–4 of the module doc for a block of rows: Fisher-weighted k-means of
 * each row of the dense part (sample weight F · (W_d ≠ 0)), fp16 LUT, nearest
 * fp16 codes, packed. Pure; this is what `kmeans_worker.ts` runs.
 *
 * @param Wd dense weights [nRows, cols], removed values zeroed
 * @param F Fisher information [nRows, cols]
 * @param nRows rows in this block
 * @param cols input features
 * @param firstRow index of the block's first row in the layer (for {@linkcode rowSeed})
 * @param opts bits, seed, method, maxIter, tol
 * @returns lut fp16 [nRows, 2^bits], packed codes [nRows, wordsPerRow(cols, bits)],
 *   and the summed Lloyd iterations
 * @throws RangeError when a centroid does not fit in fp16
 *
 * @example
 * ```ts
 * const { lut, codes } = quantizeLutRows(Wd, F, 4, 64, 0, { bits: 3, seed: 0, method: "lloyd", maxIter: 50, tol: 1e-4 });
 * ```
 */
export function quantizeLutRows(
  Wd: Float32Array,
  F: Float32Array,
  nRows: number,
  cols: number,
  firstRow: number,
  opts: LutRowOptions,
): { lut: Uint16Array; codes: Uint32Array; iterations: number } {
  const k = 1 << opts.bits;
  const lut = new Uint16Array(nRows * k); // fp16 [nRows, k]
  const rowCodes = new Uint16Array(nRows * cols); // [nRows, cols]
  const sw = new Float32Array(cols); // [cols] sample weights of one row
  let iterations = 0;
  for (let r = 0; r < nRows; r++) {
    const x = Wd.subarray(r * cols, (r + 1) * cols);
    const g = F.subarray(r * cols, (r + 1) * cols);
    for (let c = 0; c < cols; c++) sw[c] = x[c] !== 0 ? g[c] : 0;
    const km = kmeans1d(x, sw, k, {
      seed: rowSeed(opts.seed, firstRow + r),
      method: opts.method,
      maxIter: opts.maxIter,
      tol: opts.tol,
      codes: false,
    });
    iterations += km.iterations;
    const lutRow = toF16(km.centroids);
    const lut32 = fromF16(lutRow);
    for (let j = 0; j < k; j++) {
      if (!Number.isFinite(lut32[j])) {
        throw new RangeError(
          `squeezellm: row ${firstRow + r}: centroid ${km.centroids[j]} does not fit in fp16`,
        );
      }
    }
    lut.set(lutRow, r * k);
    rowCodes.set(nearestCodes(x, Float64Array.from(lut32)), r * cols);
  }
  return { lut, codes: packCodes(rowCodes, nRows, cols, opts.bits), iterations };
}

/** One block of rows for {@linkcode lutRowTasks}: dense weights and Fisher [nRows, cols]. */
export interface LutRowTask {
  firstRow: number;
  nRows: number;
  wd: Float32Array<ArrayBuffer>; // [nRows, cols]
  f: Float32Array<ArrayBuffer>; // [nRows, cols]
}

/** The rows of one layer as pool tasks: a block of rows → {@linkcode quantizeLutRows}. */
export const lutRowTasks: TaskHandler<
  LutRowOptions & { cols: number },
  LutRowTask,
  { lut: Uint16Array; codes: Uint32Array; iterations: number }
> = {
  setup(init) {
    return (t) => quantizeLutRows(t.wd, t.f, t.nRows, init.cols, t.firstRow, init);
  },
  transfer: (r) => [r.lut.buffer as ArrayBuffer, r.codes.buffer as ArrayBuffer],
};

/** Runs {@linkcode quantizeLutRows} over chunks of rows on the worker pool (`kmeans_worker.ts`). */
async function rowsOnWorkers(
  Wd: Float32Array,
  F: Float32Array,
  rows: number,
  cols: number,
  opts: LutRowOptions,
  nWorkers: number,
  chunk: number,
  lut: Uint16Array,
  codes: Uint32Array,
): Promise<number> {
  const k = 1 << opts.bits, wpr = wordsPerRow(cols, opts.bits);
  let iterations = 0;
  await runTasks({
    name: "squeezellm k-means",
    worker: new URL("./kmeans_worker.ts", import.meta.url),
    handler: lutRowTasks,
    workers: nWorkers,
    init: { ...opts, cols },
    tasks: Math.ceil(rows / chunk),
    task: (t) => {
      const r0 = t * chunk, r1 = Math.min(rows, r0 + chunk);
      const wd = Wd.slice(r0 * cols, r1 * cols), f = F.slice(r0 * cols, r1 * cols);
      return { firstRow: r0, nRows: r1 - r0, wd, f };
    },
    transferTask: (t) => [t.wd.buffer, t.f.buffer],
    onResult: (t, r) => {
      lut.set(r.lut, t * chunk * k);
      codes.set(r.codes, t * chunk * wpr);
      iterations += r.iterations;
    },
  });
  return iterations;
}

/** CSR of W − dequantize(dense) at the removed positions, row-major. */
function sparseResidual(
  W: Float32Array,
  removed: Uint8Array,
  dense: LutTensor,
  nnz: number,
  dtype: "f16" | "f32",
): CsrMatrix {
  const { rows, cols, bits } = dense;
  const k = 1 << bits;
  const lut32 = fromF16(dense.lut);
  const rowPtr = new Int32Array(rows + 1), colIdx = new Int32Array(nnz);
  const vals = dtype === "f32" ? new Float32Array(nnz) : new Float16Array(nnz);
  let p = 0;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      if (!removed[i]) continue;
      const l = lut32[r * k + codeAt(dense.codes, cols, bits, r, c)];
      const v = dtype === "f32" ? f32Residual(W[i], l) : W[i] - l;
      vals[p] = v;
      if (!Number.isFinite(vals[p])) {
        throw new RangeError(
          `squeezellm: sparse value ${v} at (${r}, ${c}) does not fit in ${dtype}; use sparseDtype "f32"`,
        );
      }
      colIdx[p++] = c;
    }
    rowPtr[r + 1] = p;
  }
  const values = vals instanceof Float32Array ? vals : new Uint16Array(vals.buffer);
  return { rows, cols, rowPtr, colIdx, values, dtype };
}

/** Throws a RangeError naming the first NaN/±Inf of a [rows, cols] array. */
function checkFinite(a: Float32Array, cols: number, name: string): void {
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) {
      throw new RangeError(
        `squeezellmQuantize(): ${name}[${(i / cols) | 0}, ${i % cols}] is ${
          a[i]
        }; ${name} must be finite`,
      );
    }
  }
}

/**
 * The outlier threshold T of a layer for range r (§4.2 of the paper; the
 * official `generate_outlier_config.py`): q1, q3 = numpy-linear quantiles
 * 0.25 and 0.75 of all the layer's weights, IQR = q3 − q1, and
 * T = max(|q1 − r·IQR|, |q3 + r·IQR|). Weights with |w| ≥ T are outliers.
 * T grows linearly in r: T = |q1 + q3|/2 + IQR/2 + r·IQR.
 *
 * @param W the layer's weights (any shape)
 * @param r the outlier range (the official `--range`, 1.5–2.0 recommended)
 * @returns T
 *
 * @example
 * ```ts
 * outlierThreshold(Float32Array.of(-2, -1, 0, 1, 2), 1.5); // q1 = −1, q3 = 1 → T = 4
 * ```
 */
export function outlierThreshold(W: Float32Array, r: number): number {
  const { q1, q3 } = quartiles(W);
  return thresholdFromQuartiles(q1, q3, r);
}

function quartiles(W: Float32Array): { q1: number; q3: number } {
  for (let i = 0; i < W.length; i++) {
    if (!Number.isFinite(W[i])) throw new RangeError(`outlier threshold: weight ${i} is ${W[i]}`);
  }
  const [q1, q3] = quantilesLinear(Float32Array.from(W), [0.25, 0.75]);
  return { q1, q3 };
}

function thresholdFromQuartiles(q1: number, q3: number, r: number): number {
  const iqr = q3 - q1;
  return Math.max(Math.abs(q1 - r * iqr), Math.abs(q3 + r * iqr));
}

/**
 * Percentage of all weights of `layers` that are outliers for range r (each
 * layer with its own threshold T, see {@linkcode outlierThreshold}); what
 * `generate_outlier_config.py` prints as "% outlier".
 *
 * @param layers the model's linear weights, one array per layer
 * @param r the outlier range
 * @returns 100 · #{|w| ≥ T_layer} / #weights
 *
 * @example
 * ```ts
 * outlierPercentage([Float32Array.of(-2, -1, 0, 1, 9)], 1.5); // 20
 * ```
 */
export function outlierPercentage(layers: Float32Array[], r: number): number {
  return new OutlierCounter(layers).percentage(r);
}

/**
 * One outlier range r for the whole model such that the overall outlier
 * percentage reaches `targetPct`: the largest r (to relative precision
 * 1e-12, by bisection — the percentage falls monotonically as r grows, since
 * T is linear in r) with {@linkcode outlierPercentage}(layers, r) ≥ targetPct.
 * This automates the README's "fine-tune the `range` argument to achieve a
 * desired outlier percentage". The paper's 0.45% outliers: targetPct = 0.45.
 *
 * @param layers the model's linear weights, one array per layer
 * @param targetPct target percentage of outliers, in (0, 100)
 * @returns r
 * @throws RangeError when targetPct is out of range or above what r = 0 gives
 *
 * @example
 * ```ts
 * const r = findOutlierRange([wq, wk, wv, wo, w1, w2, w3], 0.45); // every linear of the model
 * outlierPercentage([wq, wk, wv, wo, w1, w2, w3], r); // ≥ 0.45
 * ```
 */
export function findOutlierRange(layers: Float32Array[], targetPct: number): number {
  if (!(targetPct > 0 && targetPct < 100)) {
    throw new RangeError(`findOutlierRange(): targetPct must be in (0, 100), got ${targetPct}`);
  }
  const counter = new OutlierCounter(layers);
  const atZero = counter.percentage(0);
  if (atZero < targetPct) {
    throw new RangeError(
      `findOutlierRange(): even r = 0 gives only ${atZero}% outliers, below the target ${targetPct}%`,
    );
  }
  let lo = 0, hi = 1;
  while (counter.percentage(hi) >= targetPct) {
    lo = hi;
    hi *= 2;
  }
  while (hi - lo > 1e-12 * hi) {
    const mid = (lo + hi) / 2;
    if (mid <= lo || mid >= hi) break;
    if (counter.percentage(mid) >= targetPct) lo = mid;
    else hi = mid;
  }
  return lo;
}

/** Per-layer quartiles and sorted |w|, so each percentage costs O(log n) per layer. */
class OutlierCounter {
  private readonly q: { q1: number; q3: number }[];
  private readonly absSorted: Float32Array[];
  private readonly total: number;

  constructor(layers: Float32Array[]) {
    if (layers.length === 0) throw new RangeError("outlier range: no layers given");
    this.q = layers.map(quartiles);
    this.absSorted = layers.map((l) => l.map(Math.abs).sort());
    this.total = layers.reduce((s, l) => s + l.length, 0);
  }

  percentage(r: number): number {
    let count = 0;
    for (let l = 0; l < this.q.length; l++) {
      const T = thresholdFromQuartiles(this.q[l].q1, this.q[l].q3, r);
      const a = this.absSorted[l];
      let lo = 0, hi = a.length; // first |w| ≥ T, excluding zeros (never outliers)
      while (lo < hi) {
        const m = (lo + hi) >>> 1;
        if (a[m] < T || a[m] === 0) lo = m + 1;
        else hi = m;
      }
      count += a.length - lo;
    }
    return (100 * count) / this.total;
  }
}
