/**
 * Sweeps: lists of quantization specs (eval/cli/presets.ts) run end to end —
 * quantize → evaluate every dataset → store each result as it is computed →
 * report.
 *
 * Resume by identity. Before quantizing a spec, the sweep builds the full
 * identity (reports/identity.ts) of each of its results — resolved spec,
 * calibration data (windows drawn and hashed, which is cheap), evaluation
 * tokens and the windows that will actually be evaluated, model sha256, code
 * version — and skips those whose key is already stored. A spec whose
 * results are all stored is never quantized. An interrupted sweep continues
 * where it stopped; a `--limit` run never stands in for a full one.
 *
 * @module
 */
import { type EvalSet, type EvalSetName, loadEvalSet } from "../../datasets/eval_sets.ts";
import {
  type CalibrationIdentity,
  calibrationRequest,
  type QuantizedModel,
  type QuantSpec,
  resolveSpec,
  variantName,
} from "../../quant/methods.ts";
import { modelSize } from "../../quant/size.ts";
import { drawCalibration, quantizeModel } from "../pipeline.ts";
import type { SweepEntry } from "./presets.ts";
import { perplexity, type PerplexityResult, windowPlan } from "../perplexity.ts";
import { Progress, progressBars } from "./progress.ts";
import type { LoadedModel } from "./load.ts";
import { currentRun, ResultsStore, type RunInfo } from "../../reports/store.ts";
import {
  canonicalJson,
  CODE_VERSION,
  type DatasetIdentity,
  datasetIdentity,
  type ResultIdentity,
  resultKeys,
} from "../../reports/identity.ts";
import { markdownReport, pplTables, renderReport } from "../../reports/report.ts";

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
  /** The command line, recorded with the run. */
  command: string;
}

/** An evaluation set with the identity of evaluating it under the sweep's seqlen and limit. */
interface PlannedSet {
  set: EvalSet;
  identity: DatasetIdentity;
  windowsAvailable: number;
}

/**
 * The identity of the calibration data a resolved spec's method draws,
 * computed without quantizing: the same windows eval/pipeline.ts draws
 * (quant/registry.ts `calibrationRequest`), hashed. Null when the method
 * needs no calibration.
 *
 * @param model the loaded model (tokenizer, data dir)
 * @param spec a resolved spec (quant/spec.ts `resolveSpec`)
 */
export async function calibrationIdentity(
  model: LoadedModel,
  spec: QuantSpec,
): Promise<CalibrationIdentity | null> {
  return (await drawCalibration(model.weights.config, spec, model))?.identity ?? null;
}

/**
 * The dataset part of a result's identity: the windows that will actually be
 * evaluated (`limit` capped at what the set holds).
 */
async function planSet(
  set: EvalSet,
  seqlen: number,
  limit: number | undefined,
  maxSeqLen: number,
): Promise<PlannedSet> {
  const { windows, available } = windowPlan(set.tokens.length, seqlen, limit, maxSeqLen);
  if (!set.fileSha256) {
    throw new Error(`${set.name}: ${set.file} has no sha256 (loadEvalSet sets it)`);
  }
  return {
    set,
    identity: await datasetIdentity(
      { name: set.name, fileSha256: set.fileSha256, protocol: set.protocol, tokens: set.tokens },
      seqlen,
      windows,
    ),
    windowsAvailable: available,
  };
}

