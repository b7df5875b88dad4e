/**
 * The hand-written gradients of ABQ-LLM's block reconstruction
 * (quant/abq.ts): one transformer block's forward pass that keeps every
 * activation, its backward pass to the block's effective weights (the seven
 * fake-quantized linears and the two norm weights), and the backward of the
 * two quantizers on the way:
 *
 * - the activation quantizer (quant/act_quant.ts, ABQ-LLM's per-token
 *   `UniformAffineQuantizer`): x̂ = (clamp(round_ste(x/s) + z, 0, maxq) − z)·s
 *   with s = (max x − min x)/maxq and z = round(−min x / s) (torch's `round`
 *   has no gradient, so z is a constant): ∂x̂_i/∂x_i = 1 inside the grid, 0 where
 *   clamped, and s carries the rest to the vector's max and min;
 * - learnable weight clipping (LWC, quant/abq.ts `lwcForward`): the same
 *   grid per row or group with max·σ(γ) and min·σ(β) in place of max and min.
 *
 * The block's own ops go through model/backward.ts (RMSNorm, RoPE, the
 * linears' two matmuls); the attention is quant/abq_attention.ts
 * {@linkcode AbqAttention}: every product in WebAssembly SIMD, each head's
 * probabilities kept, and the gradient of ABQ's attention-map loss entering
 * its softmax backward.
 *
 * A step (forward, loss, backward) is cut into {@linkcode PARTS} parts that
 * two threads can run at once (quant/abq_parallel.ts): each part owns half
 * of the token rows for the per-token work and half of the KV heads for the
 * attention, the threads meet at a few barriers, and every value is computed
 * the same way whichever thread runs which part.
 *
 * @module
 */
import type { LayerWeights, LlamaConfig } from "../model/config.ts";
import { headSize, kvDim, ropeTables } from "../model/config.ts";
import { block, type BlockBuffers, type BlockHooks } from "../model/forward.ts";
import {
  type LayerGradients,
  linearGradInput,
  linearGradWeight,
  rmsnormBackward,
  ropeBackwardTransposed,
  transpose,
} from "../model/backward.ts";
import {
  ACT_OFF_BITS,
  type ActQuantConfig,
  asymMaxq,
  fakeQuantRows,
  tokenParams,
} from "./act_quant.ts";
import { roundHalfEven } from "./rtn.ts";
import { AbqAttention, triangle } from "./abq_attention.ts";
import { ACT_QUANT_KERNELS } from "./abq_kernels.ts";
import {
  type AbqLoss,
  type LossBuffers,
  lossCosRows,
  lossRows,
  lossTotal,
  ROW_STATS,
  type TeacherMap,
} from "./abq_loss.ts";

export { triangle };

/**
 * Backward of one fake-quantized vector (quant/act_quant.ts `fakeQuantRows`,
 * one row): g[go, go + n) holds dL/dx̂ on entry and dL/dx on return, x[xo,
 * xo + n) the vector before quantization.
 *
 *   dx_i = g_i·[x_i inside the grid] + (δ_{i,argmax} − δ_{i,argmin})/maxq · Σ_j g_j·∂x̂_j/∂s
 *   ∂x̂_j/∂s = (q_j − z) − [inside]·x_j/s      (0 when s is clamped)
 */
export function fakeQuantGrad(
  g: Float32Array,
  go: number,
  x: Float32Array,
  xo: number,
  n: number,
  maxq: number,
  round: (v: number) => number = roundHalfEven,
): void {
  const { scale, zero } = tokenParams(x, xo, n, maxq);
  let imax = xo, imin = xo;
  for (let i = xo + 1; i < xo + n; i++) {
    if (x[i] > x[imax]) imax = i;
    if (x[i] < x[imin]) imin = i;
  }
  const raw = Math.fround(Math.fround(x[imax]) - Math.fround(x[imin])) / maxq;
  const scaleFree = raw >= 1e-5 && raw <= 1e4;
  let dS = 0;
  for (let i = 0; i < n; i++) {
    const xi = x[xo + i], gi = g[go + i];
    const r = round(Math.fround(xi / scale)) + zero;
    const inside = r >= 0 && r <= maxq;
    const q = r < 0 ? 0 : r > maxq ? maxq : r;
    dS += gi * (q - zero - (inside ? xi / scale : 0));
    g[go + i] = inside ? gi : 0;
  }
  if (!scaleFree) return;
  g[go + imax - xo] += dS / maxq;
  g[go + imin - xo] -= dS / maxq;
}

