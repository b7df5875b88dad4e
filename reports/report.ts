/**
 * The report: paper-style tables (SqueezeLLM's Table 1 layout: method × bit
 * width with average bits, perplexity per dataset and kernel speedup), charts
 * (vega-lite, rendered to inline SVG at build time), the provenance of every
 * run and an in-page SQL panel, all read back from one or more results stores.
 *
 * Every stored result is one cell, found by its key (reports/identity.ts):
 * the latest row of each `result_key`. Cells are never mixed across window
 * lengths or window counts: there is one table per (model checkpoint,
 * seqlen, window scope), where the scope is "every window" when the whole set
 * was evaluated and "first N windows" for a `--limit` run, and every column
 * header says how many windows its numbers cover. A row is one config key
 * (quantization + calibration + code version); rows of an older code version
 * or migrated from a store without identities are labelled so.
 *
 * {@linkcode writeReport} writes the report folder (reports/html.ts lays out
 * the page); {@linkcode renderReport} returns the page alone.
 *
 * @module
 */
import type * as vl from "vega-lite";
import { fileURLToPath } from "node:url";
import { type MergedResults, RESULT_TABLES, type ResultsReader } from "./results.ts";
import { CODE_VERSION, LEGACY_KEY_PREFIX } from "./identity.ts";
import { markdownTable } from "./markdown.ts";
import {
  type KernelPoint,
  kernelSpec,
  METHOD_ORDER,
  paretoSpec,
  type PplPoint,
  pplVsBitsSpec,
  renderSvg,
} from "./charts.ts";
import {
  CSS,
  esc,
  figureHtml,
  kernelTableHtml,
  paperTableHtml,
  runHtml,
  sqlPanelHtml,
  variantsTableHtml,
  variantsTableText,
} from "./html.ts";

export { renderSvg } from "./charts.ts";

/** One row of a paper-style table: one quantization config. */
export interface TableRow {
  /** The row's config key (reports/identity.ts). */
  configKey: string;
  /** Artifact name, e.g. "squeezellm.w3.s0.45". */
  variant: string;
  /** The name shown: the variant plus what tells apart rows that share it. */
  label: string;
  method: string;
  bits: number | null;
  /** Information bits per weight (the papers' "Avg. Bits"). */
  avgBits: number;
  /** Stored bits per weight, padding included; null for rows migrated without it. */
  storedBits: number | null;
  /** Calibration in short, e.g. "c4 ×128, seed 0"; "—" for none. */
  calibration: string;
  /** The stored quantization config (resolved spec + details); null for migrated rows without it. */
  quantConfig: Record<string, unknown> | null;
  /** Column key → perplexity. */
  ppl: Record<string, number>;
}

/** One column of a table: one dataset evaluated over a fixed number of windows. */
export interface TableColumn {
  /** Key of the column in {@linkcode TableRow.ppl}: the dataset name, made unique if needed. */
  key: string;
  dataset: string;
  windows: number;
  windowsAvailable: number;
  /** Header text, e.g. "wikitext2 (1591 w)". */
  label: string;
}

/** Results of one model checkpoint at one seqlen and one window scope. */
export interface PplTable {
  model: string;
  modelSha256: string;
  seqlen: number;
  /** True when every column covers its whole dataset; false for `--limit` results. */
  allWindows: boolean;
  /** e.g. "stories260K · seqlen 512 · every window". */
  title: string;
  columns: TableColumn[];
  rows: TableRow[];
}

/** Options of {@linkcode pplTables}. */
export interface PplTablesOptions {
  /** Only these result keys (e.g. the results of one sweep). @default {all} */
  resultKeys?: Iterable<string>;
}

/**
 * The stored perplexities as paper-style tables: the latest row of every
 * result key, one table per (model, seqlen, window scope).
 *
 * @param store an open store (read-only is enough)
 * @param options which results
 * @returns the tables, ordered by model, seqlen, full tables first
 */
