/**
 * The report: paper-style tables (SqueezeLLM's Table 1 layout: method × bit
 * width with average bits and perplexity per dataset) and vega-lite charts
 * rendered to inline SVG, all read back from the results store.
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
 * @module
 */
import * as vl from "vega-lite";
import * as vega from "vega";
import type { ResultsStore } from "./store.ts";
import { CODE_VERSION, LEGACY_KEY_PREFIX } from "./identity.ts";
import { markdownTable } from "./markdown.ts";

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

const METHOD_ORDER = ["fp32", "rtn", "gptq", "awq", "squeezellm"];

/**
 * The stored perplexities as paper-style tables: the latest row of every
 * result key, one table per (model, seqlen, window scope).
 *
 * @param store an open store (read-only is enough)
 * @param options which results
 * @returns the tables, ordered by model, seqlen, full tables first
 */
export async function pplTables(
  store: ResultsStore,
  options: PplTablesOptions = {},
): Promise<PplTable[]> {
  let rows = await store.query(`
    select * exclude (rn) from (
      select result_key, config_key, dataset_key, model, model_sha256, variant, method, bits,
        info_bits, stored_bits, calib_source, calib_nsamples, calib_seed, identity_complete,
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
  const head = [
    "variant",
    "bits",
    "avg bits",
    ...t.columns.map((c) => c.label),
    "stored bits",
    "calibration",
  ];
  const lines = t.rows.map((r) => [
    r.label,
    String(r.bits ?? "fp32"),
    r.avgBits.toFixed(2),
    ...t.columns.map((c) => (r.ppl[c.key] === undefined ? "—" : r.ppl[c.key].toFixed(3))),
    r.storedBits === null ? "?" : r.storedBits.toFixed(2),
    r.calibration,
  ]);
  return markdownTable(head, lines);
}

/**
 * Every table as markdown, each under its title.
 * @param tables tables of {@linkcode pplTables}
 */
export function markdownReport(tables: PplTable[]): string {
  return tables.map((t) => `${t.title}\n\n${markdownPplTable(t)}`).join("\n\n");
}

/** Renders a vega-lite spec to an SVG string, headless. */
export async function renderSvg(spec: vl.TopLevelSpec): Promise<string> {
  const compiled = vl.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

/** What the HTML report shows, read from a store in a few short queries. */
export interface ReportData {
  /** The store file. */
  source: string;
  tables: PplTable[];
  kernels: Record<string, unknown>[];
}

/**
 * Reads what the report shows. Each query holds the file only while it runs,
 * so a sweep writing to it is never kept waiting for the rendering.
 *
 * @param store an open store (read-only is enough)
 */
export async function reportData(store: ResultsStore): Promise<ReportData> {
  return {
    source: store.path,
    tables: await pplTables(store),
    kernels: await store.query(`
      select format, bits, rows || '×' || cols shape, batch, median_us, gbps, fraction_of_copy,
        speedup_vs_f16, info_bits, stored_bits, adapter->>'description' adapter
      from kernel_results order by recorded_at desc limit 200`),
  };
}

/** The whole report as one self-contained HTML page. */
export async function renderReport(source: ResultsStore | ReportData): Promise<string> {
  const data = "tables" in source ? source : await reportData(source);
  const sections: string[] = [];
  for (const t of data.tables) {
    const th = [
      "variant",
      "bits",
      "avg bits",
      ...t.columns.map((c) => c.label),
      "stored bits",
      "calibration",
    ].map((h) => `<th>${esc(h)}</th>`).join("");
    const trs = t.rows.map((r) =>
      `<tr><td title="${esc(`config key ${r.configKey}`)}">${esc(r.label)}</td><td>${
        r.bits ?? "fp32"
      }</td><td>${r.avgBits.toFixed(2)}</td>${
        t.columns.map((c) =>
          `<td>${r.ppl[c.key] === undefined ? "—" : r.ppl[c.key].toFixed(3)}</td>`
        )
          .join("")
      }<td>${r.storedBits === null ? "?" : r.storedBits.toFixed(2)}</td><td>${
        esc(r.calibration)
      }</td></tr>`
    ).join("\n");
    const points = t.rows.flatMap((r) =>
      t.columns.filter((c) => r.ppl[c.key] !== undefined).map((c) => ({
        method: r.method,
        variant: r.label,
        bits: r.bits ?? "fp32",
        avgBits: r.avgBits,
        dataset: c.label,
        ppl: r.ppl[c.key],
      }))
    );
    // Perplexity against average bits per weight, one panel per dataset; the
    // fp32 model is a dashed reference line rather than a point at 32 bits.
    const svg = await renderSvg({
      $schema: "https://vega.github.io/schema/vega-lite/v6.json",
      data: { values: points },
      facet: { field: "dataset", type: "nominal", title: null },
      columns: 2,
      resolve: { scale: { y: "independent" } },
      spec: {
        width: 300,
        height: 200,
        layer: [
          {
            transform: [{ filter: "datum.method !== 'fp32'" }],
            mark: { type: "point", filled: true, size: 70 },
            encoding: {
              x: {
                field: "avgBits",
                type: "quantitative",
                title: "average bits per weight",
                scale: { zero: false },
              },
              y: {
                field: "ppl",
                type: "quantitative",
                title: "perplexity",
                scale: { type: "log", zero: false },
              },
              color: {
                field: "method",
                type: "nominal",
                sort: ["rtn", "gptq", "awq", "squeezellm"],
              },
              shape: { field: "bits", type: "nominal" },
              tooltip: [{ field: "variant" }, { field: "ppl", format: ".3f" }],
            },
          },
          {
            transform: [{ filter: "datum.method === 'fp32'" }],
            mark: { type: "rule", strokeDash: [4, 4], color: "#555" },
            encoding: { y: { field: "ppl", type: "quantitative" } },
          },
        ],
      },
    } as vl.TopLevelSpec);
    sections.push(
      `<h2>${esc(t.title)}</h2>\n<p>model sha256 ${esc(t.modelSha256.slice(0, 12))}…; ` +
        `columns: dataset (windows evaluated)</p>\n<table><tr>${th}</tr>\n${trs}</table>\n` +
        `<figure>${svg}</figure>`,
    );
  }
  if (data.kernels.length) {
    const svg = await renderSvg({
      $schema: "https://vega.github.io/schema/vega-lite/v6.json",
      data: { values: data.kernels },
      width: 420,
      height: 220,
      mark: { type: "bar" },
      encoding: {
        x: { field: "format", type: "nominal" },
        xOffset: { field: "bits", type: "nominal" },
        y: { field: "gbps", type: "quantitative", title: "effective GB/s" },
        color: { field: "bits", type: "nominal" },
      },
    });
    sections.push(`<h2>Kernels</h2><figure>${svg}</figure>`);
  }
  return `<!doctype html><html><head><meta charset="utf-8"><title>squeezebench report</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}</style></head>
<body><h1>squeezebench report</h1><p>Perplexity under the GPTQ protocol; source: ${
    esc(data.source)
  }</p>
${sections.join("\n") || "<p>No results recorded yet: run <code>deno task eval</code>.</p>"}
</body></html>`;
}
