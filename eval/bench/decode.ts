/**
 * Decode benchmark with the real quantizers: stories260K is quantized by
 * quant/methods.ts's `quantizeModel` (RTN, SqueezeLLM dense-only and
 * Dense-and-Sparse) and decoded token by token on the GPU with every linear
 * in its packed format, next to fp32 and fp16. Per format: tokens per second
 * of greedy decoding (all steps in one submit), the perplexity through the
 * kernels on TinyStories windows ({@linkcode gpuPerplexity}), and the greedy
 * text from BOS so a reader sees the quality.
 *
 * On a software adapter (llvmpipe) the speeds are CPU speeds; the table says
 * which adapter measured them.
 *
 * @module
 */
import { loadCheckpoint } from "../../model/checkpoint.ts";
import type { LinearName, LlamaWeights } from "../../model/config.ts";
import { LINEAR_NAMES, linearShape } from "../../model/config.ts";
import { loadTokenizer } from "../../model/tokenizer.ts";
import { dataFile } from "../../datasets/datadir.ts";
import { loadEvalSet } from "../../datasets/eval_sets.ts";
import { sha256File } from "../../datasets/hub.ts";
import type { CalibSource, QuantContext, QuantSpec } from "../../quant/methods.ts";
import { defaultSpec, quantizeModel, variantName } from "../../quant/methods.ts";
import type { Gpu, GpuInfo } from "../../kernels/device.ts";
import { getGpu } from "../../kernels/device.ts";
import type { LinearSource } from "../../kernels/decode.ts";
import { GpuDecoder, quantizedSource, timeGreedy } from "../../kernels/decode.ts";
import { gpuPerplexity } from "../gpu_perplexity.ts";
import { f16Tensor, f32Tensor } from "./synthetic.ts";
import { weightBytes } from "../../kernels/weight.ts";
import { markdownTable } from "./_table.ts";

/** The formats {@linkcode benchDecodeFormats} can decode with (quant/methods.ts variant names). */
export const DECODE_FORMATS = [
  "f32",
  "f16",
  "rtn.w4",
  "rtn.w3",
  "rtn.w4.g4",
  "rtn.w3.g4",
  "squeezellm.w4",
  "squeezellm.w3",
  "squeezellm.w4.s0.45",
  "squeezellm.w3.s0.45",
] as const;
/** One of {@linkcode DECODE_FORMATS}. */
export type DecodeFormat = typeof DECODE_FORMATS[number];

/** Files of the benchmarked model, relative to the data dir. */
const CHECKPOINT = "stories260K/stories260K.bin", TOKENIZER = "stories260K/tok512.model";

/** Options of {@linkcode benchDecodeFormats}. */
export interface BenchDecodeFormatsOptions {
  /** The data dir holding stories260K/, tinystories/ (and c4/ for --calib c4). */
  dataDir: string;
  /** Fewer steps, windows and Fisher windows (a quick look). @default false */
  small?: boolean;
  /** Greedy decode steps timed per format (at most max_seq_len). @default 256, small 64 */
  tokens?: number;
  /** Formats to run, in this order. @default every {@linkcode DECODE_FORMATS} */
  formats?: DecodeFormat[];
  /** Timed runs per format (the median counts). @default 5, small 3 */
  runs?: number;
  /** TinyStories windows of `seqlen` for the kernel perplexity; 0 skips it. @default 4, small 1 */
  pplWindows?: number;
  /** Window length of the kernel perplexity. @default 128 */
  seqlen?: number;
  /** Greedy tokens from BOS shown as text. @default 40 */
  textTokens?: number;
  /** SqueezeLLM's Fisher windows (the official default is 100). @default 16, small 4 */
  fisherSamples?: number;
  /** SqueezeLLM's calibration text. @default "tinystories" (the model's own domain) */
  calib?: CalibSource;
  /** Never download. @default false */
  offline?: boolean;
  /** Fisher cache. @default quantizeModel's (`${dataDir}/.cache/fisher`) */
  cacheDir?: string;
  /** Worker threads of the quantizers. @default 0 (stories260K is too small to gain) */
  workers?: number;
  /** A device to reuse; one is requested otherwise. */
  gpu?: Gpu;
  /** Progress and the table; pass `() => {}` for silence. @default console.log */
  log?: (line: string) => void;
}

