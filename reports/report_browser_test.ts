/**
 * The report folder in a real browser: headless Chromium (Debian's
 * `chromium`, installed by .ci/run) opens the report served on 127.0.0.1,
 * over a store of real results (reports/_testing.ts) merged with a second
 * store of real kernel timings. Under CI=true a missing browser or WebGPU
 * adapter fails the test; elsewhere the test says why it skips.
 *
 * The screenshot is written to `$SQB_ARTIFACTS` (default
 * `$TMPDIR/squeezebench-artifacts`) as `report.png`; the path is printed.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Chromium, findChromium } from "./_chromium.ts";
import { buildFixtureStore, recordFixtureKernels } from "./_testing.ts";
import { MergedResults } from "./results.ts";
import { paperTable, writeReport } from "./report.ts";
import { serveReport } from "./serve.ts";

const CI = Deno.env.get("CI") === "true";
const chromium = await findChromium();
const whyNot = chromium ? null : "no chromium on PATH (apt-get install -y chromium)";
if (whyNot && !CI) console.log(`report_browser_test: skipped: ${whyNot}`);

Deno.test({
  name: "the report folder in headless Chromium: tables and SVG charts with the stored numbers, " +
    "SQL panel answers, no console errors",
  ignore: whyNot !== null && !CI,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    if (!chromium) throw new Error(`CI=true: ${whyNot}`);
    const dir = await Deno.makeTempDir({ prefix: "sqb-report-" });
    const artifacts = Deno.env.get("SQB_ARTIFACTS") ??
      `${Deno.env.get("TMPDIR") ?? "/tmp"}/squeezebench-artifacts`;
    try {
      const pplStore = `${dir}/results.duckdb`, kernelStore = `${dir}/kernels.duckdb`;
      const [n, kernelsFailed] = await Promise.all([
        buildFixtureStore(pplStore, { cacheDir: `${dir}/cache` }),
        recordFixtureKernels(kernelStore),
      ]);
      if (kernelsFailed && CI) throw new Error(`CI=true: no kernel timings: ${kernelsFailed}`);
      if (kernelsFailed) console.log(`no kernel timings (no WebGPU adapter?): ${kernelsFailed}`);
      const stores = kernelsFailed ? [pplStore] : [pplStore, kernelStore];
      const results = await MergedResults.open(stores);
      const written = await writeReport(results, `${dir}/report`);
      const stored = await results.query(
        "select count(*)::integer n, round(min(ppl), 6) lo, round(max(ppl), 6) hi from ppl_results",
      );
      results.close();
      assert.equal(stored[0].n, n);
      const data = written.data;
      assert.equal(data.tables.length, 1);
      const server = serveReport(written.dir, { port: 0 });
      const browser = await Chromium.launch(chromium, { width: 1320, height: 900 });
      try {
        await browser.goto(server.url);
        const page = await browser.eval<{
          paperTables: number;
          paperText: string;
          variantsText: string;
          svgs: { id: string; marks: number }[];
          best: number;
          notes: string;
          runs: number;
        }>(`({
          paperTables: document.querySelectorAll("table.paper").length,
          paperText: document.querySelector("table.paper").innerText,
          variantsText: document.querySelector("table.variants").textContent,
          svgs: [...document.querySelectorAll("figure")].map((f) => ({
            id: f.id,
            marks: f.querySelectorAll("svg path, svg circle, svg line").length,
          })),
          best: document.querySelectorAll("table.paper td.best").length,
          notes: document.querySelector("ol.notes").innerText,
          runs: document.querySelectorAll("details.run").length,
        })`);
        assert.equal(page.paperTables, 1);
        // every stored perplexity: 3 decimals in the table of every variant, 2 in the paper table
        const t = data.tables[0];
        for (const r of t.rows) {
          for (const c of t.columns) {
            assert.ok(page.variantsText.includes(r.ppl[c.key].toFixed(3)), `${r.label} ${c.key}`);
            if (r.bits === null || r.bits === 3 || r.bits === 4) {
              assert.ok(page.paperText.includes(r.ppl[c.key].toFixed(2)), `${r.label} ${c.key}`);
            }
          }
        }
        assert.ok(page.best >= 2, "best values marked");
        assert.match(page.notes, /C4 proxy/);
        assert.match(page.notes, /fp32/);
        const charts = page.svgs.map((s) => s.id);
        assert.ok(charts.includes("ppl-vs-bits-t1") && charts.includes("pareto-t1"), `${charts}`);
        if (!kernelsFailed) {
          assert.ok(charts.includes("kernel-latency-a1") && charts.includes("kernel-speedup-a1"));
          // the speedup columns hold the stored timings' speedups
          const p = paperTable(t, data.kernels);
          assert.deepEqual(p.speedupSets, ["model shapes"]);
          const speedups = p.rows.flatMap((r) =>
            p.bits.flatMap((b) => Object.values(r.cells[b]?.speedup ?? {}))
          );
          assert.ok(speedups.length >= 2 * p.rows.length, `${speedups.length} speedups`);
          for (const v of speedups) assert.ok(page.paperText.includes(v.toFixed(2)), `${v}`);
        }
        for (const s of page.svgs) assert.ok(s.marks > 10, `${s.id} has ${s.marks} marks`);
        assert.equal(page.runs, data.runs.length);
        // each chart's spec is served beside it
        const spec = await browser.eval<string>(
          `fetch("charts/pareto-t1.vl.json").then((r) => r.json()).then((s) => s.$schema)`,
        );
        assert.match(spec, /vega-lite/);
        // the SQL panel: duckdb-wasm over the Parquet files
        await browser.until(`document.getElementById("sql").dataset.state === "ready"`, 90_000);
        await browser.eval(`(() => {
          document.getElementById("sql-input").value =
            "select count(*)::integer n, round(min(ppl), 6) lo, round(max(ppl), 6) hi from ppl_results";
          document.getElementById("sql-run").click();
        })()`);
        const state = await browser.until<string>(
          `["done", "error"].includes(document.getElementById("sql").dataset.state) &&
            document.getElementById("sql").dataset.state`,
        );
        assert.equal(
          state,
          "done",
          await browser.eval<string>(`document.getElementById("sql-status").textContent`),
        );
        const answer = await browser.eval<string[]>(
          `[...document.querySelectorAll("#sql-output td")].map((td) => td.textContent)`,
        );
        assert.deepEqual(answer, [
          String(stored[0].n),
          String(+Number(stored[0].lo).toPrecision(6)),
          String(+Number(stored[0].hi).toPrecision(6)),
        ]);
        // leave the example query's answer in the screenshot
        await browser.eval(`(() => {
          document.getElementById("sql-input").value =
            "select variant, dataset, round(ppl, 3) ppl, round(info_bits, 2) avg_bits\\n" +
            "from ppl_results where dataset = 'wikitext2' order by info_bits limit 6";
          document.getElementById("sql-run").click();
        })()`);
        await browser.until(`document.getElementById("sql").dataset.state === "done"`);
        await Deno.mkdir(artifacts, { recursive: true });
        const png = `${artifacts}/report.png`;
        await Deno.writeFile(png, await browser.screenshot());
        console.log(`report screenshot: ${png}`);
        // opened as a file, the page still shows everything but the panel, and says why
        await browser.goto(`file://${written.index}`);
        const fileState = await browser.eval<[string, number]>(
          `[document.getElementById("sql").dataset.state, document.querySelectorAll("svg").length]`,
        );
        assert.deepEqual(fileState, ["file", page.svgs.length]);
        assert.deepEqual(browser.errors, []);
      } finally {
        await browser.close();
        await server.shutdown();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
