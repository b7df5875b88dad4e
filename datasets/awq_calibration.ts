/**
 * AWQ's calibration rule (mit-han-lab/llm-awq, awq/utils/calib_data.py
 * `get_calib_dataset`, as `run_awq` calls it: n_samples = 128, block_size =
 * 512): take texts in order, skip any whose BOS + encode(text) is longer than
 * the block or empty, keep the first `nsamples`, concatenate them, and cut the
 * concatenation into ⌊Σ / blockSize⌋ blocks of blockSize tokens (the tail is
 * dropped). Unlike GPTQ's rule (datasets/calibration.ts: `nsamples` random
 * windows of documents longer than the window), the blocks are made of whole
 * short texts, and there are fewer of them than texts.
 *
 * The official texts are pile-val shuffled with a fixed seed (42); the pile
 * is not among our data, so the texts are those of a calibration source, in
 * file order (the draw's `seed` does not enter):
 *
 * - `c4`: the documents of the C4 calibration pool (datasets/calibration.ts's:
 *   the train shard, or documents 1,100.. of the validation proxy; on the
 *   proxy with the stories260K tokenizer, 128 texts of ≤ 512 tokens give 69
 *   blocks, 35,328 tokens);
 * - `tinystories`: the stories of the train sample (split at `<|endoftext|>`);
 * - `wikitext2`: the non-empty rows of the train split.
 *
 * Texts are stripped (`line.strip()`) before encoding, except C4 documents,
 * which are encoded as stored (C4's texts carry no surrounding blanks).
 *
 * @module
 */
import type { Tokenizer } from "../model/tokenizer.ts";
import { encodeWithBosCached, fileVersionKey } from "./_tokens.ts";
import { C4_EVAL_DOCS, C4_PROXY_FILE, C4_TRAIN_FILE, openC4Documents } from "./c4.ts";
import {
  type CalibrationOptions,
  type CalibrationSet,
  fileSha256,
  TINYSTORIES_TRAIN_FILE,
} from "./calibration.ts";
import { dataFile, findDataFile } from "./datadir.ts";
import { readWikitextRows, WIKITEXT2_TRAIN_FILES } from "./wikitext2.ts";

/** The separator of stories in the TinyStories text files. */
const END_OF_TEXT = "<|endoftext|>";

/**
 * get_calib_dataset's blocks from tokenized texts in order: the first
 * `nsamples` texts of 1..blockSize tokens, concatenated, cut into
 * ⌊Σ / blockSize⌋ blocks.
 *
 * @param texts BOS + encode(text) of each text, in order (read lazily)
 * @param nsamples texts to keep (n_samples)
 * @param blockSize tokens per block (block_size)
 * @returns the blocks (fresh arrays) and how many texts were read and kept
 * @example
 * ```ts
 * await concatBlocks([[1, 2], [1, 3, 4], [1, 5], [1]], 3, 2);
 * // [1, 3, 4] is skipped (3 > 2 tokens); [1, 2, 1, 5, 1] gives blocks [1, 2], [1, 5]
 * ```
 */
export async function concatBlocks(
  texts: Iterable<ArrayLike<number> | Promise<ArrayLike<number>>>,
  nsamples: number,
  blockSize: number,
): Promise<{ blocks: Int32Array[]; read: number; kept: number; tokens: number }> {
  const kept: ArrayLike<number>[] = [];
  let read = 0, tokens = 0;
  for (const p of texts) {
    if (kept.length === nsamples) break;
    const t = await p;
    read++;
    if (t.length === 0 || t.length > blockSize) continue;
    kept.push(t);
    tokens += t.length;
  }
  const all = new Int32Array(tokens);
  let o = 0;
  for (const t of kept) {
    all.set(t, o);
    o += t.length;
  }
  const blocks: Int32Array[] = [];
  for (let b = 0; (b + 1) * blockSize <= tokens; b++) {
    blocks.push(all.slice(b * blockSize, (b + 1) * blockSize));
  }
  return { blocks, read, kept: kept.length, tokens };
}

/** The texts of a source for AWQ's rule, lazily tokenized, and where they came from. */
interface TextSource {
  texts: Iterable<Promise<Int32Array>>;
  what: string;
  file: string;
  path: string;
  dispose?: () => void;
}

/** f(items[i], i) for each i, computed only when the iteration reaches it. */
function* lazily<T, U>(items: readonly T[], f: (item: T, i: number) => U): Generator<U> {
  for (let i = 0; i < items.length; i++) yield f(items[i], i);
}

