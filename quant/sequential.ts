/**
 * The layer-by-layer calibration loop of GPTQ (IST-DASLab/gptq llama.py,
 * `llama_sequential`), and the pieces of it AWQ's per-block search shares
 * (checking and embedding the windows).
 *
 * `llama_sequential`: the embeddings of every calibration window are
 * computed once (`inps`, [nsamples, seqlen, dim], all kept in memory); then
 * for each block i —
 *   for each group of `sequential` (true-sequential:
 *   [wk, wv, wq], [wo], [w3, w1], [w2]; otherwise all seven linears at
 *   once): run block i on every window with hooks feeding the inputs of the
 *   group's linears to one {@linkcode Gptq} each (`add_batch`), then solve
 *   each (`fasterquant`) and put its quantized weights into the block, so
 *   that the next group's inputs come from the already-quantized linears;
 *   then run the fully quantized block on every window (`outs = layer(inps)`)
 *   to produce block i+1's inputs.
 *
 * A group's collection pass stops after the last linear it needs
 * (model/forward.ts `block` with `until`; the official code runs the whole
 * block and discards the outputs; the inputs recorded are the same). Once
 * wq, wk, wv and wo are quantized the attention is final: the pass of
 * [w3, w1] keeps the stream after it in place of the block's inputs, and
 * the pass of [w2] and the output pass run the FFN from there
 * ({@linkcode passPlan}): the attention runs twice per window and block
 * instead of four times, the same numbers (tested against whole-block
 * passes). With the fast solver and workers, a pass big enough
 * ({@linkcode passesOnWorkers}) runs its windows on the workers, which
 * return each window's inputs; they reach the Hessians in window order, so
 * the codes are those of one thread.
 *
 * The loop runs one block at a time ({@linkcode gptqBlockSteps}), so the
 * whole-model drivers and {@linkcode GptqSequential}, which is handed one
 * block at a time by a caller that holds nothing else of the model
 * (eval/quantize_stream.ts), take the same steps and give the same codes.
 *
 * Two solvers serve the loop: the plain transcription of gptq.py
 * (quant/gptq.ts {@linkcode Gptq}, the tested reference and the default) and
 * its fast path (quant/gptq_fast.ts {@linkcode GptqFast}: WebAssembly SIMD,
 * worker threads, fp32 Hinv like torch; the CLI's solver, through
 * {@linkcode gptqQuantizeModelAsync}). Their codes agree except where a
 * weight lies within a few fp32 ulps of a rounding boundary (gptq_fast.ts's
 * module doc).
 *
 * @module
 */
import type { LayerWeights, LinearName, LlamaConfig, LlamaWeights } from "../model/config.ts";
import { LINEAR_NAMES, linearShape } from "../model/config.ts";
import type { ForwardHooks } from "../model/forward.ts";
import {
  block,
  blockAfterAttention,
  type BlockStage,
  embed,
  RunState,
  stageOf,
} from "../model/forward.ts";
import { type ProgressCallback, runTasks, type TaskHandler } from "../model/pool.ts";
import { checkBits, dequantize, type QuantizedLinear } from "./format.ts";
import { Gptq, type GptqResult } from "./gptq.ts";
import { GptqFast, type GridSpec } from "./gptq_fast.ts";
import { minMaxGrid } from "./rtn.ts";
import { DEFAULT_WORKERS, type GptqSpec } from "./spec.ts";

