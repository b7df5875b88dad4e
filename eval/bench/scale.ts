/**
 * `deno task bench scale`: quantizing a real-sized checkpoint in bounded
 * memory. A seeded synthetic checkpoint of the TinyLlama-1.1B shape (fp16
 * safetensors, ≈ 2.2 GB; `--shape llama7b`: LLaMA-7B, ≈ 13.5 GB) and a
 * synthetic Fisher checkpoint in the layout of SqueezeLLM's gradient script
 * (kssteven418/SqueezeLLM-gradients: the squared gradients of the seven
 * linears under the model's tensor names) are written once into the cache
 * dir, one tensor at a time (never the whole model in memory), then
 * `deno task quantize` runs on them as a child process, so that the peak
 * resident memory (VmHWM) it reports is its own:
 *
 * - RTN 4-bit, groups of 128 (target: peak below 1.6 GB for TinyLlama,
 *   whose fp32 size is 4.4 GB);
 * - SqueezeLLM 3-bit, dense only, its Fisher read with `--fisher`;
 * - GPTQ 3-bit (true-sequential, per-row groups) and AWQ 3-bit (groups of
 *   128) on a small calibration: {@linkcode GPTQ_SCALE_WINDOWS} C4 windows
 *   of at most {@linkcode GPTQ_SCALE_SEQLEN} tokens, where GPTQ's default,
 *   128 × 2048, would hold 128 · 2048 · dim · 4 bytes of activations (2.1 GB
 *   at TinyLlama's width) and take hours on two cores. The text is tokenized
 *   by stories260K's tokenizer padded to the model's vocabulary (a
 *   tokenizer.bin written beside the checkpoint): the synthetic model has no
 *   tokenizer of its own, and the methods' work does not depend on which ids
 *   they see.
 *
 * The weights are N(0, 0.02²) (norms N(1, 0.02²)), the Fisher values the
 * squares of N(0, 1) draws: realistic magnitudes for timing, no meaning. The
 * draws are table lookups (eval/bench/synthetic.ts `fillF16FromTable`: the
 * normal discretized to 2¹⁶ fp16 values, one seeded 16-bit index per value),
 * so writing runs at about the disk's speed.
 *
 * @module
 */
import { join } from "node:path";
import { type LlamaConfig, parameterCount } from "../../model/config.ts";
import { hfConfigText, hfTensorShapes } from "../../model/hf.ts";
import { writeSafetensors } from "../../model/safetensors.ts";
import { isFile } from "../../model/tensor_file.ts";
import { fillF16FromTable, normalF16Table } from "./synthetic.ts";
import { requireDataDir, requireDataFiles } from "../../datasets/datadir.ts";

/** The shapes this benchmark writes (HF config values of each model). */
export const SCALE_SHAPES: Readonly<Record<"tinyllama" | "llama7b" | "tiny", LlamaConfig>> = {
  /** TinyLlama-1.1B (TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T). */
  tinyllama: {
    dim: 2048,
    hiddenDim: 5632,
    nLayers: 22,
    nHeads: 32,
    nKvHeads: 4,
    vocabSize: 32000,
    maxSeqLen: 2048,
    sharedClassifier: false,
    normEps: 1e-5,
    ropeTheta: 10000,
  },
  /** LLaMA-7B (huggyllama/llama-7b). */
  llama7b: {
    dim: 4096,
    hiddenDim: 11008,
    nLayers: 32,
    nHeads: 32,
    nKvHeads: 32,
    vocabSize: 32000,
    maxSeqLen: 2048,
    sharedClassifier: false,
    normEps: 1e-6,
    ropeTheta: 10000,
  },
  /** A few-MB model for the benchmark's own test (widths divisible by 128). */
  tiny: {
    dim: 128,
    hiddenDim: 256,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 2,
    vocabSize: 512, // stories260K's tokenizer's (GPTQ's calibration text is tokenized with it)
    maxSeqLen: 64,
    sharedClassifier: false,
    normEps: 1e-5,
    ropeTheta: 10000,
  },
};

