/**
 * The LLaMA backward pass on the CPU: the language-model loss of one token
 * window and its gradient with respect to every weight, for SqueezeLLM's
 * Fisher information (quant/fisher.ts).
 *
 * The loss is Hugging Face's `model(input_ids, labels=input_ids).loss`: the
 * mean next-token cross-entropy over the T − 1 predictions of the window
 * (logits of position t predict token t + 1).
 *
 * The forward half is model/forward.ts's {@linkcode block}, run with one set
 * of {@linkcode BlockBuffers} per layer so that it keeps every activation
 * the backward half needs, a residual hook that saves the stream after the
 * attention, and an attention hook that keeps the causal softmax
 * probabilities of every head (its own attention loop). Every
 * linear layer y = x Wᵀ (W [out, in]) is differentiated with two calls of the
 * shared `matmul`:
 *
 *   dW [out, in] = dYᵀ X    ({@linkcode linearGradWeight}, from dYᵀ and Xᵀ)
 *   dX [T, in]   = dY W     ({@linkcode linearGradInput}, from Wᵀ)
 *
 * wq, wk and wv share their input, as do w1 and w3, so each group is one
 * fused product: their gradients are contiguous rows of one buffer.
 *
 * The pass is cut into its pieces, exported for callers that hold one block
 * at a time (quant/fisher_blockwise.ts): {@linkcode blockForwardSaved},
 * {@linkcode headBackward} and {@linkcode blockBackward}, the block's
 * transposed weights from {@linkcode transposeLayer}.
 *
 * @module
 */
import type { LayerWeights, LinearName, LlamaConfig, LlamaWeights } from "./config.ts";
import { headSize, kvDim, ropeTables } from "./config.ts";
import {
  block,
  type BlockBuffers,
  type BlockHooks,
  embed,
  rmsInverse,
  rmsnorm,
} from "./forward.ts";
import { matmul } from "./matmul.ts";

/** Gradients of one block: the seven linear weights [out, in] and the two norm weights [dim]. */
export interface LayerGradients extends Record<LinearName, Float32Array> {
  attnNorm: Float32Array; // [dim]
  ffnNorm: Float32Array; // [dim]
}

/** Gradients of the loss with respect to every weight, shaped like {@linkcode LlamaWeights}. */
export interface Gradients {
  layers: LayerGradients[]; // [nLayers]
  /**
   * [vocabSize, dim]. With a shared classifier (weight tying) this is the
   * total gradient of the one matrix: classifier plus embedding lookup.
   */
  tokenEmbedding: Float32Array;
  /** [vocabSize, dim]; only when the classifier is a separate matrix. */
  classifier?: Float32Array;
  finalNorm: Float32Array; // [dim]
}

/** The result of {@linkcode lossAndGradients}. */
export interface LossAndGradients {
  /** Mean next-token cross-entropy over the window's T − 1 predictions (nats). */
  loss: number;
  /** Views into the state's buffers: overwritten by the next call with the same state. */
  grads: Gradients;
}

/** Options of {@linkcode lossAndGradients}. */
export interface BackwardOptions {
  /** Reused buffers; allocated for this call when absent. */
  state?: BackwardState;
}

/** Floats of one head's causal probabilities: row t holds t + 1 entries. */
function triangle(T: number): number {
  return (T * (T + 1)) / 2;
}

/**
 * Saved activations, backward scratch, gradient buffers and transposed
 * weights for windows of up to `maxT` tokens, allocated once.
 */
