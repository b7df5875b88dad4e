/**
 * A second, plain implementation of the LLaMA forward pass: llama2.c's
 * token-at-a-time `forward(transformer, token, pos)` with a KV cache,
 * written with simple loops and float64 accumulation. It shares no code with
 * model/forward.ts beyond the weight layout, so each checks the other; it is
 * also the CPU reference of the GPU decoding path.
 *
 * @module
 */
import type { LlamaWeights } from "./config.ts";
import { headSize, kvDim } from "./config.ts";

/** llama2.c-style decoder: call {@linkcode step} with one token per position. */
export class ReferenceDecoder {
  readonly keyCache: Float64Array; // [nLayers, maxSeqLen, kvDim]
  readonly valueCache: Float64Array; // [nLayers, maxSeqLen, kvDim]
  pos = 0;

  constructor(readonly w: LlamaWeights) {
    const c = w.config;
    this.keyCache = new Float64Array(c.nLayers * c.maxSeqLen * kvDim(c));
    this.valueCache = new Float64Array(c.nLayers * c.maxSeqLen * kvDim(c));
  }

  /** Logits [vocabSize] after feeding `token` at the next position. */
  step(token: number): Float64Array {
    const { w } = this;
    const c = w.config;
    const { dim, hiddenDim, nHeads, nKvHeads, maxSeqLen, vocabSize, normEps } = c;
    const kv = kvDim(c), hs = headSize(c), pos = this.pos;
    if (pos >= maxSeqLen) throw new RangeError(`position ${pos} exceeds max_seq_len ${maxSeqLen}`);
    const x = Float64Array.from(w.tokenEmbedding.subarray(token * dim, (token + 1) * dim));
    for (let l = 0; l < c.nLayers; l++) {
      const lw = w.layers[l];
      const xb = rmsnormVec(x, lw.attnNorm, normEps);
      const q = matvec(lw.wq, xb, dim);
      const k = matvec(lw.wk, xb, kv);
      const v = matvec(lw.wv, xb, kv);
      for (let i = 0; i < dim; i += 2) {
        const freq = 1 / Math.pow(c.ropeTheta, (i % hs) / hs);
        const ang = pos * freq;
        const cr = Math.cos(ang), ci = Math.sin(ang);
        const rot = (vec: Float64Array) => {
          const a = vec[i], b = vec[i + 1];
          vec[i] = a * cr - b * ci;
          vec[i + 1] = a * ci + b * cr;
        };
        rot(q);
        if (i < kv) rot(k);
      }
      const base = l * maxSeqLen * kv;
      this.keyCache.set(k, base + pos * kv);
      this.valueCache.set(v, base + pos * kv);
      const out = new Float64Array(dim);
      for (let h = 0; h < nHeads; h++) {
        const g = Math.floor(h / (nHeads / nKvHeads));
        const att = new Float64Array(pos + 1);
        for (let t = 0; t <= pos; t++) {
          let score = 0;
          for (let j = 0; j < hs; j++) {
            score += q[h * hs + j] * this.keyCache[base + t * kv + g * hs + j];
          }
          att[t] = score / Math.sqrt(hs);
        }
        const max = Math.max(...att);
        let sum = 0;
        for (let t = 0; t <= pos; t++) sum += att[t] = Math.exp(att[t] - max);
        for (let t = 0; t <= pos; t++) {
          for (let j = 0; j < hs; j++) {
            out[h * hs + j] += (att[t] / sum) * this.valueCache[base + t * kv + g * hs + j];
          }
        }
      }
      const o = matvec(lw.wo, out, dim);
      for (let i = 0; i < dim; i++) x[i] += o[i];
      const xb2 = rmsnormVec(x, lw.ffnNorm, normEps);
      const a = matvec(lw.w1, xb2, hiddenDim);
      const b = matvec(lw.w3, xb2, hiddenDim);
      for (let i = 0; i < hiddenDim; i++) a[i] = (a[i] / (1 + Math.exp(-a[i]))) * b[i];
      const f = matvec(lw.w2, a, dim);
      for (let i = 0; i < dim; i++) x[i] += f[i];
    }
    this.pos++;
    return matvec(w.classifier, rmsnormVec(x, w.finalNorm, normEps), vocabSize);
  }
}

/** W (d, n) @ x (n,) -> (d,), float64 accumulation. */
function matvec(wt: Float32Array, x: Float64Array, d: number): Float64Array {
  const n = x.length;
  const out = new Float64Array(d);
  for (let i = 0; i < d; i++) {
    let s = 0;
    for (let j = 0; j < n; j++) s += wt[i * n + j] * x[j];
    out[i] = s;
  }
  return out;
}

function rmsnormVec(x: Float64Array, weight: Float32Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => weight[i] * v * inv);
}
