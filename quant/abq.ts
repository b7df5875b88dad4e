/**
 * ABQ-LLM (arXiv 2408.08554; bytedance/ABQ-LLM algorithm/quantize/abq_llm.py,
 * quantizer.py, utils.py, models/int_llama_layer.py): block-wise
 * reconstruction with learnable weight clipping, learnable equivalent
 * transformations and compensation vectors, trained by AdamW to make each
 * quantized block reproduce the full-precision one.
 *
 * Block by block, in order (the first block's inputs are the embeddings of
 * the calibration windows); X_fp is the full-precision chain, X_q the
 * quantized one, both starting at the embeddings:
 *
 * 1. **Targets.** T1 = F(X_fp) and the head-averaged attention maps of F on
 *    X_fp; T2 = F(X_q) (F: the full-precision block). Per-channel abs maxima
 *    of the linears' inputs on X_fp initialise LET.
 * 2. **Parameters.** LWC: γ, β = 4 per row (or group) of each linear. LET,
 *    SmoothQuant-style s = max|X_c|^α / max|W_c|^(1−α) (α = 0.5, clamped to
 *    ≥ 1e-5; max|W_c| over the first linear of each pair): attention norm →
 *    q, k, v (`qkv`); FFN norm → up, gate (`fc1`); v → o (`out`, per KV head
 *    under GQA: the first query head of each group); up → down (`fc2`); a
 *    q/k scale (`qkt`) = 1. Compensation a = 0 [dim, 1], b = 1 [1, hidden] on
 *    down_proj in the first 3 and the last 4 blocks. (LLaMA has no LET
 *    shifts: ABQ-LLM sets `use_shift = False` for LLaMA.)
 * 3. **Training**, `epochs` × windows, batch 1: snap |s| < 1e-2 to ±1e-2;
 *    fold LET and compensation into temporary weights
 *    ({@linkcode transformBlock}); quantize them with LWC
 *    ({@linkcode lwcForward}); run the block Q on X_q with the activation
 *    quantization of the spec; loss ({@linkcode abqLoss}); gradients by hand
 *    (quant/abq_grad.ts, then back through LWC and LET); AdamW, weight decay
 *    0, lr LET 5e-3, LWC 1e-2, compensation 1e-2. With `workers` ≥ 1 each
 *    step's block forward, loss and backward are split over this thread and
 *    one worker (quant/abq_parallel.ts); the numbers do not change.
 * 4. **Fold.** The final LET and compensation go into the weights and the
 *    norms, the weights are quantized on the LWC grid (clipping baked into
 *    the stored scales and zeros); X_q ← Q(X_q), X_fp ← T1.
 *
 * Training and the quantized chain X_q use float fake quantization of the
 * activations (quant/act_quant.ts, differentiated with the straight-through
 * estimator), as the official code; the evaluated model computes its
 * uniform linears as integer W×A products (quant/wa_int.ts), as the kernels
 * and integer hardware do.
 *
 * @module
 */
import type { LayerWeights, LinearName, LlamaConfig, LlamaWeights } from "../model/config.ts";
import { headSize, kvDim, LINEAR_NAMES, linearKey, linearShape } from "../model/config.ts";
import { embed } from "../model/forward.ts";
import type { ProgressCallback } from "../model/pool.ts";
import type { LayerGradients } from "../model/backward.ts";
import { dequantize, type QuantizedLinear, type UniformTensor } from "./format.ts";
import { ACT_SCALE_MAX, ACT_SCALE_MIN, ACT_ZERO_MAX, type ActQuantConfig } from "./act_quant.ts";
import {
  checkFinite,
  gridMaxq,
  maxqField,
  quantizeUniform,
  roundHalfEven,
  storedScale,
  type UniformGrid,
} from "./rtn.ts";
import { AbqBlockState } from "./abq_grad.ts";
import { type AbqLoss, type TeacherMap, teacherMap } from "./abq_loss.ts";
import { AbqSteps } from "./abq_parallel.ts";

export { type AbqLoss, abqLoss, type TeacherMap, teacherMap } from "./abq_loss.ts";

/** The LLaMA linears in a fixed order. */
const NAMES: readonly LinearName[] = LINEAR_NAMES;

/** AdamW's learning rate of the compensation vectors (hard-coded in ABQ-LLM's abq_llm.py). */
export const COMPENSATION_LR = 1e-2;
/** LWC's initial γ and β (quantizer.py `init_value`). */
export const LWC_INIT = 4;
/** LET scales with |s| below this are snapped to ±this before use (`truncate_number`). */
export const LET_MIN_SCALE = 1e-2;
/** Blocks with compensation vectors on down_proj: the first 3 and the last 4. */
export function hasCompensation(layer: number, nLayers: number): boolean {
  return layer <= 2 || layer >= nLayers - 4;
}