/** A shape's name. */
export type ScaleShape = keyof typeof SCALE_SHAPES;

/** The seed of the synthetic weights and Fisher values. */
export const SCALE_SEED = 11;

/**
 * The version of the synthetic content, part of the cache folder's name: bump
 * it when {@linkcode writeSyntheticCheckpoint} writes other bytes for the same
 * seed, so that no checkpoint cached by an older version is reused (2: table
 * lookups instead of Box–Muller draws).
 */
export const SCALE_DATA_VERSION = 2;

/**
 * Writes a seeded synthetic fp16 Hugging Face checkpoint of `config`
 * (config.json + model.safetensors) into `dir`, one tensor at a time.
 *
 * @param dir the folder (created)
 * @param config the shape
 * @param what "model": every tensor, weights N(0, 0.02²), norms N(1, 0.02²);
 *   "fisher": the seven linears of each block, squares of N(0, 1) draws
 * @param seed seeds tensor i with seed · 100003 + i
 * @returns bytes of model.safetensors
 */
export function writeSyntheticCheckpoint(
  dir: string,
  config: LlamaConfig,
  what: "model" | "fisher",
  seed = SCALE_SEED,
): number {
  Deno.mkdirSync(dir, { recursive: true });
  const entries = hfTensorShapes(config, what === "fisher" ? "linears" : undefined)
    .map((t) => ({ ...t, dtype: "F16" }));
  const matrices = normalF16Table(what === "fisher" ? (z) => z * z : (z) => 0.02 * z);
  const norms = normalF16Table((z) => 1 + 0.02 * z); // RMSNorm weights sit near 1
  const bytes = writeSafetensors(join(dir, "model.safetensors"), entries, (e, i) => {
    const n = e.shape.reduce((p, d) => p * d, 1);
    const bits = fillF16FromTable(n, e.shape.length === 1 ? norms : matrices, seed * 100003 + i);
    return new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength);
  }, { format: "pt" });
  Deno.writeTextFileSync(join(dir, "config.json"), hfConfigText(config, "F16"));
  return bytes;
}

/** Options of {@linkcode benchScale}. */
export interface BenchScaleOptions {
  shape: ScaleShape;
  /** Where the synthetic checkpoints are kept (datasets/datadir.ts `resolveCacheDir()`). */
  cacheDir: string;
  /** Where the quantized files go (deleted after each run). */
  outDir: string;
  /** k-means workers of the SqueezeLLM run. */
  workers: number;
  /** The runs to make (the Fisher checkpoint is written only for SqueezeLLM). @default all */
  runs?: readonly ScaleRun[];
  /**
   * GPTQ: the data dir of its calibration text and of stories260K's
   * tokenizer (datasets/datadir.ts `requireDataDir`). @default $SQB_DATA_DIR, else ~/.cache/squeezebench
   */
  dataDir?: string;
  log?: (line: string) => void;
}

/** GPTQ's and AWQ's calibration windows in this benchmark (GPTQ's default: 128). */
export const GPTQ_SCALE_WINDOWS = 4;
/** Their calibration window length here, at most (GPTQ's default: 2048, the model's max_seq_len). */
export const GPTQ_SCALE_SEQLEN = 512;

/** The calibration options of the GPTQ and AWQ runs; `{…}` are filled in by {@linkcode benchScale}. */
const SMALL_CALIBRATION = [
  "--nsamples",
  String(GPTQ_SCALE_WINDOWS),
  "--calib-seqlen",
  "{calibSeqlen}",
  "--tokenizer",
  "{tokenizer}",
  "--data-dir",
  "{dataDir}",
] as const;

/** The quantizations timed; `{…}` are filled in by {@linkcode benchScale}. */
export const SCALE_RUNS = {
  "rtn.w4.g128": ["--method", "rtn", "--bits", "4", "--group", "128"],
  "squeezellm.w3": ["--method", "squeezellm", "--bits", "3", "--fisher", "{fisher}"],
  "gptq.w3": ["--method", "gptq", "--bits", "3", ...SMALL_CALIBRATION],
  "awq.w3": ["--method", "awq", "--bits", "3", ...SMALL_CALIBRATION],
} as const;

