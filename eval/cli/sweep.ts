/**
 * `deno task eval`: a run plan (eval/cli/plan.ts) executed job by job —
 * calibrate → quantize → evaluate → bench — each result stored as soon as it
 * is computed, then the report re-rendered and a summary table printed in
 * SqueezeLLM Table 1's layout.
 *
 * Resume by identity. Every job's key is known before any work: an evaluate
 * job whose result key is stored, or a bench job whose job key is, is
 * skipped; a quantized model is read back from the cache dir when it is
 * there, so a run killed at any point (even with SIGKILL) continues where it
 * stopped and ends with exactly the rows a clean run has. A `--limit` run
 * never stands in for a full one (the windows are part of the key).
 *
 * Block by block (`eval --blockwise`, {@linkcode SweepOptions.blockwise}):
 * the model is opened, never loaded whole; each quantized model is written
 * block by block into the cache (eval/quantize_stream.ts) and read back one
 * block at a time, and every perplexity runs one block at a time
 * (eval/perplexity_blockwise.ts): the same codes and the same numbers, so
 * the same keys, in about one block's fp32 size.
 *
 * One writer per store: the run holds an advisory lock on `STORE.lock`
 * (released by the kernel when the process dies); a second run on the same
 * store fails at once. Readers (`deno task report`) never wait for it.
 *
 * @module
 */
import type { EvalSet } from "../../datasets/eval_sets.ts";
import {
  calibrationRequest,
  loadQuantized,
  quantizedMetaInfo,
  type QuantizedModel,
  saveQuantized,
  variantName,
} from "../../quant/methods.ts";
import { modelSize, sumSizes } from "../../quant/size.ts";
import { sizeOfLayout } from "../../quant/format.ts";
import { openQuantizedModel, type QuantizedModelReader } from "../../quant/qmodel.ts";
import { perplexityBlockwise } from "../perplexity_blockwise.ts";
import {
  type DeviceHessians,
  loadCalibration,
  type QuantContext,
  quantizeModel,
} from "../pipeline.ts";
import { fisherIdentity, quantizeOpenedModel } from "./quantize_file.ts";
import { perplexity, type PerplexityResult } from "../perplexity.ts";
import { GPU_EVALUATOR, prefillPerplexity } from "../gpu_perplexity.ts";
import type { Gpu } from "../../kernels/device.ts";
import { Progress, progressBars } from "./progress.ts";
import type { LoadedModel, OpenedModel } from "./load.ts";
import { currentRun, type KernelRecord, ResultsStore, type RunInfo } from "../../reports/store.ts";
import {
  canonicalJson,
  CODE_VERSION,
  datasetIdentity,
  type ResultIdentity,
} from "../../reports/identity.ts";
import { markdownTable } from "../../reports/markdown.ts";
import type { Preset } from "./presets.ts";
import {
  type BenchJob,
  buildPlan,
  type EvaluateJob,
  type FisherFile,
  formatPlan,
  type JobStatus,
  kernelFormat,
  type Plan,
  planStatus,
  type QuantizeJob,
  type Unit,
} from "./plan.ts";
import { type Shard, shardUnits } from "./shard.ts";
import { CliError } from "./options.ts";
import { isFile } from "../../model/tensor_file.ts";

