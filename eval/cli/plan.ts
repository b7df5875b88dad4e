/**
 * The run plan of `deno task eval`: a preset (eval/cli/presets.ts) expanded
 * into jobs, calibrate → quantize → evaluate → bench, each with the key it is
 * stored or cached under, so a run (or `--dry-run`) knows before any work
 * what is already done.
 *
 * - calibrate: one Fisher pass per (model, calibration config), shared by
 *   every SqueezeLLM variant that reads it; cached in `CACHE/fisher/`
 *   (quant/fisher_cache.ts). None with `--fisher DIR`: the SqueezeLLM
 *   variants read the folder's Fisher, and their keys hold its sha256
 *   (reports/identity.ts `ResultIdentity.fisher`) instead of a calibration.
 * - quantize: one per variant; the quantized model is cached in
 *   `CACHE/quantized/<config key>.sqbq` (quant/qmodel.ts, checksummed), the
 *   config key being the hash of model + resolved spec + calibration
 *   identity (reports/identity.ts), and reused by later runs.
 * - evaluate: one per (variant, dataset), stored in the results store under
 *   its result key.
 * - bench: kernel timings of the formats the variants are stored in
 *   (eval/bench/kernels.ts), per shape set; stored with a job key.
 *
 * Jobs are grouped into units (a variant's calibrate + quantize + evaluate
 * jobs, or one bench job): the unit is what a shard (eval/cli/shard.ts) runs.
 *
 * @module
 */
import type { LlamaConfig } from "../../model/config.ts";
import { LINEAR_NAMES, linearShape } from "../../model/config.ts";
import { type EvalSet, type EvalSetName, loadEvalSet } from "../../datasets/eval_sets.ts";
import {
  type CalibrationIdentity,
  calibrationRequest,
  inputWidths,
  QUANTIZERS,
  type QuantSpec,
  resolveSpec,
  variantName,
} from "../../quant/methods.ts";
import { fisherCacheKey } from "../../quant/fisher_cache.ts";
import { defaultEpochs } from "../../quant/abq.ts";
import { type AbqSpec, defaultCalibSeqlen } from "../../quant/spec.ts";
import { FISHER_CODE_VERSION } from "../../quant/fisher.ts";
import { drawCalibration } from "../pipeline.ts";
import { windowPlan } from "../perplexity.ts";
import {
  canonicalJson,
  CODE_VERSION,
  type DatasetIdentity,
  datasetIdentity,
  type ResultIdentity,
  resultKeys,
  sha256Hex,
} from "../../reports/identity.ts";
import type { BenchFormat } from "../bench/kernels.ts";
import { type Preset, rowSettings, withOptions } from "./presets.ts";
import type { LoadedModel } from "./load.ts";
import type { ResultsStore } from "../../reports/store.ts";
import { isFile } from "../../model/tensor_file.ts";

/** One variant of the plan: a preset row at one bit width. */
export interface PlanVariant {
  /** The preset row, e.g. "SqueezeLLM 0.45%". */
  row: string;
  /** The resolved spec; null for fp32. */
  spec: QuantSpec | null;
  /** e.g. "squeezellm.w3.s0.45"; "fp32". */
  variant: string;
  bits: number | null;
  /** The W×A setting of a tables preset, e.g. "W2*A8"; null otherwise. */
  setting?: string | null;
}

/**
 * How a variant's weights are stored for the kernels (eval/bench/kernels.ts formats). The
 * label is the format's own name for one group per row and 0.45 % sparse, with the group or
 * density appended otherwise ("uniform.g128", "lut+sparse.s0.05").
 */
export interface KernelFormat {
  /** Label stored in `kernel_results.format`, e.g. "uniform", "uniform.g128", "lut+sparse.s0.05". */
  label: string;
  format: BenchFormat;
  /** Uniform group size; 0 = one group per row. */
  groupSize: number;
  /** Fraction of sparse nonzeros (lut+sparse). */
  density: number;
}

/**
 * The kernel format of a variant: uniform grids (RTN, GPTQ, AWQ) at their
 * group, lookup tables (SqueezeLLM) with the sparse part at its density.
 *
 * @param spec a resolved spec
 * @returns the format, its label and parameters
 * @example
 * ```ts
 * kernelFormat(resolveSpec(defaultSpec("gptq", 3), config)).label; // "uniform"
 * ```
 */
