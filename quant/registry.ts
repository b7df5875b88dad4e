/**
 * The quantization methods behind one interface. Each entry says what
 * calibration it needs — none (RTN), layer-input windows (GPTQ, AWQ:
 * "activations") or the Fisher information of the weights (SqueezeLLM) — and
 * quantizes a model given that calibration. quant/ never loads data: the
 * caller (eval/pipeline.ts) draws the windows, computes the Fisher
 * information, and calls {@linkcode QUANTIZERS}.
 *
 * Every linear layer (wq, wk, wv, wo, w1, w2, w3) is quantized; embeddings,
 * norms and the classifier stay fp32, as in the papers.
 *
 * @module
 */
import type { LinearName, LlamaConfig, LlamaWeights } from "../model/config.ts";
import type { ProgressCallback } from "../model/pool.ts";
import { LINEAR_NAMES, linearKey, withLinears } from "../model/config.ts";
import { dequantize, type QuantizedLinear } from "./format.ts";
import { rtnBlock, squeezellmBlock } from "./blockwise.ts";
import {
  gptqQuantizeModelAsync,
  gptqSpecOptions,
  type HessianAccumulatorFactory,
} from "./sequential.ts";
import { type AwqFeatureSource, awqQuantizeModelParallel, awqSpecOptions } from "./awq.ts";
import { findOutlierRange } from "./squeezellm.ts";
import { smoothquantQuantizeModel } from "./smoothquant.ts";
import { abqQuantizeModel, defaultEpochs } from "./abq.ts";
import { actQuantOf } from "./act_quant.ts";
import type { Method, QuantSpec, SpecOf } from "./spec.ts";

/** What a method needs besides the weights. */
export type CalibrationKind = "none" | "activations" | "fisher";

/** Fisher information of every linear: [layer][name] = F [rows, cols] (squared gradients). */
export type FisherLayers = Record<LinearName, Float32Array>[];

/** The calibration a method of each kind is given. */
export interface CalibrationInputs {
  none: null;
  /** Calibration windows of token ids, each ≤ max_seq_len. */
  activations: { windows: Int32Array[] };
  /** The Fisher information and how many windows it was computed from. */
  fisher: { fisher: FisherLayers; windows: number };
}

/** Context of a quantizer besides the weights and calibration. */
export interface QuantizeContext {
  /** Worker threads (GPTQ's solver, AWQ's searches, SqueezeLLM's k-means, ABQ's steps); 0 = this thread. */
  workers: number;
  /** One-line progress messages. */
  log?: (line: string) => void;
  /** Steps of the long searches (GPTQ's linears, AWQ's ratios and clips): (done, total, what). */
  onProgress?: ProgressCallback;
  /**
   * Where the methods whose {@linkcode Quantizer.deviceCalibration} is
   * "Hessians" accumulate them (eval/gpu_calibration.ts: on the GPU). @default the CPU
   */
  hessians?: HessianAccumulatorFactory;
  /**
   * GPTQ's whole sequential pass on a device (eval/gpu_calibration.ts
   * `gptqQuantizeModelGpu`: block inputs and Hessians kept on the GPU; the
   * same codes as the CPU loop). @default quant/sequential.ts gptqQuantizeModelAsync
   */
  gptqModel?: typeof gptqQuantizeModelAsync;
  /**
   * AWQ's calibration features from a device (eval/gpu_calibration.ts
   * `gpuAwqFeatures`: the block forward and mean |x| on the GPU), made per
   * run and disposed after it. @default the CPU forward (quant/awq.ts `cpuFeatureSource`)
   */
  awqFeatures?: (config: LlamaConfig) => AwqFeatureSource & Disposable;
}

/** What a quantizer returns. */
export interface MethodOutput {
  /** Fake-quantized weights: every linear = dequantize(linears[key]); AWQ's norms scaled. */
  weights: LlamaWeights;
  /** Keys "layers.{l}.{name}" ({@linkcode linearKey}). */
  linears: Map<string, QuantizedLinear>;
  /** Method-specific facts (outlier range, sparse counts, AWQ scales chosen…). */
  details: Record<string, unknown>;
}

