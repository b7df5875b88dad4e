/**
 * Test helpers of the CLI: run it in a subprocess; read the error of a bad quantization flag.
 *
 * @module
 */
import assert from "node:assert/strict";
import { CliError } from "./options.ts";
import { specFromOptions } from "./quant_options.ts";

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

/**
 * The CliError message of specFromOptions(values); fails the test when there is no error or it
 * is not a CliError.
 */
export function parseError(values: Record<string, unknown>): string {
  try {
    specFromOptions(values);
  } catch (e) {
    assert.ok(e instanceof CliError, `not a CliError: ${e}`);
    return e.message;
  }
  assert.fail(`no error for ${JSON.stringify(values)}`);
}
