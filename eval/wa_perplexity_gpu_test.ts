/**
 * Perplexity through the W×A kernels against the CPU evaluation
 * (eval/perplexity.ts with the model's packed linears: quant/wa_int.ts's
 * integer W×A products) on stories260K: RTN weights (one group per row,
 * ABQ-LLM's W×A setting), per-token activations, KV quantization at the
 * activation width (quant/act_quant.ts's default) in both paths; the first
 * 2 windows of 128 tokens of the TinyStories eval set.
 *
 * - waForward()'s block-by-block orchestration, fed the CPU integer linears,
 *   gives eval/perplexity.ts's forward bit for bit.
 * - The kernel path is the kernels' integer arithmetic bit for bit
 *   (waLinearCpu: exact Σ (q_x − z_x)(q_w − z_w), then (s_w·s_x)·acc in f32).
 * - W4A8, W6A6, W2*A8 (bit balance: five-level weights, 3 planes) through the
 *   bit-plane kernel and W8A8 through the int8 kernel: within 1e-4 relative
 *   of the CPU perplexity (in fact equal: both sum the integer codes exactly
 *   and apply the same f32 epilogue). Fake quantization (the dequantized
 *   products summed in f32) differed from the kernels by up to 2.7e-3 on
 *   W2*A8: its last-bit differences flip next-layer 8-bit activation codes
 *   and the step cascades; that is why the evaluation is defined by the
 *   integer product (quant/wa_int.ts).
 */
import assert from "node:assert/strict";
import { gpuTest } from "../kernels/_testing.ts";
import { uniformLinears, waForward, WaLinears, waPerplexity } from "./wa_perplexity.ts";
import { waLinearCpu } from "./wa_linear.ts";
import type { WaKernelName } from "./wa_perplexity.ts";
import { perplexity } from "./perplexity.ts";
import { actQuantOf, asymMaxq } from "../quant/act_quant.ts";
import { rtn } from "../quant/rtn.ts";
import type { QuantizedLinear, UniformTensor } from "../quant/format.ts";
import { dequantizeDense } from "../quant/format.ts";
import type { LlamaWeights } from "../model/config.ts";
import { LINEAR_NAMES, linearKey, linearShape, withLinears } from "../model/config.ts";
import { RunState } from "../model/forward.ts";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { loadTokenizer } from "../model/tokenizer.ts";
import { loadEvalSet } from "../datasets/eval_sets.ts";
import { SHARED_DATA, sharedData } from "../datasets/testing.ts";
import { forward } from "../model/forward.ts";
import { intLinear, IntWeights, quantizeActs, quantizedModelHooks } from "../quant/wa_int.ts";

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

/** The quantized model: every block linear dequantized (the fp32 weights the CPU forward holds). */
function fakeModel(linears: Map<string, UniformTensor>): LlamaWeights {
  return withLinears(weights, (l, n) => dequantizeDense(linears.get(linearKey(l, n))!));
}

/** The linears as a quantized model holds them (quant/methods.ts `QuantizedModel.linears`). */
function packed(linears: Map<string, UniformTensor>): Map<string, QuantizedLinear> {
  return new Map([...linears].map(([k, dense]) => [k, { dense }]));
}

gpuTest(
  "waForward() with the CPU integer linears is eval/perplexity.ts's forward, bit for bit",
  async (gpu) => {
    const linears = rtnLinears(4, false);
    const act = actQuantOf({ abits: 8 })!;
    const maxq = asymMaxq(8, false);
    const lin = WaLinears.create(gpu, linears, maxq);
    try {
      // The same object shape as WaLinears, its linears computed on the CPU (quant/wa_int.ts).
      const cpu = Object.create(lin) as WaLinears;
      const ints = new IntWeights((k) => ({ dense: linears.get(k)! }));
      cpu.run = (key: string, x: Float32Array, T: number) => {
        const [, l, n] = key.split(".");
        const w = ints.get(Number(l), n as never);
        return Promise.resolve(
          intLinear(new Float32Array(T * w.rows), quantizeActs(x, T, w, maxq), w),
        );
      };
      const win = set.tokens.subarray(0, SEQLEN);
      const got = await waForward(weights, cpu, act, win, new RunState(weights.config, SEQLEN));
      const hooks = quantizedModelHooks(act, weights.config, SEQLEN, packed(linears));
      assert.deepEqual(got, forward(fakeModel(linears), win, { hooks }));
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

const CASES: [string, number, number, boolean, WaKernelName][] = [
  // [name, weight bits, activation bits, bit balance, kernel]
  ["W4A8", 4, 8, false, "bitplane"],
  ["W6A6", 6, 6, false, "bitplane"],
  ["W2*A8", 2, 8, true, "bitplane"],
  ["W8A8", 8, 8, false, "int8"],
];

gpuTest(
  "stories260K perplexity through the W×A kernels equals the CPU evaluation's within 1e-4: W4A8, W6A6, W2*A8, W8A8",
  async (gpu) => {
    for (const [name, wBits, abits, bitBalance, kernel] of CASES) {
      const linears = rtnLinears(wBits, bitBalance);
      const act = actQuantOf({ abits, bitBalance })!;
      const opts = { seqlen: SEQLEN, limit: WINDOWS, actQuant: act };
      const want = (await perplexity(fakeModel(linears), set.tokens, {
        ...opts,
        linears: packed(linears),
      })).ppl;
      const lin = WaLinears.create(gpu, linears, asymMaxq(abits, bitBalance), kernel);
      let got: number;
      try {
        got = (await waPerplexity(weights, lin, act, set.tokens, opts)).ppl;
      } finally {
        lin.release();
      }
      const rel = Math.abs(got - want) / want;
      console.log(
        `${name} (${kernel}): kernels ${got.toFixed(6)}, CPU ${want.toFixed(6)}, relative ` +
          `${rel.toExponential(2)}`,
      );
      assert.ok(rel <= TOL, `${name}: kernels ${got} vs CPU ${want}: ${rel} > ${TOL}`);
    }
  },
);