export class BackwardState {
  readonly maxT: number;
  // Saved by the forward half, per layer.
  readonly xIn: Float32Array[]; // [nLayers + 1][maxT, dim] residual entering each block; last = final
  readonly xnA: Float32Array[]; // [nLayers][maxT, dim] attention RMSNorm output
  readonly q: Float32Array[]; // [nLayers][maxT, dim] queries after RoPE
  readonly k: Float32Array[]; // [nLayers][maxT, kvDim] keys after RoPE
  readonly v: Float32Array[]; // [nLayers][maxT, kvDim]
  readonly probs: Float32Array[]; // [nLayers][nHeads, maxT(maxT+1)/2] causal softmax rows
  readonly att: Float32Array[]; // [nLayers][maxT, dim] attention output (input of wo)
  readonly xMid: Float32Array[]; // [nLayers][maxT, dim] residual after attention
  readonly xnF: Float32Array[]; // [nLayers][maxT, dim] FFN RMSNorm output
  readonly h1: Float32Array[]; // [nLayers][maxT, hiddenDim] w1 · xn (pre-activation)
  readonly h3: Float32Array[]; // [nLayers][maxT, hiddenDim] w3 · xn
  readonly gated: Float32Array[]; // [nLayers][maxT, hiddenDim] silu(h1) ⊙ h3 (input of w2)
  readonly xnFinal: Float32Array; // [maxT, dim]
  readonly logits: Float32Array; // [maxT, vocabSize]; dLoss/dlogits after the loss
  readonly ropeCos: Float32Array; // [maxT, headSize / 2]
  readonly ropeSin: Float32Array; // [maxT, headSize / 2]
  // Backward scratch.
  readonly out: Float32Array; // [maxT, dim] sub-block output (forward)
  readonly dx: Float32Array; // [maxT, dim] gradient of the residual stream
  readonly dxn: Float32Array; // [maxT, dim] gradient of a normalized input
  readonly dAtt: Float32Array; // [maxT, dim]
  readonly dGated: Float32Array; // [maxT, hiddenDim]
  readonly dh13: Float32Array; // [maxT, 2 * hiddenDim] gradients of h1 | h3
  readonly dqkv: Float32Array; // [maxT, dim + 2 * kvDim] gradients of q | k | v
  readonly dqkvT: Float32Array; // [dim + 2 * kvDim, maxT] the same, transposed
  readonly dyT: Float32Array; // [maxRows, maxT] a transposed output gradient
  readonly xT: Float32Array; // [max(dim, hiddenDim), maxT] a transposed layer input
  readonly dP: Float64Array; // [maxT] one row of dLoss/dprobs, then dLoss/dscores
  readonly kh: Float32Array; // [headSize, maxT] keys of one kv head, transposed
  readonly vh: Float32Array; // [headSize, maxT] values of one kv head, transposed
  // Gradients (returned as views).
  readonly gQKV: Float32Array[]; // [nLayers][dim + 2 * kvDim, dim] rows: wq | wk | wv
  readonly g13: Float32Array[]; // [nLayers][2 * hiddenDim, dim] rows: w1 | w3
  readonly grads: Gradients;
  // The forward half: block()'s buffers of each layer (views of the saved activations) and hooks.
  readonly blockBuffers: BlockBuffers[]; // [nLayers]
  readonly blockHooks: BlockHooks;
  // Transposed weights of the prepared model.
  private prepared?: LlamaWeights;
  private wqkvT: Float32Array[] = []; // [nLayers][dim, dim + 2 * kvDim]
  private woT: Float32Array[] = []; // [nLayers][dim, dim]
  private w13T: Float32Array[] = []; // [nLayers][dim, 2 * hiddenDim]
  private w2T: Float32Array[] = []; // [nLayers][hiddenDim, dim]
  private classifierT: Float32Array = new Float32Array(0); // [dim, vocabSize]

