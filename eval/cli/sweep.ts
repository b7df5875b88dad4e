/**
 * Sweeps: lists of quantization specs (eval/sweep_presets.ts) run end to end —
 * quantize → evaluate every dataset → store each result as it is computed →
 * report. Results already in the store are skipped (resume), so an
 * interrupted sweep continues where it stopped.
 *
 * @module
 */
import { type EvalSet, type EvalSetName, loadEvalSet } from "../../datasets/eval_sets.ts";
import { type QuantizedModel, quantizeModel, variantName } from "../../quant/methods.ts";
import type { SweepEntry } from "./presets.ts";
import { perplexity, type PerplexityResult } from "../perplexity.ts";
import { Progress } from "./progress.ts";
import type { LoadedModel } from "./load.ts";
import { currentRun, ResultsStore } from "../../reports/store.ts";
import { markdownTable, pplTable, renderReport } from "../../reports/report.ts";

/** Options of {@linkcode runSweep}. */
export interface SweepOptions {
  specs: SweepEntry[];
  datasets: EvalSetName[];
  seqlen: number;
  limit?: number;
  storePath: string;
  reportPath: string;
  workers: number;
  resume: boolean;
  command: string;
}

/** Runs a sweep; every result is stored as soon as it is computed. */
export async function runSweep(model: LoadedModel, opts: SweepOptions): Promise<object> {
  await Deno.mkdir(opts.storePath.replace(/\/[^/]*$/, "") || ".", { recursive: true });
  const store = await ResultsStore.open(opts.storePath);
  const run = await currentRun(opts.command);
  await store.addRun(run);
  const sets = new Map<EvalSetName, EvalSet>();
  const results: object[] = [];
  const t0 = performance.now();
  try {
    for (const entry of opts.specs) {
      const variant = entry ? variantName(entry) : "fp32";
      const todo: EvalSetName[] = [];
      for (const d of opts.datasets) {
        const windows = opts.limit ?? null;
        if (
          opts.resume &&
          await store.hasPpl(model.checkpointSha256, variant, d, opts.seqlen, windows)
        ) {
          console.error(
            `${variant} ${d}: already in ${opts.storePath}, skipped (--no-resume re-runs it)`,
          );
        } else todo.push(d);
      }
      if (todo.length === 0) continue;
      let q: QuantizedModel | null = null;
      if (entry) {
        console.error(`\n== ${variant}: quantizing …`);
        q = await quantizeModel(model.weights, entry, {
          tokenizer: model.tokenizer,
          dataDir: model.dataDir,
          offline: model.offline,
          modelKey: model.checkpointSha256,
          workers: opts.workers,
          log: (s) => console.error(`   ${s}`),
        });
        console.error(`   ${q.avgBits.toFixed(3)} avg bits, ${q.seconds.toFixed(1)} s`);
      } else console.error(`\n== fp32`);
      for (const d of todo) {
        if (!sets.has(d)) {
          sets.set(
            d,
            await loadEvalSet(d, {
              dataDir: model.dataDir,
              tokenizer: model.tokenizer,
              seqlen: opts.seqlen,
              offline: model.offline,
            }),
          );
        }
        const set = sets.get(d)!;
        const total = Math.min(Math.floor(set.tokens.length / opts.seqlen), opts.limit ?? Infinity);
        const bar = new Progress(`   ${d}`, total, "windows", opts.seqlen, "tok");
        const r = await perplexity(q ? q.weights : model.weights, set.tokens, {
          seqlen: opts.seqlen,
          limit: opts.limit,
          workers: opts.workers,
          onProgress: (n) => bar.update(n),
        });
        await recordInto(store, run.runId, model, q, set, r);
        console.error(
          `   ${d}: ppl ${r.ppl.toFixed(4)} (${r.windows} windows, ${
            (r.tokens / r.seconds).toFixed(0)
          } tok/s)`,
        );
        results.push({
          variant,
          dataset: d,
          ppl: r.ppl,
          windows: r.windows,
          avgBits: q?.avgBits ?? 32,
        });
      }
    }
    await Deno.mkdir(opts.reportPath.replace(/\/[^/]*$/, "") || ".", { recursive: true });
    await Deno.writeTextFile(opts.reportPath, await renderReport(store));
    const tables = await pplTable(store);
    const rows = tables.get(model.name) ?? [];
    console.log(
      `\n${model.name} (seqlen ${opts.seqlen}${
        opts.limit ? `, first ${opts.limit} windows` : ""
      })\n`,
    );
    console.log(markdownTable(rows));
    console.log(`\nstore: ${opts.storePath}\nreport: ${opts.reportPath}`);
    return {
      model: model.name,
      runId: run.runId,
      store: opts.storePath,
      report: opts.reportPath,
      seconds: (performance.now() - t0) / 1000,
      results,
    };
  } finally {
    store.close();
  }
}

async function recordInto(
  store: ResultsStore,
  runId: string,
  model: LoadedModel,
  q: QuantizedModel | null,
  set: EvalSet,
  r: PerplexityResult,
): Promise<void> {
  await store.addPpl({
    runId,
    model: model.name,
    modelSha256: model.checkpointSha256,
    variant: q ? variantName(q.spec) : "fp32",
    method: q ? q.spec.method : "fp32",
    bits: q ? q.spec.bits : null,
    groupSize: q ? q.spec.groupSize : null,
    avgBits: q ? q.avgBits : 32,
    quantConfig: q ? { ...q.spec, details: q.details } : { method: "fp32" },
    calibration: q?.calibration ?? null,
    quantSeconds: q?.seconds ?? 0,
    dataset: set.name,
    protocol: set.protocol,
    dataFile: set.file,
    seqlen: r.seqlen,
    windows: r.windows,
    windowsAvailable: r.windowsAvailable,
    tokens: r.tokens,
    ppl: r.ppl,
    evalSeconds: r.seconds,
  });
}

/** Records one `deno task ppl --store FILE` result. */
export async function recordPpl(
  storePath: string,
  model: LoadedModel,
  q: QuantizedModel | null,
  set: EvalSet,
  r: PerplexityResult,
  command: string,
): Promise<void> {
  const store = await ResultsStore.open(storePath);
  try {
    const run = await currentRun(command);
    await store.addRun(run);
    await recordInto(store, run.runId, model, q, set, r);
  } finally {
    store.close();
  }
}