export async function pplTables(
  store: ResultsReader,
  options: PplTablesOptions = {},
): Promise<PplTable[]> {
  let rows = await store.query(`
    select * exclude (rn) from (
      select result_key, config_key, dataset_key, model, model_sha256, variant, method, bits,
        info_bits, stored_bits, quant_config, calib_source, calib_nsamples, calib_seed, identity_complete,
        code_version, dataset, data_sha256, seqlen, windows, windows_available, ppl,
        row_number() over (partition by result_key order by recorded_at desc) rn
      from ppl_results) where rn = 1
    order by model, model_sha256, seqlen, bits nulls first,
      list_position(['${METHOD_ORDER.join("', '")}'], method), info_bits, variant, dataset`);
  if (options.resultKeys) {
    const keep = new Set(options.resultKeys);
    rows = rows.filter((r) => keep.has(String(r.result_key)));
  }
  const tables = new Map<string, PplTable & { colByKey: Map<string, TableColumn> }>();
  for (const r of rows) {
    const windows = Number(r.windows), available = Number(r.windows_available);
    const allWindows = windows >= available;
    const seqlen = Number(r.seqlen);
    const tkey = `${r.model}\u0000${r.model_sha256}\u0000${seqlen}\u0000${
      allWindows ? "all" : windows
    }`;
    let t = tables.get(tkey);
    if (!t) {
      t = {
        model: String(r.model),
        modelSha256: String(r.model_sha256),
        seqlen,
        allWindows,
        title: `${r.model} · seqlen ${seqlen} · ${
          allWindows ? "every window" : `first ${windows} windows (--limit)`
        }`,
        columns: [],
        rows: [],
        colByKey: new Map(),
      };
      tables.set(tkey, t);
    }
    const dkey = String(r.dataset_key);
    let col = t.colByKey.get(dkey);
    if (!col) {
      const dataset = String(r.dataset);
      col = {
        key: dataset,
        dataset,
        windows,
        windowsAvailable: available,
        label: `${dataset} (${windows} w)`,
      };
      t.colByKey.set(dkey, col);
      t.columns.push(col);
    }
    let row = t.rows.find((x) => x.configKey === r.config_key);
    if (!row) {
      row = {
        configKey: String(r.config_key),
        variant: String(r.variant),
        label: String(r.variant),
        method: String(r.method),
        bits: r.bits === null ? null : Number(r.bits),
        avgBits: Number(r.info_bits),
        storedBits: r.stored_bits === null ? null : Number(r.stored_bits),
        calibration: calibrationLabel(r),
        quantConfig: parseJson(r.quant_config),
        ppl: {},
      };
      if (!r.identity_complete) row.label += " (legacy)";
      else if (Number(r.code_version) !== CODE_VERSION) row.label += ` (code v${r.code_version})`;
      t.rows.push(row);
    }
    row.ppl[dkey] = Number(r.ppl);
  }
  const out = [...tables.values()].map(({ colByKey, ...t }) => {
    uniqueKeys(t.columns, colByKey, (c) => c.dataset, (c, k) => {
      c.key = `${c.dataset}#${k}`;
      c.label += ` #${k}`;
    });
    const keyOf = new Map([...colByKey].map(([dk, c]) => [dk, c.key]));
    for (const row of t.rows) {
      row.ppl = Object.fromEntries(Object.entries(row.ppl).map(([dk, v]) => [keyOf.get(dk)!, v]));
    }
    uniqueKeys(
      t.rows,
      new Map(t.rows.map((r) => [r.configKey, r])),
      (r) => `${r.label}\u0000${r.calibration}`,
      (r, k) => r.label += ` #${k}`,
    );
    t.columns.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return t;
  });
  return out.sort((a, b) =>
    a.model.localeCompare(b.model) || a.seqlen - b.seqlen ||
    Number(b.allWindows) - Number(a.allWindows) ||
    (a.columns[0]?.windows ?? 0) - (b.columns[0]?.windows ?? 0)
  );
}

/** Gives items that share a label a short key suffix from their key (hash) so none is mistaken for another. */
function uniqueKeys<T>(
  items: T[],
  byKey: Map<string, T>,
  labelOf: (t: T) => string,
  rename: (t: T, shortKey: string) => void,
): void {
  const count = new Map<string, number>();
  for (const t of items) count.set(labelOf(t), (count.get(labelOf(t)) ?? 0) + 1);
  for (const [key, t] of byKey) {
    if (count.get(labelOf(t))! > 1) {
      rename(t, key.replace(LEGACY_KEY_PREFIX, "").slice(0, 8));
    }
  }
}

function parseJson(v: unknown): Record<string, unknown> | null {
  if (v === null || v === undefined) return null;
  return typeof v === "string" ? JSON.parse(v) : v as Record<string, unknown>;
}

function calibrationLabel(r: Record<string, unknown>): string {
  if (r.calib_source === null || r.calib_source === undefined) {
    return r.identity_complete ? "—" : "?";
  }
  return `${r.calib_source} ×${r.calib_nsamples}, seed ${r.calib_seed}`;
}

/**
 * A table as markdown: variant, bits, average (information) bits, one column
 * per dataset (with its window count), stored bits and calibration.
 *
 * @param t one table of {@linkcode pplTables}
 */
export function markdownPplTable(t: PplTable): string {
  const { head, rows } = variantsTableText(t);
  return markdownTable(head, rows);
}

/**
 * Every table as markdown, each under its title.
 * @param tables tables of {@linkcode pplTables}
 */
export function markdownReport(tables: PplTable[]): string {
  return tables.map((t) =>
    [`${t.title}\n\n${markdownPplTable(t)}`, ...waTables(t).map(markdownPaperTable)].join("\n\n")
  ).join("\n\n");
}

/**
 * A paper table ({@linkcode waTables}) as markdown under its title: a row per
 * method family (with its calibration), a column per group and dataset
 * ("W2*A8 wikitext2 (1591 w)").
 */
export function markdownPaperTable(p: PaperTable): string {
  const cols = p.source.columns;
  const head = [
    "method",
    ...p.groups.flatMap((g) => cols.map((c) => `${g.label} ${c.label}`)),
  ];
  const rows = p.rows.map((r) => [
    r.calibration === "—" ? r.family : `${r.family} (${r.calibration})`,
    ...p.groups.flatMap((g) =>
      cols.map((c) => {
        const v = r.cells[g.key]?.row.ppl[c.key];
        return v === undefined ? "—" : v.toFixed(2);
      })
    ),
  ]);
  return `${p.title ?? p.source.title}\n\n${markdownTable(head, rows)}`;
}

/** Display names of the methods, as the papers write them. */
export const METHOD_LABELS: Record<string, string> = {
  fp32: "FP32",
  rtn: "RTN",
  gptq: "GPTQ",
  awq: "AWQ",
  squeezellm: "SqueezeLLM",
  smoothquant: "SmoothQuant",
  abq: "ABQ-LLM",
};

/**
 * The method family of a table row: its variant name without the bit width,
 * as people write it ("squeezellm.w3.s0.45" → "SqueezeLLM 0.45%",
 * "gptq.w4.g128.act" → "GPTQ g128 act-order"), plus what tells apart rows
 * that share it (calibration, code version, legacy).
 *
 * @param row a row of {@linkcode pplTables}
 */