  /** Buffers for `config` and windows of up to `maxT` tokens. @default maxT config.maxSeqLen */
  constructor(readonly config: LlamaConfig, maxT: number = config.maxSeqLen) {
    const { dim, hiddenDim, vocabSize, nLayers, nHeads } = config;
    const kv = kvDim(config), hs = headSize(config), qkv = dim + 2 * kv;
    if (!Number.isInteger(maxT) || maxT < 2) {
      throw new RangeError(`BackwardState: maxT must be an integer ≥ 2, got ${maxT}`);
    }
    this.maxT = maxT;
    const per = (width: number) =>
      Array.from({ length: nLayers }, () => new Float32Array(maxT * width));
    this.xIn = Array.from({ length: nLayers + 1 }, () => new Float32Array(maxT * dim));
    this.xnA = per(dim);
    this.q = per(dim);
    this.k = per(kv);
    this.v = per(kv);
    this.probs = Array.from(
      { length: nLayers },
      () => new Float32Array(nHeads * triangle(maxT)),
    );
    this.att = per(dim);
    this.xMid = per(dim);
    this.xnF = per(dim);
    this.h1 = per(hiddenDim);
    this.h3 = per(hiddenDim);
    this.gated = per(hiddenDim);
    this.xnFinal = new Float32Array(maxT * dim);
    this.logits = new Float32Array(maxT * vocabSize);
    [this.ropeCos, this.ropeSin] = ropeTables(config, maxT);
    this.out = new Float32Array(maxT * dim);
    this.dx = new Float32Array(maxT * dim);
    this.dxn = new Float32Array(maxT * dim);
    this.dAtt = new Float32Array(maxT * dim);
    this.dGated = new Float32Array(maxT * hiddenDim);
    this.dh13 = new Float32Array(maxT * 2 * hiddenDim);
    this.dqkv = new Float32Array(maxT * qkv);
    this.dqkvT = new Float32Array(qkv * maxT);
    this.dyT = new Float32Array(Math.max(vocabSize, 2 * hiddenDim, qkv, dim) * maxT);
    this.xT = new Float32Array(Math.max(dim, hiddenDim) * maxT);
    this.dP = new Float64Array(maxT);
    this.kh = new Float32Array(hs * maxT);
    this.vh = new Float32Array(hs * maxT);

    this.gQKV = Array.from({ length: nLayers }, () => new Float32Array(qkv * dim));
    this.g13 = Array.from({ length: nLayers }, () => new Float32Array(2 * hiddenDim * dim));
    const layers: LayerGradients[] = [];
    for (let l = 0; l < nLayers; l++) {
      const a = this.gQKV[l], b = this.g13[l];
      layers.push({
        attnNorm: new Float32Array(dim),
        wq: a.subarray(0, dim * dim),
        wk: a.subarray(dim * dim, (dim + kv) * dim),
        wv: a.subarray((dim + kv) * dim, qkv * dim),
        wo: new Float32Array(dim * dim),
        ffnNorm: new Float32Array(dim),
        w1: b.subarray(0, hiddenDim * dim),
        w3: b.subarray(hiddenDim * dim, 2 * hiddenDim * dim),
        w2: new Float32Array(dim * hiddenDim),
      });
    }
    this.grads = {
      layers,
      tokenEmbedding: new Float32Array(vocabSize * dim),
      classifier: config.sharedClassifier ? undefined : new Float32Array(vocabSize * dim),
      finalNorm: new Float32Array(dim),
    };
    this.blockBuffers = Array.from({ length: nLayers }, (_, l) => ({
      xnAttn: this.xnA[l],
      q: this.q[l],
      k: this.k[l],
      v: this.v[l],
      att: this.att[l],
      out: this.out,
      xnFfn: this.xnF[l],
      h1: this.h1[l],
      h3: this.h3[l],
      gated: this.gated[l],
      ropeCos: this.ropeCos,
      ropeSin: this.ropeSin,
    }));
    this.blockHooks = {
      attention: (l, _b, T) => attentionForward(config, this, l, T),
      onResidual: (l, after, x, T) => {
        if (after === "attention") this.xMid[l].set(x.subarray(0, T * dim));
      },
    };
  }

  /**
   * Transposes the weights of `w` once (the backward half multiplies by W,
   * not Wᵀ). Kept until a different weights object is passed; weights are
   * read-only by convention, so an in-place edit is not seen.
   */
  prepare(w: LlamaWeights): void {
    if (this.prepared === w) return;
    const c = this.config;
    for (const key of ["dim", "hiddenDim", "nLayers", "nHeads", "nKvHeads", "vocabSize"] as const) {
      if (w.config[key] !== c[key]) {
        throw new RangeError(
          `BackwardState: weights have ${key} ${w.config[key]}, the state was built for ${c[key]}`,
        );
      }
    }
    const { dim, vocabSize } = c;
    this.wqkvT = [];
    this.woT = [];
    this.w13T = [];
    this.w2T = [];
    for (const lw of w.layers) {
      const t = transposeLayer(c, lw);
      this.wqkvT.push(t.wqkvT);
      this.woT.push(t.woT);
      this.w13T.push(t.w13T);
      this.w2T.push(t.w2T);
    }
    this.classifierT = transpose(new Float32Array(dim * vocabSize), w.classifier, vocabSize, dim);
    this.prepared = w;
  }

  /** Transposed weights of layer l (after {@linkcode BackwardState.prepare}). */
  transposed(l: number): LayerTransposes {
    return { wqkvT: this.wqkvT[l], woT: this.woT[l], w13T: this.w13T[l], w2T: this.w2T[l] };
  }

  /** The transposed classifier [dim, vocabSize] (after {@linkcode BackwardState.prepare}). */
  get classifierTransposed(): Float32Array {
    return this.classifierT;
  }
}

/** A block's linear weights transposed, as the backward half multiplies by them. */
export interface LayerTransposes {
  wqkvT: Float32Array; // [dim, dim + 2 * kvDim] columns wq | wk | wv
  woT: Float32Array; // [dim, dim]
  w13T: Float32Array; // [dim, 2 * hiddenDim] columns w1 | w3
  w2T: Float32Array; // [hiddenDim, dim]
}