/** Options of {@linkcode gptqQuantizeModel}; defaults are GPTQ's llama.py. */
export interface GptqModelOptions {
  /** Bits per weight (wbits), 2..8. */
  bits: number;
  /** Columns per group (groupsize); null: one group per row (GPTQ's −1). @default null */
  groupSize?: number | null;
  /** Symmetric grid. @default false */
  sym?: boolean;
  /** Bit balance: five levels at 2 bits (quant/rtn.ts `minMaxGrid`). @default false */
  bitBalance?: boolean;
  /** Quantize columns in order of descending diag(H) (act_order). @default false */
  actOrder?: boolean;
  /** Group parameters from the unpermuted weights (static_groups). @default false */
  staticGroups?: boolean;
  /**
   * Quantize the linears of a block in four steps ([wk, wv, wq], [wo],
   * [w3, w1], [w2]), each seeing the quantized outputs of the previous ones
   * (--true-sequential; the README's recommended LLaMA setting).
   * @default true
   */
  trueSequential?: boolean;
  /** Dampening: fraction of mean(diag(H)) added to the diagonal. @default DEFAULTS.gptq.percdamp (0.01) */
  percdamp?: number;
  /** Columns per lazy-batch block of fasterquant. @default DEFAULTS.gptq.blocksize (128) */
  blocksize?: number;
  /** Called with a one-line message after each linear and each block. */
  log?: (message: string) => void;
  /** Called after each solved linear: (linears done, linears, what). */
  onProgress?: ProgressCallback;
  /**
   * Where each linear's Hessian is accumulated. @default the solver's own
   * CPU accumulation (`addBatch`); eval/gpu_calibration.ts has a GPU one
   * (use {@linkcode gptqQuantizeModelAsync} for accumulators whose
   * `finish()` is asynchronous).
   */
  hessians?: HessianAccumulatorFactory;
  /**
   * The solver: "reference" (quant/gptq.ts {@linkcode Gptq}, the plain
   * transcription of gptq.py) or "fast" (quant/gptq_fast.ts
   * {@linkcode GptqFast}; asynchronous, so {@linkcode gptqQuantizeModelAsync}
   * only; it accumulates one H per distinct input — wq, wk, wv share one,
   * w1, w3 another — and copies it, where gptq.py accumulates each linear's
   * own: the same H, accumulated once). @default "reference"
   */
  solver?: "reference" | "fast";
  /**
   * Worker threads of the fast solver and of its calibration passes (0:
   * this thread; layers below parallelMinMacs, and passes below
   * passMinMacs, stay on this thread anyway).
   * @default DEFAULT_WORKERS (quant/spec.ts: the number of cores)
   */
  workers?: number;
  /** Multiply-adds below which the fast solver stays on this thread (GptqFastInit). @default 5e8 */
  parallelMinMacs?: number;
  /**
   * Multiply-adds of a block's calibration pass (every window through the
   * block) below which, with the fast solver and workers, it stays on this
   * thread. @default PASS_MIN_MACS (2e9)
   */
  passMinMacs?: number;
}

/**
 * Default of {@linkcode GptqModelOptions.passMinMacs}: below about a second
 * of one core, starting the workers costs more than they save.
 */
export const PASS_MIN_MACS = 2e9;

/**
 * The options a resolved GPTQ spec gives {@linkcode gptqQuantizeModelAsync}
 * and {@linkcode GptqSequential} (the whole-model and the block-by-block
 * paths alike), on the fast solver, with the caller's workers, Hessians and log.
 *
 * @param spec a resolved GPTQ spec (quant/spec.ts)
 * @param ctx workers, Hessian accumulators, log and progress
 * @returns the options
 */
export function gptqSpecOptions(
  spec: GptqSpec,
  ctx: Pick<GptqModelOptions, "workers" | "hessians" | "log" | "onProgress">,
): GptqModelOptions {
  return {
    bits: spec.bits,
    groupSize: spec.groupSize,
    sym: spec.sym,
    bitBalance: spec.bitBalance,
    actOrder: spec.actOrder,
    staticGroups: spec.staticGroups,
    trueSequential: spec.trueSequential,
    blocksize: spec.blocksize,
    percdamp: spec.percdamp,
    solver: "fast",
    ...ctx,
  };
}

/**
 * GPTQ's `add_batch` for one linear, behind an interface so that the
 * accumulation can run elsewhere (the GPU): fed one window's inputs at a
 * time, then asked once for H.
 */
export interface HessianAccumulator {
  /** Adds the inputs x [rows, cols] of one calibration window (x is valid only during the call). */
  addBatch(x: Float32Array, rows: number): void;
  /** H = 2/nsamples · Σ xᵀx [cols, cols], float64, symmetric; the accumulator is spent. */
  finish(): Float64Array | Promise<Float64Array>;
}

/** Makes the accumulator of linear `name` of block `layer`, whose input width is `cols`. */
export type HessianAccumulatorFactory = (
  layer: number,
  name: LinearName,
  cols: number,
) => HessianAccumulator;

/** The CPU accumulator: quant/gptq.ts's `Gptq.addBatch` and `hessian()`. */
export const cpuHessians: HessianAccumulatorFactory = (_layer, _name, cols) => {
  const g = new Gptq(1, cols);
  return {
    addBatch: (x, rows) => g.addBatch(x, rows),
    finish: () => {
      const H = g.hessian();
      g.free();
      return H;
    },
  };
};

/** One solved linear. */
export interface GptqLinearStats {
  /** "layers.{l}.{name}". */
  key: string;
  /** fasterquant's error: Σ Losses, the GPTQ objective estimate. */
  error: number;
  seconds: number;
}

/** Timings and facts of a GPTQ run. */
export interface GptqModelStats {
  seconds: number;
  windows: number;
  /** Calibration tokens (Σ window lengths). */
  tokens: number;
  /** Every linear in the order it was solved. */
  linears: GptqLinearStats[];
}

