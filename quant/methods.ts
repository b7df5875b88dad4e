/**
 * One interface for every quantization method: a {@linkcode QuantSpec} (the
 * one source of defaults, read by the library and the CLI alike) goes in, a
 * {@linkcode QuantizedModel} comes out — the packed linears (quant/format.ts),
 * the fake-quantized fp32 weights the papers evaluate perplexity with, the
 * exact average bits per weight and where the calibration data came from.
 *
 * Every linear layer (wq, wk, wv, wo, w1, w2, w3) is quantized; embeddings,
 * norms and the classifier stay fp32, as in the papers.
 *
 * @module
 */
import type { LlamaConfig, LlamaWeights } from "../model/config.ts";
import { LINEAR_NAMES, linearKey, linearShape, withLinears } from "../model/config.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import { checkBits, dequantize, type QuantizedLinear } from "./format.ts";
import { rtn } from "./rtn.ts";
import { gptqQuantizeModel } from "./sequential.ts";
import { awqQuantizeModel } from "./awq.ts";
import { findOutlierRange, squeezellmQuantize } from "./squeezellm.ts";
import { cachedFisher } from "./fisher.ts";
import { modelSize } from "./size.ts";
import { calibrationWindows } from "../datasets/calibration.ts";
import { dequantizedWeights, loadQuantizedModel, saveQuantizedModel } from "./qmodel.ts";

/** The quantization methods. */
export const METHODS = ["rtn", "gptq", "awq", "squeezellm"] as const;
/** One of {@linkcode METHODS}. */
export type Method = typeof METHODS[number];
/** Where calibration windows come from. */
export const CALIB_SOURCES = ["c4", "wikitext2", "tinystories"] as const;
/** One of {@linkcode CALIB_SOURCES}. */
export type CalibSource = typeof CALIB_SOURCES[number];

/** Everything that determines a quantized model. */
export interface QuantSpec {
  method: Method;
  bits: number;
  /** Columns per scale group; null = one group per output row. */
  groupSize: number | null;
  sym: boolean;
  /** GPTQ: columns in order of descending diag(H). */
  actOrder: boolean;
  /** GPTQ: group parameters from the unpermuted weights. */
  staticGroups: boolean;
  /** GPTQ: sub-layers quantized in order k,v,q → o → up,gate → down. */
  trueSequential: boolean;
  /** SqueezeLLM: % of weights kept in fp16 by largest Fisher value. */
  sensitivePct: number;
  /** SqueezeLLM: % of weights kept as outliers (the range r is searched). */
  outlierPct: number | null;
  /** SqueezeLLM: the outlier range r, given directly. */
  outlierRange: number | null;
  /** Calibration windows (GPTQ, AWQ); seqlen null = the model's max_seq_len. */
  calib: { source: CalibSource; nsamples: number; seqlen: number | null; seed: number };
  /** SqueezeLLM: windows of the Fisher pass (the official default is 100). */
  fisherSamples: number;
}

/** The defaults of the papers' official code for `method` at `bits`. */
export function defaultSpec(method: Method, bits: number): QuantSpec {
  checkBits(bits);
  return {
    method,
    bits,
    groupSize: method === "awq" ? 128 : null,
    sym: false,
    actOrder: false,
    staticGroups: false,
    trueSequential: true,
    sensitivePct: 0,
    outlierPct: null,
    outlierRange: null,
    // GPTQ: 128 C4 windows of the model's length, seed 0; AWQ's run_awq also takes 128 samples.
    calib: { source: "c4", nsamples: 128, seqlen: null, seed: 0 },
    fisherSamples: 100,
  };
}

/** Artifact name carrying the config, e.g. "gptq.w3.g128.act", "squeezellm.w3.s0.45". */
export function variantName(s: QuantSpec): string {
  const parts: string[] = [s.method, `w${s.bits}`];
  if (s.groupSize !== null) parts.push(`g${s.groupSize}`);
  if (s.sym) parts.push("sym");
  if (s.method === "gptq") {
    if (s.actOrder) parts.push("act");
    if (s.staticGroups) parts.push("static");
    if (!s.trueSequential) parts.push("nts");
  }
  if (s.method === "squeezellm") {
    const sparse = s.sensitivePct + (s.outlierPct ?? 0);
    if (s.outlierRange !== null) parts.push(`s${s.sensitivePct}`, `r${s.outlierRange}`);
    else if (sparse > 0) parts.push(`s${+sparse.toFixed(4)}`);
  }
  return parts.join(".");
}

