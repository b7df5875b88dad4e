/**
 * Weight × activation (W×A) integer arithmetic on the CPU: the packing of
 * uniform codes into bit planes that kernels/bitplane.ts reads, and the
 * exact integer accumulators every W×A kernel (bit-plane and W8A8) must
 * reproduce bit for bit.
 *
 * ## The product
 *
 * A uniform weight code q_w (quant/format.ts's `UniformTensor`: w = s_w·(q_w − z_w)
 * per row and group) times a per-token asymmetric activation code q_x
 * (x = s_x·(q_x − z_x) per token b) gives, for output row r of token b,
 *
 *     y[b, r] = s_x[b] · Σ_g s_w[r, g] · acc[b, r, g],
 *     acc[b, r, g] = Σ_{k ∈ g} (q_x[b, k] − z_x[b]) · (q_w[r, k] − z_w[r, g])
 *                  = D − z_w·SX − z_x·SW + n_g·z_x·z_w,
 *
 * with D = Σ_{k ∈ g} q_x·q_w the unsigned integer product, SX = Σ_{k ∈ g} q_x
 * and SW = Σ_{k ∈ g} q_w, and n_g the group's column count. ABQ-LLM
 * (arXiv 2408.08554, engine/) computes D from bit planes,
 *
 *     D = Σ_i Σ_j 2^(i+j) · Σ_k popcount(x_i[k] & w_j[k]),
 *
 * with x_i the i-th bit of every activation code and w_j the j-th bit of
 * every weight code, 32 columns per u32; it stops at D (one per-tensor
 * scale, no zero points). Here the zero points are exact: SW per weight row
 * and SX per token are precomputed once, and the epilogue applies the
 * correction above in wrapping 32-bit integer arithmetic, which is exact
 * whenever the corrected accumulator itself fits in an int32: every shape
 * up to 2^31 / 255² ≈ 33,000 columns at 8×8 bits when the zero points lie in
 * the code range. (quant/act_quant.ts clamps an activation zero only to
 * ±10^4, reached by a vector whose values all share one sign and are far
 * from 0; {@linkcode waAccRef} throws when an accumulator would not fit.)
 *
 * ## Plane layout
 *
 * Block-interleaved, row-major: for a row r (a token b) and a 32-column
 * block k, the `bits` plane words of that block are consecutive,
 *
 *     planes[(r · kBlocks + k) · bits + i], bit c of the word = bit i of code 32k + c,
 *
 * low column in the low bit (the little-endian order of quant/format.ts's
 * bitstream). ABQ-LLM lays its planes out plane-major ([bits, rows, k/32],
 * high column in the high bit of a reversed word); interleaving instead
 * lets a GPU thread read one block's planes as one contiguous run, and the
 * threads of a row read one contiguous range. Columns past `cols` in the
 * last block are zero in every plane, so they add nothing to D, SX or SW.
 *
 * @module
 */
import type { UniformTensor } from "../quant/format.ts";
import { checkBits, codeAt, fromF16, nGroups } from "../quant/format.ts";

/** Columns per plane word. */
export const PLANE_BLOCK = 32;

/** Per-token quantized activations: x[b, k] = scales[b] · (codes[b, k] − zeros[b]). */
export interface ActCodes {
  /** Tokens (activation rows). */
  batch: number;
  cols: number;
  /** Code width (2..8). */
  bits: number;
  codes: Uint8Array; // [batch, cols], each in 0..2^bits − 1
  scales: Float32Array; // [batch]
  zeros: Int32Array; // [batch], integers (min/max grids round them)
}

/** Activation codes as bit planes (module doc, "Plane layout"), with the per-token sums. */
export interface ActPlanes {
  batch: number;
  cols: number;
  bits: number;
  /** ⌈cols / 32⌉. */
  kBlocks: number;
  planes: Uint32Array; // [batch, kBlocks, bits]
  scales: Float32Array; // [batch]
  zeros: Int32Array; // [batch]
  /** SX: Σ_k codes[b, k], once per token. */
  sums: Int32Array; // [batch]
}