export function familyLabel(row: TableRow): string {
  const [, ...rest] = row.label.split(/\s+/); // "(legacy)", "#1a2b3c4d": what tells rows apart
  const c = row.quantConfig;
  const pieces: string[] = [];
  if (c && row.method !== "fp32") {
    if (typeof c.groupSize === "number") pieces.push(`g${c.groupSize}`);
    if (c.sym === true) pieces.push("sym");
    if (c.actOrder === true) pieces.push("act-order");
    if (c.staticGroups === true) pieces.push("static groups");
    if (c.trueSequential === false) pieces.push("not true-sequential");
    const pct = Number(c.sensitivePct ?? 0) + Number(c.outlierPct ?? 0);
    if (c.outlierRange !== null && c.outlierRange !== undefined) {
      pieces.push(`${c.sensitivePct}% + range ${c.outlierRange}`);
    } else if (pct > 0) pieces.push(`${+pct.toFixed(4)}%`);
  } else if (!c) {
    // migrated rows without a config: the variant name's own pieces
    pieces.push(...row.variant.split(".").slice(1).filter((p) => !/^w\d+$/.test(p)));
  }
  return [METHOD_LABELS[row.method] ?? row.method, ...pieces, ...rest].join(" ");
}

/**
 * The kernel format label a row's weights are timed under, as the run plan
 * (eval/cli/plan.ts `kernelFormat`) and `deno task bench kernels` store it in
 * `kernel_results.format`: "uniform" or "uniform.gG" (RTN, GPTQ, AWQ with
 * groups of G), "lut" (SqueezeLLM dense-only), "lut+sparse" (SqueezeLLM with
 * the paper's 0.45 % sparse) or "lut+sparse.sP" (another sparse fraction P),
 * "f32" for the unquantized model; null where no kernel format applies.
 *
 * @param row a row of {@linkcode pplTables}
 */
export function kernelFormat(row: TableRow): string | null {
  if (row.method === "fp32") return "f32";
  const c = row.quantConfig ?? {};
  if (row.method === "squeezellm") {
    const pct = Number(c.sensitivePct ?? 0) + Number(c.outlierPct ?? 0);
    if (pct === 0 && (c.outlierRange === null || c.outlierRange === undefined)) return "lut";
    return pct === 0.45 ? "lut+sparse" : `lut+sparse.s${+pct.toFixed(4)}`;
  }
  if (!["rtn", "gptq", "awq", "smoothquant"].includes(row.method)) return null;
  const g = typeof c.groupSize === "number" ? c.groupSize : null;
  return g ? `uniform.g${g}` : "uniform";
}

/** One kernel timing: the latest of each (adapter, format, bits, shape, batch). */
export interface KernelRow {
  format: string;
  /** Code width; 16 / 32 for f16 / f32. */
  bits: number;
  rows: number;
  cols: number;
  batch: number;
  medianUs: number;
  minUs: number;
  gbps: number;
  fractionOfCopy: number;
  /** Speedup over the f16 kernel of the same shape, batch and adapter; null when none was timed. */
  speedup: number | null;
  infoBits: number | null;
  storedBits: number | null;
  /** The adapter's description, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)". */
  adapter: string;
  runId: string;
}

/** LLaMA-7B's linear shapes (rows × cols), the paper's kernel benchmark. */
const LLAMA7B_SHAPES = new Set(["4096×4096", "11008×4096", "4096×11008"]);

/**
 * The shape set a kernel timing belongs to in the tables: "LLaMA-7B" for
 * LLaMA-7B's layer shapes, "model shapes" for the rest (a small model's own layers).
 */
export function shapeSet(k: { rows: number; cols: number }): string {
  return LLAMA7B_SHAPES.has(`${k.rows}×${k.cols}`) ? "LLaMA-7B" : "model shapes";
}

/**
 * How many linears of each shape one LLaMA decoder layer has, read off the
 * shapes timed (the report does not know the model's config): the square
 * dim × dim is wq and wo (and wk, wv when no kv × dim shape with kv < dim
 * is there), kv × dim is wk and wv, hidden × dim is w1 and w3 when its
 * transpose dim × hidden (w2) is there too; anything else (the classifier)
 * is no layer's. These are the counts eval/cli/plan.ts's `layerCounts`
 * takes from the config. Without a square shape the shapes are not a layer:
 * each counts once.
 *
 * @param shapes "ROWS×COLS" of one shape set
 * @returns shape → linears per layer (0: not in a layer)
 * @example
 * ```ts
 * layerWeights(["4096×4096", "11008×4096", "4096×11008"]); // 4, 2, 1
 * ```
 */
export function layerWeights(shapes: readonly string[]): Map<string, number> {
  const dims = shapes.map((s) => s.split("×").map(Number) as [number, number]);
  const has = (r: number, c: number) => dims.some(([a, b]) => a === r && b === c);
  const squares = dims.filter(([r, c]) => r === c).map(([r]) => r);
  if (squares.length === 0) return new Map(shapes.map((s) => [s, 1]));
  const dim = Math.max(...squares);
  const kv = dims.some(([r, c]) => c === dim && r < dim);
  return new Map(shapes.map((s, i) => {
    const [r, c] = dims[i];
    if (r === dim && c === dim) return [s, kv ? 2 : 4];
    if (c === dim && r < dim) return [s, 2];
    if (c === dim && has(dim, r)) return [s, 2];
    if (r === dim && has(c, dim)) return [s, 1];
    return [s, 0];
  }));
}