/** The transposed linears of one block ({@linkcode LayerTransposes}). */
export function transposeLayer(c: LlamaConfig, lw: LayerWeights): LayerTransposes {
  const { dim, hiddenDim } = c;
  const kv = kvDim(c), qkv = dim + 2 * kv;
  const cat = new Float32Array(qkv * dim); // [dim + 2kv, dim] rows wq | wk | wv
  cat.set(lw.wq, 0);
  cat.set(lw.wk, dim * dim);
  cat.set(lw.wv, (dim + kv) * dim);
  const cat13 = new Float32Array(2 * hiddenDim * dim); // [2 hidden, dim] rows w1 | w3
  cat13.set(lw.w1, 0);
  cat13.set(lw.w3, hiddenDim * dim);
  return {
    wqkvT: transpose(new Float32Array(dim * qkv), cat, qkv, dim),
    woT: transpose(new Float32Array(dim * dim), lw.wo, dim, dim),
    w13T: transpose(new Float32Array(dim * 2 * hiddenDim), cat13, 2 * hiddenDim, dim),
    w2T: transpose(new Float32Array(hiddenDim * dim), lw.w2, dim, hiddenDim),
  };
}

/** out [cols, rows] = aᵀ for a [rows, cols] row-major; returns out. */
export function transpose(
  out: Float32Array,
  a: Float32Array,
  rows: number,
  cols: number,
): Float32Array {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = a[o + c];
  }
  return out;
}

/**
 * Weight gradient of a linear layer y = x Wᵀ over T rows:
 * dW [d, n] = Σ_t dy[t, :]ᵀ x[t, :] = dYᵀ X, from dyT [d, T] and xT [n, T]
 * (one `matmul`: out[d, n] = dyT[d, T] · xT[n, T]ᵀ). Overwrites dW.
 */
export function linearGradWeight(
  dW: Float32Array,
  dyT: Float32Array,
  xT: Float32Array,
  T: number,
  n: number,
  d: number,
): void {
  matmul(dW, dyT, xT, d, T, n);
}

/**
 * Input gradient of a linear layer y = x Wᵀ: dx [T, n] = dy [T, d] · W [d, n],
 * from wT [n, d] (one `matmul`: out[T, n] = dy[T, d] · wT[n, d]ᵀ). Overwrites dx.
 */
export function linearGradInput(
  dx: Float32Array,
  dy: Float32Array,
  wT: Float32Array,
  T: number,
  n: number,
  d: number,
): void {
  matmul(dx, dy, wT, T, d, n);
}

/**
 * Backward of y = rmsnorm(x) ⊙ weight over T rows of width dim, with
 * r = 1 / sqrt(mean(x²) + eps):
 *   dx_i += r·w_i·dy_i − r³·x_i·(Σ_j dy_j w_j x_j) / dim   (added into dx)
 *   dw_i  = Σ_t dy_i·x_i·r                                 (overwrites dw)
 */
export function rmsnormBackward(
  dx: Float32Array,
  dw: Float32Array,
  dy: Float32Array,
  x: Float32Array,
  weight: Float32Array,
  T: number,
  dim: number,
  eps: number,
): void {
  dw.fill(0);
  for (let t = 0; t < T; t++) {
    const o = t * dim;
    const r = rmsInverse(x, o, dim, eps);
    let dot = 0;
    for (let i = 0; i < dim; i++) {
      const xi = x[o + i], dyi = dy[o + i];
      dot += dyi * weight[i] * xi;
      dw[i] += dyi * xi * r;
    }
    const c = (r * r * r * dot) / dim;
    for (let i = 0; i < dim; i++) dx[o + i] += r * weight[i] * dy[o + i] - c * x[o + i];
  }
}

/**
 * Backward of {@linkcode rope} on gradients stored transposed: rows
 * [row0, row0 + nRows) of gT [*, T] are features (pairs 2i, 2i+1 within each
 * head of width hs), columns are positions. Applies the inverse rotation
 * (da, db) ← (da·c + db·s, −da·s + db·c) in place.
 */
export function ropeBackwardTransposed(
  gT: Float32Array,
  row0: number,
  nRows: number,
  T: number,
  hs: number,
  cos: Float32Array,
  sin: Float32Array,
): void {
  const half = hs / 2;
  for (let r = 0; r < nRows; r += 2) {
    const j = (r % hs) >> 1;
    const a0 = (row0 + r) * T, b0 = a0 + T;
    for (let t = 0; t < T; t++) {
      const c = cos[t * half + j], s = sin[t * half + j];
      const a = gT[a0 + t], b = gT[b0 + t];
      gT[a0 + t] = a * c + b * s;
      gT[b0 + t] = b * c - a * s;
    }
  }
}

/**
 * Causal grouped-query attention of layer l on the saved RoPE'd q, k and v,
 * keeping each head's softmax rows in s.probs[l]; writes s.att[l] [T, dim].
 * Keys and values are transposed per kv head ([hs, T]) so the loops over
 * positions read contiguous memory; head features go four at a time
 * (hs is even; a pair is left over when hs % 4 = 2).
 */
