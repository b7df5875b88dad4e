/**
 * Fast, seeded builders of weights in every kernel format, for tests,
 * benchmarks and GPU decoding (the plain fp32 / fp16 constructors,
 * `f32Tensor` and `f16Tensor`, are quant/format.ts's). They only need the right layout, not the best
 * quality: uniform is quant/rtn.ts's round-to-nearest on GPTQ's grid (extended
 * to ragged and act-order groups), lut uses 2^b sorted quantiles of each row
 * with nearest codes, sparse picks random positions. The real quantizers
 * (GPTQ, AWQ, SqueezeLLM) live in quant/. Gigabytes of seeded fp16 draws (the
 * synthetic checkpoints of eval/bench/scale.ts) come from
 * {@linkcode normalF16Table} and {@linkcode fillF16FromTable}: one 16-bit
 * table lookup per value instead of a Box–Muller draw and an fp16 rounding.
 *
 * @module
 */
import type { CsrMatrix, LinearWeight, LutTensor, UniformTensor } from "../../quant/format.ts";
import {
  checkBits,
  f16Tensor,
  f32Tensor,
  packCodes,
  toF16,
  unpackCodes,
} from "../../quant/format.ts";
import { gaussian, mulberry32, mulberry32Fill } from "../../model/random.ts";
import { rtn } from "../../quant/rtn.ts";

/** Options of {@linkcode rtnUniform}: quant/rtn.ts's options, plus ragged groups and act-order. */
export interface RtnUniformOptions {
  /** Bits per weight, 2..8. */
  bits: number;
  /**
   * Columns per group; cols (or more) for one group per row. Unlike quant/rtn.ts
   * it need not divide cols: the last group of a row is then shorter. @default cols
   */
  groupSize?: number;
  /** Symmetric grid (zero = 2^(b−1)). @default false */
  sym?: boolean;
  /**
   * Act-order: quantize columns in a seeded random order and record each
   * column's group in gIdx (as GPTQ's g_idx). @default undefined (natural order)
   */
  actOrderSeed?: number;
}

/**
 * Round-to-nearest uniform quantization on GPTQ's grid: quant/rtn.ts's `rtn`.
 * When the groups are whole and in natural order this is `rtn` itself;
 * otherwise (a group size not dividing cols, or act-order groups, which the
 * kernels must also read) the columns of each group are gathered into a
 * matrix that `rtn` quantizes with one group per row.
 * @param w weights [rows, cols]
 * @param rows output features
 * @param cols input features
 * @param opts bits, group size, symmetry, act-order
 * @returns the packed tensor (fp16 scales and integer zeros; gIdx under act-order)
 * @example
 * ```ts
 * const t = rtnUniform(new Float32Array([0, 1, 2, 3, 4, 5]), 1, 6, { bits: 2, groupSize: 4 });
 * t.scales.length; // 2 (groups of 4 and 2 columns)
 * ```
 */
