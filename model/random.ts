/**
 * Seeded pseudo-random numbers and random LLaMA-shaped weights, for tests
 * and speed work. Same seed → same numbers on every machine.
 *
 * @module
 */
import type { LayerWeights, LlamaConfig, LlamaWeights } from "./config.ts";
import { kvDim } from "./config.ts";

/** A seeded generator of uniform numbers in [0, 1) (SplitMix32 → Mulberry32). */
export function mulberry32(seed: number): () => number {
  let a = (seed ^ 0x9e3779b9) >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Fills `out` with the 32-bit words of {@linkcode mulberry32}(seed), in
 * order: `out[i] / 2^32` is its (i+1)-th number. One loop with no call per
 * number, for filling large arrays (≈ 2.5× faster than calling the closure).
 *
 * @param out the words to fill
 * @param seed as mulberry32's
 * @returns out
 */
export function mulberry32Fill(out: Uint32Array, seed: number): Uint32Array {
  let a = (seed ^ 0x9e3779b9) >>> 0;
  for (let i = 0; i < out.length; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = t ^ (t >>> 14);
  }
  return out;
}

/** A seeded standard-normal generator (Box–Muller over {@linkcode mulberry32}). */
export function gaussian(seed: number): () => number {
  const u = mulberry32(seed);
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const s = spare;
      spare = undefined;
      return s;
    }
    const r = Math.sqrt(-2 * Math.log(1 - u()));
    const th = 2 * Math.PI * u();
    spare = r * Math.sin(th);
    return r * Math.cos(th);
  };
}

/** n seeded normal values scaled by `std`. */
export function randn(n: number, seed: number, std = 1): Float32Array {
  const g = gaussian(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = g() * std;
  return out;
}

/**
 * A tiny LLaMA config for tests: dim 16, hiddenDim 24, 2 layers, 4 query
 * heads over 2 key/value heads, vocabulary 20, 12 positions, tied classifier,
 * normEps 1e-5, ropeTheta 10000; `overrides` replace any of these.
 *
 * @param overrides fields that differ from the defaults above
 * @returns a fresh config
 * @example
 * ```ts
 * const w = randomWeights(tinyConfig({ nKvHeads: 4, sharedClassifier: false }), 1);
 * ```
 */
export function tinyConfig(overrides: Partial<LlamaConfig> = {}): LlamaConfig {
  return {
    dim: 16,
    hiddenDim: 24,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 2,
    vocabSize: 20,
    maxSeqLen: 12,
    sharedClassifier: true,
    normEps: 1e-5,
    ropeTheta: 10000,
    ...overrides,
  };
}

/**
 * `n` windows of `T` token ids drawn uniformly from 0..vocab−1 by
 * {@linkcode mulberry32}(seed): random calibration data for tests and benchmarks.
 *
 * @returns n arrays [T]
 */
export function randomWindows(n: number, T: number, vocab: number, seed: number): Int32Array[] {
  const u = mulberry32(seed);
  return Array.from(
    { length: n },
    () => Int32Array.from({ length: T }, () => Math.floor(u() * vocab)),
  );
}

/**
 * Random weights for `config`: linear weights ~ N(0, 1/in), norms ~ 1 ± 0.1,
 * embeddings ~ N(0, 1). Deterministic in `seed`.
 */
export function randomWeights(config: LlamaConfig, seed: number): LlamaWeights {
  const { dim, hiddenDim, vocabSize } = config;
  const kv = kvDim(config);
  let s = seed * 1000;
  const lin = (out: number, inp: number) => randn(out * inp, ++s, 1 / Math.sqrt(inp));
  const norm = () => randn(dim, ++s, 0.1).map((v) => 1 + v);
  const layers: LayerWeights[] = Array.from({ length: config.nLayers }, () => ({
    attnNorm: norm(),
    wq: lin(dim, dim),
    wk: lin(kv, dim),
    wv: lin(kv, dim),
    wo: lin(dim, dim),
    ffnNorm: norm(),
    w1: lin(hiddenDim, dim),
    w2: lin(dim, hiddenDim),
    w3: lin(hiddenDim, dim),
  }));
  const tokenEmbedding = randn(vocabSize * dim, ++s);
  return {
    config,
    tokenEmbedding,
    layers,
    finalNorm: norm(),
    classifier: config.sharedClassifier ? tokenEmbedding : lin(vocabSize, dim),
  };
}