export function kernelFormat(spec: QuantSpec): KernelFormat {
  if (spec.method === "squeezellm") {
    const pct = spec.sensitivePct + (spec.outlierPct ?? 0);
    if (pct === 0 && spec.outlierRange === null) {
      return { label: "lut", format: "lut", groupSize: 0, density: 0 };
    }
    // The paper's default 0.45% is the plain "lut+sparse" (the label reports/report.ts looks up).
    return {
      label: pct === 0.45 ? "lut+sparse" : `lut+sparse.s${+pct.toFixed(4)}`,
      format: "lut+sparse",
      groupSize: 0,
      density: pct / 100,
    };
  }
  const g = "groupSize" in spec ? spec.groupSize ?? 0 : 0;
  return { label: g ? `uniform.g${g}` : "uniform", format: "uniform", groupSize: g, density: 0 };
}

/** A calibrate job: one Fisher pass, shared. */
export interface CalibrateJob {
  kind: "calibrate";
  id: string;
  /** e.g. "fisher c4, 100 windows of 512, seed 0". */
  label: string;
  /** A spec that needs it (quant/pipeline.ts loadCalibration computes it for that spec). */
  spec: QuantSpec;
  /** The Fisher cache file. */
  path: string;
  /** Variants that read it. */
  users: string[];
}

/** A quantize job. */
export interface QuantizeJob {
  kind: "quantize";
  id: string;
  variant: string;
  spec: QuantSpec;
  /** The calibrate job it reads, if any. */
  calibrate: string | null;
  /** The quantized model's cache file. */
  path: string;
  configKey: string;
  /** The calibration data it reads (null: none). */
  calibration: CalibrationIdentity | null;
  /** The Fisher folder it reads instead of a calibrate job's (`--fisher`); null: none. */
  fisherFile: FisherFile | null;
}

/** A Fisher folder read with `--fisher` (SqueezeLLM-gradients output) and its sha256. */
export interface FisherFile {
  path: string;
  sha256: string;
}

/** An evaluate job. */
export interface EvaluateJob {
  kind: "evaluate";
  id: string;
  variant: string;
  row: string;
  spec: QuantSpec | null;
  dataset: EvalSetName;
  identity: ResultIdentity;
  resultKey: string;
}

/** A bench job: kernel timings of some formats on one shape set. */
export interface BenchJob {
  kind: "bench";
  id: string;
  /** "model" resolved to the model's shapes, "llama7b", or "ROWSxCOLS". */
  shapes: string;
  /** "stories260K shapes" | "llama7b shapes" | …. */
  shapeName: string;
  /** The formats timed (f16 and f32 always are, as the baselines). */
  formats: KernelFormat[];
  bits: number[];
  batch: number[];
  runs: number;
  /** Stored with the rows (store `jobs` table): the job is done when it is there. */
  jobKey: string;
  /** "ROWSxCOLS" → linears of that shape in one decoder layer (the speedup's weights). */
  layerCounts: Record<string, number>;
}

/** Any job. */
export type Job = CalibrateJob | QuantizeJob | EvaluateJob | BenchJob;

/** What a shard runs: a variant's jobs, or one bench job. */
export interface Unit {
  id: string;
  jobs: Job[];
  /** Estimated seconds on one 2-core machine, for balancing shards. */
  cost: number;
}

/** An evaluation set as a plan evaluates it. */
export interface PlannedSet {
  set: EvalSet;
  identity: DatasetIdentity;
  windowsAvailable: number;
}

/** A preset expanded for one model. */
export interface Plan {
  preset: string;
  model: string;
  seqlen: number;
  limit: number | null;
  variants: PlanVariant[];
  units: Unit[];
  /** What the plan changed or left out, e.g. rows dropped because 128 does not divide a width. */
  notes: string[];
  sets: Map<EvalSetName, PlannedSet>;
}

/**
 * The variants of a preset on a model: every row at every bit width (fp32
 * once), specs resolved; a row whose group does not divide every input
 * width is dropped or run per row as its `ifGroupIndivisible` says (a group
 * given with `--group` is an error instead).
 *
 * @param preset the preset, overrides applied
 * @param config the model
 * @returns the variants and the notes saying what was changed
 * @throws {RangeError} for a `--group` that does not divide a width
 */