/** The result of {@linkcode gptqQuantizeModel}. */
export interface GptqModelResult {
  /** The fake-quantized copy: every linear = dequantize(linears.get(key)); the rest shared. */
  weights: LlamaWeights;
  /** Keys "layers.{l}.{name}". */
  linears: Map<string, QuantizedLinear>;
  stats: GptqModelStats;
}

/** `sequential` of llama.py with --true-sequential (in its order). */
export const TRUE_SEQUENTIAL_GROUPS: readonly (readonly LinearName[])[] = [
  ["wk", "wv", "wq"],
  ["wo"],
  ["w3", "w1"],
  ["w2"],
];

/**
 * Throws a RangeError naming `fn` unless `windows` is a non-empty list of
 * non-empty token windows no longer than the model's max_seq_len.
 * Returns the longest window length.
 */
export function checkWindows(fn: string, windows: Int32Array[], config: LlamaConfig): number {
  if (windows.length === 0) {
    throw new RangeError(`${fn}: expected at least one calibration window, got none`);
  }
  let maxT = 0;
  windows.forEach((w, j) => {
    if (w.length === 0 || w.length > config.maxSeqLen) {
      throw new RangeError(
        `${fn}: calibration window ${j} has ${w.length} tokens, expected 1..${config.maxSeqLen} ` +
          `(the model's max_seq_len)`,
      );
    }
    maxT = Math.max(maxT, w.length);
  });
  return maxT;
}

/**
 * Token embeddings of every window: one [T_j, dim] array per window (GPTQ's
 * `inps`); with `shared`, all of them on one SharedArrayBuffer, which
 * GPTQ's passes on the workers update in place (no copy).
 */
export function embedWindows(
  weights: LlamaWeights,
  windows: Int32Array[],
  shared = false,
): Float32Array[] {
  const { dim } = weights.config;
  const sizes = windows.map((tokens) => tokens.length * dim); // [T_j, dim]
  const xs = shared ? sharedArrays(sizes) : sizes.map((n) => new Float32Array(n));
  windows.forEach((tokens, j) => embed(weights, tokens, xs[j]));
  return xs;
}

/** Arrays of the given lengths, consecutive on one SharedArrayBuffer. */
function sharedArrays(sizes: readonly number[]): Float32Array[] {
  const buf = new SharedArrayBuffer(sizes.reduce((a, n) => a + n, 0) * 4);
  let o = 0;
  return sizes.map((n) => new Float32Array(buf, (o += n) * 4 - n * 4, n));
}

/** Seconds since `t0` (a performance.now() reading). */
export function since(t0: number): number {
  return (performance.now() - t0) / 1000;
}

/**
 * GPTQ (llama_sequential) of every linear of `weights` on calibration
 * windows `windows` (token ids, ≤ max_seq_len each). Deterministic.
 *
 * @param weights the full-precision model (not modified)
 * @param windows calibration windows (GPTQ: 128 × 2048 tokens of C4)
 * @param opts bits, group size, act-order, true-sequential, dampening
 * @returns the fake-quantized weights, the packed linears and per-linear errors
 * @example
 * ```ts
 * const r = gptqQuantizeModel(weights, windows, { bits: 3 });
 * r.linears.get("layers.0.wq"); // { dense: UniformTensor }
 * ```
 */
export function gptqQuantizeModel(
  weights: LlamaWeights,
  windows: Int32Array[],
  opts: GptqModelOptions,
): GptqModelResult {
  const steps = gptqSteps(weights, windows, opts);
  if (opts.solver === "fast") {
    throw new TypeError(
      'gptqQuantizeModel(): the "fast" solver is asynchronous; use gptqQuantizeModelAsync()',
    );
  }
  let r = steps.next();
  while (!r.done) {
    if (r.value instanceof Promise) {
      throw new TypeError(
        "gptqQuantizeModel(): the Hessian accumulator's finish() is asynchronous; " +
          "use gptqQuantizeModelAsync()",
      );
    }
    r = steps.next(r.value);
  }
  return r.value;
}

/**
 * {@linkcode gptqQuantizeModel} with accumulators whose `finish()` returns
 * a promise (the GPU's, eval/gpu_calibration.ts) or the "fast" solver; the
 * same loop, and with the reference solver the same results.
 *
 * @param weights the full-precision model (not modified)
 * @param windows calibration windows
 * @param opts as {@linkcode gptqQuantizeModel}, `hessians`, `solver` and `workers` included
 * @returns the fake-quantized weights, the packed linears and per-linear errors
 */