export function rtnUniform(
  w: Float32Array,
  rows: number,
  cols: number,
  opts: RtnUniformOptions,
): UniformTensor {
  const bits = checkBits(opts.bits, "rtnUniform() bits");
  const groupSize = Math.min(opts.groupSize ?? cols, cols);
  if (!(Number.isInteger(groupSize) && groupSize >= 1)) {
    throw new RangeError(`rtnUniform(): groupSize must be a positive integer, got ${groupSize}`);
  }
  const sym = Boolean(opts.sym);
  if (opts.actOrderSeed === undefined && cols % groupSize === 0) {
    return rtn(w, rows, cols, { bits, groupSize, sym });
  }
  const group = new Int32Array(cols); // [cols] group of each column
  if (opts.actOrderSeed !== undefined) {
    const perm = Array.from({ length: cols }, (_, i) => i);
    const u = mulberry32(opts.actOrderSeed);
    for (let i = cols - 1; i > 0; i--) {
      const j = Math.floor(u() * (i + 1));
      [perm[i], perm[j]] = [perm[j], perm[i]];
    }
    for (let i = 0; i < cols; i++) group[perm[i]] = Math.floor(i / groupSize);
  } else {
    for (let c = 0; c < cols; c++) group[c] = Math.floor(c / groupSize);
  }
  const ng = Math.ceil(cols / groupSize);
  const members: number[][] = Array.from({ length: ng }, () => []); // columns of each group
  for (let c = 0; c < cols; c++) members[group[c]].push(c);
  const scales = new Uint16Array(rows * ng), zeros = new Uint16Array(rows * ng); // fp16 [rows, ng]
  const codes = new Uint8Array(rows * cols); // [rows, cols]
  members.forEach((cs, g) => {
    // Group g gathered into its own [rows, |g|] matrix: rtn() with one group per row.
    const n = cs.length;
    const sub = Float32Array.from(
      { length: rows * n },
      (_, i) => w[Math.floor(i / n) * cols + cs[i % n]],
    );
    const t = rtn(sub, rows, n, { bits, sym, name: `rtnUniform() group ${g}` });
    const q = unpackCodes(t.codes, rows, n, bits); // [rows, n]
    for (let r = 0; r < rows; r++) {
      scales[r * ng + g] = t.scales[r];
      zeros[r * ng + g] = t.zeros[r];
      for (let i = 0; i < n; i++) codes[r * cols + cs[i]] = q[r * n + i];
    }
  });
  return {
    kind: "uniform",
    bits,
    rows,
    cols,
    groupSize,
    sym,
    codes: packCodes(codes, rows, cols, bits),
    scales,
    zeros,
    gIdx: opts.actOrderSeed !== undefined ? group : undefined,
  };
}

/**
 * Non-uniform quantization with one table per row: the table holds 2^b
 * quantiles of the row (from a sample of at most 1024 values), every weight
 * takes the nearest entry.
 * @param w weights [rows, cols]
 * @param rows output features
 * @param cols input features
 * @param bits code width
 */
export function quantileLut(w: Float32Array, rows: number, cols: number, bits: number): LutTensor {
  checkBits(bits, "quantileLut() bits");
  const k = 1 << bits;
  const lut = new Float32Array(rows * k);
  const codes = new Uint8Array(rows * cols);
  const step = Math.max(1, Math.floor(cols / 1024));
  const sample = new Float32Array(Math.ceil(cols / step));
  const mids = new Float32Array(k - 1);
  for (let r = 0; r < rows; r++) {
    const row = w.subarray(r * cols, (r + 1) * cols);
    let n = 0;
    for (let c = 0; c < cols; c += step) sample[n++] = row[c];
    const sorted = sample.subarray(0, n).sort();
    const table = Float16Array.from(
      { length: k },
      (_, i) => sorted[Math.min(n - 1, Math.floor(((i + 0.5) / k) * n))],
    ).sort();
    for (let i = 0; i < k; i++) lut[r * k + i] = table[i];
    for (let i = 0; i < k - 1; i++) mids[i] = (table[i] + table[i + 1]) / 2;
    for (let c = 0; c < cols; c++) {
      const v = row[c];
      let a = 0, b = k - 1; // first midpoint ≥ v
      while (a < b) {
        const m = (a + b) >> 1;
        if (mids[m] < v) a = m + 1;
        else b = m;
      }
      codes[r * cols + c] = a;
    }
  }
  return {
    kind: "lut",
    bits,
    rows,
    cols,
    codes: packCodes(codes, rows, cols, bits),
    lut: toF16(lut),
  };
}

/**
 * A random CSR matrix: each entry is nonzero with probability `density`,
 * values ~ N(0, std²).
 * @param rows rows
 * @param cols columns
 * @param density fraction of nonzeros (e.g. 0.0045)
 * @param seed PRNG seed
 * @param dtype value storage
 * @param std value scale
 */
