/**
 * `deno task bench prefill`: tokens per second of a whole window through
 * the GPU prefill (kernels/prefill.ts: tiled matmuls in each linear's stored
 * format, tiled attention, loss on the GPU) against the token-by-token GPU
 * path (kernels/decode.ts's teacher-forced `forward`, the old GPU
 * perplexity) and the CPU forward (model/forward.ts, fp32, one thread), in
 * one run, for f16 and uniform / lut at 3 and 4 bits.
 *
 * Models: stories260K (its own weights; max_seq_len raised to the window
 * for T = 2048, which only tabulates more RoPE positions) and one
 * LLaMA-7B-shaped block (dim 4096, hidden 11008, 32 heads, seeded weights;
 * vocabulary 256 so that the classifier does not hide the block). Formats
 * are built by eval/bench/synthetic.ts (RTN uniform, groups of 128 on the
 * 7B block and one group per row on stories260K; quantile lookup tables).
 * The token-by-token path is timed on the first `decodeTokens` positions of
 * a window (its cost per token grows with the position, so at long windows
 * it is an upper bound on its speed). On a software adapter (llvmpipe) all
 * figures are CPU figures; the output names the adapter. Beside wall-clock
 * tokens/s, every path is also measured in tokens per CPU-second of this
 * process (Linux /proc/self/stat, every thread, llvmpipe's included): on a
 * shared machine the wall clock measures the neighbours, CPU time the work.
 *
 * @module
 */
import type { LinearName, LlamaConfig, LlamaWeights } from "../../model/config.ts";
import { linearShape } from "../../model/config.ts";
import { forward, RunState } from "../../model/forward.ts";
import { randomWeights, randomWindows } from "../../model/random.ts";
import type { Gpu, GpuInfo } from "../../kernels/device.ts";
import { adapterLabel } from "../../kernels/device.ts";
import type { LinearSource } from "../../kernels/decode.ts";
import { GpuDecoder } from "../../kernels/decode.ts";
import { GpuPrefill } from "../../kernels/prefill.ts";
import { defaultNativeF16, defaultTiling } from "../../kernels/matmul.ts";
import type { LinearWeight } from "../../quant/format.ts";
import { syntheticLinear, type SyntheticSpec } from "./synthetic.ts";
import { markdownTable } from "../../reports/markdown.ts";

/** The formats timed. */
export const PREFILL_FORMATS = ["f16", "uniform3", "uniform4", "lut3", "lut4"] as const;
/** One of {@linkcode PREFILL_FORMATS}. */
export type PrefillFormat = typeof PREFILL_FORMATS[number];

/** The LLaMA-7B block shape (one layer, small vocabulary). */
export const LLAMA7B_BLOCK: LlamaConfig = {
  dim: 4096,
  hiddenDim: 11008,
  nLayers: 1,
  nHeads: 32,
  nKvHeads: 32,
  vocabSize: 256,
  maxSeqLen: 2048,
  sharedClassifier: false,
  normEps: 1e-5,
  ropeTheta: 10000,
};

/** Options of {@linkcode benchPrefill}. */
export interface BenchPrefillOptions {
  /** stories260K's weights (loaded by the caller), or absent to skip it. */
  stories260K?: LlamaWeights;
  /** Time the LLaMA-7B-shaped block. @default true */
  llama7bBlock?: boolean;
  /** Window lengths. @default [512, 2048] */
  seqlens?: number[];
  /** Formats. @default every {@linkcode PREFILL_FORMATS} */
  formats?: PrefillFormat[];
  /** Timed windows per prefill measurement. @default 2 */
  windows?: number;
  /** Positions timed on the token-by-token path. @default 64 */
  decodeTokens?: number;
  /** The device. */
  gpu: Gpu;
  /** Progress and the table. @default console.log */
  log?: (line: string) => void;
}

