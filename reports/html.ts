/**
 * The report page's HTML: the paper tables with their footnotes, the table of
 * every stored variant, chart figures, the kernel timings, the SQL panel and
 * the provenance of every run. Pure functions of reports/report.ts's data;
 * reports/report.ts renders the charts and writes the folder.
 *
 * @module
 */
import type { KernelRow, PaperTable, PplTable, ReportData, RunProvenance } from "./report.ts";

/** Escapes text for HTML content and attribute values. */
export const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** A rendered chart: its SVG, a caption, and where its vega-lite spec is written (if anywhere). */
export interface ChartFigure {
  id: string;
  title: string;
  svg: string;
  /** Relative link to the spec file, e.g. "charts/ppl-vs-bits-1.vl.json"; null: no link. */
  specHref: string | null;
}

const fmt = (v: number, digits: number) => v.toFixed(digits);

/** Footnotes of a paper table: the deliberate protocol deviations its numbers carry. */
interface Footnote {
  mark: string;
  html: string;
}

/**
 * One paper table (SqueezeLLM Table 1 layout) with footnote marks, best
 * values per column in bold (among the quantized rows, where at least two
 * compete: lowest perplexity, highest speedup).
 */
export function paperTableHtml(p: PaperTable, data: ReportData): string {
  const t = p.source;
  const notes: Footnote[] = [];
  const note = (html: string) => {
    const found = notes.find((n) => n.html === html);
    if (found) return found.mark;
    const mark = String.fromCharCode(97 + notes.length);
    notes.push({ mark, html });
    return mark;
  };
  const sup = (m: string) => `<sup><a href="#fn-${t.seqlen}-${m}">${m}</a></sup>`;
  const colMark = new Map<string, string>();
  for (const c of t.columns) {
    const proto = data.protocols.find((x) => x.dataset === c.dataset && /proxy/.test(x.protocol));
    if (proto) {
      colMark.set(
        c.key,
        note(
          `<b>C4 proxy.</b> ${esc(c.dataset)} is drawn from the 2,000-document proxy of C4's ` +
            `validation shard, from documents 0..1,099 only: documents 1,100.. stand in for the ` +
            `C4 train shard as calibration data. Protocol: <code>${esc(proto.protocol)}</code>`,
        ),
      );
    }
  }
  const rowMark = new Map<string, string[]>();
  const addRowMark = (family: string, m: string) =>
    rowMark.set(family, [...(rowMark.get(family) ?? []), m]);
  for (const r of p.rows) {
    if (r.method === "fp32") {
      addRowMark(
        r.family,
        note(
          `<b>Precision.</b> The base model is the fp32 llama2.c checkpoint where the papers ` +
            `run fp16; quantized models store scales, zeros, lookup tables and sparse values as ` +
            `fp16, and their codes are computed against those fp16 values. Its speedup is the ` +
            `f32 kernel's over f16.`,
        ),
      );
    }
    if (r.method === "awq" && data.awqPerRow && !/g\d+/.test(r.family)) {
      addRowMark(
        r.family,
        note(
          `<b>AWQ groups.</b> AWQ's default group of 128 does not divide every layer's input ` +
            `width of this model, so it uses one group per row.`,
        ),
      );
    }
  }
  const sp = p.speedupSource;
  const speedMark = sp
    ? note(
      `<b>Speedup</b> of the row's storage format (uniform: RTN, GPTQ, AWQ; lut / lut+sparse: ` +
        `SqueezeLLM; f32: the FP32 row) over the f16 kernel at batch 1 on ${esc(sp.adapter)}: ` +
        `f16's time over the format's for one decoder layer's linears, each shape weighted by ` +
        `its linears per layer (shape × linears: ${
          Object.entries(sp.shapes).map(([s, w]) =>
            `${esc(s)} ${Object.entries(w).map(([shape, n]) => `${shape} × ${n}`).join(", ")}`
          ).join("; ")
        }; × 0: timed, not in a layer). Timed on synthetic weights of the same layout ` +
        `(eval/bench/kernels.ts). —: not timed.`,
    )
    : null;
  const perGroup = 1 + t.columns.length + p.speedupSets.length;
  const head1 = `<tr><th rowspan="2">method</th><th rowspan="2">calibration</th>${
    p.groups.map((g) => `<th colspan="${perGroup}" class="group">${esc(g.label)}</th>`).join("")
  }</tr>`;
  const subHeads = [
    "Avg. bits",
    ...t.columns.map((c) => `${esc(c.label)}${colMark.has(c.key) ? sup(colMark.get(c.key)!) : ""}`),
    ...p.speedupSets.map((s) =>
      `speedup${speedMark ? sup(speedMark) : ""}<br><span class="set">${esc(s)}</span>`
    ),
  ];
  const head2 = `<tr>${
    p.groups.map((_, g) =>
      subHeads.map((h, i) => `<th class="${i === 0 && g > 0 ? "first " : ""}sub">${h}</th>`).join(
        "",
      )
    ).join("")
  }</tr>`;
  // best per column among quantized rows
  const best = new Map<string, number>();
  for (const { key: b } of p.groups) {
    const quantized = p.rows.filter((r) => !r.baseline && r.cells[b]);
    for (const c of t.columns) {
      const vs = quantized.map((r) => r.cells[b].row.ppl[c.key]).filter((v) => v !== undefined);
      if (vs.length >= 2) best.set(`${b}|${c.key}`, Math.min(...vs));
    }
    for (const s of p.speedupSets) {
      const vs = quantized.map((r) => r.cells[b].speedup[s]).filter((v) => v !== undefined);
      if (vs.length >= 2) best.set(`${b}|sp|${s}`, Math.max(...vs));
    }
  }
  const cell = (v: number | undefined, digits: number, bestKey: string, first: boolean) => {
    const cls = [first ? "first" : "", "num"];
    if (v === undefined) return `<td class="${cls.join(" ")} empty">—</td>`;
    const isBest = best.get(bestKey) === v;
    if (isBest) cls.push("best");
    const text = fmt(v, digits);
    return `<td class="${cls.join(" ").trim()}">${isBest ? `<b>${text}</b>` : text}</td>`;
  };
  const body = p.rows.map((r) => {
    const marks = (rowMark.get(r.family) ?? []).map(sup).join("");
    const anyCell = Object.values(r.cells)[0];
    const keys = [...new Set(Object.values(r.cells).map((c) => c.row.configKey))];
    const cells = p.groups.map(({ key: b }) => {
      const c = r.cells[b];
      if (!c) {
        return `<td class="first num empty">—</td>${
          `<td class="num empty">—</td>`.repeat(perGroup - 1)
        }`;
      }
      return [
        cell(c.row.avgBits, 2, "", true),
        ...t.columns.map((col) => cell(c.row.ppl[col.key], 2, `${b}|${col.key}`, false)),
        ...p.speedupSets.map((s) => cell(c.speedup[s], 2, `${b}|sp|${s}`, false)),
      ].join("");
    }).join("");
    return `<tr class="${r.baseline ? "baseline" : ""}"><th class="row" title="${
      esc(`variants ${
        [...new Set(Object.values(r.cells).map((c) => c.row.label))].join(", ")
      }; config keys ${
        keys.map((k) => k.slice(0, 12)).join(", ")
      }`)
    }">${esc(r.family)}${marks}</th><td class="calib">${
      esc(anyCell?.row.calibration ?? "")
    }</td>${cells}</tr>`;
  }).join("\n");
  const foot = notes.length
    ? `<ol class="notes">${
      notes.map((n) =>
        `<li id="fn-${t.seqlen}-${n.mark}" value="${
          n.mark.charCodeAt(0) - 96
        }"><span class="mark">${n.mark}</span> ${n.html}</li>`
      )
        .join("")
    }</ol>`
    : "";
  return `<div class="scroll"><table class="paper">\n<thead>${head1}${head2}</thead>\n<tbody>${body}</tbody></table></div>\n` +
    `<p class="legend">Perplexity (lower is better) under GPTQ's protocol, seqlen ${t.seqlen}; ` +
    `column headers give the windows evaluated (w). <b>Bold</b>: best among the quantized rows ` +
    `of that column. Avg. bits: information bits per weight, metadata and sparse part included.</p>\n${foot}`;
}

