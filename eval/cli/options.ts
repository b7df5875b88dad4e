/**
 * Options shared by the subcommands, and their one source of defaults.
 *
 * @module
 */

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
  --data-dir DIR       models and datasets (default $SQB_DATA_DIR, else ~/.cache/squeezebench)
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
