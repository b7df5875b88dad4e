/**
 * Weighted k-means in one dimension: the non-uniform quantizer of SqueezeLLM
 * (Kim et al., 2023, Eq. 4). A row of weights x with sample weights w (the
 * Fisher information diagonal) is clustered into k centroids c minimising
 *
 *     inertia = Σ_i w_i · (x_i − c(x_i))²,   c(x) = the centroid nearest x.
 *
 * The official code runs scikit-learn's `KMeans(n_clusters=2^b,
 * random_state=0, n_init="auto", max_iter=50).fit(x, sample_weight=w)` per row
 * (SqueezeAILab/SqueezeLLM `quantization/nuq.py`, pinned to scikit-learn
 * 1.3.1). This module follows that algorithm step by step but exploits the
 * one dimension:
 *
 * - Preparation. The row is sorted once and equal values are merged with
 *   their weights summed; values whose summed weight is 0 take no part in the
 *   clustering (they cannot change the objective) but still get codes. When
 *   every weight of the row is 0 all weights are taken as 1 (nuq.py's
 *   `if np.sum(sample_weight) == 0: sample_weight = np.ones_like(...)`).
 *   Prefix sums P0 = Σw, P1 = Σw·(x − x̄), P2 = Σw·(x − x̄)² over the sorted
 *   values (x̄ = weighted mean, to limit cancellation) give the weight, mean
 *   and cost of any run of consecutive values in O(1).
 * - Initialization: greedy k-means++ as scikit-learn ≥ 1.3 does it — the
 *   first centroid drawn with probability ∝ w, each further one chosen among
 *   n_local_trials = 2 + ⌊ln k⌋ candidates drawn with probability ∝ w·D²
 *   (D = distance to the nearest chosen centroid), keeping the candidate that
 *   lowers the potential Σ w·D² most. In 1-D a candidate only captures the
 *   values between the midpoints to its two neighbouring centroids, so each
 *   draw and each candidate potential costs O(k + log n) instead of O(n).
 *   Random numbers come from {@linkcode mulberry32}(seed), so the draws differ
 *   from scikit-learn's (same distribution, different generator).
 * - Lloyd iterations as sweeps over the sorted values: the cell of centroid
 *   c_j is the run of values between the midpoints (c_{j−1}+c_j)/2 and
 *   (c_j+c_{j+1})/2 (found by binary search; a value exactly on a midpoint
 *   goes to the lower centroid, like `argmin`), and the new centroid is
 *   ΣP1/ΣP0 of its run: O(k log n) per iteration after the sort (an O(n)
 *   radix sort when the values are float32, as weight rows are).
 * - Empty clusters (a cell holding no value of positive weight) are relocated
 *   as scikit-learn's `_relocate_empty_clusters_dense` does: the e empty
 *   clusters take, in order, the e values farthest (unweighted squared
 *   distance) from their current centroid, ties broken by the lower value;
 *   the value's weight moves with it (all copies of a repeated value move
 *   together). A cluster left with no weight keeps its old centroid.
 *   Relocation never increases the objective.
 * - Stopping as scikit-learn's `_kmeans_single_lloyd`: after iteration i
 *   (counted from 1), stop when the assignment did not change since the
 *   previous iteration ("strict" convergence), or when the squared centroid
 *   shift Σ_j (c_j^new − c_j^old)² ≤ tol · var(x), var being the unweighted
 *   population variance of the row's values (scikit-learn's `_tolerance`),
 *   or after maxIter iterations.
 * - Fewer distinct values of positive weight than k: every such value is its
 *   own centroid (inertia 0) and the remaining centroids repeat the largest
 *   value; codes still address the first (lowest-index) centroid of a value.
 *
 * Sums are in float64 (scikit-learn works in the input's dtype, float32 in
 * nuq.py). `init` replaces k-means++ by given centroids (scikit-learn's
 * `init=array`).
 *
 * `method: "dp"` instead returns the exact optimum by dynamic programming over
 * the sorted values, D_j(i) = min_m D_{j−1}(m) + cost(m, i), with the
 * divide-and-conquer speed-up (the optimal split is monotone in i):
 * O(k · n log n). It is the test oracle for Lloyd.
 *
 * @module
 */
