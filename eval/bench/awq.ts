/**
 * Speed of AWQ's search on one stories260K block: feature collection, the
 * scale search of each group (20 ratios, each re-running the inspected
 * module on every calibration window), the clip search of each linear, and
 * the final quantization. Calibration windows are seeded random tokens: the
 * work does not depend on their values.
 *
 * Run: `deno run -A eval/bench/awq.ts CHECKPOINT [--small] [--windows N]` (or
 * through the CLI's `bench quant`). Each scale search also prints its
 * arithmetic (quant/awq.ts `searchWork` × nGrid ratios) and the multiply-adds
 * per second it ran at.
 *
 * Memory ({@linkcode benchAwqMemory}): `deno run -A eval/bench/awq.ts
 * --memory` quantizes one block of a seeded synthetic model as wide as
 * `--dim` (default 256, hidden 2.5×) on run_awq's calibration size (69
 * windows of 512 tokens, 35,328 tokens) and prints this process's peak
 * resident memory (VmHWM) next to the feature bytes of the largest stage of
 * quant/awq.ts's collection and of the whole block's features (what a
 * single collection pass holds). A fresh process per run: VmHWM is the
 * process's.
 *
 * @module
 */
import { loadCheckpoint } from "../../model/checkpoint.ts";
import {
  LINEAR_NAMES,
  type LinearName,
  linearShape,
  type LlamaWeights,
} from "../../model/config.ts";
import { RunState } from "../../model/forward.ts";
import { randomWeights, randomWindows, tinyConfig } from "../../model/random.ts";
import {
  applyClip,
  applyScale,
  awqQuantizeTensor,
  AwqSequential,
  type BlockFeatures,
  CLIP_LINEARS,
  collectBlockFeatures,
  FEATURE_STAGES,
  sampleTokens,
  scaleGroups,
  searchClip,
  searchGroupScale,
  type SearchWork,
  searchWork,
} from "../../quant/awq.ts";
import { DEFAULTS } from "../../quant/spec.ts";
import { embedWindows, since } from "../../quant/sequential.ts";
import { peakRssBytes } from "../cli/quantize_file.ts";

/**
 * The input features a clipped linear (one of `CLIP_LINEARS`) is searched on: wo's and w2's
 * own inputs, the attention input for wv, the FFN input for w1 and w3.
 *
 * @param f the block's collected features
 * @param name a linear of `CLIP_LINEARS`
 * @returns the features, `[N, cols]`
 */
export function clipInput(f: BlockFeatures, name: LinearName): Float32Array {
  return name === "wo" ? f.woIn : name === "w2" ? f.w2In : name === "wv" ? f.attnIn : f.ffnIn;
}

/** Options of {@linkcode benchAwq}. */
export interface BenchAwqOptions {
  /** Smoke run: 4 windows of 128 tokens. @default false */
  small?: boolean;
  /** Calibration windows. @default 16 (small: 4) */
  windows?: number;
  /** Tokens per window. @default 512 (small: 128) */
  seqlen?: number;
  /** Bits per weight. @default 3 */
  bits?: number;
  /** Group size; undefined = one group per row. */
  groupSize?: number;
  /** Block to time. @default 0 */
  layer?: number;
  /** The model (the CLI passes the one `--model` resolved). */
  weights: LlamaWeights;
  /** Seed of the random tokens. @default 0 */
  seed?: number;
  /** Where lines go. @default console.log */
  log?: (line: string) => void;
}

/** Seconds of one step of the block's AWQ. */
export interface AwqStepTiming {
  step: string;
  seconds: number;
  /**
   * A scale search's arithmetic over its nGrid ratios (quant/awq.ts
   * `searchWork` × nGrid): multiply-adds and exponentials.
   */
  work?: SearchWork;
}

/** Everything {@linkcode benchAwq} measured. */
export interface BenchAwqResult {
  windows: number;
  seqlen: number;
  bits: number;
  groupSize: number | null;
  layer: number;
  /** Collect, each scale group, each clipped linear, quantize; in order. */
  steps: AwqStepTiming[];
  scaleSeconds: number;
  clipSeconds: number;
  /** Wall time of the whole block. */
  blockSeconds: number;
  /** Calibration tokens per second through the whole block's AWQ. */
  tokensPerSecond: number;
  /** blockSeconds × nLayers: the model's AWQ time at this calibration size. */
  modelSecondsEstimate: number;
}