/** Options of {@linkcode abqQuantizeModel}. */
export interface AbqOptions {
  /** Weight bits, 2..8. */
  bits: number;
  /** Columns per LWC group; null = one per row (ABQ-LLM's default). */
  groupSize: number | null;
  /** Five levels at 2 bits (ABQ-LLM's released code always at 2 bits). */
  bitBalance: boolean;
  /** Activation quantization of the quantized path, or null (weight-only). */
  act: ActQuantConfig | null;
  /** Passes over the windows per block. */
  epochs: number;
  /** AdamW learning rates. */
  letLr: number;
  lwcLr: number;
  /** SmoothQuant's α of the LET initialisation. @default 0.5 */
  alpha?: number;
  /** Worker threads for the training steps: 0 = this thread only, ≥ 1: one worker (quant/abq_parallel.ts). @default 0 */
  workers?: number;
  log?: (line: string) => void;
  onProgress?: ProgressCallback;
}

/** What {@linkcode abqQuantizeModel} returns. */
export interface AbqResult {
  /** Fake-quantized weights with the LET-scaled norms. */
  weights: LlamaWeights;
  linears: Map<string, QuantizedLinear>;
  /** Per block: mean loss of the first and the last epoch. */
  stats: { layer: number; firstLoss: number; lastLoss: number }[];
}

// ---------------------------------------------------------------------------
// Learnable weight clipping (quantizer.py UniformAffineQuantizer with lwc)

/** LWC parameters of one linear: one γ (upper bound) and β (lower bound) per row group. */
export interface LwcParams {
  gamma: Float32Array; // [rows · groups]
  beta: Float32Array; // [rows · groups]
}

function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

/** Scale and zero of one LWC group: s = clamp((σ(γ)·max − σ(β)·min)/maxq), z = round(−σ(β)·min/s). */
export function lwcParams(
  wmax: number,
  wmin: number,
  gamma: number,
  beta: number,
  maxq: number,
): { scale: number; zero: number; free: boolean } {
  const xmax = sigmoid(gamma) * wmax, xmin = sigmoid(beta) * wmin;
  const raw = (xmax - xmin) / maxq;
  const scale = raw < ACT_SCALE_MIN ? ACT_SCALE_MIN : raw > ACT_SCALE_MAX ? ACT_SCALE_MAX : raw;
  let z = -xmin / scale;
  z = z < -ACT_ZERO_MAX ? -ACT_ZERO_MAX : z > ACT_ZERO_MAX ? ACT_ZERO_MAX : z;
  return { scale, zero: roundHalfEven(z) + 0, free: raw === scale };
}

/**
 * LWC fake quantization of W [rows, cols] into out: per group of `groupSize`
 * columns, Ŵ = (clamp(round(W/s) + z, 0, maxq) − z)·s with {@linkcode lwcParams}.
 */
export function lwcForward(
  W: Float32Array,
  rows: number,
  cols: number,
  groupSize: number,
  p: LwcParams,
  maxq: number,
  out: Float32Array,
  round: (v: number) => number = roundHalfEven,
): void {
  const ng = cols / groupSize;
  for (let k = 0; k < rows * ng; k++) {
    const o = k * groupSize;
    let wmax = W[o], wmin = W[o];
    for (let i = o + 1; i < o + groupSize; i++) {
      if (W[i] > wmax) wmax = W[i];
      if (W[i] < wmin) wmin = W[i];
    }
    const { scale, zero } = lwcParams(wmax, wmin, p.gamma[k], p.beta[k], maxq);
    for (let i = o; i < o + groupSize; i++) {
      let q = round(W[i] / scale) + zero;
      q = q < 0 ? 0 : q > maxq ? maxq : q;
      out[i] = (q - zero) * scale;
    }
  }
}

/**
 * Backward of {@linkcode lwcForward}: from dOut = dL/dŴ, writes dW (dL/dW,
 * straight-through on the rounding, 0 where clamped, plus the path through
 * the group's max and min) and adds into dGamma, dBeta.
 */