export function randomCsr(
  rows: number,
  cols: number,
  density: number,
  seed: number,
  dtype: "f16" | "f32" = "f16",
  std = 1,
): CsrMatrix {
  const u = mulberry32(seed), g = gaussian(seed + 1);
  const rowPtr = new Int32Array(rows + 1);
  const colIdx: number[] = [], values: number[] = [];
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      if (u() < density) {
        colIdx.push(c);
        values.push(g() * std);
      }
    }
    rowPtr[r + 1] = colIdx.length;
  }
  return csrFrom(rows, cols, rowPtr, colIdx, values, dtype);
}

/**
 * A CSR matrix from explicit arrays (values rounded to fp16 when dtype is "f16").
 * @param rows rows
 * @param cols columns
 * @param rowPtr [rows + 1]
 * @param colIdx [nnz]
 * @param values [nnz]
 * @param dtype value storage
 */
export function csrFrom(
  rows: number,
  cols: number,
  rowPtr: ArrayLike<number>,
  colIdx: ArrayLike<number>,
  values: ArrayLike<number>,
  dtype: "f16" | "f32",
): CsrMatrix {
  return {
    rows,
    cols,
    rowPtr: Int32Array.from(rowPtr),
    colIdx: Int32Array.from(colIdx),
    values: dtype === "f16" ? toF16(values) : Float32Array.from(values),
    dtype,
  };
}

/**
 * Dense-and-Sparse split: the `fraction` of weights largest in magnitude go
 * to a CSR matrix (ties broken by position), the rest stay dense with those
 * entries zeroed.
 * @param w weights [rows, cols]
 * @param rows output features
 * @param cols input features
 * @param fraction share of weights moved to the sparse part (e.g. 0.0045)
 * @param dtype storage of the sparse values
 * @returns the remaining dense weights [rows, cols] and the sparse part
 */
export function splitOutliers(
  w: Float32Array,
  rows: number,
  cols: number,
  fraction: number,
  dtype: "f16" | "f32" = "f32",
): { dense: Float32Array; sparse: CsrMatrix } {
  const n = rows * cols;
  const k = Math.min(n, Math.round(fraction * n));
  const order = new Uint32Array(n).map((_, i) => i);
  order.sort((a, b) => Math.abs(w[b]) - Math.abs(w[a]) || a - b);
  const picked = order.subarray(0, k).sort();
  const dense = Float32Array.from(w);
  const rowPtr = new Int32Array(rows + 1), colIdx: number[] = [], values: number[] = [];
  for (const i of picked) {
    const r = Math.floor(i / cols);
    rowPtr[r + 1]++;
    colIdx.push(i % cols);
    values.push(w[i]);
    dense[i] = 0;
  }
  for (let r = 0; r < rows; r++) rowPtr[r + 1] += rowPtr[r];
  return { dense, sparse: csrFrom(rows, cols, rowPtr, colIdx, values, dtype) };
}

/** What {@linkcode syntheticLinear} builds. */
export interface SyntheticSpec {
  format: "f32" | "f16" | "uniform" | "lut";
  /** Code width for uniform / lut. */
  bits?: number;
  /** Uniform group size. @default cols */
  groupSize?: number;
  /** Fraction of largest-magnitude weights kept as fp16 sparse outliers. @default 0 */
  outliers?: number;
}

/**
 * A linear weight in the requested format from fp32 weights.
 * @param w weights [rows, cols]
 * @param rows output features
 * @param cols input features
 * @param spec format, bits, group size, outlier fraction
 */
export function syntheticLinear(
  w: Float32Array,
  rows: number,
  cols: number,
  spec: SyntheticSpec,
): LinearWeight {
  const split = spec.outliers ? splitOutliers(w, rows, cols, spec.outliers, "f16") : undefined;
  const d = split?.dense ?? w;
  const bits = spec.bits ?? 4;
  const dense = spec.format === "f32"
    ? f32Tensor(d, rows, cols)
    : spec.format === "f16"
    ? f16Tensor(d, rows, cols)
    : spec.format === "uniform"
    ? rtnUniform(d, rows, cols, { bits, groupSize: spec.groupSize })
    : quantileLut(d, rows, cols, bits);
  return { dense, sparse: split?.sparse };
}

