/**
 * Perplexity with one block's weights in memory at a time: the GPTQ
 * protocol of eval/perplexity.ts, run block-major instead of window-major,
 * for checkpoints whose fp32 weights do not fit (LLaMA-7B: 27 GB).
 *
 * ```
 * for each chunk of `chunk` windows:            activations x [chunk, seqlen, dim]
 *   x = embed(window)                           token embedding (kept: [vocab, dim])
 *   for each block l:                           WeightSource.layer(l): read, decoded, dropped
 *     x_w = block(x_w) for every window w       model/forward.ts block(), the same call
 *   nll_w = loss(head(x_w))                     final norm and classifier (kept)
 * ```
 *
 * Each window goes through exactly the calls of eval/perplexity.ts's
 * forward (embed, block 0..L−1, head, windowLoss), so every window's nll and
 * the perplexity are bit-identical to it; only the order of the work
 * differs. Memory: the embedding and classifier, one block in fp32, and
 * chunk × seqlen × dim activations. The price: the blocks are read
 * ⌈windows / chunk⌉ times (from the page cache after the first chunk, and a
 * read plus fp16 decode costs far less than a block's matmuls over a chunk).
 *
 * With activation quantization, a quantized model file read block by block
 * (quant/qmodel.ts `openQuantizedModel`) is evaluated as eval/perplexity.ts
 * evaluates it loaded: uniform linears as integer W×A products
 * (quant/wa_int.ts, each block's codes read when it is evaluated), others
 * with fake quantization.
 *
 * With `workers`, each chunk is split into one part per worker, and every
 * step above (embed, block l, head) of one part is a model/pool.ts task:
 * tasks go out in order (chunk, step, part), this thread reads block l once
 * for all parts while the workers compute, and the activations stay in one
 * SharedArrayBuffer. A step of a part waits (Atomics.wait) until that part's
 * previous step is done, on whichever thread it ran; the oldest task handed
 * out never waits, so the pass cannot stall. Each worker holds a copy of the
 * embedding and classifier and of the block it is applying.
 *
 * @module
 */
import {
  type LayerWeights,
  LINEAR_NAMES,
  type LlamaConfig,
  type LlamaWeights,
  protocolSeqlen,
} from "../model/config.ts";
import { block, embed, head, RunState } from "../model/forward.ts";
import { type ProgressCallback, runTasks, type TaskHandler } from "../model/pool.ts";
import type { WeightSource } from "../model/weight_source.ts";
import { ACT_OFF_BITS, type ActQuantConfig, actQuantHooks } from "../quant/act_quant.ts";
import type { QuantizedLinear } from "../quant/format.ts";
import type { QuantizedModelReader } from "../quant/qmodel.ts";
import { intActQuantHooks, IntWeights, isIntLinear } from "../quant/wa_int.ts";
import {
  checkWindowLoss,
  type PerplexityResult,
  perplexityResult,
  windowLoss,
  windowPlan,
} from "./perplexity.ts";

/** Options of {@linkcode perplexityBlockwise}. */
export interface BlockwisePerplexityOptions {
  /** Window length in tokens. @default model/config.ts `protocolSeqlen` (2048, or max_seq_len if shorter) */
  seqlen?: number;
  /** Evaluate only the first `limit` windows. */
  limit?: number;
  /** Windows whose activations are held together (each block is read once per chunk). @default 8 */
  chunk?: number;
  /** Worker threads sharing each chunk (0: this thread); at most `chunk` are used. @default 0 */
  workers?: number;
  /** Activation quantization to evaluate with; null or absent: none. */
  actQuant?: ActQuantConfig | null;
  /** Names the model in errors. @default "the model" */
  label?: string;
  /** (windows done, windows, "windows") after each chunk. */
  onProgress?: ProgressCallback;
}

/**
 * Perplexity of the model `src` reads, block by block (see the module doc).
 *
 * @param src the weights, read one block at a time
 * @param tokens the evaluation token stream
 * @param opts seqlen, limit, chunk, workers, activation quantization, progress
 * @returns the same result as eval/perplexity.ts `perplexity` on the whole model, for any chunk and workers
 * @throws {RangeError} for a seqlen, limit, chunk or workers out of range, or a token outside the vocabulary
 * @throws {NonFinitePerplexityError} at the first window whose loss is not finite
 * @example
 * ```ts
 * using src = await openHfWeights("/models/Llama-2-7b-hf");
 * const r = await perplexityBlockwise(src, set.tokens, { seqlen: 2048, workers: 2 });
 * ```
 */
