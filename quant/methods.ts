/**
 * One interface for every quantization method: a spec resolved against the
 * model (quant/spec.ts, the one source of defaults) and the calibration its
 * method asks for (quant/registry.ts) go in, a {@linkcode QuantizedModel}
 * comes out — the packed linears (quant/format.ts), the fake-quantized fp32
 * weights the papers evaluate perplexity with, the exact average bits per
 * weight and the identity of the calibration data. eval/pipeline.ts loads the
 * calibration and calls {@linkcode quantizeWith}; the quantized model file
 * round-trips through {@linkcode saveQuantized} / {@linkcode loadQuantized}.
 *
 * @module
 */
import type { LlamaWeights } from "../model/config.ts";
import type { QuantizedLinear } from "./format.ts";
import { modelSize } from "./size.ts";
import {
  dequantizedWeights,
  loadQuantizedModel,
  type QModelMeta,
  type QuantizedModelFile,
  saveQuantizedModel,
} from "./qmodel.ts";
import {
  type CalibrationInputs,
  type CalibrationKind,
  type QuantizeContext,
  QUANTIZERS,
} from "./registry.ts";
import { type CalibSource, pickSpec, type QuantSpec, variantName } from "./spec.ts";
import { type ActQuantConfig, actQuantOf } from "./act_quant.ts";

export * from "./spec.ts";
export {
  type CalibrationInputs,
  type CalibrationKind,
  type CalibrationRequest,
  calibrationRequest,
  fakeQuant,
  type FisherLayers,
  linearKey,
  type MethodOutput,
  type QuantizeContext,
  type Quantizer,
  QUANTIZERS,
} from "./registry.ts";

/** Which calibration data a quantized model was made with: enough to draw it again and check. */
export interface CalibrationIdentity {
  /**
   * How the windows were drawn (quant/registry.ts CalibrationRule) when not
   * GPTQ's random windows: "awq-blocks" (AWQ's concatenated texts; then
   * `nsamples` counts texts and `seqlen` is the block size). Absent for
   * GPTQ's rule, so those keys are unchanged.
   */
  rule?: "awq-blocks";
  source: CalibSource;
  /** The data file, relative to the data dir. */
  file: string;
  /** sha256 (hex) of that file. */
  fileSha256: string;
  nsamples: number;
  seqlen: number;
  seed: number;
  /** sha256 (hex) of the windows' token ids (int32 little-endian, in order). */
  tokensSha256: string;
  /**
   * Where the statistics of the windows (GPTQ's Hessians) were accumulated
   * when not the CPU: "gpu" (eval/gpu_calibration.ts; equal to the CPU's
   * within 1e-5, not bit for bit, so the codes may differ at rounding ties).
   * Absent for the CPU and for methods that take no such statistics, so their
   * keys are unchanged.
   */
  device?: "gpu";
}

/** Calibration of one kind, with its identity and a description for people. */
export interface Calibration<K extends CalibrationKind> {
  inputs: CalibrationInputs[K];
  /** Null for SqueezeLLM's Fisher read from a file (`--fisher`; its sha256 is in the details). */
  identity: CalibrationIdentity | null;
  /** e.g. "c4: docs 1100..1999 of …; 128 windows of 512, seed 0". */
  text: string;
}

/** A quantized model: packed linears plus the fp32 weights they stand for. */
export interface QuantizedModel {
  /** The resolved spec (quant/spec.ts `resolveSpec`): every default filled in. */
  spec: QuantSpec;
  /** A name for people, e.g. "gptq.w3.g128.act" (never a key). */
  variantName: string;
  /** Fake-quantized weights: every linear = dequantize(linears[key]). */
  weights: LlamaWeights;
  /**
   * The activation quantization the model is evaluated with (quant/act_quant.ts,
   * from the spec's abits, kvBits, bitBalance; JSON-able), or null (weight-only).
   */
  actQuant: ActQuantConfig | null;
  /** Keys "layers.{l}.{name}". */
  linears: Map<string, QuantizedLinear>;
  avgBits: number;
  /** Which calibration data was used, or null (RTN). */
  calibration: CalibrationIdentity | null;
  /** The calibration described for people, or null. */
  calibrationText: string | null;
  seconds: number;
  /** Method-specific facts (outlier range, sparse counts, AWQ scales chosen…). */
  details: Record<string, unknown>;
}

/**
 * Quantizes `base` with the method of `spec`, given the calibration that
 * method needs (`QUANTIZERS[method].calibration`; null for "none").
 *
 * @param base the full-precision model (not modified)
 * @param spec a resolved spec (quant/spec.ts `resolveSpec`)
 * @param calibration the method's calibration, or null when it needs none
 * @param ctx workers and progress
 * @returns the quantized model; `seconds` is the quantizer's own time
 * @throws {RangeError} when the calibration does not match what the method needs
 */
