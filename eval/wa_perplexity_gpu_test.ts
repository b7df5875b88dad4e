/**
 * Perplexity through the W×A kernels against fake quantization
 * (eval/perplexity.ts with quant/act_quant.ts's hooks) on stories260K: RTN
 * weights (one group per row, ABQ-LLM's W×A setting), per-token activations,
 * KV quantization at the activation width (quant/act_quant.ts's default) in
 * both paths; the first 2 windows of 128 tokens of the TinyStories eval set.
 *
 * - waForward()'s block-by-block orchestration, fed the CPU fake-quant
 *   linears, gives eval/perplexity.ts's perplexity bit for bit.
 * - W4A8 and W6A6 through the bit-plane kernel: within 1e-4 relative.
 * - The kernel path is the kernels' integer arithmetic bit for bit
 *   (waLinearCpu: exact Σ (q_x − z_x)(q_w − z_w), then (s_w·s_x)·acc in f32):
 *   the same codes, zeros and scales as fake quantization, for W2*A8 too.
 * - W2*A8 (bit balance: five-level weights, 3 planes) through the bit-plane
 *   kernel and W8A8 through the int8 kernel: within 1e-4, or within twice
 *   the fake-quant perplexity's own sensitivity to float32 rounding (its
 *   change when every weight moves by ±2e-7 relative), whichever is larger.
 *   The cause of the gap (2.7e-3 on W2*A8): fake quantization sums the
 *   dequantized products x̂·ŵ in f32, the kernels sum integer codes exactly,
 *   so a linear's outputs differ in the last bits (≤ 9e-8 of Σ|x̂ŵ|); the
 *   next per-token (or per-head) 8-bit quantizer then puts a few values on
 *   the other side of a rounding boundary (0 to 6 codes of the thousands in
 *   a linear's output, on these windows), and dynamic quantization carries
 *   such a step forward. The W2* model amplifies it: its fake-quant
 *   perplexity moves by 1e-3 to 3e-3 under a ±2e-7 weight perturbation, or
 *   when its linears are summed in f64 instead of f32, more than the
 *   kernels differ from it. Only the same summation in both paths could
 *   bring it under 1e-4.
 */
import assert from "node:assert/strict";
import { gpuTest } from "../kernels/_testing.ts";
import { uniformLinears, waForward, WaLinears, waPerplexity } from "./wa_perplexity.ts";
import { waLinearCpu } from "./wa_linear.ts";
import type { WaKernelName } from "./wa_perplexity.ts";
import { perplexity } from "./perplexity.ts";
import { actQuantOf, asymMaxq, fakeQuantRows } from "../quant/act_quant.ts";
import { rtn } from "../quant/rtn.ts";
import type { UniformTensor } from "../quant/format.ts";
import { dequantizeDense } from "../quant/format.ts";
import type { LlamaWeights } from "../model/config.ts";
import { LINEAR_NAMES, linearKey, linearShape, withLinears } from "../model/config.ts";
import { matmul } from "../model/matmul.ts";
import { RunState } from "../model/forward.ts";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { loadTokenizer } from "../model/tokenizer.ts";
import { loadEvalSet } from "../datasets/eval_sets.ts";
import { SHARED_DATA, sharedData } from "../datasets/testing.ts";
import { forward } from "../model/forward.ts";
import { actQuantHooks } from "../quant/act_quant.ts";

const SEQLEN = 128, WINDOWS = 2, TOL = 1e-4;
const weights = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));
const tokenizer = await loadTokenizer(sharedData("stories260K/tok512.model"));
const set = await loadEvalSet("tinystories", {
  dataDir: SHARED_DATA,
  tokenizer,
  seqlen: SEQLEN,
  offline: true,
});

/** RTN with one group per row of every block linear. */
function rtnLinears(bits: number, bitBalance: boolean): Map<string, UniformTensor> {
  const linears = new Map<string, UniformTensor>();
  for (let l = 0; l < weights.config.nLayers; l++) {
    for (const n of LINEAR_NAMES) {
      const [rows, cols] = linearShape(weights.config, n);
      linears.set(linearKey(l, n), rtn(weights.layers[l][n], rows, cols, { bits, bitBalance }));
    }
  }
  return linears;
}

/** The fake-quant model: every block linear dequantized, each weight times (1 + eps). */
function fakeModel(linears: Map<string, UniformTensor>, eps = 0): LlamaWeights {
  return withLinears(
    weights,
    (l, n) => dequantizeDense(linears.get(linearKey(l, n))!).map((v) => Math.fround(v * (1 + eps))),
  );
}

