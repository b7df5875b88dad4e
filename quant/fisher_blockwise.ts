/**
 * SqueezeLLM's Fisher information (quant/fisher.ts: F = Σ_windows g ⊙ g of
 * every linear weight) with one block of the model in fp32 at a time, for
 * models whose fp32 weights do not fit in memory. The numbers are
 * quant/fisher.ts's, bit for bit: the same forward and backward pieces
 * (model/backward.ts) run in the same order on the same values, and the
 * squares are summed in the same order (a float64 partial per
 * {@linkcode FISHER_CHUNK} windows, the partials added in order).
 *
 * The backward pass needs every block's activations of a window, so the
 * pass runs in three sweeps over the blocks, each block's weights read
 * from the {@linkcode WeightSource} once per sweep:
 *
 *   1. forward, first block to last: the residual stream x [T, dim] of
 *      every window goes through block l; its input to block l is saved in
 *      a scratch file (one region [Σ T, dim] per block);
 *   2. head: the loss of every window and its gradient dx at the final
 *      residual (final RMSNorm, classifier, cross-entropy);
 *   3. backward, last block to first: block l's saved inputs are read back,
 *      its activations recomputed from them (model/backward.ts
 *      `blockForwardSaved`), its backward (`blockBackward`) turns each
 *      window's dx into the gradient at its input and gives the block's
 *      weight gradients, whose squares are summed into that block's F;
 *      block l's F is then handed to the caller and let go.
 *
 * Memory: one block's weights and their transposes, its F and one partial
 * (float64), the residual stream and its gradient of every window
 * (2 · windows · T · dim floats; 0.8 GB each for 100 windows of 512 at
 * LLaMA-7B's 4096), one window's activations; the embedding only while
 * embedding, the classifier and its transpose only for the head. Measured
 * on a synthetic fp16 checkpoint of dim 1024, 8 blocks, vocabulary 32000
 * (620 MB in fp32), 2 windows of 128: peak RSS 888 MiB, against 3776 MiB
 * for quant/fisher.ts on the whole model (43 s against 33 s on one core of
 * a loaded machine: each block is run forward twice). Blocks are spread
 * over worker threads by groups of windows, the block in shared memory. The scratch file holds
 * nLayers · windows · T · dim floats (27 GB for that LLaMA-7B run).
 * {@linkcode writeFisherCheckpoint} writes F in the layout of SqueezeLLM's
 * gradient script, which `--fisher DIR` reads block by block
 * (model/hf.ts `openHfFisher`).
 *
 * @module
 */
import {
  BackwardState,
  blockBackward,
  blockForwardSaved,
  headBackward,
  transpose,
  transposeLayer,
} from "../model/backward.ts";
import type { LayerWeights, LinearName, LlamaConfig, LlamaWeights } from "../model/config.ts";
import { HF_LINEAR_NAMES, LINEAR_NAMES, linearShape } from "../model/config.ts";
import { embed } from "../model/forward.ts";
import { hfConfigText, permuteRotateHalf } from "../model/hf.ts";
import { type ProgressCallback, runTasks, type TaskHandler } from "../model/pool.ts";
import { DEFAULT_WORKERS } from "./spec.ts";
import { SAFETENSORS_INDEX, writeSafetensors } from "../model/safetensors.ts";
import type { WeightSource } from "../model/weight_source.ts";
import { checkFisherWindows, FISHER_CHUNK, FISHER_CODE_VERSION, fisherLayout } from "./fisher.ts";
import { fisherCacheKey, windowsSha256 } from "./fisher_cache.ts";

/** Options of {@linkcode fisherInformationBlockwise}. */
export interface BlockwiseFisherOptions {
  /** Called after each block of each sweep: (steps done, 2 · nLayers, "blocks"). */
  onProgress?: ProgressCallback;
  /** Where the scratch file of block inputs goes (deleted at the end). @default the system's temp dir */
  scratchDir?: string;
  /**
   * Worker threads (0 = this thread); the numbers do not depend on it. The
   * pool starts anew for each block of each sweep (about 0.4 s of CPU per
   * worker on the 2-core machine), so by default only a block worth more
   * than that uses it: 0 below {@linkcode POOL_MIN_WORK} weights × rows.
   * @default DEFAULT_WORKERS (0 for small blocks)
   */
  workers?: number;
}

