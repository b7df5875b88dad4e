/**
 * GPTQ (Frantar et al., 2023, "GPTQ: Accurate Post-Training Quantization for
 * Generative Pre-trained Transformers"), following IST-DASLab/gptq gptq.py
 * (`GPTQ.add_batch`, `fasterquant`, `free`) step by step, on a grid passed
 * in (quant/rtn.ts `UniformGrid`; by default GPTQ's own `Quantizer`,
 * `minMaxGrid`), so one solver serves every grid.
 *
 * GPTQ minimizes ‖W X − Q X‖² column by column: with H = 2 X Xᵀ / nsamples
 * (the Hessian of the layer-wise objective) and Hinv the upper Cholesky factor
 * of H⁻¹, column i is rounded, its error err1 = (w − q) / Hinv[i, i] is
 * spread over the columns still to be quantized (W[:, i:] −= err1 · Hinv[i, i:],
 * the paper's Eq. (3) in Cholesky form), lazily in blocks of `blocksize`
 * columns (W[:, i2:] −= Err1 · Hinv[i1:i2, i2:]).
 *
 * Deliberate choices, each documented where it happens:
 * - `nsamples` counts calibration *windows* like GPTQ (`tmp = inp.shape[0]`,
 *   the batch size; GPTQ's llama.py feeds one window of seqlen tokens per
 *   call, so tmp = 1), not tokens: {@linkcode Gptq.addBatch} takes the number
 *   of windows its rows come from (default 1). This only scales H, which
 *   changes the reported `error` but not the quantized weights (the damping is
 *   relative to mean(diag H)).
 * - H, its damping, Cholesky factors and inverse are float64 (GPTQ: fp32 on
 *   the GPU); the working weights W, W1 and the errors Err1 are fp32 like
 *   GPTQ's (`W.float()`), i.e. every stored value is rounded with fp32.
 * - Codes are computed with the fp16-rounded scale that is stored
 *   (quant/rtn.ts module doc), and the error fed back is w − scale16·(q − zero),
 *   so `dequantize()` of the result is exactly the Q GPTQ's loop produced.
 * - act-order sorts diag(H) descending with a *stable* sort (ties keep column
 *   order). torch.argsort(descending=True) is not stable by default, so tied
 *   diagonals (e.g. dead columns, all set to 1) may be ordered differently by
 *   torch; nothing else differs.
 * - With groups and without static groups, group parameters are found, as in
 *   GPTQ, on `W[:, (i1+i):(i1+i+groupsize)]` of the *block-level* W: when the
 *   group size is not a multiple of `blocksize`, a group starting inside a
 *   block sees columns without the current block's in-block updates, exactly
 *   like GPTQ (which updates only W1 inside a block).
 *
 * Rows are independent given Hinv, so within each block of columns the sweep
 * takes rows four at a time: each row's in-block pass on its own W1 row
 * (scratch), then one lazy update for the four rows, a 4-row × 4-column
 * register tile over Hinv (~3.4 G multiply-adds/s in V8 on one core). The
 * inner loops allocate nothing. H is accumulated the same way
 * (linalg.ts `subtractPanel`), Hinv by linalg.ts `upperCholeskyOfInverse`.
 *
 * @module
 */
import { checkBits, packCodes, toF16, type UniformTensor } from "./format.ts";
import { DEFAULTS } from "./spec.ts";
import { NotPositiveDefiniteError, subtractPanel, upperCholeskyOfInverse } from "./linalg.ts";
import {
  checkFinite,
  checkGroupSize,
  codeBits,
  maxqField,
  maxqOf,
  minMaxGrid,
  quantizeValue,
  type UniformGrid,
} from "./rtn.ts";

