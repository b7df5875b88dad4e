/**
 * Projected whole-model quantization time of RTN, GPTQ, AWQ and SqueezeLLM
 * (3 bits by default) on LLaMA-7B shapes: one seeded LLaMA-7B-shaped block
 * (dim 4096, hidden 11008, 32 heads; model/random.ts randomWeights) is
 * quantized piece by piece, each piece timed, and the times are multiplied
 * out to the method's default calibration and to the model's 32 blocks.
 *
 * Calibration data: activations from a seeded Gaussian, N(0, 1) — the inputs
 * of every linear (attention input, wo input, FFN input, w2 input) are drawn
 * directly, `windows` × `seqlen` tokens; SqueezeLLM's Fisher information is
 * the square of a seeded N(0, 1). The work of every solver does not depend
 * on the values.
 *
 * Each method's default calibration (quant/spec.ts DEFAULTS, drawn as
 * quant/registry.ts `calibrationRequest` says): GPTQ, 128 windows of the
 * model's length (LLaMA-7B: 128 × 2048 = 262,144 tokens); AWQ, llm-awq's
 * get_calib_dataset rule (datasets/awq_calibration.ts) with its block of 512
 * tokens whatever the model's length (quant/spec.ts `AWQ_BLOCK_SIZE`): the
 * first 128 texts of ≤ 512 tokens concatenated and cut into ⌊Σ / 512⌋
 * blocks, a count that depends on the texts and the tokenizer and is at
 * most 128 (one per text). The projection takes `awqBlocks` blocks, 128
 * unless told (an upper bound); each method's `calibrationTokens` says what
 * was assumed. AWQ is measured on blocks of its own length, about as many
 * tokens as the others.
 *
 * What is timed and how it is multiplied out (per block; × nBlocks):
 * - RTN: every linear of the block, whole.
 * - GPTQ (quant/gptq_fast.ts's `GptqFast`, the CLI's solver): per distinct
 *   input (wq, wk, wv share one, w1, w3 another, as gptqQuantizeModelAsync's
 *   fast path), the Hessian of
 *   the measured tokens scaled to the default calibration (128 windows of
 *   the model's length), and `fasterquant` timed on two row counts r and 2r
 *   of the full width, t = a + b·rows fitted and evaluated at the layer's
 *   rows (a: the Cholesky work of the width, b: one row's sweep); plus the
 *   block's forwards on every window as quant/sequential.ts runs them for
 *   llama_sequential (its pass modes per true-sequential group, then the
 *   output pass), timed on this thread on the measured windows × 128 /
 *   windows, ÷ workers when the run's passes go to the workers
 *   (`passesOnWorkers`; an ideal split). At LLaMA-7B shapes the forwards,
 *   not the solver, are most of GPTQ's time.
 * - AWQ: each scaled group's search with one ratio (ratio 0): the group's
 *   trial weights (scaled and fake-quantized, once per ratio whatever the
 *   calibration) × nGrid, and one evaluation of the inspected module on the
 *   measured blocks (the full-precision output comes with the features) ×
 *   nGrid × the default calibration's blocks; feature collection ≈ one full-precision
 *   evaluation of the attention and of the FFN per window; the clip search on a sample of rows
 *   of each clipped linear, × rows; the final quantization whole. The
 *   searches run on workers split into equal tasks: the all-workers figure
 *   divides their one-thread time by the workers (an ideal split).
 * - SqueezeLLM: the k-means of a sample of rows (8 / rowDivisor) of each
 *   linear shape on this thread after a warm-up, the median of 3 runs
 *   (squeezellmQuantize, all defaults), × rows; the
 *   rows are independent tasks on the workers, so ÷ workers. The Fisher pass (one
 *   backward per calibration window) is not part of this figure, as it is
 *   not part of the published k-means times.
 *
 * Every projection is built from the CPU time (user + system) of the
 * measured pieces, not their wall time: on a shared machine the wall time
 * also counts the waiting for a core. The parallel parts (AWQ's searches,
 * SqueezeLLM's rows: equal independent tasks) are divided by the workers,
 * an ideal split on an otherwise idle machine. The wall and CPU seconds the
 * measurements took are printed too.
 *
 * Published figures are printed beside the projections, labelled as
 * published; they are never measured here.
 *
 * Run: `deno task bench model-quant --shape llama7b [--small] [--workers N]`.
 *
 * @module
 */
