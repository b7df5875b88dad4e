/**
 * model → calibrate → quantize: the one place that loads what a method's
 * calibration needs and hands it to the quantizer registry (quant/registry.ts).
 *
 * - "activations" (GPTQ, AWQ, SmoothQuant, ABQ-LLM): `calib.nsamples`
 *   windows drawn by datasets/calibration.ts (ABQ-LLM embeds them itself as
 *   its first block's inputs, and draws them with its own seed, 2).
 * - "fisher" (SqueezeLLM): `fisherSamples` windows, then the Fisher
 *   information, cached in `<cache dir>/fisher` (quant/fisher_cache.ts; the
 *   cache dir is `$SQB_CACHE_DIR`, else `~/.cache/squeezebench/cache`, never
 *   the data dir).
 *
 * The result carries the resolved spec and the calibration's identity (file,
 * its sha256, window count, length, seed and the sha256 of the token ids),
 * which the results store hashes into a result's key.
 *
 * @module
 */
import type { LlamaConfig, LlamaWeights } from "../model/config.ts";
import type { ProgressCallback } from "../model/pool.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import { calibrationWindows } from "../datasets/calibration.ts";
import { awqCalibrationBlocks } from "../datasets/awq_calibration.ts";
import { loadHfFisher } from "../model/hf.ts";
import { hfFolderSha256 } from "./model_source.ts";
import { resolveCacheDir } from "../datasets/datadir.ts";
import { cachedFisher, windowsSha256 } from "../quant/fisher_cache.ts";
import {
  type Calibration,
  type CalibrationIdentity,
  type CalibrationKind,
  calibrationRequest,
  type CalibSource,
  defaultCalibSeqlen,
  type QuantizeContext,
  type QuantizedModel,
  QUANTIZERS,
  quantizeWith,
  type QuantSpec,
  resolveSpec,
} from "../quant/methods.ts";
import type { gptqQuantizeModelAsync, HessianAccumulatorFactory } from "../quant/sequential.ts";
import type { DeviceGptqFactory } from "./quantize_stream.ts";

/** What {@linkcode quantizeModel} needs besides the weights and the spec. */
export interface QuantContext {
  tokenizer: Tokenizer;
  /** Where the calibration data lives. */
  dataDir: string;
  offline: boolean;
  /** Identifies the base checkpoint (its sha256) in caches. */
  modelKey: string;
  /** Worker threads (Fisher pass, k-means); 0 = this thread. */
  workers: number;
  log?: (line: string) => void;
  /** Steps of the long passes (Fisher windows, GPTQ linears, AWQ search steps): (done, total, what). */
  onProgress?: ProgressCallback;
  /** Where derived files (the Fisher cache) go. @default resolveCacheDir() */
  cacheDir?: string;
  /**
   * SqueezeLLM's Fisher information from this folder (the official gradient
   * script's output, model/hf.ts `loadHfFisher`) instead of computed here;
   * its path and sha256 go into the result's details as `fisherFile`.
   */
  fisherDir?: string;
  /**
   * GPTQ's Hessians and AWQ's features computed on a device
   * (eval/gpu_calibration.ts `gpuHessians`); the device goes into the
   * calibration identity of the methods that use them
   * (`Quantizer.deviceCalibration`). @default the CPU
   */
  hessians?: DeviceHessians;
}

/**
 * The calibration statistics that run on a device (GPTQ's Hessians and
 * block pass, AWQ's features), and its name for identities.
 */
export interface DeviceHessians {
  device: "gpu";
  factory: HessianAccumulatorFactory;
  /** GPTQ's whole pass on the device (quant/registry.ts `QuantizeContext.gptqModel`). */
  gptqModel?: typeof gptqQuantizeModelAsync;
  /** GPTQ's pass block by block on the device (eval/quantize_stream.ts, the streamed quantize). */
  gptqSequential?: DeviceGptqFactory;
  /**
   * AWQ's calibration features on the device (quant/registry.ts
   * `QuantizeContext.awqFeatures`), the residual stream kept there between blocks.
   */
  awqFeatures?: QuantizeContext["awqFeatures"];
}

/** Options of {@linkcode quantizeModel}. */
export interface QuantizeModelOptions {
  /** The group size was asked for by the user (quant/spec.ts `resolveSpec`). @default false */
  groupGiven?: boolean;
}

/**
 * Loads the calibration `spec`'s method needs and quantizes every linear of
 * `base`.
 *
 * @param base the full-precision model (not modified)
 * @param spec the quantization (missing parameters take quant/spec.ts's defaults)
 * @param ctx tokenizer, data dir, model key, workers, progress, cache dir
 * @param opts whether the group size was asked for
 * @returns the quantized model; `seconds` counts calibration and quantization
 * @throws {RangeError} for a spec parameter that does not apply or is out of range
 * @example
 * ```ts
 * const q = await quantizeModel(weights, defaultSpec("gptq", 3), ctx);
 * q.variantName; // "gptq.w3"
 * ```
 */