import { mulberry32 } from "../model/random.ts";

/** How {@linkcode kmeans1d} clusters: Lloyd's algorithm or the exact DP optimum. */
export type KMeansMethod = "lloyd" | "dp";

/** Options of {@linkcode kmeans1d}. */
export interface KMeans1dOptions {
  /** Seed of the k-means++ initialization. @default 0 */
  seed?: number;
  /** Most Lloyd iterations (nuq.py's `max_iter=50`). @default 50 */
  maxIter?: number;
  /**
   * Relative tolerance on the squared centroid shift: stop when
   * Σ (Δc)² ≤ tol · var(x) (scikit-learn's `tol`). @default 1e-4
   */
  tol?: number;
  /** Lloyd's algorithm (scikit-learn's) or the exact optimum. @default "lloyd" */
  method?: KMeansMethod;
  /** Initial centroids [k] for Lloyd instead of k-means++ (scikit-learn's `init=array`). */
  init?: ArrayLike<number>;
  /** Also return the code of every value. @default true */
  codes?: boolean;
  /**
   * Record the objective of the centroids before every Lloyd iteration and of
   * the final centroids, summed exactly over the values (O(n) per entry).
   * @default false
   */
  trace?: boolean;
}

/** Why a {@linkcode kmeans1d} run stopped. */
export type KMeansStop =
  /** The assignment did not change between two iterations. */
  | "strict"
  /** The squared centroid shift fell within tol · var(x). */
  | "tol"
  /** maxIter iterations ran. */
  | "maxIter"
  /** No iteration was needed: at most k distinct values of positive weight. */
  | "trivial"
  /** `method: "dp"`: the exact optimum. */
  | "dp";

/** The result of {@linkcode kmeans1d}. */
export interface KMeans1dResult {
  centroids: Float64Array; // [k], ascending
  /** Index of the nearest centroid of every value (ties: the lower index); absent if `codes: false`. */
  codes?: Uint16Array; // [n]
  /** Σ_i w_i (x_i − c(x_i))² with the weights actually used. */
  inertia: number;
  /** Lloyd iterations run (0 for "dp" and "trivial"). */
  iterations: number;
  stop: KMeansStop;
  /** With `trace: true`: objective before each iteration, then of the result. */
  inertiaTrace?: Float64Array; // [iterations + 1]
}

/** Largest k {@linkcode kmeans1d} accepts (codes are 16-bit). */
export const KMEANS_MAX_K = 65536;

/**
 * Weighted 1-D k-means of `x` with sample weights `w` into `k` centroids.
 *
 * @param x values [n]
 * @param w sample weights [n], finite and ≥ 0 (all 0 → all taken as 1)
 * @param k number of centroids, 1..65536
 * @param opts see {@linkcode KMeans1dOptions}
 * @returns ascending centroids [k], codes [n], inertia, iterations
 * @throws RangeError on empty input, mismatched lengths, a bad k, or a
 *   non-finite value / negative or non-finite weight (naming its index)
 *
 * @example
 * ```ts
 * const r = kmeans1d([0, 0.1, 5, 5.2], [1, 1, 1, 1], 2, { seed: 0 });
 * // r.centroids ≈ [0.05, 5.1]; r.codes = [0, 0, 1, 1]; r.inertia ≈ 0.025
 * ```
 */
