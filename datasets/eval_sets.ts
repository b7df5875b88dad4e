/**
 * Evaluation token streams under GPTQ's protocol (IST-DASLab/gptq
 * datautils.py, `*_eval` in llama.py): the text is tokenized once with one
 * BOS (the HF LLaMA tokenizer adds BOS once to the joined text) and
 * perplexity is taken over consecutive, non-overlapping windows of `seqlen`.
 *
 * - `wikitext2`: `"\n\n".join(test rows)`, 4,358 rows, 1,294,336 characters.
 * - `c4`: `random.seed(0)`, 256 windows of `seqlen` drawn from validation
 *   documents (see {@linkcode sampleDocumentWindows}), concatenated.
 *   Deliberate deviation: with the 2,000-document proxy file
 *   `c4/c4-validation-2k.json.gz` the candidate pool is documents 0..1,099
 *   only (`len(docs)` = 1,100 in the randint), because documents
 *   1,100..1,999 are the calibration set; with the real shard
 *   `c4/en/c4-validation.00000-of-00008.json.gz` all its documents are the pool.
 * - `c4-new`: `" ".join(first 1,100 validation documents)`, truncated to
 *   256 × seqlen tokens.
 * - `tinystories`: the whole of `tinystories/tinystories-valid-head.txt` when
 *   it is in the data dir; else the public validation file
 *   `tinystories/TinyStories-valid.txt` (downloaded from
 *   huggingface.co/datasets/roneneldan/TinyStories), its `<|endoftext|>`
 *   separator lines removed and cut at the last line end within the head's
 *   794,375 bytes: the same amount of text from the same start (the head's
 *   exact cut is not confirmed, so results name the file used, and its sha256
 *   is part of their identity).
 *
 * @module
 */
import type { Tokenizer } from "../model/tokenizer.ts";
import { fileVersionKey, memoByTokenizer } from "./_tokens.ts";
import {
  C4_EVAL_DOCS,
  C4_EVAL_WINDOWS,
  C4_PROXY_FILE,
  C4_VALIDATION_FILES,
  openC4Documents,
  sampleDocumentWindows,
} from "./c4.ts";
import { findDataFile } from "./datadir.ts";
import { type DownloadProgress, type EnvLookup, sha256File } from "./hub.ts";
import { PyRandom } from "./pyrandom.ts";
import { readWikitextRows, WIKITEXT2_TEST_FILES, wikitextJoin } from "./wikitext2.ts";

/** The evaluation sets. */
export const EVAL_SETS = ["wikitext2", "c4", "c4-new", "tinystories"] as const;
/** One of {@linkcode EVAL_SETS}. */
export type EvalSetName = typeof EVAL_SETS[number];

/** TinyStories evaluation text (relative to the data dir). */
export const TINYSTORIES_VALID_FILE = "tinystories/tinystories-valid-head.txt";
/** The public TinyStories validation file (relative to the data dir; downloadable). */
export const TINYSTORIES_PUBLIC_VALID_FILE = "tinystories/TinyStories-valid.txt";
/** The files the tinystories set reads, in order of preference (the first that exists). */
export const TINYSTORIES_VALID_FILES: readonly string[] = [
  TINYSTORIES_VALID_FILE,
  TINYSTORIES_PUBLIC_VALID_FILE,
];
/** Bytes of the local head file: how much of the public file the set takes. */
export const TINYSTORIES_HEAD_BYTES = 794_375;

/** A tokenized evaluation set. */
export interface EvalSet {
  /** Which set. */
  name: EvalSetName;
  /** `[ntokens]` the whole token stream; for c4 the 256 windows concatenated (256 × seqlen). */
  tokens: Int32Array;
  /** Window length the set was built for (c4 and c4-new depend on it). */
  seqlen: number;
  /** Human-readable description of the protocol and the data used. */
  protocol: string;
  /** Path of the data file. */
  file: string;
  /** sha256 (hex) of the data file. */
  fileSha256?: string;
}

/** Options of {@linkcode loadEvalSet}. */
export interface EvalSetOptions {
  /** The data dir (see {@linkcode resolveDataDir}). */
  dataDir: string;
  /** Tokenizer of the model. */
  tokenizer: Tokenizer;
  /** Window length. */
  seqlen: number;
  /** Never download. @default {false} */
  offline?: boolean;
  /** Download progress (the CLI draws it); `false` or absent for none. */
  progress?: DownloadProgress | false;
  /** Hub endpoint. @default {hubEndpoint()} */
  endpoint?: string;
  /** Environment lookup. @default {the process environment} */
  env?: EnvLookup;
  /**
   * Keep the token ids of wikitext2 and tinystories in `dir` (files
   * `tokens-<key>.bin`), keyed by the sha256 of the text file and of the
   * tokenizer file and by `version` (the caller's code version: a change of
   * the tokenizer code must change it), so later processes skip tokenizing.
   */
  tokenCache?: { dir: string; version: string };
}

