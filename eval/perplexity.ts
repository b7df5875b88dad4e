/**
 * Perplexity exactly as GPTQ's `llama_eval` / SqueezeLLM's eval compute it:
 * the token stream is cut into nsamples = ⌊numel / seqlen⌋ non-overlapping
 * windows (the tail is dropped); each window's loss is the mean next-token
 * cross-entropy over its seqlen − 1 predictions, multiplied by seqlen; and
 * ppl = exp(Σ nll / (nsamples · seqlen)).
 *
 * Log-softmax is computed in the stable max-shifted form (its terms
 * e^(x − max) in float32 by the WebAssembly kernel, within 2e−7 relative)
 * and every sum is accumulated in float64. Windows may run on worker
 * threads; the per-window results are summed in window order, so the number
 * does not depend on the number of workers.
 *
 * A quantized model with activation quantization (quant/methods.ts
 * `QuantizedModel.actQuant`) is evaluated with it: `actQuant` makes every
 * block run with quant/wa_int.ts's hooks (workers build the same hooks):
 * given the model's packed `linears`, each linear with uniform codes is the
 * integer W×A product (integer accumulation, then s_w · s_x: what the W×A
 * kernels and integer hardware compute); lookup-table models (SqueezeLLM),
 * or no `linears`, get quant/act_quant.ts's fake quantization.
 *
 * @module
 */
import { type LlamaWeights, protocolSeqlen } from "../model/config.ts";
import { type BlockHooks, forward, RunState } from "../model/forward.ts";
import type { ActQuantConfig } from "../quant/act_quant.ts";
import type { QuantizedLinear } from "../quant/format.ts";
import { quantizedModelHooks } from "../quant/wa_int.ts";
import { type ProgressCallback, runTasks, type TaskHandler } from "../model/pool.ts";
import { FORWARD_KERNELS } from "../model/wasm/kernels.ts";

/** Options of {@linkcode perplexity}. */
export interface PerplexityOptions {
  /** Window length in tokens. @default model/config.ts `protocolSeqlen` (2048, or max_seq_len if shorter) */
  seqlen?: number;
  /** Evaluate only the first `limit` windows. */
  limit?: number;
  /** Worker threads (0 = this thread). @default 0 */
  workers?: number;
  /** Called after each finished window: (windows done, windows, "windows"). */
  onProgress?: ProgressCallback;
  /** Names the model in errors (e.g. "stories260K rtn.w3"). @default "the model" */
  label?: string;
  /**
   * Activation quantization to evaluate with (a quantized model's
   * `actQuant`); null or absent: none.
   */
  actQuant?: ActQuantConfig | null;
  /**
   * The quantized model's packed linears by "layers.{l}.{name}"
   * (`QuantizedModel.linears`): with `actQuant`, uniform ones are evaluated as
   * integer W×A products (module doc). Absent: fake quantization.
   */
  linears?: ReadonlyMap<string, QuantizedLinear> | null;
}

/** The result of a perplexity evaluation. */
export interface PerplexityResult {
  ppl: number;
  /** Windows evaluated. */
  windows: number;
  /** Windows available before `limit`. */
  windowsAvailable: number;
  seqlen: number;
  /** Tokens evaluated (windows × seqlen). */
  tokens: number;
  /** GPTQ's nll of each window: mean cross-entropy × seqlen. */
  windowNll: Float64Array;
  seconds: number;
}

/**
 * Mean next-token cross-entropy of one window: logits [T, vocab] predicting
 * tokens[1..T−1]. Plain version: stable log-softmax in float64.
 */
export function windowLossRef(
  logits: Float32Array,
  tokens: ArrayLike<number>,
  vocab: number,
): number {
  const T = tokens.length;
  let total = 0;
  for (let t = 0; t < T - 1; t++) {
    const o = t * vocab;
    let max = -Infinity;
    for (let v = 0; v < vocab; v++) if (logits[o + v] > max) max = logits[o + v];
    let sum = 0;
    for (let v = 0; v < vocab; v++) sum += Math.exp(logits[o + v] - max);
    const logZ = max + Math.log(sum);
    total += logZ - logits[o + tokens[t + 1]];
  }
  return total / (T - 1);
}

