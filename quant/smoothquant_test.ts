import assert from "node:assert/strict";
import {
  activationAbsMax,
  smoothFactors,
  smoothquantQuantizeModel,
  smoothWeights,
} from "./smoothquant.ts";
import { randomWeights, randomWindows, tinyConfig } from "../model/random.ts";
import { forward } from "../model/forward.ts";
import { rtn } from "./rtn.ts";
import { dequantizeDense } from "./format.ts";
import { linearShape } from "../model/config.ts";

const config = tinyConfig({ nKvHeads: 2 });
const base = randomWeights(config, 5);
// outlier channels, as in real LLMs: a few norm weights 20× larger
for (const lw of base.layers) for (const c of [3, 11]) lw.attnNorm[c] *= 20;
const windows = randomWindows(3, 12, config.vocabSize, 9);

Deno.test("smoothFactors() is max|X|^α / max|W|^(1−α) over every fed linear's column", () => {
  const s = smoothFactors(
    Float32Array.from([4, 9, 0]),
    [Float32Array.from([1, -1, 0, 0.5, 4, 0]), Float32Array.from([-4, 0.25, 0])],
    3,
    0.5,
  );
  // column maxima |W|: 4, 4, 0; channel 2 (0/0) keeps s = 1
  assert.deepEqual([...s], [1, 1.5, 1]);
  assert.deepEqual([...smoothFactors(Float32Array.from([8]), [Float32Array.from([2])], 1, 1)], [8]);
});

Deno.test("SmoothQuant folding leaves the fp32 model's output unchanged, and balances activation and weight maxima at α = 0.5", () => {
  const actMax = activationAbsMax(base, windows);
  const { weights, factors } = smoothWeights(base, actMax, 0.5);
  assert.ok(factors[0].attnNorm.some((s) => Math.abs(s - 1) > 0.5), "the factors are not trivial");
  for (const win of windows) {
    const a = forward(base, win).slice();
    const b = forward(weights, win);
    // fp32 rounding: each folded weight and norm entry is rounded once (~6e-8 relative)
    let diff = 0, scale = 0;
    for (let i = 0; i < a.length; i++) {
      diff = Math.max(diff, Math.abs(a[i] - b[i]));
      scale = Math.max(scale, Math.abs(a[i]));
    }
    assert.ok(diff / scale < 5e-6, `logits differ by ${diff} of ${scale}`);
  }
  // after smoothing, max|X̃_c| = max|X_c| / s_c = max|W̃_c| (α = 0.5), for the inputs of wq and w1
  const after = activationAbsMax(weights, windows);
  const l = 1;
  for (
    const [norm, lin] of [["attnNorm", ["wq", "wk", "wv"]], ["ffnNorm", ["w1", "w3"]]] as const
  ) {
    for (let c = 0; c < config.dim; c++) {
      let wmax = 0;
      for (const n of lin) {
        const W = weights.layers[l][n];
        for (let o = c; o < W.length; o += config.dim) wmax = Math.max(wmax, Math.abs(W[o]));
      }
      const x = after[l][norm][c];
      assert.ok(Math.abs(x - wmax) <= 1e-4 * wmax, `${norm} channel ${c}: ${x} vs ${wmax}`);
    }
  }
});

Deno.test("smoothquantQuantizeModel(): per-channel RTN of the smoothed weights, norms smoothed", () => {
  const r = smoothquantQuantizeModel(base, windows, { bits: 4, alpha: 0.5 });
  const smooth = smoothWeights(base, activationAbsMax(base, windows), 0.5).weights;
  for (const name of ["wq", "w2"] as const) {
    const [rows, cols] = linearShape(config, name);
    const want = rtn(smooth.layers[0][name], rows, cols, { bits: 4 });
    assert.deepEqual(r.linears.get(`layers.0.${name}`)!.dense, want);
    assert.deepEqual(r.weights.layers[0][name], dequantizeDense(want));
  }
  assert.deepEqual(r.weights.layers[0].attnNorm, smooth.layers[0].attnNorm);
  assert.deepEqual(r.weights.layers[0].wo.length, base.layers[0].wo.length);
  // bit balance reaches the grid
  const b = smoothquantQuantizeModel(base, windows, { bits: 2, alpha: 0.5, bitBalance: true });
  const d = b.linears.get("layers.0.w1")!.dense;
  assert.equal(d.bits, 3);
  assert.equal(d.kind === "uniform" && d.maxq, 4);
});