import process from "node:process";
import type { LayerWeights, LinearName, LlamaConfig } from "../../model/config.ts";
import { LINEAR_NAMES, linearShape, protocolSeqlen } from "../../model/config.ts";
import { RunState } from "../../model/forward.ts";
import { randn, randomWeights } from "../../model/random.ts";
import { rtn } from "../../quant/rtn.ts";
import { GptqFast } from "../../quant/gptq_fast.ts";
import {
  passesOnWorkers,
  passPlan,
  passWindow,
  sharedInput,
  TRUE_SEQUENTIAL_GROUPS,
} from "../../quant/sequential.ts";
import {
  actScale,
  awqQuantizeTensor,
  type BlockFeatures,
  CLIP_LINEARS,
  sampleTokens,
  scaleGroups,
  searchClip,
  searchSse,
  trialWeights,
} from "../../quant/awq.ts";
import { squeezellmQuantize } from "../../quant/squeezellm.ts";
import { DEFAULT_WORKERS, defaultCalibSeqlen, DEFAULTS } from "../../quant/spec.ts";
import { clipInput } from "./awq.ts";
import { LLAMA7B_BLOCK } from "./prefill.ts";

/** A smoke-test shape: about LLaMA-7B's proportions at 1/16 of the width (widths divisible by 128). */
export const SMALL_BLOCK: LlamaConfig = {
  ...LLAMA7B_BLOCK,
  dim: 256,
  hiddenDim: 768,
  nHeads: 4,
  nKvHeads: 4,
  maxSeqLen: 128,
};

/** Options of {@linkcode benchModelQuant}. */
export interface BenchModelQuantOptions {
  /** The block's shape. @default LLAMA7B_BLOCK (eval/bench/prefill.ts); small: SMALL_BLOCK */
  config?: LlamaConfig;
  /** Blocks of the whole model. @default 32 (LLaMA-7B) */
  blocks?: number;
  /** Quick run: SMALL_BLOCK, fewer sampled rows. @default false */
  small?: boolean;
  /** Bits per weight. @default 3 */
  bits?: number;
  /** Worker threads (AWQ, SqueezeLLM). @default DEFAULT_WORKERS (quant/spec.ts) */
  workers?: number;
  /**
   * Blocks of `seqlen` tokens in AWQ's default calibration (the awq-blocks
   * rule gives at most one per text). @default DEFAULTS.awq.calib.nsamples (128: an upper bound)
   */
  awqBlocks?: number;
  /** Measured calibration windows. @default 1 */
  windows?: number;
  /** Tokens per measured window. @default model/config.ts `protocolSeqlen` (2048 on LLaMA-7B) */
  seqlen?: number;
  /** Rows timed per layer by the clip search and k-means: rows / rowDivisor. @default 64 (small: 16) */
  rowDivisor?: number;
  /** The methods to time, in this order. @default all of MODEL_QUANT_METHODS */
  methods?: readonly MethodProjection["method"][];
  /** Seed of weights and activations. @default 0 */
  seed?: number;
  /** Where lines go. @default console.log */
  log?: (line: string) => void;
}

/** One method's projection. */
export interface MethodProjection {
  method: "rtn" | "gptq" | "awq" | "squeezellm";
  /** Projected seconds of one block on one thread (from CPU time). */
  blockSecondsOneThread: number;
  /** Projected seconds of one block with `workers` workers (the parallel parts ideally split). */
  blockSeconds: number;
  /** blockSeconds × blocks. */
  modelSeconds: number;
  /** Calibration tokens the projection assumes (0: none, RTN; SqueezeLLM: its k-means needs none). */
  calibrationTokens: number;
  /** CPU seconds (user + system, all threads) this method's measurements took. */
  measuredCpuSeconds: number;
  /** Wall seconds the measurements took. */
  measuredWallSeconds: number;
  /** How the figure was obtained. */
  note: string;
  /** Its one-thread block time by part, where the method has separate parts (GPTQ). */
  parts?: Record<string, number>;
}

/** The methods {@linkcode benchModelQuant} projects. */
export const MODEL_QUANT_METHODS: readonly MethodProjection["method"][] = [
  "rtn",
  "gptq",
  "awq",
  "squeezellm",
];