/** Options of {@linkcode runSweep}. */
export interface SweepOptions {
  /** The preset, command-line overrides applied. */
  preset: Preset;
  seqlen: number;
  storePath: string;
  /** The report folder, re-rendered at the end (`deno task report --out DIR`). */
  outDir: string;
  /** The cache dir (quantized models, Fisher information). */
  cacheDir: string;
  workers: number;
  /** Skip what is stored. @default true */
  resume: boolean;
  /** Print the plan and what is stored or cached; do nothing. */
  dryRun?: boolean;
  /** Run only this part of the plan. */
  shard?: Shard | null;
  /** Also one JSON line per finished job on stderr. */
  jsonEvents?: boolean;
  /** The command line, recorded with the run. */
  command: string;
  /** How long to wait for the store's writer lock. @default 2000 */
  lockWaitMs?: number;
  /** Run perplexity on this GPU (the prefill, eval/gpu_perplexity.ts) instead of the CPU. */
  gpu?: Gpu | null;
  /** Accumulate GPTQ's Hessians there (eval/gpu_calibration.ts), keyed apart. @default the CPU */
  hessians?: DeviceHessians;
  /** SqueezeLLM's Fisher read from this folder (`--fisher`) instead of a Fisher pass. */
  fisher?: FisherFile;
  /**
   * `eval --blockwise`: the model, opened (the sweep's `model` is then
   * eval/cli/load.ts `blockwiseModel`, whose weights are never read). Every
   * variant must be one that quantizes block by block (quantize_file.ts
   * `quantizesBlockwise`); the perplexity runs on the CPU.
   */
  blockwise?: OpenedModel;
}

/**
 * A quantized model of a `--blockwise` sweep: its file opened for
 * block-by-block reads, and what the file says about it.
 */
interface OpenedQuant extends Omit<QuantizedModel, "weights" | "linears"> {
  reader: QuantizedModelReader;
  base: { path: string; sha256: string };
  /** Average stored bits per weight of its linears (quant/size.ts). */
  avgStoredBits: number;
}

/** A quantized model of the sweep: in memory, or opened block by block. */
type SweepQuant = QuantizedModel | OpenedQuant;

/** Opens a quantized model file for block-by-block reads, its sizes from the index. */
function openQuantized(path: string): OpenedQuant {
  const reader = openQuantizedModel(path);
  try {
    const size = sumSizes([...reader.layouts.values()].map((l) => sizeOfLayout(l)));
    return {
      ...quantizedMetaInfo(reader, size.avgInfoBits, path),
      reader,
      avgStoredBits: size.avgStoredBits,
    };
  } catch (e) {
    reader[Symbol.dispose]();
    throw e;
  }
}

/** One row of the run's summary: a variant's numbers. */
export interface SummaryRow {
  row: string;
  variant: string;
  bits: number | null;
  avgBits: number;
  /** Dataset → perplexity (null when not evaluated). */
  ppl: Record<string, number | null>;
  /** Shape set name → speedup over f16 (a layer's linears, time-weighted). */
  speedup: Record<string, number | null>;
}

/**
 * Runs a preset: builds the plan, runs this shard's units, stores every
 * result as it is computed, re-renders the report, prints the summary.
 *
 * @param model the loaded model
 * @param opts see {@linkcode SweepOptions}
 * @returns the plan's status and the summary (also printed)
 */