export async function gptqQuantizeModelAsync(
  weights: LlamaWeights,
  windows: Int32Array[],
  opts: GptqModelOptions,
): Promise<GptqModelResult> {
  const steps = gptqSteps(weights, windows, opts);
  let r = steps.next();
  while (!r.done) r = steps.next(await r.value);
  return r.value;
}

/**
 * Which input a linear reads, named by its first reader: wq, wk and wv read
 * one ("wq"), w1 and w3 another ("w1"); wo and w2 their own.
 *
 * @example sharedInput("wv"); // "wq"
 */
export function sharedInput(name: LinearName): LinearName {
  return name === "wk" || name === "wv" ? "wq" : name === "w3" ? "w1" : name;
}

/**
 * The linear of `names` whose solver accumulates the input `name` reads:
 * the first of `names` reading the same input.
 */
function inputOwner(names: readonly LinearName[], name: LinearName): LinearName {
  return names.find((n) => sharedInput(n) === sharedInput(name))!;
}

/** Gives every linear of `names` without a solver a copy of its input owner's (H and nsamples). */
async function copyShared(
  c: LlamaConfig,
  gptq: Map<LinearName, Gptq | GptqFast>,
  names: readonly LinearName[],
): Promise<void> {
  for (const name of names) {
    if (gptq.has(name)) continue;
    const owner = gptq.get(inputOwner(names, name))!;
    const rows = linearShape(c, name)[0];
    gptq.set(name, owner instanceof GptqFast ? await owner.copyFor(rows) : owner.copyFor(rows));
  }
}

/**
 * One linear's `fasterquant` with llama_sequential's arguments taken from
 * `opts` (bits, group, sym, bit balance, act-order, static groups, block
 * size, dampening), on either solver; the solver is freed once it is done.
 * The GPU calibration pass (eval/gpu_calibration.ts) solves with it too.
 *
 * @param g the solver holding this linear's Hessian
 * @param W the linear's weights [rows, cols], not modified
 * @param key the linear's name in messages, e.g. "layers.0.wq"
 * @param opts the model-level options
 * @returns the result (a promise of it from {@linkcode GptqFast})
 */
export function solveLinear(
  g: Gptq | GptqFast,
  W: Float32Array,
  key: string,
  opts: GptqModelOptions,
): GptqResult | Promise<GptqResult> {
  const sym = opts.sym ?? false, bitBalance = opts.bitBalance ?? false;
  const args = {
    name: key,
    bits: opts.bits,
    groupSize: opts.groupSize,
    sym,
    actOrder: opts.actOrder ?? false,
    staticGroups: opts.staticGroups ?? false,
    blocksize: opts.blocksize,
    percdamp: opts.percdamp,
  };
  const spec: GridSpec = { kind: "minmax", bits: opts.bits, sym, bitBalance };
  return andThen(
    g instanceof GptqFast
      ? g.fasterquant(W, { ...args, grid: spec })
      : g.fasterquant(W, { ...args, grid: minMaxGrid(opts.bits, sym, bitBalance) }),
    (r) => {
      g.free();
      return r;
    },
  );
}

/** f(v), or a promise of it when v is a promise. */
function andThen<T, U>(v: T | Promise<T>, f: (t: T) => U | Promise<U>): U | Promise<U> {
  return v instanceof Promise ? v.then(f) : f(v);
}

/**
 * The solver `opts` asks for (`solver`, `workers`, `parallelMinMacs`), as a
 * factory of one per [rows, cols] linear: empty, to accumulate its own H, or
 * from a Hessian accumulated elsewhere (the GPU calibration pass,
 * eval/gpu_calibration.ts, solves with it too).
 *
 * @param opts the model-level options
 * @param nsamples calibration windows (GPTQ's nsamples)
 * @returns the factory
 * @throws {RangeError} for workers that are not an integer ≥ 0
 */
export function gptqSolvers(
  opts: GptqModelOptions,
  nsamples: number,
): (rows: number, cols: number, H?: Float64Array) => Gptq | GptqFast {
  const workers = opts.workers;
  if (workers !== undefined && (!Number.isInteger(workers) || workers < 0)) {
    throw new RangeError(`gptqQuantizeModel(): --workers must be an integer ≥ 0, got ${workers}`);
  }
  const init = { workers, parallelMinMacs: opts.parallelMinMacs };
  return (rows, cols, H) =>
    opts.solver === "fast"
      ? (H ? GptqFast.fromHessian(rows, cols, H, nsamples, init) : new GptqFast(rows, cols, init))
      : (H ? Gptq.fromHessian(rows, cols, H, nsamples) : new Gptq(rows, cols));
}

/**
 * What llama_sequential carries from block to block: the checked options,
 * the solver factory and the buffers, allocated once.
 */
