/**
 * Small numeric helpers of the quantizers, kept apart from the algorithms:
 * numpy's linear quantile, torch's topk threshold (quickselect) and the fp32
 * residual that makes a dense + sparse sum bit-exact.
 *
 * @module
 */

/**
 * numpy's `np.quantile(a, p)` (method "linear") of float32 values: h =
 * (n − 1)·p, the values a[⌊h⌋] ≤ a[⌊h⌋+1] of the sorted array, and numpy's
 * lerp (difference in float32, as numpy does for float32 input; from the
 * upper end when the fraction is ≥ 0.5). Selection, O(n).
 *
 * @param values [n], not modified
 * @param p in [0, 1]
 * @returns the quantile
 *
 * @example
 * ```ts
 * quantileLinear(Float32Array.of(4, 1, 3, 2), 0.25); // 1.75
 * ```
 */
export function quantileLinear(values: Float32Array, p: number): number {
  return quantilesLinear(Float32Array.from(values), [p])[0];
}

/** numpy-linear quantiles of a scratch copy `a` (reordered in place). */
export function quantilesLinear(a: Float32Array, ps: number[]): number[] {
  const n = a.length;
  if (n === 0) throw new RangeError("quantileLinear(): no values");
  return ps.map((p) => {
    if (!(p >= 0 && p <= 1)) {
      throw new RangeError(`quantileLinear(): p must be in [0, 1], got ${p}`);
    }
    const h = (n - 1) * p, lo = Math.floor(h), g = h - lo;
    const x0 = selectInPlace(a, lo);
    if (lo + 1 >= n || g === 0) return x0;
    let x1 = Infinity;
    for (let i = lo + 1; i < n; i++) if (a[i] < x1) x1 = a[i];
    const diff = Math.fround(x1 - x0);
    return g >= 0.5 ? x1 - diff * (1 - g) : x0 + diff * g;
  });
}

/**
 * The k-th largest value of `values` (k ≥ 1), as torch's
 * `topk(k).values[-1]`. Three-way quickselect on a copy, O(n).
 *
 * @example
 * ```ts
 * kthLargest(Float32Array.of(5, 1, 4, 4), 2); // 4
 * ```
 */
export function kthLargest(values: Float32Array, k: number): number {
  if (!Number.isInteger(k) || k < 1 || k > values.length) {
    throw new RangeError(`kthLargest(): k must be in 1..${values.length}, got ${k}`);
  }
  return selectInPlace(Float32Array.from(values), values.length - k);
}

/**
 * Rearranges a so that a[kth] holds the value of ascending rank kth, smaller
 * values before it and larger after, and returns it (three-way quickselect,
 * median-of-three pivots, so runs of equal values cost one pass).
 */
export function selectInPlace(a: Float32Array, kth: number): number {
  let lo = 0, hi = a.length - 1;
  while (lo < hi) {
    const x = a[lo], y = a[(lo + hi) >>> 1], z = a[hi];
    const pivot = x < y ? (y < z ? y : x < z ? z : x) : (x < z ? x : y < z ? z : y);
    let lt = lo, i = lo, gt = hi;
    while (i <= gt) {
      const v = a[i];
      if (v < pivot) {
        a[i++] = a[lt];
        a[lt++] = v;
      } else if (v > pivot) {
        a[i] = a[gt];
        a[gt--] = v;
      } else i++;
    }
    if (kth < lt) hi = lt - 1;
    else if (kth > gt) lo = gt + 1;
    else return pivot;
  }
  return a[kth];
}

/** Scratch for stepping an fp32 value by one ulp. */
const f32Box = new Float32Array(1);
const u32Box = new Uint32Array(f32Box.buffer);

/** The fp32 value v (nearest w − l, or a neighbour) for which fround(l + v) = w, if one exists. */
export function f32Residual(w: number, l: number): number {
  const v = Math.fround(w - l);
  if (Math.fround(l + v) === w) return v;
  for (const dir of [1, -1]) {
    f32Box[0] = v;
    if (v === 0) u32Box[0] = dir > 0 ? 1 : 0x80000001;
    else u32Box[0] += (v > 0) === (dir > 0) ? 1 : -1;
    if (Math.fround(l + f32Box[0]) === w) return f32Box[0];
  }
  return v;
}