/** A table's kernel speedups: which adapter, and per shape set which shapes with what weight. */
export interface SpeedupSource {
  adapter: string;
  /** Shape set → shape → linears per decoder layer, e.g. {"LLaMA-7B": {"4096×4096": 4, …}}. */
  shapes: Record<string, Record<string, number>>;
}

/**
 * Kernel speedups over f16 per (format, bits, shape set), on one adapter (the
 * one timed last), at batch 1: f16's time over the format's, both summed over
 * the set's shapes, each weighted by its linears in one decoder layer
 * ({@linkcode layerWeights}): the speedup of a decoder layer's linears, as
 * `deno task eval` prints it. Each shape's f16 time is the one of the
 * format's own timing run (speedup × time). A format counts only the shapes
 * it was timed on.
 *
 * @param kernels rows of {@linkcode ReportData.kernels}, newest first
 * @returns the speedups by `${format}|${bits}|${set}` and where they come from, or null without timings
 */
export function kernelSpeedups(
  kernels: KernelRow[],
): { speedup: Map<string, number>; source: SpeedupSource } | null {
  const timed = kernels.filter((k) => k.batch === 1 && k.speedup !== null);
  if (timed.length === 0) return null;
  const adapter = timed[0].adapter;
  const mine = timed.filter((k) => k.adapter === adapter);
  const bySet = Map.groupBy(mine, (k) => shapeSet(k));
  const shapes: Record<string, Record<string, number>> = {};
  const sums = new Map<string, { f16: number; fmt: number }>();
  for (const [set, ks] of [...bySet].sort(([a], [b]) => a.localeCompare(b))) {
    const weights = layerWeights([...new Set(ks.map((k) => `${k.rows}×${k.cols}`))].sort());
    shapes[set] = Object.fromEntries(weights);
    for (const k of ks) {
      const w = weights.get(`${k.rows}×${k.cols}`)!;
      if (w === 0) continue;
      const key = `${k.format}|${k.bits}|${set}`;
      const s = sums.get(key) ?? { f16: 0, fmt: 0 };
      s.f16 += w * k.speedup! * k.medianUs;
      s.fmt += w * k.medianUs;
      sums.set(key, s);
    }
  }
  return {
    speedup: new Map([...sums].map(([k, s]) => [k, s.f16 / s.fmt])),
    source: { adapter, shapes },
  };
}

/** One cell group of a paper table: one family at one bit width (or W×A setting). */
export interface PaperCell {
  row: TableRow;
  /** Shape set → speedup over f16 (absent when not timed). */
  speedup: Record<string, number>;
}

/** One row of a paper table: a method family, with a cell per column group. */
export interface PaperRow {
  family: string;
  method: string;
  /** True for the unquantized model, shown in every group and never "best". */
  baseline: boolean;
  calibration: string;
  /** Column group key (bit width, or W×A setting) → cell. */
  cells: Record<string, PaperCell>;
}

/** A column group of a paper table: a bit width ("3-bit") or a W×A setting ("W2*A8"). */
export interface PaperGroup {
  key: string;
  label: string;
}

/**
 * A table in a paper's layout: rows = methods, column groups = bit widths
 * (SqueezeLLM's Table 1) or weight × activation settings (ABQ-LLM's Tables
 * 1–2).
 */
export interface PaperTable {
  /** The table of {@linkcode pplTables} it lays out. */
  source: PplTable;
  /** A heading of its own (the W×A tables); null for the main table. */
  title: string | null;
  /** The bit-width groups: 3 and 4 where stored, else every width stored; [] for a W×A table. */
  bits: number[];
  /** The column groups, in order. */
  groups: PaperGroup[];
  /** Speedup columns per group (shape sets), empty without kernel timings. */
  speedupSets: string[];
  rows: PaperRow[];
  /** Where the speedups come from; null without kernel timings. */
  speedupSource: SpeedupSource | null;
}

/**
 * A row's weight × activation setting as ABQ-LLM writes it: "W4A16"
 * (weight-only), "W2*A8" (2-bit weights with bit balance, 8-bit
 * activations), with "KV<k>" when Q, K and V take other bits than the
 * activations; null for fp32.
 *
 * @param row a row of {@linkcode pplTables}
 */
export function settingLabel(row: TableRow): string | null {
  if (row.bits === null) return null;
  const c = row.quantConfig ?? {};
  const abits = Number(c.abits ?? 16);
  const kv = c.kvBits === null || c.kvBits === undefined ? abits : Number(c.kvBits);
  const star = c.bitBalance === true && row.bits === 2 ? "*" : "";
  return `W${row.bits}${star}A${abits}${kv !== abits ? `KV${kv}` : ""}`;
}

/** Rows by family, a cell per group (`groupOf`: a row's group, or null to leave it out). */
function familyRows(
  t: PplTable,
  groups: PaperGroup[],
  groupOf: (r: TableRow) => string | null,
  speedupOf: (r: TableRow, group: string) => Record<string, number>,
): PaperRow[] {
  const rows: PaperRow[] = [];
  for (const r of t.rows) {
    const g = r.bits === null ? null : groupOf(r);
    if (r.bits !== null && (g === null || !groups.some((x) => x.key === g))) continue;
    const family = familyLabel(r);
    let row = rows.find((x) => x.family === family && x.calibration === r.calibration);
    if (!row) {
      row = {
        family,
        method: r.method,
        baseline: r.bits === null,
        calibration: r.calibration,
        cells: {},
      };
      rows.push(row);
    }
    for (const key of g === null ? groups.map((x) => x.key) : [g]) {
      row.cells[key] = { row: r, speedup: speedupOf(r, key) };
    }
  }
  // Rows of one method in a fixed order (family, then calibration), the same in every table
  // whichever settings each holds.
  return rows.sort((a, b) =>
    Number(b.baseline) - Number(a.baseline) ||
    METHOD_ORDER.indexOf(a.method) - METHOD_ORDER.indexOf(b.method) ||
    a.family.localeCompare(b.family) || a.calibration.localeCompare(b.calibration)
  );
}