/**
 * Weights of a block × calibration rows (Σ window lengths) from which the
 * default {@linkcode BlockwiseFisherOptions.workers} is the machine's cores:
 * about 6 flops each, seconds of work per block sweep (stories260K: 2 · 10⁸
 * for 8 windows of 512; LLaMA-7B: 10¹³ for 100).
 */
export const POOL_MIN_WORK = 2 ** 33;

/** What {@linkcode fisherInformationBlockwise} returns besides the blocks' F. */
export interface BlockwiseFisherResult {
  /** Windows summed. */
  windows: number;
  /** Seconds the pass took. */
  seconds: number;
  /** Mean of the windows' losses (nats), a sanity figure. */
  meanLoss: number;
  /** Bytes of the scratch file. */
  scratchBytes: number;
}

/**
 * The diagonal Fisher information of every linear weight over `windows`
 * (quant/fisher.ts `fisherInformation`'s numbers), one block in fp32 at a
 * time: block l's F goes to `onBlock(l, F)` as soon as it is complete,
 * last block first.
 *
 * @param src the model, read block by block
 * @param windows calibration windows of token ids (official: 100 × 512)
 * @param onBlock receives each block's F: linear name → [out, in] float32, llama2.c's layout
 * @param opts progress, scratch dir
 * @returns window count, seconds, mean loss, scratch size
 * @throws {RangeError} for no windows, a window of the wrong length, a token
 *   outside the vocabulary or a non-finite loss
 * @example
 * ```ts
 * using src = await openHfWeights("/models/Llama-2-7b-hf");
 * const F: Record<LinearName, Float32Array>[] = [];
 * await fisherInformationBlockwise(src, windows, (l, f) => F[l] = f);
 * ```
 */
