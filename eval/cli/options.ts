/**
 * Options shared by the subcommands, and their one source of defaults.
 *
 * @module
 */
import { dirname } from "node:path";

/** A user error in a command-line option; the message names the option. */
export class CliError extends Error {
  override name = "CliError";
}

/** A parseArgs option table. */
export type OptionSpec = Record<
  string,
  { type: "string" | "boolean"; short?: string; multiple?: boolean }
>;

/** One subcommand. */
export interface Command {
  summary: string;
  help: string;
  options: OptionSpec;
  positionals?: string;
  run(values: Record<string, unknown>, positionals: string[]): Promise<object>;
}

/** Options every model-reading command takes. */
export const MODEL_OPTIONS: OptionSpec = {
  model: { type: "string" },
  tokenizer: { type: "string" },
  "data-dir": { type: "string" },
  offline: { type: "boolean" },
};

/** Help text of {@linkcode MODEL_OPTIONS}. */
export const MODEL_HELP =
  `  --model NAME|PATH    stories260K (default) or a llama2.c checkpoint path
  --tokenizer PATH     tokenizer (.model or llama2.c .bin); default: beside the checkpoint
  --data-dir DIR       an existing folder of models and datasets (default $SQB_DATA_DIR, else
                       ~/.cache/squeezebench, created as files are downloaded)
  --offline            never download (also HF_HUB_OFFLINE=1)
  --json               last stdout line is one JSON object with the results
  -h, --help           this help`;

/** A string option, or `fallback`. */
export function str(
  values: Record<string, unknown>,
  name: string,
  fallback?: string,
): string | undefined {
  const v = values[name];
  return typeof v === "string" ? v : fallback;
}

/** An integer option within [min, max], or `fallback`; a clear error otherwise. */
export function int(
  values: Record<string, unknown>,
  name: string,
  fallback: number | undefined,
  min = -Infinity,
  max = Infinity,
): number | undefined {
  const v = values[name];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) {
    const range = max === Infinity ? `≥ ${min}` : `in ${min}..${max}`;
    throw new CliError(`--${name} must be an integer ${range}, got "${v}"`);
  }
  return n;
}

/** A number option, or `fallback`. */
export function num(
  values: Record<string, unknown>,
  name: string,
  fallback?: number,
): number | undefined {
  const v = values[name];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new CliError(`--${name} must be a number, got "${v}"`);
  return n;
}

/** A comma-separated list option. */
export function list(values: Record<string, unknown>, name: string, fallback: string[]): string[] {
  const v = str(values, name);
  return v === undefined ? fallback : v.split(",").map((s) => s.trim()).filter((s) => s);
}

/** One of `choices`, or a clear error naming the option. */
export function choice<T extends string>(
  values: Record<string, unknown>,
  name: string,
  choices: readonly T[],
  fallback: T,
): T {
  const v = str(values, name, fallback)!;
  if (!(choices as readonly string[]).includes(v)) {
    throw new CliError(`--${name} must be one of ${choices.join(", ")}; got "${v}"`);
  }
  return v as T;
}

/** A comma-separated list of `choices`, or a clear error naming the option and the bad item. */
export function choiceList<T extends string>(
  values: Record<string, unknown>,
  name: string,
  choices: readonly T[],
  fallback: T[],
): T[] {
  const items = list(values, name, fallback);
  for (const v of items) {
    if (!(choices as readonly string[]).includes(v)) {
      throw new CliError(`--${name} must be one of ${choices.join(", ")}; got "${v}"`);
    }
  }
  return items as T[];
}

/**
 * How to name option `name` in a message: `--name` when the user gave it,
 * `--name (default)` when its value is the default.
 */
export function optionLabel(values: Record<string, unknown>, name: string): string {
  return values[name] === undefined ? `--${name} (default)` : `--${name}`;
}

/**
 * Checks, before any work, that the output file `path` (the value of the
 * option `label`) can be written: an existing `path` must be a writable
 * file; otherwise its folder must exist (with `createDir`, it is created
 * now) and accept a new file.
 *
 * @param label the option, as the message names it (see {@linkcode optionLabel})
 * @param path the file to be written
 * @param opts `createDir`: create a missing folder (as the command would) @default {false}
 * @throws {CliError} naming the option, the file and what is wrong
 * @example
 * ```ts
 * await checkOutputFile("--out", "/nonexistent/m.sqbq"); // throws: folder /nonexistent does not exist
 * ```
 */
export async function checkOutputFile(
  label: string,
  path: string,
  opts: { createDir?: boolean } = {},
): Promise<void> {
  const info = await statOrNull(path);
  if (info?.isDirectory) throw new CliError(`${label} ${path} is a folder; give a file path`);
  if (info) {
    try {
      (await Deno.open(path, { write: true })).close();
    } catch (e) {
      throw new CliError(`${label} ${path} is not writable (${(e as Error).message})`);
    }
    return;
  }
  const dir = dirname(path);
  if (opts.createDir) {
    try {
      await Deno.mkdir(dir, { recursive: true });
    } catch (e) {
      throw new CliError(
        `${label} ${path}: cannot create its folder ${dir} (${(e as Error).message})`,
      );
    }
  }
  const dirInfo = await statOrNull(dir);
  if (!dirInfo) throw new CliError(`${label} ${path}: folder ${dir} does not exist`);
  if (!dirInfo.isDirectory) throw new CliError(`${label} ${path}: ${dir} is not a folder`);
  try {
    await Deno.remove(await Deno.makeTempFile({ dir, prefix: ".sqb-write-check-" }));
  } catch (e) {
    throw new CliError(`${label} ${path}: cannot write into ${dir} (${(e as Error).message})`);
  }
}

/** The bytes at offset 8 of every DuckDB database file. */
const DUCKDB_MAGIC = "DUCK";

/**
 * Checks, before any work, that `path` (the value of the option `label`) can
 * be a results store: a DuckDB file (its header has "DUCK" at byte 8) or,
 * unless `mustExist`, no file yet. Whether a DuckDB file is a squeezebench
 * store is for reports/store.ts to say when it opens it.
 *
 * @param label the option, as the message names it (see {@linkcode optionLabel})
 * @param path the store
 * @param opts `mustExist`: the store is read, not created @default {false}
 * @throws {CliError} naming the option and the file
 * @example
 * ```ts
 * await checkStoreFile("--store", "README.md"); // throws: not a DuckDB file
 * ```
 */
export async function checkStoreFile(
  label: string,
  path: string,
  opts: { mustExist?: boolean } = {},
): Promise<void> {
  const info = await statOrNull(path);
  if (!info) {
    if (opts.mustExist) {
      throw new CliError(`${label} ${path} does not exist; run "deno task eval" first`);
    }
    return;
  }
  if (!info.isFile) throw new CliError(`${label} ${path} is not a file`);
  const head = new Uint8Array(12);
  let n = 0;
  using file = await Deno.open(path, { read: true });
  while (n < head.length) {
    const r = await file.read(head.subarray(n));
    if (r === null) break;
    n += r;
  }
  const magic = new TextDecoder().decode(head.subarray(8, Math.max(8, n)));
  if (magic !== DUCKDB_MAGIC) {
    throw new CliError(
      `${label} ${path} is not a DuckDB file (no "${DUCKDB_MAGIC}" at byte 8 of its ` +
        `${info.size} bytes); give a squeezebench results store, or a path that does ` +
        `not exist yet`,
    );
  }
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return null;
    throw e;
  }
}
