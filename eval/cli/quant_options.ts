/**
 * The quantization options of the CLI, generated from quant/spec.ts's table
 * (DEFAULTS, QUANT_PARAMS): the parseArgs table, the help text (flag, what it
 * means, which methods take it and their defaults) and the parser. A flag
 * that does not apply to the chosen method, or a value out of range, is a
 * {@linkcode CliError} naming the flag, raised before any model is loaded.
 *
 * @module
 */
import type { OptionSpec } from "./options.ts";
import { choice, CliError, int, str } from "./options.ts";
import type { LoadedModel } from "./load.ts";
import { type DeviceHessians, quantizeModel } from "../pipeline.ts";
import { progressBars } from "./progress.ts";
import {
  appliesTo,
  BITS_RANGE,
  DEFAULT_WORKERS,
  describeRange,
  loadQuantized,
  type Method,
  METHODS,
  paramDefaults,
  paramError,
  pickSpec,
  QUANT_PARAMS,
  type QuantizedModel,
  type QuantParam,
  type QuantSpec,
  setPath,
} from "../../quant/methods.ts";

/** The parseArgs options of quantization: --method, --bits, every parameter's flag, --workers. */
export const QUANT_OPTIONS: OptionSpec = {
  method: { type: "string" },
  bits: { type: "string" },
  ...Object.fromEntries(
    QUANT_PARAMS.map((p) => [p.flag, { type: p.kind === "boolean" ? "boolean" : "string" }]),
  ),
  ...Object.fromEntries(
    QUANT_PARAMS.filter((p) => p.negFlag).map((p) => [p.negFlag!, { type: "boolean" }]),
  ),
  workers: { type: "string" },
};

const COL = 23, WIDTH = 100;

/** `head` padded to the description column, `text` wrapped at WIDTH. */
function helpLine(head: string, text: string): string {
  const words = text.split(" ");
  const lines: string[] = [];
  let cur = head.length >= COL - 1 ? head + " " : head.padEnd(COL);
  if (head.length >= COL - 1) {
    lines.push(cur.trimEnd());
    cur = " ".repeat(COL);
  }
  let empty = true;
  for (const w of words) {
    if (!empty && cur.length + 1 + w.length > WIDTH) {
      lines.push(cur);
      cur = " ".repeat(COL) + w;
    } else {
      cur += (empty ? "" : " ") + w;
    }
    empty = false;
  }
  lines.push(cur);
  return lines.join("\n");
}

function showDefault(p: QuantParam, v: unknown): string {
  if (v === null) return p.nullable ?? "none";
  if (typeof v === "boolean") return v ? "on" : "off";
  return String(v);
}

/** "[rtn, gptq: default one group per row; awq: default 128, …]" for `p`, from DEFAULTS. */
function methodsNote(p: QuantParam): string {
  const defaults = paramDefaults(p);
  // a flag that only turns something on lists its methods; an on/off pair shows each default
  if (p.kind === "boolean" && !p.negFlag) return `[${[...defaults.keys()].join(", ")}]`;
  const byValue = new Map<string, Method[]>();
  for (const [m, v] of defaults) {
    const key = JSON.stringify(v) + (p.defaultNote?.[m] ? `|${m}` : "");
    byValue.set(key, [...(byValue.get(key) ?? []), m]);
  }
  const parts = [...byValue.values()].map((ms) => {
    const note = p.defaultNote?.[ms[0]];
    const d = showDefault(p, defaults.get(ms[0]));
    return `${ms.join(", ")}: default ${d}${note ? ` (${note})` : ""}`;
  });
  return `[${parts.join("; ")}]`;
}