/**
 * Φ⁻¹(p), the standard normal quantile, by Acklam's rational approximation
 * (relative error below 1.2·10⁻⁹: far finer than fp16's 2⁻¹¹).
 *
 * @param p a probability in (0, 1)
 * @returns z with P(N(0, 1) ≤ z) = p
 * @example
 * ```ts
 * normalQuantile(0.975); // 1.95996…
 * ```
 */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) throw new RangeError(`normalQuantile(): p must be in (0, 1), got ${p}`);
  const [a, b, c, d] = ACKLAM;
  const tail = (q: number) =>
    // the lower tail at q = √(−2 ln p)
    (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
    ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  if (p < ACKLAM_LOW) return tail(Math.sqrt(-2 * Math.log(p)));
  if (p > 1 - ACKLAM_LOW) return -tail(Math.sqrt(-2 * Math.log(1 - p)));
  const q = p - 0.5, r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
    (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

/** Acklam's coefficients: central numerator, central denominator, tail numerator, tail denominator. */
const ACKLAM = [
  [
    -3.969683028665376e+01,
    2.209460984245205e+02,
    -2.759285104469687e+02,
    1.383577518672690e+02,
    -3.066479806614716e+01,
    2.506628277459239e+00,
  ],
  [
    -5.447609879822406e+01,
    1.615858368580409e+02,
    -1.556989798598866e+02,
    6.680131188771972e+01,
    -1.328068155288572e+01,
  ],
  [
    -7.784894002430293e-03,
    -3.223964580411365e-01,
    -2.400758277161838e+00,
    -2.549732539343734e+00,
    4.374664141464968e+00,
    2.938163982698783e+00,
  ],
  [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00],
] as const;
/** Below this p (and above 1 − it) the tail formula applies. */
const ACKLAM_LOW = 0.02425;

/**
 * The fp16 bits of f(z) at the 2¹⁶ normal quantiles z = Φ⁻¹((i + ½) / 2¹⁶),
 * i = 0 … 65535: a table whose uniformly drawn entry is a draw of f(N(0, 1)),
 * the normal discretized to 2¹⁶ equally likely values (|z| ≤ 4.2).
 *
 * @param f the transform of each normal value (e.g. z ↦ 0.02 z, or z ↦ z²)
 * @returns fp16 bits [65536]
 * @example
 * ```ts
 * const weights = normalF16Table((z) => 0.02 * z); // N(0, 0.02²)
 * ```
 */
export function normalF16Table(f: (z: number) => number): Uint16Array {
  const n = 1 << 16;
  return toF16(Float64Array.from({ length: n }, (_, i) => f(normalQuantile((i + 0.5) / n))));
}

/**
 * `n` seeded fp16 draws from a {@linkcode normalF16Table}: the words of
 * model/random.ts's `mulberry32Fill(seed)`, each read as two 16-bit table
 * indices (low half first). Same seed → same bits.
 *
 * @param n values wanted
 * @param table fp16 bits [65536]
 * @param seed the generator's seed
 * @returns fp16 bits [n]
 */
export function fillF16FromTable(n: number, table: Uint16Array, seed: number): Uint16Array {
  if (table.length !== 1 << 16) {
    throw new RangeError(`fillF16FromTable(): the table needs 65536 entries, got ${table.length}`);
  }
  const words = mulberry32Fill(new Uint32Array(Math.ceil(n / 2)), seed);
  const out = new Uint16Array(words.buffer, 0, n); // the indices, replaced in place by their values
  for (let i = 0; i < n; i++) out[i] = table[out[i]];
  return out;
}