function attentionForward(c: LlamaConfig, s: BackwardState, l: number, T: number): void {
  const { dim, nHeads } = c;
  const kv = kvDim(c), hs = headSize(c), groups = nHeads / c.nKvHeads;
  const q = s.q[l], k = s.k[l], v = s.v[l], P = s.probs[l], att = s.att[l];
  const { kh, vh } = s;
  const tri = triangle(s.maxT), scale = 1 / Math.sqrt(hs), hs4 = hs - (hs % 4);
  for (let h = 0; h < nHeads; h++) {
    const g = Math.floor(h / groups);
    if (h % groups === 0) transposeHead(kh, vh, k, v, T, kv, g * hs, hs);
    for (let t = 0; t < T; t++) {
      const qo = t * dim + h * hs, n = t + 1, row = h * tri + (t * n) / 2;
      // scores[u] = scale · q_t · k_u
      P.fill(0, row, row + n);
      let j = 0;
      for (; j < hs4; j += 4) {
        const q0 = q[qo + j] * scale, q1 = q[qo + j + 1] * scale;
        const q2 = q[qo + j + 2] * scale, q3 = q[qo + j + 3] * scale;
        const k0 = j * T, k1 = k0 + T, k2 = k1 + T, k3 = k2 + T;
        for (let u = 0; u < n; u++) {
          P[row + u] += q0 * kh[k0 + u] + q1 * kh[k1 + u] + q2 * kh[k2 + u] + q3 * kh[k3 + u];
        }
      }
      for (; j < hs; j++) {
        const qj = q[qo + j] * scale, kj = j * T;
        for (let u = 0; u < n; u++) P[row + u] += qj * kh[kj + u];
      }
      let max = -Infinity;
      for (let u = 0; u < n; u++) if (P[row + u] > max) max = P[row + u];
      let sum = 0;
      for (let u = 0; u < n; u++) {
        const e = Math.exp(P[row + u] - max);
        P[row + u] = e;
        sum += e;
      }
      const inv = 1 / sum;
      for (let u = 0; u < n; u++) P[row + u] *= inv;
      // o_t = Σ_u p_u v_u
      for (j = 0; j < hs4; j += 4) {
        const v0 = j * T, v1 = v0 + T, v2 = v1 + T, v3 = v2 + T;
        let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (let u = 0; u < n; u++) {
          const p = P[row + u];
          a0 += p * vh[v0 + u];
          a1 += p * vh[v1 + u];
          a2 += p * vh[v2 + u];
          a3 += p * vh[v3 + u];
        }
        att[qo + j] = a0;
        att[qo + j + 1] = a1;
        att[qo + j + 2] = a2;
        att[qo + j + 3] = a3;
      }
      for (; j < hs; j++) {
        const vj = j * T;
        let a = 0;
        for (let u = 0; u < n; u++) a += P[row + u] * vh[vj + u];
        att[qo + j] = a;
      }
    }
  }
}

/** kh, vh [hs, T] = keys and values of the kv head at column c0 of k, v [T, kv], transposed. */
function transposeHead(
  kh: Float32Array,
  vh: Float32Array,
  k: Float32Array,
  v: Float32Array,
  T: number,
  kv: number,
  c0: number,
  hs: number,
): void {
  for (let t = 0; t < T; t++) {
    for (let j = 0; j < hs; j++) {
      kh[j * T + t] = k[t * kv + c0 + j];
      vh[j * T + t] = v[t * kv + c0 + j];
    }
  }
}

/**
 * Backward of the causal attention of layer l: from s.dAtt [T, dim] to
 * s.dqkvT [dim + 2kv, T] (gradients of q | k | v before RoPE, transposed).
 * With p = softmax(scale·q·k), o = Σ p·v:
 *   dv_u += p_u·do;  dp_u = do·v_u;  ds_u = p_u·(dp_u − do·o);
 *   dq += scale·Σ_u ds_u·k_u;  dk_u += scale·ds_u·q.
 */