/** The help of {@linkcode QUANT_OPTIONS}, generated from quant/spec.ts's table. */
export const QUANT_HELP: string = [
  "Quantization ([methods a flag applies to: their defaults], from quant/spec.ts):",
  helpLine("  --method M", `${METHODS.join(" | ")} (absent: fp32)`),
  helpLine("  --bits B", `bits per weight, ${describeRange(BITS_RANGE)} (needed with --method)`),
  ...QUANT_PARAMS.map((p) => {
    const off = p.off !== undefined ? ` or ${p.off} (off)` : "";
    const range = p.range ? `, ${describeRange(p.range)}${off}` : "";
    const choices = p.choices ? ` (${p.choices.join(" | ")})` : "";
    return helpLine(
      `  --${p.flag}${p.negFlag ? ` / --${p.negFlag}` : ""}${p.arg ? " " + p.arg : ""}`,
      `${p.doc}${choices}${range} ${methodsNote(p)}`,
    );
  }),
  helpLine("  --workers N", `worker threads (default: the number of cores, ${DEFAULT_WORKERS})`),
].join("\n");

/** Whether flag `f` of `values` was given. */
function has(values: Record<string, unknown>, f: string | undefined): boolean {
  return f !== undefined && values[f] !== undefined && values[f] !== false;
}

/** The quantization parameters given as flags in `values` (either flag of a pair), in table order. */
function givenParams(values: Record<string, unknown>): QuantParam[] {
  return QUANT_PARAMS.filter((p) => has(values, p.flag) || has(values, p.negFlag));
}

/** The flag of `p` that `values` gives ("no-bit-balance" when that one). */
function givenFlag(p: QuantParam, values: Record<string, unknown>): string {
  return has(values, p.flag) ? p.flag : p.negFlag!;
}

/** The value of parameter `p` given as a flag; a CliError naming the flag when invalid. */
function parseParam(p: QuantParam, raw: unknown, values: Record<string, unknown> = {}): unknown {
  if (p.negFlag && has(values, p.flag) && has(values, p.negFlag)) {
    throw new CliError(`give --${p.flag} or --${p.negFlag}, not both`);
  }
  if (p.negFlag && has(values, p.negFlag)) return false;
  let v: unknown = raw;
  if (p.kind === "boolean") v = p.negated ? false : true;
  else if (p.kind === "int" || p.kind === "number") {
    const s = String(raw).trim();
    const n = s === "" ? NaN : Number(s);
    v = Number.isFinite(n) ? n : raw;
  }
  const err = paramError(p, v);
  if (err) throw new CliError(err);
  return v;
}

/**
 * The quantization spec given by the options (defaults from quant/spec.ts
 * filled in), or null for fp32. Checks, before any model is loaded, that
 * every flag given applies to the method and is in range.
 *
 * @param values parsed options
 * @returns the spec, or null when no --method (or --method fp32)
 * @throws {CliError} naming the flag
 * @example
 * ```ts
 * specFromOptions({ method: "gptq", bits: "3", "act-order": true }); // gptq.w3.act
 * ```
 */
