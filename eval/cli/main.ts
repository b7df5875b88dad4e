/**
 * squeezebench's command line: `deno task NAME` runs subcommand NAME.
 *
 *   eval       quantize with every method and bit width, evaluate, store, report
 *   ppl        perplexity of one (optionally quantized) model on one dataset
 *   quantize   quantize a model and write it to a file
 *   generate   greedy / sampled text from a model
 *   bench      benchmarks: forward, ppl, quant, squeezellm, kernels, matmul
 *   report     render the HTML report from a results store
 *
 * Every subcommand has --help and --json (the LAST stdout line is then one
 * JSON object with the results). Errors print one line naming the option or
 * file and exit with status 2; set SQB_DEBUG=1 for stack traces.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { COMMANDS } from "./commands.ts";
import { CliError, type OptionSpec } from "./options.ts";

/** Runs the CLI with `args`; returns the process exit code. */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    console.log(usage());
    return name ? 0 : 2;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    console.error(`error: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  let values: Record<string, unknown>, positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: joinNegativeValues(rest, cmd.options),
      options: { ...cmd.options, help: { type: "boolean", short: "h" }, json: { type: "boolean" } },
      allowPositionals: cmd.positionals !== undefined,
      strict: true,
    }));
  } catch (e) {
    console.error(
      `error: ${(e as Error).message}\n\nRun with --help for the options of "${name}".`,
    );
    return 2;
  }
  if (values.help) {
    console.log(cmd.help);
    return 0;
  }
  try {
    const result = await cmd.run(values, positionals);
    if (values.json) console.log(JSON.stringify(result));
    return 0;
  } catch (e) {
    if (Deno.env.get("SQB_DEBUG")) throw e;
    const err = e as Error;
    const known = err instanceof CliError || err instanceof RangeError ||
      err.name.endsWith("Error");
    console.error(`error: ${known ? err.message : String(e)}`);
    return 2;
  }
}

/**
 * parseArgs reads a value that starts with "-" as an option, so `--limit -1`
 * would fail with its "argument is ambiguous" message: a string option
 * followed by a negative number is joined into `--limit=-1`, and the
 * option's own check then names the flag and what it accepts.
 */
export function joinNegativeValues(args: readonly string[], options: OptionSpec): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") {
      out.push(...args.slice(i));
      break;
    }
    const next = args[i + 1];
    const name = a.startsWith("--") ? a.slice(2) : undefined;
    if (
      name !== undefined && options[name]?.type === "string" && next !== undefined &&
      /^-(\d|\.\d|Infinity$)/.test(next)
    ) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(10)} ${c.summary}`);
  return `squeezebench — low-bit LLM weight quantization harness\n\nUsage: deno task COMMAND [options]\n\n` +
    `Commands:\n${lines.join("\n")}\n\nRun "deno task COMMAND --help" for a command's options.`;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
