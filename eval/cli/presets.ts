/**
 * Presets of `deno task eval`: data files in eval/presets/NAME.json, read and
 * validated here, with the command line's overrides applied. A preset names
 * table rows (a method and options, e.g. "SqueezeLLM 0.45%" = squeezellm with
 * sensitivePct 0.05 and outlierPct 0.4), the bit widths — or tables of
 * weight × activation settings —, the datasets, the window length and limit,
 * and the kernel timings; eval/cli/plan.ts expands it into jobs.
 *
 * File format (every key checked; an unknown key is an error naming the file):
 *
 * ```json
 * {
 *   "description": "what the preset reproduces",
 *   "rows": [{ "name": "AWQ g128", "method": "awq", "options": { "groupSize": 128 },
 *              "ifGroupIndivisible": "per-row" }],
 *   "bits": [3, 4],
 *   "datasets": ["wikitext2", "c4", "c4-new", "tinystories"],
 *   "seqlen": null, "limit": null,
 *   "kernels": { "shapes": ["model", "llama7b"], "batch": [1], "runs": 10 }
 * }
 * ```
 *
 * In place of `bits`, a preset may give `tables`, as ABQ-LLM's Tables 1–2
 * (rows = methods, column groups = W×A settings): each names its rows (rows
 * of `rows`, by name) and its settings, written as the paper writes them,
 * `W<bits>[*]A<abits>` ("W4A16" weight-only, "W2*A8": 2-bit weights with bit
 * balance, 8-bit activations; K, V and Q take the activation bits):
 *
 * ```json
 * "tables": [{ "name": "weight-only", "settings": ["W4A16", "W2*A16"], "rows": ["RTN", "ABQ"] }]
 * ```
 *
 * Every row runs at every setting of every table that names it; each
 * setting is checked against each of its rows' methods.
 *
 * `method` is one of quant/spec.ts's METHODS or "fp32" (one row, no bits);
 * `options` are spec parameters (quant/spec.ts QUANT_PARAMS keys, checked
 * against every bit width); a row whose group does not divide every layer
 * width of the model is dropped ("drop", the default) or run with one group
 * per row ("per-row"), and the plan says which. `kernels` is null for no
 * timings; its shapes are "model" (the model's own linear shapes), "llama7b"
 * or "ROWSxCOLS".
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { checkSpec, defaultSpec, type Method, METHODS, type QuantSpec } from "../../quant/spec.ts";
import { EVAL_SETS, type EvalSetName } from "../../datasets/eval_sets.ts";
import { MAX_BITS, MIN_BITS } from "../../quant/format.ts";

/** The folder of the preset files. */
export const PRESET_DIR: string = fileURLToPath(new URL("../presets/", import.meta.url));

/** The preset `deno task eval` runs without `--preset`. */
export const DEFAULT_PRESET = "table1";

/** One table row of a preset. */
export interface PresetRow {
  /** Row label, e.g. "SqueezeLLM 0.45%". */
  name: string;
  /** A quantization method, or "fp32" for the unquantized model. */
  method: Method | "fp32";
  /** Spec parameters over the method's defaults (quant/spec.ts). */
  options: Record<string, unknown>;
  /** A group that does not divide every width: drop the row, or one group per row. @default "drop" */
  ifGroupIndivisible: "drop" | "per-row";
  /** The group came from `--group`: one that does not divide a width is an error. */
  groupGiven?: boolean;
}

/** A weight × activation setting of a preset table, e.g. "W2*A8". */
export interface PresetSetting {
  /** As written in the preset: `W<bits>[*]A<abits>`. */
  label: string;
  bits: number;
  /** 16 = weight-only. */
  abits: number;
  /** The "*": a fifth level on 2-bit grids (ABQ-LLM's W2*). */
  bitBalance: boolean;
}

/** A table of a preset: rows (by name) × settings. */
export interface PresetTable {
  name: string;
  settings: PresetSetting[];
  /** Names of rows of {@linkcode Preset.rows}, in the table's order. */
  rows: string[];
}

/** Kernel timings of a preset (eval/bench/kernels.ts). */
export interface PresetKernels {
  /** "model", "llama7b" or "ROWSxCOLS". */
  shapes: string[];
  batch: number[];
  runs: number;
}