export async function runSweep(model: LoadedModel, opts: SweepOptions): Promise<object> {
  const t0 = performance.now();
  const log = (s: string) => console.error(s);
  const plan = await buildPlan(model, opts.preset, {
    seqlen: opts.seqlen,
    cacheDir: opts.cacheDir,
    evaluator: opts.gpu ? GPU_EVALUATOR : undefined,
    hessianDevice: opts.hessians?.device,
    fisher: opts.fisher,
  });
  const units = opts.shard ? shardUnits(plan.units, opts.shard) : plan.units;
  const shardInfo = opts.shard ? { ...opts.shard, units } : undefined;
  const existing = await isFile(opts.storePath)
    ? await ResultsStore.open(opts.storePath, { readOnly: true })
    : null;
  const before = await planStatus(plan, opts.resume ? existing : null);
  existing?.close();
  if (opts.dryRun) {
    console.log(formatPlan(plan, before, shardInfo));
    return { dryRun: true, ...planJson(plan, before, units) };
  }
  log(formatPlan(plan, before, shardInfo));
  using _lock = await lockStore(opts.storePath, opts.lockWaitMs ?? 2000);
  const store = await ResultsStore.open(opts.storePath);
  const run = await currentRun(opts.command);
  await store.addRun(run);
  const event = (o: object) => {
    if (opts.jsonEvents) console.error(JSON.stringify({ event: "job", ...o }));
  };
  const done = new Set<string>();
  const results: object[] = [];
  for (const [i, unit] of units.entries()) {
    log(`\n== [${i + 1}/${units.length}] ${unit.id}`);
    await runUnit(model, plan, unit, { ...opts, store, run, status: before, done, event, results });
  }
  await renderReportFolder(opts.storePath, opts.outDir);
  // This plan's results only (computed now or found stored), each table titled with its seqlen
  // and the windows its numbers cover; then the summary in Table 1's layout.
  const { markdownReport, pplTables } = await import("../../reports/report.ts");
  const keys = plan.units.flatMap((u) =>
    u.jobs.flatMap((j) => j.kind === "evaluate" ? [j.resultKey] : [])
  );
  if (keys.length > 0) {
    console.log(`\n${markdownReport(await pplTables(store, { resultKeys: keys }))}`);
  }
  const summary = await summarize(plan, store);
  console.log(`\n${summaryMarkdown(plan, summary)}`);
  console.log(`\nstore: ${opts.storePath}\nreport: ${opts.outDir}/`);
  store.close();
  return {
    model: model.name,
    preset: plan.preset,
    runId: run.runId,
    store: opts.storePath,
    out: opts.outDir,
    shard: opts.shard ?? null,
    seconds: (performance.now() - t0) / 1000,
    ...planJson(plan, before, units),
    /** The results computed by this run (not those found stored). */
    results,
    summary,
  };
}

interface UnitContext extends SweepOptions {
  store: ResultsStore;
  run: RunInfo;
  status: Map<string, JobStatus>;
  /** Jobs done by this process (shared calibrations). */
  done: Set<string>;
  event: (o: object) => void;
  results: object[];
}

/**
 * The quantization context of a sweep's jobs on `model`: its lines indented on stderr, progress
 * bars labelled `progressLabel`.
 */
function quantContext(
  model: LoadedModel,
  c: UnitContext,
  progressLabel: string,
  fisherFile: FisherFile | null = null,
): QuantContext {
  return {
    fisherDir: fisherFile?.path,
    tokenizer: model.tokenizer,
    dataDir: model.dataDir,
    offline: model.offline,
    modelKey: model.checkpointSha256,
    workers: c.workers,
    cacheDir: c.cacheDir,
    log: (s) => console.error(`   ${s}`),
    onProgress: progressBars(progressLabel),
    hessians: c.hessians,
  };
}