/**
 * The flat table of every stored variant as text, one row each: variant, bits, average
 * (information) bits, one column per dataset (with its window count), stored bits and
 * calibration. The HTML and the markdown report both lay it out.
 *
 * @param t one table of report.ts's `pplTables`
 * @returns the column titles and each row's cells, in `t.rows`' order
 */
export function variantsTableText(t: PplTable): { head: string[]; rows: string[][] } {
  const head = [
    "variant",
    "bits",
    "avg bits",
    ...t.columns.map((c) => c.label),
    "stored bits",
    "calibration",
  ];
  const rows = t.rows.map((r) => [
    r.label,
    String(r.bits ?? "fp32"),
    r.avgBits.toFixed(2),
    ...t.columns.map((c) => (r.ppl[c.key] === undefined ? "—" : r.ppl[c.key].toFixed(3))),
    r.storedBits === null ? "?" : r.storedBits.toFixed(2),
    r.calibration,
  ]);
  return { head, rows };
}

/** Every stored variant of a table, one row each (the flat table; also the markdown's columns). */
export function variantsTableHtml(t: PplTable): string {
  const { head, rows } = variantsTableText(t);
  const th = head.map((h) => `<th>${esc(h)}</th>`).join("");
  const trs = rows.map(([label, ...cells], i) =>
    `<tr><td title="${esc(`config key ${t.rows[i].configKey}`)}">${esc(label)}</td>${
      cells.map((c) => `<td>${esc(c)}</td>`).join("")
    }</tr>`
  ).join("\n");
  return `<div class="scroll"><table class="variants"><thead><tr>${th}</tr></thead>\n<tbody>${trs}</tbody></table></div>`;
}

