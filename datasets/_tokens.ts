/**
 * In-memory memo of tokenized texts, per tokenizer object and per file
 * version (path, size, mtime), so a sweep that builds calibration windows for
 * every method tokenizes each document once. Entries die with the tokenizer
 * (WeakMap); a failed computation is not remembered.
 *
 * @module
 */
import type { Tokenizer } from "../model/tokenizer.ts";

const memo = new WeakMap<Tokenizer, Map<string, Promise<unknown>>>();

/**
 * A key naming one version of a file: path, size and modification time.
 *
 * @param path file path
 * @returns the key
 */
export async function fileVersionKey(path: string): Promise<string> {
  const st = await Deno.stat(path);
  return `${path}\u0000${st.size}\u0000${st.mtime?.getTime() ?? 0}`;
}

/**
 * `compute()` once per (tokenizer, key); later calls share its result (do
 * not modify it).
 *
 * @param tokenizer the tokenizer the result depends on
 * @param key names the input (file version key + what part of the file)
 * @param compute produces the result on a miss
 * @returns the memoized result
 */
export function memoByTokenizer<T>(
  tokenizer: Tokenizer,
  key: string,
  compute: () => Promise<T>,
): Promise<T> {
  let m = memo.get(tokenizer);
  if (!m) memo.set(tokenizer, m = new Map());
  let p = m.get(key) as Promise<T> | undefined;
  if (!p) {
    p = compute();
    m.set(key, p);
    p.catch(() => m.delete(key));
  }
  return p;
}

/**
 * `BOS + tokenizer.encode(text)` for the text named by `key`, memoized with
 * {@linkcode memoByTokenizer}.
 *
 * @param tokenizer the tokenizer
 * @param key names the text
 * @param text produces the text on a miss
 * @returns `[1 + n]` token ids (shared: do not modify)
 */
export function encodeWithBosCached(
  tokenizer: Tokenizer,
  key: string,
  text: () => string | Promise<string>,
): Promise<Int32Array> {
  return memoByTokenizer(tokenizer, key, async () => tokenizer.encodeWithBos(await text()));
}