interface SequentialState {
  c: LlamaConfig;
  windows: Int32Array[];
  opts: GptqModelOptions;
  fast: boolean;
  sequential: readonly (readonly LinearName[])[];
  /** A solver for a [rows, cols] linear, empty or from a Hessian accumulated elsewhere. */
  solverFor: (rows: number, cols: number, H?: Float64Array) => Gptq | GptqFast;
  s: RunState;
  scratch: Float32Array; // [maxT, dim]
  /** Workers of the calibration passes (0: this thread): the fast solver's, on an asynchronous driver. */
  passWorkers: number;
  /** Multiply-adds of a block's pass below which it stays on this thread. */
  passMinMacs: number;
  /** The windows' streams in shared memory, for passes on workers (allocated on first use). */
  shared: Float32Array[] | null;
  stats: GptqModelStats;
  t0: number;
}

/** Checks the options and windows of a GPTQ run and allocates its buffers. */
function sequentialState(
  c: LlamaConfig,
  windows: Int32Array[],
  opts: GptqModelOptions,
): SequentialState {
  const t0 = performance.now();
  checkBits(opts.bits, "gptqQuantizeModel(): bits");
  const maxT = checkWindows("gptqQuantizeModel()", windows, c);
  return {
    c,
    windows,
    opts,
    fast: opts.solver === "fast",
    sequential: (opts.trueSequential ?? true) ? TRUE_SEQUENTIAL_GROUPS : [LINEAR_NAMES],
    solverFor: gptqSolvers(opts, windows.length),
    s: new RunState(c, maxT),
    scratch: new Float32Array(maxT * c.dim),
    passWorkers: opts.solver === "fast" ? opts.workers ?? DEFAULT_WORKERS : 0,
    passMinMacs: opts.passMinMacs ?? PASS_MIN_MACS,
    shared: null,
    stats: {
      seconds: 0,
      windows: windows.length,
      tokens: windows.reduce((a, w) => a + w.length, 0),
      linears: [],
    },
    t0,
  };
}

/**
 * A step of llama_sequential's loop: a linear's solve (its result, or a
 * promise of it), or a calibration pass on the workers (resumed with nothing).
 */
type GptqStep = GptqResult | Promise<GptqResult> | Promise<void>;

/**
 * The loop of llama_sequential as a generator: it yields each linear's
 * solve (a result, or a promise of one when the Hessian accumulator or the
 * solver is asynchronous) and is resumed with the result, so one loop serves
 * the synchronous and the asynchronous driver.
 */
function* gptqSteps(
  weights: LlamaWeights,
  windows: Int32Array[],
  opts: GptqModelOptions,
): Generator<GptqStep, GptqModelResult, GptqResult | void> {
  const st = sequentialState(weights.config, windows, opts);
  const lengths = windows.map((w) => w.length);
  const inps = embedWindows(
    weights,
    windows,
    passesOnWorkers(st.c, lengths, st.passWorkers, st.passMinMacs),
  );
  const linears = new Map<string, QuantizedLinear>();
  const layers: LayerWeights[] = [];
  for (let l = 0; l < st.c.nLayers; l++) {
    const b = yield* gptqBlockSteps(st, l, weights.layers[l], inps);
    for (const [key, q] of b.linears) linears.set(key, q);
    layers.push(b.layer);
  }
  st.stats.seconds = since(st.t0);
  return { weights: { ...weights, layers }, linears, stats: st.stats };
}

/** One block of llama_sequential: its quantized linears and fake-quantized weights. */
export interface GptqBlockResult {
  /** The block's seven linears by "layers.{l}.{name}". */
  linears: Map<string, QuantizedLinear>;
  /** The block with every linear = dequantize(its quantized form); the norms are the input's. */
  layer: LayerWeights;
}

/** The linears of a block's attention half. */
const ATTENTION_LINEARS: readonly LinearName[] = ["wq", "wk", "wv", "wo"];

/**
 * How a pass of {@linkcode gptqBlockSteps} runs block l on a window:
 * "scratch": from the block's inputs, on a scratch copy, as far as the
 * group's inputs; "advance": in place, as far as the FFN RMSNorm (the
 * attention is final: inps then hold the stream after it); "after": the
 * FFN from the stream after the attention, x unchanged; "output" and
 * "output-after": the quantized block in place (llama_sequential's
 * `outs = layer(inps)`), from the block's inputs or from the stream after
 * the attention.
 */
export type PassMode = "scratch" | "advance" | "after" | "output" | "output-after";

/** One pass of a block: the group whose inputs it feeds (none: the output pass), how far and how it runs. */
export interface PassStep {
  names: readonly LinearName[];
  until: BlockStage;
  mode: PassMode;
}