gpuTest(
  "waForward() with the CPU fake-quant linears is eval/perplexity.ts's fake-quant forward, bit for bit",
  async (gpu) => {
    const linears = rtnLinears(4, false);
    const act = actQuantOf({ abits: 8 })!;
    const fake = fakeModel(linears);
    const maxq = asymMaxq(8, false);
    const lin = WaLinears.create(gpu, linears, maxq);
    try {
      // The same object shape as WaLinears, its linears computed on the CPU as fake quant does.
      const cpu = Object.create(lin) as WaLinears;
      cpu.run = (key: string, x: Float32Array, T: number) => {
        const w = linears.get(key)!;
        const y = new Float32Array(T * w.rows);
        const xq = fakeQuantRows(x.slice(0, T * w.cols), T, w.cols, maxq);
        matmul(y, xq, dequantizeDense(w), T, w.cols, w.rows);
        return Promise.resolve(y);
      };
      const win = set.tokens.subarray(0, SEQLEN);
      const got = await waForward(weights, cpu, act, win, new RunState(weights.config, SEQLEN));
      const want = forward(fake, win, { hooks: actQuantHooks(act, weights.config, SEQLEN) });
      assert.deepEqual(got, want);
    } finally {
      lin.release();
    }
  },
);

gpuTest(
  "waForward() through the bit-plane kernels is the kernels' integer arithmetic emulated on the CPU (waLinearCpu), bit for bit: W2*A8, W4A8, W6A6",
  async (gpu) => {
    for (
      const [wBits, abits, bitBalance] of [[2, 8, true], [4, 8, false], [6, 6, false]] as const
    ) {
      const linears = rtnLinears(wBits, bitBalance);
      const act = actQuantOf({ abits, bitBalance })!;
      const maxq = asymMaxq(abits, bitBalance);
      const lin = WaLinears.create(gpu, linears, maxq);
      try {
        const cpu = Object.create(lin) as WaLinears;
        cpu.run = (key: string, x: Float32Array, T: number) =>
          Promise.resolve(waLinearCpu(linears.get(key)!, x, T, maxq));
        const win = set.tokens.subarray(0, SEQLEN);
        const s = new RunState(weights.config, SEQLEN);
        const want = (await waForward(weights, cpu, act, win, s)).slice();
        const got = await waForward(weights, lin, act, win, s);
        assert.deepEqual(got, want, `W${wBits}${bitBalance ? "*" : ""}A${abits}`);
      } finally {
        lin.release();
      }
    }
  },
);

Deno.test("uniformLinears() names the linear the W×A kernels cannot take", () => {
  const u = rtn(weights.layers[0].wq, 64, 64, { bits: 4 });
  assert.equal(uniformLinears(new Map([["layers.0.wq", { dense: u }]])).get("layers.0.wq"), u);
  const lut = {
    kind: "lut",
    bits: 2,
    rows: 64,
    cols: 64,
    codes: u.codes,
    lut: new Uint16Array(256),
  };
  assert.throws(
    () => uniformLinears(new Map([["layers.1.wk", { dense: lut } as never]])),
    /layers\.1\.wk: the W×A kernels take uniform codes/,
  );
  const actOrder = { ...u, gIdx: new Int32Array(64) };
  assert.throws(
    () => uniformLinears(new Map([["layers.2.w1", { dense: actOrder }]])),
    /layers\.2\.w1: .*act-order/,
  );
});

const CASES: [string, number, number, boolean, WaKernelName, boolean][] = [
  // [name, weight bits, activation bits, bit balance, kernel, strict 1e-4]
  ["W4A8", 4, 8, false, "bitplane", true],
  ["W6A6", 6, 6, false, "bitplane", true],
  ["W2*A8", 2, 8, true, "bitplane", false],
  ["W8A8", 8, 8, false, "int8", false],
];

gpuTest(
  "stories260K perplexity through the W×A kernels equals fake quant: W4A8, W6A6 (1e-4); W2*A8, W8A8 (1e-4 or fake quant's own float32 sensitivity)",
  async (gpu) => {
    for (const [name, wBits, abits, bitBalance, kernel, strict] of CASES) {
      const linears = rtnLinears(wBits, bitBalance);
      const act = actQuantOf({ abits, bitBalance })!;
      const opts = { seqlen: SEQLEN, limit: WINDOWS, actQuant: act };
      const want = (await perplexity(fakeModel(linears), set.tokens, opts)).ppl;
      const lin = WaLinears.create(gpu, linears, asymMaxq(abits, bitBalance), kernel);
      let got: number;
      try {
        got = (await waPerplexity(weights, lin, act, set.tokens, opts)).ppl;
      } finally {
        lin.release();
      }
      const rel = Math.abs(got - want) / want;
      let tol = TOL;
      if (!strict) {
        for (const eps of [2e-7, -2e-7]) {
          const moved = (await perplexity(fakeModel(linears, eps), set.tokens, opts)).ppl;
          tol = Math.max(tol, (2 * Math.abs(moved - want)) / want);
        }
      }
      console.log(
        `${name} (${kernel}): kernels ${got.toFixed(6)}, fake quant ${want.toFixed(6)}, ` +
          `relative ${rel.toExponential(2)} (tolerance ${tol.toExponential(2)})`,
      );
      assert.ok(rel <= tol, `${name}: kernels ${got} vs fake quant ${want}: ${rel} > ${tol}`);
    }
  },
);