export async function quantizeWith(
  base: LlamaWeights,
  spec: QuantSpec,
  calibration: Calibration<CalibrationKind> | null,
  ctx: QuantizeContext,
): Promise<QuantizedModel> {
  const t0 = performance.now();
  const q = QUANTIZERS[spec.method];
  if ((q.calibration === "none") !== (calibration === null)) {
    throw new RangeError(
      `${spec.method} needs calibration "${q.calibration}", ` +
        (calibration ? "got calibration data" : "got none"),
    );
  }
  const quantize = q.quantize as (
    base: LlamaWeights,
    spec: QuantSpec,
    calibration: unknown,
    ctx: QuantizeContext,
  ) => ReturnType<typeof q.quantize>;
  const out = await quantize(base, spec, calibration?.inputs ?? null, ctx);
  return {
    spec,
    variantName: variantName(spec),
    weights: out.weights,
    actQuant: actQuantOf(spec),
    linears: out.linears,
    avgBits: modelSize(out.linears).avgInfoBits,
    calibration: calibration?.identity ?? null,
    calibrationText: calibration?.text ?? null,
    seconds: (performance.now() - t0) / 1000,
    details: out.details,
  };
}

/** Writes `q` as a quantized model file (quant/qmodel.ts); returns its size in bytes. */
export async function saveQuantized(
  path: string,
  q: QuantizedModel,
  base: { path: string; sha256: string },
  provenance: Record<string, unknown> = {},
): Promise<number> {
  return await saveQuantizedModel(path, {
    config: q.weights.config,
    method: q.spec.method,
    options: { ...q.spec },
    provenance: {
      ...provenance,
      calibration: q.calibration,
      calibrationText: q.calibrationText,
      seconds: q.seconds,
      details: q.details,
    },
    base,
    linears: q.linears,
    weights: q.weights, // AWQ's scaled norms are part of the model
  });
}

/** Reads a quantized model file back as a {@linkcode QuantizedModel}. */
export async function loadQuantized(
  path: string,
): Promise<QuantizedModel & { base: { path: string; sha256: string } }> {
  const f = await loadQuantizedModel(path);
  return { ...quantizedFileInfo(f, path), weights: dequantizedWeights(f) };
}

/**
 * What a quantized model file says about its model, without dequantizing
 * it: everything of a {@linkcode QuantizedModel} but the fp32 weights
 * (eval/perplexity_blockwise.ts dequantizes one block at a time).
 *
 * @param f the file's content (quant/qmodel.ts `loadQuantizedModel`)
 * @param path the file, for messages
 * @returns spec, names, linears, sizes, calibration, details and base
 * @throws {RangeError} when the method and options are not a spec squeezebench writes
 */
export function quantizedFileInfo(
  f: QuantizedModelFile,
  path: string,
): Omit<QuantizedModel, "weights"> & { base: { path: string; sha256: string } } {
  return { ...quantizedMetaInfo(f, modelSize(f.linears).avgInfoBits, path), linears: f.linears };
}

/**
 * {@linkcode quantizedFileInfo} from a file's header and provenance alone,
 * given its average bits (a file opened, not read: quant/qmodel.ts
 * `openQuantizedModel`, whose `layouts` give the sizes).
 *
 * @param f the file's header and provenance
 * @param avgBits average information bits per weight of its linears
 * @param path the file, for messages
 * @returns everything of {@linkcode quantizedFileInfo} but the linears
 * @throws {RangeError} when the method and options are not a spec squeezebench writes
 */
export function quantizedMetaInfo(
  f: QModelMeta,
  avgBits: number,
  path: string,
): Omit<QuantizedModel, "weights" | "linears"> & { base: { path: string; sha256: string } } {
  let spec: QuantSpec;
  try {
    spec = pickSpec(f.method, Number(f.options.bits), f.options);
  } catch (e) {
    throw new RangeError(
      `quantized model ${path}: method "${f.method}" with options ${
        JSON.stringify(f.options)
      } is not one squeezebench writes (${(e as Error).message})`,
    );
  }
  const cal = f.provenance.calibration;
  // files before the calibration identity kept only the description, under "calibration"
  const text = typeof cal === "string" ? cal : (f.provenance.calibrationText as string | null);
  return {
    spec,
    variantName: variantName(spec),
    actQuant: actQuantOf(spec),
    avgBits,
    calibration: cal !== null && typeof cal === "object" ? cal as CalibrationIdentity : null,
    calibrationText: text ?? null,
    seconds: Number(f.provenance.seconds ?? 0),
    details: (f.provenance.details as Record<string, unknown>) ?? {},
    base: f.base,
  };
}