export function kmeans1d(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  k: number,
  opts: KMeans1dOptions = {},
): KMeans1dResult {
  const { seed = 0, maxIter = 50, tol = 1e-4, method = "lloyd", trace = false } = opts;
  const n = x.length;
  if (n === 0) throw new RangeError("kmeans1d(): x is empty");
  if (w.length !== n) {
    throw new RangeError(`kmeans1d(): w must have the length of x (${n}), got ${w.length}`);
  }
  if (!Number.isInteger(k) || k < 1 || k > KMEANS_MAX_K) {
    throw new RangeError(`kmeans1d(): k must be an integer from 1 to ${KMEANS_MAX_K}, got ${k}`);
  }
  if (!Number.isInteger(maxIter) || maxIter < 1) {
    throw new RangeError(`kmeans1d(): option maxIter must be a positive integer, got ${maxIter}`);
  }
  if (!(tol >= 0)) throw new RangeError(`kmeans1d(): option tol must be ≥ 0, got ${tol}`);
  if (method !== "lloyd" && method !== "dp") {
    throw new RangeError(`kmeans1d(): option method must be "lloyd" or "dp", got ${method}`);
  }

  const s = SortedRow.from(x, w);
  const traceList: number[] | undefined = trace ? [] : undefined;
  let centroids: Float64Array;
  let iterations = 0;
  let stop: KMeansStop;
  if (s.n <= k) {
    centroids = new Float64Array(k).fill(s.xs[s.n - 1]);
    centroids.set(s.xs);
    stop = "trivial";
  } else if (method === "dp") {
    centroids = s.optimal(k);
    stop = "dp";
  } else {
    let init: Float64Array;
    if (opts.init) {
      if (opts.init.length !== k || !Array.from(opts.init).every(Number.isFinite)) {
        throw new RangeError(
          `kmeans1d(): option init must hold k = ${k} finite values, got ${opts.init.length}`,
        );
      }
      init = Float64Array.from(opts.init).sort();
    } else init = s.kmeansPlusPlus(k, mulberry32(seed >>> 0));
    ({ centroids, iterations, stop } = s.lloyd(init, maxIter, tol * s.xVar, traceList));
  }
  const inertia = s.inertia(centroids);
  traceList?.push(inertia);
  const out: KMeans1dResult = { centroids, inertia, iterations, stop };
  if (opts.codes ?? true) out.codes = nearestCodes(x, centroids);
  if (traceList) out.inertiaTrace = Float64Array.from(traceList);
  return out;
}

/**
 * Index of the nearest of the ascending `centroids` for every value (a value
 * exactly halfway goes to the lower index, as `argmin` does).
 *
 * @param x values [n]
 * @param centroids ascending [k]
 * @returns codes [n]
 *
 * @example
 * ```ts
 * nearestCodes([0.4, 0.5, 0.6], Float64Array.of(0, 1)); // [0, 0, 1]
 * ```
 */
export function nearestCodes(x: ArrayLike<number>, centroids: Float64Array): Uint16Array {
  const k = centroids.length;
  const mid = new Float64Array(Math.max(k - 1, 0));
  for (let j = 0; j + 1 < k; j++) mid[j] = (centroids[j] + centroids[j + 1]) / 2;
  const first = new Uint16Array(k); // lowest index holding the same value
  for (let j = 1; j < k; j++) first[j] = centroids[j] === centroids[j - 1] ? first[j - 1] : j;
  const codes = new Uint16Array(x.length);
  if (k <= 16) {
    // Few centroids: count the midpoints below x without branches.
    for (let i = 0; i < x.length; i++) {
      const v = x[i];
      let j = 0;
      for (let t = 0; t < k - 1; t++) j += +(mid[t] < v);
      codes[i] = first[j];
    }
  } else {
    for (let i = 0; i < x.length; i++) codes[i] = first[lowerBound(mid, x[i], 0, k - 1)];
  }
  return codes;
}

/**
 * Exact weighted 1-D k-means optimum by dynamic programming (the oracle of
 * {@linkcode kmeans1d}'s Lloyd iterations): `kmeans1d(x, w, k, {method: "dp"})`.
 *
 * @param x values [n]
 * @param w sample weights [n]
 * @param k number of centroids
 * @returns the optimal inertia and ascending centroids [k]
 *
 * @example
 * ```ts
 * kmeans1dOptimum([0, 1, 10, 11], [1, 1, 1, 1], 2).inertia; // 1
 * ```
 */
export function kmeans1dOptimum(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  k: number,
): { inertia: number; centroids: Float64Array } {
  const r = kmeans1d(x, w, k, { method: "dp", codes: false });
  return { inertia: r.inertia, centroids: r.centroids };
}

/** First index i in [lo, hi) with a[i] ≥ v (hi if none). */
function lowerBound(a: Float64Array, v: number, lo: number, hi: number): number {
  while (lo < hi) {
    const m = (lo + hi) >>> 1;
    if (a[m] < v) lo = m + 1;
    else hi = m;
  }
  return lo;
}