async function runUnit(model: LoadedModel, plan: Plan, unit: Unit, c: UnitContext) {
  const log = (s: string) => console.error(s);
  const stored = c.resume ? await c.store.storedResultKeys() : new Set<string>();
  const evals = unit.jobs.filter((j): j is EvaluateJob => j.kind === "evaluate");
  const todo = evals.filter((e) => !stored.has(e.resultKey));
  for (const e of evals) {
    if (stored.has(e.resultKey)) {
      const w = plan.sets.get(e.dataset)!.identity.windows;
      log(
        `   ${e.variant} ${e.dataset} (${w} windows of ${plan.seqlen}): already in ` +
          `${c.storePath} under key ${e.resultKey.slice(0, 12)}…, skipped (--no-resume re-runs it)`,
      );
      c.event({ id: e.id, status: "stored" });
    }
  }
  let q: SweepQuant | null = null;
  for (const job of unit.jobs) {
    const t = performance.now();
    if (job.kind === "calibrate") {
      // --blockwise: the quantize job computes the Fisher block by block (cached in the cache dir)
      if (todo.length === 0 || c.done.has(job.id) || c.blockwise) continue;
      log(`   calibrate: ${job.label}`);
      await loadCalibration(model.weights, job.spec, quantContext(model, c, "   calibrate"));
      c.done.add(job.id);
      c.event({ id: job.id, status: "done", seconds: (performance.now() - t) / 1000 });
    } else if (job.kind === "quantize") {
      if (todo.length === 0) continue;
      q = await quantized(model, job, c);
      c.event({ id: job.id, status: "done", seconds: (performance.now() - t) / 1000 });
    } else if (job.kind === "evaluate") {
      if (!todo.includes(job)) continue;
      const p = plan.sets.get(job.dataset)!;
      const bar = new Progress(
        `   ${job.dataset}`,
        p.identity.windows,
        "windows",
        plan.seqlen,
        "tok",
      );
      const label = `${model.name} ${job.variant}`;
      if (c.gpu && q?.actQuant) {
        throw new CliError(
          `--device gpu: ${job.variant} quantizes activations, which only the CPU forward runs; ` +
            `use --device cpu`,
        );
      }
      const qm = c.blockwise ? null : inMemory(q);
      const r = c.blockwise
        ? await perplexityBlockwise(
          q && "reader" in q ? q.reader : c.blockwise.source,
          p.set.tokens,
          {
            seqlen: plan.seqlen,
            limit: p.identity.windows,
            workers: c.workers,
            actQuant: q?.actQuant,
            onProgress: (n) => bar.update(n),
            label,
          },
        )
        : c.gpu
        ? await prefillPerplexity(
          c.gpu,
          qm ? qm.weights : model.weights,
          qm ? qm.linears : null,
          p.set.tokens,
          {
            seqlen: plan.seqlen,
            limit: p.identity.windows,
            onProgress: (n) => bar.update(n),
            label,
          },
        )
        : await perplexity(qm ? qm.weights : model.weights, p.set.tokens, {
          seqlen: plan.seqlen,
          limit: p.identity.windows,
          workers: c.workers,
          actQuant: q?.actQuant,
          linears: qm?.linears,
          onProgress: (n) => bar.update(n),
          label,
        });
      await recordInto(c.store, c.run, model, q, p.set, r, job.identity);
      log(
        `   ${job.dataset}: ppl ${r.ppl.toFixed(4)} (${r.windows} of ${r.windowsAvailable} ` +
          `windows, ${(r.tokens / r.seconds).toFixed(0)} tok/s)`,
      );
      c.event({ id: job.id, status: "done", ppl: r.ppl, seconds: r.seconds });
      c.results.push({
        variant: job.variant,
        dataset: job.dataset,
        ppl: r.ppl,
        seqlen: r.seqlen,
        windows: r.windows,
        windowsAvailable: r.windowsAvailable,
        avgBits: q?.avgBits ?? 32,
        resultKey: job.resultKey,
      });
    } else if (job.kind === "bench") {
      if (c.resume && (await c.store.doneJobs()).has(job.jobKey)) {
        log(`   ${job.id}: already in ${c.storePath}, skipped`);
        c.event({ id: job.id, status: "stored" });
        continue;
      }
      const n = await runBench(job, c);
      c.event({ id: job.id, status: "done", rows: n, seconds: (performance.now() - t) / 1000 });
    }
  }
  if (q && "reader" in q) q.reader[Symbol.dispose]();
}

/** The quantized model of a sweep that holds its models in memory (not --blockwise). */
function inMemory(q: SweepQuant | null): QuantizedModel | null {
  if (q && "reader" in q) throw new Error(`${q.variantName} was opened block by block`);
  return q;
}

/**
 * The quantized model of a quantize job: read back from the cache dir when
 * a valid file of the same identity is there, else quantized and written
 * there (to a temporary file renamed into place: never half-written).
 * `--blockwise`: opened for block-by-block reads, quantized block by block.
 */