/** Options of {@linkcode Gptq.fasterquant} (GPTQ's `fasterquant` arguments). */
export interface GptqOptions {
  /** Bits per weight, 2..8. */
  bits: number;
  /** Columns per group (GPTQ's `groupsize`); must divide cols. null: one group per row. @default null */
  groupSize?: number | null;
  /** Symmetric grid. @default false */
  sym?: boolean;
  /**
   * How group parameters are found (GPTQ's `quantizer.find_params`); must
   * have `bits` and `sym` of these options. @default minMaxGrid(bits, sym)
   */
  grid?: UniformGrid;
  /** Quantize columns in order of decreasing diag(H) (GPTQ's `actorder`). @default false */
  actOrder?: boolean;
  /** Group parameters from the unpermuted weights before the sweep (GPTQ's `static_groups`). @default false */
  staticGroups?: boolean;
  /** Columns per lazy-update block. @default 128 */
  blocksize?: number;
  /** Damping λ = percdamp · mean(diag H) added to diag(H). @default 0.01 */
  percdamp?: number;
  /** Name of the tensor for error messages (e.g. "layers.0.wq"). @default "W" */
  name?: string;
}

/** Result of {@linkcode Gptq.fasterquant}. */
export interface GptqResult {
  /** The quantized weights, codes in the original column order. */
  q: UniformTensor;
  /** Σ Losses, GPTQ's printed `error`: Σ over rows and columns of (w − q)² / Hinv[i, i]² / 2. */
  error: number;
  /** Wall time of fasterquant (GPTQ's `tick`: from before find_params to the end of the sweep). */
  seconds: number;
}

/** Default lazy-update block of GPTQ (quant/spec.ts DEFAULTS). */
export const GPTQ_BLOCKSIZE: number = DEFAULTS.gptq.blocksize;
/** Default damping fraction of GPTQ (quant/spec.ts DEFAULTS). */
export const GPTQ_PERCDAMP: number = DEFAULTS.gptq.percdamp;

/** Rows per tile of the sweep (the lazy update's register tile). */
const ROW_TILE = 4;

/** Samples of x per transposed chunk in addBatch. */
const XT_CHUNK = 64;

/**
 * GPTQ's solver for one linear layer W [rows, cols]: accumulate
 * H = 2/nsamples Σ X Xᵀ with {@linkcode addBatch}, solve with
 * {@linkcode fasterquant}, release with {@linkcode free}.
 *
 * @example
 * ```ts
 * const g = new Gptq(rows, cols);
 * for (const x of windows) g.addBatch(x, seqlen); // x: [seqlen, cols] inputs of the layer
 * const { q, error } = g.fasterquant(W, { bits: 3, groupSize: 128 });
 * g.free();
 * ```
 */
export class Gptq {
  /** Output features (rows of W). */
  readonly rows: number;
  /** Input features (columns of W, order of H). */
  readonly columns: number;
  /** H [columns, columns]; only its upper triangle is kept up to date. Null once consumed. */
  private H: Float64Array | null; // [columns, columns]
  /** Windows accumulated so far (GPTQ's `nsamples`). */
  nsamples = 0;
  private xt: Float64Array | null = null; // [columns, XT_CHUNK] scratch
  private xc: Float64Array | null = null; // [XT_CHUNK, columns] scratch

  /**
   * @param rows output features of the layer
   * @param cols input features of the layer
   */
  constructor(rows: number, cols: number) {
    if (!Number.isInteger(rows) || rows < 1 || !Number.isInteger(cols) || cols < 1) {
      throw new RangeError(`Gptq: rows and cols must be positive integers, got ${rows}×${cols}`);
    }
    this.rows = rows;
    this.columns = cols;
    this.H = new Float64Array(cols * cols);
  }