function attentionBackward(c: LlamaConfig, s: BackwardState, l: number, T: number): void {
  const { dim, nHeads, nKvHeads } = c;
  const kv = kvDim(c), hs = headSize(c), groups = nHeads / nKvHeads;
  const q = s.q[l], k = s.k[l], v = s.v[l], P = s.probs[l], att = s.att[l];
  const { kh, vh, dP, dAtt, dqkvT } = s;
  const tri = triangle(s.maxT), scale = 1 / Math.sqrt(hs), hs4 = hs - (hs % 4);
  for (let g = 0; g < nKvHeads; g++) {
    transposeHead(kh, vh, k, v, T, kv, g * hs, hs);
    const dk0 = (dim + g * hs) * T, dv0 = (dim + kv + g * hs) * T;
    dqkvT.fill(0, dk0, dk0 + hs * T);
    dqkvT.fill(0, dv0, dv0 + hs * T);
    for (let h = g * groups; h < (g + 1) * groups; h++) {
      const dq0 = h * hs * T;
      for (let t = 0; t < T; t++) {
        const qo = t * dim + h * hs, n = t + 1, row = h * tri + (t * n) / 2;
        let D = 0;
        for (let j = 0; j < hs; j++) D += dAtt[qo + j] * att[qo + j];
        // dp_u = do · v_u and dv_u += p_u · do
        dP.fill(0, 0, n);
        let j = 0;
        for (; j < hs4; j += 4) {
          const d0 = dAtt[qo + j], d1 = dAtt[qo + j + 1];
          const d2 = dAtt[qo + j + 2], d3 = dAtt[qo + j + 3];
          const v0 = j * T, v1 = v0 + T, v2 = v1 + T, v3 = v2 + T;
          const w0 = dv0 + v0, w1 = dv0 + v1, w2 = dv0 + v2, w3 = dv0 + v3;
          for (let u = 0; u < n; u++) {
            const p = P[row + u];
            dP[u] += d0 * vh[v0 + u] + d1 * vh[v1 + u] + d2 * vh[v2 + u] + d3 * vh[v3 + u];
            dqkvT[w0 + u] += p * d0;
            dqkvT[w1 + u] += p * d1;
            dqkvT[w2 + u] += p * d2;
            dqkvT[w3 + u] += p * d3;
          }
        }
        for (; j < hs; j++) {
          const dj = dAtt[qo + j], vj = j * T, wj = dv0 + vj;
          for (let u = 0; u < n; u++) {
            dP[u] += dj * vh[vj + u];
            dqkvT[wj + u] += P[row + u] * dj;
          }
        }
        // ds_u = p_u (dp_u − do·o)
        for (let u = 0; u < n; u++) dP[u] = P[row + u] * (dP[u] - D);
        // dq = scale Σ_u ds_u k_u and dk_u += scale ds_u q
        for (j = 0; j < hs4; j += 4) {
          const q0 = q[qo + j] * scale, q1 = q[qo + j + 1] * scale;
          const q2 = q[qo + j + 2] * scale, q3 = q[qo + j + 3] * scale;
          const k0 = j * T, k1 = k0 + T, k2 = k1 + T, k3 = k2 + T;
          const w0 = dk0 + k0, w1 = dk0 + k1, w2 = dk0 + k2, w3 = dk0 + k3;
          let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
          for (let u = 0; u < n; u++) {
            const ds = dP[u];
            a0 += ds * kh[k0 + u];
            a1 += ds * kh[k1 + u];
            a2 += ds * kh[k2 + u];
            a3 += ds * kh[k3 + u];
            dqkvT[w0 + u] += q0 * ds;
            dqkvT[w1 + u] += q1 * ds;
            dqkvT[w2 + u] += q2 * ds;
            dqkvT[w3 + u] += q3 * ds;
          }
          dqkvT[dq0 + k0 + t] = a0 * scale;
          dqkvT[dq0 + k1 + t] = a1 * scale;
          dqkvT[dq0 + k2 + t] = a2 * scale;
          dqkvT[dq0 + k3 + t] = a3 * scale;
        }
        for (; j < hs; j++) {
          const qj = q[qo + j] * scale, kj = j * T, wj = dk0 + kj;
          let a = 0;
          for (let u = 0; u < n; u++) {
            const ds = dP[u];
            a += ds * kh[kj + u];
            dqkvT[wj + u] += qj * ds;
          }
          dqkvT[dq0 + kj + t] = a * scale;
        }
      }
    }
  }
  ropeBackwardTransposed(dqkvT, 0, dim, T, hs, s.ropeCos, s.ropeSin);
  ropeBackwardTransposed(dqkvT, dim, kv, T, hs, s.ropeCos, s.ropeSin);
}

/** The forward half of the blocks: fills the saved activations, the final residual last. */
function forwardSaved(w: LlamaWeights, tokens: ArrayLike<number>, s: BackwardState): void {
  const c = w.config;
  embed(w, tokens, s.xIn[0]);
  for (let l = 0; l < c.nLayers; l++) blockForwardSaved(c, w.layers[l], l, tokens.length, s);
}

/**
 * Block l's forward half: s.xIn[l + 1] = block(s.xIn[l]) (in place on a
 * copy), saving the activations its backward reads; the hooks save
 * xMid[l] and the probabilities.
 */
