/**
 * Causal grouped-query attention of one block for ABQ-LLM's training step
 * (quant/abq_grad.ts): the forward pass keeping every head's probabilities
 * P and the head-averaged map of ABQ's loss, and the backward pass with the
 * gradient of that map entering the softmax backward. Per head h (KV head
 * g = ⌊h / groups⌋), with Q_h, K_g, V_g [T, hs]:
 *
 *   S = scale·Q_h K_gᵀ,  P = causal softmax(S),  O_h = P V_g
 *   dV_g += Pᵀ dO_h;  dP = dO_h V_gᵀ (+ dAvg / nHeads);  dS = P ⊙ (dP − rowsum(P ⊙ dP))
 *   dQ_h = scale·dS K_g;  dK_g += scale·dSᵀ Q_h
 *
 * Every product runs in WebAssembly SIMD and no [T, T] map is ever
 * transposed: each product goes to the kernel whose layout reads the map as
 * it lies (row t holds the keys u ≤ t, zeros after them):
 *
 * - S and dP: `gemm_f32` (model/wasm/kernels.wat) in mode 2, only the tiles
 *   on and below the diagonal, from Q_hᵀ (dO_hᵀ) and K_g (V_g) in 8-column
 *   panels, straight into P's (dS's) rows;
 * - O_h = P V_g and dQ_h = dS K_g: `causal_pv` (quant/abq_kernels.wat),
 *   straight from P's (dS's) entries on and below the diagonal;
 * - dV_g += Pᵀ dO_h and dK_g += dSᵀ Q_h: `gemm_f32` in mode 3, which reads
 *   P (dS) as a row-major [K, R] operand and starts each sum at the
 *   diagonal, accumulating over the heads of a KV group.
 *
 * P and dS live in the linear memory of their own kernels instance (no copy
 * in or out for `gemm_f32`); rows are padded to Tp = ⌈T/8⌉·8 and heads to
 * hsP = ⌈hs/8⌉·8 with zeros, as the kernel's tiles need. The causal
 * softmax and its backward, row by row in place on those maps, are
 * quant/abq_kernels.wat's (f32x4; Cephes' expf as model/wasm/kernels.wat's
 * attention), instantiated on the same memory.
 *
 * @module
 */
import type { LlamaConfig } from "../model/config.ts";
import { headSize, kvDim } from "../model/config.ts";
import {
  growMemory,
  type SolverKernels,
  solverKernels,
  withoutSimd,
} from "../model/wasm/kernels.ts";
import { ABQ_KERNELS_MODULE, type AbqKernelExports, abqKernels } from "./abq_kernels.ts";

/** Floats of one causal map: row t holds t + 1 entries, at t(t+1)/2. */
export function triangle(T: number): number {
  return (T * (T + 1)) / 2;
}

const ceil8 = (v: number) => (v + 7) & ~7;

/** Causal attention of one block with saved probabilities (module doc). */
export class AbqAttention {
  /** [nHeads, Tp, Tp] probabilities of the last forward, 0 above the diagonal (wasm memory). */
  readonly P: Float32Array;
  private readonly k: SolverKernels;
  private readonly sm: AbqKernelExports;
  private readonly Tp: number; // ⌈maxT / 8⌉·8: the maps' row stride
  private readonly hsP: number; // ⌈hs / 8⌉·8: the panels' width
  // byte offsets in k.memory, and their views
  private readonly pP: number;
  private readonly pdS: number;
  private readonly dS: Float32Array; // [Tp, Tp] dP, then dS
  private readonly pA: number;
  private readonly A: Float32Array; // [hs, Tp] Q_hᵀ or dO_hᵀ: gemm's row-major [K, R] operand
  private readonly pB: number;
  private readonly B: Float32Array; // panels: K_g or V_g [hs, Tp], or Q_h or dO_h [T, hsP]
  private readonly pdK: number;
  private readonly dK: Float32Array; // [Tp, hsP] dK_g
  private readonly pdV: number;
  private readonly dV: Float32Array; // [Tp, hsP] dV_g
  private readonly pTri: number;
  private readonly tri: Float32Array; // [maxT(maxT+1)/2 + 4] the averaged map or its gradient
  private readonly pV: number;
  private readonly V: Float32Array; // [Tp, hsP] V_g or K_g, rows zero-padded: causal_pv's V
  private readonly pO: number;
  private readonly O: Float32Array; // [Tp, hsP] O_h or dQ_h
  private readonly pE: number;
  private readonly E: Float32Array; // [max(maxT(maxT+1)/2, maxT·hidden) + 4] exp's operand and result