export function expandVariants(
  preset: Preset,
  config: LlamaConfig,
): { variants: PlanVariant[]; notes: string[] } {
  const widths = inputWidths(config);
  const variants: PlanVariant[] = [];
  const notes: string[] = [];
  const seen = new Set<string>();
  for (const row of preset.rows) {
    if (row.method === "fp32") {
      if (!seen.has("fp32")) {
        variants.push({ row: row.name, spec: null, variant: "fp32", bits: null });
      }
      seen.add("fp32");
      continue;
    }
    const g = row.options.groupSize;
    let options = row.options;
    if (typeof g === "number" && !widths.every((w) => w % g === 0)) {
      if (row.groupGiven) {
        throw new RangeError(
          `--group ${g} does not divide every layer's input width of this model ` +
            `(${[...new Set(widths)].join(", ")}); pick a divisor or leave --group out`,
        );
      }
      const why = `${g} does not divide every input width (${[...new Set(widths)].join(", ")})`;
      if (row.ifGroupIndivisible === "drop") {
        notes.push(`row "${row.name}" left out: ${why}`);
        continue;
      }
      notes.push(`row "${row.name}" runs with one group per row: ${why}`);
      options = { ...options, groupSize: null };
    }
    for (const { bits, setting, options: o } of rowSettings(preset, row, options)) {
      const spec = resolveSpec(withOptions(row.method, bits, o), config, {
        groupGiven: row.groupGiven,
      });
      const variant = variantName(spec);
      if (setting?.bitBalance && !spec.bitBalance) {
        notes.push(
          `row "${row.name}" at ${setting.label}: bit balance changes nothing for ` +
            `${spec.method} (${variant})`,
        );
      }
      if (seen.has(canonicalJson(spec))) continue;
      seen.add(canonicalJson(spec));
      variants.push({ row: row.name, spec, variant, bits, setting: setting?.label ?? null });
    }
  }
  return { variants, notes };
}

/** The model's own linear shapes as "ROWSxCOLS,…" (distinct, in layer order, classifier last). */
export function modelShapes(config: LlamaConfig): string {
  const shapes = LINEAR_NAMES.map((n) => linearShape(config, n).join("x"));
  shapes.push(`${config.vocabSize}x${config.dim}`);
  return [...new Set(shapes)].join(",");
}

/**
 * How many linears of each shape one decoder layer has: the model's own
 * (wq, wk, wv, wo, w1, w2, w3), LLaMA-7B's (4 × 4096², 2 × 11008×4096,
 * 1 × 4096×11008), or one of each listed shape.
 */
export function layerCounts(shape: string, config: LlamaConfig): Record<string, number> {
  const out: Record<string, number> = {};
  if (shape === "model") {
    for (const n of LINEAR_NAMES) {
      const k = linearShape(config, n).join("x");
      out[k] = (out[k] ?? 0) + 1;
    }
  } else if (shape === "llama7b") {
    Object.assign(out, { "4096x4096": 4, "11008x4096": 2, "4096x11008": 1 });
  } else out[shape] = 1;
  return out;
}

/** Options of {@linkcode buildPlan}. */
export interface BuildPlanOptions {
  seqlen: number;
  /** The cache dir (datasets/datadir.ts resolveCacheDir). */
  cacheDir: string;
  /** The evaluator of every result when not the CPU forward (reports/identity.ts). */
  evaluator?: string;
  /** Where GPTQ's Hessians are accumulated when not the CPU (in the calibration identity). */
  hessianDevice?: "gpu";
  /** SqueezeLLM's Fisher read from this folder (`--fisher`), not computed: no calibrate job. */
  fisher?: FisherFile;
}

/**
 * Expands a preset into the jobs of a run on `model`: loads the evaluation
 * sets and draws the calibration windows (cheap) to compute every key.
 *
 * @param model the loaded model
 * @param preset the preset, overrides applied
 * @param opts window length, cache dir
 * @returns the plan
 */