/**
 * {@linkcode fakeQuantGrad} for `rows` consecutive vectors of `width` in g
 * and x; with round-half-even, in WebAssembly (quant/abq_kernels.ts: the
 * same bits).
 */
export function fakeQuantRowsGrad(
  g: Float32Array,
  x: Float32Array,
  rows: number,
  width: number,
  maxq: number,
  round: (v: number) => number = roundHalfEven,
): void {
  if (round === roundHalfEven && ACT_QUANT_KERNELS) {
    return ACT_QUANT_KERNELS.fakeQuantRowsGrad(g, x, rows, width, maxq);
  }
  for (let r = 0; r < rows; r++) fakeQuantGrad(g, r * width, x, r * width, width, maxq, round);
}

/**
 * quant/act_quant.ts `fakeQuantRows` with the rounding of x / scale given:
 * `roundHalfEven` (the default) is that function exactly; the identity is the
 * straight-through estimator's forward, whose true derivative is what
 * {@linkcode fakeQuantGrad} computes (the finite-difference tests use it).
 */
export function fakeQuantRowsWith(
  x: Float32Array,
  rows: number,
  width: number,
  maxq: number,
  out: Float32Array,
  round: (v: number) => number,
): Float32Array {
  if (round === roundHalfEven) return fakeQuantRows(x, rows, width, maxq, out);
  for (let r = 0; r < rows; r++) {
    const o = r * width;
    const { scale, zero } = tokenParams(x, o, width, maxq);
    for (let i = o; i < o + width; i++) {
      let q = round(Math.fround(x[i] / scale)) + zero;
      q = q < 0 ? 0 : q > maxq ? maxq : q;
      out[i] = Math.fround((q - zero) * scale);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// How a step's work divides between threads

/**
 * Parts of every step: each part owns a range of token rows (the per-token
 * work: RMSNorm, the linears' inputs and outputs, RoPE, SwiGLU, the loss)
 * and a range of KV heads (the attention), plus a slice of each weight
 * gradient's rows. Sums across parts (the head-averaged map, the norm
 * weights' gradients) are always taken as part 0 + part 1, so the numbers are
 * the same whether one thread runs both parts or two threads one each.
 */
export const PARTS = 2;

/** A thread's share of a step: its parts, and a barrier with the other threads. */
export interface Lane {
  /** The parts this thread runs (consecutive). */
  parts: readonly number[];
  /** Returns once every thread has reached this point of the step. */
  sync(): void;
}

/** One thread running every part. */
export const SOLO: Lane = { parts: [0, 1], sync() {} };

/** [start, end) of part p's share of n items, the first part's end rounded up to a multiple of 8. */
export function partRange(p: number, n: number): [number, number] {
  const cut = Math.min(n, ((n >> 1) + 7) & ~7);
  return p === 0 ? [0, cut] : [cut, n];
}

/** [start, end) of part p's KV heads (or weight-gradient rows): ⌊n·p/PARTS⌋ .. ⌊n·(p+1)/PARTS⌋. */
export function partSlice(p: number, n: number): [number, number] {
  return [Math.floor((n * p) / PARTS), Math.floor((n * (p + 1)) / PARTS)];
}

// ---------------------------------------------------------------------------
// The buffers of one block's step, in one (shareable) memory

/** Names and sizes (floats) of the float32 buffers of a step: what threads share. */
function stepLayout(c: LlamaConfig, maxT: number, aq: boolean, kq: boolean): [string, number][] {
  const { dim, hiddenDim: h } = c;
  const kv = kvDim(c), qkv = dim + 2 * kv, tri = triangle(maxT), T = maxT;
  const L: [string, number][] = [
    // forward activations [T, width]
    ["x", T * dim],
    ["res", T * dim],
    ["xnA", T * dim],
    ["q", T * dim],
    ["k", T * kv],
    ["v", T * kv],
    ["att", T * dim],
    ["out", T * dim],
    ["xMid", T * dim],
    ["xnF", T * dim],
    ["h1", T * h],
    ["h3", T * h],
    ["gated", T * h],
    // the head-averaged map: per part, summed, and its gradient
    ["avg0", tri],
    ["avg1", tri],
    ["avg", tri],
    ["dA", tri],
    // the loss's targets
    ["T1", T * dim],
    ["T2", T * dim],
    ["tAvg", tri],
    ["tLogZ", T],
    ["tPf", tri],
    // backward [T, width] and transposed [width, T]
    ["dx", T * dim],
    ["dxn", T * dim],
    ["dAtt", T * dim],
    ["dGated", T * h],
    ["dh13", T * 2 * h],
    ["dqkv", T * qkv],
    ["dqkvT", qkv * T],
    ["dxT", dim * T],
    ["in2T", h * T],
    ["dh13T", 2 * h * T],
    ["in13T", dim * T],
    ["dx2T", dim * T],
    ["inOT", dim * T],
    ["inQkvT", dim * T],
    // gradients
    ["gQKV", qkv * dim],
    ["g13", 2 * h * dim],
    ["gW2", dim * h],
    ["gWo", dim * dim],
    ["normParts", 2 * PARTS * dim],
    ["gAttnNorm", dim],
    ["gFfnNorm", dim],
    // the step's effective weights and their transposes
    ["wq", dim * dim],
    ["wk", kv * dim],
    ["wv", kv * dim],
    ["wo", dim * dim],
    ["w1", h * dim],
    ["w3", h * dim],
    ["w2", dim * h],
    ["attnNorm", dim],
    ["ffnNorm", dim],
    ["wqkvT", dim * qkv],
    ["woT", dim * dim],
    ["w13T", dim * 2 * h],
    ["w2T", h * dim],
  ];
  if (aq) L.push(["inQkv", T * dim], ["inO", T * dim], ["in13", T * dim], ["in2", T * h]);
  if (kq) L.push(["qPre", T * dim], ["kPre", T * kv], ["vPre", T * kv]);
  return L;
}

/**
 * The memory of one block's step: float32 buffers and the loss's float64
 * row statistics, as SharedArrayBuffers so that worker threads can view the
 * same step (quant/abq_parallel.ts).
 */
export interface StepMemory {
  f32: SharedArrayBuffer;
  stats: SharedArrayBuffer; // [maxT, ROW_STATS] float64
}

/** A new {@linkcode StepMemory} for `config`, windows of up to maxT tokens, activation quantization act. */
export function stepMemory(
  config: LlamaConfig,
  maxT: number,
  act: ActQuantConfig | null,
): StepMemory {
  const { aq, kq } = actFlags(act);
  const floats = stepLayout(config, maxT, aq, kq).reduce((a, [, n]) => a + n, 0);
  return {
    f32: new SharedArrayBuffer(floats * 4),
    stats: new SharedArrayBuffer(maxT * ROW_STATS * 8),
  };
}

function actFlags(act: ActQuantConfig | null): { aq: boolean; kq: boolean } {
  return {
    aq: act !== null && act.abits < ACT_OFF_BITS,
    kq: act !== null && act.kvBits < ACT_OFF_BITS,
  };
}

/** out[c·T + t] = a[t·width + c] for rows t in [r0, r1): rows of a [T, width] into columns of out [width, T]. */
function transposeRows(
  out: Float32Array,
  a: Float32Array,
  r0: number,
  r1: number,
  T: number,
  width: number,
): void {
  // 8 rows at a time: each column's 8 values are written next to each other
  let t = r0;
  for (; t + 8 <= r1; t += 8) {
    const o = t * width;
    for (let c = 0; c < width; c++) {
      const d = c * T + t;
      out[d] = a[o + c];
      out[d + 1] = a[o + width + c];
      out[d + 2] = a[o + 2 * width + c];
      out[d + 3] = a[o + 3 * width + c];
      out[d + 4] = a[o + 4 * width + c];
      out[d + 5] = a[o + 5 * width + c];
      out[d + 6] = a[o + 6 * width + c];
      out[d + 7] = a[o + 7 * width + c];
    }
  }
  for (; t < r1; t++) {
    const o = t * width;
    for (let c = 0; c < width; c++) out[c * T + t] = a[o + c];
  }
}

/** Columns [c0, c1) of a [T, width] into rows of aT [width, T] (back = false), or back. */
function transposeCols(
  aT: Float32Array,
  a: Float32Array,
  T: number,
  width: number,
  c0: number,
  c1: number,
  back: boolean,
): void {
  for (let c = c0; c < c1; c++) {
    const o = c * T;
    if (back) { for (let t = 0; t < T; t++) a[t * width + c] = aT[o + t]; }
    else for (let t = 0; t < T; t++) aT[o + t] = a[t * width + c];
  }
}

/**
 * Saved activations, scratch and gradients of one block's forward and
 * backward passes for windows of up to `maxT` tokens, in a
 * {@linkcode StepMemory} (its own, or one shared with other threads), and
 * the step's parts as methods ({@linkcode Lane}): a thread runs
 * `laneForward`, `laneLoss`, `laneBackward` on its parts, meeting the other
 * threads at the lane's barriers. `forward`, `loss` and `backward` run every
 * part on this thread.
 */
export class AbqBlockState {
  readonly c: LlamaConfig; // the model's config with nLayers = 1
  readonly maxT: number;
  readonly act: ActQuantConfig | null;
  readonly memory: StepMemory;
  /** The step's buffers by name (module-private layout, see stepLayout). */
  readonly b: Record<string, Float32Array>;
  readonly stats: Float64Array; // [maxT, ROW_STATS] the loss's row statistics
  /** The step's effective weights (views of the memory). */
  readonly weights: LayerWeights;
  readonly grads: LayerGradients;
  readonly avgProbs: Float32Array; // [maxT(maxT+1)/2] head-averaged causal probabilities
  readonly attn: AbqAttention;
  private readonly ropeCos: Float32Array; // [maxT, headSize / 2]
  private readonly ropeSin: Float32Array;
  private readonly cat: Float32Array; // [max(dim + 2kv, 2 hidden), dim] scratch
  private readonly negExp: Float32Array; // [maxT, hiddenDim] scratch: e^{−h1}
  private readonly gKv: Float32Array; // [maxT, dim] scratch: gradients of a part's Q, K or V
  private readonly xKv: Float32Array; // [maxT, dim] scratch: the same before quantization
  private readonly aMaxq: number; // 0: linear inputs not quantized
  private readonly kMaxq: number; // 0: Q, K, V not quantized

  /**
   * @param config the model (nLayers is ignored)
   * @param maxT the longest window
   * @param act the activation quantization of the quantized path, or null
   * @param round the rounding of the activation quantizers (the identity: the STE's forward, for tests)
   * @param memory the step's memory, shared with other threads @default a new one
   */
  constructor(
    config: LlamaConfig,
    maxT: number,
    act: ActQuantConfig | null,
    readonly round: (v: number) => number = roundHalfEven,
    memory: StepMemory = stepMemory(config, maxT, act),
  ) {
    this.c = { ...config, nLayers: 1 };
    this.maxT = maxT;
    this.act = act;
    this.memory = memory;
    const { dim, hiddenDim } = config;
    const kv = kvDim(config), qkv = dim + 2 * kv;
    const { aq, kq } = actFlags(act);
    this.aMaxq = aq ? asymMaxq(act!.abits, act!.bitBalance) : 0;
    this.kMaxq = kq ? asymMaxq(act!.kvBits, act!.bitBalance) : 0;
    const b: Record<string, Float32Array> = {};
    let at = 0;
    for (const [name, n] of stepLayout(config, maxT, aq, kq)) {
      b[name] = new Float32Array(memory.f32, at * 4, n);
      at += n;
    }
    if (!aq) [b.inQkv, b.inO, b.in13, b.in2] = [b.xnA, b.att, b.xnF, b.gated];
    this.b = b;
    this.stats = new Float64Array(memory.stats);
    this.avgProbs = b.avg;
    this.weights = {
      attnNorm: b.attnNorm,
      ffnNorm: b.ffnNorm,
      wq: b.wq,
      wk: b.wk,
      wv: b.wv,
      wo: b.wo,
      w1: b.w1,
      w3: b.w3,
      w2: b.w2,
    };
    this.grads = {
      attnNorm: b.gAttnNorm,
      ffnNorm: b.gFfnNorm,
      wq: b.gQKV.subarray(0, dim * dim),
      wk: b.gQKV.subarray(dim * dim, (dim + kv) * dim),
      wv: b.gQKV.subarray((dim + kv) * dim, qkv * dim),
      wo: b.gWo,
      w1: b.g13.subarray(0, hiddenDim * dim),
      w3: b.g13.subarray(hiddenDim * dim),
      w2: b.gW2,
    };
    [this.ropeCos, this.ropeSin] = ropeTables(config, maxT);
    this.cat = new Float32Array(Math.max(qkv, 2 * hiddenDim) * dim);
    this.negExp = new Float32Array(maxT * hiddenDim);
    this.gKv = new Float32Array(this.kMaxq ? maxT * dim : 0);
    this.xKv = new Float32Array(this.kMaxq ? maxT * dim : 0);
    this.attn = new AbqAttention(this.c, maxT);
  }

  /** The block on x [T, dim] with weights lw, every part on this thread: returns y [T, dim]. */
  forward(lw: LayerWeights, x: Float32Array, T: number): Float32Array {
    this.load(lw);
    this.setInput(x, T);
    this.laneForward(SOLO, T);
    return this.output(T);
  }

  /** The loss of the last forward against T1, T2 and the teacher; fills dL/dY and dL/dA. */
  loss(T1: Float32Array, T2: Float32Array, teacher: TeacherMap, T: number): AbqLoss {
    this.setTargets(T1, T2, teacher, T);
    this.laneLoss(SOLO, T);
    return lossTotal(this.stats, T, this.c.dim);
  }

  /** Gradients of the last loss with respect to the weights of the last forward (views of this.grads). */
  backward(T: number): LayerGradients {
    this.laneBackward(SOLO, T);
    return this.grads;
  }

  /** Copies the step's effective weights lw in and transposes them for the backward products. */
  load(lw: LayerWeights): void {
    const { dim, hiddenDim } = this.c;
    const kv = kvDim(this.c), qkv = dim + 2 * kv, cat = this.cat, b = this.b, w = this.weights;
    for (const k of Object.keys(w) as (keyof LayerWeights)[]) w[k].set(lw[k]);
    cat.set(lw.wq, 0);
    cat.set(lw.wk, dim * dim);
    cat.set(lw.wv, (dim + kv) * dim);
    transpose(b.wqkvT, cat, qkv, dim);
    transpose(b.woT, lw.wo, dim, dim);
    cat.set(lw.w1, 0);
    cat.set(lw.w3, hiddenDim * dim);
    transpose(b.w13T, cat, 2 * hiddenDim, dim);
    transpose(b.w2T, lw.w2, dim, hiddenDim);
  }

  /** Sets the block's input x [T, dim]. */
  setInput(x: Float32Array, T: number): void {
    if (T > this.maxT) throw new RangeError(`AbqBlockState: window of ${T} > maxT ${this.maxT}`);
    this.b.x.set(x.subarray(0, T * this.c.dim));
  }

  /** Sets the loss's targets. */
  setTargets(T1: Float32Array, T2: Float32Array, teacher: TeacherMap, T: number): void {
    const n = T * this.c.dim, tri = triangle(T), b = this.b;
    b.T1.set(T1.subarray(0, n));
    b.T2.set(T2.subarray(0, n));
    b.tAvg.set(teacher.avg.subarray(0, tri));
    b.tLogZ.set(teacher.logZ.subarray(0, T));
    b.tPf.set(teacher.pf.subarray(0, tri));
  }

  /** The block output of the last forward, [T, dim] (a view). */
  output(T: number): Float32Array {
    return this.b.res.subarray(0, T * this.c.dim);
  }

  /** Token rows of the lane's parts. */
  private rows(lane: Lane, T: number): [number, number] {
    return [partRange(lane.parts[0], T)[0], partRange(lane.parts[lane.parts.length - 1], T)[1]];
  }

  /**
   * The lane's share of the block's forward on the loaded weights and input:
   * its token rows through model/forward.ts's `block()`, whose attention hook
   * meets the other lanes, runs the attention of the lane's KV heads over
   * every row, and meets them again; then the lane's rows of the
   * head-averaged map (part 0 + part 1).
   */
  laneForward(lane: Lane, T: number): void {
    const { c, b } = this;
    const { dim, hiddenDim } = c;
    const kv = kvDim(c), hs = headSize(c), half = hs / 2;
    const [r0, r1] = this.rows(lane, T), n = r1 - r0;
    const at = (a: Float32Array, width: number) => a.subarray(r0 * width, r1 * width);
    const res = at(b.res, dim);
    res.set(at(b.x, dim));
    const buffers: BlockBuffers = {
      xnAttn: at(b.xnA, dim),
      q: at(b.q, dim),
      k: at(b.k, kv),
      v: at(b.v, kv),
      att: at(b.att, dim),
      out: at(b.out, dim),
      xnFfn: at(b.xnF, dim),
      h1: at(b.h1, hiddenDim),
      h3: at(b.h3, hiddenDim),
      gated: at(b.gated, hiddenDim),
      ropeCos: this.ropeCos.subarray(r0 * half),
      ropeSin: this.ropeSin.subarray(r0 * half),
    };
    const hooks: BlockHooks = {
      onResidual: (_l, after, x) => {
        if (after === "attention") b.xMid.set(x.subarray(0, n * dim), r0 * dim);
      },
      attention: () => {
        lane.sync();
        for (const p of lane.parts) {
          const [g0, g1] = partSlice(p, c.nKvHeads);
          this.attn.forward(b.att, b.q, b.k, b.v, T, p === 0 ? b.avg0 : b.avg1, g0, g1);
        }
        lane.sync();
      },
    };
    const { aMaxq, kMaxq, round } = this;
    if (aMaxq) {
      const into = { wq: b.inQkv, wo: b.inO, w1: b.in13, w2: b.in2 } as const;
      hooks.replaceLinearInput = (_l, name, x) => {
        if (name === "wk" || name === "wv") return at(b.inQkv, dim);
        if (name === "w3") return at(b.in13, dim);
        const inF = name === "w2" ? hiddenDim : dim;
        return fakeQuantRowsWith(x, n, inF, aMaxq, at(into[name], inF), round);
      };
    }
    if (kMaxq) {
      hooks.onQkv = (_l, bb) => {
        at(b.qPre, dim).set(bb.q.subarray(0, n * dim));
        at(b.kPre, kv).set(bb.k.subarray(0, n * kv));
        at(b.vPre, kv).set(bb.v.subarray(0, n * kv));
        fakeQuantRowsWith(bb.q, (n * dim) / hs, hs, kMaxq, bb.q, round);
        fakeQuantRowsWith(bb.k, (n * kv) / hs, hs, kMaxq, bb.k, round);
        fakeQuantRowsWith(bb.v, (n * kv) / hs, hs, kMaxq, bb.v, round);
      };
    }
    block(c, this.weights, 0, res, n, buffers, hooks);
    for (let i = triangle(r0); i < triangle(r1); i++) b.avg[i] = b.avg0[i] + b.avg1[i];
  }

  /** The loss buffers of this state. */
  private lossBuffers(): LossBuffers {
    const b = this.b;
    return {
      Y: b.res,
      T1: b.T1,
      T2: b.T2,
      avgQ: b.avg,
      teacher: { avg: b.tAvg, logZ: b.tLogZ, pf: b.tPf },
      dY: b.dx,
      dA: b.dA,
      stats: this.stats,
      exp: this.attn.exp,
    };
  }

  /** The lane's rows of the loss (quant/abq_loss.ts), meeting the other lanes between the two passes. */
  laneLoss(lane: Lane, T: number): void {
    const [r0, r1] = this.rows(lane, T), lb = this.lossBuffers();
    lossRows(lb, T, this.c.dim, r0, r1);
    lane.sync();
    lossCosRows(lb, T, this.c.dim, r0, r1);
  }

  /**
   * The lane's share of the block's backward from dL/dY (in b.dx) and dL/dA:
   * (1) its token rows back through the FFN, the FFN norm and wo; (2) the
   * backward of its KV heads' attention over every row, their Q/K/V
   * quantizers and RoPE, and its slices of the weight gradients; (3) its
   * rows back through wq, wk, wv and the attention norm. The lanes meet
   * between the three and at the end; the norm weights' gradients are the
   * parts' sums.
   */
  laneBackward(lane: Lane, T: number): void {
    const { c, b, aMaxq, kMaxq, round } = this;
    const { dim, hiddenDim: hd, normEps } = c;
    const kv = kvDim(c), hs = headSize(c), qkv = dim + 2 * kv, groups = c.nHeads / c.nKvHeads;
    const [r0, r1] = this.rows(lane, T), n = r1 - r0;
    const at = (a: Float32Array, width: number) => a.subarray(r0 * width, r1 * width);
    const normPart = (which: number, p: number) =>
      b.normParts.subarray((which * PARTS + p) * dim, (which * PARTS + p + 1) * dim);
    /** dx = RMSNorm's backward of dxn at `input` over this lane's token parts (norm `which`). */
    const normBackward = (which: number, input: Float32Array, weight: Float32Array) => {
      for (const p of lane.parts) {
        const [t0, t1] = partRange(p, T), o = t0 * dim, e = t1 * dim;
        rmsnormBackward(
          b.dx.subarray(o, e),
          normPart(which, p),
          b.dxn.subarray(o, e),
          input.subarray(o, e),
          weight,
          t1 - t0,
          dim,
          normEps,
        );
      }
    };
    const dx = at(b.dx, dim), dxn = at(b.dxn, dim);

    // (1) FFN: out = in2 · w2ᵀ
    transposeRows(b.dxT, b.dx, r0, r1, T, dim);
    transposeRows(b.in2T, b.in2, r0, r1, T, hd);
    const dG = at(b.dGated, hd), dh13 = at(b.dh13, 2 * hd);
    linearGradInput(dG, dx, b.w2T, n, hd, dim);
    if (aMaxq) fakeQuantRowsGrad(dG, at(b.gated, hd), n, hd, aMaxq, round);
    // SwiGLU: σ(h1) from e^{−h1} in WASM (the loss's exp)
    const h1 = at(b.h1, hd), h3 = at(b.h3, hd), e = this.negExp.subarray(0, n * hd);
    for (let i = 0; i < n * hd; i++) e[i] = -h1[i];
    this.attn.exp(e, e, 0, n * hd);
    for (let t = 0; t < n; t++) {
      const o = t * hd, o2 = 2 * o;
      for (let i = 0; i < hd; i++) {
        const a = h1[o + i], sig = 1 / (1 + e[o + i]), dg = dG[o + i];
        dh13[o2 + hd + i] = dg * a * sig;
        dh13[o2 + i] = dg * h3[o + i] * sig * (1 + a * (1 - sig));
      }
    }
    transposeRows(b.dh13T, b.dh13, r0, r1, T, 2 * hd);
    transposeRows(b.in13T, b.in13, r0, r1, T, dim);
    linearGradInput(dxn, dh13, b.w13T, n, dim, 2 * hd);
    if (aMaxq) fakeQuantRowsGrad(dxn, at(b.xnF, dim), n, dim, aMaxq, round);
    normBackward(1, b.xMid, this.weights.ffnNorm);
    // attention: out = inO · woᵀ
    transposeRows(b.dx2T, b.dx, r0, r1, T, dim);
    transposeRows(b.inOT, b.inO, r0, r1, T, dim);
    transposeRows(b.inQkvT, b.inQkv, r0, r1, T, dim);
    const dAtt = at(b.dAtt, dim);
    linearGradInput(dAtt, dx, b.woT, n, dim, dim);
    if (aMaxq) fakeQuantRowsGrad(dAtt, at(b.att, dim), n, dim, aMaxq, round);
    lane.sync();

    // (2) the lane's KV heads over every row, and its slices of the weight gradients
    for (const p of lane.parts) {
      const [g0, g1] = partSlice(p, c.nKvHeads);
      this.attn.backward(b.dqkv, b.dAtt, b.dA, b.q, b.k, b.v, T, g0, g1);
      const q0 = g0 * groups * hs, q1 = g1 * groups * hs, k0 = dim + g0 * hs, k1 = dim + g1 * hs;
      const v0 = k0 + kv, v1 = k1 + kv;
      if (kMaxq) {
        // back through the Q, K, V quantizers (per head and token): the part's columns of
        // every row gathered into [T · heads, hs] rows
        const { gKv, xKv } = this;
        const cols: [number, number, Float32Array, number, number][] = [
          [q0, q1, b.qPre, dim, q0],
          [k0, k1, b.kPre, kv, g0 * hs],
          [v0, v1, b.vPre, kv, g0 * hs],
        ];
        for (const [f0, f1, pre, width, c0] of cols) {
          const w = f1 - f0;
          for (let t = 0; t < T; t++) {
            gKv.set(b.dqkv.subarray(t * qkv + f0, t * qkv + f1), t * w);
            xKv.set(pre.subarray(t * width + c0, t * width + c0 + w), t * w);
          }
          fakeQuantRowsGrad(gKv, xKv, (T * w) / hs, hs, kMaxq, round);
          for (let t = 0; t < T; t++) b.dqkv.set(gKv.subarray(t * w, (t + 1) * w), t * qkv + f0);
        }
      }
      // back through RoPE (on the transposed gradients), and wq, wk, wv's gradient rows
      for (const [f0, f1] of [[q0, q1], [k0, k1], [v0, v1]]) {
        transposeCols(b.dqkvT, b.dqkv, T, qkv, f0, f1, false);
        if (f0 !== v0) {
          ropeBackwardTransposed(b.dqkvT, f0, f1 - f0, T, hs, this.ropeCos, this.ropeSin);
        }
        transposeCols(b.dqkvT, b.dqkv, T, qkv, f0, f1, true);
        linearGradWeight(
          b.gQKV.subarray(f0 * dim),
          b.dqkvT.subarray(f0 * T),
          b.inQkvT,
          T,
          dim,
          f1 - f0,
        );
      }
      const [a2, e2] = partSlice(p, dim),
        [a13, e13] = partSlice(p, 2 * hd),
        [ao, eo] = partSlice(p, dim);
      linearGradWeight(b.gW2.subarray(a2 * hd), b.dxT.subarray(a2 * T), b.in2T, T, hd, e2 - a2);
      linearGradWeight(
        b.g13.subarray(a13 * dim),
        b.dh13T.subarray(a13 * T),
        b.in13T,
        T,
        dim,
        e13 - a13,
      );
      linearGradWeight(b.gWo.subarray(ao * dim), b.dx2T.subarray(ao * T), b.inOT, T, dim, eo - ao);
    }
    lane.sync();

    // (3) wq, wk, wv: dxn = dqkv · Wqkv, then the attention norm
    linearGradInput(dxn, at(b.dqkv, qkv), b.wqkvT, n, dim, qkv);
    if (aMaxq) fakeQuantRowsGrad(dxn, at(b.xnA, dim), n, dim, aMaxq, round);
    normBackward(0, b.x, this.weights.attnNorm);
    lane.sync();
    if (lane.parts[0] !== 0) return;
    for (let i = 0; i < dim; i++) {
      b.gAttnNorm[i] = b.normParts[i] + b.normParts[dim + i];
      b.gFfnNorm[i] = b.normParts[2 * dim + i] + b.normParts[3 * dim + i];
    }
  }
}