async function quantized(
  model: LoadedModel,
  job: QuantizeJob,
  c: UnitContext,
): Promise<SweepQuant> {
  const log = (s: string) => console.error(s);
  // What the quantized model must be: the spec, calibration and Fisher file the key holds.
  const predicted = canonicalJson({
    quant: job.spec,
    calibration: stripFile(job.calibration),
    fisher: job.fisherFile ? { sha256: job.fisherFile.sha256 } : undefined,
  });
  const accountOf = (q: Omit<QuantizedModel, "weights" | "linears">) =>
    canonicalJson({
      quant: q.spec,
      calibration: stripFile(q.calibration),
      fisher: fisherIdentity(q),
    });
  if (await isFile(job.path)) {
    try {
      const q = c.blockwise ? openQuantized(job.path) : await loadQuantized(job.path);
      const same = accountOf(q) === predicted;
      if (same && q.base.sha256 === model.checkpointSha256) {
        log(`   ${job.variant}: quantized model read from the cache ${job.path}`);
        return q;
      }
      if ("reader" in q) q.reader[Symbol.dispose]();
      log(`   ${job.path} is not ${job.variant} of this model; quantizing again`);
    } catch (e) {
      log(`   ${job.path} cannot be used (${(e as Error).message}); quantizing again`);
    }
  }
  if (c.blockwise) return await quantizedBlockwise(c.blockwise, job, c, predicted, accountOf);
  log(`   ${job.variant}: quantizing …`);
  const q = await quantizeModel(
    model.weights,
    job.spec,
    quantContext(model, c, "   ", job.fisherFile),
  );
  log(`   ${q.avgBits.toFixed(3)} avg bits, ${q.seconds.toFixed(1)} s`);
  // The key was computed before quantizing; the quantizer's own account must agree.
  const actual = accountOf(q);
  if (predicted !== actual) {
    throw new Error(
      `${job.variant}: the identity computed before quantizing (${predicted}) differs from the ` +
        `quantizer's (${actual}); a result stored under it would be mislabelled`,
    );
  }
  await Deno.mkdir(job.path.replace(/\/[^/]*$/, ""), { recursive: true });
  const tmp = `${job.path}.tmp-${Deno.pid}`;
  await saveQuantized(tmp, q, { path: model.checkpointPath, sha256: model.checkpointSha256 }, {
    model: model.name,
    command: c.command,
    created: new Date().toISOString(),
  });
  await Deno.rename(tmp, job.path);
  return q;
}

/**
 * `--blockwise`'s quantize job: the model quantized block by block into the
 * cache (quantize_file.ts `quantizeOpenedModel`: the same codes as the
 * whole-model quantizers), then opened for block-by-block reads.
 */
async function quantizedBlockwise(
  model: OpenedModel,
  job: QuantizeJob,
  c: UnitContext,
  predicted: string,
  accountOf: (q: OpenedQuant) => string,
): Promise<OpenedQuant> {
  console.error(`   ${job.variant}: quantizing block by block …`);
  await Deno.mkdir(job.path.replace(/\/[^/]*$/, ""), { recursive: true });
  const tmp = `${job.path}.tmp-${Deno.pid}`;
  const r = await quantizeOpenedModel(model, job.spec, tmp, {
    fisherFile: job.fisherFile,
    hessians: c.hessians,
    workers: c.workers,
    provenance: { command: c.command },
    indent: "   ",
  });
  console.error(`   ${r.avgBits.toFixed(3)} avg bits, ${r.seconds.toFixed(1)} s`);
  const q = openQuantized(tmp);
  // The key was computed before quantizing; the file's own account must agree.
  const actual = accountOf(q);
  if (predicted !== actual) {
    q.reader[Symbol.dispose]();
    await Deno.remove(tmp);
    throw new Error(
      `${job.variant}: the identity computed before quantizing (${predicted}) differs from the ` +
        `quantizer's (${actual}); a result stored under it would be mislabelled`,
    );
  }
  await Deno.rename(tmp, job.path); // the open file stays readable under its new name
  return q;
}

