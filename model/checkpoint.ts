/**
 * llama2.c checkpoint loader: the legacy (v0) format and the versioned
 * format (magic "ak42", version 1 = fp32).
 *
 * Legacy layout (karpathy/llama2.c export.py `legacy_export`, run.c
 * `memory_map_weights`): seven int32 (dim, hidden_dim, n_layers, n_heads,
 * n_kv_heads, vocab_size, max_seq_len; a negative vocab_size means a separate
 * classifier follows), then fp32 tensors: token embedding, attention norms,
 * wq, wk, wv, wo, ffn norms, w1, w2, w3, final norm, the two unused RoPE
 * tables freq_cis_real/imag [max_seq_len, head_size/2], and the classifier
 * when not shared.
 *
 * Version 1 layout (`version1_export`): uint32 magic 0x616b3432, int32
 * version, the same seven int32, uint8 shared_classifier, zero padding to 256
 * bytes, then fp32 tensors: attention norms, ffn norms, final norm, token
 * embedding, wq, wk, wv, wo, w1, w2, w3, and the classifier when not shared.
 *
 * Every linear weight is [out, in] row-major in both formats.
 *
 * @module
 */
import type { LayerWeights, LlamaConfig, LlamaWeights } from "./config.ts";
import { kvDim } from "./config.ts";

/** The magic number of versioned llama2.c checkpoints ("ak42" little-endian). */
export const LLAMA2C_MAGIC = 0x616b3432;
const V1_HEADER_BYTES = 256;
const LEGACY_HEADER_BYTES = 7 * 4;

/** A checkpoint file that cannot be read; the message names the file. */
export class CheckpointError extends Error {
  override name = "CheckpointError";
}

/** Reads a llama2.c checkpoint (legacy or version 1) from `path`. */
export async function loadCheckpoint(path: string): Promise<LlamaWeights> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CheckpointError(`Cannot read checkpoint ${path}: file not found`);
    }
    throw new CheckpointError(`Cannot read checkpoint ${path}: ${(e as Error).message}`);
  }
  return parseCheckpoint(bytes, path);
}

/** Parses checkpoint bytes; `path` is only used in error messages. */
export function parseCheckpoint(bytes: Uint8Array, path = "<memory>"): LlamaWeights {
  const fail = (msg: string): never => {
    throw new CheckpointError(`Cannot parse checkpoint ${path}: ${msg}`);
  };
  if (bytes.byteLength < LEGACY_HEADER_BYTES) {
    fail(`file has ${bytes.byteLength} bytes, too short for a header (${LEGACY_HEADER_BYTES})`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0, true);
  let headerBytes: number, ints: number[], shared: boolean, version: number;
  if (magic === LLAMA2C_MAGIC) {
    if (bytes.byteLength < V1_HEADER_BYTES) {
      fail(
        `file has ${bytes.byteLength} bytes, too short for a version header (${V1_HEADER_BYTES})`,
      );
    }
    version = view.getInt32(4, true);
    if (version !== 1) {
      fail(
        `version ${version} is not supported (only 1 = fp32; 2 = int8 Q8_0 exports must be ` +
          `re-exported in fp32 with llama2.c's export.py --version 1)`,
      );
    }
    ints = Array.from({ length: 7 }, (_, i) => view.getInt32(8 + 4 * i, true));
    shared = view.getUint8(36) === 1;
    headerBytes = V1_HEADER_BYTES;
  } else {
    version = 0;
    ints = Array.from({ length: 7 }, (_, i) => view.getInt32(4 * i, true));
    shared = ints[5] > 0;
    ints[5] = Math.abs(ints[5]);
    headerBytes = LEGACY_HEADER_BYTES;
  }
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, maxSeqLen] = ints;
  const names = [
    "dim",
    "hidden_dim",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "vocab_size",
    "max_seq_len",
  ];
  ints.forEach((v, i) => {
    if (!(v > 0) || v > 1 << 24) {
      fail(
        `header field ${
          names[i]
        } = ${v} must be a positive integer (is this a llama2.c checkpoint?)`,
      );
    }
  });
  if (dim % nHeads !== 0) fail(`dim ${dim} is not a multiple of n_heads ${nHeads}`);
  if (nKvHeads > nHeads || nHeads % nKvHeads !== 0) {
    fail(`n_heads ${nHeads} is not a multiple of n_kv_heads ${nKvHeads}`);
  }
  if ((dim / nHeads) % 2 !== 0) fail(`head size ${dim / nHeads} must be even for RoPE`);

  const config: LlamaConfig = {
    dim,
    hiddenDim,
    nLayers,
    nHeads,
    nKvHeads,
    vocabSize,
    maxSeqLen,
    sharedClassifier: shared,
    normEps: 1e-5,
    ropeTheta: 10000,
  };
  const kv = kvDim(config);
  const headSize = dim / nHeads;
  const L = nLayers;
  // Tensor sizes in floats, in file order.
  const sizes: Record<string, number> = {
    tokenEmbedding: vocabSize * dim,
    attnNorm: L * dim,
    wq: L * dim * dim,
    wk: L * kv * dim,
    wv: L * kv * dim,
    wo: L * dim * dim,
    ffnNorm: L * dim,
    w1: L * hiddenDim * dim,
    w2: L * dim * hiddenDim,
    w3: L * hiddenDim * dim,
    finalNorm: dim,
    freqCisReal: maxSeqLen * headSize / 2,
    freqCisImag: maxSeqLen * headSize / 2,
    classifier: shared ? 0 : vocabSize * dim,
  };
  const order = version === 0
    ? [
      "tokenEmbedding",
      "attnNorm",
      "wq",
      "wk",
      "wv",
      "wo",
      "ffnNorm",
      "w1",
      "w2",
      "w3",
      "finalNorm",
      "freqCisReal",
      "freqCisImag",
      "classifier",
    ]
    : [
      "attnNorm",
      "ffnNorm",
      "finalNorm",
      "tokenEmbedding",
      "wq",
      "wk",
      "wv",
      "wo",
      "w1",
      "w2",
      "w3",
      "classifier",
    ];
  const floats = order.reduce((s, k) => s + sizes[k], 0);
  const expected = headerBytes + 4 * floats;
  if (bytes.byteLength !== expected) {
    const what = bytes.byteLength < expected ? "truncated" : "has trailing bytes";
    fail(
      `header (dim ${dim}, hidden ${hiddenDim}, ${nLayers} layers, vocab ${vocabSize}, ` +
        `seq ${maxSeqLen}, ${
          shared ? "shared" : "separate"
        } classifier) needs ${expected} bytes, ` +
        `file has ${bytes.byteLength} (${what})`,
    );
  }
  // Copy once into an aligned buffer so every tensor is a Float32Array view.
  const all = new Float32Array(floats);
  new Uint8Array(all.buffer).set(bytes.subarray(headerBytes));
  const tensors: Record<string, Float32Array> = {};
  let off = 0;
  for (const k of order) {
    tensors[k] = all.subarray(off, off + sizes[k]);
    off += sizes[k];
  }
  for (const k of order) {
    const t = tensors[k];
    for (let i = 0; i < t.length; i++) {
      if (!Number.isFinite(t[i])) {
        fail(`tensor ${k} has a non-finite value (${t[i]}) at index ${i}`);
      }
    }
  }
  const per = (k: string, l: number) => {
    const n = sizes[k] / L;
    return tensors[k].subarray(l * n, (l + 1) * n);
  };
  const layers: LayerWeights[] = Array.from({ length: L }, (_, l) => ({
    attnNorm: per("attnNorm", l),
    wq: per("wq", l),
    wk: per("wk", l),
    wv: per("wv", l),
    wo: per("wo", l),
    ffnNorm: per("ffnNorm", l),
    w1: per("w1", l),
    w2: per("w2", l),
    w3: per("w3", l),
  }));
  return {
    config,
    tokenEmbedding: tensors.tokenEmbedding,
    layers,
    finalNorm: tensors.finalNorm,
    classifier: shared ? tensors.tokenEmbedding : tensors.classifier,
  };
}