export function lwcBackward(
  dOut: Float32Array,
  W: Float32Array,
  rows: number,
  cols: number,
  groupSize: number,
  p: LwcParams,
  maxq: number,
  dW: Float32Array,
  dp: LwcParams,
  round: (v: number) => number = roundHalfEven,
): void {
  const ng = cols / groupSize;
  for (let k = 0; k < rows * ng; k++) {
    const o = k * groupSize;
    let imax = o, imin = o;
    for (let i = o + 1; i < o + groupSize; i++) {
      if (W[i] > W[imax]) imax = i;
      if (W[i] < W[imin]) imin = i;
    }
    const wmax = W[imax], wmin = W[imin];
    const { scale, zero, free } = lwcParams(wmax, wmin, p.gamma[k], p.beta[k], maxq);
    let dS = 0;
    for (let i = o; i < o + groupSize; i++) {
      const r = round(W[i] / scale) + zero;
      const inside = r >= 0 && r <= maxq;
      const q = r < 0 ? 0 : r > maxq ? maxq : r;
      dS += dOut[i] * (q - zero - (inside ? W[i] / scale : 0));
      dW[i] = inside ? dOut[i] : 0;
    }
    if (!free) continue;
    const dRange = dS / maxq; // s = (xmax − xmin)/maxq
    const sg = sigmoid(p.gamma[k]), sb = sigmoid(p.beta[k]);
    dp.gamma[k] += dRange * wmax * sg * (1 - sg);
    dp.beta[k] -= dRange * wmin * sb * (1 - sb);
    dW[imax] += dRange * sg;
    dW[imin] -= dRange * sb;
  }
}

/**
 * The uniform grid of trained LWC parameters, for quant/rtn.ts
 * `quantizeUniform`: group k (row-major) gets {@linkcode lwcParams}, its
 * scale as stored (fp16).
 */
export function lwcGrid(
  bits: number,
  maxq: number,
  groupSize: number,
  p: LwcParams,
): UniformGrid {
  return {
    bits,
    sym: false,
    ...maxqField(bits, maxq),
    params(w, start, end, what) {
      const k = start / groupSize;
      let wmax = w[start], wmin = w[start];
      for (let i = start + 1; i < end; i++) {
        if (w[i] > wmax) wmax = w[i];
        if (w[i] < wmin) wmin = w[i];
      }
      const { scale, zero } = lwcParams(wmax, wmin, p.gamma[k], p.beta[k], maxq);
      return { scale: storedScale(scale, what), zero };
    },
  };
}

// ---------------------------------------------------------------------------
// Learnable equivalent transformation and compensation (utils.py smooth_*_temporary)

/** The learnable parameters of one block. */
export interface BlockParams {
  sQkv: Float32Array; // [dim]    attention norm → q, k, v (columns)
  sFc1: Float32Array; // [dim]    FFN norm → up, gate (columns)
  sOut: Float32Array; // [kvDim]  v rows → o columns (per KV head)
  sQk: Float32Array; // [kvDim]   k rows × s, q rows ÷ s (per KV head)
  sFc2: Float32Array; // [hidden] up rows → down columns
  compA: Float32Array | null; // [dim]    compensation left a (down_proj rows)
  compB: Float32Array | null; // [hidden] compensation right b (down_proj columns)
  lwc: Record<LinearName, LwcParams>;
}

/** Zeroed parameters shaped like p (gradients, Adam moments). */
export function zerosLike(p: BlockParams): BlockParams {
  const z = (a: Float32Array) => new Float32Array(a.length);
  const lwc = {} as Record<LinearName, LwcParams>;
  for (const n of NAMES) lwc[n] = { gamma: z(p.lwc[n].gamma), beta: z(p.lwc[n].beta) };
  return {
    sQkv: z(p.sQkv),
    sFc1: z(p.sFc1),
    sOut: z(p.sOut),
    sQk: z(p.sQk),
    sFc2: z(p.sFc2),
    compA: p.compA && z(p.compA),
    compB: p.compB && z(p.compB),
    lwc,
  };
}

/** The LET scale vectors of p, in a fixed order. */
function letScales(p: BlockParams): Float32Array[] {
  return [p.sQkv, p.sFc1, p.sOut, p.sQk, p.sFc2];
}

/** Every parameter vector of p with its learning-rate group. */
function groups(p: BlockParams): { v: Float32Array; group: "let" | "lwc" | "comp" }[] {
  const out: { v: Float32Array; group: "let" | "lwc" | "comp" }[] = letScales(p).map((v) => ({
    v,
    group: "let" as const,
  }));
  if (p.compA && p.compB) out.push({ v: p.compA, group: "comp" }, { v: p.compB, group: "comp" });
  for (const n of NAMES) {
    out.push({ v: p.lwc[n].gamma, group: "lwc" }, { v: p.lwc[n].beta, group: "lwc" });
  }
  return out;
}