/**
 * Times AWQ's per-block steps on one block of stories260K.
 *
 * @param opts sizes, bits, group size, model
 * @returns per-step seconds and totals (also logged, one line each)
 * @example
 * ```ts
 * const weights = await loadCheckpoint("stories260K.bin");
 * const r = benchAwq({ small: true, weights });
 * r.blockSeconds;
 * ```
 */
export function benchAwq(opts: BenchAwqOptions): BenchAwqResult {
  const log = opts.log ?? console.log;
  const small = opts.small ?? false;
  const nWin = opts.windows ?? (small ? 4 : 16), seqlen = opts.seqlen ?? (small ? 128 : 512);
  const bits = opts.bits ?? 3, layer = opts.layer ?? 0;
  const w = opts.weights;
  const c = w.config;
  if (!(layer >= 0 && layer < c.nLayers)) {
    throw new RangeError(`benchAwq(): layer must be in 0..${c.nLayers - 1}, got ${layer}`);
  }
  const windows = randomWindows(nWin, seqlen, c.vocabSize, opts.seed ?? 0);
  const s = new RunState(c, seqlen);
  const hidden = embedWindows(w, windows);
  const steps: AwqStepTiming[] = [];
  const step = <T>(name: string, fn: () => T, work?: SearchWork): T => {
    const t = performance.now();
    const r = fn();
    steps.push({ step: name, seconds: since(t), ...(work && { work }) });
    return r;
  };
  const t0 = performance.now();
  const orig = w.layers[layer];
  const f = step("collect features", () => collectBlockFeatures(c, orig, layer, hidden, s));
  const lw = { ...orig, attnNorm: orig.attnNorm.slice(), ffnNorm: orig.ffnNorm.slice() };
  for (const name of LINEAR_NAMES) lw[name] = orig[name].slice();
  const groups = scaleGroups(c);
  const nGrid = DEFAULTS.awq.nGrid;
  const found = groups.map((g) => {
    const one = searchWork(c, g.prevOp, f.lengths);
    return step(
      `scale ${g.linears.join(",")}`,
      () => searchGroupScale(c, orig, layer, g, f, s, { bits, groupSize: opts.groupSize, nGrid }),
      { macs: one.macs * nGrid, exps: one.exps * nGrid },
    );
  });
  for (const r of found) applyScale(c, lw, r, f);
  for (const name of CLIP_LINEARS) {
    const [rows, cols] = linearShape(c, name);
    const input = clipInput(f, name);
    step(`clip ${name}`, () => {
      const { x, n } = sampleTokens(input, f.N, cols, 512);
      const grid = { bits, groupSize: opts.groupSize ?? cols };
      applyClip(lw[name], rows, cols, searchClip(lw[name], rows, cols, x, n, grid));
    });
  }
  step("quantize", () => {
    for (const name of LINEAR_NAMES) {
      const [rows, cols] = linearShape(c, name);
      awqQuantizeTensor(lw[name], rows, cols, { bits, groupSize: opts.groupSize ?? cols });
    }
  });
  const blockSeconds = since(t0);
  const sum = (p: string) =>
    steps.filter((x) => x.step.startsWith(p)).reduce((a, x) => a + x.seconds, 0);
  const result: BenchAwqResult = {
    windows: nWin,
    seqlen,
    bits,
    groupSize: opts.groupSize ?? null,
    layer,
    steps,
    scaleSeconds: sum("scale"),
    clipSeconds: sum("clip"),
    blockSeconds,
    tokensPerSecond: (nWin * seqlen) / blockSeconds,
    modelSecondsEstimate: blockSeconds * c.nLayers,
  };
  log(
    `AWQ on block ${layer} of a ${c.dim}-dim model, ${nWin} windows × ${seqlen} tokens, ` +
      `${bits} bits, ${opts.groupSize ? `group ${opts.groupSize}` : "per row"}:`,
  );
  for (const x of steps) {
    const work = x.work
      ? `  ${(x.work.macs / 1e9).toFixed(2)} G multiply-adds, ${
        (x.work.exps / 1e6).toFixed(1)
      } M exp: ${(x.work.macs / 1e9 / x.seconds).toFixed(1)} G multiply-adds/s`
      : "";
    log(`  ${x.step.padEnd(18)} ${x.seconds.toFixed(3)} s${work}`);
  }
  log(
    `  block ${blockSeconds.toFixed(2)} s (${
      result.tokensPerSecond.toFixed(0)
    } calibration tokens/s); ` +
      `whole model ≈ ${result.modelSecondsEstimate.toFixed(1)} s`,
  );
  return result;
}

