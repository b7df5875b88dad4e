import assert from "node:assert/strict";
import { BackwardState, lossAndGradients } from "./backward.ts";
import type { Gradients } from "./backward.ts";
import { loadCheckpoint } from "./checkpoint.ts";
import type { LlamaConfig, LlamaWeights } from "./config.ts";
import { LINEAR_NAMES } from "./config.ts";
import { forward } from "./forward.ts";
import { mulberry32, randomWeights, tinyConfig } from "./random.ts";
import { ReferenceDecoder } from "./reference.ts";
import { windowLoss } from "../eval/perplexity.ts";
import { sharedData } from "../datasets/testing.ts";

const tiny = (sharedClassifier: boolean): LlamaConfig =>
  tinyConfig({ dim: 8, hiddenDim: 12, vocabSize: 13, maxSeqLen: 8, sharedClassifier });
const TOKENS = [1, 7, 3, 12, 3, 0];

/** The window loss in float64 through model/reference.ts's token-at-a-time decoder. */
function referenceLoss(w: LlamaWeights, tokens: number[]): number {
  const dec = new ReferenceDecoder(w);
  let total = 0;
  for (let t = 0; t < tokens.length - 1; t++) {
    const logits = dec.step(tokens[t]);
    let max = -Infinity;
    for (const v of logits) max = Math.max(max, v);
    let sum = 0;
    for (const v of logits) sum += Math.exp(v - max);
    total += max + Math.log(sum) - logits[tokens[t + 1]];
  }
  return total / (tokens.length - 1);
}

/**
 * dLoss/d(arr[i]) by central differences of the float64 reference loss, with
 * Richardson extrapolation over steps h and h/2 (error O(h⁴)). The weights
 * are float32, so each step is the difference of the stored perturbed values.
 */
function finiteDifference(w: LlamaWeights, arr: Float32Array, i: number, tokens: number[]): number {
  const orig = arr[i];
  const diff = (h: number) => {
    arr[i] = orig + h;
    const up = arr[i], lp = referenceLoss(w, tokens);
    arr[i] = orig - h;
    const down = arr[i], lm = referenceLoss(w, tokens);
    arr[i] = orig;
    return (lp - lm) / (up - down);
  };
  const h = 2 ** -6;
  return (4 * diff(h / 2) - diff(h)) / 3;
}

/** Every weight tensor with its gradient, named as in reports. */
function pairs(w: LlamaWeights, g: Gradients): [string, Float32Array, Float32Array][] {
  const out: [string, Float32Array, Float32Array][] = [];
  w.layers.forEach((lw, l) => {
    for (const name of LINEAR_NAMES) out.push([`layers.${l}.${name}`, lw[name], g.layers[l][name]]);
    out.push([`layers.${l}.attnNorm`, lw.attnNorm, g.layers[l].attnNorm]);
    out.push([`layers.${l}.ffnNorm`, lw.ffnNorm, g.layers[l].ffnNorm]);
  });
  out.push(["tokenEmbedding", w.tokenEmbedding, g.tokenEmbedding]);
  if (g.classifier) out.push(["classifier", w.classifier, g.classifier]);
  out.push(["finalNorm", w.finalNorm, g.finalNorm]);
  return out;
}

const FD_CASES: [string, LlamaConfig, number][] = [
  ["shared classifier, head size 2", tiny(true), 3],
  ["separate classifier, head size 2", tiny(false), 4],
  // head size 6: one block of four head features plus a left-over pair
  ["shared classifier, head size 6", { ...tiny(true), dim: 12, nHeads: 2, nKvHeads: 1 }, 5],
];