  /**
   * GPTQ's `add_batch`: H *= nsamples / (nsamples + tmp); nsamples += tmp;
   * H += (2 / nsamples) · xᵀ x, where tmp = `samples` is the number of
   * calibration windows the N rows of x come from (GPTQ: the batch size; one
   * window per call in its LLaMA loop).
   *
   * @param x layer inputs [N, cols] (one row per token)
   * @param N number of rows of x
   * @param samples calibration windows x stands for (GPTQ's tmp) @default 1
   */
  addBatch(x: Float32Array, N: number, samples = 1): void {
    const H = this.live("addBatch()");
    const n = this.columns;
    if (x.length !== N * n) {
      throw new RangeError(
        `Gptq.addBatch(): expected x of ${N}×${n} = ${N * n} values, got ${x.length}`,
      );
    }
    if (!(samples > 0)) {
      throw new RangeError(`Gptq.addBatch(): samples must be > 0, got ${samples}`);
    }
    for (let i = 0; i < x.length; i++) {
      if (!Number.isFinite(x[i])) {
        throw new RangeError(
          `Gptq.addBatch(): input row ${Math.floor(i / n)} has a non-finite value ${x[i]}`,
        );
      }
    }
    if (this.nsamples > 0) {
      const f = this.nsamples / (this.nsamples + samples);
      for (let i = 0; i < n; i++) {
        const ri = i * n;
        for (let j = i; j < n; j++) H[ri + j] *= f;
      }
    }
    this.nsamples += samples;
    // H[i, j≥i] += (2 / nsamples) Σ_t x[t, i] x[t, j], XT_CHUNK rows of x at a time:
    // xt [cols, nb] = −(2/nsamples)·(chunk of x)ᵀ and xc [nb, cols] = the chunk in float64.
    const s = 2 / this.nsamples;
    const xt = this.xt ??= new Float64Array(n * XT_CHUNK);
    const xc = this.xc ??= new Float64Array(XT_CHUNK * n);
    for (let t0 = 0; t0 < N; t0 += XT_CHUNK) {
      const nb = Math.min(XT_CHUNK, N - t0);
      for (let t = 0; t < nb; t++) {
        const xr = (t0 + t) * n;
        for (let i = 0; i < n; i++) {
          const v = x[xr + i];
          xc[t * n + i] = v;
          xt[i * nb + t] = -s * v;
        }
      }
      for (let i = 0; i < n; i += 4) {
        subtractPanel(H, i * n, n, Math.min(4, n - i), xt, i * nb, nb, nb, xc, 0, n, i, n);
      }
    }
  }

  /**
   * A solver seeded with an accumulated H (e.g. from another accumulator:
   * quant/sequential.ts `HessianAccumulator`, quant/gptq_fast.ts `fastHessians`).
   *
   * @param rows output features of the layer
   * @param cols input features of the layer
   * @param H 2/nsamples · Σ xᵀx [cols, cols] (only its upper triangle is read; copied)
   * @param nsamples windows H stands for (GPTQ's `nsamples`)
   * @throws {RangeError} when H is not [cols, cols] or nsamples is not > 0
   */
  static fromHessian(rows: number, cols: number, H: Float64Array, nsamples: number): Gptq {
    const g = new Gptq(rows, cols);
    if (H.length !== cols * cols) {
      throw new RangeError(
        `Gptq.fromHessian(): expected H of ${cols}×${cols} = ${
          cols * cols
        } values, got ${H.length}`,
      );
    }
    if (!(nsamples > 0)) {
      throw new RangeError(`Gptq.fromHessian(): nsamples must be > 0, got ${nsamples}`);
    }
    g.H!.set(H);
    g.nsamples = nsamples;
    return g;
  }

  /**
   * A new solver for another layer that reads the same inputs (e.g. q/k/v, or
   * gate/up, of one block): same columns, a copy of this H and nsamples.
   *
   * @param rows output features of the other layer
   */
  copyFor(rows: number): Gptq {
    const H = this.live("copyFor()");
    const g = new Gptq(rows, this.columns);
    g.H!.set(H);
    g.nsamples = this.nsamples;
    return g;
  }

  /** A full symmetric copy of the accumulated H [cols, cols]. */
  hessian(): Float64Array {
    const H = this.live("hessian()");
    const n = this.columns;
    const out = new Float64Array(H);
    mirrorUpper(out, n);
    return out;
  }