/**
 * Mean next-token cross-entropy of one window, as perplexity computes it:
 * logits [T, vocab] predicting tokens[1..T−1], each row's log-sum-exp by
 * the WebAssembly kernel (model/wasm/kernels.ts `logSumExp`: max-shifted,
 * terms e^(x − max) in float32 within 2e−7 + |x − max| · 6e−8 relative,
 * summed in float64), the rest in float64; {@linkcode windowLossRef} where
 * WebAssembly SIMD is missing. About 6× faster than windowLossRef, and
 * within about 1e−7 nats of it.
 */
export function windowLoss(logits: Float32Array, tokens: ArrayLike<number>, vocab: number): number {
  if (!FORWARD_KERNELS) return windowLossRef(logits, tokens, vocab);
  const T = tokens.length;
  const lse = new Float64Array(T - 1);
  FORWARD_KERNELS.logSumExp(lse, logits, T - 1, vocab);
  let total = 0;
  for (let t = 0; t < T - 1; t++) total += lse[t] - logits[t * vocab + tokens[t + 1]];
  return total / (T - 1);
}

/**
 * GPTQ's nll of window i of `tokens`: windowLoss × seqlen, as computed (NaN
 * or ±Infinity included; {@linkcode checkWindowLoss} judges it).
 */
export function windowNll(
  weights: LlamaWeights,
  tokens: Int32Array,
  i: number,
  seqlen: number,
  state: RunState,
  hooks?: BlockHooks,
): number {
  const win = tokens.subarray(i * seqlen, (i + 1) * seqlen);
  const logits = forward(weights, win, { state, hooks });
  return windowLoss(logits, win, weights.config.vocabSize) * seqlen;
}

/**
 * A perplexity that is not a finite number: some window's mean loss is NaN,
 * infinite, or so large that exp(loss) overflows (> ~709.78 nats per token).
 * The model's weights are broken; the perplexity must not be reported.
 */
export class NonFinitePerplexityError extends Error {
  override name = "NonFinitePerplexityError";
  /**
   * @param model names the model ("stories260K rtn.w3", a file)
   * @param window the first bad window (0-based)
   * @param loss that window's mean next-token loss in nats
   * @param seqlen the window length
   * @param source what produced the logits ("forward pass", "kernels")
   */
  constructor(
    readonly model: string,
    readonly window: number,
    readonly loss: number,
    seqlen: number,
    source = "forward pass",
  ) {
    const tokens = `tokens ${window * seqlen}..${(window + 1) * seqlen - 1}`;
    super(
      `perplexity of ${model} is not finite: window ${window} has ` +
        (Number.isFinite(loss)
          ? `a mean loss of ${loss.toPrecision(4)} nats per token over ${tokens}, ` +
            `whose exp overflows to Infinity`
          : `a non-finite loss (${loss}) over ${tokens}`) +
        `: the ${source} produced NaN, infinite or overflowing logits. The model's weights are ` +
        `broken (e.g. a NaN or huge norm weight or scale); check, re-create or re-quantize the model`,
    );
  }
}

/**
 * Throws {@linkcode NonFinitePerplexityError} unless window `i`'s mean loss
 * has a finite exp (its own perplexity). When every window passes, the mean
 * over windows does too, so GPTQ's ppl is finite.
 *
 * @param loss the window's mean next-token loss (nll / seqlen)
 * @param i the window index
 * @param seqlen the window length
 * @param label names the model in the error
 * @param source what produced the logits, for the error
 * @returns loss
 * @throws {NonFinitePerplexityError} for NaN, ±Infinity or a loss whose exp overflows
 * @example
 * ```ts
 * checkWindowLoss(2.5, 0, 512, "stories260K fp32"); // 2.5
 * ```
 */
export function checkWindowLoss(
  loss: number,
  i: number,
  seqlen: number,
  label = "the model",
  source?: string,
): number {
  if (!(Math.exp(loss) < Infinity)) {
    throw new NonFinitePerplexityError(label, i, loss, seqlen, source);
  }
  return loss;
}

