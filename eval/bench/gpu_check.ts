/**
 * `deno task bench gpu-check`: the full-set check of the GPU prefill's
 * perplexity (eval/gpu_perplexity.ts) against the CPU's (eval/perplexity.ts)
 * — issue 12's "within 1e-4 relative on stories260K for fp32 and for real
 * RTN, GPTQ act-order, AWQ and SqueezeLLM 0.45% models, on full WikiText-2
 * and TinyStories". CI runs subsets of it (eval/gpu_*_test.ts); this runs
 * every window, which takes long on a software adapter.
 *
 * Each variant is quantized once (CPU calibration, eval/pipeline.ts, the
 * defaults of quant/spec.ts), then every dataset is evaluated on both
 * devices with the same windows. A row holds both perplexities, their
 * relative difference, the largest relative difference of one window's
 * nll, both wall times, and whether the perplexity is within the tolerance.
 *
 * @module
 */
import type { Gpu } from "../../kernels/device.ts";
import { adapterLabel } from "../../kernels/device.ts";
import type { LoadedModel } from "../cli/load.ts";
import { type EvalSetName, loadEvalSet } from "../../datasets/eval_sets.ts";
import { defaultSpec, type QuantSpec, variantName } from "../../quant/methods.ts";
import { quantizeModel } from "../pipeline.ts";
import { perplexity } from "../perplexity.ts";
import { prefillPerplexity } from "../gpu_perplexity.ts";
import { markdownTable } from "../../reports/markdown.ts";

/** The variants checked, by name. */
export const GPU_CHECK_VARIANTS = ["fp32", "rtn", "gptq-act", "awq", "squeezellm-0.45"] as const;
/** One of {@linkcode GPU_CHECK_VARIANTS}. */
export type GpuCheckVariant = typeof GPU_CHECK_VARIANTS[number];

/** Relative tolerance of the perplexity (issue 12). */
export const GPU_CHECK_TOLERANCE = 1e-4;

/** The spec of a variant at `bits` (null: fp32); SqueezeLLM 0.45% as in eval/presets/table1.json. */
export function gpuCheckSpec(variant: GpuCheckVariant, bits: number): QuantSpec | null {
  switch (variant) {
    case "fp32":
      return null;
    case "rtn":
      return defaultSpec("rtn", bits);
    case "gptq-act":
      return { ...defaultSpec("gptq", bits), actOrder: true };
    case "awq":
      return defaultSpec("awq", bits);
    case "squeezellm-0.45":
      return { ...defaultSpec("squeezellm", bits), sensitivePct: 0.05, outlierPct: 0.4 };
  }
}

/** Options of {@linkcode benchGpuCheck}. */
export interface GpuCheckOptions {
  gpu: Gpu;
  model: LoadedModel;
  variants: readonly GpuCheckVariant[];
  datasets: readonly EvalSetName[];
  /** Bits of the quantized variants. @default 3 */
  bits?: number;
  /** Windows per dataset. @default every window */
  limit?: number;
  /** CPU perplexity and quantization workers. */
  workers: number;
  /** Progress lines and the table. @default console.log */
  log?: (line: string) => void;
}

/** One (variant, dataset) comparison. */
export interface GpuCheckRow {
  variant: string;
  dataset: EvalSetName;
  windows: number;
  cpuPpl: number;
  gpuPpl: number;
  /** |gpu − cpu| / cpu of the perplexity. */
  relDiff: number;
  /** Largest |gpu − cpu| / cpu of one window's nll. */
  maxWindowRelDiff: number;
  cpuSeconds: number;
  gpuSeconds: number;
  withinTolerance: boolean;
}

/**
 * Quantizes each variant, evaluates every dataset on the CPU and on the GPU
 * prefill, and prints a table.
 *
 * @param opts device, model, variants, datasets, bits, limit, workers
 * @returns the adapter and one row per (variant, dataset)
 * @example
 * ```ts
 * const r = await benchGpuCheck({ gpu, model, variants: ["fp32"], datasets: ["tinystories"], limit: 2, workers: 0 });
 * r.rows[0].withinTolerance;
 * ```
 */
