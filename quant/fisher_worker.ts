/// <reference lib="deno.worker" />
/**
 * Worker side of {@linkcode fisherInformation}: holds one copy of the
 * weights and one {@linkcode BackwardState}, and answers chunks of windows
 * with their partial Σ g² (float64, transferred) and losses.
 *
 * @module
 */
import type { LlamaWeights } from "../model/config.ts";
import { BackwardState } from "../model/backward.ts";
import { squaredGradientSum } from "./fisher.ts";

let weights: LlamaWeights, state: BackwardState;

self.onmessage = (e: MessageEvent) => {
  const m = e.data;
  try {
    if (m.type === "init") {
      weights = m.weights;
      state = new BackwardState(weights.config, m.maxT);
      self.postMessage({ type: "ready" });
    } else {
      const { sum, losses } = squaredGradientSum(
        weights,
        m.windows,
        state,
        () => self.postMessage({ type: "window" }),
      );
      self.postMessage({ type: "partial", k: m.k, sum, losses }, [sum.buffer, losses.buffer]);
    }
  } catch (err) {
    self.postMessage({ type: "error", message: (err as Error).message });
  }
};