async function textSource(o: CalibrationOptions): Promise<TextSource> {
  const tok: Tokenizer = o.tokenizer;
  switch (o.source) {
    case "c4": {
      const { relPath, path } = await findDataFile(
        o.dataDir,
        [C4_TRAIN_FILE, C4_PROXY_FILE],
        "C4 train (calibration)",
        o,
      );
      const docs = await openC4Documents(path, tok);
      const start = relPath === C4_PROXY_FILE ? C4_EVAL_DOCS : 0;
      return {
        texts: lazily(
          Array.from({ length: docs.length - start }, (_, i) => start + i),
          (i) => docs.tokens(i),
        ),
        what: `c4: docs ${start}..${docs.length - 1} of ${relPath} in order`,
        file: relPath,
        path,
        dispose: () => docs[Symbol.dispose](),
      };
    }
    case "tinystories": {
      const path = await dataFile(o.dataDir, TINYSTORIES_TRAIN_FILE, o);
      const version = await fileVersionKey(path);
      const stories = (await Deno.readTextFile(path)).split(END_OF_TEXT);
      return {
        texts: lazily(
          stories,
          (s, i) =>
            encodeWithBosCached(tok, `${version}\u0000story ${i}`, () => Promise.resolve(s.trim())),
        ),
        what: `tinystories: stories of ${TINYSTORIES_TRAIN_FILE} in order`,
        file: TINYSTORIES_TRAIN_FILE,
        path,
      };
    }
    case "wikitext2": {
      const { relPath, path } = await findDataFile(
        o.dataDir,
        WIKITEXT2_TRAIN_FILES,
        "WikiText-2 train (calibration)",
        o,
      );
      const version = await fileVersionKey(path);
      const rows = (await readWikitextRows(path)).map((r) => r.trim()).filter((r) => r !== "");
      return {
        texts: lazily(
          rows,
          (r, i) => encodeWithBosCached(tok, `${version}\u0000row ${i}`, () => Promise.resolve(r)),
        ),
        what: `wikitext2: non-empty train rows of ${relPath} in order`,
        file: relPath,
        path,
      };
    }
    default:
      throw new RangeError(
        `Unknown calibration source "${o.source}"; expected c4, wikitext2 or tinystories`,
      );
  }
}

/**
 * AWQ's calibration blocks (get_calib_dataset) from a calibration source:
 * `nsamples` texts of ≤ `seqlen` tokens, concatenated, cut into blocks of
 * `seqlen`. `seed` is not used (see the module doc).
 *
 * @param options source, nsamples (texts), seqlen (block size), data dir, tokenizer
 * @returns the blocks as windows, with a description of their source
 * @throws {MissingDataError} when the needed file is missing
 * @throws {RangeError} when the kept texts make no whole block
 * @example
 * ```ts
 * const { windows } = await awqCalibrationBlocks({ source: "c4", nsamples: 128, seqlen: 512,
 *   seed: 0, dataDir: "../shared/data", tokenizer: tok, offline: true });
 * windows.length; // 69 with the stories260K tokenizer on the C4 proxy
 * ```
 */
export async function awqCalibrationBlocks(options: CalibrationOptions): Promise<CalibrationSet> {
  const { nsamples, seqlen } = options;
  if (!Number.isInteger(nsamples) || nsamples < 1) {
    throw new RangeError(`nsamples: expected a positive integer, found ${nsamples}`);
  }
  if (!Number.isInteger(seqlen) || seqlen < 1) {
    throw new RangeError(`seqlen: expected a positive integer, found ${seqlen}`);
  }
  const src = await textSource(options);
  try {
    const r = await concatBlocks(src.texts, nsamples, seqlen);
    if (r.blocks.length === 0) {
      throw new RangeError(
        `AWQ calibration (${src.what}): ${r.kept} texts of ≤ ${seqlen} tokens give ${r.tokens} ` +
          `tokens, less than one block of ${seqlen}; raise --nsamples or lower --calib-seqlen`,
      );
    }
    return {
      windows: r.blocks,
      source: `${src.what}, llm-awq get_calib_dataset rule (the first ${r.kept} texts of ` +
        `≤ ${seqlen} tokens, BOS + encode, concatenated: ${r.tokens} tokens, ` +
        `${r.blocks.length} blocks of ${seqlen})`,
      file: src.file,
      fileSha256: await fileSha256(src.path),
    };
  } finally {
    src.dispose?.();
  }
}