/** A published figure (not measured here). */
export interface PublishedFigure {
  method: string;
  figure: string;
  source: string;
}

/** Everything {@linkcode benchModelQuant} measured. */
export interface BenchModelQuantResult {
  config: LlamaConfig;
  blocks: number;
  bits: number;
  workers: number;
  windows: number;
  seqlen: number;
  activations: string;
  methods: MethodProjection[];
  published: PublishedFigure[];
}

/** The published figures printed beside the projections. */
export const PUBLISHED: readonly PublishedFigure[] = [
  {
    method: "squeezellm",
    figure: "k-means of LLaMA-7B ≈ 11 min on a 48-core machine",
    source: "SqueezeLLM (Kim et al., 2023), SqueezeAILab/SqueezeLLM",
  },
  {
    method: "squeezellm",
    figure: "k-means of LLaMA-7B ≈ 6 min after a later pull request",
    source: "SqueezeAILab/SqueezeLLM pull request",
  },
  {
    method: "gptq",
    figure: "175-billion-parameter models in ≈ 4 GPU hours (one A100)",
    source: "GPTQ (Frantar et al., 2023)",
  },
];

/** Wall and CPU seconds of fn. */
function timed<T>(fn: () => T): { r: T; wall: number; cpu: number } {
  const c0 = process.cpuUsage(), t0 = performance.now();
  const r = fn();
  const c = process.cpuUsage(c0);
  return { r, wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 };
}

/** {@linkcode timed} for an async fn. */
async function timedAsync<T>(fn: () => Promise<T>): Promise<{ r: T; wall: number; cpu: number }> {
  const c0 = process.cpuUsage(), t0 = performance.now();
  const r = await fn();
  const c = process.cpuUsage(c0);
  return { r, wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 };
}

/** Distinct linear shapes of a block with their names. */
function shapesOf(c: LlamaConfig): { rows: number; cols: number; names: LinearName[] }[] {
  const out: { rows: number; cols: number; names: LinearName[] }[] = [];
  for (const name of LINEAR_NAMES) {
    const [rows, cols] = linearShape(c, name);
    const s = out.find((x) => x.rows === rows && x.cols === cols);
    if (s) s.names.push(name);
    else out.push({ rows, cols, names: [name] });
  }
  return out;
}

/**
 * Projects the whole-model quantization time of RTN, GPTQ, AWQ and
 * SqueezeLLM (see the module doc), prints one line per method and the
 * published figures, and returns them.
 *
 * @param opts shape, bits, workers, measured calibration size
 * @returns the projections and the published figures
 * @example
 * ```ts
 * const r = await benchModelQuant({ small: true });
 * r.methods.map((m) => m.modelSeconds);
 * ```
 */