/** Snaps every LET scale with |s| < 1e-2 to ±1e-2 (truncate_number), in place. */
export function snapScales(p: BlockParams): void {
  for (const s of letScales(p)) {
    for (let i = 0; i < s.length; i++) {
      if (Math.abs(s[i]) < LET_MIN_SCALE) s[i] = s[i] < 0 ? -LET_MIN_SCALE : LET_MIN_SCALE;
    }
  }
}

/** Per-channel abs maxima of the inputs of the block's linears on the fp chain (act_scales). */
export interface ActMaxima {
  qkv: Float32Array; // [dim]    input of q, k, v
  out: Float32Array; // [dim]    input of o
  fc1: Float32Array; // [dim]    input of up, gate
  fc2: Float32Array; // [hidden] input of down
}

/** Per-column abs max of W [rows, cols]. */
function colAbsMax(W: Float32Array, rows: number, cols: number): Float32Array {
  const m = new Float32Array(cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) m[c] = Math.max(m[c], Math.abs(W[r * cols + c]));
  }
  return m;
}

/** s_c = max(act_c, 1e-5)^α / max(wmax_c, 1e-5)^(1−α), clamped to ≥ 1e-5. */
function smoothScale(act: Float32Array, wmax: Float32Array, alpha: number): Float32Array {
  const s = new Float32Array(act.length);
  for (let c = 0; c < s.length; c++) {
    const a = Math.max(act[c], 1e-5), w = Math.max(wmax[c], 1e-5);
    s[c] = Math.max(a ** alpha / w ** (1 - alpha), 1e-5);
  }
  return s;
}

/**
 * ABQ-LLM's initial parameters of block `layer` (abq_llm.py): LET from the
 * activation maxima (the `pairs` q_proj, o_proj, up_proj, down_proj),
 * q/k scale 1, LWC γ = β = 4, compensation a = 0, b = 1 where it applies.
 */
export function initParams(
  c: LlamaConfig,
  lw: LayerWeights,
  act: ActMaxima,
  layer: number,
  groupSize: number | null,
  alpha = 0.5,
): BlockParams {
  const { dim, hiddenDim } = c;
  const kv = kvDim(c), hs = headSize(c), groups = c.nHeads / c.nKvHeads;
  const sOutFull = smoothScale(act.out, colAbsMax(lw.wo, dim, dim), alpha);
  // GQA: [nKv, groups, hs] → the first head of each group
  const sOut = new Float32Array(kv);
  for (let g = 0; g < c.nKvHeads; g++) {
    for (let j = 0; j < hs; j++) sOut[g * hs + j] = sOutFull[g * groups * hs + j];
  }
  const lwc = {} as Record<LinearName, LwcParams>;
  for (const n of NAMES) {
    const [rows, cols] = linearShape(c, n);
    const k = rows * (groupSize === null ? 1 : cols / groupSize);
    lwc[n] = {
      gamma: new Float32Array(k).fill(LWC_INIT),
      beta: new Float32Array(k).fill(LWC_INIT),
    };
  }
  const comp = hasCompensation(layer, c.nLayers);
  return {
    sQkv: smoothScale(act.qkv, colAbsMax(lw.wq, dim, dim), alpha),
    sFc1: smoothScale(act.fc1, colAbsMax(lw.w3, hiddenDim, dim), alpha),
    sOut,
    sQk: new Float32Array(kv).fill(1),
    sFc2: smoothScale(act.fc2, colAbsMax(lw.w2, dim, hiddenDim), alpha),
    compA: comp ? new Float32Array(dim) : null,
    compB: comp ? new Float32Array(hiddenDim).fill(1) : null,
    lwc,
  };
}

/** The KV-head channel of query channel r (head ⌊r/hs⌋, feature r mod hs): repeat_kv's expansion. */
function kvChannel(r: number, hs: number, groups: number): number {
  return Math.floor(r / hs / groups) * hs + (r % hs);
}

/**
 * The block's weights with LET and compensation folded in
 * (smooth_and_quant_temporary, before the weight quantizer), into `out`:
 *
 *   attnNorm' = attnNorm / s_qkv;  Wq,k,v ·= s_qkv (columns)
 *   Wv rows /= s_out;  Wo columns ·= s_out (expanded to the query heads)
 *   Wk rows ·= s_qk;  Wq rows /= s_qk (expanded)
 *   ffnNorm' = ffnNorm / s_fc1;  W1, W3 ·= s_fc1 (columns)
 *   W3 rows /= s_fc2;  W2 columns ·= s_fc2;  W2 += a·bᵀ
 */