/**
 * Loads, tokenizes and (for c4) samples an evaluation set.
 *
 * @param name which set
 * @param options data dir, tokenizer, window length, offline mode
 * @returns the token stream with its provenance
 * @throws {MissingDataError} when the data file is missing and cannot be downloaded
 * @throws {RangeError} for a bad seqlen or a set too short for one window
 * @example
 * ```ts
 * const tok = await loadTokenizer("../shared/data/stories260K/tok512.model");
 * const set = await loadEvalSet("wikitext2", { dataDir: "../shared/data", tokenizer: tok, seqlen: 512 });
 * set.tokens.length; // 815066
 * ```
 */
export async function loadEvalSet(name: EvalSetName, options: EvalSetOptions): Promise<EvalSet> {
  const { seqlen } = options;
  if (!Number.isInteger(seqlen) || seqlen < 2) {
    throw new RangeError(`seqlen: expected an integer ≥ 2, found ${seqlen}`);
  }
  let set: EvalSet;
  switch (name) {
    case "wikitext2":
      set = await wikitext2(options);
      break;
    case "c4":
      set = await c4(options);
      break;
    case "c4-new":
      set = await c4New(options);
      break;
    case "tinystories":
      set = await tinystories(options);
      break;
    default:
      throw new RangeError(
        `Unknown evaluation set "${name}"; expected one of ${EVAL_SETS.join(", ")}`,
      );
  }
  if (set.tokens.length < seqlen) {
    throw new RangeError(
      `${name}: ${set.tokens.length} tokens from ${set.file}, fewer than one window of ${seqlen}`,
    );
  }
  set.fileSha256 = await sha256File(set.file);
  return set;
}

async function wikitext2(o: EvalSetOptions): Promise<EvalSet> {
  const { relPath, path } = await findDataFile(
    o.dataDir,
    WIKITEXT2_TEST_FILES,
    "WikiText-2 test",
    o,
  );
  const key = `${await fileVersionKey(path)}\u0000joined rows`;
  const { ids, rows, chars } = await memoByTokenizer(
    o.tokenizer,
    key,
    () =>
      diskCached(o, path, "wikitext2 joined rows", async () => {
        const r = await readWikitextRows(path);
        const text = wikitextJoin(r);
        return { ids: o.tokenizer.encodeWithBos(text), rows: r.length, chars: text.length };
      }),
  );
  return {
    name: "wikitext2",
    tokens: ids.slice(),
    seqlen: o.seqlen,
    protocol: `GPTQ wikitext2: "\\n\\n".join(${rows} test rows of ${relPath}) = ${chars} chars, ` +
      `BOS + encode once, consecutive windows of ${o.seqlen}`,
    file: path,
  };
}

async function c4(o: EvalSetOptions): Promise<EvalSet> {
  const { relPath, path } = await findDataFile(o.dataDir, C4_VALIDATION_FILES, "C4 validation", o);
  using docs = await openC4Documents(path, o.tokenizer);
  const isProxy = relPath === C4_PROXY_FILE;
  const poolSize = isProxy ? Math.min(C4_EVAL_DOCS, docs.length) : docs.length;
  const { windows } = await sampleDocumentWindows(new PyRandom(0), {
    count: C4_EVAL_WINDOWS,
    seqlen: o.seqlen,
    poolSize,
    tokens: docs.tokens,
  });
  const tokens = new Int32Array(C4_EVAL_WINDOWS * o.seqlen);
  windows.forEach((w, i) => tokens.set(w, i * o.seqlen));
  const pool = isProxy
    ? `docs 0..${poolSize - 1} of the ${docs.length}-document proxy ${relPath} ` +
      `(deviation: docs ${poolSize}.. are the calibration set)`
    : `all ${docs.length} docs of ${relPath}`;
  return {
    name: "c4",
    tokens,
    seqlen: o.seqlen,
    protocol: `GPTQ c4: random.seed(0), ${C4_EVAL_WINDOWS} windows of ${o.seqlen} from ${pool}; ` +
      `each doc BOS + encode, redrawn until ≥ ${o.seqlen} tokens (${o.seqlen} exactly is skipped)`,
    file: path,
  };
}

async function c4New(o: EvalSetOptions): Promise<EvalSet> {
  const { relPath, path } = await findDataFile(o.dataDir, C4_VALIDATION_FILES, "C4 validation", o);
  using docs = await openC4Documents(path, o.tokenizer);
  const n = Math.min(C4_EVAL_DOCS, docs.length);
  const ids = await docs.joinedTokens(n);
  const tokens = ids.slice(0, C4_EVAL_WINDOWS * o.seqlen);
  return {
    name: "c4-new",
    tokens,
    seqlen: o.seqlen,
    protocol: `GPTQ c4-new: " ".join(docs 0..${n - 1} of ${relPath}), BOS + encode once, ` +
      `first ${C4_EVAL_WINDOWS} × ${o.seqlen} tokens (${tokens.length}), consecutive windows`,
    file: path,
  };
}

