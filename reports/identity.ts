/**
 * What a stored result *is*: its full resolved identity, and the key it is
 * stored and looked up under.
 *
 * A perplexity is determined by the model checkpoint, the quantization spec
 * with every default filled in, the calibration data the quantizer saw, the
 * evaluation tokens and window count, and the code that computed it. The key
 * of a result is sha256 of the canonical JSON (keys sorted, no whitespace) of
 * all of these ({@linkcode ResultIdentity}); the readable variant name
 * ("squeezellm.w3") is for people only and is never a key.
 *
 * Two further keys group results for the report: the config key (model +
 * quantization + calibration + code version: one table row) and the dataset
 * key (one table column: dataset, file, protocol, seqlen, windows evaluated).
 *
 * Code version. {@linkcode CODE_VERSION} is in the key and is bumped by hand
 * whenever a change alters any number a result could hold (quantizers,
 * calibration sampling, tokenization, the perplexity protocol). The git
 * commit is deliberately *not* in the key: a result must not be recomputed
 * because an unrelated commit landed. It is stored beside every result as
 * provenance (`git_commit`).
 *
 * Everything in the key can be computed before quantizing (the spec resolves
 * without running the quantizer, calibration windows and evaluation tokens
 * are cheap to load and hash), so a sweep skips stored work without
 * quantizing again.
 *
 * @module
 */
import type { CalibrationIdentity } from "../quant/methods.ts";

/**
 * Version of the numerics. Bump when any change alters a stored number
 * (quantizers, calibration sampling, tokenization, the perplexity protocol);
 * results of an older version are then never matched and are recomputed.
 */
export const CODE_VERSION = 4;
// 2: ABQ-LLM's attention in WebAssembly (quant/abq_attention.ts: another f32
//    summation order and exp; a few codes move), GPU prefill attention's
//    summation order (≈ 1e-7 relative), and the CLI's GPTQ on the fast solver
//    with fused multiply-adds (the same codes as the reference on stories260K
//    on this host; a code at a rounding boundary may differ elsewhere).
// 3: AWQ's calibration follows llm-awq's get_calib_dataset (128 texts of ≤ 512
//    tokens, concatenated, cut into blocks: AWQ's codes move); the CPU forward's
//    SwiGLU, log-sum-exp and head-size-8 attention in WebAssembly (≈ 2e-8 relative
//    on perplexity); ABQ-LLM's two-thread step and WASM exp (last bits); the GPU
//    RMSNorm's summation order (≈ 1e-7 on GPU perplexity)
// 4: W×A linears now integer-exact: with --abits < 16, uniform-weight models (RTN,
//    GPTQ, AWQ, SmoothQuant, ABQ-LLM) are evaluated with integer accumulation of
//    (q_x − z_x)(q_w − z_w), then s_w · s_x · acc in f32 (quant/wa_int.ts: the W×A
//    kernels' numbers), not fake quantization's f32 sums (≈ 1e-4..3e-3 relative)

/** Prefix of keys given to rows migrated from a store without identities; no new key has it. */
export const LEGACY_KEY_PREFIX = "legacy:";

/** The calibration data a quantizer saw (null in an identity: no calibration, e.g. RTN, fp32). */
export type { CalibrationIdentity };

/** The evaluation data of one result. */
export interface DatasetIdentity {
  /** Evaluation set name, e.g. "wikitext2". */
  name: string;
  /** sha256 (hex) of the data file. */
  fileSha256: string;
  /** The protocol text (paths in it are relative to the data dir). */
  protocol: string;
  /** Window length. */
  seqlen: number;
  /** Windows actually evaluated (after `--limit`, never more than the set holds). */
  windows: number;
  /** sha256 of the evaluated tokens, the first windows · seqlen ({@linkcode tokensSha256}). */
  tokensSha256: string;
}

/** Everything that determines one perplexity result. */
export interface ResultIdentity {
  /** {@linkcode CODE_VERSION} of the code that computed it. */
  codeVersion: number;
  /** The base checkpoint. */
  model: { sha256: string };
  /** The quantization spec with every default filled in (JSON-able); null for the fp32 model. */
  quant: object | null;
  /** The calibration data; null when the method uses none. */
  calibration: CalibrationIdentity | null;
  /**
   * SqueezeLLM's Fisher information read from a file (`--fisher DIR`, the
   * official gradient script's output) instead of computed from calibration
   * data: the file's sha256. Absent otherwise, so other keys are unchanged.
   */
  fisher?: { sha256: string };
  /** The evaluation data. */
  dataset: DatasetIdentity;
  /**
   * What computed the logits when it is not the CPU forward: "gpu-prefill"
   * (eval/gpu_perplexity.ts; equal to the CPU within 1e-4, not bit for bit).
   * Absent for the CPU, so the CPU's keys are unchanged.
   */
  evaluator?: string;
}