export function blockForwardSaved(
  c: LlamaConfig,
  lw: LayerWeights,
  l: number,
  T: number,
  s: BackwardState,
): void {
  const x = s.xIn[l + 1];
  x.set(s.xIn[l].subarray(0, T * c.dim));
  block(c, lw, l, x, T, s.blockBuffers[l], s.blockHooks);
}

/**
 * The head, forward and backward: the loss of the final residual
 * s.xIn[c.nLayers] [T, dim] (final RMSNorm, classifier, mean next-token
 * cross-entropy) and its gradient, left in s.dx; the final norm's gradient
 * in s.grads.finalNorm and, when `gClassifier` is given, the classifier's
 * there.
 *
 * @param c the config the state was built for
 * @param finalNorm [dim]
 * @param classifier [vocabSize, dim]
 * @param classifierT [dim, vocabSize], its transpose
 * @param tokens the window (its labels)
 * @param s the state
 * @param gClassifier [vocabSize, dim] overwritten with the classifier's gradient
 * @returns the loss
 */
export function headBackward(
  c: LlamaConfig,
  finalNorm: Float32Array,
  classifier: Float32Array,
  classifierT: Float32Array,
  tokens: ArrayLike<number>,
  s: BackwardState,
  gClassifier?: Float32Array,
): number {
  const { dim, vocabSize, normEps } = c;
  const T = tokens.length;
  const { dx, dxn, dyT, xT } = s;
  rmsnorm(s.xnFinal, s.xIn[c.nLayers], finalNorm, T, dim, normEps);
  // Only the T − 1 positions that predict a token are needed.
  const P = T - 1, logits = s.logits;
  matmul(logits, s.xnFinal, classifier, P, dim, vocabSize);
  let total = 0;
  for (let t = 0; t < P; t++) {
    const o = t * vocabSize;
    let max = -Infinity;
    for (let j = 0; j < vocabSize; j++) if (logits[o + j] > max) max = logits[o + j];
    let sum = 0;
    for (let j = 0; j < vocabSize; j++) sum += Math.exp(logits[o + j] - max);
    const target = tokens[t + 1];
    total += max + Math.log(sum) - logits[o + target];
    // dLoss/dlogits = (softmax − onehot) / (T − 1)
    const inv = 1 / (sum * P);
    for (let j = 0; j < vocabSize; j++) logits[o + j] = Math.exp(logits[o + j] - max) * inv;
    logits[o + target] -= 1 / P;
  }
  // Classifier: logits [P, V] = xnFinal [P, dim] · Cᵀ.
  if (gClassifier) {
    transpose(dyT, s.logits, P, vocabSize);
    transpose(xT, s.xnFinal, P, dim);
    linearGradWeight(gClassifier, dyT, xT, P, dim, vocabSize);
  }
  linearGradInput(dxn, s.logits, classifierT, P, dim, vocabSize);
  dxn.fill(0, P * dim, T * dim);
  dx.fill(0, 0, T * dim);
  rmsnormBackward(dx, s.grads.finalNorm, dxn, s.xIn[c.nLayers], finalNorm, T, dim, normEps);
  return total / P;
}

/**
 * Block l's backward half, after its forward half ({@linkcode blockForwardSaved}):
 * s.dx holds dLoss/d(block output) on entry and dLoss/d(block input) on
 * return; the block's gradients go to s.grads.layers[l].
 *
 * @param c the config the state was built for
 * @param lw the block's weights
 * @param wt their transposes ({@linkcode transposeLayer})
 * @param l the block's slot in the state
 * @param T tokens of the window
 * @param s the state
 */
