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
 * Windows run on worker threads. They are cut into fixed chunks of
 * {@linkcode FISHER_CHUNK} windows; each chunk's partial sum starts from zero
 * and the partials are added in chunk order, so the result is bit-identical
 * for any number of workers (0 = this thread).
 *
 * {@linkcode cachedFisher} keeps the result in a small binary file so that
 * sweeps compute it once.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { BackwardState, lossAndGradients } from "../model/backward.ts";
import type { LinearName, LlamaConfig, LlamaWeights } from "../model/config.ts";
import { LINEAR_NAMES, linearShape } from "../model/config.ts";

/** The official defaults (SqueezeLLM-gradients): 100 windows of 512 tokens, seed 0. */
export const FISHER_DEFAULTS = { nsamples: 100, seqlen: 512, seed: 0 } as const;

/** Windows per partial sum; fixed so that results do not depend on the worker count. */
export const FISHER_CHUNK = 4;

/** Bumped whenever the numbers this file computes change; part of every cache key. */
export const FISHER_CODE_VERSION = 1;

const CACHE_MAGIC = "SQBFISH1"; // 8 ASCII bytes
const CACHE_FORMAT = "squeezebench-fisher";

/** Fisher information of every linear weight: [nLayers] of name → [out, in]. */
export type FisherLayers = Record<LinearName, Float32Array>[];