/** One of {@linkcode SCALE_RUNS}. */
export type ScaleRun = keyof typeof SCALE_RUNS;

/** One timed quantization. */
export interface ScaleFigure {
  run: ScaleRun;
  /** Wall time of the child process, start-up included. */
  wallSeconds: number;
  /** What `quantize` reports as its quantization time (reads and writes included). */
  quantizeSeconds: number;
  /** CPU time of the child (user + system, all threads): what wall time is on a quiet machine, × threads. */
  cpuSeconds: number;
  /** The child's VmHWM. */
  peakRssBytes: number;
  /** The quantized file's size. */
  fileBytes: number;
  avgBits: number;
}

/** What {@linkcode benchScale} measured. */
export interface ScaleResult {
  shape: ScaleShape;
  config: LlamaConfig;
  /** Size of the synthetic model.safetensors. */
  checkpointBytes: number;
  /** Its size in fp32: what a whole-model load would hold. */
  fp32Bytes: number;
  /** Seconds spent writing the synthetic checkpoints (0 when they were in the cache). */
  writeSeconds: number;
  figures: ScaleFigure[];
}

/**
 * Writes the synthetic checkpoints (once) and times `deno task quantize` on them.
 *
 * @param opts shape, cache and output folders, workers
 * @returns the figures
 * @throws {Error} when a quantize run fails (its stderr is in the message)
 */
export async function benchScale(opts: BenchScaleOptions): Promise<ScaleResult> {
  const log = opts.log ?? console.log;
  const config = SCALE_SHAPES[opts.shape];
  const root = join(
    opts.cacheDir,
    "bench-scale",
    `${opts.shape}-seed${SCALE_SEED}-v${SCALE_DATA_VERSION}`,
  );
  const modelDir = join(root, "model"), fisherDir = join(root, "fisher");
  const runs = opts.runs ?? (Object.keys(SCALE_RUNS) as ScaleRun[]);
  const needFisher = runs.some((r) => (SCALE_RUNS[r] as readonly string[]).includes("{fisher}"));
  let writeSeconds = 0;
  const checkpoints: [string, "model" | "fisher"][] = [[modelDir, "model"]];
  if (needFisher) checkpoints.push([fisherDir, "fisher"]);
  for (const [dir, what] of checkpoints) {
    const done = join(dir, "complete"); // written last: a cut-off write is redone
    if (!(await isFile(done))) {
      log(`writing the synthetic ${what} checkpoint ${dir} …`);
      const t0 = performance.now();
      const bytes = writeSyntheticCheckpoint(dir, config, what);
      Deno.writeTextFileSync(done, `${bytes}\n`);
      const seconds = (performance.now() - t0) / 1000;
      log(`  ${size(bytes)} in ${seconds.toFixed(1)} s`);
      writeSeconds += seconds;
    }
  }
  const fill: Record<string, string> = {
    "{fisher}": fisherDir,
    "{calibSeqlen}": String(Math.min(GPTQ_SCALE_SEQLEN, config.maxSeqLen)),
  };
  if (runs.some((r) => (SCALE_RUNS[r] as readonly string[]).includes("{tokenizer}"))) {
    const dataDir = requireDataDir(opts.dataDir);
    const [tok512] = await requireDataFiles(dataDir, [
      { what: "stories260K tokenizer", candidates: ["stories260K/tok512.bin"] },
    ]);
    fill["{tokenizer}"] = join(root, `tokenizer-${config.vocabSize}.bin`);
    fill["{dataDir}"] = dataDir;
    Deno.writeFileSync(
      fill["{tokenizer}"],
      paddedTokenizer(Deno.readFileSync(tok512.path), config.vocabSize),
    );
  }
  const checkpointBytes = Deno.statSync(join(modelDir, "model.safetensors")).size;
  const params = parameterCount(config);
  log(
    `bench scale: ${opts.shape} (dim ${config.dim}, hidden ${config.hiddenDim}, ` +
      `${config.nLayers} layers, ${config.nHeads}/${config.nKvHeads} heads, vocab ` +
      `${config.vocabSize}), fp16 checkpoint ${size(checkpointBytes)}, fp32 ${size(4 * params)}; ` +
      `quantize as a child process:`,
  );
  const figures: ScaleFigure[] = [];
  for (const run of runs) {
    const out = join(opts.outDir, `scale-${opts.shape}.${run}.sqbq`);
    const args = SCALE_RUNS[run].map((a) => fill[a] ?? a);
    const t = performance.now();
    const child = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-q",
        "-A",
        new URL("../cli/main.ts", import.meta.url).pathname,
        "quantize",
        "--model",
        modelDir,
        ...args,
        "--workers",
        String(opts.workers),
        "--out",
        out,
        "--json",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const wallSeconds = (performance.now() - t) / 1000;
    const stdout = new TextDecoder().decode(child.stdout);
    if (!child.success) {
      throw new Error(
        `bench scale: quantize ${run} failed:\n${new TextDecoder().decode(child.stderr)}`,
      );
    }
    const r = JSON.parse(stdout.trim().split("\n").at(-1)!);
    Deno.removeSync(out);
    figures.push({
      run,
      wallSeconds,
      quantizeSeconds: r.seconds,
      cpuSeconds: r.cpuSeconds,
      peakRssBytes: r.peakRssBytes,
      fileBytes: r.bytes,
      avgBits: r.avgBits,
    });
    log(
      `  ${run.padEnd(14)} wall ${wallSeconds.toFixed(1).padStart(7)} s  cpu ${
        r.cpuSeconds.toFixed(1).padStart(7)
      } s  ` +
        `peak RSS ${(r.peakRssBytes / 1e9).toFixed(2)} GB  file ${
          (r.bytes / 1e9).toFixed(2)
        } GB  ` +
        `${r.avgBits.toFixed(3)} bits`,
    );
  }
  return {
    shape: opts.shape,
    config,
    checkpointBytes,
    fp32Bytes: 4 * params,
    writeSeconds,
    figures,
  };
}