export async function perplexityBlockwise(
  src: WeightSource,
  tokens: Int32Array,
  opts: BlockwisePerplexityOptions = {},
): Promise<PerplexityResult> {
  const c = src.config;
  const seqlen = opts.seqlen ?? protocolSeqlen(c);
  const { windows, available } = windowPlan(tokens.length, seqlen, opts.limit, c.maxSeqLen);
  const chunk = opts.chunk ?? 8, workers = opts.workers ?? 0;
  if (!Number.isInteger(chunk) || chunk < 1) {
    throw new RangeError(`perplexityBlockwise(): chunk must be a positive integer, got ${chunk}`);
  }
  if (!Number.isInteger(workers) || workers < 0) {
    throw new RangeError(`perplexityBlockwise(): workers must be an integer ≥ 0, got ${workers}`);
  }
  const t0 = performance.now();
  const parts = Math.max(1, Math.min(workers, chunk));
  // a worker gets copies: of the arrays alone, not of larger buffers they may be views of
  const own = (a: Float32Array) =>
    workers > 0 && a.byteLength < a.buffer.byteLength ? a.slice() : a;
  const tokenEmbedding = src.tokenEmbedding();
  const steps = new Int32Array(new SharedArrayBuffer(4 * (parts + 1)));
  const linear = opts.actQuant ? integerLinears(src, opts.actQuant) : null;
  const init: BlockwiseInit = {
    config: c,
    seqlen,
    actQuant: opts.actQuant ?? null,
    integer: linear !== null,
    tokenEmbedding: own(tokenEmbedding),
    finalNorm: own(src.finalNorm()),
    classifier: own(src.classifier() ?? tokenEmbedding),
    activations: new SharedArrayBuffer(4 * Math.min(chunk, windows) * seqlen * c.dim),
    steps: steps.buffer as SharedArrayBuffer,
  };
  const stepsPerChunk = c.nLayers + 2; // embed, the blocks, head
  const chunks = Math.ceil(windows / chunk);
  /** Task k: step `stage` of the chunk from window w0, on its part's windows w0 + from … w0 + to − 1. */
  const where = (k: number) => {
    const part = k % parts, step = (k - part) / parts;
    const stage = step % stepsPerChunk, w0 = ((step - stage) / stepsPerChunk) * chunk;
    const m = Math.min(windows, w0 + chunk) - w0; // windows of the chunk
    const from = Math.floor((part * m) / parts), to = Math.floor(((part + 1) * m) / parts);
    return { step, part, stage, w0, from, to };
  };
  let read: // block l of this chunk
    | { step: number; weights: LayerWeights; linears: Map<string, QuantizedLinear> | null }
    | undefined;
  const nll = new Float64Array(windows);
  try {
    await runTasks<BlockwiseInit, BlockwiseTask, Float64Array<ArrayBuffer> | null>({
      name: "perplexity (blockwise)",
      worker: new URL("./perplexity_blockwise_worker.ts", import.meta.url),
      handler: blockwiseTasks,
      workers: workers > 0 ? parts : 0,
      init,
      tasks: chunks * stepsPerChunk * parts,
      task(k) {
        const { step, part, stage, w0, from, to } = where(k);
        const at = { step, part, from, count: to - from };
        if (stage === 0 || stage === stepsPerChunk - 1) {
          const text = tokens.slice((w0 + from) * seqlen, (w0 + to) * seqlen);
          return { ...at, stage: stage === 0 ? "embed" : "head", tokens: text };
        }
        const l = stage - 1;
        if (read?.step !== step) {
          const lw = src.layer(l);
          const key = (name: string) => `layers.${l}.${name}`;
          read = {
            step,
            weights: mapLayer(lw, own),
            linears: linear && new Map(LINEAR_NAMES.map((name) => [key(name), linear(key(name))])),
          };
        }
        return { ...at, stage: "block", layer: l, weights: read.weights, linears: read.linears };
      },
      onResult(k, nllOfPart) {
        if (!nllOfPart) return; // not a head step
        const { part, w0, from, to } = where(k);
        nllOfPart.forEach((v, i) => {
          nll[w0 + from + i] = v;
          checkWindowLoss(v / seqlen, w0 + from + i, seqlen, opts.label); // stop at the first bad window
        });
        if (part === parts - 1) opts.onProgress?.(w0 + to, windows, "windows");
      },
    });
  } finally {
    Atomics.store(steps, parts, 1); // a step still waiting gives up (the pass failed)
    Atomics.notify(steps, parts);
    for (let p = 0; p < parts; p++) Atomics.notify(steps, p);
  }
  return perplexityResult(nll, seqlen, available, (performance.now() - t0) / 1000, opts.label);
}

