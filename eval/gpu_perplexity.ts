/**
 * Perplexity through the kernels: every window of the token stream is
 * decoded one token at a time by {@linkcode GpuDecoder} (KV cache, every
 * linear layer in its packed storage format on the GPU), the logits of every
 * position are read back once per window, and the loss is eval/perplexity.ts's
 * `windowLoss`, under the same window plan (`windowPlan`) and the same
 * formula (GPTQ's `llama_eval`: nll = loss · seqlen, ppl = exp(Σ nll / (n · seqlen))).
 *
 * This is the check llm-awq issue #109 asks for: a packed-kernel perplexity
 * (16.38 there) that disagrees with the fake-quant perplexity (5.60) means
 * the packing or the kernel is wrong, whatever the quantizer did.
 *
 * @module
 */
import type { PerplexityResult } from "./perplexity.ts";
import { checkWindowLoss, perplexityResult, windowLoss, windowPlan } from "./perplexity.ts";
import type { GpuDecoder } from "../kernels/decode.ts";

/** Options of {@linkcode gpuPerplexity}. */
export interface GpuPerplexityOptions {
  /** Window length in tokens. @default the decoder's max_seq_len */
  seqlen?: number;
  /** Evaluate only the first `limit` windows. */
  limit?: number;
  /** Called after each finished window with the count done so far. */
  onProgress?: (done: number, total: number) => void;
  /** Called with each window's logits [seqlen, vocab] (for comparisons against a CPU forward). */
  onLogits?: (window: number, logits: Float32Array) => void;
  /** Names the model in errors (e.g. "stories260K rtn.w3"). @default "the model" */
  label?: string;
}

/**
 * GPTQ's perplexity of `tokens` with the model held by `dec` (any formats),
 * each window decoded from position 0 with the KV cache.
 *
 * @param dec the decoder (reset to position 0 before every window)
 * @param tokens the token stream [numel]
 * @param opts window length, window limit, progress and logits callbacks, the model's label
 * @returns the same record as eval/perplexity.ts's `perplexity`
 * @throws RangeError for a bad seqlen / limit (eval/perplexity.ts's messages)
 * @throws {NonFinitePerplexityError} at the first window whose loss is NaN, infinite or overflows exp
 * @example
 * ```ts
 * const dec = await GpuDecoder.create(gpu, q.weights, quantizedSource(q.linears));
 * const r = await gpuPerplexity(dec, set.tokens, { seqlen: 128, limit: 2 });
 * dec.release();
 * ```
 */
export async function gpuPerplexity(
  dec: GpuDecoder,
  tokens: Int32Array,
  opts: GpuPerplexityOptions = {},
): Promise<PerplexityResult> {
  const { maxSeqLen, vocabSize } = dec.config;
  const seqlen = opts.seqlen ?? maxSeqLen;
  const { windows, available } = windowPlan(tokens.length, seqlen, opts.limit, maxSeqLen);
  const t0 = performance.now();
  const nll = new Float64Array(windows); // [windows]
  for (let i = 0; i < windows; i++) {
    const win = tokens.subarray(i * seqlen, (i + 1) * seqlen);
    dec.reset();
    const logits = await dec.forward(win); // [seqlen, vocab]
    opts.onLogits?.(i, logits);
    const loss = checkWindowLoss(
      windowLoss(logits, win, vocabSize),
      i,
      seqlen,
      opts.label,
      "kernels",
    );
    nll[i] = loss * seqlen;
    opts.onProgress?.(i + 1, windows);
  }
  return perplexityResult(nll, seqlen, available, (performance.now() - t0) / 1000, opts.label);
}