/** A chart figure with its caption and spec link. */
export function figureHtml(c: ChartFigure): string {
  const link = c.specHref
    ? ` · <a href="${esc(c.specHref)}" download>vega-lite spec (.json)</a>`
    : "";
  return `<figure id="${esc(c.id)}"><figcaption>${esc(c.title)}${link}</figcaption>` +
    `<div class="chart">${c.svg}</div></figure>`;
}

/** The kernel timings of one adapter as a table. */
export function kernelTableHtml(rows: KernelRow[]): string {
  const head = [
    "shape",
    "batch",
    "format",
    "bits",
    "avg bits",
    "stored bits",
    "median µs",
    "GB/s",
    "of copy",
    "speedup vs f16",
  ];
  const trs = rows.map((k) =>
    `<tr><td>${k.rows}×${k.cols}</td><td>${k.batch}</td><td>${
      esc(k.format)
    }</td><td>${k.bits}</td><td>${k.infoBits === null ? "?" : k.infoBits.toFixed(2)}</td><td>${
      k.storedBits === null ? "?" : k.storedBits.toFixed(2)
    }</td><td>${k.medianUs.toFixed(1)}</td><td>${k.gbps.toFixed(2)}</td><td>${
      (100 * k.fractionOfCopy).toFixed(1)
    }%</td><td>${k.speedup === null ? "—" : `${k.speedup.toFixed(2)}×`}</td></tr>`
  ).join("\n");
  return `<div class="scroll"><table class="kernels"><thead><tr>${
    head.map((h) => `<th>${h}</th>`).join("")
  }</tr></thead><tbody>${trs}</tbody></table></div>`;
}

const json = (v: unknown) => `<pre>${esc(JSON.stringify(v, null, 2))}</pre>`;
const hashCell = (h: unknown) =>
  h === null || h === undefined
    ? "—"
    : `<code title="${esc(String(h))}">${esc(String(h).slice(0, 16))}…</code>`;