/** First index i in [lo, hi) with a[i] > v (hi if none). */
function upperBound(a: Float64Array, v: number, lo: number, hi: number): number {
  while (lo < hi) {
    const m = (lo + hi) >>> 1;
    if (a[m] <= v) lo = m + 1;
    else hi = m;
  }
  return lo;
}

/**
 * A row's distinct values of positive weight, sorted, with prefix sums of
 * weight, weighted value and weighted squared value (about the mean x̄).
 */
class SortedRow {
  constructor(
    readonly n: number,
    readonly xs: Float64Array, // [n] distinct values, ascending
    readonly ws: Float64Array, // [n] summed weights, all > 0
    readonly xbar: number, // x̄: the shift of the prefix sums (the weighted mean)
    readonly P0: Float64Array, // [n + 1] Σ ws
    readonly P1: Float64Array, // [n + 1] Σ ws·(xs − x̄)
    readonly P2: Float64Array, // [n + 1] Σ ws·(xs − x̄)²
    readonly xVar: number, // population variance of all the row's values (with repeats and zero weights)
  ) {}

  static from(x: ArrayLike<number>, w: ArrayLike<number>): SortedRow {
    const n = x.length;
    const x0 = x[0];
    let wsum = 0, wxsum = 0, sx = 0, s1 = 0, s2 = 0;
    for (let i = 0; i < n; i++) {
      const xi = x[i], wi = w[i];
      if (xi - xi !== 0) throw new RangeError(`kmeans1d(): x[${i}] is ${xi}`); // NaN or ±Inf
      if (!(wi >= 0) || wi === Infinity) {
        throw new RangeError(`kmeans1d(): weights must be finite and ≥ 0, w[${i}] is ${wi}`);
      }
      wsum += wi;
      wxsum += wi * xi;
      sx += xi;
      const d = xi - x0;
      s1 += d;
      s2 += d * d;
    }
    const xVar = Math.max(0, s2 / n - (s1 / n) ** 2);
    const ones = wsum === 0;
    const mean = ones ? sx / n : wxsum / wsum;
    // Merge equal values (summing their weights) along the sorted order,
    // leaving out values whose summed weight is 0, and accumulate the prefix
    // sums about the weighted mean (any shift near the data limits cancellation).
    const perm = argsort(x);
    // The row's arrays live in the module's scratch (a SortedRow lives only
    // inside one kmeans1d call); P0[0] = P1[0] = P2[0] = 0 start the sums.
    const { xs, ws, P0, P1, P2 } = scratch(n);
    P0[0] = P1[0] = P2[0] = 0;
    let m = 0, last = x[perm[0]], acc = 0;
    for (let r = 0; r <= n; r++) {
      const p = r < n ? perm[r] : 0;
      const v = r < n ? x[p] : NaN;
      if (v !== last) {
        if (acc > 0) {
          const d = last - mean;
          xs[m] = last;
          ws[m] = acc;
          P0[m + 1] = P0[m] + acc;
          P1[m + 1] = P1[m] + acc * d;
          P2[m + 1] = P2[m] + acc * d * d;
          m++;
        }
        last = v;
        acc = 0;
      }
      acc += ones ? 1 : w[p];
    }
    return new SortedRow(
      m,
      xs.subarray(0, m),
      ws.subarray(0, m),
      mean,
      P0.subarray(0, m + 1),
      P1.subarray(0, m + 1),
      P2.subarray(0, m + 1),
      xVar,
    );
  }

  /** Σ_{t ∈ [a, b)} ws_t (xs_t − c)², from the prefix sums (clamped at 0). */
  cost(a: number, b: number, c: number): number {
    if (b <= a) return 0;
    const d = c - this.xbar;
    const v = this.P2[b] - this.P2[a] - 2 * d * (this.P1[b] - this.P1[a]) +
      d * d * (this.P0[b] - this.P0[a]);
    return v > 0 ? v : 0;
  }

  /** Minimum over c of cost(a, b, c): the cost about the weighted mean of [a, b). */
  meanCost(a: number, b: number): number {
    const s0 = this.P0[b] - this.P0[a], s1 = this.P1[b] - this.P1[a];
    const v = this.P2[b] - this.P2[a] - (s1 * s1) / s0;
    return v > 0 ? v : 0;
  }

