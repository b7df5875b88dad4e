/// <reference lib="dom" />
/**
 * The report page's SQL panel: DuckDB (duckdb-wasm) running in the page over
 * the results shipped beside it as Parquet files, one view per table.
 *
 * Bundled for the browser by reports/html.ts (`deno bundle`) into
 * `assets/sql_panel.js`; the worker and WebAssembly module are copied from
 * the npm package into `assets/`. The page names the DuckDB file under
 * `data/` and its tables in `<script id="sql-tables" type="application/json">`
 * ({file, tables}); the file is attached read-only.
 *
 * Browsers do not start module workers or fetch WebAssembly from `file://`,
 * so opened as a file the panel says to serve the folder instead
 * (`deno task report --serve`); tables and charts need neither.
 *
 * The panel writes its state into `data-state` of `#sql` ("loading",
 * "ready", "running", "done", "error", "file"), for people and the browser
 * test alike.
 *
 * @module
 */
import * as duckdb from "@duckdb/duckdb-wasm";

const panel = document.getElementById("sql") as HTMLElement;
const input = document.getElementById("sql-input") as HTMLTextAreaElement;
const button = document.getElementById("sql-run") as HTMLButtonElement;
const status = document.getElementById("sql-status") as HTMLElement;
const output = document.getElementById("sql-output") as HTMLElement;

/** Rows shown at most; the status line gives the full count. */
const MAX_ROWS = 500;

function setState(state: string, text: string): void {
  panel.dataset.state = state;
  status.textContent = text;
}

function cellText(v: unknown): string {
  if (v === null || v === undefined) return "NULL";
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(+v.toPrecision(6));
  if (v instanceof Date) return v.toISOString();
  if (typeof v === "object") {
    return JSON.stringify(v, (_, x) => typeof x === "bigint" ? String(x) : x);
  }
  return String(v);
}

function showTable(columns: string[], rows: unknown[][]): void {
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  for (const c of columns) {
    const th = document.createElement("th");
    th.textContent = c;
    head.appendChild(th);
  }
  const body = table.createTBody();
  for (const r of rows.slice(0, MAX_ROWS)) {
    const tr = body.insertRow();
    for (const v of r) {
      const td = tr.insertCell();
      td.textContent = cellText(v);
      if (typeof v === "number" || typeof v === "bigint") td.className = "num";
    }
  }
  output.replaceChildren(table);
}

async function start(): Promise<void> {
  if (location.protocol === "file:") {
    button.disabled = true;
    setState(
      "file",
      "The SQL panel runs DuckDB as WebAssembly in a worker, which browsers refuse to load " +
        "from file://. Serve this folder instead: deno task report --serve (or any static " +
        "server), then open the address it prints.",
    );
    return;
  }
  setState("loading", "loading DuckDB…");
  const { file, tables } = JSON.parse(document.getElementById("sql-tables")!.textContent!) as {
    file: string;
    tables: string[];
  };
  const assets = new URL("assets/", document.baseURI);
  const worker = new Worker(new URL("duckdb-browser-eh.worker.js", assets));
  const db = new duckdb.AsyncDuckDB(new duckdb.VoidLogger(), worker);
  await db.instantiate(new URL("duckdb-eh.wasm", assets).href);
  const bytes = await fetch(new URL(`data/${file}`, document.baseURI));
  if (!bytes.ok) throw new Error(`data/${file}: HTTP ${bytes.status}`);
  await db.registerFileBuffer(file, new Uint8Array(await bytes.arrayBuffer()));
  const con = await db.connect();
  // Nothing is fetched from the network: no extension is installed or loaded on demand.
  await con.query(
    "set autoinstall_known_extensions = false; set autoload_known_extensions = false",
  );
  await con.query(`attach '${file}' as results (read_only); use results`);
  const run = async () => {
    setState("running", "running…");
    button.disabled = true;
    const t0 = performance.now();
    try {
      const result = await con.query(input.value);
      const columns = result.schema.fields.map((f) => f.name);
      const rows = result.toArray().map((r) => columns.map((c) => r[c]));
      showTable(columns, rows);
      const ms = (performance.now() - t0).toFixed(0);
      setState(
        "done",
        `${rows.length} row${rows.length === 1 ? "" : "s"} in ${ms} ms` +
          (rows.length > MAX_ROWS ? ` (first ${MAX_ROWS} shown)` : ""),
      );
    } catch (e) {
      output.replaceChildren();
      setState("error", (e as Error).message);
    } finally {
      button.disabled = false;
    }
  };
  button.addEventListener("click", run);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      run();
    }
  });
  button.disabled = false;
  setState("ready", `ready: tables ${tables.join(", ")} (Ctrl+Enter runs)`);
}

start().catch((e) => setState("error", `DuckDB did not start: ${(e as Error).message}`));
