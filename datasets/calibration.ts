/**
 * Calibration windows like GPTQ's train loaders (IST-DASLab/gptq
 * datautils.py `get_loaders`): `random.seed(seed)`, then `nsamples` windows of
 * `seqlen` tokens.
 *
 * - `c4`: GPTQ's document rule ({@linkcode sampleDocumentWindows}) over the
 *   C4 train shard `c4/en/c4-train.00000-of-01024.json.gz` when it is in the
 *   data dir; else over documents 1,100..1,999 of the validation proxy
 *   `c4/c4-validation-2k.json.gz` (never the 1,100 evaluation documents:
 *   `i = 1100 + randint(0, 899)`); when neither is present, the train shard
 *   is downloaded (online).
 * - `wikitext2`: `"\n\n".join(train rows)` tokenized once (BOS + encode), then
 *   `i = randint(0, numel - seqlen - 1)` per window. Needs the train split.
 * - `tinystories`: the same stream rule over `tinystories/tinystories-train-sample.txt`.
 *
 * @module
 */
import type { Tokenizer } from "../model/tokenizer.ts";
import { fileVersionKey, memoByTokenizer } from "./_tokens.ts";
import {
  C4_EVAL_DOCS,
  C4_PROXY_FILE,
  C4_TRAIN_FILE,
  openC4Documents,
  sampleDocumentWindows,
  sampleStreamWindows,
} from "./c4.ts";
import { dataFile, dataPath, findDataFile } from "./datadir.ts";
import { type DownloadProgress, type EnvLookup, sha256File } from "./hub.ts";
import { PyRandom } from "./pyrandom.ts";
import { readWikitextRows, WIKITEXT2_TRAIN_FILES, wikitextJoin } from "./wikitext2.ts";

/** Where calibration windows can come from. */
export type CalibrationSource = "c4" | "wikitext2" | "tinystories";

/** TinyStories calibration text (relative to the data dir). */
export const TINYSTORIES_TRAIN_FILE = "tinystories/tinystories-train-sample.txt";

/** Options of {@linkcode calibrationWindows}. */
export interface CalibrationOptions {
  /** Dataset. */
  source: CalibrationSource;
  /** Number of windows (GPTQ's `nsamples`, 128 by default there). */
  nsamples: number;
  /** Tokens per window. */
  seqlen: number;
  /** `random.seed(seed)` (GPTQ's `--seed`, 0 by default there). */
  seed: number;
  /** The data dir. */
  dataDir: string;
  /** Tokenizer of the model. */
  tokenizer: Tokenizer;
  /** Never download. @default {false} */
  offline?: boolean;
  /** Download progress (the CLI draws it); `false` or absent for none. */
  progress?: DownloadProgress | false;
  /** Hub endpoint. @default {hubEndpoint()} */
  endpoint?: string;
  /** Environment lookup. @default {the process environment} */
  env?: EnvLookup;
}

/** Calibration windows and where they came from. */
export interface CalibrationSet {
  /** `[nsamples][seqlen]` token ids (fresh arrays). */
  windows: Int32Array[];
  /** Which file and rule were used. */
  source: string;
  /** The file the windows came from, relative to the data dir. */
  file: string;
  /** sha256 (hex) of that file. */
  fileSha256: string;
}

const fileShas = new Map<string, Promise<string>>();

/** sha256 of the file at `path`, computed once per file version (path, size, mtime). */
export async function fileSha256(path: string): Promise<string> {
  const key = await fileVersionKey(path);
  let p = fileShas.get(key);
  if (!p) {
    fileShas.set(key, p = sha256File(path));
    p.catch(() => fileShas.delete(key));
  }
  return await p;
}

/**
 * Draws calibration windows like GPTQ's train loaders.
 *
 * @param options source, nsamples, seqlen, seed, data dir, tokenizer
 * @returns the windows and a description of their source
 * @throws {MissingDataError} when the needed file is missing (the message says which)
 * @throws {RangeError} for bad counts or a source too short for a window
 * @example
 * ```ts
 * const { windows, source } = await calibrationWindows({ source: "c4", nsamples: 128, seqlen: 512,
 *   seed: 0, dataDir: "../shared/data", tokenizer: tok, offline: true });
 * ```
 */