/** The keys of one result. */
export interface ResultKeys {
  /** sha256 of the whole identity: the result's key. */
  resultKey: string;
  /** sha256 of codeVersion + model + quant + calibration: one row of a report table. */
  configKey: string;
  /** sha256 of the dataset identity: one column of a report table. */
  datasetKey: string;
}

/**
 * Canonical JSON: object keys sorted at every depth, no whitespace,
 * `undefined` members left out. Non-finite numbers and values JSON cannot
 * hold are errors, so two equal identities always give the same text.
 *
 * @param value a JSON-able value
 * @returns its canonical JSON text
 * @example
 * ```ts
 * canonicalJson({ b: 1, a: [true, null] }); // '{"a":[true,null],"b":1}'
 * ```
 */
export function canonicalJson(value: unknown): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
    case "string":
      return JSON.stringify(value);
    case "number":
      if (!Number.isFinite(value)) throw new TypeError(`canonicalJson: non-finite number ${value}`);
      return JSON.stringify(value);
    case "object": {
      if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
      const entries = Object.entries(value as Record<string, unknown>)
        .filter(([, v]) => v !== undefined)
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
    }
    default:
      throw new TypeError(`canonicalJson: cannot encode a ${typeof value}`);
  }
}

/**
 * sha256 of a string (UTF-8) or bytes, as lowercase hex.
 * @param data the text or bytes
 */
export async function sha256Hex(data: string | Uint8Array): Promise<string> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * sha256 of token ids: the int32 little-endian bytes of the windows, one
 * after another.
 *
 * @param tokens one token stream or a list of windows
 * @returns lowercase hex
 */
export async function tokensSha256(tokens: Int32Array | Int32Array[]): Promise<string> {
  const parts = Array.isArray(tokens) ? tokens : [tokens];
  const bytes = new Uint8Array(parts.reduce((n, t) => n + t.length, 0) * 4);
  const view = new DataView(bytes.buffer);
  let o = 0;
  for (const t of parts) {
    for (let i = 0; i < t.length; i++, o += 4) view.setInt32(o, t[i], true);
  }
  return await sha256Hex(bytes);
}

/**
 * The identity of evaluating the first `windows` windows of a token stream.
 *
 * @param set name, data file sha256 and protocol of the evaluation set, and its tokens
 * @param seqlen window length
 * @param windows windows actually evaluated (already capped at what the stream holds)
 */
export async function datasetIdentity(
  set: { name: string; fileSha256: string; protocol: string; tokens: Int32Array },
  seqlen: number,
  windows: number,
): Promise<DatasetIdentity> {
  if (windows * seqlen > set.tokens.length) {
    throw new RangeError(
      `${set.name}: ${windows} windows of ${seqlen} need ${windows * seqlen} tokens, ` +
        `the set has ${set.tokens.length}`,
    );
  }
  return {
    name: set.name,
    fileSha256: set.fileSha256,
    protocol: set.protocol,
    seqlen,
    windows,
    tokensSha256: await tokensSha256(set.tokens.subarray(0, windows * seqlen)),
  };
}

/** The part of an identity that goes into keys: machine-dependent paths left out. */
function keyed(
  id: ResultIdentity,
): Omit<ResultIdentity, "calibration"> & { calibration: Omit<CalibrationIdentity, "file"> | null } {
  if (!id.calibration) return id;
  const { file: _path, ...calibration } = id.calibration;
  return { ...id, calibration };
}

/**
 * The result, config and dataset keys of an identity.
 *
 * @param id the full identity
 * @returns sha256 hex keys
 */
export async function resultKeys(id: ResultIdentity): Promise<ResultKeys> {
  const k = keyed(id);
  const [resultKey, configKey, datasetKey] = await Promise.all([
    sha256Hex(canonicalJson(k)),
    sha256Hex(canonicalJson({ ...k, dataset: undefined })),
    sha256Hex(canonicalJson(k.dataset)),
  ]);
  return { resultKey, configKey, datasetKey };
}