/** One format of {@linkcode benchDecodeFormats}. */
export interface DecodeFormatRow {
  format: DecodeFormat;
  /** Code width; 32 / 16 for f32 / f16. */
  bits: number;
  /** Average bits per linear weight as quant/size.ts counts them (32 / 16 for f32 / f16). */
  avgBits: number;
  /** Bits per linear weight the kernels read (every stored part, CSR indices included). */
  storedBits: number;
  /** Greedy steps timed. */
  tokens: number;
  /** Median seconds of the timed runs. */
  seconds: number;
  tokensPerSecond: number;
  /** Perplexity through the kernels on the TinyStories windows, or null when skipped. */
  ppl: number | null;
  /** The first `textTokens` greedy tokens from BOS, decoded. */
  text: string;
  /** Seconds quantizeModel took (0 for f32 / f16). */
  quantizeSeconds: number;
  /** Nonzeros of the sparse parts (0 without). */
  sparseNnz: number;
}

/** Result of {@linkcode benchDecodeFormats}. */
export interface BenchDecodeFormatsResult {
  adapter: GpuInfo;
  model: string;
  options: {
    tokens: number;
    runs: number;
    pplWindows: number;
    seqlen: number;
    fisherSamples: number;
    calib: CalibSource;
  };
  rows: DecodeFormatRow[];
}

/**
 * The quantizer spec of a quantized format (its quant/methods.ts variant
 * name is the format), or null for f32 / f16.
 * @param format the format
 * @param fisherSamples SqueezeLLM's Fisher windows
 * @param calib SqueezeLLM's calibration text
 */
export function decodeFormatSpec(
  format: DecodeFormat,
  fisherSamples: number,
  calib: CalibSource,
): QuantSpec | null {
  if (format === "f32" || format === "f16") return null;
  const bits = format.includes(".w3") ? 3 : 4;
  if (format.startsWith("rtn.")) {
    // Groups must divide both input widths of stories260K (64, 172): per row or 4.
    return { ...defaultSpec("rtn", bits), groupSize: format.endsWith(".g4") ? 4 : null };
  }
  const s = defaultSpec("squeezellm", bits);
  const sparse = format.endsWith(".s0.45") ? { sensitivePct: 0.05, outlierPct: 0.4 } : {};
  return { ...s, ...sparse, fisherSamples, calib: { ...s.calib, source: calib } };
}

/**
 * Quantizes stories260K in each format, then per format times greedy GPU
 * decoding, measures the kernel perplexity and prints the greedy text, and
 * prints a table. Wired as `deno task bench decode`.
 *
 * @param opts see {@linkcode BenchDecodeFormatsOptions}
 * @returns adapter, options used and one row per format
 * @throws RangeError naming --formats for an unknown format
 * @example
 * ```ts
 * const r = await benchDecodeFormats({ dataDir: "../shared/data", small: true, formats: ["f32", "rtn.w4"] });
 * r.rows[1].tokensPerSecond;
 * ```
 */