/** A preset, validated. */
export interface Preset {
  name: string;
  /** The file it was read from. */
  file: string;
  description: string;
  rows: PresetRow[];
  /** Bit widths of every row; with `tables`, the distinct weight bits of their settings. */
  bits: number[];
  /** W×A tables in place of `bits` (each row at its tables' settings); null = every row at `bits`. */
  tables: PresetTable[] | null;
  datasets: EvalSetName[];
  /** Window length; null = the model's max_seq_len. */
  seqlen: number | null;
  /** First N windows of each set; null = every window. */
  limit: number | null;
  kernels: PresetKernels | null;
}

/** A preset file that cannot be used; the message names the file and the key. */
export class PresetError extends Error {
  override name = "PresetError";
}

/** The names of the preset files, sorted. */
export function presetNames(dir: string = PRESET_DIR): string[] {
  return [...Deno.readDirSync(dir)]
    .filter((e) => e.isFile && e.name.endsWith(".json"))
    .map((e) => e.name.slice(0, -5))
    .sort();
}

/**
 * Reads and validates preset `name` (eval/presets/NAME.json).
 *
 * @param name the preset's name
 * @param dir the folder of the presets @default {PRESET_DIR}
 * @returns the preset
 * @throws {PresetError} for an unknown preset (naming the known ones) or a file that is not a
 *   valid preset (naming the file, the key and what was expected)
 * @example
 * ```ts
 * const p = await loadPreset("table1");
 * p.bits; // [3, 4]
 * ```
 */
export async function loadPreset(name: string, dir: string = PRESET_DIR): Promise<Preset> {
  if (!/^[A-Za-z0-9_.-]+$/.test(name) || !presetNames(dir).includes(name)) {
    throw new PresetError(
      `--preset: unknown preset "${name}"; the presets are ${
        presetNames(dir).join(", ")
      } (files in ${dir})`,
    );
  }
  const file = `${dir.replace(/\/+$/, "")}/${name}.json`;
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(file));
  } catch (e) {
    throw new PresetError(`preset ${file}: not valid JSON (${(e as Error).message})`);
  }
  return parsePreset(json, name, file);
}

/**
 * Validates a preset's JSON.
 *
 * @param json the parsed file
 * @param name the preset's name
 * @param file the file, for messages
 * @throws {PresetError} naming the file, the key and what was expected
 */
export function parsePreset(json: unknown, name: string, file: string): Preset {
  const fail = (key: string, what: string): never => {
    throw new PresetError(`preset ${file}: "${key}" ${what}`);
  };
  if (!isObject(json)) return fail("(top level)", "must be a JSON object");
  const keys = ["description", "rows", "bits", "tables", "datasets", "seqlen", "limit", "kernels"];
  for (const k of Object.keys(json)) {
    if (!keys.includes(k)) fail(k, `is not a preset key (expected ${keys.join(", ")})`);
  }
  for (const k of keys) {
    if (k !== "bits" && k !== "tables" && !(k in json)) fail(k, "is missing");
  }
  if (("bits" in json) === ("tables" in json)) {
    fail("bits", `or "tables": give exactly one of them`);
  }
  const description = json.description;
  if (typeof description !== "string") fail("description", "must be a string");
  const tables = "tables" in json ? parseTables(json.tables, fail) : null;
  const bits = tables
    ? [...new Set(tables.flatMap((t) => t.settings.map((s) => s.bits)))]
    : intList(json.bits, "bits", MIN_BITS, MAX_BITS, fail);
  if (!Array.isArray(json.datasets)) fail("datasets", "must be a list");
  const datasets = (json.datasets as unknown[]).map((d, i) => {
    if (!(EVAL_SETS as readonly unknown[]).includes(d)) {
      fail(`datasets[${i}]`, `must be one of ${EVAL_SETS.join(", ")}; found ${JSON.stringify(d)}`);
    }
    return d as EvalSetName;
  });
  const seqlen = nullableInt(json.seqlen, "seqlen", 2, fail);
  const limit = nullableInt(json.limit, "limit", 1, fail);
  if (!Array.isArray(json.rows) || json.rows.length === 0) fail("rows", "must be a non-empty list");
  const rows = (json.rows as unknown[]).map((r, i) =>
    parseRow(r, `rows[${i}]`, tables ? [] : bits, fail)
  );
  const names = new Set<string>();
  for (const r of rows) {
    if (names.has(r.name)) fail("rows", `has two rows named "${r.name}"`);
    names.add(r.name);
  }
  if (tables) checkTables(tables, rows, fail);
  let kernels: PresetKernels | null = null;
  if (json.kernels !== null) {
    const k = json.kernels;
    if (!isObject(k)) return fail("kernels", "must be an object or null");
    for (const key of Object.keys(k)) {
      if (!["shapes", "batch", "runs"].includes(key)) {
        fail(`kernels.${key}`, "is not a kernels key (expected shapes, batch, runs)");
      }
    }
    if (!Array.isArray(k.shapes) || k.shapes.length === 0) {
      fail("kernels.shapes", "must be a non-empty list");
    }
    const shapes = (k.shapes as unknown[]).map((s, i) => {
      if (typeof s !== "string" || !/^(model|llama7b|\d+x\d+)$/.test(s)) {
        fail(`kernels.shapes[${i}]`, `must be "model", "llama7b" or "ROWSxCOLS"; found ${s}`);
      }
      return s as string;
    });
    kernels = {
      shapes,
      batch: intList(k.batch, "kernels.batch", 1, 8, fail),
      runs: nullableInt(k.runs, "kernels.runs", 1, fail) ?? fail("kernels.runs", "is required"),
    };
  }
  return {
    name,
    file,
    description: description as string,
    rows,
    bits,
    tables,
    datasets,
    seqlen,
    limit,
    kernels,
  };
}