  constructor(readonly c: LlamaConfig, readonly maxT: number) {
    if (!ABQ_KERNELS_MODULE) withoutSimd("AbqAttention")();
    const hs = headSize(c), Tp = ceil8(maxT), hsP = ceil8(hs), sq = Tp * Tp;
    this.Tp = Tp;
    this.hsP = hsP;
    const floats = [
      c.nHeads * sq,
      sq,
      hs * Tp,
      Math.max(hs, hsP) * Tp,
      Tp * hsP,
      Tp * hsP,
      ceil8(triangle(maxT) + 4),
      Tp * hsP,
      Tp * hsP,
      ceil8(Math.max(triangle(maxT), maxT * c.hiddenDim) + 4),
    ];
    const offsets: number[] = [];
    let at = 0;
    for (const n of floats) {
      offsets.push(at);
      at += n * 4;
    }
    this.k = solverKernels("AbqAttention");
    growMemory("AbqAttention", this.k.memory, at);
    this.sm = abqKernels(this.k.memory);
    [
      this.pP,
      this.pdS,
      this.pA,
      this.pB,
      this.pdK,
      this.pdV,
      this.pTri,
      this.pV,
      this.pO,
      this.pE,
    ] = offsets;
    const view = (i: number) => new Float32Array(this.k.memory.buffer, offsets[i], floats[i]);
    this.P = view(0);
    this.dS = view(1);
    this.A = view(2);
    this.B = view(3);
    this.dK = view(4);
    this.dV = view(5);
    this.tri = view(6);
    this.V = view(7);
    this.O = view(8);
    this.E = view(9);
  }

  /**
   * The heads of KV heads [g0, g1): their columns of att [T, dim] from q [T,
   * dim] (after RoPE), k, v [T, kv]; avg [T(T+1)/2] = Σ over those heads of
   * P / nHeads, in head order.
   */
  forward(
    att: Float32Array,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    T: number,
    avg: Float32Array,
    g0 = 0,
    g1: number = this.c.nKvHeads,
  ): void {
    this.check(T);
    const c = this.c, { dim, nHeads } = c;
    const kv = kvDim(c), hs = headSize(c), groups = nHeads / c.nKvHeads;
    const scale = 1 / Math.sqrt(hs), Tp = this.Tp, hsP = this.hsP, sq = Tp * Tp;
    const { A, V, O, tri } = this;
    tri.fill(0);
    for (let h = g0 * groups; h < g1 * groups; h++) {
      const g = Math.floor(h / groups);
      if (h % groups === 0) {
        packKeyPanels(this.B, k, T, Tp, kv, g * hs, hs);
        packRows(V, v, T, hsP, kv, g * hs, hs);
      }
      packTransposed(A, q, T, Tp, dim, h * hs, hs);
      // S = Q_h K_gᵀ (lower tiles), then P = softmax(scale·S) in place
      const P = this.P.subarray(h * sq, (h + 1) * sq), pPh = this.pP + h * sq * 4;
      zeroLowerTiles(P, Tp);
      this.k.gemm_f32(this.pA, 32, Tp * 4, this.pB, hs, pPh, Tp * 4, Tp, Tp, Tp, 2, 0);
      this.sm.causal_softmax(pPh, Tp, T, scale, this.pTri, 1 / nHeads);
      // O_h = P V_g
      this.sm.causal_pv(pPh, Tp, this.pV, this.pO, T, hsP);
      scatter(att, O, T, dim, h * hs, hs, hsP);
    }
    avg.set(tri.subarray(0, triangle(T)));
  }

