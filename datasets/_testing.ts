/**
 * Test helpers of datasets/: temporary data folders that remove themselves.
 *
 * @module
 */
import { sharedData } from "./testing.ts";

/** A temporary folder: its path, removed with its content when disposed (`await using`). */
export interface TempDir extends AsyncDisposable {
  readonly path: string;
}

/**
 * A fresh temporary folder named `prefix…`, removed when disposed.
 *
 * @example
 * ```ts
 * await using tmp = await tempDir("sqb-hub-test-");
 * await Deno.writeTextFile(`${tmp.path}/a.txt`, "a");
 * ```
 */
export async function tempDir(prefix: string): Promise<TempDir> {
  const path = await Deno.makeTempDir({ prefix });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

/**
 * A temporary data folder whose only file is `wikitext-2-raw-v1/{name}`, a
 * link to the shared WikiText-2 test split's wiki.test.raw.
 */
export async function wikitextDataDir(prefix: string, name: string): Promise<TempDir> {
  const dir = await tempDir(prefix);
  try {
    await Deno.mkdir(`${dir.path}/wikitext-2-raw-v1`);
    await Deno.symlink(
      sharedData("wikitext-2-raw-v1/wiki.test.raw"),
      `${dir.path}/wikitext-2-raw-v1/${name}`,
    );
  } catch (e) {
    await dir[Symbol.asyncDispose]();
    throw e;
  }
  return dir;
}