export async function buildPlan(
  model: LoadedModel,
  preset: Preset,
  opts: BuildPlanOptions,
): Promise<Plan> {
  const config = model.config;
  const { variants, notes } = expandVariants(preset, config);
  const seqlen = opts.seqlen;
  const limit = preset.limit;
  const sets = new Map<EvalSetName, PlannedSet>();
  for (const d of preset.datasets) {
    const set = await loadEvalSet(d, {
      dataDir: model.dataDir,
      tokenizer: model.tokenizer,
      seqlen,
      offline: model.offline,
      tokenCache: { dir: `${opts.cacheDir}/tokens`, version: `code ${CODE_VERSION}` },
    });
    if (!set.fileSha256) throw new Error(`${d}: ${set.file} has no sha256`);
    const { windows, available } = windowPlan(
      set.tokens.length,
      seqlen,
      limit ?? undefined,
      config.maxSeqLen,
    );
    sets.set(d, {
      set,
      identity: await datasetIdentity(
        { name: set.name, fileSha256: set.fileSha256, protocol: set.protocol, tokens: set.tokens },
        seqlen,
        windows,
      ),
      windowsAvailable: available,
    });
  }
  // Calibration identities: one draw per distinct request (GPTQ and AWQ share theirs, unless
  // GPTQ's Hessians run on a device, which its identity then names).
  const draws = new Map<string, Promise<CalibrationIdentity | null>>();
  const calibrationOf = (spec: QuantSpec) => {
    const { kind: _, ...draw } = calibrationRequest(spec) ?? { kind: "none" };
    const onDevice = opts.hessianDevice && QUANTIZERS[spec.method].deviceCalibration;
    const key = canonicalJson({ ...draw, ...(onDevice ? { device: opts.hessianDevice } : {}) });
    if (!draws.has(key)) {
      draws.set(
        key,
        drawCalibration(config, spec, { ...model, hessianDevice: opts.hessianDevice })
          .then((d) => d?.identity ?? null),
      );
    }
    return draws.get(key)!;
  };
  const calibrates = new Map<string, CalibrateJob>();
  const units: Unit[] = [];
  // Only relative costs matter (they balance shards): perplexity tokens against quantization.
  const tokensPerSecond = 20_000;
  const readsFisherFile = (spec: QuantSpec | null) =>
    opts.fisher !== undefined && spec !== null && calibrationRequest(spec)?.kind === "fisher";
  if (opts.fisher && preset.datasets.length > 0) {
    const users = variants.filter((v) => readsFisherFile(v.spec)).map((v) => v.variant);
    notes.push(
      `Fisher information read from ${opts.fisher.path} (sha256 ${
        opts.fisher.sha256.slice(0, 12)
      }…) by ${users.join(", ")}: no Fisher pass`,
    );
  }
  if (preset.datasets.length > 0) {
    for (const v of variants) {
      const fisherFile = readsFisherFile(v.spec) ? opts.fisher! : null;
      const calibration = v.spec && !fisherFile ? await calibrationOf(v.spec) : null;
      const jobs: Job[] = [];
      let cost = 0;
      const evals: EvaluateJob[] = [];
      for (const [d, p] of sets) {
        const identity: ResultIdentity = {
          codeVersion: CODE_VERSION,
          model: { sha256: model.checkpointSha256 },
          quant: v.spec,
          calibration,
          ...(fisherFile ? { fisher: { sha256: fisherFile.sha256 } } : {}),
          dataset: p.identity,
          ...(opts.evaluator ? { evaluator: opts.evaluator } : {}),
        };
        const keys = await resultKeys(identity);
        evals.push({
          kind: "evaluate",
          id: `evaluate ${v.variant} ${d}`,
          variant: v.variant,
          row: v.row,
          spec: v.spec,
          dataset: d,
          identity,
          resultKey: keys.resultKey,
        });
        cost += (p.identity.windows * seqlen) / tokensPerSecond;
      }
      if (v.spec) {
        const configKey = (await resultKeys(evals[0].identity)).configKey;
        let calibrate: string | null = null;
        const req = calibrationRequest(v.spec);
        if (req?.kind === "fisher" && calibration) {
          const fisherKey = fisherCacheKey({
            key: `${model.checkpointSha256}|${calibration.source}|${calibration.fileSha256}`,
            nsamples: calibration.nsamples,
            seqlen: calibration.seqlen,
            windowsSha256: calibration.tokensSha256,
            codeVersion: FISHER_CODE_VERSION,
          });
          calibrate = `calibrate fisher ${fisherKey.slice(0, 12)}`;
          const shared = calibrates.get(calibrate);
          if (shared) shared.users.push(v.variant);
          else {
            const job: CalibrateJob = {
              kind: "calibrate",
              id: calibrate,
              label: `fisher ${calibration.source}, ${calibration.nsamples} windows of ` +
                `${calibration.seqlen}, seed ${calibration.seed}`,
              spec: v.spec,
              path: `${opts.cacheDir}/fisher/fisher-${fisherKey}.bin`,
              users: [v.variant],
            };
            calibrates.set(calibrate, job);
            jobs.push(job);
            cost += calibration.nsamples * calibration.seqlen / (tokensPerSecond / 4);
          }
        }
        jobs.push({
          kind: "quantize",
          id: `quantize ${v.variant}`,
          variant: v.variant,
          spec: v.spec,
          calibrate,
          path: `${opts.cacheDir}/quantized/${configKey}.sqbq`,
          configKey,
          calibration,
          fisherFile,
        });
        cost += v.spec.method === "abq"
          ? abqSeconds(v.spec, config)
          : (QUANT_SECONDS[v.spec.method] ?? 10) * (v.spec.bits >= 5 ? 1.5 : 1);
      }
      jobs.push(...evals);
      units.push({ id: v.variant, jobs, cost });
    }
  }
  if (preset.kernels) {
    const formats = new Map<string, KernelFormat>();
    for (const v of variants) {
      if (v.spec) formats.set(kernelFormat(v.spec).label, kernelFormat(v.spec));
    }
    const bits = [...new Set(variants.flatMap((v) => v.bits === null ? [] : [v.bits]))].sort();
    // One benchKernels call times a uniform group size and a sparse density: formats go to the
    // first call whose slot they fit, so the f32/f16 baselines are timed as few times as possible.
    const calls: { group: number | null; density: number | null; formats: KernelFormat[] }[] = [];
    for (const f of formats.values()) {
      const fits = (c: (typeof calls)[number]) =>
        f.format === "uniform"
          ? c.group === null || c.group === f.groupSize
          : f.format === "lut+sparse"
          ? c.density === null || c.density === f.density
          : true;
      let call = calls.find(fits);
      if (!call) calls.push(call = { group: null, density: null, formats: [] });
      if (f.format === "uniform") call.group = f.groupSize;
      if (f.format === "lut+sparse") call.density = f.density;
      call.formats.push(f);
    }
    for (const shape of preset.kernels.shapes) {
      const shapes = shape === "model" ? modelShapes(config) : shape;
      const shapeName = shape === "model" ? `${model.name} shapes` : `${shape} shapes`;
      const pixels = shapes === "llama7b" ? 4096 * 4096 * 3 + 11008 * 4096 * 6 : 1e6;
      for (const { formats: fs } of calls) {
        if (bits.length === 0) continue;
        const identity = {
          codeVersion: CODE_VERSION,
          kind: "kernels",
          shapes,
          formats: fs.map((f) => f.label),
          bits,
          batch: preset.kernels.batch,
          runs: preset.kernels.runs,
        };
        const jobKey = await sha256Hex(canonicalJson(identity));
        const id = `bench ${shapeName} ${fs.map((f) => f.label).join(",")}`;
        units.push({
          id,
          jobs: [{
            kind: "bench",
            id,
            shapes,
            shapeName,
            formats: fs,
            bits,
            batch: preset.kernels.batch,
            runs: preset.kernels.runs,
            jobKey,
            layerCounts: layerCounts(shape, config),
          }],
          cost: 2 + (pixels / 1e6) * 0.03 * (fs.length + 2) * bits.length *
              (preset.kernels.runs + 3) / 13,
        });
      }
    }
  }
  if (preset.datasets.length === 0 && variants.some((v) => v.spec)) {
    notes.push("no datasets: nothing is quantized or evaluated (kernel timings only)");
  }
  return {
    preset: preset.name,
    model: model.name,
    seqlen,
    limit,
    variants,
    units,
    notes,
    sets,
  };
}