/**
 * The passes of a block for the groups of `sequential`, in order, then the
 * output pass. Each pass starts from the block's inputs, on a scratch copy,
 * except: once the attention is final (wq, wk, wv and wo in earlier
 * groups, so quantized), a pass that stops after the FFN RMSNorm updates
 * inps in place to the stream after the attention, and the later passes
 * (the output pass too) start from there (model/forward.ts
 * `blockAfterAttention`) without running the attention again. The official
 * code runs the whole block for every group; the inputs recorded, and the
 * block's outputs, are the same numbers.
 *
 * @example passPlan(TRUE_SEQUENTIAL_GROUPS).map((p) => p.mode);
 * // ["scratch", "scratch", "advance", "after", "output-after"]
 */
export function passPlan(sequential: readonly (readonly LinearName[])[]): PassStep[] {
  const done = new Set<LinearName>();
  let after = false; // inps hold the stream after the attention
  const plan: PassStep[] = sequential.map((names) => {
    const until = stageOf(names);
    const mode: PassMode = after
      ? "after"
      : until === "ffn" && ATTENTION_LINEARS.every((n) => done.has(n))
      ? "advance"
      : "scratch";
    after ||= mode === "advance";
    for (const n of names) done.add(n);
    return { names, until, mode };
  });
  plan.push({ names: [], until: "block", mode: after ? "output-after" : "output" });
  return plan;
}

/**
 * One window of a pass (see {@linkcode PassMode}); `hooks` receive the
 * inputs of the linears it reaches. The product of a collection pass's
 * last linear (wo when it stops after the attention, w2 when it runs the
 * FFN), whose output nothing reads, is skipped.
 */
export function passWindow(
  c: LlamaConfig,
  lw: LayerWeights,
  l: number,
  x: Float32Array,
  T: number,
  s: RunState,
  scratch: Float32Array,
  hooks: ForwardHooks | undefined,
  until: BlockStage,
  mode: PassMode,
): void {
  if (mode === "output") return block(c, lw, l, x, T, s);
  if (mode === "output-after") return blockAfterAttention(c, lw, l, x, T, s);
  if (mode === "advance") return block(c, lw, l, x, T, s, hooks, "ffn");
  const skip: LinearName | null = until === "wo" ? "wo" : until === "block" ? "w2" : null;
  const h: ForwardHooks | undefined = skip
    ? {
      ...hooks,
      linear: (layer, name, y, xin, T) =>
        name === skip || (hooks?.linear?.(layer, name, y, xin, T) ?? false),
    }
    : hooks;
  if (mode === "after") {
    if (until !== "ffn" && until !== "block") {
      throw new Error(`gptq: layers.${l}: a group reading the attention after it is final`);
    }
    return blockAfterAttention(c, lw, l, x, T, s, h, until, false);
  }
  const xs = scratch.subarray(0, T * c.dim);
  xs.set(x.subarray(0, T * c.dim));
  block(c, lw, l, xs, T, s, h, until);
}

/** What a pass on the workers shares with them (model/pool.ts init). */
export interface PassInit {
  config: LlamaConfig;
  layer: number;
  /** The block's weights as they stand, in shared memory. */
  lw: LayerWeights;
  /** Every window's stream [T_j, dim], in shared memory (modes "advance" and "output…" update it). */
  inps: Float32Array[];
  lengths: number[];
  until: BlockStage;
  mode: PassMode;
  /** The linears whose inputs a window returns, in this order. */
  capture: LinearName[];
}

/**
 * A pass as pool tasks (quant/sequential_worker.ts serves them): task j
 * runs window j ({@linkcode passWindow}) and returns the inputs of the
 * captured linears, which the caller adds to the Hessians in window order
 * (model/pool.ts delivers results in task order): the same sums, and so the
 * same codes, on any number of workers.
 */
export const passTasks: TaskHandler<PassInit, number, Float32Array[]> = {
  setup(init) {
    const { config: c, lw, inps, lengths, until, mode, capture } = init;
    const maxT = Math.max(...lengths);
    const s = new RunState(c, maxT), scratch = new Float32Array(maxT * c.dim);
    return (j) => {
      const got: Float32Array[] = [];
      const hooks: ForwardHooks = {
        onLinearInput(_layer, name, x, T) {
          const i = capture.indexOf(name);
          if (i >= 0) got[i] = x.slice(0, T * linearShape(c, name)[1]);
        },
      };
      passWindow(c, lw, init.layer, inps[j], lengths[j], s, scratch, hooks, until, mode);
      return got;
    };
  },
  transfer: (r) => r.map((a) => a.buffer as ArrayBuffer),
};