/** Widths of the layers a group size must divide (the input width of each linear). */
export function inputWidths(c: LlamaConfig): number[] {
  return [...new Set(LINEAR_NAMES.map((n) => linearShape(c, n)[1]))].sort((a, b) => a - b);
}

/**
 * The group size to use for `spec` on a model: null (per row) or a size that
 * divides every layer's input width. AWQ's default 128 falls back to per-row
 * when it does not divide every width (stories260K: 64 and 172), and says so.
 */
export function resolveGroup(spec: QuantSpec, c: LlamaConfig, userGiven: boolean): number | null {
  const g = spec.groupSize;
  if (g === null) return null;
  const widths = inputWidths(c);
  if (widths.every((w) => w % g === 0)) return g;
  if (!userGiven) return null;
  const valid = [];
  for (let d = 1; d <= widths[0]; d++) if (widths.every((w) => w % d === 0)) valid.push(d);
  throw new RangeError(
    `--group ${g} does not divide every layer's input width (${widths.join(", ")}); ` +
      `valid groups for this model: ${valid.join(", ")}, or omit --group for one group per row`,
  );
}

/** Context a quantizer may need besides the weights. */
export interface QuantContext {
  tokenizer: Tokenizer;
  dataDir: string;
  offline: boolean;
  /** Identifies the base checkpoint (its sha256) in caches. */
  modelKey: string;
  workers: number;
  log?: (line: string) => void;
  /** Where the Fisher cache lives. @default `${dataDir}/.cache/fisher` */
  cacheDir?: string;
}

/** A quantized model: packed linears plus the fp32 weights they stand for. */
export interface QuantizedModel {
  spec: QuantSpec;
  /** Fake-quantized weights: every linear = dequantize(linears[key]). */
  weights: LlamaWeights;
  /** Keys "layers.{l}.{name}". */
  linears: Map<string, QuantizedLinear>;
  avgBits: number;
  /** Which calibration data was used, or null. */
  calibration: string | null;
  seconds: number;
  /** Method-specific facts (outlier range, sparse counts, AWQ scales chosen…). */
  details: Record<string, unknown>;
}

/** Key of one linear layer in {@linkcode QuantizedModel.linears} (defined in model/config.ts). */
export { linearKey };