/** Serializes weights in the legacy (v0) llama2.c format (tests, tiny random models). */
export function serializeLegacy(w: LlamaWeights): Uint8Array {
  const c = w.config;
  const header = new Int32Array([
    c.dim,
    c.hiddenDim,
    c.nLayers,
    c.nHeads,
    c.nKvHeads,
    c.sharedClassifier ? c.vocabSize : -c.vocabSize,
    c.maxSeqLen,
  ]);
  const hs = c.dim / c.nHeads;
  const cat = (k: keyof LayerWeights) => w.layers.map((l) => l[k]);
  const parts: ArrayBufferView[] = [
    header,
    w.tokenEmbedding,
    ...cat("attnNorm"),
    ...cat("wq"),
    ...cat("wk"),
    ...cat("wv"),
    ...cat("wo"),
    ...cat("ffnNorm"),
    ...cat("w1"),
    ...cat("w2"),
    ...cat("w3"),
    w.finalNorm,
    new Float32Array(c.maxSeqLen * hs / 2),
    new Float32Array(c.maxSeqLen * hs / 2),
    ...(c.sharedClassifier ? [] : [w.classifier]),
  ];
  return concatBytes(parts);
}

/** Serializes fp32 weights in the versioned llama2.c format, version 1. */
export function serializeV1(w: LlamaWeights): Uint8Array {
  const c = w.config;
  const header = new Uint8Array(V1_HEADER_BYTES);
  const hv = new DataView(header.buffer);
  hv.setUint32(0, LLAMA2C_MAGIC, true);
  hv.setInt32(4, 1, true);
  [c.dim, c.hiddenDim, c.nLayers, c.nHeads, c.nKvHeads, c.vocabSize, c.maxSeqLen]
    .forEach((v, i) => hv.setInt32(8 + 4 * i, v, true));
  hv.setUint8(36, c.sharedClassifier ? 1 : 0);
  const cat = (k: keyof LayerWeights) => w.layers.map((l) => l[k]);
  const parts: ArrayBufferView[] = [
    header,
    ...cat("attnNorm"),
    ...cat("ffnNorm"),
    w.finalNorm,
    w.tokenEmbedding,
    ...cat("wq"),
    ...cat("wk"),
    ...cat("wv"),
    ...cat("wo"),
    ...cat("w1"),
    ...cat("w2"),
    ...cat("w3"),
    ...(c.sharedClassifier ? [] : [w.classifier]),
  ];
  return concatBytes(parts);
}

function concatBytes(parts: ArrayBufferView[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.byteLength, 0));
  let off = 0;
  for (const p of parts) {
    out.set(new Uint8Array(p.buffer, p.byteOffset, p.byteLength), off);
    off += p.byteLength;
  }
  return out;
}
