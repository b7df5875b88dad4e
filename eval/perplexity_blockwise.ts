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
 * @module
 */
import type { LlamaWeights } from "../model/config.ts";
import { block, type BlockHooks, embed, head, RunState } from "../model/forward.ts";
import type { ProgressCallback } from "../model/pool.ts";
import type { WeightSource } from "../model/weight_source.ts";
import { ACT_OFF_BITS, type ActQuantConfig, actQuantHooks } from "../quant/act_quant.ts";
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
  /** Window length in tokens. @default the model's maxSeqLen */
  seqlen?: number;
  /** Evaluate only the first `limit` windows. */
  limit?: number;
  /** Windows whose activations are held together (each block is read once per chunk). @default 8 */
  chunk?: number;
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
 * @param opts seqlen, limit, chunk, activation quantization, progress
 * @returns the same result as eval/perplexity.ts `perplexity` on the whole model
 * @throws {RangeError} for a seqlen or limit out of range, or a token outside the vocabulary
 * @throws {NonFinitePerplexityError} at the first window whose loss is not finite
 * @example
 * ```ts
 * using src = await openHfWeights("/models/Llama-2-7b-hf");
 * const r = await perplexityBlockwise(src, set.tokens, { seqlen: 2048 });
 * ```
 */
export function perplexityBlockwise(
  src: WeightSource,
  tokens: Int32Array,
  opts: BlockwisePerplexityOptions = {},
): Promise<PerplexityResult> {
  const c = src.config;
  const seqlen = opts.seqlen ?? c.maxSeqLen;
  const { windows, available } = windowPlan(tokens.length, seqlen, opts.limit, c.maxSeqLen);
  const chunk = opts.chunk ?? 8;
  if (!Number.isInteger(chunk) || chunk < 1) {
    throw new RangeError(`perplexityBlockwise(): chunk must be a positive integer, got ${chunk}`);
  }
  const t0 = performance.now();
  const tokenEmbedding = src.tokenEmbedding();
  // embed() and head() read only these fields; the blocks come from src one at a time
  const ends: LlamaWeights = {
    config: c,
    tokenEmbedding,
    layers: [],
    finalNorm: src.finalNorm(),
    classifier: src.classifier() ?? tokenEmbedding,
  };
  const state = new RunState(c, seqlen);
  const hooks: BlockHooks | undefined = opts.actQuant
    ? blockwiseActHooks(src, opts.actQuant, seqlen)
    : undefined;
  const nll = new Float64Array(windows);
  const n = seqlen * c.dim;
  for (let w0 = 0; w0 < windows; w0 += chunk) {
    const w1 = Math.min(windows, w0 + chunk);
    const win = (w: number) => tokens.subarray(w * seqlen, (w + 1) * seqlen);
    const x = new Float32Array((w1 - w0) * n); // [windows of the chunk, seqlen, dim]
    for (let w = w0; w < w1; w++) embed(ends, win(w), x.subarray((w - w0) * n, (w - w0 + 1) * n));
    for (let l = 0; l < c.nLayers; l++) {
      const lw = src.layer(l);
      for (let w = w0; w < w1; w++) {
        block(c, lw, l, x.subarray((w - w0) * n, (w - w0 + 1) * n), seqlen, state, hooks);
      }
    }
    for (let w = w0; w < w1; w++) {
      const logits = head(ends, x.subarray((w - w0) * n, (w - w0 + 1) * n), seqlen, state);
      nll[w] = windowLoss(logits, win(w), c.vocabSize) * seqlen;
      checkWindowLoss(nll[w] / seqlen, w, seqlen, opts.label); // stop at the first bad window
    }
    opts.onProgress?.(w1, windows, "windows");
  }
  return Promise.resolve(
    perplexityResult(nll, seqlen, available, (performance.now() - t0) / 1000, opts.label),
  );
}

/**
 * The activation-quantization hooks of `src`: integer W×A products of a
 * quantized model file's uniform linears (read one block at a time, the
 * current block's kept), else fake quantization.
 */
function blockwiseActHooks(src: WeightSource, act: ActQuantConfig, seqlen: number): BlockHooks {
  const file = src as Partial<QuantizedModelReader>;
  const linear = file.linear;
  if (
    act.abits < ACT_OFF_BITS && linear && file.layouts && file.layouts.size > 0 &&
    [...file.layouts.values()].every(isIntLinear)
  ) {
    return intActQuantHooks(act, src.config, seqlen, new IntWeights((k) => linear(k), 1));
  }
  return actQuantHooks(act, src.config, seqlen);
}
