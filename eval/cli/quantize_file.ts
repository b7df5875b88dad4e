/**
 * `deno task quantize` for the methods that quantize block by block (RTN,
 * SqueezeLLM with a fixed outlier range, GPTQ; eval/quantize_stream.ts
 * `streamProblem`): the model is opened, not loaded (eval/cli/load.ts
 * `openModelFromOptions`), and eval/quantize_stream.ts reads, quantizes and
 * writes one block at a time, so a checkpoint larger than memory in fp32 is
 * quantized in about one block's fp32 size (GPTQ: plus its calibration
 * activations, windows × seqlen × dim in fp32; with `--device gpu` they
 * stay on the GPU, where GPTQ's block forward and Hessians run:
 * eval/gpu_calibration.ts `GptqSequentialGpu`).
 *
 * SqueezeLLM's Fisher information comes from `--fisher DIR` (the output of
 * the official gradient script, kssteven418/SqueezeLLM-gradients: a Hugging
 * Face checkpoint of squared gradients under the model's tensor names, read
 * block by block, its sha256 recorded), or else is computed here from the
 * calibration windows block by block too (quant/fisher_blockwise.ts, the
 * whole-model pass's numbers bit for bit), kept in the cache dir in the
 * same layout and read back the same way.
 *
 * @module
 */
import process from "node:process";
import { openHfFisher } from "../../model/hf.ts";
import type { LlamaConfig } from "../../model/config.ts";
import { calibrationNeed, type OpenedModel, openModelFromOptions } from "./load.ts";
import { hfFolderSha256 } from "../model_source.ts";
import { CliError, str } from "./options.ts";
import { progressBars } from "./progress.ts";
import { workersOf } from "./quant_options.ts";
import {
  type BlockFisher,
  isSequential,
  quantizeToFile,
  type QuantizeToFileResult,
  streamProblem,
} from "../quantize_stream.ts";
import { type DeviceHessians, drawCalibration, fisherFileText } from "../pipeline.ts";
import { cachedFisherCheckpoint } from "../../quant/fisher_blockwise.ts";
import { resolveCacheDir } from "../../datasets/datadir.ts";
import { type CalibrationIdentity, type QuantSpec, resolveSpec } from "../../quant/methods.ts";

/** The `--fisher DIR` option (quantize, ppl, eval). */
export const FISHER_OPTIONS = { fisher: { type: "string" } } as const;

/** Help of {@linkcode FISHER_OPTIONS}. */
export const FISHER_HELP =
  `  --fisher DIR         squeezellm: read the Fisher information from DIR, the output of SqueezeLLM's
                       gradient script (kssteven418/SqueezeLLM-gradients: config.json and
                       safetensors of squared gradients), instead of computing it here; its sha256
                       identifies the results`;

/**
 * `--fisher DIR`, checked against the method: only SqueezeLLM takes it.
 *
 * @param values parsed options
 * @param spec the quantization asked for, or null (fp32, a --quantized file)
 * @returns the folder, or undefined
 * @throws {CliError} when given for another method
 */
export function fisherDirOf(
  values: Record<string, unknown>,
  spec: QuantSpec | null,
): string | undefined {
  const dir = str(values, "fisher");
  if (dir !== undefined && spec?.method !== "squeezellm") {
    throw new CliError(
      `--fisher applies to --method squeezellm only (it holds SqueezeLLM's Fisher information)`,
    );
  }
  return dir;
}

/**
 * A `--fisher DIR` folder checked against the model (its config.json must
 * describe the same shapes) and identified by its sha256, before any work.
 *
 * @param dir the gradient checkpoint folder
 * @param config the model's config
 * @returns its path and sha256 (reports/identity.ts `ResultIdentity.fisher`)
 * @throws {ModelFormatError} for another model's shapes or a malformed folder
 */
export async function checkedFisherFile(
  dir: string,
  config: LlamaConfig,
): Promise<{ path: string; sha256: string }> {
  using _ = await openHfFisher(dir, config);
  return { path: dir, sha256: await hfFolderSha256(dir) };
}

/**
 * Whether `deno task quantize` takes the block-by-block path for `spec`
 * (eval/quantize_stream.ts `streamProblem`); the others hold the model in fp32.
 *
 * @param spec the quantization asked for (null: none)
 * @returns true for RTN, SqueezeLLM without --outliers, and GPTQ
 */
export function quantizesBlockwise(spec: QuantSpec | null): spec is QuantSpec {
  return spec !== null && streamProblem(spec) === null;
}