/** A W×A setting as the papers write it: `W<bits>[*]A<abits>`. */
const SETTING = /^W([0-9]+)(\*?)A([0-9]+)$/;

/**
 * Parses a setting label, e.g. "W2*A8" → 2-bit weights with bit balance,
 * 8-bit activations.
 *
 * @returns the setting, or a message saying what is wrong
 * @example
 * ```ts
 * parseSetting("W4A16"); // { label: "W4A16", bits: 4, abits: 16, bitBalance: false }
 * ```
 */
export function parseSetting(label: string): PresetSetting | string {
  const m = SETTING.exec(label);
  if (!m) {
    return `must be W<bits>[*]A<abits> (e.g. "W4A16", "W2*A8"); found ${JSON.stringify(label)}`;
  }
  const bits = Number(m[1]), abits = Number(m[3]);
  if (bits < MIN_BITS || bits > MAX_BITS) {
    return `has ${bits}-bit weights; weight bits are ${MIN_BITS}..${MAX_BITS}`;
  }
  if (abits !== 16 && (abits < 2 || abits > 8)) {
    return `has ${abits}-bit activations; activation bits are 2..8, or 16 (off)`;
  }
  if (m[2] && bits !== 2) return `has "*" (bit balance) on ${bits}-bit weights; it is for 2 bits`;
  return { label, bits, abits, bitBalance: m[2] === "*" };
}

function parseTables(v: unknown, fail: (key: string, what: string) => never): PresetTable[] {
  if (!Array.isArray(v) || v.length === 0) return fail("tables", "must be a non-empty list");
  return v.map((t, i) => {
    const at = `tables[${i}]`;
    if (!isObject(t)) return fail(at, "must be an object");
    for (const k of Object.keys(t)) {
      if (!["name", "settings", "rows"].includes(k)) {
        fail(`${at}.${k}`, "is not a table key (expected name, settings, rows)");
      }
    }
    if (typeof t.name !== "string" || t.name === "") fail(`${at}.name`, "must be a string");
    const strings = (key: "settings" | "rows"): string[] => {
      const list = t[key];
      if (!Array.isArray(list) || list.length === 0) {
        fail(`${at}.${key}`, "must be a non-empty list");
      }
      return (list as unknown[]).map((x, j) => {
        if (typeof x !== "string") fail(`${at}.${key}[${j}]`, "must be a string");
        return x as string;
      });
    };
    const settings = strings("settings").map((label, j) => {
      const s = parseSetting(label);
      return typeof s === "string" ? fail(`${at}.settings[${j}]`, s) : s;
    });
    return { name: t.name as string, settings, rows: strings("rows") };
  });
}