/**
 * Block `l` of llama_sequential (the module doc): the groups of linears
 * solved in order, each on the inputs of the block quantized so far; then
 * `inps` advanced to the quantized block's outputs (block l+1's inputs).
 *
 * @param st the run's state
 * @param l the block's index
 * @param W0 the block's full-precision weights (not modified)
 * @param inps block l's input [T_j, dim] per window, overwritten with block l+1's
 */
function* gptqBlockSteps(
  st: SequentialState,
  l: number,
  W0: LayerWeights,
  inps: Float32Array[],
): Generator<GptqStep, GptqBlockResult, GptqResult | void> {
  const { c, windows, opts, fast, s, scratch, stats } = st;
  const lw: LayerWeights = { ...W0 }; // arrays replaced, never written
  const linears = new Map<string, QuantizedLinear>();
  const lengths = windows.map((w) => w.length);
  // The passes run on the workers when they are worth it, on the streams in shared memory.
  const onWorkers = passesOnWorkers(c, lengths, st.passWorkers, st.passMinMacs);
  const x = onWorkers ? sharedStreams(st, inps) : inps;
  const sharedLw = new Map<Float32Array, Float32Array>();
  const pass = ({ until, mode }: PassStep, capture: LinearName[]) => {
    const init: PassInit = {
      config: c,
      layer: l,
      lw: shareWeights(lw, sharedLw),
      inps: x,
      lengths,
      until,
      mode,
      capture,
    };
    return (onResult: (j: number, got: Float32Array[]) => void) =>
      runTasks({
        name: "GPTQ calibration",
        worker: new URL("./sequential_worker.ts", import.meta.url),
        handler: passTasks,
        workers: st.passWorkers,
        init,
        tasks: x.length,
        task: (j) => j,
        onResult,
      });
  };
  const plan = passPlan(st.sequential);
  for (const step of plan.slice(0, -1)) {
    const { names, until, mode } = step;
    const gptq = new Map<LinearName, Gptq | GptqFast>();
    const accumulators = new Map<LinearName, HessianAccumulator>();
    for (const name of names) {
      const [rows, cols] = linearShape(c, name);
      if (opts.hessians) accumulators.set(name, opts.hessians(l, name, cols));
      else if (!fast || inputOwner(names, name) === name) gptq.set(name, st.solverFor(rows, cols));
    }
    const feed = (name: LinearName, xin: Float32Array, T: number) => {
      const xi = xin.subarray(0, T * linearShape(c, name)[1]);
      gptq.get(name)?.addBatch(xi, T);
      accumulators.get(name)?.addBatch(xi, T);
    };
    if (onWorkers) {
      // each window returns its distinct inputs; fed in window order, to every linear reading one
      const capture = [...new Set(names.map(sharedInput))];
      yield pass(step, capture)((j, got) =>
        names.forEach((name) => feed(name, got[capture.indexOf(sharedInput(name))], lengths[j]))
      );
    } else {
      const hooks: ForwardHooks = { onLinearInput: (_l, name, xin, T) => feed(name, xin, T) };
      x.forEach((xj, j) => passWindow(c, lw, l, xj, lengths[j], s, scratch, hooks, until, mode));
    }
    // The fast path accumulated one H per distinct input: the other linears
    // reading it get copies (the very H their own add_batch would give).
    const copied = fast && !opts.hessians ? copyShared(c, gptq, names) : undefined;
    for (const name of names) {
      const t = performance.now();
      const [rows, cols] = linearShape(c, name);
      const key = `layers.${l}.${name}`;
      const W = W0[name];
      const r = (yield opts.hessians
        ? andThen(
          accumulators.get(name)!.finish(),
          (H) => solveLinear(st.solverFor(rows, cols, H), W, key, opts),
        )
        : andThen(copied, () => solveLinear(gptq.get(name)!, W, key, opts))) as GptqResult;
      const q: QuantizedLinear = { dense: r.q };
      linears.set(key, q);
      lw[name] = dequantize(q);
      stats.linears.push({ key, error: r.error, seconds: since(t) });
      opts.log?.(`gptq: ${key} error ${r.error.toPrecision(4)}`);
      opts.onProgress?.(stats.linears.length, c.nLayers * LINEAR_NAMES.length, `gptq ${key}`);
    }
  }
  // outs = layer(inps) with the quantized block; inps, outs = outs, inps.
  const output = plan.at(-1)!;
  if (onWorkers) {
    yield pass(output, [])(() => {});
    if (x !== inps) x.forEach((xj, j) => inps[j].set(xj));
  } else {
    x.forEach((xj, j) =>
      passWindow(c, lw, l, xj, lengths[j], s, scratch, undefined, output.until, output.mode)
    );
  }
  opts.log?.(`gptq: layers.${l} done (${since(st.t0).toFixed(1)} s)`);
  return { linears, layer: lw };
}