  /** ends[j] = end of the cell of ascending centroid j (cells are [ends[j−1], ends[j])). */
  cellEnds(c: Float64Array, m: number, ends: Int32Array): void {
    let lo = 0;
    for (let j = 0; j + 1 < m; j++) {
      lo = upperBound(this.xs, (c[j] + c[j + 1]) / 2, lo, this.n);
      ends[j] = lo;
    }
    ends[m - 1] = this.n;
  }

  /** Objective of the ascending centroids c, summed exactly over the values. */
  inertia(c: Float64Array): number {
    let total = 0, j = 0;
    const k = c.length;
    for (let t = 0; t < this.n; t++) {
      const v = this.xs[t];
      while (j + 1 < k && v > (c[j] + c[j + 1]) / 2) j++;
      total += this.ws[t] * (v - c[j]) ** 2;
    }
    return total;
  }

  /** Greedy weighted k-means++ (see the module doc); ascending centroids [k]. Needs n > k. */
  kmeansPlusPlus(k: number, rand: () => number): Float64Array {
    const { n, xs, P0 } = this;
    const trials = 2 + Math.floor(Math.log(k));
    const c = new Float64Array(k); // chosen centroids, ascending, first m used
    const ends = new Int32Array(k), cellCost = new Float64Array(k);
    let m = 0, pot = 0;
    const add = (v: number) => {
      let p = m;
      while (p > 0 && c[p - 1] > v) c[p] = c[--p];
      c[p] = v;
      m++;
      this.cellEnds(c, m, ends);
      pot = 0;
      for (let j = 0, a = 0; j < m; a = ends[j++]) pot += cellCost[j] = this.cost(a, ends[j], c[j]);
    };
    // First centroid: probability ∝ w.
    add(xs[Math.min(upperBound(P0, rand() * P0[n], 1, n + 1) - 1, n - 1)]);
    while (m < k) {
      let best = -1, bestPot = Infinity;
      for (let t = 0; t < trials; t++) {
        const i = this.sampleD2(rand() * pot, c, m, ends, cellCost);
        const p = this.candidatePotential(xs[i], c, m, pot);
        if (p < bestPot) {
          bestPot = p;
          best = i;
        }
      }
      add(xs[best]);
    }
    return c;
  }

  /** The value index where the running sum of ws·D² first exceeds r. */
  private sampleD2(
    r: number,
    c: Float64Array,
    m: number,
    ends: Int32Array,
    cellCost: Float64Array,
  ): number {
    let cum = 0;
    for (let j = 0, a = 0; j < m; a = ends[j++]) {
      if (cum + cellCost[j] > r) {
        const rr = r - cum;
        let lo = a, hi = ends[j] - 1;
        while (lo < hi) {
          const mid = (lo + hi) >>> 1;
          if (this.cost(a, mid + 1, c[j]) > rr) hi = mid;
          else lo = mid + 1;
        }
        return lo;
      }
      cum += cellCost[j];
    }
    return this.n - 1; // rounding: scikit-learn clips to the last sample too
  }

  /** Potential Σ ws·D² after adding centroid v to the m ascending centroids c. */
  private candidatePotential(v: number, c: Float64Array, m: number, pot: number): number {
    const p = upperBound(c, v, 0, m); // centroids ≤ v: c[0..p)
    if (p > 0 && c[p - 1] === v) return pot;
    const hasL = p > 0, hasR = p < m;
    const L = hasL ? c[p - 1] : 0, R = hasR ? c[p] : 0;
    const a = hasL ? upperBound(this.xs, (L + v) / 2, 0, this.n) : 0;
    const b = hasR ? upperBound(this.xs, (v + R) / 2, a, this.n) : this.n;
    let old: number;
    if (hasL && hasR) {
      const mLR = Math.min(Math.max(upperBound(this.xs, (L + R) / 2, 0, this.n), a), b);
      old = this.cost(a, mLR, L) + this.cost(mLR, b, R);
    } else {
      old = this.cost(a, b, hasL ? L : R);
    }
    return pot - old + this.cost(a, b, v);
  }