/** A uniform weight's codes as bit planes, with what the epilogue needs per row and group. */
export interface WeightPlanes {
  rows: number;
  cols: number;
  /** Planes per code: the tensor's code width (3 for ABQ-LLM's five-level W2*). */
  bits: number;
  kBlocks: number;
  /** Columns per group (a multiple of 32), or cols for one group per row. */
  groupSize: number;
  nGroups: number;
  planes: Uint32Array; // [rows, kBlocks, bits]
  scales: Float32Array; // [rows, nGroups] (the stored fp16 values)
  zeros: Int32Array; // [rows, nGroups]
  /** SW: Σ_{k ∈ g} q_w[r, k], once per weight. */
  sums: Int32Array; // [rows, nGroups]
}

/**
 * Checks that a uniform tensor can be multiplied by the W×A kernels: no
 * act-order permutation, groups of whole 32-column blocks (or one per row),
 * integer zero points.
 *
 * @param t the weight
 * @param what names it in messages
 * @throws RangeError naming what is unsupported and what to use instead
 */
export function checkWaWeight(t: UniformTensor, what = "weight"): void {
  checkBits(t.bits, `${what}.bits`);
  if (t.gIdx) {
    throw new RangeError(
      `${what}: the W×A kernels need groups of consecutive columns; act-order (gIdx) weights ` +
        `run through kernels/matvec.ts instead`,
    );
  }
  if (t.groupSize < t.cols && t.groupSize % PLANE_BLOCK !== 0) {
    throw new RangeError(
      `${what}: groups of ${t.groupSize} columns are not whole ${PLANE_BLOCK}-column blocks; the W×A ` +
        `kernels take group sizes that are multiples of ${PLANE_BLOCK}, or one group per row`,
    );
  }
  for (const z of fromF16(t.zeros)) {
    if (!Number.isInteger(z)) {
      throw new RangeError(`${what}: zero point ${z} is not an integer (integer grids only)`);
    }
  }
}

/**
 * Checks the shape and ranges of per-token activation codes.
 *
 * @param x the activations
 * @param what names them in messages
 * @throws RangeError naming the field
 */
export function checkActCodes(x: ActCodes, what = "activations"): void {
  checkBits(x.bits, `${what}.bits`);
  const { batch, cols } = x;
  if (!(Number.isInteger(batch) && batch >= 1 && Number.isInteger(cols) && cols >= 1)) {
    throw new RangeError(`${what}: batch and cols must be positive integers, got ${batch}×${cols}`);
  }
  if (x.codes.length !== batch * cols) {
    throw new RangeError(`${what}.codes: expected ${batch}×${cols} codes, found ${x.codes.length}`);
  }
  if (x.scales.length !== batch || x.zeros.length !== batch) {
    throw new RangeError(
      `${what}: scales and zeros need one value per token (${batch}), found ` +
        `${x.scales.length} and ${x.zeros.length}`,
    );
  }
  const maxq = (1 << x.bits) - 1;
  for (let i = 0; i < x.codes.length; i++) {
    if (x.codes[i] > maxq) {
      throw new RangeError(`${what}.codes[${i}] = ${x.codes[i]} exceeds ${x.bits} bits`);
    }
  }
}

/**
 * Packs codes [n, cols] into bit planes [n, ⌈cols/32⌉, bits] (module doc).
 *
 * @param code code of (row, column)
 * @param n rows
 * @param cols columns
 * @param bits planes
 * @returns the planes
 */
function packPlanes(
  code: (r: number, c: number) => number,
  n: number,
  cols: number,
  bits: number,
): Uint32Array {
  const kBlocks = Math.ceil(cols / PLANE_BLOCK);
  const out = new Uint32Array(n * kBlocks * bits);
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < cols; c++) {
      const q = code(r, c);
      const base = (r * kBlocks + (c >>> 5)) * bits, bit = 1 << (c & 31);
      for (let i = 0; i < bits; i++) if ((q >>> i) & 1) out[base + i] |= bit;
    }
  }
  return out;
}

