/**
 * End to end through the W×A kernels: a linear with RTN weights and
 * per-token quantized activations (quant/act_quant.ts's grid) equals the
 * fake-quant computation, dequantized W times fake-quantized X, within 1e-4
 * relative: on random layers, and on every linear of stories260K (its real
 * activations, first window of TinyStories) for W4A8, W2*A8 (bit balance:
 * five levels, 3 planes on both sides of the 2-bit grid) and W6A6.
 */
import assert from "node:assert/strict";
import { gpuTest } from "../kernels/_testing.ts";
import { planesFor, quantizeTokens, waLinearGpu } from "./wa_linear.ts";
import { asymMaxq, fakeQuantRows } from "../quant/act_quant.ts";
import { rtn } from "../quant/rtn.ts";
import type { UniformTensor } from "../quant/format.ts";
import { dequantizeDense } from "../quant/format.ts";
import { randn } from "../model/random.ts";
import { maxRelError, SHARED_DATA, sharedData } from "../datasets/testing.ts";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { loadTokenizer } from "../model/tokenizer.ts";
import { loadEvalSet } from "../datasets/eval_sets.ts";
import { forward } from "../model/forward.ts";
import { LINEAR_NAMES, linearShape } from "../model/config.ts";
import type { LinearName } from "../model/config.ts";

const TOL = 1e-4;

/** Fake quant in float64: fakeQuantRows(x) [T, cols] · dequantize(w)ᵀ → [T, rows]. */
function fakeQuantLinear(w: UniformTensor, x: Float32Array, T: number, maxq: number) {
  const { rows, cols } = w;
  const xq = fakeQuantRows(x.slice(0, T * cols), T, cols, maxq);
  const wq = dequantizeDense(w);
  const y = new Float64Array(T * rows);
  for (let t = 0; t < T; t++) {
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let c = 0; c < cols; c++) s += xq[t * cols + c] * wq[r * cols + c];
      y[t * rows + r] = s;
    }
  }
  return y;
}

Deno.test("quantizeTokens(): scale · (q − zero) is exactly fakeQuantRows()'s value", () => {
  const x = randn(5 * 70, 3);
  x[17] = 9; // an outlier
  for (const maxq of [255, 63, 4, 3]) {
    const q = quantizeTokens(x, 70, 0, 5, maxq);
    assert.equal(q.bits, planesFor(maxq));
    const fake = fakeQuantRows(x.slice(), 5, 70, maxq);
    for (let i = 0; i < 5 * 70; i++) {
      const t = Math.floor(i / 70);
      assert.equal(
        Math.fround((q.codes[i] - q.zeros[t]) * q.scales[t]),
        fake[i],
        `maxq ${maxq} at ${i}`,
      );
    }
  }
});

gpuTest(
  "waLinearGpu(): RTN weights × per-token activations equal the fake-quant linear (1e-4)",
  async (gpu) => {
    const cases = [
      // [wBits, bitBalance, groupSize, abits, rows, cols, T, kernel]
      [4, false, 128, 8, 40, 256, 11, "bitplane"],
      [2, true, null, 8, 33, 172, 9, "bitplane"], // W2*A8
      [6, false, null, 6, 30, 96, 8, "bitplane"],
      [2, true, 64, 2, 20, 128, 3, "bitplane"], // W2*A2*
      [8, false, null, 8, 25, 200, 10, "int8"],
      [4, false, 64, 8, 25, 128, 5, "int8"],
    ] as const;
    for (const [wBits, bb, group, abits, rows, cols, T, kernel] of cases) {
      const w = rtn(randn(rows * cols, rows + cols, 0.05), rows, cols, {
        bits: wBits,
        groupSize: group,
        bitBalance: bb,
      });
      const x = randn(T * cols, T + cols);
      x[3] = 6; // an outlier
      const maxq = asymMaxq(abits, bb);
      const got = await waLinearGpu(gpu, w, x, T, maxq, { kernel });
      const err = maxRelError(got, fakeQuantLinear(w, x, T, maxq));
      const name = `W${wBits}${bb ? "*" : ""}A${abits} g${group ?? "row"} ${kernel}`;
      assert.ok(err <= TOL, `${name}: relative error ${err}`);
    }
  },
);

gpuTest(
  "every stories260K linear through the bit-plane kernel equals its fake-quant output (1e-4): W4A8, W2*A8, W6A6",
  async (gpu) => {
    const weights = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));
    const tokenizer = await loadTokenizer(sharedData("stories260K/tok512.model"));
    const T = 16;
    const set = await loadEvalSet("tinystories", {
      dataDir: SHARED_DATA,
      tokenizer,
      seqlen: 128,
      offline: true,
    });
    // The real inputs of every linear on one window (full precision forward).
    const inputs = new Map<string, Float32Array>();
    forward(weights, set.tokens.subarray(0, T), {
      hooks: {
        onLinearInput(l: number, name: LinearName, x: Float32Array, n: number) {
          const [, cols] = linearShape(weights.config, name);
          inputs.set(`${l}.${name}`, x.slice(0, n * cols));
        },
      },
    });
    for (const [wBits, bb, abits] of [[4, false, 8], [2, true, 8], [6, false, 6]] as const) {
      const maxq = asymMaxq(abits, bb);
      let worst = 0;
      for (let l = 0; l < weights.config.nLayers; l++) {
        for (const name of LINEAR_NAMES) {
          const [rows, cols] = linearShape(weights.config, name);
          const w = rtn(weights.layers[l][name], rows, cols, { bits: wBits, bitBalance: bb });
          const x = inputs.get(`${l}.${name}`)!;
          const got = await waLinearGpu(gpu, w, x, T, maxq);
          const err = maxRelError(got, fakeQuantLinear(w, x, T, maxq));
          assert.ok(err <= TOL, `W${wBits}${bb ? "*" : ""}A${abits} layers.${l}.${name}: ${err}`);
          worst = Math.max(worst, err);
        }
      }
      console.log(
        `W${wBits}${bb ? "*" : ""}A${abits}: worst relative error over every linear ${
          worst.toExponential(2)
        }`,
      );
    }
  },
);
