/**
 * The uniform quantization grid of GPTQ's `Quantizer` (IST-DASLab/gptq
 * quant.py, `find_params` with `perchannel=True, mse=False`, and `quantize`)
 * as pure functions, and round-to-nearest (RTN) quantization of a weight
 * matrix on that grid, per row or per group of columns. A grid is a
 * {@linkcode UniformGrid} (how scale and zero are found; the code step is
 * always {@linkcode quantizeValue}): {@linkcode minMaxGrid} is GPTQ's, AWQ's
 * is quant/awq.ts `awqGrid`; {@linkcode quantizeUniform} quantizes a matrix on
 * any of them and GPTQ's solver takes one as an argument.
 *
 * Grid: q = clamp(round(x / scale) + zero, 0, maxq), w = scale · (q − zero),
 * maxq = 2^b − 1, with `round` rounding halves to even like `torch.round`.
 *
 * Bit balance (ABQ-LLM's W2*, `--bit-balance`): an asymmetric 2-bit grid
 * gets one more level, maxq = 2^b = 4 and scale = (xmax − xmin) / 4, five
 * levels 0..4 (ABQ-LLM's quantizer.py raises qmax by one at 2 bits). Five
 * levels need 3-bit codes, and that is how they are stored and counted
 * (quant/format.ts `UniformTensor.maxq`, bits = 3).
 * All arithmetic mirrors torch's fp32 (each result rounded with
 * `Math.fround`), so the parameters equal GPTQ's bit for bit.
 *
 * fp16 storage. {@linkcode UniformTensor} stores scales and zeros as fp16, as
 * GPTQ's packed checkpoints do. The zero is an integer in 0..maxq (exact in
 * fp16); the scale is rounded to fp16 ({@linkcode storedScale}) and the codes
 * are computed with that *stored* scale, so `dequantize()` of the stored
 * tensor is exactly the matrix that was evaluated (GPTQ itself quantizes with
 * the fp32 scale and then casts the fake-quantized weights to fp16, so its
 * evaluated weights and its packed checkpoint differ slightly; here they
 * cannot). The zero stays GPTQ's `round(−xmin / scale)` computed with the fp32
 * scale.
 *
 * @module
 */
import { checkBits, packCodes, toF16, type UniformTensor } from "./format.ts";

/** Options of {@linkcode rtn}. */
export interface RtnOptions {
  /** Bits per weight, 2..8. */
  bits: number;
  /** Columns per scale group; must divide cols. null: one group per row. @default null */
  groupSize?: number | null;
  /** Symmetric grid (zero fixed at 2^(b−1)). @default false */
  sym?: boolean;
  /** Name of the tensor, for error messages (e.g. "layers.0.wq"). @default "W" */
  name?: string;
  /** Bit balance: at 2 bits, five levels (module doc); no effect at other widths. @default false */
  bitBalance?: boolean;
}

/** Grid parameters of one row or group: w ≈ scale · (q − zero). */
export interface GridParams {
  /** fp32 step of the grid. */
  scale: number;
  /** Integer offset in 0..maxq (GPTQ's `zero`). */
  zero: number;
}