/**
 * A llama2.c tokenizer.bin of exactly `vocabSize` tokens: those of `base`
 * (a tokenizer.bin), then tokens "<pad{i}>" with score −1e9 that no text
 * produces.
 *
 * @param base the bytes of a llama2.c tokenizer.bin (stories260K's tok512.bin)
 * @param vocabSize the token count wanted, at least base's
 * @returns the file's bytes
 * @throws {RangeError} when base has more tokens than vocabSize
 */
export function paddedTokenizer(base: Uint8Array, vocabSize: number): Uint8Array {
  const view = new DataView(base.buffer, base.byteOffset, base.byteLength);
  const records: Uint8Array[] = [];
  for (let pos = 4; pos < base.length;) {
    const end = pos + 8 + view.getInt32(pos + 4, true);
    records.push(base.subarray(pos, end));
    pos = end;
  }
  if (records.length > vocabSize) {
    throw new RangeError(
      `paddedTokenizer(): the base tokenizer has ${records.length} tokens, more than ${vocabSize}`,
    );
  }
  for (let id = records.length; id < vocabSize; id++) {
    const text = new TextEncoder().encode(`<pad${id}>`);
    const r = new Uint8Array(8 + text.length);
    const rv = new DataView(r.buffer);
    rv.setFloat32(0, -1e9, true);
    rv.setInt32(4, text.length, true);
    r.set(text, 8);
    records.push(r);
  }
  const maxLen = Math.max(view.getInt32(0, true), ...records.map((r) => r.length - 8));
  const out = new Uint8Array(4 + records.reduce((a, r) => a + r.length, 0));
  new DataView(out.buffer).setInt32(0, maxLen, true);
  let at = 4;
  for (const r of records) {
    out.set(r, at);
    at += r.length;
  }
  return out;
}

/** Bytes in GB (10⁹) at and above 1 GB, else MB (10⁶). */
const size = (bytes: number) =>
  bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(1)} MB`;
