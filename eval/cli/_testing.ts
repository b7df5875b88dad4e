/**
 * Test helpers of the CLI: run it in a subprocess.
 *
 * @module
 */

const CLI = new URL("./main.ts", import.meta.url).pathname;

/** What a CLI run printed and returned. */
export interface CliRun {
  code: number;
  out: string;
  err: string;
}

/**
 * Runs the CLI with `args` in a subprocess, offline (`HF_HUB_OFFLINE=1`)
 * unless `env` says otherwise; `env` adds to the process environment.
 */
export async function cliWith(env: Record<string, string>, ...args: string[]): Promise<CliRun> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    env: { NO_COLOR: "1", HF_HUB_OFFLINE: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

/** Runs the CLI with `args` in a subprocess, offline. */
export function cli(...args: string[]): Promise<CliRun> {
  return cliWith({}, ...args);
}

/** The JSON object on the last stdout line (`--json`). */
export const lastJson = (out: string) => JSON.parse(out.trim().split("\n").at(-1)!);