export async function fisherInformationBlockwise(
  src: WeightSource,
  windows: Int32Array[],
  onBlock: (l: number, fisher: Record<LinearName, Float32Array>) => void,
  opts: BlockwiseFisherOptions = {},
): Promise<BlockwiseFisherResult> {
  const c = src.config;
  const maxT = checkFisherWindows(c, windows);
  const t0 = performance.now();
  const { dim, nLayers } = c;
  const steps = 2 * nLayers;
  // A block's state: the block sits in slot 0, its input in xIn[0], its output in xIn[1]; no
  // vocabulary-sized buffers (the head has its own state, without blocks).
  const c1: LlamaConfig = { ...c, nLayers: 1, vocabSize: 1, sharedClassifier: true };
  const cHead: LlamaConfig = { ...c, nLayers: 0, sharedClassifier: true };
  // Window n's rows [T_n, dim] of the residual stream X and its gradient dX.
  const start: number[] = [];
  let rows = 0;
  for (const w of windows) {
    start.push(rows * dim);
    rows += w.length;
  }
  start.push(rows * dim);
  const blockWork = fisherLayout(c1).total * rows;
  const workers = opts.workers ?? (blockWork >= POOL_MIN_WORK ? DEFAULT_WORKERS : 0);
  const X = new Float32Array(rows * dim), dX = new Float32Array(rows * dim);
  const at = (a: Float32Array, n: number) => a.subarray(start[n], start[n + 1]);
  // embed() reads only the config and the embedding, read for it and let go; the blocks come
  // from src one at a time, the classifier for the head.
  const input = { config: c, tokenEmbedding: src.tokenEmbedding() } as LlamaWeights;
  windows.forEach((w, n) => embed(input, w, at(X, n)));
  // Block l over every window, in groups of FISHER_CHUNK windows (the tasks of the worker pool).
  const groups = Math.ceil(windows.length / FISHER_CHUNK);
  const group = (k: number) => {
    const n0 = k * FISHER_CHUNK, n1 = Math.min(windows.length, n0 + FISHER_CHUNK);
    return { n0, lengths: windows.slice(n0, n1).map((w) => w.length) };
  };
  // On this thread one block state serves every block and sweep.
  const state = workers === 0 ? new BackwardState(c1, maxT) : undefined;
  const overBlock = (
    l: number,
    backward: boolean,
    onResult: (k: number, r: BlockResult) => void,
  ) => {
    const lw = src.layer(l);
    return runTasks({
      name: "Fisher",
      worker: new URL("./fisher_blockwise_worker.ts", import.meta.url),
      handler: blockTasks,
      workers,
      // On workers the block travels in shared memory: one copy, not one per worker.
      init: { config: c1, lw: workers > 0 ? sharedLayer(lw) : lw, maxT, backward, state },
      tasks: groups,
      task: (k) => {
        const { n0, lengths } = group(k);
        const [a, b] = [start[n0], start[n0 + lengths.length]];
        return { lengths, x: X.slice(a, b), dx: backward ? dX.slice(a, b) : undefined };
      },
      transferTask: (t) => t.dx ? [t.x.buffer, t.dx.buffer] : [t.x.buffer],
      onResult,
    });
  };

  const scratchPath = Deno.makeTempFileSync({ dir: opts.scratchDir, prefix: "sqb-fisher-" });
  const regionBytes = X.byteLength;
  try {
    using scratch = Deno.openSync(scratchPath, { read: true, write: true });
    const bytes = new Uint8Array(X.buffer);
    // 1. Forward: save each block's input, run the block.
    for (let l = 0; l < nLayers; l++) {
      scratch.seekSync(l * regionBytes, Deno.SeekMode.Start);
      for (let o = 0; o < bytes.length;) o += scratch.writeSync(bytes.subarray(o));
      await overBlock(l, false, (k, r) => X.set(r.x, start[group(k).n0]));
      opts.onProgress?.(l + 1, steps, "blocks");
    }

    // 2. Head: each window's loss and its gradient at the final residual.
    let lossSum = 0;
    {
      const s = new BackwardState(cHead, maxT);
      const finalNorm = src.finalNorm(), classifier = src.classifier() ?? src.tokenEmbedding();
      const classifierT = transpose(
        new Float32Array(classifier.length),
        classifier,
        c.vocabSize,
        dim,
      );
      windows.forEach((w, n) => {
        s.xIn[0].set(at(X, n));
        const loss = headBackward(cHead, finalNorm, classifier, classifierT, w, s);
        if (!Number.isFinite(loss)) {
          throw new RangeError(`Fisher: calibration window ${n} has a non-finite loss (${loss})`);
        }
        lossSum += loss;
        at(dX, n).set(s.dx.subarray(0, w.length * dim));
      });
    }

    // 3. Backward, last block first: recompute the block from its saved inputs, sum g².
    const { offsets, total } = fisherLayout(c1);
    for (let l = nLayers - 1; l >= 0; l--) {
      scratch.seekSync(l * regionBytes, Deno.SeekMode.Start);
      for (let o = 0; o < bytes.length;) {
        const got = scratch.readSync(bytes.subarray(o));
        if (got === null) throw new Error(`Fisher: scratch file ${scratchPath} ended early`);
        o += got;
      }
      // quant/fisher.ts's order: a partial per FISHER_CHUNK windows, added to F in order.
      const F = new Float64Array(total);
      await overBlock(l, true, (k, r) => {
        dX.set(r.dx!, start[group(k).n0]);
        for (let i = 0; i < total; i++) F[i] += r.sum![i];
      });
      onBlock(
        l,
        Object.fromEntries(LINEAR_NAMES.map((name, k) => {
          const o = offsets[0][k];
          return [name, Float32Array.from(F.subarray(o, offsets[0][k + 1] ?? total))];
        })) as Record<LinearName, Float32Array>,
      );
      opts.onProgress?.(2 * nLayers - l, steps, "blocks");
    }
    return {
      windows: windows.length,
      seconds: (performance.now() - t0) / 1000,
      meanLoss: lossSum / windows.length,
      scratchBytes: nLayers * regionBytes,
    };
  } finally {
    Deno.removeSync(scratchPath);
  }
}