export function transformBlock(
  c: LlamaConfig,
  lw: LayerWeights,
  p: BlockParams,
  out: LayerWeights,
): void {
  const { dim, hiddenDim } = c;
  const kv = kvDim(c), hs = headSize(c), groups = c.nHeads / c.nKvHeads;
  for (let i = 0; i < dim; i++) {
    out.attnNorm[i] = lw.attnNorm[i] / p.sQkv[i];
    out.ffnNorm[i] = lw.ffnNorm[i] / p.sFc1[i];
  }
  for (let r = 0; r < dim; r++) {
    const sq = 1 / p.sQk[kvChannel(r, hs, groups)];
    for (let i = 0; i < dim; i++) out.wq[r * dim + i] = lw.wq[r * dim + i] * p.sQkv[i] * sq;
  }
  for (let r = 0; r < kv; r++) {
    const sk = p.sQk[r], sv = 1 / p.sOut[r];
    for (let i = 0; i < dim; i++) {
      out.wk[r * dim + i] = lw.wk[r * dim + i] * p.sQkv[i] * sk;
      out.wv[r * dim + i] = lw.wv[r * dim + i] * p.sQkv[i] * sv;
    }
  }
  for (let r = 0; r < dim; r++) {
    for (let i = 0; i < dim; i++) {
      out.wo[r * dim + i] = lw.wo[r * dim + i] * p.sOut[kvChannel(i, hs, groups)];
    }
  }
  for (let r = 0; r < hiddenDim; r++) {
    const s2 = 1 / p.sFc2[r];
    for (let i = 0; i < dim; i++) {
      out.w1[r * dim + i] = lw.w1[r * dim + i] * p.sFc1[i];
      out.w3[r * dim + i] = lw.w3[r * dim + i] * p.sFc1[i] * s2;
    }
  }
  for (let r = 0; r < dim; r++) {
    const a = p.compA ? p.compA[r] : 0;
    for (let i = 0; i < hiddenDim; i++) {
      out.w2[r * hiddenDim + i] = lw.w2[r * hiddenDim + i] * p.sFc2[i] +
        (p.compB ? a * p.compB[i] : 0);
    }
  }
}

/**
 * Backward of {@linkcode transformBlock}: adds into dp the gradients of the
 * LET scales and the compensation vectors from d (dL/d of the transformed
 * weights and norms).
 */
export function transformBackward(
  c: LlamaConfig,
  lw: LayerWeights,
  p: BlockParams,
  d: LayerGradients,
  dp: BlockParams,
): void {
  const { dim, hiddenDim } = c;
  const kv = kvDim(c), hs = headSize(c), groups = c.nHeads / c.nKvHeads;
  for (let i = 0; i < dim; i++) {
    dp.sQkv[i] -= (d.attnNorm[i] * lw.attnNorm[i]) / (p.sQkv[i] * p.sQkv[i]);
    dp.sFc1[i] -= (d.ffnNorm[i] * lw.ffnNorm[i]) / (p.sFc1[i] * p.sFc1[i]);
  }
  // wq = W·s_qkv[i] / s_qk[e(r)]
  for (let r = 0; r < dim; r++) {
    const e = kvChannel(r, hs, groups), sq = p.sQk[e];
    let acc = 0;
    for (let i = 0; i < dim; i++) {
      const g = d.wq[r * dim + i], w = lw.wq[r * dim + i] * p.sQkv[i];
      acc += g * w;
      dp.sQkv[i] += (g * lw.wq[r * dim + i]) / sq;
    }
    dp.sQk[e] -= acc / (sq * sq);
  }
  // wk = W·s_qkv[i]·s_qk[r];  wv = W·s_qkv[i] / s_out[r]
  for (let r = 0; r < kv; r++) {
    const sk = p.sQk[r], so = p.sOut[r];
    let ak = 0, av = 0;
    for (let i = 0; i < dim; i++) {
      const gk = d.wk[r * dim + i], gv = d.wv[r * dim + i];
      const wk = lw.wk[r * dim + i] * p.sQkv[i], wv = lw.wv[r * dim + i] * p.sQkv[i];
      ak += gk * wk;
      av += gv * wv;
      dp.sQkv[i] += gk * lw.wk[r * dim + i] * sk + (gv * lw.wv[r * dim + i]) / so;
    }
    dp.sQk[r] += ak;
    dp.sOut[r] -= av / (so * so);
  }
  // wo = W·s_out[e(i)]
  for (let r = 0; r < dim; r++) {
    for (let i = 0; i < dim; i++) {
      dp.sOut[kvChannel(i, hs, groups)] += d.wo[r * dim + i] * lw.wo[r * dim + i];
    }
  }
  // w1 = W·s_fc1[i];  w3 = W·s_fc1[i] / s_fc2[r]
  for (let r = 0; r < hiddenDim; r++) {
    const s2 = p.sFc2[r];
    let a3 = 0;
    for (let i = 0; i < dim; i++) {
      const g1 = d.w1[r * dim + i], g3 = d.w3[r * dim + i];
      const w3 = lw.w3[r * dim + i] * p.sFc1[i];
      a3 += g3 * w3;
      dp.sFc1[i] += g1 * lw.w1[r * dim + i] + (g3 * lw.w3[r * dim + i]) / s2;
    }
    dp.sFc2[r] -= a3 / (s2 * s2);
  }
  // w2 = W·s_fc2[i] + a[r]·b[i]
  for (let r = 0; r < dim; r++) {
    let aa = 0;
    for (let i = 0; i < hiddenDim; i++) {
      const g = d.w2[r * hiddenDim + i];
      dp.sFc2[i] += g * lw.w2[r * hiddenDim + i];
      if (p.compA && p.compB && dp.compA && dp.compB) {
        aa += g * p.compB[i];
        dp.compB[i] += g * p.compA[r];
      }
    }
    if (dp.compA) dp.compA[r] += aa;
  }
}