/** Options of {@linkcode fisherInformation}. */
export interface FisherOptions {
  /** Called after every finished window with the count done so far. */
  onProgress?: (done: number, total: number) => void;
  /** Worker threads (0 = this thread). @default 2 */
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

/**
 * Σ g² over `windows`, in order, from zero: sum [total of
 * {@linkcode fisherLayout}] in float64, and each window's loss. The unit of
 * work of one worker.
 */
export function squaredGradientSum(
  weights: LlamaWeights,
  windows: Int32Array[],
  state: BackwardState,
  onWindow?: () => void,
): { sum: Float64Array<ArrayBuffer>; losses: Float64Array<ArrayBuffer> } {
  const c = weights.config;
  const { offsets, total } = fisherLayout(c);
  const sum = new Float64Array(total);
  const losses = new Float64Array(windows.length);
  windows.forEach((win, n) => {
    const { loss, grads } = lossAndGradients(weights, win, { state });
    if (!Number.isFinite(loss)) {
      throw new RangeError(`Fisher: calibration window ${n} has a non-finite loss (${loss})`);
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

function checkWindows(c: LlamaConfig, windows: Int32Array[]): number {
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
  const maxT = checkWindows(c, windows);
  const workers = opts.workers ?? 2;
  if (!Number.isInteger(workers) || workers < 0) {
    throw new RangeError(`Fisher: workers must be an integer ≥ 0, got ${workers}`);
  }
  const t0 = performance.now();
  const nChunks = Math.ceil(windows.length / FISHER_CHUNK);
  const chunk = (k: number) => windows.slice(k * FISHER_CHUNK, (k + 1) * FISHER_CHUNK);
  const { total } = fisherLayout(c);
  const F = new Float64Array(total);
  const losses = new Float64Array(windows.length);
  // Partials are merged strictly in chunk order, whatever order they finish in.
  const pending = new Map<number, { sum: Float64Array; losses: Float64Array }>();
  let merged = 0;
  const merge = (k: number, part: { sum: Float64Array; losses: Float64Array }) => {
    pending.set(k, part);
    for (let p = pending.get(merged); p; p = pending.get(merged)) {
      pending.delete(merged);
      for (let i = 0; i < total; i++) F[i] += p.sum[i];
      losses.set(p.losses, merged * FISHER_CHUNK);
      merged++;
    }
  };
  let done = 0;
  const progress = () => opts.onProgress?.(++done, windows.length);

  if (workers === 0) {
    const state = new BackwardState(c, maxT);
    for (let k = 0; k < nChunks; k++) {
      merge(k, squaredGradientSum(weights, chunk(k), state, progress));
    }
  } else {
    await runOnWorkers(weights, maxT, nChunks, Math.min(workers, nChunks), chunk, merge, progress);
  }

  let lossSum = 0;
  for (const l of losses) lossSum += l;
  return {
    fisher: unflatten(c, Float32Array.from(F)),
    windows: windows.length,
    seconds: (performance.now() - t0) / 1000,
    meanLoss: lossSum / windows.length,
  };
}

/** Views of a flat [total] array as per-layer, per-linear tensors. */
function unflatten(c: LlamaConfig, flat: Float32Array): FisherLayers {
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

async function runOnWorkers(
  weights: LlamaWeights,
  maxT: number,
  nChunks: number,
  nWorkers: number,
  chunk: (k: number) => Int32Array[],
  merge: (k: number, part: { sum: Float64Array; losses: Float64Array }) => void,
  progress: () => void,
): Promise<void> {
  const pool = Array.from(
    { length: nWorkers },
    () => new Worker(new URL("./fisher_worker.ts", import.meta.url), { type: "module" }),
  );
  let next = 0;
  try {
    await Promise.all(pool.map((worker) =>
      new Promise<void>((resolve, reject) => {
        const feed = () => {
          if (next >= nChunks) return resolve();
          const k = next++;
          // Copies, so that views of a long token stream do not clone the whole stream.
          worker.postMessage({ type: "chunk", k, windows: chunk(k).map((w) => w.slice()) });
        };
        worker.onmessage = (e: MessageEvent) => {
          const m = e.data;
          if (m.type === "error") return reject(new Error(`Fisher worker: ${m.message}`));
          if (m.type === "ready") return feed();
          if (m.type === "window") return progress();
          merge(m.k, { sum: m.sum, losses: m.losses });
          feed();
        };
        worker.onerror = (e) => {
          e.preventDefault();
          reject(new Error(`Fisher worker failed: ${e.message}`));
        };
        worker.postMessage({ type: "init", weights, maxT });
      })
    ));
  } finally {
    for (const w of pool) w.terminate();
  }
}

// ---------------------------------------------------------------------------
// Cache

/** Options of {@linkcode cachedFisher}. */
export interface CachedFisherOptions extends FisherOptions {
  /** Folder of the cache files (created when missing). */
  cacheDir: string;
  /**
   * Identity of the checkpoint and calibration data, e.g.
   * `${checkpointSha256}|c4; 100 windows of 512, seed 0`.
   * @default "weights:" + {@linkcode weightsSha256}(weights)
   */
  key?: string;
  /** Where warnings go (a corrupt cache file). @default console.warn */
  warn?: (message: string) => void;
}

/** The result of {@linkcode cachedFisher}. */
export interface CachedFisherResult extends FisherResult {
  /** True when read from the cache; `seconds` is then the original computation's. */
  cached: boolean;
  /** The cache key (sha256 hex). */
  cacheKey: string;
  /** The cache file. */
  path: string;
}

/** What a Fisher cache key is made of. */
export interface FisherKeyFields {
  /** Checkpoint and calibration identity (the caller's key). */
  key: string;
  nsamples: number;
  seqlen: number;
  /** sha256 of the windows' token ids (int32 little-endian, in order). */
  windowsSha256: string;
  codeVersion: number;
}

/** A Fisher cache file that cannot be used; the message names the file. */
export class FisherCacheError extends Error {
  override name = "FisherCacheError";
}

/** sha256 hex of the config and every tensor of `weights` (when no checkpoint hash is at hand). */
export function weightsSha256(weights: LlamaWeights): string {
  const h = createHash("sha256");
  const c = weights.config;
  h.update(JSON.stringify(c));
  const add = (a: Float32Array) => h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  add(weights.tokenEmbedding);
  for (const lw of weights.layers) {
    add(lw.attnNorm);
    for (const name of LINEAR_NAMES) add(lw[name]);
    add(lw.ffnNorm);
  }
  add(weights.finalNorm);
  if (!c.sharedClassifier) add(weights.classifier);
  return h.digest("hex");
}

/** sha256 hex of the windows' token ids (each as int32 little-endian, in order). */
export function windowsSha256(windows: Int32Array[]): string {
  const h = createHash("sha256");
  for (const w of windows) {
    const le = new Uint8Array(w.length * 4);
    const view = new DataView(le.buffer);
    for (let i = 0; i < w.length; i++) view.setInt32(4 * i, w[i], true);
    h.update(le);
  }
  return h.digest("hex");
}

/** The cache key of `fields`: sha256 hex of their canonical JSON. */
export function fisherCacheKey(fields: FisherKeyFields): string {
  const { key, nsamples, seqlen, windowsSha256, codeVersion } = fields;
  return createHash("sha256")
    .update(JSON.stringify({ key, nsamples, seqlen, windowsSha256, codeVersion }))
    .digest("hex");
}

/**
 * {@linkcode fisherInformation}, computed once: the result is stored in
 * `cacheDir/fisher-<key>.bin` under a key of (the caller's checkpoint and
 * calibration identity, window count, window length, sha256 of the token
 * ids, {@linkcode FISHER_CODE_VERSION}). A cache file that is corrupt or does
 * not match is reported through `warn`, recomputed and rewritten; it is never
 * used.
 *
 * File: 8 bytes "SQBFISH1", uint32 LE header length H, H bytes of JSON
 * (format, version, key, fields, layout, payload sha256, windows, seconds,
 * meanLoss), zero padding to a multiple of 4, then the float32 LE payload in
 * {@linkcode fisherLayout} order.
 *
 * @param weights the model
 * @param windows calibration windows of token ids
 * @param opts cache folder, identity key, workers, progress, warnings
 * @returns the Fisher information and whether it came from the cache
 *
 * @example
 * ```ts
 * import { loadCheckpoint } from "../model/checkpoint.ts";
 * import { cachedFisher } from "./fisher.ts";
 * const weights = await loadCheckpoint("../shared/data/stories260K/stories260K.bin");
 * const windows = [Int32Array.from({ length: 512 }, (_, i) => (i * 7) % 512)];
 * const r = await cachedFisher(weights, windows, {
 *   cacheDir: "out/cache/fisher",
 *   key: "b0a507e7…|c4; 1 window of 512, seed 0", // checkpoint sha256 | calibration
 * });
 * r.cached; // true on the second run
 * ```
 */
export async function cachedFisher(
  weights: LlamaWeights,
  windows: Int32Array[],
  opts: CachedFisherOptions,
): Promise<CachedFisherResult> {
  const c = weights.config;
  checkWindows(c, windows);
  const warn = opts.warn ?? ((m: string) => console.warn(m));
  const fields: FisherKeyFields = {
    key: opts.key ?? `weights:${weightsSha256(weights)}`,
    nsamples: windows.length,
    seqlen: Math.max(...windows.map((w) => w.length)),
    windowsSha256: windowsSha256(windows),
    codeVersion: FISHER_CODE_VERSION,
  };
  const cacheKey = fisherCacheKey(fields);
  const path = join(opts.cacheDir, `fisher-${cacheKey}.bin`);

  let bytes: Uint8Array | undefined;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (bytes) {
    try {
      const hit = parseFisherCache(bytes, path, c, cacheKey);
      return { ...hit, cached: true, cacheKey, path };
    } catch (e) {
      if (!(e instanceof FisherCacheError)) throw e;
      warn(`${e.message}; recomputing the Fisher information`);
    }
  }

  const r = await fisherInformation(weights, windows, opts);
  await Deno.mkdir(opts.cacheDir, { recursive: true });
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.writeFile(tmp, serializeFisherCache(r, c, cacheKey, fields));
  await Deno.rename(tmp, path);
  return { ...r, cached: false, cacheKey, path };
}

interface CacheHeader {
  format: string;
  version: number;
  key: string;
  fields: FisherKeyFields;
  layout: { nLayers: number; names: string[]; shapes: [number, number][] };
  floats: number;
  payloadSha256: string;
  windows: number;
  seconds: number;
  meanLoss: number;
}

function layoutOf(c: LlamaConfig): CacheHeader["layout"] {
  return {
    nLayers: c.nLayers,
    names: [...LINEAR_NAMES],
    shapes: LINEAR_NAMES.map((n) => linearShape(c, n)),
  };
}

/** The bytes of a Fisher cache file (format in {@linkcode cachedFisher}). */
export function serializeFisherCache(
  r: FisherResult,
  c: LlamaConfig,
  key: string,
  fields: FisherKeyFields,
): Uint8Array {
  const { offsets, total } = fisherLayout(c);
  const payload = new Float32Array(total);
  r.fisher.forEach((rec, l) => LINEAR_NAMES.forEach((n, k) => payload.set(rec[n], offsets[l][k])));
  const payloadBytes = new Uint8Array(payload.buffer);
  const header: CacheHeader = {
    format: CACHE_FORMAT,
    version: 1,
    key,
    fields,
    layout: layoutOf(c),
    floats: total,
    payloadSha256: createHash("sha256").update(payloadBytes).digest("hex"),
    windows: r.windows,
    seconds: r.seconds,
    meanLoss: r.meanLoss,
  };
  const json = new TextEncoder().encode(JSON.stringify(header));
  const start = Math.ceil((12 + json.length) / 4) * 4;
  const out = new Uint8Array(start + payloadBytes.length);
  out.set(new TextEncoder().encode(CACHE_MAGIC), 0);
  new DataView(out.buffer).setUint32(8, json.length, true);
  out.set(json, 12);
  out.set(payloadBytes, start);
  return out;
}

/**
 * Reads a Fisher cache file, checking magic, header, key, layout against
 * `c`, length, payload checksum and that every value is finite and ≥ 0.
 * @throws {FisherCacheError} naming the file and what is wrong
 */
export function parseFisherCache(
  bytes: Uint8Array,
  path: string,
  c: LlamaConfig,
  expectedKey: string,
): FisherResult {
  const fail = (msg: string): never => {
    throw new FisherCacheError(`Fisher cache ${path} is unusable: ${msg}`);
  };
  if (bytes.length < 12) fail(`file has ${bytes.length} bytes, too short for a header (12)`);
  const magic = new TextDecoder().decode(bytes.subarray(0, 8));
  if (magic !== CACHE_MAGIC) fail(`magic is ${JSON.stringify(magic)}, expected "${CACHE_MAGIC}"`);
  const hlen = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(8, true);
  if (12 + hlen > bytes.length) fail(`header claims ${hlen} bytes, file has ${bytes.length}`);
  let header: CacheHeader;
  try {
    header = JSON.parse(
      new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(12, 12 + hlen)),
    );
  } catch (e) {
    return fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (header.format !== CACHE_FORMAT || header.version !== 1) {
    fail(`format ${header.format} version ${header.version}, expected ${CACHE_FORMAT} version 1`);
  }
  if (header.key !== expectedKey) fail(`key ${header.key} does not match ${expectedKey}`);
  if (JSON.stringify(header.layout) !== JSON.stringify(layoutOf(c))) {
    fail(`layout ${JSON.stringify(header.layout)} does not match the model's`);
  }
  const { total } = fisherLayout(c);
  const start = Math.ceil((12 + hlen) / 4) * 4;
  if (header.floats !== total || bytes.length !== start + 4 * total) {
    fail(`expected ${start + 4 * total} bytes (${total} floats), file has ${bytes.length}`);
  }
  const flat = new Float32Array(total);
  const payloadBytes = new Uint8Array(flat.buffer);
  payloadBytes.set(bytes.subarray(start));
  const sha = createHash("sha256").update(payloadBytes).digest("hex");
  if (sha !== header.payloadSha256) fail(`payload sha256 ${sha} does not match the header's`);
  for (let i = 0; i < total; i++) {
    if (!(flat[i] >= 0) || flat[i] === Infinity) {
      fail(`value ${flat[i]} at ${i} is not a Fisher value`);
    }
  }
  return {
    fisher: unflatten(c, flat),
    windows: header.windows,
    seconds: header.seconds,
    meanLoss: header.meanLoss,
  };
}

// ---------------------------------------------------------------------------
// Benchmark

/** Options of {@linkcode benchFisher}. */
export interface BenchFisherOptions {
  /** Fewer windows (CI). */
  small?: boolean;
  /** Folder with stories260K/ and tinystories/. @default the shared data beside the repo */
  dataDir?: string;
  /** Worker threads of the parallel measurement. @default 2 */
  workers?: number;
}

/**
 * Windows per second of the Fisher pass on stories260K, 512-token windows of
 * TinyStories text, on this thread and on `workers` threads.
 */
export async function benchFisher(opts: BenchFisherOptions = {}): Promise<{
  model: string;
  seqlen: number;
  windows1Thread: number;
  windowsPerSecond1Thread: number;
  workers: number;
  windowsWorkers: number;
  windowsPerSecondWorkers: number;
}> {
  const { loadCheckpoint } = await import("../model/checkpoint.ts");
  const { loadTokenizer } = await import("../model/tokenizer.ts");
  const dir = opts.dataDir ?? fileURLToPath(new URL("../../shared/data/", import.meta.url));
  const weights = await loadCheckpoint(join(dir, "stories260K/stories260K.bin"));
  const tok = await loadTokenizer(join(dir, "stories260K/tok512.model"), {
    vocabSize: weights.config.vocabSize,
  });
  const seqlen = weights.config.maxSeqLen;
  const n1 = opts.small ? 2 : 8, nW = opts.small ? 4 : 24;
  const textPath = join(dir, "tinystories/tinystories-valid-head.txt");
  const text = (await Deno.readTextFile(textPath)).slice(0, (n1 + nW + 1) * seqlen * 4);
  const tokens = tok.encodeWithBos(text);
  const count = Math.floor(tokens.length / seqlen);
  if (count < n1 + nW) {
    throw new RangeError(
      `benchFisher: ${textPath} gave ${count} windows of ${seqlen}, need ${n1 + nW}`,
    );
  }
  const windows = Array.from(
    { length: count },
    (_, i) => tokens.slice(i * seqlen, (i + 1) * seqlen),
  );
  await fisherInformation(weights, windows.slice(0, 1), { workers: 0 }); // warm-up
  const one = await fisherInformation(weights, windows.slice(0, n1), { workers: 0 });
  const workers = opts.workers ?? 2;
  const par = await fisherInformation(weights, windows.slice(n1, n1 + nW), { workers });
  const r = {
    model: "stories260K",
    seqlen,
    windows1Thread: n1,
    windowsPerSecond1Thread: n1 / one.seconds,
    workers,
    windowsWorkers: nW,
    windowsPerSecondWorkers: nW / par.seconds,
  };
  console.log(`Fisher pass (forward + backward), stories260K, ${seqlen}-token TinyStories windows`);
  console.log(
    `  1 thread:          ${r.windowsPerSecond1Thread.toFixed(2)} windows/s (${n1} windows)`,
  );
  console.log(
    `  ${workers} worker threads:  ${r.windowsPerSecondWorkers.toFixed(2)} windows/s ` +
      `(${nW} windows, incl. start-up)`,
  );
  return r;
}