/** What every thread of a blockwise pass holds (structured clone; the SharedArrayBuffers are shared). */
export interface BlockwiseInit {
  config: LlamaConfig;
  seqlen: number;
  actQuant: ActQuantConfig | null;
  /** With actQuant: the block tasks carry the packed linears, evaluated as integer W×A products. */
  integer: boolean;
  tokenEmbedding: Float32Array;
  finalNorm: Float32Array;
  classifier: Float32Array;
  /** Float32 [chunk, seqlen, dim]: the residual stream of the chunk's windows. */
  activations: SharedArrayBuffer;
  /** Int32 [parts + 1]: the steps each part has done, then a flag set when the pass failed. */
  steps: SharedArrayBuffer;
}

/**
 * One step of one part of a chunk: its windows are the activations' slots
 * from … from + count − 1; `step` counts the part's steps since the first chunk.
 */
export type BlockwiseTask =
  & { step: number; part: number; from: number; count: number }
  & (
    | { stage: "embed" | "head"; tokens: Int32Array } // [count · seqlen]
    | {
      stage: "block";
      layer: number;
      weights: LayerWeights;
      /** "layers.{layer}.{name}" → packed linear, when {@linkcode BlockwiseInit.integer}. */
      linears: ReadonlyMap<string, QuantizedLinear> | null;
    }
  );

/** The steps of {@linkcode perplexityBlockwise}: head returns the windows' nll, the others null. */
export const blockwiseTasks: TaskHandler<
  BlockwiseInit,
  BlockwiseTask,
  Float64Array<ArrayBuffer> | null
> = {
  setup(init) {
    const { config: c, seqlen } = init;
    // embed() and head() read only these fields; the blocks come with the tasks
    const ends: LlamaWeights = { ...init, layers: [] };
    const state = new RunState(c, seqlen);
    let linears: ReadonlyMap<string, QuantizedLinear> = new Map(); // the current block's
    const hooks = !init.actQuant
      ? undefined
      : init.integer
      ? intActQuantHooks(init.actQuant, c, seqlen, new IntWeights((k) => linears.get(k)!, 1))
      : actQuantHooks(init.actQuant, c, seqlen);
    const x = new Float32Array(init.activations), steps = new Int32Array(init.steps);
    const n = seqlen * c.dim;
    return (task) => {
      awaitStep(steps, task.part, task.step);
      const slot = (i: number) => x.subarray((task.from + i) * n, (task.from + i + 1) * n);
      let nll: Float64Array<ArrayBuffer> | null = null;
      if (task.stage === "block") {
        if (task.linears) linears = task.linears;
        for (let i = 0; i < task.count; i++) {
          block(c, task.weights, task.layer, slot(i), seqlen, state, hooks);
        }
      } else {
        const text = (i: number) => task.tokens.subarray(i * seqlen, (i + 1) * seqlen);
        if (task.stage === "embed") {
          for (let i = 0; i < task.count; i++) embed(ends, text(i), slot(i));
        } else {
          nll = new Float64Array(task.count);
          for (let i = 0; i < task.count; i++) {
            nll[i] = windowLoss(head(ends, slot(i), seqlen, state), text(i), c.vocabSize) * seqlen;
          }
        }
      }
      Atomics.store(steps, task.part, task.step + 1);
      Atomics.notify(steps, task.part);
      return nll;
    };
  },
  transfer: (nll) => (nll ? [nll.buffer] : []),
};

/** Blocks until `part` has done `step` steps (its previous step may run on another thread). */
function awaitStep(steps: Int32Array, part: number, step: number): void {
  for (let done = Atomics.load(steps, part); done !== step; done = Atomics.load(steps, part)) {
    if (Atomics.load(steps, steps.length - 1) !== 0) {
      throw new Error("perplexityBlockwise(): the pass failed elsewhere");
    }
    Atomics.wait(steps, part, done, 1000);
  }
}

/** A block's weights with `f` applied to each array. */
function mapLayer(lw: LayerWeights, f: (a: Float32Array) => Float32Array): LayerWeights {
  return Object.fromEntries(
    Object.entries(lw).map(([k, a]) => [k, f(a)]),
  ) as unknown as LayerWeights;
}

/**
 * The packed linears of `src` when it is a quantized model file whose
 * activations go through integer W×A products (every linear uniform, `act`
 * quantizing activations), else null (fake quantization).
 */
function integerLinears(
  src: WeightSource,
  act: ActQuantConfig,
): ((key: string) => QuantizedLinear) | null {
  const file = src as Partial<QuantizedModelReader>;
  const linear = file.linear;
  const integer = act.abits < ACT_OFF_BITS && linear && file.layouts && file.layouts.size > 0 &&
    [...file.layouts.values()].every(isIntLinear);
  return integer ? (key) => linear.call(src, key) : null;
}