/**
 * Bit planes of per-token activation codes, with SX per token.
 *
 * @param x codes, scales and zeros per token
 * @returns the planes (module doc, "Plane layout")
 * @example
 * ```ts
 * const x = { batch: 1, cols: 3, bits: 2, codes: new Uint8Array([1, 2, 3]),
 *   scales: new Float32Array([0.5]), zeros: new Int32Array([1]) };
 * packActPlanes(x).planes; // Uint32Array [0b101, 0b110]
 * ```
 */
export function packActPlanes(x: ActCodes): ActPlanes {
  checkActCodes(x);
  const { batch, cols, bits, codes } = x;
  const sums = new Int32Array(batch);
  for (let b = 0; b < batch; b++) {
    let s = 0;
    for (let c = 0; c < cols; c++) s += codes[b * cols + c];
    sums[b] = s;
  }
  return {
    batch,
    cols,
    bits,
    kBlocks: Math.ceil(cols / PLANE_BLOCK),
    planes: packPlanes((b, c) => codes[b * cols + c], batch, cols, bits),
    scales: x.scales,
    zeros: x.zeros,
    sums,
  };
}

/**
 * A uniform weight's groups: their count, their width (at most cols) and the
 * sum SW of (code − shift) over each row's group, the term both W×A layouts
 * fold into the zero-point correction.
 *
 * @param t the weight (checked by {@linkcode checkWaWeight})
 * @param shift subtracted from every code (0 for bit planes, 128 for int8)
 * @returns nGroups, groupSize and sums [rows, nGroups]
 * @example
 * ```ts
 * const { sums } = weightGroupSums(t, 0); // sums[r * nGroups + g] = Σ codes of row r, group g
 * ```
 */
export function weightGroupSums(
  t: UniformTensor,
  shift: number,
): { nGroups: number; groupSize: number; sums: Int32Array } {
  const { rows, cols, bits, codes } = t;
  const ng = nGroups(t), gs = Math.min(t.groupSize, cols);
  const sums = new Int32Array(rows * ng); // [rows, nGroups]
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      sums[r * ng + Math.floor(c / gs)] += codeAt(codes, cols, bits, r, c) - shift;
    }
  }
  return { nGroups: ng, groupSize: gs, sums };
}

/**
 * Bit planes of a uniform weight's codes (read from quant/format.ts's packed
 * bitstream), with its scales, integer zeros and SW per row and group.
 *
 * @param t the weight (no gIdx; groups of whole 32-column blocks or one per row)
 * @returns the planes (module doc, "Plane layout")
 * @throws RangeError from {@linkcode checkWaWeight}
 */
export function packWeightPlanes(t: UniformTensor): WeightPlanes {
  checkWaWeight(t);
  const { rows, cols, bits, codes } = t;
  const { nGroups: ng, groupSize: gs, sums } = weightGroupSums(t, 0);
  return {
    rows,
    cols,
    bits,
    kBlocks: Math.ceil(cols / PLANE_BLOCK),
    groupSize: gs,
    nGroups: ng,
    planes: packPlanes((r, c) => codeAt(codes, cols, bits, r, c), rows, cols, bits),
    scales: fromF16(t.scales),
    zeros: Int32Array.from(fromF16(t.zeros)),
    sums,
  };
}

/**
 * The exact integer accumulators, from the codes themselves (no planes):
 * acc[b, r] = Σ_k (q_x[b, k] − z_x[b]) · (q_w[r, k] − z_w[r, g(k)]), summed over
 * every group. With one group per row this is the kernel's accumulator
 * before the epilogue; with several it is the sum of the per-group ones.
 *
 * @param w the weight [rows, cols]
 * @param x activation codes [batch, cols]
 * @returns acc [batch, rows]
 * @throws RangeError when a value does not fit in an int32
 */