export async function benchDecodeFormats(
  opts: BenchDecodeFormatsOptions,
): Promise<BenchDecodeFormatsResult> {
  const small = opts.small ?? false;
  const formats = opts.formats ?? [...DECODE_FORMATS];
  for (const f of formats) {
    if (!(DECODE_FORMATS as readonly string[]).includes(f)) {
      throw new RangeError(
        `--formats: expected some of ${DECODE_FORMATS.join(", ")}; found "${f}"`,
      );
    }
  }
  const o = {
    tokens: opts.tokens ?? (small ? 64 : 256),
    runs: opts.runs ?? (small ? 3 : 5),
    pplWindows: opts.pplWindows ?? (small ? 1 : 4),
    seqlen: opts.seqlen ?? 128,
    fisherSamples: opts.fisherSamples ?? (small ? 4 : 16),
    calib: opts.calib ?? "tinystories",
  };
  const textTokens = opts.textTokens ?? 40;
  const log = opts.log ?? ((s: string) => console.log(s));
  const offline = opts.offline ?? false;
  const checkpoint = await dataFile(opts.dataDir, CHECKPOINT, { offline });
  const [weights, tokenizer] = await Promise.all([
    loadCheckpoint(checkpoint),
    loadTokenizer(await dataFile(opts.dataDir, TOKENIZER, { offline })),
  ]);
  const evalTokens = o.pplWindows > 0
    ? (await loadEvalSet("tinystories", {
      dataDir: opts.dataDir,
      tokenizer,
      seqlen: o.seqlen,
      offline,
    })).tokens
    : undefined;
  const ctx: QuantContext = {
    tokenizer,
    dataDir: opts.dataDir,
    offline,
    modelKey: await sha256File(checkpoint),
    workers: opts.workers ?? 0,
    cacheDir: opts.cacheDir,
    log,
  };
  const gpu = opts.gpu ?? await getGpu();
  log(
    `adapter: ${gpu.info.description}${gpu.info.isFallbackAdapter ? " (fallback/software)" : ""}`,
  );
  const rows: DecodeFormatRow[] = [];
  for (const format of formats) {
    const spec = decodeFormatSpec(format, o.fisherSamples, o.calib);
    let model = weights, linears: LinearSource, bits: number, avgBits: number;
    let quantizeSeconds = 0, sparseNnz = 0;
    if (spec === null) {
      bits = avgBits = format === "f32" ? 32 : 16;
      linears = plainSource(weights, format === "f32" ? "f32" : "f16");
    } else {
      const q = await quantizeModel(weights, spec, ctx);
      if (variantName(q.spec) !== format) {
        throw new Error(`benchDecodeFormats(): ${format} quantized as ${variantName(q.spec)}`);
      }
      ({ avgBits, seconds: quantizeSeconds } = q);
      bits = spec.bits;
      model = q.weights; // norms and embeddings as the quantizer left them
      linears = quantizedSource(q.linears);
      for (const w of q.linears.values()) sparseNnz += w.sparse?.rowPtr[w.sparse.rows] ?? 0;
    }
    const storedBits = storedBitsPerWeight(weights, linears);
    const dec = await GpuDecoder.create(gpu, model, linears);
    try {
      const t = await timeGreedy(dec, o.tokens, o.runs);
      const ppl = evalTokens
        ? (await gpuPerplexity(dec, evalTokens, { seqlen: o.seqlen, limit: o.pplWindows })).ppl
        : null;
      const text = tokenizer.decode(t.generated.slice(0, textTokens));
      rows.push({
        format,
        bits,
        avgBits,
        storedBits,
        tokens: t.tokens,
        seconds: t.seconds,
        tokensPerSecond: t.tokensPerSec,
        ppl,
        text,
        quantizeSeconds,
        sparseNnz,
      });
      log(
        `${format}: ${t.tokensPerSec.toFixed(1)} tokens/s, ppl ${ppl?.toFixed(3) ?? "-"}; ` +
          JSON.stringify(text),
      );
    } finally {
      dec.release();
    }
  }
  gpu.pool.trim();
  log(
    `greedy decoding of ${o.tokens} tokens from BOS (median of ${o.runs} runs); perplexity through the kernels on ` +
      `${o.pplWindows} TinyStories windows of ${o.seqlen}; SqueezeLLM Fisher: ${o.fisherSamples} ` +
      `${o.calib} windows`,
  );
  log(decodeFormatsTable(rows));
  return { adapter: gpu.info, model: "stories260K", options: o, rows };
}

/** Every linear of `weights` as fp32 or fp16 kernel tensors. */
function plainSource(weights: LlamaWeights, kind: "f32" | "f16"): LinearSource {
  return (l: number, name: LinearName) => {
    const [rows, cols] = linearShape(weights.config, name);
    const make = kind === "f32" ? f32Tensor : f16Tensor;
    return { dense: make(weights.layers[l][name], rows, cols) };
  };
}

/** Stored bits per weight over every linear of every block, as the kernels read them. */
function storedBitsPerWeight(weights: LlamaWeights, linears: LinearSource): number {
  let bytes = 0, n = 0;
  for (let l = 0; l < weights.config.nLayers; l++) {
    for (const name of LINEAR_NAMES) {
      const w = linears(l, name);
      bytes += weightBytes(w).total;
      n += w.dense.rows * w.dense.cols;
    }
  }
  return (8 * bytes) / n;
}

/**
 * The rows of {@linkcode benchDecodeFormats} as a markdown table.
 * @param rows the rows
 */
export function decodeFormatsTable(rows: DecodeFormatRow[]): string {
  const head = ["format", "bits", "avg bits", "stored bits", "tokens/s", "ppl", "text"];
  const lines = rows.map((r) => [
    r.format,
    String(r.bits),
    r.avgBits.toFixed(3),
    r.storedBits.toFixed(3),
    r.tokensPerSecond.toFixed(1),
    r.ppl === null ? "-" : r.ppl.toFixed(3),
    JSON.stringify(r.text).replaceAll("|", "\\|"),
  ]);
  return markdownTable(head, lines);
}
