/**
 * C4 and GPTQ's random-window rules (IST-DASLab/gptq datautils.py).
 *
 * `get_c4` draws a window as: repeat { i = randint(0, len(docs) - 1);
 * enc = tokenize(docs[i]) } until len(enc) ≥ seqlen; then
 * start = randint(0, len(enc) - seqlen - 1); window = enc[start : start + seqlen].
 * Evaluation uses `random.seed(0)` and 256 windows of the validation shard;
 * calibration uses `random.seed(seed)` and `nsamples` windows of the train
 * shard. The LLaMA tokenizer of HF transformers prepends BOS to every
 * document, so documents are tokenized as BOS + encode(text).
 *
 * One deviation: a document of exactly `seqlen` tokens passes GPTQ's `≥`
 * test and then crashes Python (`randint(0, -1)` raises ValueError). Here it
 * is skipped like a short document, so every run that GPTQ completes draws the
 * same windows, and runs that GPTQ cannot complete still finish.
 *
 * @module
 */
import type { Tokenizer } from "../model/tokenizer.ts";
import { encodeWithBosCached, fileVersionKey } from "./_tokens.ts";
import { JsonLinesTable } from "./duckdb.ts";
import type { PyRandom } from "./pyrandom.ts";

/** C4 validation files, in order of preference (relative to the data dir). */
export const C4_VALIDATION_FILES: readonly string[] = [
  "c4/en/c4-validation.00000-of-00008.json.gz",
  "c4/c4-validation-2k.json.gz",
];

/** The 2,000-document local proxy for the head of the validation shard. */
export const C4_PROXY_FILE = "c4/c4-validation-2k.json.gz";

/** The real C4 train shard GPTQ calibrates on. */
export const C4_TRAIN_FILE = "c4/en/c4-train.00000-of-01024.json.gz";

/** GPTQ's c4-new evaluates `valdata[:1100]`; the proxy's documents from here on are calibration data. */
export const C4_EVAL_DOCS = 1100;

/** Number of windows GPTQ evaluates on C4 (`for _ in range(256)`). */
export const C4_EVAL_WINDOWS = 256;

/** One window drawn from a document. */
export interface DocWindow {
  /** Document index in the file. */
  doc: number;
  /** Token offset of the window in BOS + encode(document). */
  start: number;
}

/** Options of {@linkcode sampleDocumentWindows}. */
export interface DocumentWindowOptions {
  /** Number of windows. */
  count: number;
  /** Tokens per window. */
  seqlen: number;
  /** First document of the candidate pool. @default {0} */
  poolStart?: number;
  /** Number of documents in the pool (`len(docs)` in the randint). */
  poolSize: number;
  /** BOS + encode(document) for a document index. */
  tokens: (doc: number) => Int32Array | Promise<Int32Array>;
}

/**
 * GPTQ's document-window rule (`get_c4`'s loops), drawing from `rng`.
 *
 * @param rng the generator, already seeded (`random.seed(...)`)
 * @param options count, seqlen, pool and tokenizer
 * @returns `windows` (`[count][seqlen]` token ids, views into the cached
 *   document tokens) and `picks` (document and offset of each)
 * @throws {RangeError} when no document of the pool has more than seqlen tokens
 * @example
 * ```ts
 * const { picks } = await sampleDocumentWindows(new PyRandom(0), {
 *   count: 256, seqlen: 512, poolSize: 1100, tokens: (i) => tok.encodeWithBos(docs[i]) });
 * ```
 */