/** One run's provenance: command, commit, code version, models, data and configs. */
export function runHtml(r: RunProvenance): string {
  const what = [
    r.pplCount ? `${r.pplCount} perplexit${r.pplCount === 1 ? "y" : "ies"}` : "",
    r.kernelCount ? `${r.kernelCount} kernel timing${r.kernelCount === 1 ? "" : "s"}` : "",
  ].filter(Boolean).join(", ") || "no results";
  const rows: [string, string][] = [
    ["command", `<code>deno task ${esc(r.command)}</code>`],
    ["git commit", `<code>${esc(r.gitCommit)}</code>`],
    ["code version", String(r.codeVersion ?? "? (before code versions)")],
    ["Deno, host", esc(`${r.denoVersion}, ${r.host}`)],
    ["started", esc(r.startedAt)],
    ["store", `<code>${esc(r.storeFile)}</code>`],
    ...r.models.map((m): [string, string] => [
      "model",
      `${esc(m.model)}, sha256 <code>${esc(m.sha256)}</code>`,
    ]),
  ];
  const datasets = r.datasets.length
    ? `<h4>Evaluation data</h4><div class="scroll"><table class="prov"><thead><tr><th>dataset</th><th>file</th><th>file sha256</th><th>seqlen</th><th>windows</th><th>tokens sha256</th><th>protocol</th></tr></thead><tbody>${
      r.datasets.map((d) =>
        `<tr><td>${esc(String(d.dataset))}</td><td><code>${esc(String(d.file))}</code></td><td>${
          hashCell(d.sha256)
        }</td><td>${d.seqlen}</td><td>${d.windows}</td><td>${
          hashCell(d.tokensSha256)
        }</td><td class="text">${esc(String(d.protocol))}</td></tr>`
      ).join("")
    }</tbody></table></div>`
    : "";
  const calib = r.calibrations.length
    ? `<h4>Calibration data</h4><div class="scroll"><table class="prov"><thead><tr><th>source</th><th>file</th><th>file sha256</th><th>windows</th><th>seqlen</th><th>seed</th><th>tokens sha256</th></tr></thead><tbody>${
      r.calibrations.map((c) =>
        `<tr><td>${esc(String(c.source))}</td><td><code>${
          esc(String(c.file ?? "?"))
        }</code></td><td>${
          hashCell(c.sha256)
        }</td><td>${c.windows}</td><td>${c.seqlen}</td><td>${c.seed}</td><td>${
          hashCell(c.tokensSha256)
        }</td></tr>`
      ).join("")
    }</tbody></table></div>`
    : "";
  const configs = r.configs.length
    ? `<h4>Configs</h4>${
      r.configs.map((c) =>
        `<details class="config"><summary><code>${esc(c.variant)}</code> · config key <code>${
          esc(c.configKey.slice(0, 16))
        }…</code></summary>${json(c.config)}</details>`
      ).join("")
    }`
    : "";
  const adapters = r.adapters.length ? `<h4>Adapter</h4>${r.adapters.map(json).join("")}` : "";
  return `<details class="run"><summary><code>${esc(r.runId)}</code> · ${
    esc(r.startedAt)
  } · ${what} · <code>deno task ${
    esc(r.command.length > 90 ? `${r.command.slice(0, 90)}…` : r.command)
  }</code></summary><table class="kv">${
    rows.map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join("")
  }</table>${datasets}${calib}${configs}${adapters}</details>`;
}

/**
 * Starts the panel's module only over http(s): opened from file://, the
 * browser would refuse the module, the worker and the WebAssembly alike (and
 * log an error), so the panel says how to serve the folder instead.
 */
const SQL_LOADER = `(() => {
  const panel = document.getElementById("sql");
  if (location.protocol === "file:") {
    panel.dataset.state = "file";
    document.getElementById("sql-status").textContent = "The SQL panel runs DuckDB as " +
      "WebAssembly in a worker, which browsers refuse to load from file://. Serve this folder: " +
      "deno task report --serve (or any static server), then open the address it prints.";
    return;
  }
  const s = document.createElement("script");
  s.type = "module";
  s.src = "assets/sql_panel.js";
  document.body.appendChild(s);
})();`;

/**
 * The SQL panel: a query box over the results, answered by duckdb-wasm in the page.
 *
 * @param file the DuckDB file under `data/`
 * @param tables its tables
 */