/** Times a bench job's formats (eval/bench/kernels.ts) and stores the rows with the job's key. */
async function runBench(job: BenchJob, c: UnitContext): Promise<number> {
  const { benchKernels } = await import("../bench/kernels.ts");
  const group = job.formats.find((f) => f.format === "uniform")?.groupSize ?? 0;
  const density = job.formats.find((f) => f.format === "lut+sparse")?.density ?? 0.0045;
  const formats = [...new Set(job.formats.map((f) => f.format))];
  const nShapes = job.shapes === "llama7b" ? 3 : job.shapes.split(",").length;
  const total = nShapes * (2 + formats.length * job.bits.length) * job.batch.length;
  const bar = new Progress(`   kernels ${job.shapeName}`, total, "kernels", 1, "kernels");
  let timed = 0;
  const r = await benchKernels({
    shapes: job.shapes,
    formats: ["f32", "f16", ...formats],
    bits: job.bits,
    batch: job.batch,
    runs: job.runs,
    groupSize: group,
    density,
    log: (line) => {
      if (/ B=\d+: /.test(line)) bar.update(++timed, line.split(":")[0]);
    },
  });
  const labelOf = (format: string) => job.formats.find((f) => f.format === format)?.label ?? format;
  const records: KernelRecord[] = r.rows.map((row) => ({
    runId: c.run.runId,
    adapter: r.adapter,
    format: labelOf(row.format),
    bits: row.bits,
    rows: Number(row.shape.split("x")[0]),
    cols: Number(row.shape.split("x")[1]),
    batch: row.batch,
    medianUs: row.medianUs,
    minUs: row.minUs,
    gbps: row.GBps,
    fractionOfCopy: row.fractionOfCopy,
    speedupVsF16: row.speedupVsF16,
    infoBits: row.avgInfoBits,
    storedBits: row.avgStoredBits,
  }));
  await c.store.addKernels(records, { key: job.jobKey, kind: "bench", label: job.id });
  return records.length;
}

/**
 * Re-renders the report folder from the store with `deno task report`'s own
 * code (reports/ owns the page; this only calls it).
 */
async function renderReportFolder(storePath: string, outDir: string): Promise<void> {
  const { COMMANDS } = await import("./commands.ts");
  const report = COMMANDS.report;
  const store = report.options.store?.multiple ? [storePath] : storePath;
  // The report command prints every table of the store; the sweep prints its own (below).
  const print = console.log;
  console.log = () => {};
  try {
    await report.run({ store, out: outDir }, []);
  } finally {
    console.log = print;
  }
}

/**
 * The summary of a plan from the store: one row per variant with its
 * average bits, perplexity per dataset and kernel speedup per shape set
 * (over a decoder layer's linears, each shape weighted by how many linears
 * have it: time of fp16 / time of the format, both from the same timing run).
 *
 * @param plan the plan
 * @param store the results store
 */
export async function summarize(plan: Plan, store: ResultsStore): Promise<SummaryRow[]> {
  const keys = plan.units.flatMap((u) =>
    u.jobs.flatMap((j) => j.kind === "evaluate" ? [j.resultKey] : [])
  );
  const ppl = new Map<string, { ppl: number; info_bits: number }>();
  if (keys.length > 0) {
    const rows = await store.query(
      `select result_key, ppl, info_bits from ppl_results where result_key in (${
        keys.map((_, i) => `$${i + 1}`).join(", ")
      }) qualify row_number() over (partition by result_key order by recorded_at desc) = 1`,
      keys,
    );
    for (const r of rows) {
      ppl.set(String(r.result_key), { ppl: Number(r.ppl), info_bits: Number(r.info_bits) });
    }
  }
  const benchJobs = plan.units.flatMap((u) =>
    u.jobs.filter((j): j is BenchJob => j.kind === "bench")
  );
  const kernels = benchJobs.length === 0 ? [] : await store.query(
    `select j.job_key, k.format, k.bits, k.rows, k.cols, k.median_us, k.speedup_vs_f16
     from jobs j join kernel_results k on k.run_id = j.run_id and k.recorded_at = j.recorded_at
     where j.job_key in (${benchJobs.map((_, i) => `$${i + 1}`).join(", ")})`,
    benchJobs.map((j) => j.jobKey),
  );
  return plan.variants.map((v) => {
    const evals = plan.units.flatMap((u) =>
      u.jobs.filter((j): j is EvaluateJob => j.kind === "evaluate" && j.variant === v.variant)
    );
    const stored = evals.map((e) => ppl.get(e.resultKey));
    const row: SummaryRow = {
      row: v.row,
      variant: v.variant,
      bits: v.bits,
      avgBits: stored.find((s) => s)?.info_bits ?? (v.spec ? NaN : 32),
      ppl: Object.fromEntries(evals.map((e, i) => [e.dataset, stored[i]?.ppl ?? null])),
      speedup: {},
    };
    for (const job of benchJobs) {
      const format = v.spec ? kernelFormat(v.spec).label : "f32";
      if (v.spec && !job.formats.some((f) => f.label === format)) continue;
      const mine = kernels.filter((k) =>
        k.job_key === job.jobKey && k.format === format && Number(k.bits) === (v.bits ?? 32)
      );
      row.speedup[job.shapeName] = layerSpeedup(mine, job.layerCounts) ?? null;
    }
    return row;
  });
}