/**
 * Lays out a table of {@linkcode pplTables} as SqueezeLLM's Table 1: one row
 * per method family (the variant without its bit width), one column group
 * per bit width with the average bits, the perplexity per dataset and the
 * kernel speedup over f16 of the row's storage format. Only weight-only rows
 * without bit balance take part ({@linkcode waTables} lays out the others).
 *
 * @param t a table of {@linkcode pplTables}
 * @param kernels kernel timings ({@linkcode ReportData.kernels})
 */
export function paperTable(t: PplTable, kernels: KernelRow[] = []): PaperTable {
  const plain = (r: TableRow) => settingLabel(r) === `W${r.bits}A16`;
  const stored = [...new Set(t.rows.flatMap((r) => r.bits === null || !plain(r) ? [] : [r.bits]))]
    .sort((a, b) => a - b);
  const bits = stored.some((b) => b === 3 || b === 4)
    ? stored.filter((b) => b === 3 || b === 4)
    : stored;
  const sp = kernelSpeedups(kernels);
  const speedupSets = sp ? Object.keys(sp.source.shapes).sort() : [];
  const rows = familyRows(
    t,
    bits.map((b) => ({ key: String(b), label: `${b}-bit` })),
    (r) => plain(r) ? String(r.bits) : null,
    (r, group) => {
      const format = kernelFormat(r);
      const speedup: Record<string, number> = {};
      for (const set of speedupSets) {
        const kb = r.bits === null ? 32 : Number(group);
        const v = format && sp?.speedup.get(`${format}|${kb}|${set}`);
        if (v) speedup[set] = v;
      }
      return speedup;
    },
  );
  return {
    source: t,
    title: null,
    bits,
    groups: bits.map((b) => ({ key: String(b), label: `${b}-bit` })),
    speedupSets,
    rows,
    speedupSource: sp?.source ?? null,
  };
}

/** ABQ-LLM's settings in its tables' order: Table 1 (weight-only), Table 2 (weight-activation). */
export const ABQ_SETTINGS: readonly string[] = [
  "W4A16",
  "W3A16",
  "W2A16",
  "W2*A16",
  "W8A8",
  "W6A6",
  "W4A8",
  "W4A4",
  "W2A8",
  "W2*A8",
];

/**
 * ABQ-LLM's Tables 1–2 layout of a table of {@linkcode pplTables}: rows =
 * method families, column groups = weight × activation settings
 * ({@linkcode settingLabel}), one table of the weight-only settings and one
 * of the weight-activation settings, each with the settings stored (ABQ's
 * in its order, others after). Shown only when the table holds what
 * SqueezeLLM's layout leaves out or ABQ-LLM's methods: a row with quantized
 * activations or bit balance, or an ABQ-LLM or SmoothQuant row.
 *
 * @param t a table of {@linkcode pplTables}
 * @returns zero, one or two tables
 */
export function waTables(t: PplTable): PaperTable[] {
  const shown = t.rows.some((r) => {
    const s = settingLabel(r);
    return s !== null &&
      (!s.endsWith("A16") || s.includes("*") || r.method === "abq" || r.method === "smoothquant");
  });
  if (!shown) return [];
  const order = (s: string) => {
    const i = ABQ_SETTINGS.indexOf(s);
    return i < 0 ? ABQ_SETTINGS.length : i;
  };
  const out: PaperTable[] = [];
  for (const weightOnly of [true, false]) {
    const settings = [
      ...new Set(t.rows.flatMap((r) => {
        const s = settingLabel(r);
        return s !== null && s.endsWith("A16") === weightOnly ? [s] : [];
      })),
    ].sort((a, b) => order(a) - order(b) || a.localeCompare(b));
    if (settings.length === 0) continue;
    const groups = settings.map((s) => ({ key: s, label: s }));
    out.push({
      source: t,
      title: weightOnly
        ? "Weight-only quantization (ABQ-LLM Table 1 layout)"
        : "Weight-activation quantization (ABQ-LLM Table 2 layout)",
      bits: [],
      groups,
      speedupSets: [],
      rows: familyRows(t, groups, settingLabel, () => ({})),
      speedupSource: null,
    });
  }
  return out;
}

/** A run of `deno task ...` and what it recorded: the report's provenance section. */
export interface RunProvenance {
  runId: string;
  command: string;
  gitCommit: string;
  codeVersion: number | null;
  denoVersion: string;
  host: string;
  startedAt: string;
  /** The store file it was read from. */
  storeFile: string;
  /** Models evaluated: name and checkpoint sha256. */
  models: { model: string; sha256: string }[];
  /** Evaluation data: dataset, file, its sha256, protocol, seqlen, windows, tokens sha256. */
  datasets: Record<string, unknown>[];
  /** Calibration data: source, file, sha256, windows, seed, tokens sha256. */
  calibrations: Record<string, unknown>[];
  /** Full configs: variant, config key, resolved spec + details (JSON). */
  configs: { variant: string; configKey: string; config: unknown }[];
  /** Kernel adapters it timed on (full adapter JSON). */
  adapters: unknown[];
  /** Results it recorded: perplexities and kernel timings. */
  pplCount: number;
  kernelCount: number;
}