  /** Lloyd iterations from the ascending init [k] (see the module doc). */
  lloyd(
    init: Float64Array,
    maxIter: number,
    tolAbs: number,
    traceList?: number[],
  ): { centroids: Float64Array; iterations: number; stop: KMeansStop } {
    const k = init.length;
    let c = Float64Array.from(init);
    let cNew = new Float64Array(k);
    let ends = new Int32Array(k), endsOld = new Int32Array(k).fill(-1);
    const S0 = new Float64Array(k), S1 = new Float64Array(k);
    let stop: KMeansStop = "maxIter";
    let it = 0;
    while (it < maxIter) {
      c.sort();
      traceList?.push(this.inertia(c));
      this.cellEnds(c, k, ends);
      let nEmpty = 0;
      for (let j = 0, a = 0; j < k; a = ends[j++]) {
        S0[j] = this.P0[ends[j]] - this.P0[a];
        S1[j] = this.P1[ends[j]] - this.P1[a];
        if (ends[j] === a) nEmpty++;
      }
      if (nEmpty > 0) this.relocateEmpty(c, ends, S0, S1, nEmpty);
      let shift = 0;
      for (let j = 0; j < k; j++) {
        cNew[j] = S0[j] > 0 ? S1[j] / S0[j] + this.xbar : c[j];
        shift += (cNew[j] - c[j]) ** 2;
      }
      [c, cNew] = [cNew, c];
      it++;
      if (sameInts(ends, endsOld)) {
        stop = "strict";
        break;
      }
      if (shift <= tolAbs) {
        stop = "tol";
        break;
      }
      [ends, endsOld] = [endsOld, ends];
    }
    return { centroids: c.sort(), iterations: it, stop };
  }

  /** scikit-learn's empty-cluster relocation, on the cell sums S0, S1 [k]. */
  private relocateEmpty(
    c: Float64Array,
    ends: Int32Array,
    S0: Float64Array,
    S1: Float64Array,
    nEmpty: number,
  ): void {
    const { n, xs } = this;
    const label = new Int32Array(n), dist = new Float64Array(n), count = new Int32Array(c.length);
    for (let j = 0, a = 0; j < c.length; a = ends[j++]) {
      count[j] = ends[j] - a;
      for (let t = a; t < ends[j]; t++) {
        label[t] = j;
        dist[t] = (xs[t] - c[j]) ** 2;
      }
    }
    const order = Array.from({ length: n }, (_, t) => t)
      .sort((p, q) => dist[q] - dist[p] || p - q)
      .slice(0, nEmpty);
    let e = 0;
    for (let j = 0, a = 0; j < c.length; a = ends[j++]) {
      if (ends[j] !== a) continue;
      const t = order[e++];
      const wt = this.ws[t], wd = wt * (xs[t] - this.xbar);
      const o = label[t];
      S0[o] -= wt;
      S1[o] -= wd;
      if (--count[o] === 0) S0[o] = 0; // emptied: keeps its old centroid
      S0[j] = wt;
      S1[j] = wd;
      count[j] = 1;
      label[t] = j;
    }
  }

  /** Exact optimum for k < n by divide-and-conquer DP; ascending centroids [k]. */
  optimal(k: number): Float64Array {
    const n = this.n;
    let prev = new Float64Array(n + 1), cur = new Float64Array(n + 1);
    const arg = new Int32Array(k * (n + 1)); // arg[j·(n+1) + i]: start of the last cluster
    for (let i = 1; i <= n; i++) prev[i] = this.meanCost(0, i);
    for (let j = 1; j < k; j++) {
      const row = j * (n + 1);
      // cur[i] = min_{m ∈ [j, i−1]} prev[m] + meanCost(m, i), for i ∈ [j+1, n]
      const solve = (lo: number, hi: number, optLo: number, optHi: number): void => {
        if (lo > hi) return;
        const i = (lo + hi) >>> 1;
        let best = Infinity, bestM = optLo;
        for (let m = optLo, end = Math.min(optHi, i - 1); m <= end; m++) {
          const v = prev[m] + this.meanCost(m, i);
          if (v < best) {
            best = v;
            bestM = m;
          }
        }
        cur[i] = best;
        arg[row + i] = bestM;
        solve(lo, i - 1, optLo, bestM);
        solve(i + 1, hi, bestM, optHi);
      };
      solve(j + 1, n, j, n - 1);
      [prev, cur] = [cur, prev];
    }
    const c = new Float64Array(k);
    for (let j = k - 1, i = n; j >= 0; j--) {
      const a = j === 0 ? 0 : arg[j * (n + 1) + i];
      c[j] = (this.P1[i] - this.P1[a]) / (this.P0[i] - this.P0[a]) + this.xbar;
      i = a;
    }
    return c;
  }
}