/** Speedup over f16 of a decoder layer's linears (each shape weighted by its count in a layer). */
function layerSpeedup(
  rows: Record<string, unknown>[],
  counts: Record<string, number>,
): number | undefined {
  let f16 = 0, mine = 0;
  for (const r of rows) {
    const n = counts[`${r.rows}x${r.cols}`] ?? 0;
    const t = Number(r.median_us);
    mine += n * t;
    f16 += n * t * Number(r.speedup_vs_f16);
  }
  return mine > 0 ? f16 / mine : undefined;
}

/** The summary as Table 1's layout: rows = preset rows, column groups = bit widths. */
export function summaryMarkdown(plan: Plan, rows: SummaryRow[]): string {
  const datasets = [...plan.sets.keys()];
  const shapeNames = [...new Set(rows.flatMap((r) => Object.keys(r.speedup)))];
  const bits = [...new Set(rows.flatMap((r) => r.bits === null ? [] : [r.bits]))];
  const head = ["method"];
  for (const b of bits) {
    head.push(`${b}-bit avg bits`, ...datasets.map((d) => `${b}-bit ${d}`));
    head.push(...shapeNames.map((s) => `${b}-bit speedup (${s})`));
  }
  const names = [...new Set(rows.map((r) => r.row))];
  const fmt = (x: number | null | undefined, digits = 2) =>
    x === null || x === undefined || Number.isNaN(x) ? "–" : x.toFixed(digits);
  const lines = names.map((name) => {
    const fp = rows.find((r) => r.row === name && r.bits === null);
    const cells = [name];
    for (const b of bits) {
      const r = fp ?? rows.find((x) => x.row === name && x.bits === b);
      cells.push(fmt(r?.avgBits, 2), ...datasets.map((d) => fmt(r?.ppl[d])));
      cells.push(...shapeNames.map((s) => (r?.speedup[s] ? `${fmt(r.speedup[s])}×` : "–")));
    }
    return cells;
  });
  const title = `${plan.model} · preset ${plan.preset} · seqlen ${plan.seqlen} · ` +
    ([...plan.sets.values()].every((p) => p.identity.windows === p.windowsAvailable)
      ? "every window"
      : `first ${Math.max(...[...plan.sets.values()].map((p) => p.identity.windows))} windows`) +
    (shapeNames.length ? " · speedup = fp16 time / format time, one decoder layer's linears" : "");
  return `${title}\n\n${markdownTable(head, lines)}`;
}

function planJson(plan: Plan, status: Map<string, JobStatus>, units: Unit[]) {
  return {
    notes: plan.notes,
    jobs: units.flatMap((u) =>
      u.jobs.map((j) => ({
        unit: u.id,
        id: j.id,
        kind: j.kind,
        status: status.get(j.id),
        ...(j.kind === "evaluate" ? { resultKey: j.resultKey } : {}),
        ...(j.kind === "bench" ? { jobKey: j.jobKey } : {}),
      }))
    ),
  };
}