/** Number of windows and the seqlen actually used, with clear errors. */
export function windowPlan(
  numel: number,
  seqlen: number,
  limit: number | undefined,
  maxSeqLen: number,
): { windows: number; available: number } {
  if (!Number.isInteger(seqlen) || seqlen < 2) {
    throw new RangeError(`--seqlen must be an integer ≥ 2, got ${seqlen}`);
  }
  if (seqlen > maxSeqLen) {
    throw new RangeError(`--seqlen ${seqlen} exceeds the model's max_seq_len ${maxSeqLen}`);
  }
  const available = Math.floor(numel / seqlen);
  if (available === 0) {
    throw new RangeError(`the text has ${numel} tokens, fewer than one window of ${seqlen}`);
  }
  if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) {
    throw new RangeError(`--limit must be a positive integer, got ${limit}`);
  }
  return { windows: Math.min(available, limit ?? available), available };
}

/** Perplexity of `weights` on a token stream under the GPTQ protocol. */
export async function perplexity(
  weights: LlamaWeights,
  tokens: Int32Array,
  opts: PerplexityOptions = {},
): Promise<PerplexityResult> {
  const seqlen = opts.seqlen ?? protocolSeqlen(weights.config);
  const { windows, available } = windowPlan(
    tokens.length,
    seqlen,
    opts.limit,
    weights.config.maxSeqLen,
  );
  const t0 = performance.now();
  const nll = new Float64Array(windows);
  await runTasks({
    name: "perplexity",
    worker: new URL("./perplexity_worker.ts", import.meta.url),
    handler: perplexityTasks,
    workers: Math.max(opts.workers ?? 0, 0),
    init: {
      weights,
      tokens,
      seqlen,
      actQuant: opts.actQuant ?? null,
      linears: opts.actQuant ? opts.linears ?? null : null,
    },
    tasks: windows,
    task: (i) => i,
    onResult: (i, r) => {
      checkWindowLoss(r / seqlen, i, seqlen, opts.label); // stop at the first bad window
      nll[i] = r;
      opts.onProgress?.(i + 1, windows, "windows");
    },
  });
  return perplexityResult(nll, seqlen, available, (performance.now() - t0) / 1000, opts.label);
}

/**
 * GPTQ's ppl = exp(Σ nll / (windows · seqlen)) from the per-window nll
 * (summed in window order), with the counts that go with it.
 *
 * @throws {NonFinitePerplexityError} naming `label` and the first window
 *   whose loss is not finite or overflows exp ({@linkcode checkWindowLoss})
 */
export function perplexityResult(
  nll: Float64Array,
  seqlen: number,
  windowsAvailable: number,
  seconds: number,
  label?: string,
): PerplexityResult {
  const windows = nll.length;
  let sum = 0;
  for (let i = 0; i < windows; i++) {
    checkWindowLoss(nll[i] / seqlen, i, seqlen, label);
    sum += nll[i];
  }
  return {
    ppl: Math.exp(sum / (windows * seqlen)),
    windows,
    windowsAvailable,
    seqlen,
    tokens: windows * seqlen,
    windowNll: nll,
    seconds,
  };
}

/** What a perplexity worker holds: the model, the token stream, the window length, the activation quantization. */
export interface PerplexityInit {
  weights: LlamaWeights;
  tokens: Int32Array;
  seqlen: number;
  /** Activation quantization of the evaluated model, or null. @default null */
  actQuant?: ActQuantConfig | null;
  /** The model's packed linears (integer W×A products with `actQuant`), or null. @default null */
  linears?: ReadonlyMap<string, QuantizedLinear> | null;
}

/** The perplexity pass as pool tasks: window index → GPTQ nll ({@linkcode windowNll}). */
export const perplexityTasks: TaskHandler<PerplexityInit, number, number> = {
  setup({ weights, tokens, seqlen, actQuant, linears }) {
    const state = new RunState(weights.config, seqlen);
    const hooks = actQuant
      ? quantizedModelHooks(actQuant, weights.config, seqlen, linears)
      : undefined;
    return (i) => windowNll(weights, tokens, i, seqlen, state, hooks);
  },
};
