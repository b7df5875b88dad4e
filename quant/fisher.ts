/**
 * SqueezeLLM's sensitivity: the diagonal of the empirical Fisher information
 * of every linear weight, F = Σ_windows g ⊙ g, where g is the gradient of one
 * calibration window's language-model loss (batch size 1).
 *
 * This follows kssteven418/SqueezeLLM-gradients `run.py` (the official
 * gradient code): for each of `num_examples` = 100 windows of 512 tokens
 * (C4 train, `random.seed(0)`), `loss = model(input_ids=x, labels=x).loss`
 * (mean next-token cross-entropy of that window), `loss.backward()`, then
 * `grads += grad ** 2` and `zero_grad()`. The squares are SUMMED over
 * windows, not averaged (the scale does not matter to the weighted k-means
 * that consumes F, but the numbers match the official files up to it). The
 * official code runs the model in bfloat16; here everything is float32 and
 * the sums are float64.
 *
 * Windows run on worker threads (model/pool.ts, `fisher_worker.ts`), the
 * weights shared with them ({@linkcode sharedWeights}: one copy of the model
 * in memory, not one per worker). Each worker holds its activations and
 * gradients (model/backward.ts BackwardState) and one partial sum, 8 bytes
 * per linear weight; the caller one more (F). They
 * are cut into fixed chunks of {@linkcode FISHER_CHUNK} windows; each
 * chunk's partial sum starts from zero and the partials are added in chunk
 * order, so the result is bit-identical for any number of workers (0 = this
 * thread).
 *
 * quant/fisher_cache.ts keeps the result in a small binary file so that
 * sweeps compute it once (`cachedFisher`).
 *
 * @module
 */
import { BackwardState, lossAndGradients } from "../model/backward.ts";
import type { LinearName, LlamaConfig, LlamaWeights } from "../model/config.ts";
import { LINEAR_NAMES, linearShape } from "../model/config.ts";
import { type ProgressCallback, runTasks, type TaskHandler } from "../model/pool.ts";
import { DEFAULT_WORKERS } from "./spec.ts";

/** Windows per partial sum; fixed so that results do not depend on the worker count. */
export const FISHER_CHUNK = 4;

/**
 * Bumped whenever the numbers this file computes change; part of every cache
 * key. 2: the forward's SwiGLU in WebAssembly (model/forward.ts) moves the
 * activations the gradients are taken at in their last bits.
 */
export const FISHER_CODE_VERSION = 2;

/** Fisher information of every linear weight: [nLayers] of name → [out, in]. */
export type FisherLayers = Record<LinearName, Float32Array>[];

/** Options of {@linkcode fisherInformation}. */
export interface FisherOptions {
  /** Called after every finished window: (windows done, windows, "windows"). */
  onProgress?: ProgressCallback;
  /** Worker threads (0 = this thread). @default DEFAULT_WORKERS (the machine's cores) */
  workers?: number;
}

/** The result of {@linkcode fisherInformation}. */
export interface FisherResult {
  /** F = Σ_windows g² per layer and linear, float32, shaped like the weights. */
  fisher: FisherLayers;
  /** Windows summed. */
  windows: number;
  /** Seconds the pass took. */
  seconds: number;
  /** Mean of the windows' losses (nats), a sanity figure. */
  meanLoss: number;
}

/**
 * Where each (layer, linear) lives in one flat array of all linear weights:
 * layer-major, {@linkcode LINEAR_NAMES} order.
 */
export function fisherLayout(c: LlamaConfig): { offsets: number[][]; total: number } {
  let total = 0;
  const offsets: number[][] = [];
  for (let l = 0; l < c.nLayers; l++) {
    offsets.push(LINEAR_NAMES.map((name) => {
      const [o, i] = linearShape(c, name);
      const at = total;
      total += o * i;
      return at;
    }));
  }
  return { offsets, total };
}