/** What a block task's worker holds: one block (shared memory on workers) and the sweep. */
export interface BlockInit {
  config: LlamaConfig;
  lw: LayerWeights;
  maxT: number;
  /** The backward sweep (else the forward). */
  backward: boolean;
  /** A state to reuse (on this thread only: it does not cross to workers). */
  state?: BackwardState;
}

/** A group of windows through one block: their rows of the residual stream (and its gradient). */
export interface BlockTask {
  lengths: number[];
  x: Float32Array<ArrayBuffer>;
  dx?: Float32Array<ArrayBuffer>;
}

/**
 * Forward: x, the block's outputs. Backward: dx, the gradient at the block's
 * inputs, and sum, Σ g² of the group's windows from zero
 * ({@linkcode fisherLayout} of one block).
 */
export interface BlockResult {
  x: Float32Array<ArrayBuffer>;
  dx?: Float32Array<ArrayBuffer>;
  sum?: Float64Array<ArrayBuffer>;
}

/** The sweeps of {@linkcode fisherInformationBlockwise} as pool tasks (fisher_blockwise_worker.ts). */
export const blockTasks: TaskHandler<BlockInit, BlockTask, BlockResult> = {
  setup({ config, lw, maxT, backward, state }) {
    const s = state ?? new BackwardState(config, maxT);
    const wt = backward ? transposeLayer(config, lw) : undefined;
    const { offsets, total } = fisherLayout(config);
    const g = s.grads.layers[0];
    return ({ lengths, x, dx }) => {
      const sum = wt ? new Float64Array(total) : undefined;
      let o = 0;
      for (const T of lengths) {
        const n = T * config.dim, xt = x.subarray(o, o + n);
        s.xIn[0].set(xt);
        blockForwardSaved(config, lw, 0, T, s);
        if (!wt) xt.set(s.xIn[1].subarray(0, n));
        else {
          const dxt = dx!.subarray(o, o + n);
          s.dx.set(dxt);
          blockBackward(config, lw, wt, 0, T, s);
          dxt.set(s.dx.subarray(0, n));
          LINEAR_NAMES.forEach((name, k) => {
            const gk = g[name], at = offsets[0][k];
            for (let i = 0; i < gk.length; i++) sum![at + i] += gk[i] * gk[i];
          });
        }
        o += n;
      }
      return { x, dx, sum };
    };
  },
  transfer: (r) => [r.x.buffer, ...(r.dx ? [r.dx.buffer] : []), ...(r.sum ? [r.sum.buffer] : [])],
};

/** A copy of a block's weights in SharedArrayBuffers, shared with the workers instead of cloned. */
function sharedLayer(lw: LayerWeights): LayerWeights {
  return Object.fromEntries(
    Object.entries(lw).map(([k, a]) => {
      const b = new Float32Array(new SharedArrayBuffer(a.byteLength));
      b.set(a);
      return [k, b];
    }),
  ) as unknown as LayerWeights;
}

/** The shard file of block l of a Fisher checkpoint written by {@linkcode writeFisherCheckpoint}. */
export function fisherShardName(l: number, nLayers: number): string {
  const pad = (i: number) => String(i).padStart(5, "0");
  return `model-${pad(l + 1)}-of-${pad(nLayers)}.safetensors`;
}

/**
 * Computes the Fisher information block by block
 * ({@linkcode fisherInformationBlockwise}) and writes it into `dir` in the
 * layout of SqueezeLLM's gradient script (kssteven418/SqueezeLLM-gradients):
 * a Hugging Face checkpoint of the squared gradients under the model's
 * tensor names (float32; q and k rows in Hugging Face's rotate-half order,
 * as the script saves them), one safetensors shard per block with
 * `model.safetensors.index.json`, config.json written last (a folder
 * without it is an interrupted run). `--fisher DIR` reads it back.
 *
 * @param dir the folder (created; files of the same names are replaced)
 * @param src the model
 * @param windows calibration windows
 * @param opts progress, scratch dir (default: `dir`)
 * @returns as {@linkcode fisherInformationBlockwise}, with the bytes written
 */
