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
 * @module
 */
import type { LayerWeights, LlamaConfig } from "../model/config.ts";
import { headSize, kvDim } from "../model/config.ts";
import { block, type BlockHooks } from "../model/forward.ts";
import {
  BackwardState,
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

/** {@linkcode fakeQuantGrad} for `rows` consecutive vectors of `width` in g and x. */
export function fakeQuantRowsGrad(
  g: Float32Array,
  x: Float32Array,
  rows: number,
  width: number,
  maxq: number,
  round: (v: number) => number = roundHalfEven,
): void {
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

/**
 * Saved activations and scratch of one block's forward and backward passes
 * for windows of up to `maxT` tokens (a one-layer {@linkcode BackwardState}
 * plus what activation quantization adds), allocated once.
 */
export class AbqBlockState {
  readonly s: BackwardState;
  readonly c: LlamaConfig; // the model's config with nLayers = 1
  readonly maxT: number;
  readonly act: ActQuantConfig | null;
  // What each linear read (the quantized input when abits < 16, else the block's own buffer).
  readonly inQkv: Float32Array; // [maxT, dim]
  readonly inO: Float32Array; // [maxT, dim]
  readonly in13: Float32Array; // [maxT, dim]
  readonly in2: Float32Array; // [maxT, hiddenDim]
  // Q (after RoPE), K (after RoPE), V before their quantization (kvBits < 16).
  readonly qPre: Float32Array; // [maxT, dim]
  readonly kPre: Float32Array; // [maxT, kvDim]
  readonly vPre: Float32Array; // [maxT, kvDim]
  readonly avgProbs: Float32Array; // [maxT(maxT+1)/2] head-averaged causal probabilities
  readonly y: Float32Array; // [maxT, dim] block output
  // Transposed effective weights of the current step.
  readonly wqkvT: Float32Array; // [dim, dim + 2kv]
  readonly woT: Float32Array; // [dim, dim]
  readonly w13T: Float32Array; // [dim, 2 hidden]
  readonly w2T: Float32Array; // [hidden, dim]
  readonly cat: Float32Array; // [max(dim + 2kv, 2 hidden), dim] scratch
  readonly grads: LayerGradients;
  readonly attn: AbqAttention;
  private readonly hooks: BlockHooks;

  /**
   * @param config the model (nLayers is ignored)
   * @param maxT the longest window
   * @param act the activation quantization of the quantized path, or null
   */
  constructor(
    config: LlamaConfig,
    maxT: number,
    act: ActQuantConfig | null,
    readonly round: (v: number) => number = roundHalfEven,
  ) {
    this.c = { ...config, nLayers: 1 };
    this.maxT = maxT;
    this.act = act;
    const s = new BackwardState(this.c, maxT);
    this.s = s;
    const { dim, hiddenDim } = config;
    const kv = kvDim(config), hs = headSize(config), qkv = dim + 2 * kv;
    const aq = act !== null && act.abits < ACT_OFF_BITS;
    const kq = act !== null && act.kvBits < ACT_OFF_BITS;
    this.inQkv = aq ? new Float32Array(maxT * dim) : s.xnA[0];
    this.inO = aq ? new Float32Array(maxT * dim) : s.att[0];
    this.in13 = aq ? new Float32Array(maxT * dim) : s.xnF[0];
    this.in2 = aq ? new Float32Array(maxT * hiddenDim) : s.gated[0];
    this.qPre = new Float32Array(kq ? maxT * dim : 0);
    this.kPre = new Float32Array(kq ? maxT * kv : 0);
    this.vPre = new Float32Array(kq ? maxT * kv : 0);
    this.avgProbs = new Float32Array(triangle(maxT));
    this.y = new Float32Array(maxT * dim);
    this.wqkvT = new Float32Array(dim * qkv);
    this.woT = new Float32Array(dim * dim);
    this.w13T = new Float32Array(dim * 2 * hiddenDim);
    this.w2T = new Float32Array(hiddenDim * dim);
    this.cat = new Float32Array(Math.max(qkv, 2 * hiddenDim) * dim);
    this.grads = s.grads.layers[0];
    this.attn = new AbqAttention(this.c, maxT);
    const hooks: BlockHooks = {
      onResidual: s.blockHooks.onResidual,
      attention: (_l, b, T) => this.attn.forward(b.att, b.q, b.k, b.v, T, this.avgProbs),
    };
    if (aq) {
      const maxq = asymMaxq(act.abits, act.bitBalance);
      const into = { wq: this.inQkv, wo: this.inO, w1: this.in13, w2: this.in2 } as const;
      hooks.replaceLinearInput = (_l, name, x, T) => {
        const inF = name === "w2" ? hiddenDim : dim;
        if (name === "wk" || name === "wv") return this.inQkv;
        if (name === "w3") return this.in13;
        return fakeQuantRowsWith(x, T, inF, maxq, into[name].subarray(0, T * inF), round);
      };
    }
    if (kq) {
      const maxq = asymMaxq(act.kvBits, act.bitBalance);
      hooks.onQkv = (_l, b, T) => {
        this.qPre.set(b.q.subarray(0, T * dim));
        this.kPre.set(b.k.subarray(0, T * kv));
        this.vPre.set(b.v.subarray(0, T * kv));
        fakeQuantRowsWith(b.q, (T * dim) / hs, hs, maxq, b.q, round);
        fakeQuantRowsWith(b.k, (T * kv) / hs, hs, maxq, b.k, round);
        fakeQuantRowsWith(b.v, (T * kv) / hs, hs, maxq, b.v, round);
      };
    }
    this.hooks = hooks;
  }

  /**
   * The block on x [T, dim] with weights lw, every activation saved: returns
   * the output y [T, dim] (a view of this.y) and fills this.avgProbs with
   * the head-averaged attention probabilities.
   */
  forward(lw: LayerWeights, x: Float32Array, T: number): Float32Array {
    const { s, c } = this;
    if (T > this.maxT) throw new RangeError(`AbqBlockState: window of ${T} > maxT ${this.maxT}`);
    const n = T * c.dim;
    s.xIn[0].set(x.subarray(0, n));
    const out = s.xIn[1];
    out.set(x.subarray(0, n));
    block(c, lw, 0, out, T, s.blockBuffers[0], this.hooks);
    this.y.set(out.subarray(0, n));
    return this.y.subarray(0, n);
  }

  /**
   * Gradients of the loss with respect to the block's weights lw (as used
   * by the last {@linkcode AbqBlockState.forward}), from dY [T, dim] (the
   * gradient of the block output; overwritten) and dAvgProbs [T(T+1)/2] (of
   * the head-averaged probabilities). Returns views of this.grads.
   */
  backward(
    lw: LayerWeights,
    dY: Float32Array,
    dAvgProbs: Float32Array,
    T: number,
  ): LayerGradients {
    const { s, c, act } = this;
    const { dim, hiddenDim, normEps } = c;
    const kv = kvDim(c), hs = headSize(c), qkv = dim + 2 * kv;
    const { dx, dxn, dyT, xT } = s;
    const g = this.grads;
    const aMaxq = act && act.abits < ACT_OFF_BITS ? asymMaxq(act.abits, act.bitBalance) : 0;
    const kMaxq = act && act.kvBits < ACT_OFF_BITS ? asymMaxq(act.kvBits, act.bitBalance) : 0;
    this.prepare(lw);
    dx.set(dY.subarray(0, T * dim));

    // FFN: out = in2 · w2ᵀ
    transpose(dyT, dx, T, dim);
    transpose(xT, this.in2, T, hiddenDim);
    linearGradWeight(g.w2, dyT, xT, T, hiddenDim, dim);
    linearGradInput(s.dGated, dx, this.w2T, T, hiddenDim, dim);
    if (aMaxq) fakeQuantRowsGrad(s.dGated, s.gated[0], T, hiddenDim, aMaxq, this.round);
    const h1 = s.h1[0], h3 = s.h3[0], dG = s.dGated, dh13 = s.dh13;
    for (let t = 0; t < T; t++) {
      const o = t * hiddenDim, o2 = 2 * o;
      for (let i = 0; i < hiddenDim; i++) {
        const a = h1[o + i], sig = 1 / (1 + Math.exp(-a)), dg = dG[o + i];
        dh13[o2 + hiddenDim + i] = dg * a * sig;
        dh13[o2 + i] = dg * h3[o + i] * sig * (1 + a * (1 - sig));
      }
    }
    transpose(dyT, dh13, T, 2 * hiddenDim);
    transpose(xT, this.in13, T, dim);
    linearGradWeight(s.g13[0], dyT, xT, T, dim, 2 * hiddenDim);
    linearGradInput(dxn, dh13, this.w13T, T, dim, 2 * hiddenDim);
    if (aMaxq) fakeQuantRowsGrad(dxn, s.xnF[0], T, dim, aMaxq, this.round);
    rmsnormBackward(dx, g.ffnNorm, dxn, s.xMid[0], lw.ffnNorm, T, dim, normEps);

    // Attention: out = inO · woᵀ
    transpose(dyT, dx, T, dim);
    transpose(xT, this.inO, T, dim);
    linearGradWeight(g.wo, dyT, xT, T, dim, dim);
    linearGradInput(s.dAtt, dx, this.woT, T, dim, dim);
    if (aMaxq) fakeQuantRowsGrad(s.dAtt, s.att[0], T, dim, aMaxq, this.round);
    this.attn.backward(s.dqkv, s.dAtt, dAvgProbs, s.q[0], s.k[0], s.v[0], T);
    if (kMaxq) {
      // back through the Q, K, V quantizers (per head and token)
      for (let t = 0; t < T; t++) {
        const o = t * qkv;
        for (let j = 0; j < dim; j += hs) {
          fakeQuantGrad(s.dqkv, o + j, this.qPre, t * dim + j, hs, kMaxq, this.round);
        }
        for (let j = 0; j < kv; j += hs) {
          fakeQuantGrad(s.dqkv, o + dim + j, this.kPre, t * kv + j, hs, kMaxq, this.round);
          fakeQuantGrad(s.dqkv, o + dim + kv + j, this.vPre, t * kv + j, hs, kMaxq, this.round);
        }
      }
    }
    // back through RoPE (on the transposed gradients)
    transpose(s.dqkvT, s.dqkv, T, qkv);
    ropeBackwardTransposed(s.dqkvT, 0, dim, T, hs, s.ropeCos, s.ropeSin);
    ropeBackwardTransposed(s.dqkvT, dim, kv, T, hs, s.ropeCos, s.ropeSin);
    transpose(xT, this.inQkv, T, dim);
    linearGradWeight(s.gQKV[0], s.dqkvT, xT, T, dim, qkv);
    transpose(s.dqkv, s.dqkvT, qkv, T);
    linearGradInput(dxn, s.dqkv, this.wqkvT, T, dim, qkv);
    if (aMaxq) fakeQuantRowsGrad(dxn, s.xnA[0], T, dim, aMaxq, this.round);
    rmsnormBackward(dx, g.attnNorm, dxn, s.xIn[0], lw.attnNorm, T, dim, normEps);
    return g;
  }

  /** Transposes the effective weights lw for the backward products. */
  private prepare(lw: LayerWeights): void {
    const { dim, hiddenDim } = this.c;
    const kv = kvDim(this.c), qkv = dim + 2 * kv, cat = this.cat;
    cat.set(lw.wq, 0);
    cat.set(lw.wk, dim * dim);
    cat.set(lw.wv, (dim + kv) * dim);
    transpose(this.wqkvT, cat, qkv, dim);
    transpose(this.woT, lw.wo, dim, dim);
    cat.set(lw.w1, 0);
    cat.set(lw.w3, hiddenDim * dim);
    transpose(this.w13T, cat, 2 * hiddenDim, dim);
    transpose(this.w2T, lw.w2, dim, hiddenDim);
  }
}