export async function benchModelQuant(
  opts: BenchModelQuantOptions = {},
): Promise<BenchModelQuantResult> {
  const small = opts.small ?? false;
  const c = opts.config ?? (small ? SMALL_BLOCK : LLAMA7B_BLOCK);
  const blocks = opts.blocks ?? 32;
  const bits = opts.bits ?? 3;
  const workers = opts.workers ?? DEFAULT_WORKERS;
  const nWin = opts.windows ?? 1;
  const seqlen = opts.seqlen ?? protocolSeqlen(c);
  const div = opts.rowDivisor ?? (small ? 16 : 64);
  const seed = opts.seed ?? 0;
  const log = opts.log ?? console.log;
  const N = nWin * seqlen;
  const lw: LayerWeights = randomWeights({ ...c, nLayers: 1 }, seed).layers[0];
  const methods: MethodProjection[] = [];
  const chosen = opts.methods ?? MODEL_QUANT_METHODS;
  for (const m of chosen) {
    if (!MODEL_QUANT_METHODS.includes(m)) {
      throw new RangeError(
        `benchModelQuant(): methods: expected some of ${
          MODEL_QUANT_METHODS.join(", ")
        }, got "${m}"`,
      );
    }
  }
  const want = (m: MethodProjection["method"]) => chosen.includes(m);
  const fmt = (s: number) =>
    s >= 7200
      ? `${(s / 3600).toFixed(1)} h`
      : s >= 120
      ? `${(s / 60).toFixed(1)} min`
      : `${s.toFixed(1)} s`;
  log(
    `whole-model quantization time, projected: ${blocks} blocks of dim ${c.dim}, hidden ` +
      `${c.hiddenDim}, ${c.nHeads} heads; ${bits} bits; ${workers} workers; measured on ` +
      `${nWin} × ${seqlen} tokens of seeded N(0, 1) activations (this machine, shared)`,
  );
  const report = (m: MethodProjection) => {
    methods.push(m);
    log(
      `  ${m.method.padEnd(10)} ${fmt(m.modelSeconds).padStart(10)} (block ${
        fmt(m.blockSeconds)
      }, one thread ${fmt(m.blockSecondsOneThread)}; measuring took ${
        m.measuredWallSeconds.toFixed(1)
      } s wall, ${m.measuredCpuSeconds.toFixed(1)} s CPU) — ${m.note}`,
    );
  };

  // RTN: every linear, whole.
  if (want("rtn")) {
    const t = timed(() => {
      for (const name of LINEAR_NAMES) {
        const [rows, cols] = linearShape(c, name);
        rtn(lw[name], rows, cols, { bits, groupSize: DEFAULTS.rtn.groupSize });
      }
    });
    report({
      method: "rtn",
      blockSecondsOneThread: t.cpu,
      blockSeconds: t.cpu,
      modelSeconds: t.cpu * blocks,
      calibrationTokens: 0,
      measuredCpuSeconds: t.cpu,
      measuredWallSeconds: t.wall,
      note: "measured whole, one thread",
    });
  }

  // GPTQ: Hessian per linear scaled to the default calibration; fasterquant fitted on rows.
  if (want("gptq")) {
    const calibTokens = DEFAULTS.gptq.calib.nsamples * defaultCalibSeqlen("gptq", c);
    let hessians = 0, sweeps = 0, wall = 0, cpu = 0;
    for (const { rows, cols, names } of shapesOf(c)) {
      const x = randn(N * cols, 7000 + cols + seed);
      const r1 = Math.max(8, Math.min(rows, Math.ceil(rows / div))), r2 = Math.min(rows, 2 * r1);
      const g = new GptqFast(r1, cols, { workers });
      const th = await timedAsync(async () => {
        g.addBatch(x, N, nWin);
        await g.flush();
      });
      const g2 = await g.copyFor(r2);
      const fq = async (solver: GptqFast, r: number) => {
        const t = await timedAsync(() =>
          solver.fasterquant(lw[names[0]].subarray(0, r * cols), {
            bits,
            groupSize: DEFAULTS.gptq.groupSize,
            blocksize: DEFAULTS.gptq.blocksize,
            percdamp: DEFAULTS.gptq.percdamp,
          })
        );
        solver.free();
        wall += t.wall;
        cpu += t.cpu;
        return t.cpu;
      };
      const a = await fq(g, r1), b = await fq(g2, r2);
      wall += th.wall;
      cpu += th.cpu;
      const perRow = r2 > r1 ? Math.max(0, (b - a) / (r2 - r1)) : a / r1;
      const fixed = Math.max(0, a - perRow * r1);
      // one Hessian per distinct input (quant/sequential.ts: wq, wk, wv share one; w1, w3 another)
      hessians += new Set(names.map(sharedInput)).size * th.cpu * (calibTokens / N);
      sweeps += names.length * (fixed + perRow * rows);
    }
    const solver = hessians + sweeps;
    // llama_sequential's forwards, as quant/sequential.ts gptqBlockSteps runs them (its pass
    // modes, per group of `sequential`, then the output pass), timed on this thread; the
    // weights stay full precision here, which changes no work.
    const groups = DEFAULTS.gptq.trueSequential ? TRUE_SEQUENTIAL_GROUPS : [LINEAR_NAMES];
    const inps = Array.from({ length: nWin }, (_, j) => randn(seqlen * c.dim, 7500 + j + seed));
    const fwd = timed(() => {
      const s = new RunState(c, seqlen), scratch = new Float32Array(seqlen * c.dim);
      for (const { until, mode } of passPlan(groups)) {
        for (const x of inps) passWindow(c, lw, 0, x, seqlen, s, scratch, undefined, until, mode);
      }
    });
    // the passes' windows are tasks on the workers when the run's passes are big enough
    const calibLengths = Array.from({ length: DEFAULTS.gptq.calib.nsamples }, () => seqlen);
    const passWorkers = passesOnWorkers(c, calibLengths, workers) ? workers : 1;
    wall += fwd.wall;
    cpu += fwd.cpu;
    const forwards = fwd.cpu * (DEFAULTS.gptq.calib.nsamples / nWin);
    const blockSeconds = solver / Math.max(1, workers) + forwards / passWorkers;
    report({
      method: "gptq",
      blockSecondsOneThread: solver + forwards,
      blockSeconds,
      modelSeconds: blockSeconds * blocks,
      calibrationTokens: calibTokens,
      measuredCpuSeconds: cpu,
      measuredWallSeconds: wall,
      note: `quant/gptq_fast.ts GptqFast on ${workers} workers; Hessian × ${calibTokens} ` +
        `calibration tokens (${DEFAULTS.gptq.calib.nsamples} windows), fasterquant fitted on rows; CPU time ÷ ${workers} (ideal split; ` +
        `a lower bound: the Cholesky runs on one thread); plus the block's forwards ` +
        `(${fmt(forwards)} a block on one thread: quant/sequential.ts's passes for ` +
        `${groups.length} groups and the output${
          passWorkers > 1 ? `, ÷ ${passWorkers} workers` : ""
        })`,
      parts: { hessians, fasterquant: sweeps, forwards },
    });
  }

  // AWQ: one ratio per group, a sample of rows per clipped linear.
  if (want("awq")) {
    const nGrid = DEFAULTS.awq.nGrid;
    const awqBlocks = opts.awqBlocks ?? DEFAULTS.awq.calib.nsamples;
    if (!(Number.isInteger(awqBlocks) && awqBlocks >= 1)) {
      throw new RangeError(`benchModelQuant(): awqBlocks must be an integer ≥ 1, got ${awqBlocks}`);
    }
    // AWQ's own block length (llm-awq: 512 tokens, whatever the model's), about the others' tokens.
    const awqLen = defaultCalibSeqlen("awq", c);
    const awqWin = Math.max(1, Math.round(N / awqLen)), NA = awqWin * awqLen;
    const windowsScale = awqBlocks / awqWin;
    const f: BlockFeatures = {
      lengths: Array.from({ length: awqWin }, () => awqLen),
      offsets: Array.from({ length: awqWin }, (_, j) => j * awqLen),
      N: NA,
      attnIn: randn(NA * c.dim, 8001 + seed),
      woIn: randn(NA * c.dim, 8002 + seed),
      ffnIn: randn(NA * c.dim, 8003 + seed),
      w2In: randn(NA * c.hiddenDim, 8004 + seed),
      attnOut: randn(NA * c.dim, 8005 + seed),
      ffnOut: randn(NA * c.dim, 8006 + seed),
    };
    const s = new RunState(c, awqLen);
    // AWQ's group (128) when it divides every width, else one group per row (as the CLI).
    const g0 = DEFAULTS.awq.groupSize;
    const awqGroup = g0 !== null && c.dim % g0 === 0 && c.hiddenDim % g0 === 0 ? g0 : null;
    const groupSize = (cols: number) => awqGroup ?? cols;
    let search = 0, rest = 0, wall = 0, cpu = 0;
    for (const g of scaleGroups(c)) {
      // One ratio of _search_module_scale: the group's trial weights (once per ratio, whatever
      // the calibration), then the inspected module on every window (× blocks).
      const cols = linearShape(c, g.linears[0])[1];
      const xMax = actScale(clipInput(f, g.linears[0]), NA, cols);
      let trial: Float32Array = new Float32Array(0);
      const tw = timed(() => {
        trial = trialWeights(c, lw, g, xMax, { bits, groupSize: awqGroup }, 0, 1, nGrid);
      });
      const te = timed(() => searchSse(c, lw, g.prevOp, f, trial, 1, s));
      wall += tw.wall + te.wall;
      cpu += tw.cpu + te.cpu;
      search += (tw.cpu + te.cpu * windowsScale) * nGrid;
      if (g.prevOp === "attnNorm" || g.prevOp === "ffnNorm") rest += te.cpu * windowsScale; // collect
    }
    const nSample = Math.min(NA, DEFAULTS.awq.nSampleTokens);
    for (const name of CLIP_LINEARS) {
      const [rows, cols] = linearShape(c, name);
      const input = clipInput(f, name);
      const { x, n } = sampleTokens(input, NA, cols, nSample);
      const r = Math.max(1, Math.ceil(rows / div));
      const t = timed(() =>
        searchClip(lw[name].subarray(0, r * cols), r, cols, x, n, {
          bits,
          groupSize: groupSize(cols),
          nGrid,
          maxShrink: DEFAULTS.awq.maxShrink,
        })
      );
      wall += t.wall;
      cpu += t.cpu;
      search += (t.cpu * rows) / r;
    }
    const tq = timed(() => {
      for (const name of LINEAR_NAMES) {
        const [rows, cols] = linearShape(c, name);
        awqQuantizeTensor(lw[name], rows, cols, { bits, groupSize: groupSize(cols) });
      }
    });
    wall += tq.wall;
    cpu += tq.cpu;
    rest += tq.cpu;
    const oneThread = search + rest;
    const block = search / Math.max(1, workers) + rest;
    report({
      method: "awq",
      blockSecondsOneThread: oneThread,
      blockSeconds: block,
      modelSeconds: block * blocks,
      calibrationTokens: awqBlocks * awqLen,
      measuredCpuSeconds: cpu,
      measuredWallSeconds: wall,
      note:
        `one ratio per group timed, × ${nGrid} evaluations × ${awqBlocks} blocks of ${awqLen} ` +
        `tokens (awq-blocks rule${
          opts.awqBlocks === undefined ? ": at most one block per text, an upper bound" : ""
        }); clip on 1/${div} of the rows; searches ÷ ${workers} workers (ideal split)`,
    });
  }

  // SqueezeLLM: k-means of a sample of rows of each shape, on this thread (after a warm-up).
  if (want("squeezellm")) {
    let oneThread = 0, wall = 0, cpu = 0;
    for (const { rows, cols, names } of shapesOf(c)) {
      // k-means rows are cheap: 8× the sample of the other methods, for steadier figures.
      const r = Math.min(rows, Math.ceil((8 * rows) / div));
      const W = lw[names[0]].slice(0, r * cols);
      const F = randn(r * cols, 9000 + cols + seed);
      for (let i = 0; i < F.length; i++) F[i] *= F[i];
      const run = (n: number) =>
        squeezellmQuantize(W.subarray(0, n * cols), F.subarray(0, n * cols), n, cols, {
          bits,
          seed,
          workers: 0,
        });
      await run(Math.min(r, 64)); // warm-up (compilation)
      // The median of 3 runs: one run of these rows takes about a second, and single
      // runs of it differed by up to 30% on this shared machine.
      const runs = [];
      for (let i = 0; i < 3; i++) runs.push(await timedAsync(() => run(r)));
      const t = runs.sort((a, b) => a.cpu - b.cpu)[1];
      for (const u of runs) wall += u.wall, cpu += u.cpu;
      oneThread += (names.length * t.cpu * rows) / r;
    }
    const block = oneThread / Math.max(1, workers);
    report({
      method: "squeezellm",
      blockSecondsOneThread: oneThread,
      blockSeconds: block,
      modelSeconds: block * blocks,
      calibrationTokens: 0,
      measuredCpuSeconds: cpu,
      measuredWallSeconds: wall,
      note:
        `k-means only (no Fisher pass), 8/${div} of the rows on one thread (median of 3 runs), ` +
        `÷ ${workers} workers (ideal split: rows are independent tasks)`,
    });
  }

  log("  published (not measured here):");
  for (const p of PUBLISHED) log(`    ${p.method.padEnd(10)} ${p.figure} — ${p.source}`);
  return {
    config: c,
    blocks,
    bits,
    workers,
    windows: nWin,
    seqlen,
    activations: "seeded N(0, 1) inputs of every linear; Fisher = squared seeded N(0, 1)",
    methods,
    published: [...PUBLISHED],
  };
}

if (import.meta.main) {
  await benchModelQuant({ small: Deno.args.includes("--small") });
}