export async function quantizeModel(
  base: LlamaWeights,
  spec: QuantSpec,
  ctx: QuantContext,
  opts: QuantizeModelOptions = {},
): Promise<QuantizedModel> {
  const t0 = performance.now();
  const resolved = resolveSpec(spec, base.config, { groupGiven: opts.groupGiven });
  if (
    "groupSize" in spec && "groupSize" in resolved && spec.groupSize != null &&
    resolved.groupSize === null
  ) {
    ctx.log?.(
      `${spec.method}: group ${spec.groupSize} does not divide every layer width of this model; ` +
        `using one group per row`,
    );
  }
  const fromFile = ctx.fisherDir === undefined
    ? null
    : await fisherFromDir(base.config, resolved, ctx.fisherDir);
  const calibration = fromFile?.calibration ?? await loadCalibration(base, resolved, ctx);
  const q = await quantizeWith(base, resolved, calibration, {
    workers: ctx.workers,
    log: ctx.log,
    onProgress: ctx.onProgress,
    hessians: ctx.hessians?.factory,
    gptqModel: ctx.hessians?.gptqModel,
    awqFeatures: ctx.hessians?.awqFeatures,
  });
  const details = fromFile ? { ...q.details, fisherFile: fromFile.file } : q.details;
  return { ...q, details, seconds: (performance.now() - t0) / 1000 };
}

/**
 * SqueezeLLM's Fisher information read from `dir` (the official gradient
 * script's output, model/hf.ts `loadHfFisher`) as the calibration of `spec`,
 * with the folder's path and sha256.
 *
 * @throws {RangeError} when the method of `spec` takes no Fisher information
 * @throws {ModelFormatError} for another model's shapes or a malformed tensor
 */
async function fisherFromDir(
  config: LlamaConfig,
  spec: QuantSpec,
  dir: string,
): Promise<{ calibration: Calibration<"fisher">; file: { path: string; sha256: string } }> {
  if (calibrationRequest(spec)?.kind !== "fisher") {
    throw new RangeError(`${spec.method} takes no Fisher information (fisherDir ${dir})`);
  }
  const file = { path: dir, sha256: await hfFolderSha256(dir) };
  const fisher = await loadHfFisher(dir, config);
  const text = fisherFileText(file);
  return { calibration: { inputs: { fisher, windows: 0 }, identity: null, text }, file };
}

/** The calibration text of SqueezeLLM's Fisher read from a file (`--fisher`). */
export function fisherFileText(file: { path: string; sha256: string }): string {
  return `Fisher information read from ${file.path} (sha256 ${file.sha256.slice(0, 12)}…)`;
}

/** Calibration windows drawn for a spec, with their identity and a description. */
export interface DrawnCalibration {
  /** What the method needs them for. */
  kind: "activations" | "fisher";
  windows: Int32Array[];
  identity: CalibrationIdentity;
  text: string;
}

/**
 * The calibration windows a resolved spec's method draws (quant/registry.ts
 * `calibrationRequest`) and their identity, without quantizing; null when the
 * method needs none. The results store keys results by this identity.
 *
 * @param config the model (max_seq_len is the default window length)
 * @param spec a resolved spec (quant/spec.ts `resolveSpec`)
 * @param data tokenizer, data dir, offline; `hessianDevice`: where Hessians will be accumulated
 */
export async function drawCalibration(
  config: LlamaConfig,
  spec: QuantSpec,
  data: Pick<QuantContext, "tokenizer" | "dataDir" | "offline"> & { hessianDevice?: "gpu" },
): Promise<DrawnCalibration | null> {
  const req = calibrationRequest(spec);
  if (!req) return null;
  const seqlen = req.seqlen ?? defaultCalibSeqlen(spec.method, config);
  const draw = req.rule === "awq-blocks" ? awqCalibrationBlocks : calibrationWindows;
  const set = await draw({
    source: req.source as CalibSource,
    nsamples: req.nsamples,
    seqlen,
    seed: req.seed,
    dataDir: data.dataDir,
    tokenizer: data.tokenizer,
    offline: data.offline,
  });
  const identity: CalibrationIdentity = {
    ...(req.rule === "awq-blocks" ? { rule: req.rule } : {}),
    source: req.source as CalibSource,
    file: set.file,
    fileSha256: set.fileSha256,
    nsamples: req.nsamples,
    seqlen,
    seed: req.seed,
    tokensSha256: windowsSha256(set.windows),
  };
  const onDevice = data.hessianDevice && QUANTIZERS[spec.method].deviceCalibration;
  if (onDevice) identity.device = data.hessianDevice;
  const text =
    (req.rule === "awq-blocks"
      ? set.source
      : `${set.source}; ${req.nsamples} windows of ${seqlen}, seed ${req.seed}`) +
    (onDevice ? `; ${onDevice} on the ${data.hessianDevice}` : "");
  return { kind: req.kind, windows: set.windows, identity, text };
}

/**
 * The calibration a resolved spec's method needs: the windows
 * ({@linkcode drawCalibration}), and for "fisher" the Fisher information
 * (cached); null for none.
 */
export async function loadCalibration(
  base: LlamaWeights,
  spec: QuantSpec,
  ctx: QuantContext,
): Promise<Calibration<CalibrationKind> | null> {
  const drawn = await drawCalibration(base.config, spec, {
    ...ctx,
    hessianDevice: ctx.hessians?.device,
  });
  if (!drawn) return null;
  const { identity, text } = drawn;
  if (drawn.kind === "activations") {
    return { inputs: { windows: drawn.windows }, identity, text };
  }
  const fisher = await cachedFisher(base, drawn.windows, {
    cacheDir: `${ctx.cacheDir ?? resolveCacheDir()}/fisher`,
    key: `${ctx.modelKey}|${identity.source}|${identity.fileSha256}`,
    workers: ctx.workers,
    onProgress: (d, n, what) => {
      ctx.onProgress?.(d, n, `fisher ${what}`);
      if (d === n) ctx.log?.(`fisher: ${n} windows`);
    },
  });
  return { inputs: { fisher: fisher.fisher, windows: fisher.windows }, identity, text };
}