/**
 * Whether {@linkcode gptqBlockSteps} runs a block's calibration passes on
 * the workers: with workers, when a pass (every window through the block:
 * its linears, and its attention at maxT / 2 keys a query) is at least
 * `passMinMacs` multiply-adds.
 *
 * @param lengths the calibration windows' lengths
 * @example passesOnWorkers(config, windows.map((w) => w.length), 2); // true at LLaMA-7B
 */
export function passesOnWorkers(
  c: LlamaConfig,
  lengths: readonly number[],
  workers: number,
  passMinMacs: number = PASS_MIN_MACS,
): boolean {
  const kv = (c.dim / c.nHeads) * c.nKvHeads, maxT = Math.max(...lengths);
  const perToken = c.dim * (2 * c.dim + 2 * kv) + 3 * c.dim * c.hiddenDim + maxT * c.dim;
  return workers > 0 && lengths.reduce((a, T) => a + T, 0) * perToken >= passMinMacs;
}

/**
 * The windows' streams in shared memory: inps themselves when they are
 * there already ({@linkcode embedWindows} with `shared`), else a copy in the
 * run's shared memory (allocated once).
 */
function sharedStreams(st: SequentialState, inps: Float32Array[]): Float32Array[] {
  if (inps.every((x) => x.buffer instanceof SharedArrayBuffer)) return inps;
  st.shared ??= sharedArrays(inps.map((x) => x.length));
  st.shared.forEach((x, j) => x.set(inps[j]));
  return st.shared;
}

/** lw with every array in shared memory: copies made once per array (`copies`). */
function shareWeights(lw: LayerWeights, copies: Map<Float32Array, Float32Array>): LayerWeights {
  const out = { ...lw };
  for (const key of Object.keys(lw) as (keyof LayerWeights)[]) {
    const a = lw[key];
    if (a.buffer instanceof SharedArrayBuffer) continue;
    let b = copies.get(a);
    if (!b) {
      b = new Float32Array(new SharedArrayBuffer(a.byteLength));
      b.set(a);
      copies.set(a, b);
    }
    out[key] = b;
  }
  return out;
}

/**
 * llama_sequential one block at a time, for callers that hold one block of
 * the model in memory (eval/quantize_stream.ts): they embed the windows
 * ({@linkcode embedWindows}), then hand in block 0, 1, … with its inputs,
 * which {@linkcode GptqSequential.quantizeBlock} advances to the next
 * block's. The same steps as {@linkcode gptqQuantizeModelAsync}, so the
 * codes are its codes bit for bit.
 *
 * @example
 * ```ts
 * const g = new GptqSequential(config, windows, { bits: 3, solver: "fast" });
 * const inps = embedWindows(weights, windows);
 * for (let l = 0; l < config.nLayers; l++) {
 *   const { linears } = await g.quantizeBlock(l, source.layer(l), inps);
 * }
 * g.stats(); // per-linear errors and times
 * ```
 */
export class GptqSequential {
  #st: SequentialState;
  #next = 0;

  /**
   * @param config the model
   * @param windows calibration windows (token ids, ≤ max_seq_len each)
   * @param opts as {@linkcode gptqQuantizeModelAsync}
   * @throws {RangeError} for bad bits, windows or workers
   */
  constructor(config: LlamaConfig, windows: Int32Array[], opts: GptqModelOptions) {
    this.#st = sequentialState(config, windows, opts);
  }

  /**
   * Quantizes block `l` (blocks must come in order 0, 1, …).
   *
   * @param l the block's index
   * @param lw the block's full-precision weights (not modified)
   * @param inps block l's inputs [T_j, dim] per window (the embeddings for
   *   block 0), overwritten with the quantized block's outputs
   * @returns the block's quantized linears and fake-quantized weights
   */
  async quantizeBlock(
    l: number,
    lw: LayerWeights,
    inps: Float32Array[],
  ): Promise<GptqBlockResult> {
    if (l !== this.#next) {
      throw new RangeError(`GptqSequential: block ${l} given, expected block ${this.#next}`);
    }
    const steps = gptqBlockSteps(this.#st, l, lw, inps);
    let r = steps.next();
    while (!r.done) r = steps.next(await r.value);
    this.#next++;
    return r.value;
  }

  /** Timings and per-linear errors so far (`seconds` since construction). */
  stats(): GptqModelStats {
    return { ...this.#st.stats, seconds: since(this.#st.t0) };
  }
}