/** What {@linkcode benchAwqMemory} measured. */
export interface BenchAwqMemoryResult {
  dim: number;
  hiddenDim: number;
  /** Calibration tokens. */
  tokens: number;
  /** Resident memory before the block's AWQ (model, block inputs), bytes. */
  rssBeforeBytes: number;
  /** Peak resident memory of the process (VmHWM), bytes; null off Linux. */
  peakRssBytes: number | null;
  /** Bytes of the largest stage's features (quant/awq.ts FEATURE_STAGES). */
  stageFeatureBytes: number;
  /** Bytes of every feature of the block: what one collection pass holds. */
  blockFeatureBytes: number;
  seconds: number;
}

/**
 * Peak memory of AWQ on one block of a seeded synthetic model (one layer,
 * heads of 64, hidden 2.5 × dim) on run_awq's calibration size, on this
 * thread (no worker heaps), with 2 scale ratios (the search's scratch does
 * not grow with the ratios).
 *
 * @param opts width, windows and their length
 * @returns the figures (also logged)
 */
export async function benchAwqMemory(
  opts: { dim?: number; windows?: number; seqlen?: number; log?: (line: string) => void } = {},
): Promise<BenchAwqMemoryResult> {
  const log = opts.log ?? console.log;
  const dim = opts.dim ?? 256, nWin = opts.windows ?? 69, seqlen = opts.seqlen ?? 512;
  if (!Number.isInteger(dim) || dim < 64 || dim % 64 !== 0) {
    throw new RangeError(`benchAwqMemory(): --dim must be a multiple of 64, got ${dim}`);
  }
  const hiddenDim = Math.round((dim * 2.5) / 64) * 64;
  const c = tinyConfig({
    dim,
    hiddenDim,
    nLayers: 1,
    nHeads: dim / 64,
    nKvHeads: dim / 64,
    vocabSize: 256,
    maxSeqLen: seqlen,
  });
  const w = randomWeights(c, 1);
  const windows = randomWindows(nWin, seqlen, c.vocabSize, 2);
  const x = embedWindows(w, windows);
  const rssBeforeBytes = Deno.memoryUsage().rss;
  const t = performance.now();
  // featureBudget 0: stage by stage, as a block past the budget (LLaMA-7B's) runs.
  const awq = new AwqSequential(c, windows, { bits: 3, nGrid: 2, workers: 0, featureBudget: 0 });
  await awq.quantizeBlock(0, w.layers[0], x);
  const seconds = since(t);
  const N = nWin * seqlen;
  const width = (name: string) => name === "w2In" ? hiddenDim : dim;
  const stageFeatureBytes = 4 * N *
    Math.max(...FEATURE_STAGES.map((st) => st.want.reduce((a, name) => a + width(name), 0)));
  const blockFeatureBytes = 4 * N * (5 * dim + hiddenDim);
  const r: BenchAwqMemoryResult = {
    dim,
    hiddenDim,
    tokens: N,
    rssBeforeBytes,
    peakRssBytes: peakRssBytes(),
    stageFeatureBytes,
    blockFeatureBytes,
    seconds,
  };
  const mib = (b: number | null) => b === null ? "n/a" : `${(b / 2 ** 20).toFixed(0)} MiB`;
  log(
    `AWQ memory, one block of dim ${dim}, hidden ${hiddenDim}, ${N} tokens: peak RSS ` +
      `${mib(r.peakRssBytes)} (before the block ${mib(rssBeforeBytes)}); features of the ` +
      `largest stage ${mib(stageFeatureBytes)}, of the whole block ${mib(blockFeatureBytes)}; ` +
      `${seconds.toFixed(1)} s`,
  );
  return r;
}

if (import.meta.main && Deno.args.includes("--memory")) {
  const i = Deno.args.indexOf("--dim");
  await benchAwqMemory({ dim: i >= 0 ? Number(Deno.args[i + 1]) : undefined });
} else if (import.meta.main) {
  const path = Deno.args.find((a) => !a.startsWith("--"));
  if (!path) {
    console.error(
      "usage: deno run -A eval/bench/awq.ts CHECKPOINT [--small] [--windows N] (or: deno task bench quant)",
    );
    Deno.exit(2);
  }
  const w = Deno.args.indexOf("--windows");
  const windows = w >= 0 ? Number(Deno.args[w + 1]) : undefined;
  if (windows !== undefined && !(Number.isInteger(windows) && windows > 0)) {
    console.error(`--windows: expected a positive integer, got ${Deno.args[w + 1]}`);
    Deno.exit(2);
  }
  benchAwq({ small: Deno.args.includes("--small"), windows, weights: await loadCheckpoint(path) });
}
