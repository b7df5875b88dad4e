/// <reference lib="deno.worker" />
/**
 * Worker side of {@linkcode perplexity}: holds one copy of the weights and
 * the token stream, and answers window indices with their nll.
 *
 * @module
 */
import type { LlamaWeights } from "../model/config.ts";
import { RunState } from "../model/forward.ts";
import { windowNll } from "./perplexity.ts";

let weights: LlamaWeights, tokens: Int32Array, seqlen: number, state: RunState;

self.onmessage = (e: MessageEvent) => {
  const m = e.data;
  try {
    if (m.type === "init") {
      ({ weights, tokens, seqlen } = m);
      state = new RunState(weights.config, seqlen);
      self.postMessage({ type: "ready" });
    } else {
      self.postMessage({
        type: "nll",
        i: m.i,
        nll: windowNll(weights, tokens, m.i, seqlen, state),
      });
    }
  } catch (err) {
    self.postMessage({ type: "error", message: (err as Error).message });
  }
};