/** Every table row names a row; every row is in a table; every setting suits its rows' methods. */
function checkTables(
  tables: PresetTable[],
  rows: PresetRow[],
  fail: (key: string, what: string) => never,
): void {
  for (const [i, t] of tables.entries()) {
    for (const [j, name] of t.rows.entries()) {
      const r = rows.find((x) => x.name === name);
      if (!r) {
        fail(
          `tables[${i}].rows[${j}]`,
          `names no row; the rows are ${rows.map((x) => x.name).join(", ")}`,
        );
      }
      if (r.method === "fp32") continue;
      for (const [k, s] of t.settings.entries()) {
        try {
          checkSpec(withOptions(r.method, s.bits, settingOptions(r.options, s)));
        } catch (e) {
          fail(`tables[${i}].settings[${k}]`, `for row "${name}": ${(e as Error).message}`);
        }
      }
    }
  }
  for (const r of rows) {
    if (!tables.some((t) => t.rows.includes(r.name))) {
      fail("rows", `has "${r.name}", which no table names`);
    }
  }
}

/**
 * The bit widths a row runs at, in order: every preset bit width, or the
 * settings of every table naming the row (each once), with the options each
 * runs with.
 */
export function rowSettings(
  preset: Preset,
  row: PresetRow,
  options: Record<string, unknown> = row.options,
): { bits: number; setting: PresetSetting | null; options: Record<string, unknown> }[] {
  if (!preset.tables) return preset.bits.map((bits) => ({ bits, setting: null, options }));
  const settings = preset.tables.filter((t) => t.rows.includes(row.name)).flatMap((t) =>
    t.settings
  );
  return settings
    .filter((s, i) => settings.findIndex((x) => x.label === s.label) === i)
    .map((s) => ({ bits: s.bits, setting: s, options: settingOptions(options, s) }));
}

/** A row's options at a W×A setting: its own, plus the setting's activation bits and bit balance. */
export function settingOptions(
  options: Record<string, unknown>,
  s: PresetSetting,
): Record<string, unknown> {
  return { ...options, abits: s.abits, bitBalance: s.bitBalance };
}

function parseRow(
  r: unknown,
  at: string,
  bits: number[],
  fail: (key: string, what: string) => never,
): PresetRow {
  if (!isObject(r)) return fail(at, "must be an object");
  for (const k of Object.keys(r)) {
    if (!["name", "method", "options", "ifGroupIndivisible"].includes(k)) {
      fail(`${at}.${k}`, "is not a row key (expected name, method, options, ifGroupIndivisible)");
    }
  }
  if (typeof r.name !== "string" || r.name === "") fail(`${at}.name`, "must be a string");
  const method = r.method;
  if (method !== "fp32" && !(METHODS as readonly unknown[]).includes(method)) {
    fail(`${at}.method`, `must be fp32 or one of ${METHODS.join(", ")}; found ${method}`);
  }
  const options = r.options ?? {};
  if (!isObject(options)) return fail(`${at}.options`, "must be an object");
  if (method === "fp32" && Object.keys(options).length > 0) {
    fail(`${at}.options`, "must be empty for fp32");
  }
  const policy = r.ifGroupIndivisible ?? "drop";
  if (policy !== "drop" && policy !== "per-row") {
    fail(`${at}.ifGroupIndivisible`, `must be "drop" or "per-row"; found ${policy}`);
  }
  if (method !== "fp32") {
    for (const b of bits) {
      try {
        checkSpec(withOptions(method as Method, b, options));
      } catch (e) {
        fail(`${at}.options`, `at ${b} bits: ${(e as Error).message}`);
      }
    }
  }
  return {
    name: r.name as string,
    method: method as Method | "fp32",
    options,
    ifGroupIndivisible: policy,
  };
}

/** The default spec of `method` at `bits` with `options` over it (nested keys merged). */
export function withOptions(
  method: Method,
  bits: number,
  options: Record<string, unknown>,
): QuantSpec {
  const base = defaultSpec(method, bits) as unknown as Record<string, unknown>;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(options)) {
    out[k] = isObject(v) && isObject(base[k]) ? { ...base[k] as object, ...v } : v;
  }
  return out as unknown as QuantSpec;
}