export function blockBackward(
  c: LlamaConfig,
  lw: LayerWeights,
  wt: LayerTransposes,
  l: number,
  T: number,
  s: BackwardState,
): void {
  const { dim, hiddenDim, normEps } = c;
  const qkv = dim + 2 * kvDim(c);
  const { dx, dxn, dyT, xT } = s;
  const g = s.grads.layers[l];
  // FFN: out = gated [T, hidden] · w2ᵀ; dx is the gradient of the block output.
  transpose(dyT, dx, T, dim);
  transpose(xT, s.gated[l], T, hiddenDim);
  linearGradWeight(g.w2, dyT, xT, T, hiddenDim, dim);
  linearGradInput(s.dGated, dx, wt.w2T, T, hiddenDim, dim);
  const h1 = s.h1[l], h3 = s.h3[l], dG = s.dGated, dh13 = s.dh13;
  for (let t = 0; t < T; t++) {
    const o = t * hiddenDim, o2 = 2 * o;
    for (let i = 0; i < hiddenDim; i++) {
      const a = h1[o + i], sig = 1 / (1 + Math.exp(-a)), dg = dG[o + i];
      dh13[o2 + hiddenDim + i] = dg * a * sig; // d h3 = dg · silu(h1)
      dh13[o2 + i] = dg * h3[o + i] * sig * (1 + a * (1 - sig)); // d h1 = dg · h3 · silu'(h1)
    }
  }
  transpose(dyT, dh13, T, 2 * hiddenDim);
  transpose(xT, s.xnF[l], T, dim);
  linearGradWeight(s.g13[l], dyT, xT, T, dim, 2 * hiddenDim);
  linearGradInput(dxn, dh13, wt.w13T, T, dim, 2 * hiddenDim);
  rmsnormBackward(dx, g.ffnNorm, dxn, s.xMid[l], lw.ffnNorm, T, dim, normEps);

  // Attention: out = att [T, dim] · woᵀ; dx is now the gradient of xMid.
  transpose(dyT, dx, T, dim);
  transpose(xT, s.att[l], T, dim);
  linearGradWeight(g.wo, dyT, xT, T, dim, dim);
  linearGradInput(s.dAtt, dx, wt.woT, T, dim, dim);
  attentionBackward(c, s, l, T);
  transpose(xT, s.xnA[l], T, dim);
  linearGradWeight(s.gQKV[l], s.dqkvT, xT, T, dim, qkv);
  transpose(s.dqkv, s.dqkvT, qkv, T);
  linearGradInput(dxn, s.dqkv, wt.wqkvT, T, dim, qkv);
  rmsnormBackward(dx, g.attnNorm, dxn, s.xIn[l], lw.attnNorm, T, dim, normEps);
}

/**
 * The language-model loss of one window (labels = inputs: mean next-token
 * cross-entropy over its T − 1 predictions, Hugging Face's
 * `model(input_ids, labels=input_ids).loss`) and its gradient with respect to
 * every weight: the seven linear weights of every block, the norm weights,
 * the classifier and the token embedding (one total gradient when they are
 * shared).
 *
 * @param weights the model; read, never modified
 * @param tokens the window, 2 ≤ T ≤ maxSeqLen token ids
 * @param opts `state` to reuse buffers across windows
 * @returns the loss and views of the gradients, overwritten by the next call with the same state
 *
 * @example
 * ```ts
 * import { randomWeights } from "./random.ts";
 * import { BackwardState, lossAndGradients } from "./backward.ts";
 * const w = randomWeights({ dim: 8, hiddenDim: 12, nLayers: 1, nHeads: 2, nKvHeads: 1,
 *   vocabSize: 10, maxSeqLen: 6, sharedClassifier: true, normEps: 1e-5, ropeTheta: 10000 }, 1);
 * const state = new BackwardState(w.config);
 * const { loss, grads } = lossAndGradients(w, [1, 2, 3, 4], { state });
 * console.log(loss, grads.layers[0].wq.length); // 64 entries, [8, 8]
 * ```
 */
export function lossAndGradients(
  weights: LlamaWeights,
  tokens: Int32Array | ArrayLike<number>,
  opts: BackwardOptions = {},
): LossAndGradients {
  const c = weights.config;
  const T = tokens.length;
  if (T < 2) throw new RangeError(`lossAndGradients(): a window needs ≥ 2 tokens, got ${T}`);
  if (T > c.maxSeqLen) {
    throw new RangeError(
      `lossAndGradients(): window of ${T} tokens exceeds the model's max_seq_len ${c.maxSeqLen}`,
    );
  }
  const s = opts.state ?? new BackwardState(c, T);
  if (T > s.maxT) {
    throw new RangeError(`lossAndGradients(): window of ${T} tokens exceeds the state's ${s.maxT}`);
  }
  s.prepare(weights);
  forwardSaved(weights, tokens, s);
  const { grads, dx } = s, dim = c.dim;
  const loss = headBackward(
    c,
    weights.finalNorm,
    weights.classifier,
    s.classifierTransposed,
    tokens,
    s,
    grads.classifier ?? grads.tokenEmbedding,
  );
  for (let l = c.nLayers - 1; l >= 0; l--) {
    blockBackward(c, weights.layers[l], s.transposed(l), l, T, s);
  }

  // Embedding lookup: scatter-add each position's gradient into its token's row.
  const gE = grads.tokenEmbedding;
  if (grads.classifier) gE.fill(0);
  for (let t = 0; t < T; t++) {
    const row = tokens[t] * dim, o = t * dim;
    for (let i = 0; i < dim; i++) gE[row + i] += dx[o + i];
  }
  return { loss, grads };
}