/** Runs a sweep; every result is stored as soon as it is computed. */
export async function runSweep(model: LoadedModel, opts: SweepOptions): Promise<object> {
  await Deno.mkdir(opts.storePath.replace(/\/[^/]*$/, "") || ".", { recursive: true });
  const store = await ResultsStore.open(opts.storePath);
  const run = await currentRun(opts.command);
  await store.addRun(run);
  const config = model.weights.config;
  const sets = new Map<EvalSetName, PlannedSet>();
  const planned = async (d: EvalSetName) => {
    if (!sets.has(d)) {
      const set = await loadEvalSet(d, {
        dataDir: model.dataDir,
        tokenizer: model.tokenizer,
        seqlen: opts.seqlen,
        offline: model.offline,
      });
      sets.set(d, await planSet(set, opts.seqlen, opts.limit, config.maxSeqLen));
    }
    return sets.get(d)!;
  };
  // Specs that draw the same windows (e.g. GPTQ and AWQ at every bit width) share one draw.
  const calibrations = new Map<string, Promise<CalibrationIdentity | null>>();
  const calibrationOf = (spec: QuantSpec) => {
    const { kind: _, ...draw } = calibrationRequest(spec) ?? { kind: "none" };
    const key = canonicalJson(draw);
    if (!calibrations.has(key)) calibrations.set(key, calibrationIdentity(model, spec));
    return calibrations.get(key)!;
  };
  const results: object[] = [];
  const keys: string[] = [];
  const t0 = performance.now();
  for (const entry of opts.specs) {
    const spec = entry ? resolveSpec(entry, config) : null;
    const variant = spec ? variantName(spec) : "fp32";
    const calibration = spec ? await calibrationOf(spec) : null;
    const todo: { p: PlannedSet; identity: ResultIdentity }[] = [];
    for (const d of opts.datasets) {
      const p = await planned(d);
      const identity: ResultIdentity = {
        codeVersion: CODE_VERSION,
        model: { sha256: model.checkpointSha256 },
        quant: spec,
        calibration,
        dataset: p.identity,
      };
      const { resultKey } = await resultKeys(identity);
      keys.push(resultKey);
      if (opts.resume && await store.hasResult(resultKey)) {
        console.error(
          `${variant} ${d} (${p.identity.windows} windows of ${opts.seqlen}): already in ` +
            `${opts.storePath} under key ${
              resultKey.slice(0, 12)
            }…, skipped (--no-resume re-runs it)`,
        );
      } else todo.push({ p, identity });
    }
    if (todo.length === 0) continue;
    let q: QuantizedModel | null = null;
    if (spec) {
      console.error(`\n== ${variant}: quantizing …`);
      q = await quantizeModel(model.weights, spec, {
        tokenizer: model.tokenizer,
        dataDir: model.dataDir,
        offline: model.offline,
        modelKey: model.checkpointSha256,
        workers: opts.workers,
        log: (s) => console.error(`   ${s}`),
        onProgress: progressBars("   "),
      });
      console.error(`   ${q.avgBits.toFixed(3)} avg bits, ${q.seconds.toFixed(1)} s`);
      // The key was computed before quantizing; the quantizer's own account must agree.
      const predicted = canonicalJson({ quant: spec, calibration: stripFile(calibration) });
      const actual = canonicalJson({ quant: q.spec, calibration: stripFile(q.calibration) });
      if (predicted !== actual) {
        throw new Error(
          `${variant}: the identity computed before quantizing (${predicted}) differs from the ` +
            `quantizer's (${actual}); a result stored under it would be mislabelled`,
        );
      }
    } else console.error(`\n== fp32`);
    for (const { p, identity } of todo) {
      const d = p.set.name;
      const bar = new Progress(`   ${d}`, p.identity.windows, "windows", opts.seqlen, "tok");
      const r = await perplexity(q ? q.weights : model.weights, p.set.tokens, {
        seqlen: opts.seqlen,
        limit: p.identity.windows,
        workers: opts.workers,
        onProgress: (n) => bar.update(n),
        label: `${model.name} ${variant}`,
      });
      await recordInto(store, run, model, q, p.set, r, identity);
      console.error(
        `   ${d}: ppl ${r.ppl.toFixed(4)} (${r.windows} of ${r.windowsAvailable} windows, ${
          (r.tokens / r.seconds).toFixed(0)
        } tok/s)`,
      );
      results.push({
        variant,
        dataset: d,
        ppl: r.ppl,
        seqlen: r.seqlen,
        windows: r.windows,
        windowsAvailable: r.windowsAvailable,
        avgBits: q?.avgBits ?? 32,
        resultKey: (await resultKeys(identity)).resultKey,
      });
    }
  }
  await Deno.mkdir(opts.reportPath.replace(/\/[^/]*$/, "") || ".", { recursive: true });
  await Deno.writeTextFile(opts.reportPath, await renderReport(store));
  // This sweep's results only (computed now or found stored), each table titled with its
  // seqlen and the windows its numbers cover.
  const tables = await pplTables(store, { resultKeys: keys });
  console.log(`\n${markdownReport(tables)}`);
  console.log(`\nstore: ${opts.storePath}\nreport: ${opts.reportPath}`);
  store.close();
  return {
    model: model.name,
    runId: run.runId,
    store: opts.storePath,
    report: opts.reportPath,
    seconds: (performance.now() - t0) / 1000,
    results,
  };
}

function stripFile(c: CalibrationIdentity | null) {
  return c && { ...c, file: undefined };
}

async function recordInto(
  store: ResultsStore,
  run: RunInfo,
  model: LoadedModel,
  q: QuantizedModel | null,
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
    storedBits: q ? modelSize(q.linears).avgStoredBits : 32,
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
  };
  const complete = !q || q.calibration !== null || calibrationRequest(q.spec) === null;
  await Deno.mkdir(storePath.replace(/\/[^/]*$/, "") || ".", { recursive: true });
  const store = await ResultsStore.open(storePath);
  const run = await currentRun(command);
  await store.addRun(run);
  await recordInto(store, run, model, q, set, r, identity, complete);
  store.close();
}