for (const [what, config, seed] of FD_CASES) {
  Deno.test(
    `lossAndGradients() matches float64 finite differences for every weight type (${what})`,
    () => {
      const w = randomWeights(config, seed);
      const { loss, grads } = lossAndGradients(w, TOKENS);
      assert.ok(Math.abs(loss - referenceLoss(w, TOKENS)) < 1e-5 * loss);
      const rand = mulberry32(11);
      let checked = 0;
      for (const [name, arr, g] of pairs(w, grads)) {
        assert.equal(g.length, arr.length, `${name}: gradient shape`);
        let gmax = 0, imax = 0;
        for (let i = 0; i < g.length; i++) {
          if (Math.abs(g[i]) > gmax) [gmax, imax] = [Math.abs(g[i]), i];
        }
        assert.ok(gmax > 0, `${name}: gradient is all zero`);
        const picks = [imax, ...Array.from({ length: 4 }, () => Math.floor(rand() * arr.length))];
        if (name === "tokenEmbedding") picks.push(TOKENS[2] * w.config.dim + 5); // a looked-up row
        for (const i of picks) {
          const fd = finiteDifference(w, arr, i, TOKENS);
          // Relative error, with a floor of 1e-3 · max|g| for entries near zero
          // (the float32 backward is accurate to ~1e-7 of the tensor's scale).
          const rel = Math.abs(g[i] - fd) / Math.max(Math.abs(fd), 1e-3 * gmax);
          assert.ok(rel <= 1e-3, `${name}[${i}]: backward ${g[i]} vs finite difference ${fd}`);
          checked++;
        }
      }
      // 9 tensors per layer (7 linears, 2 norms) + embedding, final norm, classifier.
      const tensors = 9 * config.nLayers + (config.sharedClassifier ? 2 : 3);
      assert.ok(checked >= tensors * 5);
    },
  );
}

Deno.test("lossAndGradients() loss equals the cross-entropy of forward()'s logits", () => {
  const c: LlamaConfig = { ...tiny(false), dim: 24, hiddenDim: 40, nHeads: 6, maxSeqLen: 40 };
  const w = randomWeights(c, 9);
  const tokens = Array.from({ length: 37 }, (_, i) => (i * 5 + 2) % c.vocabSize);
  const state = new BackwardState(c, 40);
  const { loss } = lossAndGradients(w, tokens, { state });
  const want = windowLoss(forward(w, tokens), tokens, c.vocabSize);
  assert.ok(Math.abs(loss - want) <= 1e-6 * want, `${loss} vs ${want}`);
  // A shorter window on the same state gives the same as a fresh state.
  const short = tokens.slice(0, 9);
  const a = lossAndGradients(w, short, { state });
  const wq = a.grads.layers[1].wq.slice(), lossA = a.loss;
  const b = lossAndGradients(w, short);
  assert.equal(lossA, b.loss);
  assert.deepEqual(wq, b.grads.layers[1].wq);
});

Deno.test("lossAndGradients() rejects windows that are too short, too long or out of vocabulary", () => {
  const w = randomWeights(tiny(true), 1);
  assert.throws(() => lossAndGradients(w, [3]), /≥ 2 tokens/);
  assert.throws(() => lossAndGradients(w, new Array(9).fill(1)), /max_seq_len 8/);
  assert.throws(
    () => lossAndGradients(w, [1, 2, 3], { state: new BackwardState(w.config, 2) }),
    /exceeds the state's 2/,
  );
  assert.throws(() => lossAndGradients(w, [1, 13]), /outside the vocabulary/);
});

Deno.test("lossAndGradients() on stories260K: a 512-token window's gradient is finite and nonzero", async () => {
  const w = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));
  const rand = mulberry32(5);
  const tokens = Int32Array.from({ length: 512 }, () => Math.floor(rand() * w.config.vocabSize));
  tokens[0] = 1;
  const { loss, grads } = lossAndGradients(w, tokens);
  assert.ok(Number.isFinite(loss) && loss > 0);
  for (const [name, , g] of pairs(w, grads)) {
    let sq = 0;
    for (const v of g) {
      assert.ok(Number.isFinite(v), `${name} has a non-finite gradient`);
      sq += v * v;
    }
    assert.ok(sq > 0, `${name} gradient is zero`);
  }
});