/** What the report shows, read from a store (or merged stores) in a few short queries. */
export interface ReportData {
  /** The store file(s). */
  source: string;
  tables: PplTable[];
  kernels: KernelRow[];
  runs: RunProvenance[];
  /** Protocol text per dataset and data file (the footnotes quote it). */
  protocols: { dataset: string; protocol: string; dataSha256: string | null }[];
  /** AWQ rows stored with one group per row (the g128 fallback on narrow models). */
  awqPerRow: boolean;
}

/**
 * Reads what the report shows. Each query holds the file only while it runs,
 * so a sweep writing to it is never kept waiting for the rendering.
 *
 * @param store an open store (read-only is enough) or merged stores (reports/results.ts)
 */
export async function reportData(store: ResultsReader): Promise<ReportData> {
  const kernels = (await store.query(`
    select * exclude (rn) from (
      select format, bits, rows, cols, batch, median_us, min_us, gbps, fraction_of_copy,
        speedup_vs_f16, info_bits, stored_bits, coalesce(adapter->>'description', '?') adapter,
        run_id, recorded_at,
        row_number() over (partition by adapter->>'description', format, bits, rows, cols, batch
          order by recorded_at desc) rn
      from kernel_results) where rn = 1
    order by recorded_at desc, rows, cols, batch, format, bits`)).map((k): KernelRow => ({
    format: String(k.format),
    bits: Number(k.bits ?? (k.format === "f16" ? 16 : 32)),
    rows: Number(k.rows),
    cols: Number(k.cols),
    batch: Number(k.batch),
    medianUs: Number(k.median_us),
    minUs: Number(k.min_us),
    gbps: Number(k.gbps),
    fractionOfCopy: Number(k.fraction_of_copy),
    speedup: k.speedup_vs_f16 === null ? null : Number(k.speedup_vs_f16),
    infoBits: k.info_bits === null ? null : Number(k.info_bits),
    storedBits: k.stored_bits === null ? null : Number(k.stored_bits),
    adapter: String(k.adapter),
    runId: String(k.run_id),
  }));
  // A speedup the bench did not store is computed from the f16 kernel of the same shape.
  const f16 = new Map(
    kernels.filter((k) => k.format === "f16").map((
      k,
    ) => [`${k.adapter}|${k.rows}|${k.cols}|${k.batch}`, k.medianUs]),
  );
  for (const k of kernels) {
    const base = f16.get(`${k.adapter}|${k.rows}|${k.cols}|${k.batch}`);
    if (k.speedup === null && base !== undefined) k.speedup = base / k.medianUs;
  }
  const cols = new Set(
    (await store.query("select column_name from (describe ppl_results)")).map((r) =>
      String(r.column_name)
    ),
  );
  const storeFile = cols.has("store_file") ? "store_file" : `'${store.path.replaceAll("'", "''")}'`;
  const runs = await store.query(`
    select run_id, command, git_commit, code_version, deno_version, host,
      strftime(started_at, '%Y-%m-%d %H:%M:%S') started_at,
      ${storeFile.replace("store_file", "r.store_file")} store_file
    from runs r order by started_at`);
  const ppl = await store.query(`
    select run_id, model, model_sha256, variant, config_key, quant_config, dataset, data_file,
      data_sha256, protocol, seqlen, windows, tokens_sha256, calib_source, calib_file,
      calib_sha256, calib_nsamples, calib_seqlen, calib_seed, calib_tokens_sha256
    from ppl_results order by recorded_at`);
  const kernelRuns = await store.query(`
    select run_id, list(distinct adapter::varchar) adapters, count(*)::integer n
    from kernel_results group by run_id`);
  const uniq = <T>(xs: T[]) => [...new Map(xs.map((x) => [JSON.stringify(x), x])).values()];
  const provenance = runs.map((r): RunProvenance => {
    const mine = ppl.filter((p) => p.run_id === r.run_id);
    const k = kernelRuns.find((x) => x.run_id === r.run_id);
    return {
      runId: String(r.run_id),
      command: String(r.command),
      gitCommit: String(r.git_commit),
      codeVersion: r.code_version === null ? null : Number(r.code_version),
      denoVersion: String(r.deno_version),
      host: String(r.host),
      startedAt: String(r.started_at),
      storeFile: String(r.store_file),
      models: uniq(mine.map((p) => ({ model: String(p.model), sha256: String(p.model_sha256) }))),
      datasets: uniq(mine.map((p) => ({
        dataset: p.dataset,
        file: p.data_file,
        sha256: p.data_sha256,
        seqlen: p.seqlen,
        windows: p.windows,
        tokensSha256: p.tokens_sha256,
        protocol: p.protocol,
      }))),
      calibrations: uniq(
        mine.filter((p) => p.calib_source !== null).map((p) => ({
          source: p.calib_source,
          file: p.calib_file,
          sha256: p.calib_sha256,
          windows: p.calib_nsamples,
          seqlen: p.calib_seqlen,
          seed: p.calib_seed,
          tokensSha256: p.calib_tokens_sha256,
        })),
      ),
      configs: uniq(mine.map((p) => ({
        variant: String(p.variant),
        configKey: String(p.config_key),
        config: parseJson(p.quant_config),
      }))),
      adapters: ((k?.adapters as string[] | undefined) ?? []).map((a) => JSON.parse(a)),
      pplCount: mine.length,
      kernelCount: Number(k?.n ?? 0),
    };
  });
  const protocols = uniq(ppl.map((p) => ({
    dataset: String(p.dataset),
    protocol: String(p.protocol),
    dataSha256: p.data_sha256 === null ? null : String(p.data_sha256),
  })));
  const awqPerRow = (await store.query(
    "select count(*)::integer n from ppl_results where method = 'awq' and group_size is null",
  ))[0].n as number > 0;
  return {
    source: store.path,
    tables: await pplTables(store),
    kernels,
    runs: provenance,
    protocols,
    awqPerRow,
  };
}

