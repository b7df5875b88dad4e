/**
 * The HTML report: a paper-style table (SqueezeLLM's Table 1 layout: method ×
 * bit width with average bits and perplexity per dataset) and vega-lite
 * charts rendered to inline SVG, all read back from the results store.
 *
 * @module
 */
import * as vl from "vega-lite";
import * as vega from "vega";
import type { ResultsStore } from "./store.ts";

/** One row of the paper-style table. */
export interface TableRow {
  variant: string;
  method: string;
  bits: number | null;
  avgBits: number;
  ppl: Record<string, number>; // dataset → perplexity
}

/** The latest perplexity of every (model, variant, dataset), as table rows per model. */
export async function pplTable(store: ResultsStore): Promise<Map<string, TableRow[]>> {
  const rows = await store.query(`
    select model, variant, method, bits, avg_bits, dataset, ppl from (
      select *, row_number() over (partition by model, variant, dataset order by recorded_at desc) rn
      from ppl_results) where rn = 1
    order by model, bits nulls first,
      list_position(['fp32', 'rtn', 'gptq', 'awq', 'squeezellm'], method), avg_bits, variant, dataset`);
  const out = new Map<string, TableRow[]>();
  for (const r of rows) {
    const model = String(r.model);
    const list = out.get(model) ?? [];
    out.set(model, list);
    let row = list.find((x) => x.variant === r.variant);
    if (!row) {
      row = {
        variant: String(r.variant),
        method: String(r.method),
        bits: r.bits === null ? null : Number(r.bits),
        avgBits: Number(r.avg_bits),
        ppl: {},
      };
      list.push(row);
    }
    row.ppl[String(r.dataset)] = Number(r.ppl);
  }
  return out;
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

/** Markdown (paper-style) table of one model's rows. */
export function markdownTable(rows: TableRow[]): string {
  const datasets = [...new Set(rows.flatMap((r) => Object.keys(r.ppl)))].sort();
  const head = `| variant | bits | avg bits | ${datasets.join(" | ")} |`;
  const sep = `|---|---|---|${datasets.map(() => "---").join("|")}|`;
  const body = rows.map((r) =>
    `| ${r.variant} | ${r.bits ?? "fp32"} | ${r.avgBits.toFixed(2)} | ${
      datasets.map((d) => (r.ppl[d] === undefined ? "—" : r.ppl[d].toFixed(3))).join(" | ")
    } |`
  );
  return [head, sep, ...body].join("\n");
}

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

/** The whole report as one self-contained HTML page. */
export async function renderReport(store: ResultsStore): Promise<string> {
  const tables = await pplTable(store);
  const sections: string[] = [];
  for (const [model, rows] of tables) {
    const datasets = [...new Set(rows.flatMap((r) => Object.keys(r.ppl)))].sort();
    const th = ["variant", "bits", "avg bits", ...datasets].map((h) => `<th>${esc(h)}</th>`).join(
      "",
    );
    const trs = rows.map((r) =>
      `<tr><td>${esc(r.variant)}</td><td>${r.bits ?? "fp32"}</td><td>${r.avgBits.toFixed(2)}</td>${
        datasets.map((d) => `<td>${r.ppl[d] === undefined ? "—" : r.ppl[d].toFixed(3)}</td>`).join(
          "",
        )
      }</tr>`
    ).join("\n");
    const points = rows.flatMap((r) =>
      Object.entries(r.ppl).map(([dataset, ppl]) => ({
        method: r.method,
        variant: r.variant,
        bits: r.bits ?? "fp32",
        avgBits: r.avgBits,
        dataset,
        ppl,
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
      `<h2>${esc(model)}</h2>\n<table><tr>${th}</tr>\n${trs}</table>\n<figure>${svg}</figure>`,
    );
  }
  const kernels = await store.query(`
    select format, bits, rows || '×' || cols shape, batch, median_us, gbps, fraction_of_copy, speedup_vs_f16,
      adapter->>'description' adapter
    from kernel_results order by recorded_at desc limit 200`);
  if (kernels.length) {
    const svg = await renderSvg({
      $schema: "https://vega.github.io/schema/vega-lite/v6.json",
      data: { values: kernels },
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
    esc(store.path)
  }</p>
${sections.join("\n") || "<p>No results recorded yet: run <code>deno task eval</code>.</p>"}
</body></html>`;
}
