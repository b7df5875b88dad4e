import assert from "node:assert/strict";
import { loadCheckpoint } from "./checkpoint.ts";
import {
  block,
  BLOCK_STAGES,
  type BlockStage,
  embed,
  forward,
  RunState,
  stageOf,
} from "./forward.ts";
import { ReferenceDecoder } from "./reference.ts";
import { randomWeights, tinyConfig } from "./random.ts";
import type { LinearName, LlamaWeights } from "./config.ts";
import { linearShape, withLinears } from "./config.ts";
import { maxRelError, sharedData } from "../datasets/testing.ts";

/** Logits of every position, one token at a time through the reference decoder. */
function referenceLogits(w: LlamaWeights, tokens: number[]): Float64Array {
  const V = w.config.vocabSize;
  const dec = new ReferenceDecoder(w);
  const out = new Float64Array(tokens.length * V);
  tokens.forEach((t, i) => out.set(dec.step(t), i * V));
  return out;
}

Deno.test("forward() equals the plain token-at-a-time reference on stories260K (1e-4 relative)", async () => {
  const w = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));
  const tokens = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 13, 10, 500];
  const got = forward(w, tokens);
  assert.ok(maxRelError(got, referenceLogits(w, tokens)) < 1e-4);
});

Deno.test("forward() equals the reference on a random grouped-query model with a separate classifier", () => {
  const c = tinyConfig({
    dim: 24,
    hiddenDim: 40,
    nLayers: 3,
    nHeads: 6,
    vocabSize: 50,
    maxSeqLen: 40,
    sharedClassifier: false,
  });
  const w = randomWeights(c, 7);
  const tokens = Array.from({ length: 33 }, (_, i) => (i * 17 + 3) % 50);
  assert.ok(maxRelError(forward(w, tokens), referenceLogits(w, tokens)) < 1e-4);
});

Deno.test("forward() reports every linear layer's input with the right shape, and reuses its state", () => {
  const c = tinyConfig();
  const w = randomWeights(c, 2);
  const seen: string[] = [];
  const state = new RunState(c);
  const tokens = [1, 5, 7, 9, 2];
  const a = forward(w, tokens, { state }).slice();
  forward(w, tokens, {
    state,
    hooks: {
      onLinearInput(layer, name: LinearName, x, T) {
        assert.equal(T, 5);
        assert.ok(x.length >= T * linearShape(c, name)[1]);
        seen.push(`${layer}.${name}`);
      },
    },
  });
  assert.deepEqual(seen.slice(0, 7), ["0.wq", "0.wk", "0.wv", "0.wo", "0.w1", "0.w3", "0.w2"]);
  assert.equal(seen.length, 14);
  assert.deepEqual(forward(w, tokens, { state }), a);
});

Deno.test("block() with `until` reports the same inputs as a full run up to that stage, then stops", () => {
  const c = tinyConfig();
  const w = randomWeights(c, 5);
  const tokens = [1, 4, 9, 16, 3, 7], T = tokens.length;
  const x0 = new Float32Array(T * c.dim);
  embed(w, tokens, x0);
  const run = (until: BlockStage) => {
    const s = new RunState(c, T), x = x0.slice(), seen: [LinearName, Float32Array][] = [];
    block(c, w.layers[1], 1, x, T, s, {
      onLinearInput(layer, name, xin, T) {
        assert.equal(layer, 1);
        seen.push([name, xin.slice(0, T * linearShape(c, name)[1])]);
      },
    }, until);
    return { x, seen };
  };
  const full = run("block");
  assert.deepEqual(full.seen.map(([n]) => n), ["wq", "wk", "wv", "wo", "w1", "w3", "w2"]);
  const reported = { qkv: 3, wo: 4, ffn: 6, block: 7 };
  for (const until of BLOCK_STAGES) {
    const part = run(until);
    assert.deepEqual(part.seen, full.seen.slice(0, reported[until]), until);
    if (until === "block") assert.deepEqual(part.x, full.x);
  }
  assert.equal(stageOf(["wk", "wv", "wq"]), "qkv");
  assert.equal(stageOf(["wo"]), "wo");
  assert.equal(stageOf(["w3", "w1"]), "ffn");
  assert.equal(stageOf(["w1", "w2", "wq"]), "block");
});