/** A partial Fisher sum: Σ g² over some windows [total of {@linkcode fisherLayout}] and their losses. */
export interface FisherPartial {
  sum: Float64Array<ArrayBuffer>;
  losses: Float64Array<ArrayBuffer>;
}

/**
 * Σ g² over `windows`, in order, from zero: sum [total of
 * {@linkcode fisherLayout}] in float64, and each window's loss. The unit of
 * work of one worker; `first` is the index of windows[0] in the whole set
 * (for error messages).
 */
export function squaredGradientSum(
  weights: LlamaWeights,
  windows: Int32Array[],
  state: BackwardState,
  onWindow?: () => void,
  first = 0,
): FisherPartial {
  const c = weights.config;
  const { offsets, total } = fisherLayout(c);
  const sum = new Float64Array(total);
  const losses = new Float64Array(windows.length);
  windows.forEach((win, n) => {
    const { loss, grads } = lossAndGradients(weights, win, { state });
    if (!Number.isFinite(loss)) {
      throw new RangeError(
        `Fisher: calibration window ${first + n} has a non-finite loss (${loss})`,
      );
    }
    losses[n] = loss;
    for (let l = 0; l < c.nLayers; l++) {
      LINEAR_NAMES.forEach((name, k) => {
        const g = grads.layers[l][name], o = offsets[l][k];
        for (let i = 0; i < g.length; i++) sum[o + i] += g[i] * g[i];
      });
    }
    onWindow?.();
  });
  return { sum, losses };
}

/**
 * Throws a RangeError unless `windows` is a non-empty list of windows of
 * 2..max_seq_len tokens; returns the longest length.
 */
export function checkFisherWindows(c: LlamaConfig, windows: Int32Array[]): number {
  if (windows.length === 0) throw new RangeError("Fisher: no calibration windows were given");
  let maxT = 0;
  windows.forEach((w, i) => {
    if (w.length < 2 || w.length > c.maxSeqLen) {
      throw new RangeError(
        `Fisher: calibration window ${i} has ${w.length} tokens, expected 2..${c.maxSeqLen} (max_seq_len)`,
      );
    }
    maxT = Math.max(maxT, w.length);
  });
  return maxT;
}

/**
 * The diagonal Fisher information of every linear weight over `windows`:
 * F = Σ_windows (dLoss_window/dW)², one window per backward pass (batch size
 * 1), as kssteven418/SqueezeLLM-gradients computes it (summed, not averaged).
 *
 * @param weights the model
 * @param windows calibration windows of token ids (official: 100 × 512)
 * @param opts progress callback and worker threads (default 2)
 * @returns F per layer and linear, with the window count, seconds and mean loss
 *
 * @example
 * ```ts
 * import { randomWeights } from "../model/random.ts";
 * import { fisherInformation } from "./fisher.ts";
 * const w = randomWeights({ dim: 8, hiddenDim: 12, nLayers: 1, nHeads: 2, nKvHeads: 1,
 *   vocabSize: 10, maxSeqLen: 6, sharedClassifier: true, normEps: 1e-5, ropeTheta: 10000 }, 1);
 * const r = await fisherInformation(w, [Int32Array.of(1, 2, 3), Int32Array.of(4, 5, 6)], { workers: 0 });
 * r.fisher[0].wq; // Float32Array [8 * 8], every entry ≥ 0
 * ```
 */