  /**
   * From dAtt [T, dim] (and dAvg [T(T+1)/2], the gradient of the head-averaged
   * probabilities) to the columns of KV heads [g0, g1) in dqkv [T, dim + 2kv]:
   * gradients of q | k | v after RoPE. Reads the probabilities of those heads'
   * last {@linkcode AbqAttention.forward}.
   */
  backward(
    dqkv: Float32Array,
    dAtt: Float32Array,
    dAvg: Float32Array,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    T: number,
    g0 = 0,
    g1: number = this.c.nKvHeads,
  ): void {
    this.check(T);
    const c = this.c, { dim, nHeads } = c;
    const kv = kvDim(c), hs = headSize(c), groups = nHeads / c.nKvHeads, qkv = dim + 2 * kv;
    const scale = 1 / Math.sqrt(hs);
    const { Tp, hsP, A, B, dS, dK, dV, V, O, tri } = this, sq = Tp * Tp, km = this.k;
    const n = triangle(T);
    tri.set(dAvg.subarray(0, n));
    tri.fill(0, n);
    for (let g = g0; g < g1; g++) {
      packRows(V, k, T, hsP, kv, g * hs, hs); // K_g for dQ
      dK.fill(0);
      dV.fill(0);
      for (let h = g * groups; h < (g + 1) * groups; h++) {
        const pPh = this.pP + h * sq * 4;
        // dV_g += Pᵀ dO_h
        packRowPanels(B, dAtt, T, hsP, dim, h * hs, hs);
        km.gemm_f32(pPh, 32, Tp * 4, this.pB, T, this.pdV, hsP * 4, Tp, hsP, hsP, 3, 0);
        // dP = dO_h V_gᵀ (lower tiles), then dS in place (scale folded in)
        packTransposed(A, dAtt, T, Tp, dim, h * hs, hs);
        packKeyPanels(B, v, T, Tp, kv, g * hs, hs);
        zeroLowerTiles(dS, Tp);
        km.gemm_f32(this.pA, 32, Tp * 4, this.pB, hs, this.pdS, Tp * 4, Tp, Tp, Tp, 2, 0);
        this.sm.causal_softmax_backward(pPh, this.pdS, Tp, T, scale, this.pTri, 1 / nHeads);
        // dQ_h = dS K_g;  dK_g += dSᵀ Q_h
        this.sm.causal_pv(this.pdS, Tp, this.pV, this.pO, T, hsP);
        scatter(dqkv, O, T, qkv, h * hs, hs, hsP);
        packRowPanels(B, q, T, hsP, dim, h * hs, hs);
        km.gemm_f32(this.pdS, 32, Tp * 4, this.pB, T, this.pdK, hsP * 4, Tp, hsP, hsP, 3, 0);
      }
      for (let t = 0; t < T; t++) {
        for (let j = 0; j < hs; j++) {
          dqkv[t * qkv + dim + g * hs + j] = dK[t * hsP + j];
          dqkv[t * qkv + dim + kv + g * hs + j] = dV[t * hsP + j];
        }
      }
    }
  }

  /**
   * dst[i] = e^{src[i]} for i in [from, to) (at most max(maxT(maxT+1)/2,
   * maxT·hiddenDim) values), with the softmax's f32 exp (quant/abq_kernels.wat
   * `exp_f32`).
   */
  readonly exp = (src: Float32Array, dst: Float32Array, from: number, to: number): void => {
    const n = to - from;
    if (n > this.E.length - 4) {
      throw new RangeError(`AbqAttention.exp: ${n} values > ${this.E.length - 4}`);
    }
    this.E.set(src.subarray(from, to));
    this.sm.exp_f32(this.pE, this.pE, n);
    dst.set(this.E.subarray(0, n), from);
  };