export function waAccRef(w: UniformTensor, x: ActCodes): Int32Array {
  checkWaWeight(w);
  checkActCodes(x);
  if (w.cols !== x.cols) {
    throw new RangeError(`waAccRef(): weight has ${w.cols} columns, activations ${x.cols}`);
  }
  const { rows, cols } = w;
  const ng = nGroups(w), gs = Math.min(w.groupSize, cols);
  const zw = fromF16(w.zeros);
  const out = new Int32Array(x.batch * rows);
  const qw = new Int32Array(cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      qw[c] = codeAt(w.codes, cols, w.bits, r, c) - zw[r * ng + Math.floor(c / gs)];
    }
    for (let b = 0; b < x.batch; b++) {
      let s = 0;
      for (let c = 0; c < cols; c++) s += (x.codes[b * cols + c] - x.zeros[b]) * qw[c];
      if (s !== (s | 0)) throw new RangeError(`waAccRef(): accumulator ${s} exceeds an int32`);
      out[b * rows + r] = s;
    }
  }
  return out;
}

/**
 * The same accumulators computed the kernel's way, from bit planes: per
 * 32-column block, D = Σ_i Σ_j 2^(i+j) popcount(x_i & w_j), then the zero-point
 * correction with SX and SW per group, all in wrapping int32 arithmetic.
 *
 * @param w weight planes
 * @param x activation planes
 * @returns acc [batch, rows], equal to {@linkcode waAccRef}'s
 */
export function bitplaneAccRef(w: WeightPlanes, x: ActPlanes): Int32Array {
  if (w.cols !== x.cols) {
    throw new RangeError(`bitplaneAccRef(): weight has ${w.cols} columns, activations ${x.cols}`);
  }
  const { rows, cols, kBlocks, nGroups: ng, groupSize: gs } = w;
  const out = new Int32Array(x.batch * rows);
  const gBlocks = Math.ceil(gs / PLANE_BLOCK);
  for (let b = 0; b < x.batch; b++) {
    const zx = x.zeros[b];
    for (let r = 0; r < rows; r++) {
      let acc = 0;
      for (let g = 0; g < ng; g++) {
        let d = 0, sx = 0;
        const k1 = Math.min(kBlocks, (g + 1) * gBlocks);
        for (let k = g * gBlocks; k < k1; k++) {
          const xb = (b * kBlocks + k) * x.bits, wb = (r * kBlocks + k) * w.bits;
          for (let i = 0; i < x.bits; i++) {
            sx = (sx + (popcount(x.planes[xb + i]) << i)) | 0;
            for (let j = 0; j < w.bits; j++) {
              d = (d + (popcount(x.planes[xb + i] & w.planes[wb + j]) << (i + j))) | 0;
            }
          }
        }
        const n = Math.min(cols, (g + 1) * gs) - g * gs;
        const zw = w.zeros[r * ng + g], sw = w.sums[r * ng + g];
        acc = (acc + d - Math.imul(zw, sx) - Math.imul(zx, sw) + Math.imul(Math.imul(n, zx), zw)) |
          0;
      }
      out[b * rows + r] = acc;
    }
  }
  return out;
}

/**
 * The real-valued product the kernels' epilogue computes, in float64:
 * y[b, r] = s_x[b] · Σ_g s_w[r, g] · acc[b, r, g].
 *
 * @param w the weight
 * @param x activation codes
 * @returns y [batch, rows]
 */
export function waMatmulRef(w: UniformTensor, x: ActCodes): Float64Array {
  checkWaWeight(w);
  checkActCodes(x);
  const { rows, cols } = w;
  const ng = nGroups(w), gs = Math.min(w.groupSize, cols);
  const sw = fromF16(w.scales), zw = fromF16(w.zeros);
  const out = new Float64Array(x.batch * rows);
  for (let b = 0; b < x.batch; b++) {
    for (let r = 0; r < rows; r++) {
      let y = 0;
      for (let g = 0; g < ng; g++) {
        let acc = 0;
        for (let c = g * gs; c < Math.min(cols, (g + 1) * gs); c++) {
          acc += (x.codes[b * cols + c] - x.zeros[b]) *
            (codeAt(w.codes, cols, w.bits, r, c) - zw[r * ng + g]);
        }
        y += sw[r * ng + g] * acc;
      }
      out[b * rows + r] = x.scales[b] * y;
    }
  }
  return out;
}

/** Number of set bits of a 32-bit word. */
export function popcount(v: number): number {
  v = v - ((v >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24);
}