/**
 * The Fisher file of a quantized model in a result's identity
 * (reports/identity.ts `ResultIdentity.fisher`): its sha256 when the Fisher
 * information was read with `--fisher` (the model's details say so, also
 * when it comes from a .sqbq file), else undefined.
 *
 * @param q the quantized model, or null (fp32)
 * @returns `{ sha256 }` or undefined
 */
export function fisherIdentity(
  q: { details: Record<string, unknown> } | null,
): { sha256: string } | undefined {
  const f = q?.details.fisherFile as { sha256?: unknown } | undefined;
  return typeof f?.sha256 === "string" ? { sha256: f.sha256 } : undefined;
}

/** What `deno task quantize` prints as JSON. */
export interface QuantizeFileResult {
  out: string;
  bytes: number;
  variant: string;
  spec: QuantSpec;
  avgBits: number;
  calibration: CalibrationIdentity | null;
  seconds: number;
  /** True: written block by block. */
  blockwise: true;
  /** The Fisher checkpoint read (`--fisher`), or null. */
  fisher: { path: string; sha256: string } | null;
  /** Peak resident memory of this process so far (VmHWM), in bytes; null off Linux. */
  peakRssBytes: number | null;
  /** CPU time of this process so far (user + system, every thread), in seconds. */
  cpuSeconds: number;
}

/**
 * Peak resident set size of this process (VmHWM of /proc/self/status).
 *
 * @returns bytes, or null where /proc is not there
 */