  private check(T: number): void {
    if (T > this.maxT) throw new RangeError(`AbqAttention: window of ${T} > maxT ${this.maxT}`);
  }
}

/**
 * Zeroes what `gemm_f32` in mode 2 adds into in a [Tp, Tp] map: for the rows
 * r0 .. r0 + 3 of each 4-row tile, the 8-column tiles j0 ≤ r0 + 3.
 */
function zeroLowerTiles(m: Float32Array, Tp: number): void {
  for (let r = 0; r < Tp; r++) {
    const end = Math.min(Tp, (((r & ~3) + 3) & ~7) + 8);
    m.fill(0, r * Tp, r * Tp + end);
  }
}

/** out [w, Tp] = (x[:, c0 .. c0 + w) of x [T, width])ᵀ, zero for columns t ≥ T. */
function packTransposed(
  out: Float32Array,
  x: Float32Array,
  T: number,
  Tp: number,
  width: number,
  c0: number,
  w: number,
): void {
  for (let j = 0; j < w; j++) {
    const o = j * Tp;
    for (let t = 0; t < T; t++) out[o + t] = x[t * width + c0 + j];
    out.fill(0, o + T, o + Tp);
  }
}

/**
 * gemm_f32's B panels of Xᵀ [w, Tp] for X = x[:, c0 .. c0 + w) of x [T,
 * width]: Xᵀ[j, u] at ((u >> 3)·w + j)·8 + (u & 7), zero for u ≥ T.
 */
function packKeyPanels(
  out: Float32Array,
  x: Float32Array,
  T: number,
  Tp: number,
  width: number,
  c0: number,
  w: number,
): void {
  for (let u = 0; u < Tp; u++) {
    const o = (u >> 3) * w * 8 + (u & 7);
    if (u < T) { for (let j = 0; j < w; j++) out[o + j * 8] = x[u * width + c0 + j]; }
    else for (let j = 0; j < w; j++) out[o + j * 8] = 0;
  }
}

/**
 * gemm_f32's B panels of X [T, wP] for X = x[:, c0 .. c0 + w) of x [T,
 * width], zero-padded to wP columns: X[t, j] at ((j >> 3)·T + t)·8 + (j & 7).
 */
function packRowPanels(
  out: Float32Array,
  x: Float32Array,
  T: number,
  wP: number,
  width: number,
  c0: number,
  w: number,
): void {
  for (let j = 0; j < wP; j++) {
    const o = (j >> 3) * T * 8 + (j & 7);
    if (j < w) { for (let t = 0; t < T; t++) out[o + t * 8] = x[t * width + c0 + j]; }
    else for (let t = 0; t < T; t++) out[o + t * 8] = 0;
  }
}

/** x[:, c0 .. c0 + w) of x [T, width] = a[:, 0 .. w) of a [T, stride]. */
function scatter(
  x: Float32Array,
  a: Float32Array,
  T: number,
  width: number,
  c0: number,
  w: number,
  stride: number,
): void {
  for (let t = 0; t < T; t++) {
    const o = t * width + c0;
    for (let j = 0; j < w; j++) x[o + j] = a[t * stride + j];
  }
}

/** out [T, wP] = x[:, c0 .. c0 + w) of x [T, width], zero-padded to wP columns. */
function packRows(
  out: Float32Array,
  x: Float32Array,
  T: number,
  wP: number,
  width: number,
  c0: number,
  w: number,
): void {
  for (let t = 0; t < T; t++) {
    const o = t * wP;
    for (let j = 0; j < w; j++) out[o + j] = x[t * width + c0 + j];
    out.fill(0, o + w, o + wP);
  }
}