export async function writeFisherCheckpoint(
  dir: string,
  src: WeightSource,
  windows: Int32Array[],
  opts: BlockwiseFisherOptions = {},
): Promise<BlockwiseFisherResult & { bytes: number }> {
  const c = src.config;
  Deno.mkdirSync(dir, { recursive: true });
  const weightMap: Record<string, string> = {};
  let bytes = 0, tensorBytes = 0;
  const r = await fisherInformationBlockwise(src, windows, (l, f) => {
    const file = fisherShardName(l, c.nLayers);
    const tensors = LINEAR_NAMES.map((name) => {
      const hf = name === "wq"
        ? permuteRotateHalf(f.wq, c.nHeads, c.dim)
        : name === "wk"
        ? permuteRotateHalf(f.wk, c.nKvHeads, c.dim)
        : f[name];
      const hfName = `model.layers.${l}.${HF_LINEAR_NAMES[name]}.weight`;
      return { name: hfName, dtype: "F32", shape: linearShape(c, name), data: hf };
    });
    for (const t of tensors) {
      weightMap[t.name] = file;
      tensorBytes += t.data.byteLength;
    }
    bytes += writeSafetensors(
      `${dir}/${file}`,
      tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape })),
      (_, i) => new Uint8Array(tensors[i].data.buffer),
      { format: "pt" },
    );
  }, { ...opts, scratchDir: opts.scratchDir ?? dir });
  const sorted = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => a < b ? -1 : 1));
  Deno.writeTextFileSync(
    `${dir}/${SAFETENSORS_INDEX}`,
    JSON.stringify({ metadata: { total_size: tensorBytes }, weight_map: sorted }, null, 2),
  );
  Deno.writeTextFileSync(`${dir}/config.json`, hfConfigText(c, "F32"));
  return { ...r, bytes };
}

/** Options of {@linkcode cachedFisherCheckpoint}. */
export interface CachedFisherCheckpointOptions {
  /** The folder of cached Fisher information (`<cache dir>/fisher`). */
  cacheDir: string;
  /** The checkpoint and calibration data, as quant/fisher_cache.ts `cachedFisher` keys them. */
  key: string;
  onProgress?: ProgressCallback;
  /** Worker threads. @default DEFAULT_WORKERS */
  workers?: number;
}

/**
 * {@linkcode writeFisherCheckpoint} computed once: kept in
 * `cacheDir/fisher-<key>.hf/` under quant/fisher_cache.ts's key (the
 * caller's checkpoint and calibration identity, window count and length,
 * sha256 of the token ids, {@linkcode FISHER_CODE_VERSION}); written into a
 * temporary folder renamed into place, so a folder there is complete.
 *
 * @param src the model
 * @param windows calibration windows
 * @param opts cache folder, key, progress
 * @returns the folder (for model/hf.ts `openHfFisher`) and whether it was computed now
 */
export async function cachedFisherCheckpoint(
  src: WeightSource,
  windows: Int32Array[],
  opts: CachedFisherCheckpointOptions,
): Promise<{ dir: string; computed: boolean }> {
  checkFisherWindows(src.config, windows);
  const key = fisherCacheKey({
    key: opts.key,
    nsamples: windows.length,
    seqlen: Math.max(...windows.map((w) => w.length)),
    windowsSha256: windowsSha256(windows),
    codeVersion: FISHER_CODE_VERSION,
  });
  const dir = `${opts.cacheDir}/fisher-${key}.hf`;
  try {
    Deno.statSync(`${dir}/config.json`);
    return { dir, computed: false };
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const tmp = `${dir}.tmp-${Deno.pid}`;
  try {
    Deno.removeSync(tmp, { recursive: true }); // left by a run of the same pid that was killed
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  await writeFisherCheckpoint(tmp, src, windows, {
    onProgress: opts.onProgress,
    workers: opts.workers,
  });
  Deno.renameSync(tmp, dir);
  return { dir, computed: true };
}