export function sqlPanelHtml(file: string, tables: string[]): string {
  const example = `select variant, dataset, round(ppl, 3) ppl, round(info_bits, 2) avg_bits
from ppl_results
order by dataset, info_bits`;
  return `<div id="sql" data-state="loading">
<p>DuckDB runs in this page (duckdb-wasm) over the merged results shipped beside it,
<code>data/${esc(file)}</code> (also as <code>data/&lt;table&gt;.parquet</code>): tables ${
    tables.map((t) => `<code>${t}</code>`).join(", ")
  }.</p>
<textarea id="sql-input" spellcheck="false" rows="5">${esc(example)}</textarea>
<div class="sql-bar"><button id="sql-run" disabled>Run query</button> <span id="sql-status">loading DuckDB…</span></div>
<div id="sql-output" class="scroll"></div>
<script id="sql-tables" type="application/json">${JSON.stringify({ file, tables })}</script>
<script>${SQL_LOADER}</script>
</div>`;
}

/** The page's style sheet. */
export const CSS = `
:root{--fg:#1d232a;--muted:#5b6672;--line:#d5dae0;--head:#f1f4f7;--accent:#2459a8;--best:#e6f2e6}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);margin:0;background:#fff}
main{max-width:1280px;margin:0 auto;padding:1.5em 2em 4em}
header{border-bottom:1px solid var(--line);padding-bottom:.6em;margin-bottom:1em}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.3em;margin:1.6em 0 .4em;border-bottom:1px solid var(--line);padding-bottom:.2em}
h3{font-size:1.08em;margin:1.3em 0 .4em}h4{margin:1em 0 .3em;font-size:.95em}
nav a{margin-right:1em;color:var(--accent);text-decoration:none}
.sub-title,.legend,.muted{color:var(--muted)}.legend{font-size:.9em;margin:.4em 0}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,monospace}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.4em 0}
th,td{border:1px solid var(--line);padding:3px 8px;text-align:right;white-space:nowrap}
thead th{background:var(--head);font-weight:600}
td:first-child{text-align:left}
table.paper th.row{text-align:left;background:#fff;font-weight:600}
table.paper thead th{text-align:center;vertical-align:bottom}table.paper .set{font-weight:400;font-size:.85em;color:var(--muted)}
table.paper td.calib{text-align:left;color:var(--muted);font-size:.9em}
table.paper th.group{text-align:center;border-bottom:2px solid var(--fg)}
table.paper .first{border-left:2px solid var(--fg)}
table.paper tr.baseline{background:#fafbfc}table.paper tr.baseline th.row{background:#fafbfc}
table.paper td.best{background:var(--best)}
table.paper td.empty,table.variants td.empty{color:#a0a8b0}
table.prov td.text{white-space:normal;text-align:left;min-width:28em;font-size:.9em}
table.kv th{text-align:left;background:var(--head)}table.kv td{text-align:left;white-space:normal}
ol.notes{list-style:none;padding-left:0;font-size:.9em;color:var(--muted);max-width:75em}
ol.notes li{margin:.3em 0}ol.notes .mark{font-weight:700;color:var(--fg);margin-right:.3em}
sup a{text-decoration:none;color:var(--accent);margin-left:1px}
figure{margin:1em 0 1.6em}figcaption{font-weight:600;margin-bottom:.4em}figcaption a{font-weight:400;color:var(--accent)}
.chart{overflow-x:auto}
details{margin:.4em 0}details>summary{cursor:pointer;color:var(--fg)}
details.run{border:1px solid var(--line);border-radius:4px;padding:.4em .7em}
.runs.many{max-height:32em;overflow-y:auto;border:1px solid var(--line);padding:.3em;border-radius:4px}
details.run[open]{padding-bottom:.8em}
pre{background:#f6f8fa;border:1px solid var(--line);padding:.5em;overflow-x:auto;font-size:12px;max-height:24em}
#sql textarea{width:100%;font:13px ui-monospace,monospace;padding:.5em;border:1px solid var(--line);border-radius:4px}
.sql-bar{margin:.4em 0}#sql-status{color:var(--muted);margin-left:.6em}
#sql[data-state=error] #sql-status{color:#b00020}
#sql[data-state=file] #sql-status{color:#8a5a00}
button{font:inherit;padding:.25em 1em;border:1px solid var(--accent);background:var(--accent);color:#fff;border-radius:4px;cursor:pointer}
button:disabled{opacity:.5;cursor:default}
`;
