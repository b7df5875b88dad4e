/**
 * The CPU W×A linear (quant/wa_int.ts) against the kernels' CPU emulation
 * (waLinearCpu: kernels/bitplane_reference.ts's exact accumulator, then the
 * kernels' f32 epilogue) and against fake quantization, on random layers and
 * on every linear of stories260K with its real activations (first window of
 * TinyStories): W4A8, W2*A8, W6A6, W8A8.
 */
import assert from "node:assert/strict";
import { waLinearCpu } from "./wa_linear.ts";
import { asymMaxq, fakeQuantRows } from "../quant/act_quant.ts";
import { intLinear, intWeight, quantizeActs } from "../quant/wa_int.ts";
import { rtn } from "../quant/rtn.ts";
import type { UniformTensor } from "../quant/format.ts";
import { dequantizeDense } from "../quant/format.ts";
import { randn } from "../model/random.ts";
import { matmul } from "../model/matmul.ts";
import { forward } from "../model/forward.ts";
import { LINEAR_NAMES, linearShape } from "../model/config.ts";
import type { LinearName } from "../model/config.ts";
import { evalSet, weights } from "./_ppl_testing.ts";

const SETTINGS = [[4, 8, false], [2, 8, true], [6, 6, false], [8, 8, false]] as const;

/** quant/wa_int.ts's product y [T, rows]. */
function cpuInt(w: UniformTensor, x: Float32Array, T: number, maxq: number): Float32Array {
  const iw = intWeight(w);
  return intLinear(new Float32Array(T * w.rows), quantizeActs(x, T, iw, maxq), iw);
}

/** Fake quantization: fakeQuantRows(x) · dequantize(w)ᵀ summed by the f32 matmul. */
function fakeLinear(w: UniformTensor, x: Float32Array, T: number, maxq: number): Float32Array {
  const y = new Float32Array(T * w.rows);
  const xq = fakeQuantRows(x.slice(0, T * w.cols), T, w.cols, maxq);
  matmul(y, xq, dequantizeDense(w), T, w.cols, w.rows);
  return y;
}

/** max |a − b| / max |b|. */
function relDiff(a: Float32Array, b: Float32Array): number {
  let d = 0, n = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    n = Math.max(n, Math.abs(b[i]));
  }
  return d / n;
}

Deno.test("intLinear() is waLinearCpu() bit for bit on random layers (odd shapes, one group per row)", () => {
  for (const [rows, cols, T] of [[5, 3, 1], [13, 70, 9], [64, 172, 8], [31, 33, 17]]) {
    for (const [wBits, abits, bitBalance] of SETTINGS) {
      const w = rtn(randn(rows * cols, rows + cols), rows, cols, { bits: wBits, bitBalance });
      const x = randn(T * cols, T + wBits);
      x[3 % x.length] = 40; // an outlier
      const maxq = asymMaxq(abits, bitBalance);
      const want = waLinearCpu(w, x, T, maxq);
      assert.deepEqual(cpuInt(w, x, T, maxq), want, `${rows}×${cols} W${wBits}A${abits}`);
      const rel = relDiff(want, fakeLinear(w, x, T, maxq));
      assert.ok(rel < 1e-5, `fake quant within f32 rounding: ${rel}`);
    }
  }
});

Deno.test("intLinear() on every stories260K linear with its real activations: waLinearCpu() bit for bit, fake quant within 1e-5 of the largest output", async () => {
  const set = await evalSet("tinystories", 64);
  const inputs = new Map<string, Float32Array>(); // "l.name" → x [T, cols]
  forward(weights, set.tokens.subarray(0, 64), {
    hooks: {
      onLinearInput(l: number, name: LinearName, x: Float32Array, T: number) {
        inputs.set(`${l}.${name}`, x.slice(0, T * linearShape(weights.config, name)[1]));
      },
    },
  });
  let differs = 0;
  for (const [wBits, abits, bitBalance] of SETTINGS) {
    const maxq = asymMaxq(abits, bitBalance);
    for (let l = 0; l < weights.config.nLayers; l++) {
      for (const name of LINEAR_NAMES) {
        const [rows, cols] = linearShape(weights.config, name);
        const w = rtn(weights.layers[l][name], rows, cols, { bits: wBits, bitBalance });
        const x = inputs.get(`${l}.${name}`)!;
        const want = waLinearCpu(w, x, 64, maxq);
        assert.deepEqual(cpuInt(w, x, 64, maxq), want, `layer ${l} ${name} W${wBits}A${abits}`);
        const fake = fakeLinear(w, x, 64, maxq);
        assert.ok(relDiff(want, fake) < 1e-5, `layer ${l} ${name}: ${relDiff(want, fake)}`);
        if (want.some((v, i) => v !== fake[i])) differs++;
      }
    }
  }
  assert.ok(differs > 0, "fake quantization's f32 sums differ from the integer product somewhere");
});
