/**
 * Decode benchmark with the real quantizers: stories260K is quantized by
 * eval/pipeline.ts's `quantizeModel` (RTN, SqueezeLLM dense-only and
 * Dense-and-Sparse) and decoded token by token on the GPU with every linear
 * in its packed format, next to fp32 and fp16. Per format: tokens per second
 * of greedy decoding (all steps in one submit), the perplexity through the
 * kernels on TinyStories windows ({@linkcode gpuPerplexity}), and the greedy
 * text from BOS so a reader sees the quality.
 *
 * On a software adapter (llvmpipe) the speeds are CPU speeds; the table says
 * which adapter measured them.
 *
 * The timing primitives are here too: {@linkcode timeGreedy} (one decoder),
 * {@linkcode benchDecode} (several linear sources, e.g. the seeded formats
 * of {@linkcode syntheticSources}).
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
import type { CalibSource, QuantSpec } from "../../quant/methods.ts";
import { defaultSpec, variantName } from "../../quant/methods.ts";
import { type QuantContext, quantizeModel } from "../pipeline.ts";
import type { Gpu, GpuInfo } from "../../kernels/device.ts";
import { adapterLabel, getGpu } from "../../kernels/device.ts";
import type { GpuDecoderOptions, LinearSource } from "../../kernels/decode.ts";
import { GpuDecoder, quantizedSource } from "../../kernels/decode.ts";
import { gpuPerplexity } from "../gpu_perplexity.ts";
import type { SyntheticSpec } from "./synthetic.ts";
import { syntheticLinear } from "./synthetic.ts";
import type { LinearWeight, SizeReport } from "../../quant/format.ts";
import { f16Tensor, f32Tensor, sizeOf } from "../../quant/format.ts";
import { sumSizes } from "../../quant/size.ts";
import { markdownTable } from "../../reports/markdown.ts";

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
  /** Cache dir of the Fisher pass. @default quantizeModel's (datasets/datadir.ts resolveCacheDir()) */
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
  /** Information bits per linear weight, quant/format.ts's `sizeOf` (32 / 16 for f32 / f16). */
  avgInfoBits: number;
  /** Stored bits per linear weight, what the kernels read (every part, padding and int32 CSR indices included). */
  avgStoredBits: number;
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
    `adapter: ${adapterLabel(gpu.info)}`,
  );
  const rows: DecodeFormatRow[] = [];
  for (const format of formats) {
    const spec = decodeFormatSpec(format, o.fisherSamples, o.calib);
    let model = weights, linears: LinearSource, bits: number;
    let quantizeSeconds = 0, sparseNnz = 0;
    if (spec === null) {
      bits = format === "f32" ? 32 : 16;
      linears = plainSource(weights, format === "f32" ? "f32" : "f16");
    } else {
      const q = await quantizeModel(weights, spec, ctx);
      if (variantName(q.spec) !== format) {
        throw new Error(`benchDecodeFormats(): ${format} quantized as ${variantName(q.spec)}`);
      }
      quantizeSeconds = q.seconds;
      bits = spec.bits;
      model = q.weights; // norms and embeddings as the quantizer left them
      linears = quantizedSource(q.linears);
      for (const w of q.linears.values()) sparseNnz += w.sparse?.rowPtr[w.sparse.rows] ?? 0;
    }
    const { avgInfoBits, avgStoredBits } = sourceSize(weights, linears);
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
        avgInfoBits,
        avgStoredBits,
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

/** The size of every linear of every block, summed (quant/size.ts's `sumSizes`). */
function sourceSize(weights: LlamaWeights, linears: LinearSource): SizeReport {
  const reports: SizeReport[] = [];
  for (let l = 0; l < weights.config.nLayers; l++) {
    for (const name of LINEAR_NAMES) reports.push(sizeOf(linears(l, name)));
  }
  return sumSizes(reports);
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
    r.avgInfoBits.toFixed(3),
    r.avgStoredBits.toFixed(3),
    r.tokensPerSecond.toFixed(1),
    r.ppl === null ? "-" : r.ppl.toFixed(3),
    JSON.stringify(r.text).replaceAll("|", "\\|"),
  ]);
  return markdownTable(head, lines);
}