/** One quantization method. */
export interface Quantizer<M extends Method, K extends CalibrationKind> {
  method: M;
  /** The calibration {@linkcode Quantizer.quantize} needs. */
  calibration: K;
  /**
   * What of its calibration runs on the device the context names
   * (`ctx.hessians` / `gptqModel`, `ctx.awqFeatures`; `--device gpu`): GPTQ's
   * "Hessians", AWQ's "features"; absent: always the CPU. Such results are
   * keyed by the device (the calibration identity's `device`).
   */
  deviceCalibration?: "Hessians" | "features";
  /**
   * Quantizes every linear of `base`.
   *
   * @param base the full-precision model (not modified)
   * @param spec a spec resolved by quant/spec.ts `resolveSpec` (every default filled in)
   * @param calibration what {@linkcode Quantizer.calibration} names
   * @param ctx workers and progress
   */
  quantize(
    base: LlamaWeights,
    spec: SpecOf<M>,
    calibration: CalibrationInputs[K],
    ctx: QuantizeContext,
  ): Promise<MethodOutput>;
}

/** Key of one linear layer in {@linkcode MethodOutput.linears} (defined in model/config.ts). */
export { linearKey };

/** The fp32 weights of `base` with every linear replaced by its dequantized form. */
export function fakeQuant(base: LlamaWeights, linears: Map<string, QuantizedLinear>): LlamaWeights {
  return withLinears(base, (l, name) => {
    const q = linears.get(linearKey(l, name));
    return q ? dequantize(q) : undefined;
  });
}

const rtnQuantizer: Quantizer<"rtn", "none"> = {
  method: "rtn",
  calibration: "none",
  quantize(base, spec) {
    const linears = new Map<string, QuantizedLinear>();
    base.layers.forEach((lw, l) => {
      for (const [k, q] of rtnBlock(base.config, lw, l, spec)) linears.set(k, q);
    });
    return Promise.resolve({ weights: fakeQuant(base, linears), linears, details: {} });
  },
};

const gptqQuantizer: Quantizer<"gptq", "activations"> = {
  method: "gptq",
  calibration: "activations",
  deviceCalibration: "Hessians",
  async quantize(base, spec, { windows }, ctx) {
    const r = await (ctx.gptqModel ?? gptqQuantizeModelAsync)(
      base,
      windows,
      gptqSpecOptions(spec, {
        workers: ctx.workers,
        hessians: ctx.hessians,
        log: ctx.log,
        onProgress: ctx.onProgress,
      }),
    );
    return { weights: r.weights, linears: r.linears, details: { stats: r.stats } };
  },
};

const awqQuantizer: Quantizer<"awq", "activations"> = {
  method: "awq",
  calibration: "activations",
  deviceCalibration: "features",
  async quantize(base, spec, { windows }, ctx) {
    using features = ctx.awqFeatures?.(base.config);
    const r = await awqQuantizeModelParallel(base, windows, {
      ...awqSpecOptions(spec, { workers: ctx.workers, log: ctx.log, onProgress: ctx.onProgress }),
      features,
    });
    return { weights: r.weights, linears: r.linears, details: { stats: r.stats } };
  },
};

const squeezellmQuantizer: Quantizer<"squeezellm", "fisher"> = {
  method: "squeezellm",
  calibration: "fisher",
  async quantize(base, spec, { fisher, windows }, ctx) {
    const c = base.config;
    const details: Record<string, unknown> = {};
    let r = spec.outlierRange;
    if (spec.outlierPct !== null) {
      const all = base.layers.flatMap((lw) => LINEAR_NAMES.map((n) => lw[n]));
      r = findOutlierRange(all, spec.outlierPct);
      details.outlierRange = r;
      ctx.log?.(
        `squeezellm: outlier range r = ${r.toPrecision(6)} gives ${spec.outlierPct}% outliers`,
      );
    }
    const linears = new Map<string, QuantizedLinear>();
    let nnz = 0;
    for (let l = 0; l < c.nLayers; l++) {
      const b = await squeezellmBlock(c, base.layers[l], fisher[l], l, spec, r, ctx.workers);
      for (const [k, q] of b.linears) linears.set(k, q);
      nnz += b.nnz;
    }
    details.sparseNnz = nnz;
    details.fisherWindows = windows;
    return { weights: fakeQuant(base, linears), linears, details };
  },
};