export async function fisherInformation(
  weights: LlamaWeights,
  windows: Int32Array[],
  opts: FisherOptions = {},
): Promise<FisherResult> {
  const c = weights.config;
  const maxT = checkFisherWindows(c, windows);
  const workers = opts.workers ?? DEFAULT_WORKERS;
  if (!Number.isInteger(workers) || workers < 0) {
    throw new RangeError(`Fisher: workers must be an integer ≥ 0, got ${workers}`);
  }
  const t0 = performance.now();
  const { total } = fisherLayout(c);
  const F = new Float64Array(total);
  const losses = new Float64Array(windows.length);
  let done = 0;
  await runTasks({
    name: "Fisher",
    worker: new URL("./fisher_worker.ts", import.meta.url),
    handler: fisherTasks,
    workers,
    // On workers the weights travel in shared memory: one copy of the model, not one per worker.
    init: { weights: workers > 0 ? sharedWeights(weights) : weights, maxT },
    tasks: Math.ceil(windows.length / FISHER_CHUNK),
    // Copies, so that views of a long token stream do not clone the whole stream.
    task: (k) => ({
      first: k * FISHER_CHUNK,
      windows: windows.slice(k * FISHER_CHUNK, (k + 1) * FISHER_CHUNK).map((w) => w.slice()),
    }),
    // Partials arrive strictly in chunk order, whatever order they finish in.
    onResult: (k, part) => {
      for (let i = 0; i < total; i++) F[i] += part.sum[i];
      losses.set(part.losses, k * FISHER_CHUNK);
    },
    onTick: () => opts.onProgress?.(++done, windows.length, "windows"),
  });

  let lossSum = 0;
  for (const l of losses) lossSum += l;
  return {
    fisher: unflattenFisher(c, Float32Array.from(F)),
    windows: windows.length,
    seconds: (performance.now() - t0) / 1000,
    meanLoss: lossSum / windows.length,
  };
}

/**
 * A copy of `w` whose arrays live in SharedArrayBuffers, so that posting it
 * to workers shares the memory instead of cloning the model once per
 * worker (arrays that are the same object, e.g. a shared classifier, stay
 * one array).
 *
 * @param w the model
 * @returns the same weights in shared memory
 * @example
 * ```ts
 * const s = sharedWeights(w);
 * s.layers[0].wq.buffer instanceof SharedArrayBuffer; // true
 * ```
 */
export function sharedWeights(w: LlamaWeights): LlamaWeights {
  const done = new Map<Float32Array, Float32Array>();
  const share = (a: Float32Array): Float32Array => {
    let b = done.get(a);
    if (!b) {
      b = new Float32Array(new SharedArrayBuffer(a.byteLength));
      b.set(a);
      done.set(a, b);
    }
    return b;
  };
  const layers = w.layers.map((lw) => {
    const out = { ...lw };
    for (const key of Object.keys(lw) as (keyof typeof lw)[]) out[key] = share(lw[key]);
    return out;
  });
  return {
    ...w,
    tokenEmbedding: share(w.tokenEmbedding),
    layers,
    finalNorm: share(w.finalNorm),
    classifier: share(w.classifier),
  };
}

/** Views of a flat [total] array ({@linkcode fisherLayout} order) as per-layer, per-linear tensors. */
export function unflattenFisher(c: LlamaConfig, flat: Float32Array): FisherLayers {
  const { offsets } = fisherLayout(c);
  return offsets.map((offs) => {
    const rec = {} as Record<LinearName, Float32Array>;
    LINEAR_NAMES.forEach((name, k) => {
      const [o, i] = linearShape(c, name);
      rec[name] = flat.subarray(offs[k], offs[k] + o * i);
    });
    return rec;
  });
}

/** What a Fisher worker holds: the model and the longest window (for its buffers). */
export interface FisherInit {
  weights: LlamaWeights;
  maxT: number;
}

/** One chunk of windows; `first` is the index of windows[0] in the whole set. */
export interface FisherTask {
  first: number;
  windows: Int32Array[];
}

/** The Fisher pass as pool tasks: a chunk of windows → its partial Σ g² (transferred back). */
export const fisherTasks: TaskHandler<FisherInit, FisherTask, FisherPartial> = {
  setup({ weights, maxT }) {
    const state = new BackwardState(weights.config, maxT);
    return (t, tick) => squaredGradientSum(weights, t.windows, state, tick, t.first);
  },
  transfer: (p) => [p.sum.buffer, p.losses.buffer],
};