/** Options of {@linkcode renderReport}. */
export interface RenderOptions {
  /**
   * The page is written into a report folder ({@linkcode writeReport}): chart
   * specs are linked as files and the SQL panel is included. @default {false}
   */
  folder?: boolean;
}

/** The DuckDB file of the merged results in a report folder's `data/`, which the SQL panel attaches. */
export const RESULTS_DB = "results.duckdb";

/** The page and its charts' specs (each written as `charts/<id>.vl.json` in a folder). */
export interface RenderedReport {
  html: string;
  charts: { id: string; spec: object }[];
}

/**
 * The report page and its chart specs.
 *
 * @param data what {@linkcode reportData} read
 * @param options folder or single page
 */
export async function renderPage(
  data: ReportData,
  options: RenderOptions = {},
): Promise<RenderedReport> {
  const folder = options.folder ?? false;
  const charts: { id: string; spec: object }[] = [];
  const figure = async (id: string, title: string, spec: vl.TopLevelSpec) => {
    charts.push({ id, spec });
    return figureHtml({
      id,
      title,
      svg: await renderSvg(spec),
      specHref: folder ? `charts/${id}.vl.json` : null,
    });
  };
  const tableSections: string[] = [];
  const chartSections: string[] = [];
  for (const [i, t] of data.tables.entries()) {
    const p = paperTable(t, data.kernels);
    const id = `t${i + 1}`;
    tableSections.push(
      `<section class="model" id="${id}"><h3>${esc(t.title)}</h3>` +
        `<p class="muted">model sha256 <code>${esc(t.modelSha256)}</code></p>` +
        (p.groups.length > 0 ? paperTableHtml(p, data) : "") +
        waTables(t).map((w) => `<h4>${esc(w.title!)}</h4>` + paperTableHtml(w, data)).join("") +
        `<details><summary>Every stored variant of this table (${t.rows.length}), with stored ` +
        `bits (bytes as laid out, padding included)</summary>${
          variantsTableHtml(t)
        }</details></section>`,
    );
    const families = p.rows.map((r) => r.family);
    // the charts plot weight-only rows (bits on the x axis); W×A rows are in the tables
    const points: PplPoint[] = t.rows.filter((r) =>
      [null, `W${r.bits}A16`].includes(settingLabel(r))
    )
      .flatMap((r) =>
        t.columns.filter((c) => r.ppl[c.key] !== undefined).map((c) => ({
          family: familyLabel(r),
          method: r.method,
          variant: r.label,
          bits: r.bits,
          avgBits: r.avgBits,
          dataset: c.label,
          ppl: r.ppl[c.key],
        }))
      );
    // every family at every width, not only the table's 3 and 4 bits
    for (const f of points.map((x) => x.family)) if (!families.includes(f)) families.push(f);
    if (!points.some((x) => x.bits !== null)) continue;
    chartSections.push(
      `<h3>${esc(t.title)}</h3>` +
        await figure(
          `ppl-vs-bits-${id}`,
          `Perplexity vs bits per weight, per method (dashed: FP32)`,
          pplVsBitsSpec(points, families),
        ) +
        await figure(
          `pareto-${id}`,
          `Perplexity vs average bits per weight, every stored variant, with the Pareto front`,
          paretoSpec(points.map((x) => ({ ...x })), families),
        ),
    );
  }
  const kernelSections: string[] = [];
  const byAdapter = Map.groupBy(data.kernels, (k) => k.adapter);
  for (const [j, [adapter, ks]] of [...byAdapter].entries()) {
    const points: KernelPoint[] = ks.map((k) => ({
      format: k.format,
      bits: k.bits,
      shape: `${k.rows}×${k.cols}`,
      batch: k.batch,
      medianUs: k.medianUs,
      speedup: k.speedup,
      adapter: k.adapter,
    }));
    kernelSections.push(
      `<h3>${esc(adapter)}</h3>` +
        await figure(
          `kernel-latency-a${j + 1}`,
          `Kernel latency vs bits per format, per shape (dashed: f16, dotted: f32)`,
          kernelSpec(points, "latency"),
        ) +
        await figure(
          `kernel-speedup-a${j + 1}`,
          `Kernel speedup over f16 vs bits per format, per shape`,
          kernelSpec(points, "speedup"),
        ) +
        `<details><summary>Every timing on this adapter (${ks.length})</summary>${
          kernelTableHtml(ks)
        }</details>`,
    );
  }
  const nav = [
    ["tables", "Tables"],
    ["charts", "Charts"],
    ["kernels", "Kernels"],
    ...(folder ? [["sql-panel", "SQL"]] : []),
    ["provenance", "Provenance"],
  ].map(([id, name]) => `<a href="#${id}">${name}</a>`).join("");
  const nResults = data.tables.reduce(
    (n, t) => n + t.rows.reduce((m, r) => m + Object.keys(r.ppl).length, 0),
    0,
  );
  const html = `<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><title>squeezebench report</title><style>${CSS}</style></head>
<body><main><header><h1>squeezebench report</h1>
<p class="sub-title">${count(nResults, "perplexity", "perplexities")}, ${
    count(data.kernels.length, "kernel timing")
  } and ${count(data.runs.length, "run")} from <code>${
    esc(data.source)
  }</code>, code version ${CODE_VERSION}.</p><nav>${nav}</nav></header>
<section id="tables"><h2>Tables</h2>${
    tableSections.join("\n") ||
    "<p>No perplexities recorded yet: run <code>deno task eval</code>.</p>"
  }</section>
<section id="charts"><h2>Charts</h2>${
    chartSections.join("\n") || "<p>No quantized results yet.</p>"
  }</section>
<section id="kernels"><h2>Kernels</h2>${
    kernelSections.join("\n") ||
    "<p>No kernel timings recorded: <code>deno task bench kernels --store FILE</code> records them.</p>"
  }</section>
${
    folder
      ? `<section id="sql-panel"><h2>SQL</h2>${
        sqlPanelHtml(RESULTS_DB, [...RESULT_TABLES])
      }</section>`
      : ""
  }
<section id="provenance"><h2>Provenance</h2><p class="muted">One entry per run: the command, commit, code version, data and model hashes and every config it recorded.</p>${
    data.runs.length
      ? `<div class="${data.runs.length > 8 ? "runs many" : "runs"}">${
        data.runs.map(runHtml).join("\n")
      }</div>`
      : "<p>No runs recorded.</p>"
  }</section>
</main></body></html>`;
  return { html, charts };
}