/** Quantizes every linear layer of `base` as `spec` says. */
export async function quantizeModel(
  base: LlamaWeights,
  spec: QuantSpec,
  ctx: QuantContext,
  opts: { groupGiven?: boolean } = {},
): Promise<QuantizedModel> {
  checkBits(spec.bits);
  const t0 = performance.now();
  const c = base.config;
  const groupSize = resolveGroup(spec, c, opts.groupGiven ?? spec.method !== "awq");
  const resolved: QuantSpec = {
    ...spec,
    groupSize,
    calib: { ...spec.calib, seqlen: spec.calib.seqlen ?? c.maxSeqLen },
  };
  const seqlen = resolved.calib.seqlen!;
  const details: Record<string, unknown> = {};
  let calibration: string | null = null;
  let linears = new Map<string, QuantizedLinear>();
  let weights = base;
  const calib = async (nsamples: number) => {
    const r = await calibrationWindows({
      source: resolved.calib.source,
      nsamples,
      seqlen,
      seed: resolved.calib.seed,
      dataDir: ctx.dataDir,
      tokenizer: ctx.tokenizer,
      offline: ctx.offline,
    });
    calibration = `${r.source}; ${nsamples} windows of ${seqlen}, seed ${resolved.calib.seed}`;
    return r.windows;
  };

  switch (resolved.method) {
    case "rtn": {
      for (let l = 0; l < c.nLayers; l++) {
        for (const name of LINEAR_NAMES) {
          const [rows, cols] = linearShape(c, name);
          const dense = rtn(base.layers[l][name], rows, cols, {
            bits: resolved.bits,
            groupSize: groupSize ?? cols,
            sym: resolved.sym,
          });
          linears.set(linearKey(l, name), { dense });
        }
      }
      weights = fakeQuant(base, linears);
      break;
    }
    case "gptq": {
      const windows = await calib(resolved.calib.nsamples);
      const r = await gptqQuantizeModel(base, windows, {
        bits: resolved.bits,
        groupSize: groupSize ?? undefined,
        sym: resolved.sym,
        actOrder: resolved.actOrder,
        staticGroups: resolved.staticGroups,
        trueSequential: resolved.trueSequential,
        onProgress: ctx.log ? (m: string) => ctx.log!(m) : undefined,
      });
      ({ weights, linears } = r);
      details.stats = r.stats;
      break;
    }
    case "awq": {
      const windows = await calib(resolved.calib.nsamples);
      if (groupSize === null && spec.groupSize !== null) {
        ctx.log?.(
          `awq: group ${spec.groupSize} does not divide every layer width of this model; using one group per row`,
        );
      }
      const r = await awqQuantizeModel(base, windows, {
        bits: resolved.bits,
        groupSize: groupSize ?? undefined,
        onProgress: ctx.log ? (m: string) => ctx.log!(m) : undefined,
      });
      ({ weights, linears } = r);
      details.stats = r.stats;
      break;
    }
    case "squeezellm": {
      const windows = await calib(resolved.fisherSamples);
      const fisher = await cachedFisher(base, windows, {
        cacheDir: ctx.cacheDir ?? `${ctx.dataDir}/.cache/fisher`,
        key: `${ctx.modelKey}|${calibration}`,
        workers: ctx.workers,
        onProgress: ctx.log
          ? (d: number, n: number) => d === n && ctx.log!(`fisher: ${n} windows`)
          : undefined,
      });
      let r = resolved.outlierRange;
      if (resolved.outlierPct !== null && resolved.outlierPct > 0) {
        const all = base.layers.flatMap((lw) => LINEAR_NAMES.map((n) => lw[n]));
        r = findOutlierRange(all, resolved.outlierPct);
        details.outlierRange = r;
        ctx.log?.(
          `squeezellm: outlier range r = ${
            r.toPrecision(6)
          } gives ${resolved.outlierPct}% outliers`,
        );
      }
      let nnz = 0;
      for (let l = 0; l < c.nLayers; l++) {
        for (const name of LINEAR_NAMES) {
          const [rows, cols] = linearShape(c, name);
          const q = await squeezellmQuantize(
            base.layers[l][name],
            fisher.fisher[l][name],
            rows,
            cols,
            {
              bits: resolved.bits,
              seed: resolved.calib.seed,
              sensitivePct: resolved.sensitivePct,
              outlierRange: r ?? undefined,
              workers: ctx.workers,
            },
          );
          nnz += q.stats.nnz;
          linears.set(linearKey(l, name), q.q);
        }
      }
      details.sparseNnz = nnz;
      details.fisherWindows = windows.length;
      weights = fakeQuant(base, linears);
      break;
    }
  }
  return {
    spec: resolved,
    weights,
    linears,
    avgBits: modelSize(linears).avgBitsPerWeight,
    calibration,
    seconds: (performance.now() - t0) / 1000,
    details,
  };
}

/** The fp32 weights of `base` with every linear replaced by its dequantized form. */
export function fakeQuant(base: LlamaWeights, linears: Map<string, QuantizedLinear>): LlamaWeights {
  return withLinears(base, (l, name) => {
    const q = linears.get(linearKey(l, name));
    return q ? dequantize(q) : undefined;
  });
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
  const spec = f.options as unknown as QuantSpec;
  if (!(METHODS as readonly string[]).includes(f.method) || typeof spec.bits !== "number") {
    throw new RangeError(
      `quantized model ${path}: method "${f.method}" with options ${
        JSON.stringify(f.options)
      } is not one squeezebench writes`,
    );
  }
  return {
    spec,
    weights: dequantizedWeights(f),
    linears: f.linears,
    avgBits: modelSize(f.linears).avgBitsPerWeight,
    calibration: (f.provenance.calibration as string | null) ?? null,
    seconds: Number(f.provenance.seconds ?? 0),
    details: (f.provenance.details as Record<string, unknown>) ?? {},
    base: f.base,
  };
}