export function peakRssBytes(): number | null {
  let status: string;
  try {
    status = Deno.readTextFileSync("/proc/self/status");
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  const m = /^VmHWM:\s+(\d+) kB$/m.exec(status);
  return m ? Number(m[1]) * 1024 : null;
}

/**
 * Quantizes the model of the CLI options block by block into `out`.
 *
 * @param values parsed options (model, quantization, --fisher, --workers)
 * @param spec the quantization ({@linkcode quantizesBlockwise} accepts it)
 * @param out the file to write (checked writable by the caller)
 * @param hessians GPTQ and AWQ: the device their calibration statistics run on (recorded in the calibration identity) @default the CPU
 * @returns what was written
 * @throws {CliError} for a bad option; {@linkcode ModelFormatError} for a bad checkpoint or Fisher folder
 */
export async function quantizeFileBlockwise(
  values: Record<string, unknown>,
  spec: QuantSpec,
  out: string,
  hessians?: DeviceHessians,
): Promise<QuantizeFileResult> {
  const fisherDir = fisherDirOf(values, spec);
  const computeFisher = spec.method === "squeezellm" && fisherDir === undefined;
  const drawsWindows = computeFisher || isSequential(spec);
  const needs = drawsWindows && "calib" in spec ? [calibrationNeed(spec.calib.source)] : [];
  const model = await openModelFromOptions(values, needs, { requireTokenizer: drawsWindows });
  using _ = model.source;
  let resolved: QuantSpec;
  try {
    resolved = resolveSpec(spec, model.source.config, { groupGiven: values.group !== undefined });
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  const fisherFile = fisherDir === undefined
    ? null
    : { path: fisherDir, sha256: await hfFolderSha256(fisherDir) };
  const r = await quantizeOpenedModel(model, resolved, out, {
    fisherFile,
    hessians,
    workers: workersOf(values),
    fisherWorkers: values.workers === undefined ? undefined : workersOf(values),
    provenance: { command: Deno.args.join(" ") }, // the task name is Deno.args[0]
  });
  const peak = peakRssBytes();
  console.log(
    `wrote ${out} (${r.bytes} bytes): ${r.variantName}, ${
      r.avgBits.toFixed(3)
    } average bits, block by block in ${r.seconds.toFixed(1)} s` +
      (peak === null ? "" : `, peak memory ${(peak / 2 ** 20).toFixed(0)} MiB`),
  );
  return {
    out,
    bytes: r.bytes,
    variant: r.variantName,
    spec: resolved,
    avgBits: r.avgBits,
    calibration: r.calibration,
    seconds: r.seconds,
    blockwise: true,
    fisher: fisherFile,
    peakRssBytes: peak,
    cpuSeconds: cpuSeconds(),
  };
}

/** Options of {@linkcode quantizeOpenedModel}. */
export interface QuantizeOpenedOptions {
  /** SqueezeLLM: its Fisher information read from this folder (`--fisher`); null: computed here. */
  fisherFile: { path: string; sha256: string } | null;
  /** GPTQ and AWQ: the device their calibration statistics run on. @default the CPU */
  hessians?: DeviceHessians;
  /** Worker threads of the quantizers. */
  workers: number;
  /** Worker threads of the Fisher pass. @default its own (quant/fisher_blockwise.ts) */
  fisherWorkers?: number;
  /** Recorded in the file's provenance beside the model's name and the date. */
  provenance?: Record<string, unknown>;
  /** Lines start with it (progress bars too). @default "" */
  indent?: string;
}

/** What {@linkcode quantizeOpenedModel} wrote, and the calibration it read. */
export interface QuantizeOpenedResult extends QuantizeToFileResult {
  calibration: CalibrationIdentity | null;
  calibrationText: string | null;
}

/**
 * Quantizes an opened model block by block into `out`
 * (eval/quantize_stream.ts), drawing the calibration its method needs as the
 * whole-model pipeline does (eval/pipeline.ts `drawCalibration`): GPTQ's
 * windows; SqueezeLLM's Fisher information from `fisherFile`, or computed
 * block by block and cached in the cache dir (quant/fisher_blockwise.ts).
 * `deno task quantize` and `eval --blockwise` call it.
 *
 * @param model the opened model (not disposed)
 * @param resolved a resolved spec that {@linkcode quantizesBlockwise} accepts
 * @param out the file to write
 * @param opts Fisher folder, Hessians, workers, provenance
 * @returns the file's size, bits, time, details and the calibration's identity
 */
export async function quantizeOpenedModel(
  model: OpenedModel,
  resolved: QuantSpec,
  out: string,
  opts: QuantizeOpenedOptions,
): Promise<QuantizeOpenedResult> {
  const { source } = model;
  const indent = opts.indent ?? "";
  const log = (line: string) => console.error(`${indent}${line}`);
  const drawn = isSequential(resolved) ||
      (resolved.method === "squeezellm" && opts.fisherFile === null)
    ? (await drawCalibration(source.config, resolved, {
      tokenizer: model.tokenizer!, // the caller requires one for these methods
      dataDir: model.dataDir,
      offline: model.offline,
      hessianDevice: opts.hessians?.device,
    }))!
    : null;
  let fisher: (BlockFisher & Disposable) | undefined;
  let calibrationText = drawn?.text ?? null;
  const details: Record<string, unknown> = {};
  if (isSequential(resolved)) log(`calibration: ${calibrationText}`);
  else if (opts.fisherFile) {
    fisher = await openHfFisher(opts.fisherFile.path, source.config);
    calibrationText = fisherFileText(opts.fisherFile);
    details.fisherFile = opts.fisherFile;
  } else if (drawn) {
    // The Fisher pass block by block (quant/fisher_blockwise.ts), kept in the cache dir in
    // SqueezeLLM-gradients' layout and read back block by block like a --fisher DIR.
    const { dir, computed } = await cachedFisherCheckpoint(source, drawn.windows, {
      cacheDir: `${resolveCacheDir()}/fisher`,
      key: `${model.checkpointSha256}|${drawn.identity.source}|${drawn.identity.fileSha256}`,
      onProgress: progressBars(`${indent}fisher`),
      workers: opts.fisherWorkers,
    });
    log(
      `fisher: ${drawn.windows.length} windows, ${
        computed ? "computed block by block" : "cached"
      } in ${dir}`,
    );
    fisher = await openHfFisher(dir, source.config);
    details.fisherWindows = drawn.windows.length;
  }
  log(`quantizing ${model.name} block by block …`);
  try {
    const calibration = drawn?.identity ?? null;
    const r = await quantizeToFile({
      source,
      spec: resolved,
      fisher,
      windows: isSequential(resolved) ? drawn!.windows : undefined,
      hessians: opts.hessians?.factory,
      gptqSequential: opts.hessians?.gptqSequential,
      awqFeatures: opts.hessians?.awqFeatures,
      out,
      base: { path: model.checkpointPath, sha256: model.checkpointSha256 },
      calibration,
      calibrationText,
      details,
      provenance: {
        model: model.name,
        created: new Date().toISOString(),
        ...opts.provenance,
      },
      workers: opts.workers,
      onProgress: progressBars(indent),
    });
    return { ...r, calibration, calibrationText };
  } finally {
    fisher?.[Symbol.dispose]();
  }
}

/** CPU time of this process (user + system, every thread), in seconds. */
function cpuSeconds(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}