  /**
   * GPTQ's `fasterquant`: quantizes W [rows, cols] column by column with
   * error feedback through Hinv. Consumes H (GPTQ: `del self.H`); call
   * {@linkcode addBatch} on a new instance to quantize again.
   *
   * @param W weights [rows, cols] (not modified)
   * @param opts bits, groupSize, sym, actOrder, staticGroups, blocksize, percdamp
   * @returns the uniform tensor (codes in the original column order; gIdx with
   *   act-order and dynamic groups), Σ Losses and the seconds taken
   * @throws {RangeError} for bad options, non-finite weights, no calibration
   *   data, or an H that stays non-positive-definite after damping
   */
  fasterquant(W: ArrayLike<number>, opts: GptqOptions): GptqResult {
    const tick = performance.now();
    const what = opts.name ?? "W";
    const H = this.live("fasterquant()");
    const { rows, columns } = this;
    const bits = checkBits(opts.bits);
    const grouped = opts.groupSize !== undefined && opts.groupSize !== null;
    const groupsize = checkGroupSize(opts.groupSize, columns, what);
    const sym = opts.sym ?? false;
    const grid = opts.grid ?? minMaxGrid(bits, sym);
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
    this.H = null; // consumed, as GPTQ's `del self.H`
    this.xt = this.xc = null;
    const maxq = grid.maxq ?? maxqOf(bits); // 4 with bit balance at 2 bits
    const ng = columns / groupsize;

    // W = layer.weight.float(): the fp32 working copy [rows, columns].
    let Wf = Float32Array.from(W);

    // `if not self.quantizer.ready(): find_params(W)`: per-row parameters
    // from the weights before dead columns are zeroed (used without groups).
    const scales = new Float32Array(rows * ng); // stored fp16 values, [rows, ng]
    const zeros = new Float32Array(rows * ng); // [rows, ng]
    if (!grouped) {
      for (let r = 0; r < rows; r++) {
        const p = grid.params(Wf, r * columns, (r + 1) * columns, `${what} row ${r}`);
        scales[r] = p.scale;
        zeros[r] = p.zero;
      }
    }

    // dead = diag(H) == 0; H[dead, dead] = 1; W[:, dead] = 0
    for (let i = 0; i < columns; i++) {
      if (H[i * columns + i] === 0) {
        H[i * columns + i] = 1;
        for (let r = 0; r < rows; r++) Wf[r * columns + i] = 0;
      }
    }

    // static_groups: parameters of every group from the unpermuted W.
    if (staticGroups) {
      for (let r = 0; r < rows; r++) {
        for (let g = 0; g < ng; g++) {
          const c0 = r * columns + g * groupsize;
          const p = grid.params(Wf, c0, c0 + groupsize, `${what} row ${r}`);
          scales[r * ng + g] = p.scale;
          zeros[r * ng + g] = p.zero;
        }
      }
    }

    // actorder: perm = argsort(diag(H), descending); W = W[:, perm]; H = H[perm][:, perm]
    let perm: Int32Array | null = null;
    let Hp = H;
    if (actorder) {
      perm = descendingOrder(H, columns);
      const Wp = new Float32Array(rows * columns);
      for (let r = 0; r < rows; r++) {
        const o = r * columns;
        for (let i = 0; i < columns; i++) Wp[o + i] = Wf[o + perm[i]];
      }
      Wf = Wp;
      Hp = new Float64Array(columns * columns);
      for (let i = 0; i < columns; i++) {
        // only the upper triangle of Hp is read below; H holds only its upper triangle
        const a = perm[i], dst = i * columns;
        for (let j = i; j < columns; j++) {
          const b = perm[j];
          Hp[dst + j] = a <= b ? H[a * columns + b] : H[b * columns + a];
        }
      }
    }

    // damp = percdamp · mean(diag(H)); H[diag, diag] += damp
    let mean = 0;
    for (let i = 0; i < columns; i++) mean += Hp[i * columns + i];
    const damp = percdamp * (mean / columns);
    for (let i = 0; i < columns; i++) Hp[i * columns + i] += damp;

    // Hinv = cholesky(cholesky_inverse(cholesky(H)), upper=True)
    let Hinv: Float64Array;
    try {
      Hinv = upperCholeskyOfInverse(Hp, columns);
    } catch (e) {
      if (e instanceof NotPositiveDefiniteError) {
        throw new RangeError(
          `GPTQ on ${what}: H is not positive definite after damping with percdamp=${percdamp} ` +
            `(${e.message}); increase --percdamp`,
        );
      }
      throw e;
    }

    // The sweep, in tiles of ROW_TILE rows: each row's in-block pass on its own
    // W1/Err1 row, then the tile's lazy update shares every Hinv load.
    const codes = new Uint8Array(rows * columns); // [rows, columns], original column order
    const w1 = new Float32Array(blocksize); // W1[r, :] of the current block
    const Err1 = new Float32Array(ROW_TILE * blocksize); // [ROW_TILE, blocksize]
    let losses = 0;
    for (let i1 = 0; i1 < columns; i1 += blocksize) {
      const i2 = Math.min(i1 + blocksize, columns);
      const count = i2 - i1;
      for (let r0 = 0; r0 < rows; r0 += ROW_TILE) {
        const tile = Math.min(ROW_TILE, rows - r0);
        for (let t = 0; t < tile; t++) {
          const r = r0 + t;
          const o = r * columns;
          const eo = t * blocksize;
          for (let i = 0; i < count; i++) w1[i] = Wf[o + i1 + i];
          let scale = scales[r * ng], zero = zeros[r * ng];
          for (let i = 0; i < count; i++) {
            const col = i1 + i;
            if (grouped) {
              if (!staticGroups) {
                const g = Math.floor(col / groupsize);
                if (col % groupsize === 0) {
                  // find_params(W[:, (i1+i):(i1+i+groupsize)]) on the block-level W
                  const p = grid.params(Wf, o + col, o + col + groupsize, `${what} row ${r}`);
                  scales[r * ng + g] = p.scale;
                  zeros[r * ng + g] = p.zero;
                }
                scale = scales[r * ng + g];
                zero = zeros[r * ng + g];
              } else {
                const g = Math.floor((perm ? perm[col] : col) / groupsize);
                scale = scales[r * ng + g];
                zero = zeros[r * ng + g];
              }
            }
            const w = w1[i];
            const qc = quantizeValue(w, scale, zero, maxq);
            codes[o + (perm ? perm[col] : col)] = qc;
            const q = Math.fround(scale * (qc - zero));
            const hr = col * columns;
            const d = Hinv[hr + col];
            const e = Math.fround((w - q) / d); // err1 = (w − q) / d
            losses += ((w - q) * (w - q)) / (d * d); // Losses1 = (w − q)² / d²
            // W1[:, i:] −= err1 · Hinv1[i, i:]
            for (let j = i + 1; j < count; j++) w1[j] -= e * Hinv[hr + i1 + j];
            Err1[eo + i] = e;
          }
        }
        // W[:, i2:] −= Err1 · Hinv[i1:i2, i2:]
        if (i2 < columns) {
          if (tile === ROW_TILE) {
            lazyUpdate4(Wf, r0 * columns, Err1, blocksize, Hinv, columns, i1, count, i2);
          } else {
            for (let t = 0; t < tile; t++) {
              lazyUpdate1(
                Wf,
                (r0 + t) * columns,
                Err1,
                t * blocksize,
                Hinv,
                columns,
                i1,
                count,
                i2,
              );
            }
          }
        }
      }
    }

    let gIdx: Int32Array | undefined;
    if (grouped && actorder && !staticGroups) {
      // g_idx[perm[i]] = i // groupsize (GPTQ's g_idx, stored in original column order)
      gIdx = new Int32Array(columns);
      for (let i = 0; i < columns; i++) gIdx[perm![i]] = Math.floor(i / groupsize);
    }
    const cb = codeBits(maxq); // 3 for bit balance's five levels
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

  /** GPTQ's `free`: drops H and the scratch buffers. */
  free(): void {
    this.H = null;
    this.xt = this.xc = null;
  }

  private live(fn: string): Float64Array {
    if (!this.H) throw new Error(`Gptq.${fn}: H was already consumed by fasterquant() or free()`);
    return this.H;
  }
}

/** Copies the upper triangle of H [n, n] onto its lower triangle. */
function mirrorUpper(H: Float64Array, n: number): void {
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) H[j * n + i] = H[i * n + j];
}

