/**
 * Perplexity through the kernels: every window of the token stream is
 * decoded one token at a time by {@linkcode GpuDecoder} (KV cache, every
 * linear layer in its packed storage format on the GPU), the logits of every
 * position are read back once per window, and the loss is eval/perplexity.ts's
 * `windowLoss`, under the same window plan (`windowPlan`) and the same
 * formula (GPTQ's `llama_eval`: nll = loss · seqlen, ppl = exp(Σ nll / (n · seqlen))).
 *
 * {@linkcode gpuPrefillPerplexity} is the fast path: every window runs as one
 * prefill (kernels/prefill.ts: tiled matmuls in each linear's packed format,
 * tiled attention, the log-softmax loss on the GPU) and only the per-window
 * mean losses are read back, many windows per submit. Both paths share the
 * window plan and GPTQ's formula; the token-by-token path stays as the
 * independent check of the decoder.
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
import { denseSource, GpuPrefill } from "../kernels/prefill.ts";
import type { Gpu } from "../kernels/device.ts";
import { quantizedSource } from "../kernels/decode.ts";
import { type LlamaWeights, protocolSeqlen } from "../model/config.ts";
import type { QuantizedLinear } from "../quant/format.ts";

/** Options of {@linkcode gpuPerplexity}. */
export interface GpuPerplexityOptions {
  /** Window length in tokens. @default model/config.ts `protocolSeqlen` (2048, or max_seq_len if shorter) */
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
  const seqlen = opts.seqlen ?? protocolSeqlen(dec.config);
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

/** Options of {@linkcode gpuPrefillPerplexity}. */
export type GpuPrefillPerplexityOptions = Pick<
  GpuPerplexityOptions,
  "limit" | "onProgress" | "label"
>;

/**
 * GPTQ's perplexity of `tokens` through the GPU prefill: windows of the
 * prefill's seqlen, each's mean loss computed on the GPU (fp32) and read
 * back `windowsPerSubmit` at a time; nll = loss · seqlen and ppl as in
 * eval/perplexity.ts (float64 sums on the host).
 *
 * @param pf the prefill, built for the window length wanted
 * @param tokens the token stream [numel]
 * @param opts window limit, progress callback, the model's label
 * @returns the same record as eval/perplexity.ts's `perplexity`
 * @throws RangeError for a bad limit or too few tokens (eval/perplexity.ts's messages)
 * @throws {NonFinitePerplexityError} at the first window whose loss is NaN, infinite or overflows exp
 * @example
 * ```ts
 * const pf = await GpuPrefill.create(gpu, q.weights, quantizedSource(q.linears), { seqlen: 512 });
 * const r = await gpuPrefillPerplexity(pf, set.tokens);
 * pf.release();
 * ```
 */
export async function gpuPrefillPerplexity(
  pf: GpuPrefill,
  tokens: Int32Array,
  opts: GpuPrefillPerplexityOptions = {},
): Promise<PerplexityResult> {
  const seqlen = pf.seqlen;
  const { windows, available } = windowPlan(
    tokens.length,
    seqlen,
    opts.limit,
    pf.config.maxSeqLen,
  );
  const t0 = performance.now();
  const wins = Array.from(
    { length: windows },
    (_, i) => tokens.subarray(i * seqlen, (i + 1) * seqlen),
  );
  const losses = await pf.windowLosses(wins, opts.onProgress);
  const nll = new Float64Array(windows); // [windows]
  for (let i = 0; i < windows; i++) {
    nll[i] = checkWindowLoss(losses[i], i, seqlen, opts.label, "GPU prefill") * seqlen;
  }
  return perplexityResult(nll, seqlen, available, (performance.now() - t0) / 1000, opts.label);
}

/** Where the CLI's perplexity runs (`--device`): the CPU forward or the GPU prefill. */
export const DEVICES = ["cpu", "gpu"] as const;
/** One of {@linkcode DEVICES}. */
export type Device = typeof DEVICES[number];

/**
 * What a GPU perplexity records as its evaluator in a result's identity
 * (reports/identity.ts): the GPU prefill's fp32 numbers equal the CPU's
 * within 1e-4 relative, not bit for bit, so they are stored under their own keys.
 */
export const GPU_EVALUATOR = "gpu-prefill";

/** Options of {@linkcode prefillPerplexity}. */
export interface PrefillPerplexityOptions extends GpuPrefillPerplexityOptions {
  /** Window length. @default model/config.ts `protocolSeqlen` (2048, or max_seq_len if shorter) */
  seqlen?: number;
}

/**
 * GPTQ's perplexity of a model on the GPU prefill, from the weights as
 * stored: builds the prefill (every linear in its packed format when
 * `linears` is given, else fp32), runs {@linkcode gpuPrefillPerplexity} and
 * releases every buffer.
 *
 * @param gpu the device
 * @param weights the model (norms, embeddings, classifier; the linears when `linears` is null)
 * @param linears the packed linears of a quantized model ("layers.{l}.{name}"), or null
 * @param tokens the token stream [numel]
 * @param opts window length and limit, progress callback, the model's label
 * @returns the same record as eval/perplexity.ts's `perplexity`
 * @example
 * ```ts
 * const r = await prefillPerplexity(await getGpu(), q.weights, q.linears, set.tokens, { limit: 4 });
 * ```
 */
export async function prefillPerplexity(
  gpu: Gpu,
  weights: LlamaWeights,
  linears: ReadonlyMap<string, QuantizedLinear> | null,
  tokens: Int32Array,
  opts: PrefillPerplexityOptions = {},
): Promise<PerplexityResult> {
  const source = linears ? quantizedSource(linears) : denseSource(weights);
  const pf = await GpuPrefill.create(gpu, weights, source, { seqlen: opts.seqlen });
  try {
    return await gpuPrefillPerplexity(pf, tokens, opts);
  } finally {
    pf.release();
  }
}