export async function calibrationWindows(options: CalibrationOptions): Promise<CalibrationSet> {
  const { nsamples, seqlen, seed } = options;
  if (!Number.isInteger(nsamples) || nsamples < 1) {
    throw new RangeError(`nsamples: expected a positive integer, found ${nsamples}`);
  }
  if (!Number.isInteger(seqlen) || seqlen < 1) {
    throw new RangeError(`seqlen: expected a positive integer, found ${seqlen}`);
  }
  if (!Number.isSafeInteger(seed)) throw new RangeError(`seed: expected an integer, found ${seed}`);
  const rng = new PyRandom(seed);
  switch (options.source) {
    case "c4":
      return await c4Calibration(rng, options);
    case "wikitext2": {
      const { relPath, path } = await findDataFile(
        options.dataDir,
        WIKITEXT2_TRAIN_FILES,
        "WikiText-2 train (calibration)",
        options,
      );
      const key = `${await fileVersionKey(path)}\u0000joined rows`;
      const stream = await memoByTokenizer(
        options.tokenizer,
        key,
        async () => options.tokenizer.encodeWithBos(wikitextJoin(await readWikitextRows(path))),
      );
      const { windows } = sampleStreamWindows(rng, stream, nsamples, seqlen);
      return {
        windows: windows.map((w) => w.slice()),
        source: `wikitext2: "\\n\\n".join(train rows of ${relPath}), BOS + encode once ` +
          `(${stream.length} tokens), GPTQ get_wikitext2 rule`,
        file: relPath,
        fileSha256: await fileSha256(path),
      };
    }
    case "tinystories": {
      const path = await dataFile(options.dataDir, TINYSTORIES_TRAIN_FILE, options);
      const key = `${await fileVersionKey(path)}\u0000whole text`;
      const stream = await memoByTokenizer(
        options.tokenizer,
        key,
        async () => options.tokenizer.encodeWithBos(await Deno.readTextFile(path)),
      );
      const { windows } = sampleStreamWindows(rng, stream, nsamples, seqlen);
      return {
        windows: windows.map((w) => w.slice()),
        source: `tinystories: whole text of ${TINYSTORIES_TRAIN_FILE}, BOS + encode once ` +
          `(${stream.length} tokens), GPTQ get_wikitext2 rule`,
        file: TINYSTORIES_TRAIN_FILE,
        fileSha256: await fileSha256(path),
      };
    }
    default:
      throw new RangeError(
        `Unknown calibration source "${options.source}"; expected c4, wikitext2 or tinystories`,
      );
  }
}

async function c4Calibration(rng: PyRandom, o: CalibrationOptions): Promise<CalibrationSet> {
  const { relPath, path } = await findDataFile(
    o.dataDir,
    [C4_TRAIN_FILE, C4_PROXY_FILE],
    "C4 train (calibration)",
    o,
  );
  using docs = await openC4Documents(path, o.tokenizer);
  const isProxy = relPath === C4_PROXY_FILE;
  const poolStart = isProxy ? C4_EVAL_DOCS : 0;
  const poolSize = docs.length - poolStart;
  if (poolSize < 1) {
    throw new RangeError(
      `${path} has ${docs.length} documents; calibration needs documents from ${poolStart} on`,
    );
  }
  const { windows } = await sampleDocumentWindows(rng, {
    count: o.nsamples,
    seqlen: o.seqlen,
    poolStart,
    poolSize,
    tokens: docs.tokens,
  });
  const rule = "GPTQ get_c4 rule (doc BOS + encode, redrawn until ≥ seqlen tokens)";
  return {
    windows: windows.map((w) => w.slice()),
    source: isProxy
      ? `c4: docs ${poolStart}..${docs.length - 1} of the validation proxy ${relPath} ` +
        `(train shard ${C4_TRAIN_FILE} absent from ${dataPath(o.dataDir, "")}; ` +
        `docs 0..${poolStart - 1} are the evaluation set), ${rule}`
      : `c4: all ${docs.length} docs of ${relPath}, ${rule}`,
    file: relPath,
    fileSha256: await fileSha256(path),
  };
}