// ---------------------------------------------------------------------------
// AdamW (torch.optim.AdamW, weight decay 0)

/** AdamW state over a list of parameter vectors. */
class AdamW {
  private m: Float32Array[];
  private v: Float32Array[];
  private t = 0;
  constructor(
    private params: { v: Float32Array; lr: number }[],
    private beta1 = 0.9,
    private beta2 = 0.999,
    private eps = 1e-8,
    private weightDecay = 0,
  ) {
    this.m = params.map((p) => new Float32Array(p.v.length));
    this.v = params.map((p) => new Float32Array(p.v.length));
  }

  /** One step with grads (same order as the parameters). */
  step(grads: Float32Array[]): void {
    this.t++;
    const { beta1, beta2, eps } = this;
    const bc1 = 1 - beta1 ** this.t, bc2 = 1 - beta2 ** this.t;
    for (let j = 0; j < this.params.length; j++) {
      const { v: p, lr } = this.params[j];
      const g = grads[j], m = this.m[j], v = this.v[j];
      for (let i = 0; i < p.length; i++) {
        p[i] *= 1 - lr * this.weightDecay;
        m[i] = beta1 * m[i] + (1 - beta1) * g[i];
        v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
        p[i] -= (lr * (m[i] / bc1)) / (Math.sqrt(v[i] / bc2) + eps);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// One block: the effective weights and their gradient

/** Scratch of one block's effective weights: transformed (LET + compensation) and quantized (LWC). */
export class EffectiveBlock {
  readonly transformed: LayerWeights;
  readonly quantized: LayerWeights; // norms shared with `transformed`
  readonly dTransformed: LayerGradients;

  constructor(
    readonly c: LlamaConfig,
    readonly groupSize: number | null,
    readonly maxq: number,
    readonly round: (v: number) => number = roundHalfEven,
  ) {
    const z = (n: number) => new Float32Array(n);
    const mk = (): LayerWeights => {
      const w = { attnNorm: z(c.dim), ffnNorm: z(c.dim) } as LayerWeights;
      for (const n of NAMES) w[n] = z(linearShape(c, n).reduce((a, b) => a * b));
      return w;
    };
    this.transformed = mk();
    const q = mk();
    q.attnNorm = this.transformed.attnNorm;
    q.ffnNorm = this.transformed.ffnNorm;
    this.quantized = q;
    this.dTransformed = mk() as LayerGradients;
  }

  /** Group size of linear n (one group per row when the spec has none). */
  group(n: LinearName): number {
    return this.groupSize ?? linearShape(this.c, n)[1];
  }

  /** Fills `quantized` from the fp block lw and parameters p. */
  forward(lw: LayerWeights, p: BlockParams): LayerWeights {
    transformBlock(this.c, lw, p, this.transformed);
    for (const n of NAMES) {
      const [rows, cols] = linearShape(this.c, n);
      lwcForward(
        this.transformed[n],
        rows,
        cols,
        this.group(n),
        p.lwc[n],
        this.maxq,
        this.quantized[n],
        this.round,
      );
    }
    return this.quantized;
  }

  /** Adds into dp the gradients of p from g (dL/d of the quantized weights and norms). */
  backward(lw: LayerWeights, p: BlockParams, g: LayerGradients, dp: BlockParams): void {
    const d = this.dTransformed;
    for (const n of NAMES) {
      const [rows, cols] = linearShape(this.c, n);
      lwcBackward(
        g[n],
        this.transformed[n],
        rows,
        cols,
        this.group(n),
        p.lwc[n],
        this.maxq,
        d[n],
        dp.lwc[n],
        this.round,
      );
    }
    d.attnNorm.set(g.attnNorm);
    d.ffnNorm.set(g.ffnNorm);
    transformBackward(this.c, lw, p, d, dp);
  }
}

/**
 * The loss of one window and the gradients of every parameter of p (added
 * into dp): the whole chain LET → LWC → block → loss, on this thread. Used
 * by the finite-difference tests.
 */
export function lossAndParamGrads(
  st: AbqBlockState,
  eff: EffectiveBlock,
  lw: LayerWeights,
  p: BlockParams,
  dp: BlockParams,
  x: Float32Array,
  T1: Float32Array,
  T2: Float32Array,
  teacher: TeacherMap,
  T: number,
): AbqLoss {
  st.forward(eff.forward(lw, p), x, T);
  const r = st.loss(T1, T2, teacher, T);
  eff.backward(lw, p, st.backward(T), dp);
  return r;
}

/** The loss of one window only (no gradients). */
export function lossOnly(
  st: AbqBlockState,
  eff: EffectiveBlock,
  lw: LayerWeights,
  p: BlockParams,
  x: Float32Array,
  T1: Float32Array,
  T2: Float32Array,
  teacher: TeacherMap,
  T: number,
): AbqLoss {
  st.forward(eff.forward(lw, p), x, T);
  return st.loss(T1, T2, teacher, T);
}

// ---------------------------------------------------------------------------
// The model

/** The number of epochs ABQ-LLM's scripts use: 40 at 2 bits and for W8A8, else 20. */
export function defaultEpochs(bits: number, abits: number): number {
  return bits === 2 || (bits === 8 && abits === 8) ? 40 : 20;
}

/**
 * ABQ-LLM on every block of `base`, in order (module doc).
 *
 * @param base the full-precision model (not modified)
 * @param windows calibration windows of token ids (equal lengths ≤ max_seq_len)
 * @param opts bits, group, bit balance, activation quantization, epochs, learning rates
 * @returns fake-quantized weights (LET-scaled norms), the uniform linears, per-block losses;
 *   the same numbers for any number of workers
 * @example
 * ```ts
 * const r = await abqQuantizeModel(weights, windows, { bits: 3, groupSize: null,
 *   bitBalance: false, act: null, epochs: 20, letLr: 5e-3, lwcLr: 1e-2, workers: 1 });
 * ```
 */
export async function abqQuantizeModel(
  base: LlamaWeights,
  windows: Int32Array[],
  opts: AbqOptions,
): Promise<AbqResult> {
  const c = base.config;
  const { dim } = c;
  if (windows.length === 0) throw new RangeError("abq: needs at least one calibration window");
  const T = windows[0].length;
  if (windows.some((w) => w.length !== T)) {
    throw new RangeError("abq: calibration windows must all have the same length");
  }
  if (opts.groupSize !== null) {
    for (const n of NAMES) {
      const cols = linearShape(c, n)[1];
      if (cols % opts.groupSize !== 0) {
        throw new RangeError(
          `abq: --group ${opts.groupSize} does not divide ${n}'s ${cols} columns`,
        );
      }
    }
  }
  const maxq = gridMaxq(opts.bits, false, opts.bitBalance);
  // 0. the first block's inputs: the embeddings of the windows, for both chains
  const xFp: Float32Array[] = windows.map((w) => {
    const x = new Float32Array(T * dim);
    embed(base, w, x);
    return x;
  });
  const xQ = xFp.map((x) => x.slice());
  const fp = new AbqBlockState(c, T, null);
  const steps = await AbqSteps.start(c, T, opts.act, opts.workers ?? 0);
  try {
    const r = train(base, windows, opts, maxq, xFp, xQ, fp, steps);
    await steps.close();
    return r;
  } catch (e) {
    await steps.abort();
    throw e;
  }
}

/** {@linkcode abqQuantizeModel}'s blocks, in order, its steps on `steps`. */
function train(
  base: LlamaWeights,
  windows: Int32Array[],
  opts: AbqOptions,
  maxq: number,
  xFp: Float32Array[],
  xQ: Float32Array[],
  fp: AbqBlockState,
  steps: AbqSteps,
): AbqResult {
  const c = base.config, { dim } = c, T = windows[0].length, N = windows.length;
  const eff = new EffectiveBlock(c, opts.groupSize, maxq);
  const layers: LayerWeights[] = [];
  const linears = new Map<string, QuantizedLinear>();
  const stats: AbqResult["stats"] = [];
  const total = c.nLayers * (N * 2 + opts.epochs * N + N);
  let done = 0;
  const tick = (what: string) => opts.onProgress?.(++done, total, what);

  for (let l = 0; l < c.nLayers; l++) {
    const lw = base.layers[l];
    // 1. targets: T1 = F(X_fp) with its attention maps and activation maxima, T2 = F(X_q)
    const act: ActMaxima = {
      qkv: new Float32Array(dim),
      out: new Float32Array(dim),
      fc1: new Float32Array(dim),
      fc2: new Float32Array(c.hiddenDim),
    };
    const t1: Float32Array[] = [], t2: Float32Array[] = [], teachers: TeacherMap[] = [];
    for (let j = 0; j < N; j++) {
      t1.push(fp.forward(lw, xFp[j], T).slice());
      teachers.push(teacherMap(fp.avgProbs, T, fp.attn.exp));
      absMaxInto(act.qkv, fp.b.xnA, T, dim);
      absMaxInto(act.out, fp.b.att, T, dim);
      absMaxInto(act.fc1, fp.b.xnF, T, dim);
      absMaxInto(act.fc2, fp.b.gated, T, c.hiddenDim);
      tick(`abq block ${l}: targets`);
    }
    for (let j = 0; j < N; j++) {
      t2.push(fp.forward(lw, xQ[j], T).slice());
      tick(`abq block ${l}: targets`);
    }
    // 2. parameters
    const p = initParams(c, lw, act, l, opts.groupSize, opts.alpha);
    const dp = zerosLike(p);
    const lrOf = { let: opts.letLr, lwc: opts.lwcLr, comp: COMPENSATION_LR };
    const optim = new AdamW(groups(p).map((g) => ({ v: g.v, lr: lrOf[g.group] })));
    const dVecs = groups(dp).map((g) => g.v);
    // 3. training
    let firstLoss = NaN, lastLoss = NaN;
    for (let e = 0; e < opts.epochs; e++) {
      let sum = 0;
      for (let j = 0; j < N; j++) {
        snapScales(p);
        for (const v of dVecs) v.fill(0);
        const r = steps.step(eff.forward(lw, p), xQ[j], t1[j], t2[j], teachers[j], T);
        eff.backward(lw, p, steps.st.grads, dp);
        if (!Number.isFinite(r.loss)) {
          throw new RangeError(`abq: block ${l} epoch ${e} window ${j}: the loss is ${r.loss}`);
        }
        sum += r.loss;
        optim.step(dVecs);
        tick(`abq block ${l}: epoch ${e + 1}/${opts.epochs}`);
      }
      if (e === 0) firstLoss = sum / N;
      lastLoss = sum / N;
      opts.log?.(`abq: block ${l} epoch ${e + 1}/${opts.epochs} loss ${(sum / N).toPrecision(5)}`);
    }
    stats.push({ layer: l, firstLoss, lastLoss });
    // 4. fold LET and compensation, quantize on the LWC grid
    snapScales(p);
    transformBlock(c, lw, p, eff.transformed);
    const out: LayerWeights = {
      ...lw,
      attnNorm: eff.transformed.attnNorm.slice(),
      ffnNorm: eff.transformed.ffnNorm.slice(),
    };
    for (const n of NAMES) {
      const [rows, cols] = linearShape(c, n);
      const key = linearKey(l, n);
      checkFinite(eff.transformed[n], rows, cols, key);
      const g = eff.group(n);
      const dense: UniformTensor = quantizeUniform(
        eff.transformed[n],
        rows,
        cols,
        g,
        lwcGrid(opts.bits, maxq, g, p.lwc[n]),
        key,
      );
      linears.set(key, { dense });
      out[n] = dequantize({ dense });
    }
    layers.push(out);
    // the quantized block's output on X_q feeds the next block; the fp chain continues with T1
    for (let j = 0; j < N; j++) {
      xQ[j] = steps.forward(out, xQ[j], T).slice();
      xFp[j] = t1[j];
      tick(`abq block ${l}: outputs`);
    }
  }
  return { weights: { ...base, layers }, linears, stats };
}

/** m[c] = max(m[c], max_t |x[t, c]|) for x [T, width]. */
function absMaxInto(m: Float32Array, x: Float32Array, T: number, width: number): void {
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < width; i++) {
      const a = Math.abs(x[t * width + i]);
      if (a > m[i]) m[i] = a;
    }
  }
}