function stripFile(c: { file?: unknown } | null | undefined) {
  return c ? { ...c, file: undefined } : null;
}

/**
 * Takes the store's writer lock (an advisory lock on `STORE.lock`, released
 * by the kernel when the process ends, however it ends).
 *
 * @throws {CliError} when another process holds it for `waitMs`
 */
async function lockStore(storePath: string, waitMs: number): Promise<Disposable> {
  const path = `${storePath}.lock`;
  const file = await Deno.open(path, { create: true, write: true });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const got = await Promise.race([
    file.lock(true).then(() => true),
    new Promise<boolean>((r) => timer = setTimeout(() => r(false), waitMs)),
  ]);
  clearTimeout(timer);
  if (!got) {
    throw new CliError(
      `--store ${storePath} is locked by another writer (a "deno task eval" still running on it ` +
        `holds ${path}); wait for it to finish, or pass another --store`,
    );
  }
  return {
    [Symbol.dispose]() {
      file.unlockSync();
      file.close();
    },
  };
}

async function recordInto(
  store: ResultsStore,
  run: RunInfo,
  model: LoadedModel,
  q: SweepQuant | null,
  set: EvalSet,
  r: PerplexityResult,
  identity: ResultIdentity,
  identityComplete = true,
): Promise<void> {
  await store.addPpl({
    runId: run.runId,
    model: model.name,
    variant: q ? variantName(q.spec) : "fp32",
    method: q ? q.spec.method : "fp32",
    bits: q ? q.spec.bits : null,
    groupSize: q && "groupSize" in q.spec ? q.spec.groupSize : null,
    infoBits: q ? q.avgBits : 32,
    storedBits: q ? ("reader" in q ? q.avgStoredBits : modelSize(q.linears).avgStoredBits) : 32,
    quantConfig: q ? { ...q.spec, details: q.details } : { method: "fp32" },
    calibration: q?.calibrationText ?? null,
    quantSeconds: q?.seconds ?? 0,
    dataFile: set.file,
    windowsAvailable: r.windowsAvailable,
    tokens: r.tokens,
    ppl: r.ppl,
    evalSeconds: r.seconds,
    gitCommit: run.gitCommit,
    identity,
    identityComplete,
  });
}

/**
 * Records one `deno task ppl --store FILE` result under the key of its
 * identity: the quantized model's resolved spec and calibration identity, the
 * evaluation set and the windows evaluated. A model read from a file written
 * before calibration identities existed is recorded as an incomplete
 * identity (never matched by a sweep's key).
 */
export async function recordPpl(
  storePath: string,
  model: LoadedModel,
  q: QuantizedModel | null,
  set: EvalSet,
  r: PerplexityResult,
  command: string,
  opts: { evaluator?: string } = {},
): Promise<void> {
  if (!set.fileSha256) {
    throw new Error(`${set.name}: ${set.file} has no sha256 (loadEvalSet sets it)`);
  }
  const identity: ResultIdentity = {
    codeVersion: CODE_VERSION,
    model: { sha256: model.checkpointSha256 },
    quant: q ? q.spec : null,
    calibration: q?.calibration ?? null,
    dataset: await datasetIdentity(
      { name: set.name, fileSha256: set.fileSha256, protocol: set.protocol, tokens: set.tokens },
      r.seqlen,
      r.windows,
    ),
    evaluator: opts.evaluator,
    fisher: fisherIdentity(q),
  };
  const complete = !q || q.calibration !== null || calibrationRequest(q.spec) === null ||
    identity.fisher !== undefined;
  await Deno.mkdir(storePath.replace(/\/[^/]*$/, "") || ".", { recursive: true });
  const store = await ResultsStore.open(storePath);
  const run = await currentRun(command);
  await store.addRun(run);
  await recordInto(store, run, model, q, set, r, identity, complete);
  store.close();
}