const count = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/**
 * The report as one HTML page (charts inline; no SQL panel, which needs the
 * report folder of {@linkcode writeReport}).
 *
 * @param source an open store or merged stores, or data already read
 */
export async function renderReport(source: ResultsReader | ReportData): Promise<string> {
  const data = "tables" in source ? source : await reportData(source);
  return (await renderPage(data)).html;
}

/** What {@linkcode writeReport} wrote. */
export interface WrittenReport {
  /** The report folder. */
  dir: string;
  /** `<dir>/index.html`. */
  index: string;
  data: ReportData;
  /** Every file written, relative to `dir`. */
  files: string[];
}

/** The duckdb-wasm files the SQL panel loads, copied from the npm package. */
export const DUCKDB_WASM_FILES = ["duckdb-browser-eh.worker.js", "duckdb-eh.wasm"];

/**
 * Writes the report folder: `index.html` (tables, charts as inline SVG,
 * provenance, SQL panel), `charts/<id>.vl.json` (each chart's vega-lite spec,
 * data inline), `data/results.duckdb` (the merged results, which the SQL
 * panel attaches), `data/<table>.parquet` (the same tables, for any other
 * tool) and `assets/` (the panel's script and duckdb-wasm). Nothing in it is fetched from the network.
 *
 * @param results the merged stores (reports/results.ts)
 * @param dir the report folder, created if missing; files of a previous report are replaced
 * @returns the files written and the data shown
 * @throws {Error} naming the duckdb-wasm package when it is not installed (`deno install`)
 * @example
 * ```ts
 * const results = await MergedResults.open(["out/results.duckdb"]);
 * await writeReport(results, "out/report");
 * results.close();
 * ```
 */
export async function writeReport(results: MergedResults, dir: string): Promise<WrittenReport> {
  const wasmDir = fileURLToPath(
    new URL("../node_modules/@duckdb/duckdb-wasm/dist/", import.meta.url),
  );
  for (const f of DUCKDB_WASM_FILES) {
    try {
      await Deno.stat(`${wasmDir}${f}`);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new Error(
          `${wasmDir}${f} is missing: run "deno install" (the report copies duckdb-wasm from it)`,
        );
      }
      throw e;
    }
  }
  const data = await reportData(results);
  for (const sub of ["charts", "data", "assets"]) {
    await Deno.mkdir(`${dir}/${sub}`, { recursive: true });
  }
  const files: string[] = [];
  const tables = await results.exportParquet(`${dir}/data`);
  files.push(...Object.values(tables).map((f) => `data/${f}`));
  await results.exportDuckDb(`${dir}/data/${RESULTS_DB}`);
  files.push(`data/${RESULTS_DB}`);
  for (const f of DUCKDB_WASM_FILES) {
    await Deno.copyFile(`${wasmDir}${f}`, `${dir}/assets/${f}`);
    files.push(`assets/${f}`);
  }
  await bundleSqlPanel(`${dir}/assets/sql_panel.js`);
  files.push("assets/sql_panel.js");
  const page = await renderPage(data, { folder: true });
  for (const c of page.charts) {
    await Deno.writeTextFile(
      `${dir}/charts/${c.id}.vl.json`,
      JSON.stringify(c.spec, null, 1) + "\n",
    );
    files.push(`charts/${c.id}.vl.json`);
  }
  await Deno.writeTextFile(`${dir}/index.html`, page.html);
  files.push("index.html");
  return { dir, index: `${dir}/index.html`, data, files };
}

/** Bundles reports/assets/sql_panel.ts with duckdb-wasm's JS for the browser (`deno bundle`). */
async function bundleSqlPanel(out: string): Promise<void> {
  const entry = fileURLToPath(new URL("./assets/sql_panel.ts", import.meta.url));
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--quiet", "--platform", "browser", "--minify", "-o", out, entry],
    cwd: fileURLToPath(new URL("../", import.meta.url)),
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!r.success) {
    throw new Error(
      `deno bundle ${entry} failed (the report's SQL panel script): ${
        new TextDecoder().decode(r.stderr)
      }`,
    );
  }
}