export function specFromOptions(values: Record<string, unknown>): QuantSpec | null {
  const method = str(values, "method");
  const given = givenParams(values);
  if (method === undefined || method === "fp32") {
    if (values.bits !== undefined) {
      throw new CliError(`--bits needs --method (${METHODS.join(", ")})`);
    }
    if (given[0]) {
      const takers = [...paramDefaults(given[0]).keys()].join(", ");
      throw new CliError(`--${givenFlag(given[0], values)} needs --method (${takers})`);
    }
    return null;
  }
  const m = choice(values, "method", METHODS, "rtn");
  if (values.bits === undefined) throw new CliError(`--method ${m} needs --bits B (2..8)`);
  const bits = int(values, "bits", undefined, BITS_RANGE.min, BITS_RANGE.max)!;
  const record: Record<string, unknown> = {};
  for (const p of given) {
    if (!appliesTo(p, m)) {
      const takers = [...paramDefaults(p).keys()].join(", ");
      throw new CliError(
        `--${givenFlag(p, values)} does not apply to --method ${m} (only to ${takers})`,
      );
    }
    setPath(record, p.key, parseParam(p, values[p.flag], values));
  }
  if (values.outliers !== undefined && values["outlier-range"] !== undefined) {
    throw new CliError(`give --outliers P or --outlier-range R, not both`);
  }
  if (values["static-groups"] && values.group === undefined) {
    throw new CliError(
      `--static-groups needs --group G (with one group per row there are no groups to fix)`,
    );
  }
  let spec: QuantSpec;
  try {
    spec = pickSpec(m, bits, record);
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  if (values["bit-balance"] && !spec.bitBalance) {
    throw new CliError(
      `--bit-balance changes nothing here: it gives 2-bit asymmetric grids a fifth level ` +
        `(--bits 2 without --sym on a uniform method, --abits 2 or --kv-bits 2)`,
    );
  }
  return spec;
}

/** --workers N (0..64), default quant/spec.ts's DEFAULT_WORKERS (the number of cores). */
export function workersOf(values: Record<string, unknown>): number {
  return int(values, "workers", DEFAULT_WORKERS, 0, 64)!;
}

/** The quantization the options ask for, parsed and checked before any model is loaded. */
export interface QuantRequest {
  /** --quantized FILE, or null. */
  file: string | null;
  /** The spec of --method …, or null (fp32, or a file). */
  spec: QuantSpec | null;
  /** --group was given (quant/spec.ts `resolveSpec`). */
  groupGiven: boolean;
  workers: number;
}

/**
 * Parses and checks the quantization options (no I/O): --quantized FILE or
 * --method with its flags, never both.
 *
 * @throws {CliError} naming the flag
 */
export function quantRequest(values: Record<string, unknown>): QuantRequest {
  const file = str(values, "quantized") ?? null;
  const workers = workersOf(values);
  if (file) {
    if (values.method) throw new CliError(`give --quantized FILE or --method, not both`);
    const p0 = givenParams(values)[0];
    const flag = values.bits !== undefined ? "bits" : p0 && givenFlag(p0, values);
    if (flag) {
      throw new CliError(`--${flag} does not apply to --quantized FILE (the file holds its spec)`);
    }
    return { file, spec: null, groupGiven: false, workers };
  }
  return {
    file: null,
    spec: specFromOptions(values),
    groupGiven: values.group !== undefined,
    workers,
  };
}

/**
 * Quantizes `model` as the options say (or loads --quantized FILE), with
 * progress on stderr; null for fp32. `opts.hessians`: GPTQ's Hessians on a device.
 */
export async function quantizedFromOptions(
  model: LoadedModel,
  values: Record<string, unknown>,
  opts: { hessians?: DeviceHessians } = {},
): Promise<QuantizedModel | null> {
  const request = quantRequest(values);
  if (request.file) {
    const q = await loadQuantized(request.file);
    if (q.base.sha256 !== model.checkpointSha256) {
      console.error(
        `warning: ${request.file} was quantized from ${q.base.path} (sha256 ${
          q.base.sha256.slice(0, 12)
        }…), not ${model.checkpointPath}`,
      );
    }
    return q;
  }
  if (!request.spec) return null;
  console.error(`quantizing ${model.name} …`);
  const q = await quantizeModel(model.weights, request.spec, {
    tokenizer: model.tokenizer,
    dataDir: model.dataDir,
    offline: model.offline,
    modelKey: model.checkpointSha256,
    workers: request.workers,
    log: (s) => console.error(s),
    onProgress: progressBars(),
    hessians: opts.hessians,
    fisherDir: str(values, "fisher"), // --fisher (quantize, ppl): checked against the method there
  }, { groupGiven: request.groupGiven });
  console.error(
    `${q.variantName} in ${q.seconds.toFixed(1)} s: ${
      q.avgBits.toFixed(3)
    } average bits per weight` +
      (q.calibrationText ? `; calibration: ${q.calibrationText}` : ""),
  );
  return q;
}