async function tinystories(o: EvalSetOptions): Promise<EvalSet> {
  const { relPath, path } = await findDataFile(
    o.dataDir,
    TINYSTORIES_VALID_FILES,
    "TinyStories validation",
    o,
  );
  const isHead = relPath === TINYSTORIES_VALID_FILE;
  const key = `${await fileVersionKey(path)}\u0000${isHead ? "whole text" : "head of public"}`;
  const { ids, chars } = await memoByTokenizer(
    o.tokenizer,
    key,
    () =>
      diskCached(o, path, `tinystories ${isHead ? "whole text" : "head of public"}`, async () => {
        const raw = await Deno.readTextFile(path);
        const text = isHead ? raw : tinyStoriesHead(raw);
        return { ids: o.tokenizer.encodeWithBos(text), rows: 0, chars: text.length };
      }),
  );
  const what = isHead
    ? `whole text of ${TINYSTORIES_VALID_FILE}`
    : `${relPath} without its <|endoftext|> lines, cut at the last line end within ` +
      `${TINYSTORIES_HEAD_BYTES} bytes`;
  return {
    name: "tinystories",
    tokens: ids.slice(),
    seqlen: o.seqlen,
    protocol: `tinystories: ${what} (${chars} chars), BOS + encode once, consecutive windows of ` +
      `${o.seqlen}`,
    file: path,
  };
}

/**
 * The evaluation text taken from the public TinyStories validation file:
 * `<|endoftext|>` separator lines removed, then the first
 * {@linkcode TINYSTORIES_HEAD_BYTES} bytes cut back to the last line end.
 *
 * @param text the file's content
 * @returns the text evaluated
 * @example
 * ```ts
 * tinyStoriesHead("One.\n<|endoftext|>\nTwo.\n"); // "One.\nTwo.\n"
 * ```
 */
export function tinyStoriesHead(text: string): string {
  const joined = text.split("\n").filter((l) => l.trim() !== "<|endoftext|>").join("\n");
  const bytes = new TextEncoder().encode(joined);
  if (bytes.length <= TINYSTORIES_HEAD_BYTES) return joined;
  let end = TINYSTORIES_HEAD_BYTES;
  while (end > 0 && bytes[end - 1] !== 0x0a) end--;
  return new TextDecoder().decode(bytes.subarray(0, end || TINYSTORIES_HEAD_BYTES));
}

/** Tokenized text with the counts its protocol text states. */
interface Encoded {
  ids: Int32Array;
  rows: number;
  chars: number;
}

/**
 * `encode()`, or its result read back from `options.tokenCache` (see
 * {@linkcode EvalSetOptions.tokenCache}). File: 8-byte magic "SQBTOK01",
 * uint32 LE rows, uint32 LE chars, then the ids as int32 LE; written to a
 * temporary file renamed into place. A file of the wrong size or magic is
 * ignored and rewritten.
 */
async function diskCached(
  o: EvalSetOptions,
  textFile: string,
  part: string,
  encode: () => Promise<Encoded>,
): Promise<Encoded> {
  const c = o.tokenCache;
  if (!c) return await encode();
  const key = await sha256Hex(JSON.stringify({
    version: c.version,
    part,
    text: await sha256File(textFile),
    tokenizer: await sha256File(o.tokenizer.source),
  }));
  const path = `${c.dir}/tokens-${key}.bin`;
  try {
    const b = await Deno.readFile(path);
    const magic = new TextDecoder().decode(b.subarray(0, 8));
    if (magic === "SQBTOK01" && b.length >= 16 && (b.length - 16) % 4 === 0) {
      const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
      const ids = new Int32Array((b.length - 16) / 4);
      for (let i = 0; i < ids.length; i++) ids[i] = v.getInt32(16 + 4 * i, true);
      return { ids, rows: v.getUint32(8, true), chars: v.getUint32(12, true) };
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const r = await encode();
  const b = new Uint8Array(16 + 4 * r.ids.length);
  b.set(new TextEncoder().encode("SQBTOK01"));
  const v = new DataView(b.buffer);
  v.setUint32(8, r.rows, true);
  v.setUint32(12, r.chars, true);
  for (let i = 0; i < r.ids.length; i++) v.setInt32(16 + 4 * i, r.ids[i], true);
  await Deno.mkdir(c.dir, { recursive: true });
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.writeFile(tmp, b);
  await Deno.rename(tmp, path);
  return r;
}

async function sha256Hex(text: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(d)].map((x) => x.toString(16).padStart(2, "0")).join("");
}