const smoothquantQuantizer: Quantizer<"smoothquant", "activations"> = {
  method: "smoothquant",
  calibration: "activations",
  quantize(base, spec, { windows }, ctx) {
    const r = smoothquantQuantizeModel(base, windows, {
      bits: spec.bits,
      alpha: spec.alpha,
      bitBalance: spec.bitBalance,
      onProgress: ctx.onProgress,
    });
    ctx.log?.(`smoothquant: α = ${spec.alpha}, factors from ${windows.length} windows`);
    return Promise.resolve({ weights: r.weights, linears: r.linears, details: {} });
  },
};

const abqQuantizer: Quantizer<"abq", "activations"> = {
  method: "abq",
  calibration: "activations",
  async quantize(base, spec, { windows }, ctx) {
    const act = actQuantOf(spec);
    const epochs = spec.epochs ?? defaultEpochs(spec.bits, act?.abits ?? 16);
    ctx.log?.(`abq: ${epochs} epochs over ${windows.length} windows per block`);
    const r = await abqQuantizeModel(base, windows, {
      bits: spec.bits,
      groupSize: spec.groupSize,
      bitBalance: spec.bitBalance ?? false,
      act,
      epochs,
      letLr: spec.letLr,
      lwcLr: spec.lwcLr,
      workers: ctx.workers,
      log: ctx.log,
      onProgress: ctx.onProgress,
    });
    return { weights: r.weights, linears: r.linears, details: { epochs, stats: r.stats } };
  },
};

/** Every method's quantizer, by name. */
export const QUANTIZERS: {
  readonly rtn: Quantizer<"rtn", "none">;
  readonly gptq: Quantizer<"gptq", "activations">;
  readonly awq: Quantizer<"awq", "activations">;
  readonly squeezellm: Quantizer<"squeezellm", "fisher">;
  readonly smoothquant: Quantizer<"smoothquant", "activations">;
  readonly abq: Quantizer<"abq", "activations">;
} = {
  rtn: rtnQuantizer,
  gptq: gptqQuantizer,
  awq: awqQuantizer,
  squeezellm: squeezellmQuantizer,
  smoothquant: smoothquantQuantizer,
  abq: abqQuantizer,
};

/**
 * How calibration windows are drawn: "windows" (absent), GPTQ's `nsamples`
 * random windows of `seqlen` tokens; "awq-blocks", llm-awq's
 * get_calib_dataset: `nsamples` texts of ≤ `seqlen` tokens concatenated and
 * cut into blocks of `seqlen` (datasets/awq_calibration.ts).
 */
export type CalibrationRule = "windows" | "awq-blocks";

/** The calibration windows `spec` needs, or null for none. */
export interface CalibrationRequest {
  kind: "activations" | "fisher";
  /** Absent: "windows" (so the requests, and identities, of the other methods are unchanged). */
  rule?: CalibrationRule;
  source: string;
  nsamples: number;
  /** Null: the model's max_seq_len. */
  seqlen: number | null;
  seed: number;
}

/**
 * What calibration a spec needs: its kind, and the windows to draw (GPTQ:
 * `calib.nsamples` windows; AWQ: blocks from `calib.nsamples` texts, its
 * official rule; SqueezeLLM: `fisherSamples` for the Fisher pass).
 */
export function calibrationRequest(spec: QuantSpec): CalibrationRequest | null {
  switch (spec.method) {
    case "rtn":
      return null;
    case "awq":
      return { kind: "activations", rule: "awq-blocks", ...spec.calib };
    case "gptq":
    case "smoothquant":
    case "abq":
      return { kind: "activations", ...spec.calib };
    case "squeezellm":
      return { kind: "fisher", ...spec.calib, nsamples: spec.fisherSamples };
  }
}