/**
 * Column order by decreasing diag(H) [n, n], ties in increasing column order
 * (a stable descending argsort).
 */
export function descendingOrder(H: Float64Array, n: number): Int32Array {
  const idx = Array.from({ length: n }, (_, i) => i);
  idx.sort((a, b) => H[b * n + b] - H[a * n + a] || a - b);
  return Int32Array.from(idx);
}

/**
 * GPTQ's lazy batch update for one row r (W row at offset o, its Err1 row at
 * offset eo): W[r, i2:] −= Σ_{k<count} Err1[r, k] · Hinv[i1 + k, i2:], four k at a time.
 */
function lazyUpdate1(
  W: Float32Array,
  o: number,
  Err1: Float32Array,
  eo: number,
  Hinv: Float64Array,
  n: number,
  i1: number,
  count: number,
  i2: number,
): void {
  let k = 0;
  for (; k + 3 < count; k += 4) {
    const e0 = Err1[eo + k], e1 = Err1[eo + k + 1], e2 = Err1[eo + k + 2], e3 = Err1[eo + k + 3];
    const h0 = (i1 + k) * n, h1 = h0 + n, h2 = h1 + n, h3 = h2 + n;
    for (let j = i2; j < n; j++) {
      W[o + j] -= e0 * Hinv[h0 + j] + e1 * Hinv[h1 + j] + e2 * Hinv[h2 + j] + e3 * Hinv[h3 + j];
    }
  }
  for (; k < count; k++) {
    const e = Err1[eo + k];
    const h = (i1 + k) * n;
    for (let j = i2; j < n; j++) W[o + j] -= e * Hinv[h + j];
  }
}

