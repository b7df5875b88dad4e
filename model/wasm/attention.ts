/**
 * Causal softmax attention of all heads of one layer over a prefill window
 * (positions 0..T−1), with grouped-query heads: the other hot loop of the
 * CPU forward pass (at T = 512 on stories260K about 160 K multiply-adds per
 * token, against 260 K in the linear layers). Every version meets the
 * {@linkcode AttentionFn} contract of kernels.ts:
 *
 *   att[t, h] = Σ_{u≤t} softmax_u(q[t, h] · k[u, g] / √headSize) · v[u, g],
 *   g = ⌊h / (nHeads / nKvHeads)⌋
 *
 * Shapes (row-major, heads side by side, as model/forward.ts lays them out):
 * q, att: [T, nHeads · headSize]; k, v: [T, nKvHeads · headSize]. RoPE is
 * applied to q and k before the call.
 *
 * - {@linkcode causalAttentionRef}: plain float64 loops.
 * - {@linkcode causalAttentionWasm}: WebAssembly SIMD (kernels.wat), float32,
 *   exp by a Cephes polynomial (≈ 1–2 ulp); headSize a multiple of 4. Head
 *   size 8 (stories260K) has its own kernel (`attention_hs8`: the query in
 *   registers, K and V transposed so one vector holds 4 keys, scores in
 *   base 2): about 1.3× the general kernel's speed at T = 512. The general
 *   kernel copies each kv head's keys and values into the order its loops
 *   read them (kernels.wat): on LLaMA-7B's heads (32 × 128, one thread) a
 *   window of T = 2048 took 8.7 s with k and v read in place, whose 16 KiB
 *   rows put every key of a pass in one L1 set, and 2.0 s with the copies
 *   (T = 512: 0.38 → 0.16 s), with the same bits.
 * - {@linkcode causalAttention}: the WebAssembly version where WebAssembly
 *   SIMD exists and headSize % 4 = 0 (every LLaMA), else the reference.
 *
 * @module
 */
import { type AttentionFn, checkAttentionArgs, FORWARD_KERNELS, withoutSimd } from "./kernels.ts";

/**
 * Causal attention, plain reference: scores, softmax and weighted sum in
 * float64 per query; allocates one scratch row of T scores per call.
 *
 * @param att [T, nHeads · headSize], written
 * @param q [T, nHeads · headSize]
 * @param k [T, nKvHeads · headSize]
 * @param v [T, nKvHeads · headSize]
 * @throws RangeError on a bad shape or an operand too short.
 * @example
 * ```ts
 * // One head, two positions: position 0 attends only to itself.
 * const att = new Float32Array(4);
 * const q = new Float32Array([1, 0, 1, 0]), k = q, v = new Float32Array([1, 2, 3, 4]);
 * causalAttentionRef(att, q, k, v, 2, 1, 1, 2); // att[0..1] = [1, 2]
 * ```
 */
export const causalAttentionRef: AttentionFn = (att, q, k, v, T, nHeads, nKvHeads, headSize) => {
  checkAttentionArgs("causalAttentionRef", att, q, k, v, T, nHeads, nKvHeads, headSize);
  const hs = headSize, dim = nHeads * hs, kv = nKvHeads * hs, group = nHeads / nKvHeads;
  const scale = 1 / Math.sqrt(hs);
  const scores = new Float64Array(T); // [T] one query's scores, then probabilities
  for (let h = 0; h < nHeads; h++) {
    const kc = Math.floor(h / group) * hs; // this head's kv columns
    for (let t = 0; t < T; t++) {
      const qo = t * dim + h * hs;
      let max = -Infinity;
      for (let u = 0; u <= t; u++) {
        let s = 0;
        for (let j = 0; j < hs; j++) s += q[qo + j] * k[u * kv + kc + j];
        scores[u] = s * scale;
        if (scores[u] > max) max = scores[u];
      }
      let sum = 0;
      for (let u = 0; u <= t; u++) {
        scores[u] = Math.exp(scores[u] - max);
        sum += scores[u];
      }
      for (let j = 0; j < hs; j++) {
        let a = 0;
        for (let u = 0; u <= t; u++) a += scores[u] * v[u * kv + kc + j];
        att[qo + j] = a / sum;
      }
    }
  }
};

/**
 * Causal attention in WebAssembly SIMD (kernels.wat, the shared
 * `FORWARD_KERNELS` instance), float32; same contract as
 * {@linkcode causalAttentionRef}. Copies q, k, v into the module's memory
 * and att out.
 *
 * @param att [T, nHeads · headSize], written
 * @param q [T, nHeads · headSize]
 * @param k [T, nKvHeads · headSize]
 * @param v [T, nKvHeads · headSize]
 * @param headSize must be a multiple of 4
 * @throws Error without WebAssembly SIMD; RangeError on a bad shape or headSize % 4 ≠ 0.
 */
export const causalAttentionWasm: AttentionFn = FORWARD_KERNELS?.attention ??
  withoutSimd("causalAttentionWasm");

/**
 * Causal attention, fastest available for this head size: the WebAssembly
 * version when WebAssembly SIMD exists and headSize % 4 = 0, else the
 * reference. Same contract as {@linkcode causalAttentionRef}.
 *
 * @param att [T, nHeads · headSize], written
 * @param q [T, nHeads · headSize]
 * @param k [T, nKvHeads · headSize]
 * @param v [T, nKvHeads · headSize]
 */
export const causalAttention: AttentionFn = (att, q, k, v, T, nHeads, nKvHeads, headSize) => {
  const attend = FORWARD_KERNELS && headSize % 4 === 0 ? causalAttentionWasm : causalAttentionRef;
  attend(att, q, k, v, T, nHeads, nKvHeads, headSize);
};