export async function sampleDocumentWindows(
  rng: PyRandom,
  options: DocumentWindowOptions,
): Promise<{ windows: Int32Array[]; picks: DocWindow[] }> {
  const { count, seqlen, poolSize } = options;
  const poolStart = options.poolStart ?? 0;
  if (!Number.isInteger(seqlen) || seqlen < 1) {
    throw new RangeError(`seqlen: expected a positive integer, found ${seqlen}`);
  }
  if (!Number.isInteger(poolSize) || poolSize < 1) {
    throw new RangeError(`poolSize: expected a positive integer, found ${poolSize}`);
  }
  const tooShort = new Set<number>();
  const windows: Int32Array[] = [];
  const picks: DocWindow[] = [];
  for (let n = 0; n < count; n++) {
    let doc: number, enc: Int32Array;
    for (;;) {
      doc = poolStart + rng.randint(0, poolSize - 1);
      enc = await options.tokens(doc);
      // GPTQ: `if len >= seqlen: break`; == seqlen would crash it (see module doc).
      if (enc.length > seqlen) break;
      tooShort.add(doc);
      if (tooShort.size === poolSize) {
        throw new RangeError(
          `No document among ${poolSize} (from ${poolStart}) has more than seqlen = ${seqlen} tokens`,
        );
      }
    }
    const start = rng.randint(0, enc.length - seqlen - 1);
    windows.push(enc.subarray(start, start + seqlen));
    picks.push({ doc, start });
  }
  return { windows, picks };
}

/**
 * GPTQ's stream-window rule (`get_wikitext2`'s train loader): `count` times
 * `start = randint(0, numel - seqlen - 1)`; window = stream[start : start + seqlen].
 *
 * @param rng the generator, already seeded
 * @param stream `[numel]` token ids of the whole text
 * @param count number of windows
 * @param seqlen tokens per window
 * @returns `windows` (`[count][seqlen]` views into `stream`) and their `starts`
 * @throws {RangeError} when the stream has at most seqlen tokens
 */
export function sampleStreamWindows(
  rng: PyRandom,
  stream: Int32Array,
  count: number,
  seqlen: number,
): { windows: Int32Array[]; starts: number[] } {
  if (stream.length <= seqlen) {
    throw new RangeError(
      `The token stream has ${stream.length} tokens; windows of ${seqlen} need more than ${seqlen}`,
    );
  }
  const windows: Int32Array[] = [];
  const starts: number[] = [];
  for (let n = 0; n < count; n++) {
    const start = rng.randint(0, stream.length - seqlen - 1);
    windows.push(stream.subarray(start, start + seqlen));
    starts.push(start);
  }
  return { windows, starts };
}

/** The documents of a C4 JSON-lines file, tokenized on demand (and memoized per tokenizer). */
export interface C4Documents extends Disposable {
  /** File path. */
  readonly path: string;
  /** Number of documents. */
  readonly length: number;
  /** BOS + encode(text of document `i`); shared, do not modify. */
  tokens(i: number): Promise<Int32Array>;
  /** Texts of documents `start .. end-1`. */
  texts(start: number, end: number): Promise<string[]>;
  /** BOS + encode(" ".join(texts of documents 0 .. n-1)) (GPTQ's c4-new); shared. */
  joinedTokens(n: number): Promise<Int32Array>;
}

/**
 * Opens a C4 file (`.json` or `.json.gz`, fields text/timestamp/url) for
 * window sampling. Dispose it (`using`) to release DuckDB.
 *
 * @param path the file
 * @param tokenizer tokenizer of the model
 * @returns the documents
 * @throws {DatasetFormatError} when the file is not JSON lines with a `text` field
 */
export async function openC4Documents(path: string, tokenizer: Tokenizer): Promise<C4Documents> {
  const version = await fileVersionKey(path);
  const table = await JsonLinesTable.open(path, "text");
  return {
    path,
    length: table.length,
    tokens: (i) => encodeWithBosCached(tokenizer, `${version}\u0000doc ${i}`, () => table.get(i)),
    texts: (start, end) => table.slice(start, end),
    joinedTokens: (n) =>
      encodeWithBosCached(
        tokenizer,
        `${version}\u0000joined ${n}`,
        async () => (await table.slice(0, n)).join(" "),
      ),
    [Symbol.dispose]: () => table.close(),
  };
}