/** Rounds to the nearest integer, halves to even (torch.round, numpy.rint). */
export function roundHalfEven(v: number): number {
  const r = Math.round(v); // halves go up
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** The largest code of a b-bit grid, 2^b − 1. */
export function maxqOf(bits: number): number {
  return (1 << bits) - 1;
}

/**
 * The largest code of a grid of `bits` bits: 2^b − 1, or 4 for an
 * asymmetric 2-bit grid with bit balance (five levels).
 *
 * @example
 * ```ts
 * gridMaxq(2, false, true); // 4
 * gridMaxq(3, false, true); // 7
 * ```
 */
export function gridMaxq(bits: number, sym = false, bitBalance = false): number {
  return bitBalance && bits === 2 && !sym ? 4 : maxqOf(bits);
}

/**
 * The `maxq` field of a grid or a uniform tensor: present only when the
 * largest code is not 2^b − 1 (bit balance), so default grids and tensors
 * carry none.
 *
 * @param bits code width
 * @param maxq largest code
 * @returns `{ maxq }`, or `{}` when maxq = 2^bits − 1
 * @example
 * ```ts
 * maxqField(3, 4); // { maxq: 4 }
 * maxqField(3, 7); // {}
 * ```
 */
export function maxqField(bits: number, maxq: number): { maxq?: number } {
  return maxq !== maxqOf(bits) ? { maxq } : {};
}

/**
 * The code width that holds codes 0..maxq: the smallest b with 2^b − 1 ≥ maxq
 * (3 for bit balance's five levels).
 */
export function codeBits(maxq: number): number {
  let b = 1;
  while ((1 << b) - 1 < maxq) b++;
  return b;
}

/**
 * GPTQ's `Quantizer.find_params` for one row or group: xmin = min(min(w), 0),
 * xmax = max(max(w), 0); symmetric: xmax = max(|xmin|, xmax) and xmin = −xmax
 * when xmin < 0; xmin = xmax = 0 becomes [−1, +1]; scale = (xmax − xmin)/maxq;
 * zero = (maxq+1)/2 when symmetric, else round(−xmin / scale).
 *
 * @param w the values of the row or group (any length ≥ 1)
 * @param bits bits per weight, 2..8
 * @param sym symmetric grid
 * @param start first index of w to read @default 0
 * @param end one past the last index to read @default w.length
 * @param maxq largest code (bit balance: 4 at 2 bits) @default 2^bits − 1
 * @returns fp32 scale and integer zero
 * @example
 * ```ts
 * findParams([-1, 0.5, 2], 2, false); // { scale: 1, zero: 1 }
 * ```
 */
export function findParams(
  w: ArrayLike<number>,
  bits: number,
  sym: boolean,
  start = 0,
  end = w.length,
  maxq = maxqOf(bits),
): GridParams {
  let xmin = 0, xmax = 0;
  for (let i = start; i < end; i++) {
    const v = w[i];
    if (v < xmin) xmin = v;
    if (v > xmax) xmax = v;
  }
  xmin = Math.fround(xmin);
  xmax = Math.fround(xmax);
  if (sym) {
    xmax = Math.max(Math.abs(xmin), xmax);
    if (xmin < 0) xmin = -xmax;
  }
  if (xmin === 0 && xmax === 0) {
    xmin = -1;
    xmax = 1;
  }
  const scale = Math.fround(Math.fround(xmax - xmin) / maxq);
  // `+ 0` turns torch's −0 (when xmin = 0) into 0, so the stored fp16 zero is +0
  const zero = sym ? (maxq + 1) / 2 : roundHalfEven(Math.fround(-xmin / scale)) + 0;
  return { scale, zero };
}

/**
 * A uniform grid: how the parameters of one row or group are found. Codes
 * are always {@linkcode quantizeValue}(x, scale, zero, 2^b − 1) and values
 * scale·(q − zero) (quant/format.ts `UniformTensor`); grids differ only in
 * how scale and zero are chosen. GPTQ's solver takes the grid as an argument
 * (as gpt-fast's GPTQ takes its find-params/quantize functions), so one
 * solver serves every grid.
 */
export interface UniformGrid {
  /** Bits of the grid (2 for bit balance's five levels; see {@linkcode UniformGrid.maxq}). */
  bits: number;
  sym: boolean;
  /**
   * Largest code: 4 for a bit-balanced 2-bit grid, whose codes are stored
   * with 3 bits ({@linkcode codeBits}). @default 2^bits − 1
   */
  maxq?: number;
  /**
   * Parameters of w[start:end], the scale as stored (fp16,
   * {@linkcode storedScale}) and the zero in 0..2^b − 1.
   *
   * @param what the row or tensor, for error messages
   */
  params(w: ArrayLike<number>, start: number, end: number, what: string): GridParams;
}

/**
 * GPTQ's min-max grid (`Quantizer.find_params`, {@linkcode findParams}) with
 * the scale as stored: the grid of RTN and of GPTQ.
 *
 * @param bits 2..8
 * @param sym symmetric grid @default false
 * @param bitBalance five levels at 2 bits (asymmetric only; module doc) @default false
 * @example
 * ```ts
 * minMaxGrid(2).params([-1, 0.5, 2], 0, 3, "W"); // { scale: 1, zero: 1 }
 * minMaxGrid(2, false, true).params([-1, 0.5, 2], 0, 3, "W"); // { scale: 0.75, zero: 1 }
 * ```
 */
export function minMaxGrid(bits: number, sym = false, bitBalance = false): UniformGrid {
  checkBits(bits);
  const maxq = gridMaxq(bits, sym, bitBalance);
  return {
    bits,
    sym,
    ...maxqField(bits, maxq),
    params(w, start, end, what) {
      const p = findParams(w, bits, sym, start, end, maxq);
      return { scale: storedScale(p.scale, what), zero: p.zero };
    },
  };
}

/** Smallest positive fp16 value (subnormal), 2^−24. */
export const F16_MIN_SCALE = 2 ** -24;

/**
 * The scale as stored: rounded to fp16, and raised to the smallest positive
 * fp16 (2^−24) when it would round to 0, so that the grid stays usable (the
 * codes are computed with this value; a group whose range is below ~2^−24·maxq
 * then quantizes to its zero point).
 *
 * @throws {RangeError} when the scale overflows fp16 (weights beyond ±65504·maxq)
 */
export function storedScale(scale: number, what = "W"): number {
  const s = Math.f16round(scale);
  if (!Number.isFinite(s)) {
    throw new RangeError(`${what}: grid scale ${scale} overflows fp16 (largest 65504)`);
  }
  return s === 0 ? F16_MIN_SCALE : s;
}

/**
 * GPTQ's `quantize` grid step, returning the integer code:
 * clamp(round(x / scale) + zero, 0, maxq), x / scale in fp32, halves to even.
 *
 * @param x the weight
 * @param scale grid step
 * @param zero integer zero point
 * @param maxq largest code, 2^b − 1
 * @returns the code in 0..maxq
 * @example
 * ```ts
 * quantizeValue(0.25, 0.5, 2, 3); // 2 (0.5 rounds to even 0)
 * ```
 */
export function quantizeValue(x: number, scale: number, zero: number, maxq: number): number {
  const q = roundHalfEven(Math.fround(x / scale)) + zero;
  return q < 0 ? 0 : q > maxq ? maxq : q;
}

/**
 * Throws a RangeError naming `option` unless `groupSize` is a positive
 * integer dividing `cols`, or null / undefined (one group per row: GPTQ's −1).
 *
 * @returns the group size of the packed format: cols for one group per row
 */
export function checkGroupSize(
  groupSize: number | null | undefined,
  cols: number,
  what = "W",
  option = "--group",
): number {
  if (groupSize === undefined || groupSize === null) return cols;
  if (!Number.isInteger(groupSize) || groupSize < 1 || cols % groupSize !== 0) {
    throw new RangeError(
      `${option} must be a positive integer dividing the row width of ${what} (${cols} columns), ` +
        `got ${groupSize}`,
    );
  }
  return groupSize;
}

/**
 * Throws a RangeError naming the tensor and row of the first NaN or infinite
 * value of W [rows, cols].
 */
export function checkFinite(W: ArrayLike<number>, rows: number, cols: number, what = "W"): void {
  if (W.length !== rows * cols) {
    throw new RangeError(
      `${what}: expected ${rows}×${cols} = ${rows * cols} weights, got ${W.length}`,
    );
  }
  for (let i = 0; i < W.length; i++) {
    if (!Number.isFinite(W[i])) {
      const r = Math.floor(i / cols);
      throw new RangeError(
        `${what}: weight (${r}, ${i - r * cols}) is ${W[i]}; row ${r} is not finite`,
      );
    }
  }
}

/**
 * Round-to-nearest quantization of W [rows, cols] on GPTQ's grid, with one
 * (scale, zero) per row, or per group of `groupSize` consecutive columns.
 *
 * @param W weights [rows, cols], row-major ([out, in] of a linear layer)
 * @param rows number of rows
 * @param cols number of columns
 * @param opts bits, groupSize, sym
 * @returns the uniform tensor (fp16 scales/zeros [rows, cols/groupSize], packed codes)
 * @throws {RangeError} for bits outside 2..8, a group size not dividing cols, or non-finite weights
 * @example
 * ```ts
 * const q = rtn(new Float32Array([0, 1, 2, 3]), 1, 4, { bits: 2 });
 * // dequantize({ dense: q }) → [0, 1, 2, 3]
 * ```
 */
export function rtn(
  W: ArrayLike<number>,
  rows: number,
  cols: number,
  opts: RtnOptions,
): UniformTensor {
  const what = opts.name ?? "W";
  const bits = checkBits(opts.bits);
  const groupSize = checkGroupSize(opts.groupSize, cols, what);
  const sym = opts.sym ?? false;
  checkFinite(W, rows, cols, what);
  const grid = minMaxGrid(bits, sym, opts.bitBalance ?? false);
  return quantizeUniform(W, rows, cols, groupSize, grid, what);
}

/**
 * W [rows, cols] on a uniform grid with one (scale, zero) per row, or per
 * group of `groupSize` consecutive columns: the parameters from
 * `grid.params`, the codes {@linkcode quantizeValue}(w, scale, zero, maxq)
 * (maxq = `grid.maxq`, else 2^b − 1), stored with {@linkcode codeBits}(maxq)
 * bits.
 * The one quantization loop of RTN and AWQ (GPTQ's solver calls the grid
 * itself).
 *
 * @param W weights [rows, cols], row-major
 * @param rows number of rows
 * @param cols number of columns
 * @param groupSize columns per group, dividing cols (cols: one group per row)
 * @param grid how scale and zero are found
 * @param what the tensor, for error messages @default "W"
 * @returns the uniform tensor (fp16 scales/zeros [rows, cols/groupSize], packed codes;
 *   `maxq` set when below the code width's 2^b − 1)
 * @example
 * ```ts
 * quantizeUniform(new Float32Array([0, 1, 2, 3]), 1, 4, 4, minMaxGrid(2)); // = rtn(…, { bits: 2 })
 * ```
 */
export function quantizeUniform(
  W: ArrayLike<number>,
  rows: number,
  cols: number,
  groupSize: number,
  grid: UniformGrid,
  what = "W",
): UniformTensor {
  const { sym } = grid;
  const maxq = grid.maxq ?? maxqOf(grid.bits);
  const bits = codeBits(maxq);
  const ng = cols / groupSize;
  const scales = new Float32Array(rows * ng); // [rows, ng]
  const zeros = new Float32Array(rows * ng); // [rows, ng]
  const codes = new Uint8Array(rows * cols); // [rows, cols]
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < ng; g++) {
      const c0 = r * cols + g * groupSize;
      const p = grid.params(W, c0, c0 + groupSize, `${what} row ${r}`);
      scales[r * ng + g] = p.scale;
      zeros[r * ng + g] = p.zero;
      for (let c = c0; c < c0 + groupSize; c++) {
        codes[c] = quantizeValue(W[c], p.scale, p.zero, maxq);
      }
    }
  }
  return {
    kind: "uniform",
    bits,
    rows,
    cols,
    groupSize,
    sym,
    ...maxqField(bits, maxq),
    codes: packCodes(codes, rows, cols, bits),
    scales: toF16(scales),
    zeros: toF16(zeros),
  };
}