export async function benchGpuCheck(
  opts: GpuCheckOptions,
): Promise<{ adapter: string; rows: GpuCheckRow[] }> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const { gpu, model } = opts;
  const bits = opts.bits ?? 3;
  const adapter = adapterLabel(gpu.info);
  log(`adapter: ${adapter}`);
  const seqlen = model.weights.config.maxSeqLen;
  const sets = new Map<EvalSetName, Int32Array>();
  for (const d of opts.datasets) {
    const set = await loadEvalSet(d, {
      dataDir: model.dataDir,
      tokenizer: model.tokenizer,
      seqlen,
      offline: model.offline,
    });
    sets.set(d, set.tokens);
  }
  const rows: GpuCheckRow[] = [];
  for (const variant of opts.variants) {
    const spec = gpuCheckSpec(variant, bits);
    const q = spec
      ? await quantizeModel(model.weights, spec, {
        tokenizer: model.tokenizer,
        dataDir: model.dataDir,
        offline: model.offline,
        modelKey: model.checkpointSha256,
        workers: opts.workers,
      })
      : null;
    const name = q ? variantName(q.spec) : "fp32";
    const weights = q ? q.weights : model.weights;
    for (const [dataset, tokens] of sets) {
      const cpu = await perplexity(weights, tokens, {
        seqlen,
        limit: opts.limit,
        workers: opts.workers,
        label: `${model.name} ${name}`,
      });
      const dev = await prefillPerplexity(gpu, weights, q ? q.linears : null, tokens, {
        seqlen,
        limit: opts.limit,
        label: `${model.name} ${name}`,
      });
      let maxWindow = 0;
      cpu.windowNll.forEach((c, i) => {
        maxWindow = Math.max(maxWindow, Math.abs(dev.windowNll[i] - c) / c);
      });
      const relDiff = Math.abs(dev.ppl - cpu.ppl) / cpu.ppl;
      const row: GpuCheckRow = {
        variant: name,
        dataset,
        windows: cpu.windows,
        cpuPpl: cpu.ppl,
        gpuPpl: dev.ppl,
        relDiff,
        maxWindowRelDiff: maxWindow,
        cpuSeconds: cpu.seconds,
        gpuSeconds: dev.seconds,
        withinTolerance: relDiff <= GPU_CHECK_TOLERANCE,
      };
      rows.push(row);
      log(
        `${name} ${dataset} (${row.windows} windows): cpu ${cpu.ppl.toFixed(6)}, gpu ${
          dev.ppl.toFixed(6)
        }, rel. diff ${relDiff.toExponential(2)} (window max ${maxWindow.toExponential(2)}), ` +
          `${cpu.seconds.toFixed(0)} s cpu, ${dev.seconds.toFixed(0)} s gpu`,
      );
    }
  }
  log(gpuCheckTable(rows));
  const bad = rows.filter((r) => !r.withinTolerance);
  log(
    bad.length === 0
      ? `every perplexity within ${GPU_CHECK_TOLERANCE} relative`
      : `${bad.length} of ${rows.length} outside ${GPU_CHECK_TOLERANCE} relative: ` +
        bad.map((r) => `${r.variant} ${r.dataset}`).join(", "),
  );
  return { adapter, rows };
}

/**
 * The rows of {@linkcode benchGpuCheck} as a markdown table.
 * @param rows the rows
 */
export function gpuCheckTable(rows: GpuCheckRow[]): string {
  return markdownTable(
    [
      "variant",
      "dataset",
      "windows",
      "CPU ppl",
      "GPU ppl",
      "rel. diff",
      "max window",
      "CPU s",
      "GPU s",
    ],
    rows.map((r) => [
      r.variant,
      r.dataset,
      String(r.windows),
      r.cpuPpl.toFixed(6),
      r.gpuPpl.toFixed(6),
      r.relDiff.toExponential(2),
      r.maxWindowRelDiff.toExponential(2),
      r.cpuSeconds.toFixed(0),
      r.gpuSeconds.toFixed(0),
    ]),
  );
}
