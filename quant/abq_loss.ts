/**
 * ABQ-LLM's reconstruction loss of one window (abq_llm.py), all weights 1,
 * and its gradients:
 *
 *   MSE(T1, Y) + MSE(T2, Y) − log|mean_t cos(Y_t, T1_t)| − log|mean_t cos(Y_t, T2_t)|
 *   + |KL(softmax(A_q) ‖ softmax(A_fp))| + |KL(softmax(A_fp) ‖ softmax(A_q))|
 *
 * MSE is the mean over T·dim; cos is over the hidden dimension per token;
 * A_q, A_fp are the head-averaged attention maps [T, T] (zero above the
 * diagonal), each row softmaxed again over all T entries, and the KL terms
 * are `nn.KLDivLoss(reduction="mean")`: divided by T·T. (The absolute values
 * change nothing: a KL divergence is ≥ 0.)
 *
 * Every term but the cosines' mean is a sum over tokens, so the loss runs
 * in two passes over any range of token rows (quant/abq_parallel.ts gives
 * each thread its rows): {@linkcode lossRows} writes each row's MSE, cosine
 * and KL statistics and its gradient except the cosine terms';
 * {@linkcode lossCosRows} adds those once every row's cosine is known; the
 * sums over rows are taken in row order ({@linkcode lossTotal}), so the
 * numbers do not depend on how the rows were divided.
 *
 * @module
 */
import { triangle } from "./abq_attention.ts";

/** The teacher's attention map of one window: head-averaged probabilities and row log-normalisers. */
export interface TeacherMap {
  avg: Float32Array; // [T(T+1)/2] head-averaged probabilities A_fp of F on X_fp
  logZ: Float32Array; // [T] log Σ_u exp(A_fp[t, u]) over the full row (T entries, zeros past t)
  pf: Float32Array; // [T(T+1)/2] softmax(A_fp) on and below the diagonal
}

/**
 * The teacher map of `avg` (head-averaged causal probabilities [T(T+1)/2]):
 * per row t, Z_t = (T − 1 − t) + Σ_{u≤t} e^{avg[t, u]} (the masked entries are
 * 0: e^0 each), logZ = log Z_t, pf = e^{avg} / Z_t.
 *
 * @param exp the exponential of a range ({@linkcode LossBuffers.exp}) @default Math.exp
 */
export function teacherMap(avg: Float32Array, T: number, exp: ExpRange = expJs): TeacherMap {
  const n = triangle(T), logZ = new Float32Array(T), pf = new Float32Array(n);
  exp(avg, pf, 0, n);
  for (let t = 0; t < T; t++) {
    const o = (t * (t + 1)) / 2;
    let z = T - 1 - t;
    for (let u = 0; u <= t; u++) z += pf[o + u];
    logZ[t] = Math.log(z);
    for (let u = 0; u <= t; u++) pf[o + u] /= z;
  }
  return { avg: avg.slice(0, n), logZ, pf };
}

/** The loss of one window and its gradients. */
export interface AbqLoss {
  loss: number;
  /** The terms: [MSE(T1,Y), MSE(T2,Y), −log|cos(Y,T1)|, −log|cos(Y,T2)|, KL(Q‖F), KL(F‖Q)]. */
  terms: number[];
}

/** Float64 statistics per token row, in this order. */
const MSE1 = 0, MSE2 = 1, COS1 = 2, COS2 = 3, NY = 4, NR1 = 5, NR2 = 6, KL1 = 7, KL2 = 8;
/** Fields per row of the statistics array [T, ROW_STATS]. */
export const ROW_STATS = 9;

/** The inputs and outputs of the loss of one window (views; rows written by each pass). */
export interface LossBuffers {
  Y: Float32Array; // [T, dim] the quantized block's output
  T1: Float32Array; // [T, dim] F(X_fp)
  T2: Float32Array; // [T, dim] F(X_q)
  avgQ: Float32Array; // [T(T+1)/2] the quantized block's head-averaged probabilities
  teacher: TeacherMap; // F's on X_fp
  dY: Float32Array; // [T, dim] written: dL/dY
  dA: Float32Array; // [T(T+1)/2] written: dL/dA_q
  stats: Float64Array; // [T, ROW_STATS] written
  /** The exponential of a range. @default Math.exp, one by one */
  exp?: ExpRange;
}

/** dst[i] = e^{src[i]} for i in [from, to). */
export type ExpRange = (src: Float32Array, dst: Float32Array, from: number, to: number) => void;

/** {@linkcode ExpRange} with Math.exp. */
function expJs(src: Float32Array, dst: Float32Array, from: number, to: number): void {
  for (let i = from; i < to; i++) dst[i] = Math.exp(src[i]);
}

/**
 * The first pass over token rows [r0, r1): each row's squared errors, norms,
 * cosines and KL terms into `stats`, dY = the MSE terms' gradient, dA = the
 * KL terms' gradient (rows r0..r1 of the triangle).
 */