/** Command-line overrides of a preset's lists. */
export interface PresetOverrides {
  /** Keep the rows of these methods (and add a default row for a method the preset lacks). */
  methods?: string[];
  bits?: number[];
  datasets?: EvalSetName[];
  seqlen?: number;
  /** null = every window (`--limit all`). */
  limit?: number | null;
  /** Group size of every row whose method has groups (rtn, gptq, awq); checked strictly. */
  group?: number;
  /** Kernel shapes in place of the preset's; [] = no kernel timings. */
  kernelShapes?: string[];
}

/**
 * `preset` with the command line's lists in place of its own.
 *
 * @param preset a loaded preset
 * @param o the overrides
 * @returns a new preset; `methods` naming no method of the preset adds that method's default row
 * @throws {PresetError} for an unknown method
 */
export function applyOverrides(preset: Preset, o: PresetOverrides): Preset {
  let rows = preset.rows;
  if (o.methods) {
    for (const m of o.methods) {
      if (m !== "fp32" && !(METHODS as readonly string[]).includes(m)) {
        throw new PresetError(
          `--methods: unknown method "${m}"; expected some of fp32, ${METHODS.join(", ")}`,
        );
      }
    }
    rows = o.methods.flatMap((m) => {
      const own = preset.rows.filter((r) => r.method === m);
      return own.length > 0 ? own : [{
        name: m === "fp32" ? "FP32" : m.toUpperCase(),
        method: m as Method | "fp32",
        options: {},
        ifGroupIndivisible: "drop" as const,
      }];
    });
  }
  if (o.group !== undefined) {
    const g = o.group;
    const grouped = (m: string) => m === "rtn" || m === "gptq" || m === "awq";
    const seen = new Set<string>();
    rows = rows.flatMap((r) => {
      if (!grouped(r.method)) return [r];
      const options = { ...r.options, groupSize: g };
      const key = `${r.method}|${JSON.stringify(options)}`;
      if (seen.has(key)) return [];
      seen.add(key);
      const name = `${r.name.replace(/ g\d+$/, "")} g${g}`;
      return [{ ...r, name, options, ifGroupIndivisible: "drop" as const, groupGiven: true }];
    });
  }
  let tables = preset.tables;
  if (tables) {
    // rows as chosen above (a method the preset lacks joins every table); settings at --bits
    const names = rows.map((r) => r.name);
    tables = tables.map((t) => ({
      ...t,
      rows: [
        ...t.rows.filter((n) => names.includes(n)),
        ...names.filter((n) => !preset.rows.some((r) => r.name === n)),
      ],
      settings: t.settings.filter((s) => !o.bits || o.bits.includes(s.bits)),
    })).filter((t) => t.rows.length > 0 && t.settings.length > 0);
  }
  return {
    ...preset,
    rows,
    tables,
    bits: tables ? preset.bits.filter((b) => !o.bits || o.bits.includes(b)) : o.bits ?? preset.bits,
    datasets: o.datasets ?? preset.datasets,
    seqlen: o.seqlen ?? preset.seqlen,
    limit: o.limit === undefined ? preset.limit : o.limit,
    kernels: o.kernelShapes === undefined
      ? preset.kernels
      : o.kernelShapes.length === 0
      ? null
      : { batch: [1], runs: 10, ...preset.kernels, shapes: o.kernelShapes },
  };
}

function intList(
  v: unknown,
  key: string,
  min: number,
  max: number,
  fail: (key: string, what: string) => never,
): number[] {
  if (!Array.isArray(v) || v.length === 0) return fail(key, "must be a non-empty list");
  return v.map((x, i) => {
    if (!Number.isInteger(x) || x < min || x > max) {
      fail(`${key}[${i}]`, `must be an integer in ${min}..${max}; found ${JSON.stringify(x)}`);
    }
    return x as number;
  });
}

function nullableInt(
  v: unknown,
  key: string,
  min: number,
  fail: (key: string, what: string) => never,
): number | null {
  if (v === null || v === undefined) return null;
  if (!Number.isInteger(v) || (v as number) < min) {
    fail(key, `must be null or an integer ≥ ${min}; found ${JSON.stringify(v)}`);
  }
  return v as number;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