/**
 * Permutation sorting x ascending. Values that are all float32 (the usual
 * case: weight rows) take an LSD radix sort on their order-preserving bit
 * patterns (3 passes of 11 bits, O(n)); others a comparison sort.
 */
function argsort(x: ArrayLike<number>): Uint32Array {
  const n = x.length;
  const sc = scratch(n);
  let idx = sc.idx;
  for (let i = 0; i < n; i++) idx[i] = i;
  let f32: Float32Array;
  if (x instanceof Float32Array) f32 = x;
  else {
    f32 = Float32Array.from(x);
    for (let i = 0; i < n; i++) {
      if (f32[i] !== x[i]) return idx.sort((p, q) => x[p] - x[q]);
    }
  }
  const bits = new Uint32Array(f32.buffer, f32.byteOffset, n);
  let key = sc.key;
  for (let i = 0; i < n; i++) {
    const b = bits[i];
    key[i] = b & 0x80000000 ? ~b >>> 0 : (b | 0x80000000) >>> 0;
  }
  let key2 = sc.key2, idx2 = sc.idx2;
  const count = sc.count;
  for (let shift = 0; shift < 32; shift += 11) {
    count.fill(0);
    for (let i = 0; i < n; i++) count[(key[i] >>> shift) & 2047]++;
    for (let d = 0, sum = 0; d < 2048; d++) {
      const c = count[d];
      count[d] = sum;
      sum += c;
    }
    for (let i = 0; i < n; i++) {
      const p = count[(key[i] >>> shift) & 2047]++;
      key2[p] = key[i];
      idx2[p] = idx[i];
    }
    [key, key2] = [key2, key];
    [idx, idx2] = [idx2, idx];
  }
  return idx;
}

/** Scratch arrays of one row, reused from call to call (grown as needed). */
interface Scratch {
  cap: number;
  idx: Uint32Array;
  idx2: Uint32Array;
  key: Uint32Array;
  key2: Uint32Array;
  count: Int32Array;
  xs: Float64Array;
  ws: Float64Array;
  P0: Float64Array;
  P1: Float64Array;
  P2: Float64Array;
}

let SCRATCH: Scratch | undefined;
let VIEWS: Scratch | undefined; // SCRATCH cut to the last row length asked for

/**
 * The module's scratch arrays for a row of n values (length n, or n + 1 for
 * the prefix sums). kmeans1d is not re-entrant and every worker has its own
 * module instance, so one set serves every call.
 */
function scratch(n: number): Scratch {
  if (VIEWS && VIEWS.idx.length === n) return VIEWS;
  if (!SCRATCH || SCRATCH.cap < n) {
    const cap = Math.max(n, 2 * (SCRATCH?.cap ?? 0));
    SCRATCH = {
      cap,
      idx: new Uint32Array(cap),
      idx2: new Uint32Array(cap),
      key: new Uint32Array(cap),
      key2: new Uint32Array(cap),
      count: new Int32Array(2048),
      xs: new Float64Array(cap),
      ws: new Float64Array(cap),
      P0: new Float64Array(cap + 1),
      P1: new Float64Array(cap + 1),
      P2: new Float64Array(cap + 1),
    };
  }
  const s = SCRATCH;
  return VIEWS = {
    cap: s.cap,
    idx: s.idx.subarray(0, n),
    idx2: s.idx2.subarray(0, n),
    key: s.key.subarray(0, n),
    key2: s.key2.subarray(0, n),
    count: s.count,
    xs: s.xs.subarray(0, n),
    ws: s.ws.subarray(0, n),
    P0: s.P0.subarray(0, n + 1),
    P1: s.P1.subarray(0, n + 1),
    P2: s.P2.subarray(0, n + 1),
  };
}

function sameInts(a: Int32Array, b: Int32Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
