/**
 * WikiText-2 (raw): rows as the Hugging Face dataset `Salesforce/wikitext`
 * (config `wikitext-2-raw-v1`) serves them, read from its Parquet file or
 * from the canonical `wiki.*.raw` file, and GPTQ's evaluation text
 * `"\n\n".join(rows)` (datautils.py `get_wikitext2`).
 *
 * @module
 */
import { readParquetColumn } from "./duckdb.ts";

/** Test split files, in order of preference (relative to the data dir). */
export const WIKITEXT2_TEST_FILES: readonly string[] = [
  "wikitext-2-raw-v1/test-00000-of-00001.parquet",
  "wikitext-2-raw-v1/wiki.test.raw",
];

/** Train split files, in order of preference (relative to the data dir). */
export const WIKITEXT2_TRAIN_FILES: readonly string[] = [
  "wikitext-2-raw-v1/train-00000-of-00001.parquet",
  "wikitext-2-raw-v1/wiki.train.raw",
];

/**
 * Splits a `wiki.*.raw` file into the Hugging Face dataset's rows: one row
 * per line, keeping its trailing "\n", except that a line holding only
 * whitespace becomes "". (Found by comparing the two test files: the 4,358
 * lines of wiki.test.raw equal the 4,358 Parquet rows, except the 1,467
 * lines " \n", which are "" in the Parquet file.)
 *
 * @param raw whole file text
 * @returns `[rows]` the rows
 * @example
 * ```ts
 * wikitextRowsFromRaw(" \n = Title = \n \n"); // ["", " = Title = \n", ""]
 * ```
 */
export function wikitextRowsFromRaw(raw: string): string[] {
  const rows: string[] = [];
  let start = 0;
  while (start < raw.length) {
    const nl = raw.indexOf("\n", start);
    const end = nl < 0 ? raw.length : nl + 1;
    const line = raw.slice(start, end);
    rows.push(line.trim() === "" ? "" : line);
    start = end;
  }
  return rows;
}

/**
 * The rows of a WikiText-2 split: column `text` of a `.parquet` file (via
 * DuckDB), else the lines of a `.raw` file (see {@linkcode wikitextRowsFromRaw}).
 *
 * @param path `.parquet` or `.raw` file
 * @returns `[rows]` in file order
 * @throws {DatasetFormatError} when the Parquet file cannot be read
 */
export async function readWikitextRows(path: string): Promise<string[]> {
  if (path.endsWith(".parquet")) return await readParquetColumn(path, "text");
  return wikitextRowsFromRaw(await Deno.readTextFile(path));
}

/**
 * GPTQ's evaluation (and train) text: the rows joined with "\n\n".
 *
 * @param rows the split's rows
 * @returns the text (1,294,336 characters for the test split)
 */
export function wikitextJoin(rows: readonly string[]): string {
  return rows.join("\n\n");
}