export function lossRows(b: LossBuffers, T: number, dim: number, r0: number, r1: number): void {
  const { Y, T1, T2, avgQ, dY, dA, stats } = b;
  const n = T * dim, N = T * T;
  const { avg: F, logZ, pf } = b.teacher;
  (b.exp ?? expJs)(avgQ, dA, triangle(r0), triangle(r1)); // e^{A_q}, until the gradient below
  for (let t = r0; t < r1; t++) {
    let mse1 = 0, mse2 = 0, yy = 0, rr1 = 0, yr1 = 0, rr2 = 0, yr2 = 0;
    for (let i = t * dim; i < (t + 1) * dim; i++) {
      const y = Y[i], a = T1[i], c = T2[i], e1 = y - a, e2 = y - c;
      mse1 += e1 * e1;
      mse2 += e2 * e2;
      dY[i] = (2 * (e1 + e2)) / n;
      yy += y * y;
      rr1 += a * a;
      yr1 += y * a;
      rr2 += c * c;
      yr2 += y * c;
    }
    const s = t * ROW_STATS, ny = Math.sqrt(yy), nr1 = Math.sqrt(rr1), nr2 = Math.sqrt(rr2);
    stats[s + MSE1] = mse1;
    stats[s + MSE2] = mse2;
    stats[s + NY] = ny;
    stats[s + NR1] = nr1;
    stats[s + NR2] = nr2;
    stats[s + COS1] = yr1 / Math.max(ny * nr1, 1e-8);
    stats[s + COS2] = yr2 / Math.max(ny * nr2, 1e-8);
    // the attention-map terms over all T entries of the row (zeros past the diagonal)
    const o = (t * (t + 1)) / 2, masked = T - 1 - t, lzf = logZ[t];
    let z = masked;
    for (let u = 0; u <= t; u++) z += dA[o + u];
    const lz = Math.log(z), iz = 1 / z;
    // KL1_t = Σ P (log P − log Pf);  KL2_t = Σ Pf (log Pf − log P)
    let r1 = masked * iz * (lzf - lz), r2 = masked * Math.exp(-lzf) * (lz - lzf);
    for (let u = 0; u <= t; u++) {
      const d = avgQ[o + u] - lz - (F[o + u] - lzf); // log P − log Pf
      r1 += dA[o + u] * iz * d;
      r2 -= pf[o + u] * d;
    }
    stats[s + KL1] = r1;
    stats[s + KL2] = r2;
    for (let u = 0; u <= t; u++) {
      const d = avgQ[o + u] - lz - (F[o + u] - lzf), P = dA[o + u] * iz;
      dA[o + u] = (P * (d - r1) + (P - pf[o + u])) / N;
    }
  }
}

/** m = mean_t cos_t over all T rows of `stats` (field COS1 or COS2), in row order. */
function meanCos(stats: Float64Array, T: number, field: number): number {
  let m = 0;
  for (let t = 0; t < T; t++) m += stats[t * ROW_STATS + field];
  return m / T;
}

/**
 * The second pass over rows [r0, r1), once {@linkcode lossRows} has run on
 * every row: adds the cosine terms' gradient into dY,
 * −log|m| → dL/dY_t = −(1/(m·T))·(R_t/(|Y_t||R_t|) − cos_t·Y_t/|Y_t|²).
 */
export function lossCosRows(b: LossBuffers, T: number, dim: number, r0: number, r1: number): void {
  const { Y, dY, stats } = b;
  for (const [R, COS, NR] of [[b.T1, COS1, NR1], [b.T2, COS2, NR2]] as const) {
    const k = -1 / (meanCos(stats, T, COS) * T);
    for (let t = r0; t < r1; t++) {
      const s = t * ROW_STATS, ny = stats[s + NY];
      const a = 1 / Math.max(ny * stats[s + NR], 1e-8),
        c = stats[s + COS] / Math.max(ny * ny, 1e-16);
      for (let i = t * dim; i < (t + 1) * dim; i++) dY[i] += k * (R[i] * a - Y[i] * c);
    }
  }
}

/** The loss and its terms from every row's statistics, summed in row order. */
export function lossTotal(stats: Float64Array, T: number, dim: number): AbqLoss {
  let mse1 = 0, mse2 = 0, kl1 = 0, kl2 = 0;
  for (let t = 0; t < T; t++) {
    const s = t * ROW_STATS;
    mse1 += stats[s + MSE1];
    mse2 += stats[s + MSE2];
    kl1 += stats[s + KL1];
    kl2 += stats[s + KL2];
  }
  const n = T * dim, N = T * T;
  const terms = [
    mse1 / n,
    mse2 / n,
    -Math.log(Math.abs(meanCos(stats, T, COS1))),
    -Math.log(Math.abs(meanCos(stats, T, COS2))),
    Math.abs(kl1 / N),
    Math.abs(kl2 / N),
  ];
  return { loss: terms.reduce((a, b) => a + b, 0), terms };
}

/**
 * The whole loss of one window on one thread: {@linkcode lossRows} and
 * {@linkcode lossCosRows} over every row, then {@linkcode lossTotal}.
 *
 * @param b the window's buffers (dY, dA, stats written)
 * @param T tokens
 * @param dim model width
 * @returns the loss and its terms
 */
export function abqLoss(b: LossBuffers, T: number, dim: number): AbqLoss {
  lossRows(b, T, dim, 0, T);
  lossCosRows(b, T, dim, 0, T);
  return lossTotal(b.stats, T, dim);
}