/**
 * {@linkcode lazyUpdate1} for four consecutive rows starting at W offset o
 * (Err1 rows t·stride, t < 4): a 4-row × 4-k register tile, so each Hinv
 * value loaded serves four rows (about 2× the single-row speed in V8).
 */
function lazyUpdate4(
  W: Float32Array,
  o: number,
  Err1: Float32Array,
  stride: number,
  Hinv: Float64Array,
  n: number,
  i1: number,
  count: number,
  i2: number,
): void {
  const o1 = o + n, o2 = o1 + n, o3 = o2 + n;
  let k = 0;
  for (; k + 3 < count; k += 4) {
    const a0 = Err1[k], a1 = Err1[k + 1], a2 = Err1[k + 2], a3 = Err1[k + 3];
    const s1 = stride + k, s2 = s1 + stride, s3 = s2 + stride;
    const b0 = Err1[s1], b1 = Err1[s1 + 1], b2 = Err1[s1 + 2], b3 = Err1[s1 + 3];
    const c0 = Err1[s2], c1 = Err1[s2 + 1], c2 = Err1[s2 + 2], c3 = Err1[s2 + 3];
    const d0 = Err1[s3], d1 = Err1[s3 + 1], d2 = Err1[s3 + 2], d3 = Err1[s3 + 3];
    const h0 = (i1 + k) * n, h1 = h0 + n, h2 = h1 + n, h3 = h2 + n;
    for (let j = i2; j < n; j++) {
      const x0 = Hinv[h0 + j], x1 = Hinv[h1 + j], x2 = Hinv[h2 + j], x3 = Hinv[h3 + j];
      W[o + j] -= a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3;
      W[o1 + j] -= b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3;
      W[o2 + j] -= c0 * x0 + c1 * x1 + c2 * x2 + c3 * x3;
      W[o3 + j] -= d0 * x0 + d1 * x1 + d2 * x2 + d3 * x3;
    }
  }
  for (; k < count; k++) {
    const h = (i1 + k) * n;
    const a = Err1[k], b = Err1[stride + k], c = Err1[2 * stride + k], d = Err1[3 * stride + k];
    for (let j = i2; j < n; j++) {
      const x = Hinv[h + j];
      W[o + j] -= a * x;
      W[o1 + j] -= b * x;
      W[o2 + j] -= c * x;
      W[o3 + j] -= d * x;
    }
  }
}
