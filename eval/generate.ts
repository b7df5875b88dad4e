/**
 * Text generation: greedy (temperature 0) or sampled, from BOS or a prompt,
 * with llama2.c's decoding (one token at a time through a KV cache).
 *
 * @module
 */
import type { LlamaWeights } from "../model/config.ts";
import { ReferenceDecoder } from "../model/reference.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import { mulberry32 } from "../model/random.ts";

/** Options of {@linkcode generate}. */
export interface GenerateOptions {
  /** Number of positions to run, the prompt included (llama2.c's `steps`). */
  steps: number;
  /** 0 = greedy argmax. @default 0 */
  temperature?: number;
  prompt?: string;
  seed?: number;
  /** Called with each new piece of text as it is produced. */
  onText?: (piece: string) => void;
}

/** Generates text; returns the token ids (BOS first) and the decoded text. */
export function generate(
  weights: LlamaWeights,
  tokenizer: Tokenizer,
  opts: GenerateOptions,
): { tokens: number[]; text: string } {
  const steps = Math.min(opts.steps, weights.config.maxSeqLen);
  const prompt = Array.from(tokenizer.encodeWithBos(opts.prompt ?? ""));
  const rand = mulberry32(opts.seed ?? 0);
  const dec = new ReferenceDecoder(weights);
  const tokens = [prompt[0]];
  let text = "";
  for (let pos = 0; pos < steps; pos++) {
    const logits = dec.step(tokens[pos]);
    const next = pos + 1 < prompt.length
      ? prompt[pos + 1]
      : (opts.temperature ?? 0) === 0
      ? argmax(logits)
      : sample(logits, opts.temperature!, rand());
    if (next === tokenizer.bosId) break; // llama2.c: BOS delimits sequences
    const piece = tokenizer.decodeToken(tokens[pos], next);
    text += piece;
    opts.onText?.(piece);
    tokens.push(next);
  }
  return { tokens, text };
}

function argmax(x: Float64Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

function sample(logits: Float64Array, temperature: number, coin: number): number {
  const max = Math.max(...logits);
  const p = logits.map((l) => Math.exp((l - max) / temperature));
  const sum = p.reduce((a, b) => a + b, 0);
  let cdf = 0;
  for (let i = 0; i < p.length; i++) {
    cdf += p[i] / sum;
    if (coin < cdf) return i;
  }
  return p.length - 1;
}