/** Rough quantization seconds of stories260K per method on 2 cores, for balancing shards. */
const QUANT_SECONDS: Partial<Record<QuantSpec["method"], number>> = {
  rtn: 0.5,
  gptq: 6,
  awq: 25,
  squeezellm: 12,
};

/**
 * ABQ-LLM's training time: about 45 ms of one core per step (one window of
 * 512 tokens through one block, forward and backward: eval/bench/abq.ts),
 * steps = blocks × windows × epochs; attention makes a step grow faster than
 * its window.
 */
function abqSeconds(spec: AbqSpec, config: LlamaConfig): number {
  const epochs = spec.epochs ?? defaultEpochs(spec.bits, spec.abits ?? 16);
  const seqlen = spec.calib.seqlen ?? defaultCalibSeqlen(spec.method, config);
  return config.nLayers * spec.calib.nsamples * epochs * 0.045 * (seqlen / 512) ** 1.5;
}

/** The state of one job before a run. */
export type JobStatus = "stored" | "cached" | "todo" | "not needed";

/**
 * What of the plan is already done: evaluate and bench jobs stored in the
 * store, calibrate and quantize jobs cached in the cache dir (or not needed,
 * when every result that reads them is stored).
 *
 * @param plan the plan
 * @param store the results store, or null when it does not exist yet
 * @returns the status of every job by id
 */
