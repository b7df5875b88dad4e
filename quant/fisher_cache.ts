/**
 * The Fisher cache: {@linkcode cachedFisher} computes quant/fisher.ts's
 * {@linkcode fisherInformation} once per (checkpoint, calibration windows,
 * code version) and keeps it in a small binary file, so that sweeps and
 * re-runs read it back.
 *
 * File: 8 bytes "SQBFISH1", uint32 LE header length H, H bytes of JSON
 * (format, version, key, fields, layout, payload sha256, windows, seconds,
 * meanLoss), zero padding to a multiple of 4, then the float32 LE payload in
 * {@linkcode fisherLayout} order. A file that is corrupt or does not match is
 * never used.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import type { LlamaConfig, LlamaWeights } from "../model/config.ts";
import { LINEAR_NAMES, linearShape } from "../model/config.ts";
import {
  checkFisherWindows,
  FISHER_CODE_VERSION,
  fisherInformation,
  fisherLayout,
  type FisherOptions,
  type FisherResult,
  unflattenFisher,
} from "./fisher.ts";

const CACHE_MAGIC = "SQBFISH1"; // 8 ASCII bytes
const CACHE_FORMAT = "squeezebench-fisher";

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
 * import { cachedFisher } from "./fisher_cache.ts";
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
  checkFisherWindows(c, windows);
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
    fisher: unflattenFisher(c, flat),
    windows: header.windows,
    seconds: header.seconds,
    meanLoss: header.meanLoss,
  };
}