Deno.test("block() hooks: a replaced linear input equals scaled weights, residuals are reported, attention can be swapped", () => {
  const c = tinyConfig();
  const w = randomWeights(c, 6);
  const tokens = [1, 4, 9, 16, 3, 7], T = tokens.length;
  const x0 = new Float32Array(T * c.dim);
  embed(w, tokens, x0);
  const lw = w.layers[0];
  const s = new RunState(c, T);
  // Reading 2·x into w1 equals w1 with every weight doubled (both exact in fp32).
  const doubled = x0.slice();
  block(c, lw, 0, doubled, T, s, {
    replaceLinearInput: (_l, name, x, T) =>
      name === "w1" ? x.subarray(0, T * c.dim).map((v) => 2 * v) : undefined,
  });
  const want = x0.slice();
  block(c, { ...lw, w1: lw.w1.map((v) => 2 * v) }, 0, want, T, s);
  assert.deepEqual(doubled, want);
  assert.notDeepEqual(
    doubled,
    (() => {
      const x = x0.slice();
      block(c, lw, 0, x, T, s);
      return x;
    })(),
  );
  // The residual stream after the attention and after the block.
  const residuals: [string, Float32Array][] = [];
  const x = x0.slice();
  block(c, lw, 0, x, T, s, {
    onResidual: (_l, after, xr, T) => residuals.push([after, xr.slice(0, T * c.dim)]),
  });
  assert.deepEqual(residuals.map(([a]) => a), ["attention", "block"]);
  assert.deepEqual(residuals[1][1], x.subarray(0, T * c.dim));
  const xw = x0.slice();
  block(c, lw, 0, xw, T, s, undefined, "wo");
  const attended = x0.slice(0, T * c.dim);
  for (let i = 0; i < attended.length; i++) attended[i] += s.out[i];
  assert.deepEqual(residuals[0][1], attended);
  // An attention hook that outputs zeros leaves x + wo·0 = x after the attention.
  const zeroAtt: [string, Float32Array][] = [];
  block(c, lw, 0, x0.slice(), T, s, {
    attention: (_l, b, T) => b.att.fill(0, 0, T * c.dim),
    onResidual: (_l, after, xr, T) => zeroAtt.push([after, xr.slice(0, T * c.dim)]),
  });
  assert.deepEqual(zeroAtt[0][1], x0);
});

Deno.test("withLinears() replaces one layer and changes the logits; rejects a wrong size", () => {
  const c = tinyConfig({ nKvHeads: 4 });
  const w = randomWeights(c, 4);
  const zeroed = withLinears(
    w,
    (l, name, x) => (l === 1 && name === "w2" ? new Float32Array(x.length) : undefined),
  );
  assert.notDeepEqual(forward(zeroed, [1, 2, 3]), forward(w, [1, 2, 3]));
  assert.equal(zeroed.layers[0].w2, w.layers[0].w2);
  assert.throws(
    () => withLinears(w, () => new Float32Array(3)),
    /layers\.0\.wq has 256 weights, replacement has 3/,
  );
});

Deno.test("forward() rejects token ids outside the vocabulary and windows beyond max_seq_len", () => {
  const c = tinyConfig({
    dim: 8,
    hiddenDim: 8,
    nLayers: 1,
    nHeads: 2,
    vocabSize: 10,
    maxSeqLen: 4,
  });
  const w = randomWeights(c, 1);
  assert.throws(() => forward(w, [1, 10]), /token 10 at position 1 is outside the vocabulary/);
  assert.throws(() => forward(w, [1, 2, 3, 4, 5]), /exceeds/);
});