export async function planStatus(
  plan: Plan,
  store: ResultsStore | null,
): Promise<Map<string, JobStatus>> {
  const storedKeys = store ? await store.storedResultKeys() : new Set<string>();
  const doneJobs = store ? await store.doneJobs() : new Set<string>();
  const out = new Map<string, JobStatus>();
  for (const u of plan.units) {
    const evals = u.jobs.filter((j): j is EvaluateJob => j.kind === "evaluate");
    const allStored = evals.every((e) => storedKeys.has(e.resultKey));
    for (const j of u.jobs) {
      if (j.kind === "evaluate") out.set(j.id, storedKeys.has(j.resultKey) ? "stored" : "todo");
      else if (j.kind === "bench") out.set(j.id, doneJobs.has(j.jobKey) ? "stored" : "todo");
      else if (await isFile(j.path)) out.set(j.id, "cached");
      else out.set(j.id, allStored ? "not needed" : "todo");
    }
  }
  // A calibrate job is needed when any quantize job reading it is to do.
  for (const u of plan.units) {
    for (const j of u.jobs) {
      if (j.kind !== "calibrate" || out.get(j.id) === "cached") continue;
      const needed = plan.units.some((v) =>
        v.jobs.some((q) =>
          q.kind === "quantize" && q.calibrate === j.id && out.get(q.id) === "todo"
        )
      );
      out.set(j.id, needed ? "todo" : "not needed");
    }
  }
  return out;
}

/**
 * The plan as text: one line per job with its status, grouped by unit, the
 * notes first.
 *
 * @param plan the plan
 * @param status from {@linkcode planStatus}
 * @param shard the units this process runs (all when absent)
 */
export function formatPlan(
  plan: Plan,
  status: Map<string, JobStatus>,
  shard?: { index: number; count: number; units: Unit[] },
): string {
  const lines: string[] = [];
  const units = shard?.units ?? plan.units;
  const jobs = units.flatMap((u) => u.jobs);
  const count = (s: JobStatus) => jobs.filter((j) => status.get(j.id) === s).length;
  lines.push(
    `plan: preset ${plan.preset}, ${plan.model}, seqlen ${plan.seqlen}, ` +
      `${plan.limit === null ? "every window" : `first ${plan.limit} windows`}; ` +
      `${plan.variants.length} variants, ${[...plan.sets.keys()].join(", ") || "no datasets"}` +
      (shard
        ? `; shard ${shard.index}/${shard.count}: ${units.length} of ${plan.units.length} units`
        : ""),
  );
  for (const n of plan.notes) lines.push(`note: ${n}`);
  lines.push(
    `jobs: ${jobs.length} (${count("todo")} to do, ${count("stored")} stored, ` +
      `${count("cached")} cached, ${count("not needed")} not needed)`,
  );
  for (const u of units) {
    lines.push(`  ${u.id} (~${Math.max(1, Math.round(u.cost))} s)`);
    for (const j of u.jobs) {
      const s = status.get(j.id) ?? "todo";
      let what: string = j.id;
      if (j.kind === "calibrate") what = `calibrate ${j.label} (shared by ${j.users.join(", ")})`;
      if (j.kind === "quantize" && j.fisherFile) {
        what = `${j.id} with the Fisher of ${j.fisherFile.path}`;
      }
      if (j.kind === "evaluate") {
        const p = plan.sets.get(j.dataset)!;
        what = `evaluate ${j.variant} on ${j.dataset} (${p.identity.windows} windows) ` +
          `key ${j.resultKey.slice(0, 12)}`;
      }
      if (j.kind === "bench") {
        what = `bench ${j.formats.map((f) => f.label).join(", ")} vs f16 at ${
          j.bits.join(",")
        } bits on ${j.shapeName} (${j.shapes})`;
      }
      lines.push(`    [${s.padEnd(10)}] ${what}`);
    }
  }
  return lines.join("\n");
}