/** One row of {@linkcode benchDecode}. */
export interface DecodeBenchRow {
  /** Format label, e.g. "lut+sparse". */
  format: string;
  bits: number;
  tokens: number;
  seconds: number;
  tokensPerSec: number;
  /** The greedy tokens (BOS excluded), for a quick look at the text. */
  generated: number[];
}

/**
 * Tokens per second of greedy decoding from BOS (token 1) for each weight
 * source, all steps in one submit (one warm-up step first, which compiles
 * the pipelines).
 *
 * @param gpu the device
 * @param weights the model
 * @param sources label, bits and linear source of each format to time
 * @param tokens positions to decode per format @default 64
 * @param opts decoder options
 */
export async function benchDecode(
  gpu: Gpu,
  weights: LlamaWeights,
  sources: { format: string; bits: number; linears: LinearSource }[],
  tokens = 64,
  opts: GpuDecoderOptions = {},
): Promise<DecodeBenchRow[]> {
  const rows: DecodeBenchRow[] = [];
  for (const s of sources) {
    const dec = await GpuDecoder.create(gpu, weights, s.linears, opts);
    try {
      rows.push({ format: s.format, bits: s.bits, ...await timeGreedy(dec, tokens) });
    } finally {
      dec.release();
    }
  }
  return rows;
}

/**
 * Times greedy decoding from BOS (token 1): one untimed step first (it
 * compiles the pipelines), then `runs` times `tokens` steps in one submit;
 * the median run counts.
 *
 * @param dec the decoder (left at position n)
 * @param tokens steps to time (capped at max_seq_len)
 * @param runs timed runs @default 1
 * @returns steps, median seconds, tokens per second and the tokens chosen (BOS excluded)
 */
export async function timeGreedy(
  dec: GpuDecoder,
  tokens: number,
  runs = 1,
): Promise<Omit<DecodeBenchRow, "format" | "bits">> {
  if (!(Number.isInteger(runs) && runs >= 1)) {
    throw new RangeError(`timeGreedy(): runs must be a positive integer, got ${runs}`);
  }
  const n = Math.min(tokens, dec.config.maxSeqLen);
  dec.reset();
  await dec.generate(1, 1);
  const times: number[] = [];
  let generated: number[] = [];
  for (let i = 0; i < runs; i++) {
    dec.reset();
    const t0 = performance.now();
    generated = await dec.generate(1, n);
    times.push((performance.now() - t0) / 1000);
  }
  const seconds = times.sort((a, b) => a - b)[Math.floor(runs / 2)];
  return { tokens: n, seconds, tokensPerSec: n / seconds, generated };
}

/**
 * Linear sources for {@linkcode benchDecode} built from the model's own fp32
 * weights with the fast builders of eval/bench/synthetic.ts, one per spec.
 * @param weights the model
 * @param specs formats to build
 * @returns label, bits and source of each spec (outliers add "+sparse" to the label)
 */
export function syntheticSources(
  weights: LlamaWeights,
  specs: SyntheticSpec[],
): { format: string; bits: number; linears: LinearSource }[] {
  return specs.map((spec) => {
    const cache = new Map<string, LinearWeight>();
    const linears: LinearSource = (l, name) => {
      const key = `${l}.${name}`;
      let w = cache.get(key);
      if (!w) {
        const [rows, cols] = linearShape(weights.config, name);
        w = syntheticLinear(weights.layers[l][name], rows, cols, spec);
        cache.set(key, w);
      }
      return w;
    };
    const bits = spec.format === "f32" ? 32 : spec.format === "f16" ? 16 : spec.bits ?? 4;
    return { format: spec.format + (spec.outliers ? "+sparse" : ""), bits, linears };
  });
}