/** CPU seconds of this process so far (user + system, every thread), or NaN off Linux. */
function cpuSeconds(): number {
  if (Deno.build.os !== "linux") return NaN; // the CPU-time columns read NaN elsewhere
  const f = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

/** Wall and CPU seconds of `f`. */
async function timed(f: () => Promise<unknown> | unknown): Promise<{ wall: number; cpu: number }> {
  const c0 = cpuSeconds(), t0 = performance.now();
  await f();
  return { wall: (performance.now() - t0) / 1000, cpu: cpuSeconds() - c0 };
}

/** One measurement. */
export interface PrefillBenchRow {
  model: string;
  seqlen: number;
  format: PrefillFormat;
  /** Prefill tokens/s (windows · T / seconds, after one untimed window). */
  prefillTokensPerSecond: number;
  /** Token-by-token GPU tokens/s over the first `decodeTokens` positions. */
  decodeTokensPerSecond: number;
  /** CPU forward tokens/s (fp32, one thread; the same for every format). */
  cpuTokensPerSecond: number;
  /** prefill / token-by-token. */
  speedupVsDecode: number;
  /** The same three in tokens per CPU-second of this process. */
  prefillTokensPerCpuSecond: number;
  decodeTokensPerCpuSecond: number;
  cpuForwardTokensPerCpuSecond: number;
  /** prefill / token-by-token in tokens per CPU-second. */
  speedupVsDecodeCpu: number;
  /** Multiply-adds per second of the prefill's linears and classifier. */
  prefillGmacs: number;
}

/** Result of {@linkcode benchPrefill}. */
export interface BenchPrefillResult {
  adapter: GpuInfo;
  rows: PrefillBenchRow[];
}

function spec(format: PrefillFormat, group: number | undefined): SyntheticSpec {
  if (format === "f16") return { format: "f16" };
  const bits = Number(format.at(-1));
  return format.startsWith("lut")
    ? { format: "lut", bits }
    : { format: "uniform", bits, groupSize: group };
}

/** The linears of `weights` in `format`, built once per linear. */
function formatSource(
  weights: LlamaWeights,
  format: PrefillFormat,
  group: number | undefined,
): LinearSource {
  const cache = new Map<string, LinearWeight>();
  return (l: number, name: LinearName) => {
    const key = `${l}.${name}`;
    let w = cache.get(key);
    if (!w) {
      const [rows, cols] = linearShape(weights.config, name);
      w = syntheticLinear(weights.layers[l][name], rows, cols, spec(format, group));
      cache.set(key, w);
    }
    return w;
  };
}

/**
 * Times prefill, token-by-token GPU decoding and the CPU forward for every
 * model × window length × format, and prints a table.
 *
 * @param opts models, window lengths, formats, device
 * @returns the adapter and one row per measurement
 * @example
 * ```ts
 * const r = await benchPrefill({ gpu, stories260K: w, llama7bBlock: false, seqlens: [512], formats: ["f16"] });
 * r.rows[0].speedupVsDecode;
 * ```
 */
export async function benchPrefill(opts: BenchPrefillOptions): Promise<BenchPrefillResult> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const seqlens = opts.seqlens ?? [512, 2048];
  const formats = opts.formats ?? [...PREFILL_FORMATS];
  for (const f of formats) {
    if (!(PREFILL_FORMATS as readonly string[]).includes(f)) {
      throw new RangeError(
        `--formats: expected some of ${PREFILL_FORMATS.join(", ")}; found "${f}"`,
      );
    }
  }
  const nWin = opts.windows ?? 2;
  const decodeTokens = opts.decodeTokens ?? 64;
  const { gpu } = opts;
  log(
    `adapter: ${adapterLabel(gpu.info)}; ` +
      `prefill tiling "${defaultTiling(gpu)}", f16 weights read ${
        defaultNativeF16(gpu) ? "as array<f16> (shader-f16)" : "with unpack2x16float"
      }`,
  );
  const models: { name: string; weights: LlamaWeights; group?: number }[] = [];
  if (opts.stories260K) models.push({ name: "stories260K", weights: opts.stories260K });
  if (opts.llama7bBlock ?? true) {
    models.push({ name: "llama7b-block", weights: randomWeights(LLAMA7B_BLOCK, 7), group: 128 });
  }
  const rows: PrefillBenchRow[] = [];
  for (const m of models) {
    const sources = new Map(formats.map((f) => [f, formatSource(m.weights, f, m.group)]));
    for (const T of seqlens) {
      const config = { ...m.weights.config, maxSeqLen: Math.max(T, m.weights.config.maxSeqLen) };
      const weights: LlamaWeights = { ...m.weights, config };
      const wins = randomWindows(nWin + 1, T, config.vocabSize, T);
      // CPU forward: fp32, one window.
      const state = new RunState(config, T);
      const cf = await timed(() => forward(weights, wins[0], { state }));
      const cpu = T / cf.wall, cpuC = T / cf.cpu;
      log(`${m.name} T=${T}: CPU forward ${cpu.toFixed(0)} tokens/s`);
      for (const format of formats) {
        const source = sources.get(format)!;
        const pf = await GpuPrefill.create(gpu, weights, source, { seqlen: T });
        let p: { wall: number; cpu: number }, macs: number;
        try {
          await pf.windowLosses([wins[0]]); // compiles, warms
          p = await timed(() => pf.windowLosses(wins.slice(1)));
          macs = nWin * pf.macsPerWindow;
        } finally {
          pf.release();
        }
        const prefill = (nWin * T) / p.wall, gmacs = macs / p.wall / 1e9;
        const dec = await GpuDecoder.create(gpu, weights, source);
        let d: { wall: number; cpu: number };
        const n = Math.min(decodeTokens, T);
        try {
          await dec.forward(wins[0].subarray(0, 1));
          dec.reset();
          d = await timed(() => dec.forward(wins[0].subarray(0, n)));
        } finally {
          dec.release();
        }
        const decode = n / d.wall;
        const row: PrefillBenchRow = {
          model: m.name,
          seqlen: T,
          format,
          prefillTokensPerSecond: prefill,
          decodeTokensPerSecond: decode,
          cpuTokensPerSecond: cpu,
          speedupVsDecode: prefill / decode,
          prefillGmacs: gmacs,
          prefillTokensPerCpuSecond: (nWin * T) / p.cpu,
          decodeTokensPerCpuSecond: n / d.cpu,
          cpuForwardTokensPerCpuSecond: cpuC,
          speedupVsDecodeCpu: (nWin * T) / p.cpu / (n / d.cpu),
        };
        rows.push(row);
        log(
          `${m.name} T=${T} ${format}: prefill ${prefill.toFixed(0)} tok/s ` +
            `(${gmacs.toFixed(2)} GMAC/s), token-by-token ${decode.toFixed(1)} tok/s, ` +
            `×${row.speedupVsDecode.toFixed(1)} (per CPU-second: ×${
              row.speedupVsDecodeCpu.toFixed(1)
            })`,
        );
      }
      gpu.pool.trim();
    }
  }
  log(prefillTable(rows));
  return { adapter: gpu.info, rows };
}

/**
 * The rows of {@linkcode benchPrefill} as a markdown table.
 * @param rows the rows
 */
export function prefillTable(rows: PrefillBenchRow[]): string {
  return markdownTable(
    [
      "model",
      "T",
      "format",
      "prefill tok/s",
      "GMAC/s",
      "token-by-token tok/s",
      "prefill ÷ token",
      "CPU fp32 tok/s",
      "prefill tok/CPU-s",
      "token tok/CPU-s",
      "÷ (CPU-s)",
      "CPU fp32 tok/CPU-s",
    ],
    rows.map((r) => [
      r.model,
      String(r.seqlen),
      r.format,
      r.prefillTokensPerSecond.toFixed(0),
      r.prefillGmacs.toFixed(2),
      r.decodeTokensPerSecond.toFixed(1),
      r.speedupVsDecode.toFixed(1),
      r.cpuTokensPerSecond.toFixed(0),
      r.prefillTokensPerCpuSecond.toFixed(0),
      r.decodeTokensPerCpuSecond.toFixed(1),
      r.speedupVsDecodeCpu.toFixed(1),
      r.cpuForwardTokensPerCpuSecond.toFixed(0),
    ]),
  );
}
