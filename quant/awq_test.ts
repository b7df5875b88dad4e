import assert from "node:assert/strict";
import type { LayerWeights, LinearName, LlamaConfig, LlamaWeights } from "../model/config.ts";
import { LINEAR_NAMES, linearShape } from "../model/config.ts";
import { attention, block, feedForward, RunState } from "../model/forward.ts";
import { matmul } from "../model/matmul.ts";
import { mulberry32, randomWeights, randomWindows, tinyConfig } from "../model/random.ts";
import { maxRelError } from "../datasets/testing.ts";
import { dequantize, dequantizeDense, unpackCodes } from "./format.ts";
import {
  actScale,
  applyClip,
  applyScale,
  type AwqFeatureSet,
  type AwqFeatureSource,
  type AwqPrevOp,
  awqPseudoQuantize,
  awqQuantizeModel,
  awqQuantizeModelParallel,
  awqQuantizeTensor,
  AwqSequential,
  type BlockFeatures,
  collectBlockFeatures,
  cpuFeatureSource,
  ratioScales,
  sampleTokens,
  searchClip,
  searchGroupScale,
  searchSse,
  searchWork,
} from "./awq.ts";
import { embedWindows } from "./sequential.ts";

/** Multi-head (not grouped) attention, so that the wv→wo group is searched too. */
const MHA: LlamaConfig = tinyConfig({
  dim: 32,
  hiddenDim: 64,
  nKvHeads: 4,
  vocabSize: 64,
  maxSeqLen: 24,
});
const GQA: LlamaConfig = { ...MHA, nKvHeads: 2 };

/**
 * Random weights whose norms give a few input channels ~8× the others: the
 * activation outliers AWQ protects.
 */
function outlierWeights(c: LlamaConfig, seed: number): LlamaWeights {
  const w = randomWeights(c, seed);
  for (const lw of w.layers) {
    for (const i of [3, 17, 29]) {
      lw.attnNorm[i] *= 8;
      lw.ffnNorm[i] *= 8;
    }
  }
  return w;
}

/** Features of layer 0 on random windows. */
function layer0(c: LlamaConfig, seed: number) {
  const w = outlierWeights(c, seed);
  const windows = randomWindows(4, c.maxSeqLen, c.vocabSize, seed + 1);
  const s = new RunState(c, c.maxSeqLen);
  const f = collectBlockFeatures(c, w.layers[0], 0, embedWindows(w, windows), s);
  return { w, windows, s, f };
}

function sqErr(a: Float32Array, b: Float32Array): number {
  let e = 0;
  for (let i = 0; i < a.length; i++) e += (a[i] - b[i]) ** 2;
  return e / a.length;
}

/** Output of the module a group inspects, recomputed here with forward.ts's pieces. */
function moduleOutput(
  c: LlamaConfig,
  lw: LayerWeights,
  prevOp: AwqPrevOp,
  f: BlockFeatures,
  s: RunState,
) {
  const x = prevOp === "attnNorm"
    ? f.attnIn
    : prevOp === "wv"
    ? f.woIn
    : prevOp === "ffnNorm"
    ? f.ffnIn
    : f.w2In;
  if (prevOp === "wv" || prevOp === "w3") {
    const name = prevOp === "wv" ? "wo" : "w2";
    const [rows, cols] = linearShape(c, name);
    const out = new Float32Array(f.N * rows);
    matmul(out, x, lw[name], f.N, cols, rows);
    return out;
  }
  const out = new Float32Array(f.N * c.dim);
  f.lengths.forEach((T, j) => {
    const o = f.offsets[j] * c.dim, n = T * c.dim;
    const fn = prevOp === "attnNorm" ? attention : feedForward;
    fn(c, lw, 0, x.subarray(o, o + n), T, s, out.subarray(o, o + n));
  });
  return out;
}

const GROUPS: { prevOp: AwqPrevOp; linears: LinearName[] }[] = [
  { prevOp: "attnNorm", linears: ["wq", "wk", "wv"] },
  { prevOp: "wv", linears: ["wo"] },
  { prevOp: "ffnNorm", linears: ["w1", "w3"] },
  { prevOp: "w3", linears: ["w2"] },
];

Deno.test("awqQuantizeTensor() equals pseudo_quantize_tensor on reference values", () => {
  // Expected values from llm-awq's pseudo_quantize_tensor formula evaluated with numpy
  // (np.round rounds halves to even like torch.round), n_bit=2, q_group_size=4:
  //   w = [[-1, -0.2, 0.3, 2], [0.5, 0.5, 0.5, 0.5]]
  //   scales = clip(max-min, 1e-5)/3 = [1.0, 3.3333e-6]; zeros = clip(-round(min/s), 0, 3) = [1, 0]
  //   out = (clip(round(w/s)+z, 0, 3) - z)*s = [[-1, 0, 0, 2], [1e-5, 1e-5, 1e-5, 1e-5]] (row 2 saturates)
  const W = new Float32Array([-1, -0.2, 0.3, 2, 0.5, 0.5, 0.5, 0.5]);
  const q = awqQuantizeTensor(W, 2, 4, { bits: 2, groupSize: 4 });
  const deq = dequantizeDense(q);
  assert.deepEqual(Array.from(deq.subarray(0, 4)), [-1, 0, 0, 2]);
  // The fp16-stored scale of row 2 is f16(1e-5/3); codes saturate at 3.
  assert.deepEqual(Array.from(unpackCodes(q.codes, 2, 4, 2)), [0, 1, 1, 3, 3, 3, 3, 3]);
  const s2 = Math.f16round(Math.fround(1e-5) / 3);
  for (const v of deq.subarray(4)) assert.equal(v, Math.fround(3 * s2));
  // Halves round to even: 0.5/1 → 0, 1.5/1 → 2, 2.5 → 2 (w / scale with scale 1, zero 0).
  const h = awqPseudoQuantize(new Float32Array([0, 0.5, 1.5, 2.5, 3]), 1, 5, {
    bits: 2,
    groupSize: 5,
  });
  assert.deepEqual(Array.from(h), [0, 0, 2, 2, 3]);
});

Deno.test("awqPseudoQuantize() equals dequantize(awqQuantizeTensor()) for asymmetric and symmetric grids", () => {
  const u = mulberry32(5);
  const W = Float32Array.from({ length: 12 * 40 }, () => (u() - 0.3) * 2);
  for (const sym of [false, true]) {
    for (const [bits, groupSize] of [[3, 8], [4, 40], [2, 20], [8, 5]]) {
      const grid = { bits, groupSize, sym };
      const t = awqQuantizeTensor(W, 12, 40, grid);
      assert.deepEqual(dequantize({ dense: t }), awqPseudoQuantize(W, 12, 40, grid));
      if (sym) {
        assert.ok(
          Array.from(dequantize({ dense: t })).every((v, i) => Math.sign(v) * Math.sign(W[i]) >= 0),
        );
      }
    }
  }
  assert.throws(
    () => awqQuantizeTensor(W, 12, 40, { bits: 3, groupSize: 7 }),
    /groupSize must be a positive divisor of the row width 40/,
  );
});

Deno.test("ratioScales() is x_max^ratio clamped at 1e-4 and normalized by sqrt(max·min)", () => {
  const s = ratioScales(new Float32Array([4, 1, 0, 0.25]), 0.5);
  // [2, 1, 1e-4, 0.5] / sqrt(2 · 1e-4)
  const n = Math.sqrt(2 * 1e-4);
  const want = [2, 1, 1e-4, 0.5].map((v) => Math.fround(Math.fround(v) / n));
  assert.ok(maxRelError(s, want) < 1e-6);
  assert.deepEqual(Array.from(ratioScales(new Float32Array([4, 0, 3]), 0)), [1, 1, 1]);
});

Deno.test("collectBlockFeatures() records each group's full-precision output: the very numbers a recomputation gives", () => {
  const c = MHA;
  const { w, s, f } = layer0(c, 11);
  for (const g of GROUPS) {
    const recorded = g.prevOp === "attnNorm" || g.prevOp === "wv" ? f.attnOut : f.ffnOut;
    assert.deepEqual(moduleOutput(c, w.layers[0], g.prevOp, f, s), recorded, g.prevOp);
  }
});

Deno.test("searchSse() rebuilds each inspected module from forward.ts's pieces: the original weights as every ratio's trial give org_out to the bit", () => {
  for (const c of [MHA, GQA]) {
    const { w, s, f } = layer0(c, 13);
    const lw = w.layers[0];
    for (const g of GROUPS) {
      if (c === GQA && g.prevOp === "wv") continue;
      const stacked = new Float32Array(g.linears.flatMap((name) => Array.from(lw[name])));
      const nk = 3;
      const trial = new Float32Array(nk * stacked.length);
      for (let k = 0; k < nk; k++) trial.set(stacked, k * stacked.length);
      assert.deepEqual(
        Array.from(searchSse(c, lw, g.prevOp, f, trial, nk, s)),
        [0, 0, 0],
        g.prevOp,
      );
      // A perturbed trial of one ratio moves only that ratio's error.
      trial[stacked.length + 5] += 0.5;
      const sse = searchSse(c, lw, g.prevOp, f, trial, nk, s);
      assert.ok(sse[0] === 0 && sse[1] > 0 && sse[2] === 0, `${g.prevOp}: ${Array.from(sse)}`);
    }
  }
});

Deno.test("searchGroupScale() never makes a group's output error worse than plain RTN (ratio 0)", () => {
  const c = MHA;
  const { w, s, f } = layer0(c, 11);
  const lw = w.layers[0];
  let strictlyBetter = 0;
  for (const g of GROUPS) {
    for (const groupSize of [8, undefined]) {
      const r = searchGroupScale(c, lw, 0, g, f, s, { bits: 3, groupSize });
      const orgOut = moduleOutput(c, lw, g.prevOp, f, s);
      // Plain RTN of the unscaled weights.
      const rtnW: LayerWeights = { ...lw }, awqW: LayerWeights = { ...lw };
      for (const name of g.linears) {
        const [rows, cols] = linearShape(c, name);
        const grid = { bits: 3, groupSize: groupSize ?? cols };
        rtnW[name] = awqPseudoQuantize(lw[name], rows, cols, grid);
        // Q(W·diag(s))·diag(s)⁻¹ with the chosen scales, built here from scratch.
        const ws = lw[name].map((v, i) => v * r.scales[i % cols]);
        awqW[name] = awqPseudoQuantize(ws, rows, cols, grid).map((v, i) => v / r.scales[i % cols]);
      }
      const rtnErr = sqErr(orgOut, moduleOutput(c, rtnW, g.prevOp, f, s));
      const awqErr = sqErr(orgOut, moduleOutput(c, awqW, g.prevOp, f, s));
      assert.ok(
        Math.abs(r.history[0] - rtnErr) <= 1e-6 * rtnErr,
        `${g.prevOp}: history[0] is plain RTN`,
      );
      assert.ok(
        Math.abs(r.loss - awqErr) <= 1e-6 * awqErr,
        `${g.prevOp}: reported loss ${r.loss} vs ${awqErr}`,
      );
      assert.ok(awqErr <= rtnErr, `${g.prevOp} g${groupSize}: AWQ ${awqErr} > RTN ${rtnErr}`);
      assert.equal(r.loss, Math.min(...r.history));
      assert.equal(r.history.length, 20);
      if (awqErr < rtnErr) strictlyBetter++;
    }
  }
  // With 8× activation outliers the search finds something better than RTN.
  assert.ok(strictlyBetter >= 4, `only ${strictlyBetter} of 8 searches beat RTN`);
});

Deno.test("applyScale() leaves the fp32 block output unchanged (1e-5)", () => {
  const c = MHA;
  const { w, windows } = layer0(c, 21);
  const u = mulberry32(3);
  const lw: LayerWeights = { ...w.layers[0] };
  for (const k of ["attnNorm", "ffnNorm", ...LINEAR_NAMES] as const) lw[k] = w.layers[0][k].slice();
  for (const g of GROUPS) {
    const width = linearShape(c, g.linears[0])[1];
    applyScale(c, lw, { ...g, scales: Float32Array.from({ length: width }, () => 0.25 + 3 * u()) });
  }
  for (const name of LINEAR_NAMES) assert.notDeepEqual(lw[name], w.layers[0][name]);
  const s = new RunState(c, c.maxSeqLen);
  for (const tokens of windows) {
    const [x0, x1] = embedWindows(w, [tokens, tokens]);
    block(c, w.layers[0], 0, x0, tokens.length, s);
    block(c, lw, 0, x1, tokens.length, s);
    assert.ok(maxRelError(x1, x0) < 1e-5, `relative error ${maxRelError(x1, x0)}`);
  }
});

Deno.test("searchClip() never worsens a group's error compared with no clipping", () => {
  const c = MHA;
  const { w, f } = layer0(c, 31);
  for (const [name, x] of [["wv", f.attnIn], ["w2", f.w2In]] as const) {
    const [rows, cols] = linearShape(c, name);
    const W = w.layers[0][name];
    const { x: xs, n } = sampleTokens(x, f.N, cols, 64);
    for (const groupSize of [8, cols]) {
      const grid = { bits: 3, groupSize };
      const maxVal = searchClip(W, rows, cols, xs, n, grid);
      const Wc = W.slice();
      applyClip(Wc, rows, cols, maxVal);
      const q0 = awqPseudoQuantize(W, rows, cols, grid),
        q1 = awqPseudoQuantize(Wc, rows, cols, grid);
      let clipped = 0;
      for (let r = 0; r < rows; r++) {
        for (let g0 = 0; g0 < cols; g0 += groupSize) {
          let e0 = 0, e1 = 0;
          for (let t = 0; t < n; t++) {
            let y = 0, y0 = 0, y1 = 0;
            for (let k = g0; k < g0 + groupSize; k++) {
              const xv = xs[t * cols + k], i = r * cols + k;
              y += xv * W[i];
              y0 += xv * q0[i];
              y1 += xv * q1[i];
            }
            e0 += (y0 - y) ** 2;
            e1 += (y1 - y) ** 2;
          }
          assert.ok(e1 <= e0 * (1 + 1e-9), `${name} row ${r} group ${g0}: ${e1} > ${e0}`);
          if (e1 < e0) clipped++;
        }
      }
      assert.ok(clipped > 0, `${name} g${groupSize}: no group was clipped`);
    }
  }
});

Deno.test("sampleTokens() takes every ⌊N / n⌋-th token, or all when N < n", () => {
  const x = Float32Array.from({ length: 2050 * 2 }, (_, i) => i);
  const a = sampleTokens(x, 2050, 2, 512); // step 4 → tokens 0, 4, …, 2048: 513 of them
  assert.equal(a.n, 513);
  assert.deepEqual(Array.from(a.x.subarray(0, 4)), [0, 1, 8, 9]);
  assert.deepEqual(Array.from(a.x.subarray(-2)), [4096, 4097]);
  const b = sampleTokens(x, 300, 2, 512);
  assert.equal(b.n, 300);
});

Deno.test("awqQuantizeModel() is deterministic; its weights are the scaled norms and dequantize(linears)", () => {
  const c = MHA;
  const w = outlierWeights(c, 41);
  const windows = randomWindows(3, 20, c.vocabSize, 42);
  const a = awqQuantizeModel(w, windows, { bits: 3, groupSize: 8 });
  const b = awqQuantizeModel(w, windows, { bits: 3, groupSize: 8 });
  assert.deepEqual(a.weights.layers, b.weights.layers);
  assert.deepEqual([...a.linears.entries()], [...b.linears.entries()]);
  assert.equal(a.linears.size, c.nLayers * 7);
  assert.equal(a.weights.tokenEmbedding, w.tokenEmbedding);
  for (let l = 0; l < c.nLayers; l++) {
    for (const name of LINEAR_NAMES) {
      assert.deepEqual(
        a.weights.layers[l][name],
        dequantize(a.linears.get(`layers.${l}.${name}`)!),
      );
    }
    const sc = a.scales[l];
    assert.deepEqual(sc.map((r) => r.prevOp), ["attnNorm", "wv", "ffnNorm", "w3"]);
    // attnNorm / s and ffnNorm / s.
    assert.ok(
      maxRelError(
        a.weights.layers[l].attnNorm,
        w.layers[l].attnNorm.map((v, i) => v / sc[0].scales[i]),
      ) < 1e-6,
    );
    assert.ok(
      maxRelError(
        a.weights.layers[l].ffnNorm,
        w.layers[l].ffnNorm.map((v, i) => v / sc[2].scales[i]),
      ) < 1e-6,
    );
    assert.deepEqual(a.clips[l].map((x) => x.name), ["wv", "wo", "w1", "w3", "w2"]);
  }
  assert.equal(
    w.layers[0].attnNorm[3],
    randomWeights(c, 41).layers[0].attnNorm[3] * 8,
    "input untouched",
  );
  assert.deepEqual(a.stats.skipped, []);
});

Deno.test("awqQuantizeModel() skips wv→wo under grouped-query attention and checks the group size", () => {
  const c = GQA;
  const w = outlierWeights(c, 51);
  const windows = randomWindows(2, 16, c.vocabSize, 52);
  const r = awqQuantizeModel(w, windows, { bits: 4 });
  assert.deepEqual(r.scales[0].map((x) => x.prevOp), ["attnNorm", "ffnNorm", "w3"]);
  assert.equal(r.stats.skipped.length, c.nLayers);
  assert.match(r.stats.skipped[0], /wv is \[16,32\], wo is \[32,32\]/);
  assert.equal((r.linears.get("layers.1.w2")!.dense as { groupSize: number }).groupSize, 64);
  assert.throws(
    () => awqQuantizeModel(w, windows, { bits: 4, groupSize: 12 }),
    /groupSize must divide the input width of every linear \(32, 64\), got 12; valid: 1, 2, 4, 8, 16, 32/,
  );
  assert.throws(() => awqQuantizeModel(w, [], { bits: 4 }), /at least one calibration window/);
  assert.throws(
    () => awqQuantizeModel(w, windows, { bits: 9 }),
    /bits must be an integer from 2 to 8, got 9/,
  );
});

Deno.test("awqQuantizeModel() reports every scale ratio and clipped linear as a progress step", () => {
  const c = GQA;
  const w = outlierWeights(c, 51);
  const windows = randomWindows(2, 16, c.vocabSize, 52);
  const steps: [number, number, string][] = [];
  const logged: string[] = [];
  const nGrid = 4;
  const r = awqQuantizeModel(w, windows, {
    bits: 4,
    nGrid,
    onProgress: (d, n, what) => steps.push([d, n, what]),
    log: (m) => logged.push(m),
  });
  const perLayer = 3 * nGrid + 5; // GQA: three scaled groups; five clipped linears
  const total = c.nLayers * perLayer;
  assert.deepEqual(steps.map(([d]) => d), Array.from({ length: total }, (_, i) => i + 1));
  assert.ok(steps.every(([, n]) => n === total));
  assert.equal(steps[0][2], "awq layers.0 scale wq,wk,wv");
  assert.equal(steps[perLayer - 1][2], "awq layers.0 clip w2");
  assert.equal(logged.length, 2 * c.nLayers);
  // Progress does not change the result.
  assert.deepEqual(
    r.weights.layers,
    awqQuantizeModel(w, windows, { bits: 4, nGrid }).weights.layers,
  );
});

Deno.test("awqQuantizeModelParallel() on 0 and 2 workers gives the one-thread path's numbers and progress", async () => {
  {
    const c = MHA;
    const w = outlierWeights(c, 61);
    const windows = randomWindows(3, 20, c.vocabSize, 62);
    const opts = { bits: 3, groupSize: 8, nGrid: 5 };
    const ref = awqQuantizeModel(w, windows, opts);
    for (const workers of [0, 2]) {
      const steps: string[] = [];
      const r = await awqQuantizeModelParallel(w, windows, {
        ...opts,
        workers,
        onProgress: (d, _n, what) => steps.push(`${d} ${what}`),
      });
      assert.deepEqual(r.weights.layers, ref.weights.layers);
      assert.deepEqual([...r.linears.entries()], [...ref.linears.entries()]);
      assert.deepEqual(r.scales, ref.scales);
      assert.deepEqual(r.clips, ref.clips);
      const perLayer = ref.scales[0].length * 5 + 5;
      assert.equal(steps.length, c.nLayers * perLayer);
      assert.equal(steps[perLayer - 1], `${perLayer} awq layers.0 clip w2`);
    }
  }
  await assert.rejects(
    () => awqQuantizeModelParallel(outlierWeights(GQA, 1), [], { bits: 4, workers: 2 }),
    /at least one calibration window/,
  );
});

Deno.test("an injected feature source (asynchronous, giving mean |x| itself) gives the CPU forward's numbers; a wrong answer is named", async () => {
  const c = MHA;
  const w = outlierWeights(c, 71);
  const windows = randomWindows(2, 16, c.vocabSize, 72);
  const opts = { bits: 3, groupSize: 8, nGrid: 4, workers: 0 };
  const ref = awqQuantizeModel(w, windows, opts);
  const asked: string[] = [];
  const source: AwqFeatureSource = {
    features(req) {
      asked.push(`${req.layer} ${req.from} ${req.want.join(",")}`);
      const cpu = cpuFeatureSource(c, new RunState(c, 16)).features(req) as AwqFeatureSet;
      const xMax: AwqFeatureSet["xMax"] = {};
      for (const name of ["attnIn", "woIn", "ffnIn", "w2In"] as const) {
        const a = cpu.features[name], width = name === "w2In" ? c.hiddenDim : c.dim;
        if (a) xMax[name] = actScale(a, a.length / width, width);
      }
      return Promise.resolve({ ...cpu, xMax });
    },
  };
  const r = await awqQuantizeModelParallel(w, windows, { ...opts, features: source });
  assert.deepEqual([...r.linears.entries()], [...ref.linears.entries()]);
  assert.deepEqual(r.weights.layers, ref.weights.layers);
  assert.ok(asked.length >= c.nLayers && asked[0].startsWith("0 input "), asked.join("; "));
  assert.throws(
    () => awqQuantizeModel(w, windows, { ...opts, features: source }),
    /an asynchronous feature source needs awqQuantizeModelParallel\(\) or AwqSequential/,
  );
  const short: AwqFeatureSource = {
    features(req) {
      const cpu = cpuFeatureSource(c, new RunState(c, 16)).features(req) as AwqFeatureSet;
      const name = req.want[0];
      return { features: { ...cpu.features, [name]: cpu.features[name]!.subarray(1) } };
    },
  };
  assert.throws(
    () => awqQuantizeModel(w, windows, { ...opts, features: short }),
    /the feature source gave layers\.0 attnIn of 1023 floats, expected 1024/,
  );
});

Deno.test("cpuFeatureSource() from the stream after the attention gives the FFN features of the whole block's run", () => {
  const c = GQA;
  const w = outlierWeights(c, 81);
  const x = embedWindows(w, randomWindows(2, 12, c.vocabSize, 82));
  const s = new RunState(c, 12);
  const alloc = (n: number) => new Float32Array(n);
  const src = cpuFeatureSource(c, s);
  const whole = src.features({
    layer: 0,
    lw: w.layers[0],
    x,
    from: "input",
    want: ["attnOut", "ffnIn", "w2In", "ffnOut"],
    alloc,
  }) as AwqFeatureSet;
  const before = x.map((xj) => xj.slice());
  const h = x.map((xj, j) => xj.map((v, i) => v + whole.features.attnOut![j * 12 * c.dim + i]));
  const half = src.features({
    layer: 0,
    lw: w.layers[0],
    x: h,
    from: "attention",
    want: ["ffnIn", "w2In", "ffnOut"],
    alloc,
  }) as AwqFeatureSet;
  assert.deepEqual(x, before, "x not modified");
  for (const name of ["ffnIn", "w2In", "ffnOut"] as const) {
    assert.deepEqual(half.features[name], whole.features[name], name);
  }
  assert.throws(
    () =>
      src.features({ layer: 0, lw: w.layers[0], x: h, from: "attention", want: ["woIn"], alloc }),
    /only ffnIn, w2In and ffnOut/,
  );
});

Deno.test("awqQuantizeModel() collects a block stage by stage (featureBudget 0) or in one stage with the same numbers", async () => {
  for (const c of [MHA, GQA]) {
    const w = outlierWeights(c, 91);
    const windows = randomWindows(3, 20, c.vocabSize, 92);
    const opts = { bits: 3, groupSize: 8, nGrid: 4 };
    const whole = awqQuantizeModel(w, windows, opts);
    const asked: string[] = [];
    const counting: AwqFeatureSource = {
      features(req) {
        asked.push(`${req.from}:${req.want.join(",")}`);
        return cpuFeatureSource(c, new RunState(c, 20)).features(req);
      },
    };
    const staged = awqQuantizeModel(w, windows, { ...opts, featureBudget: 0, features: counting });
    assert.deepEqual(staged.weights.layers, whole.weights.layers);
    assert.deepEqual([...staged.linears.entries()], [...whole.linears.entries()]);
    assert.deepEqual(staged.scales, whole.scales);
    assert.deepEqual(staged.clips, whole.clips);
    assert.deepEqual(asked.slice(0, 3), [
      "input:attnIn,woIn,attnOut",
      "attention:ffnIn,ffnOut",
      "attention:w2In,ffnOut",
    ]);
    const parallel = await awqQuantizeModelParallel(w, windows, {
      ...opts,
      featureBudget: 0,
      workers: 2,
    });
    assert.deepEqual([...parallel.linears.entries()], [...whole.linears.entries()]);
  }
  assert.throws(
    () =>
      awqQuantizeModel(outlierWeights(GQA, 1), randomWindows(1, 4, GQA.vocabSize, 1), {
        bits: 3,
        featureBudget: -1,
      }),
    /featureBudget must be a number of bytes ≥ 0, got -1/,
  );
});

/**
 * A feature source that owns the residual stream, as a device does: a copy
 * of block 0's inputs, advanced by each request's `residual` with the CPU
 * forward's outputs; `asked` records each request.
 */
function owningSource(c: LlamaConfig, T: number, asked: string[]): AwqFeatureSource {
  const cpu = cpuFeatureSource(c, new RunState(c, T));
  let stream: Float32Array[] | null = null;
  return {
    setInputs(x) {
      stream = x.map((xj) => xj.slice());
    },
    features(req) {
      const residual = req.residual ?? [];
      asked.push(`${req.layer} ${req.from} x ${req.x === null ? "null" : "given"} +${residual}`);
      const set = cpu.features({ ...req, x: stream }) as AwqFeatureSet;
      for (const name of residual) {
        const out = set.features[name]!;
        stream!.forEach((xj, j) => xj.forEach((_, i) => xj[i] += out[j * T * c.dim + i]));
      }
      return set;
    },
  };
}

Deno.test("a feature source that owns the residual stream gets block 0's inputs once and requests without x: the same numbers", async () => {
  const c = GQA, T = 12;
  const w = outlierWeights(c, 101);
  const windows = randomWindows(2, T, c.vocabSize, 102);
  const opts = { bits: 3, groupSize: 8, nGrid: 4 };
  for (const featureBudget of [undefined, 0]) {
    const ref = awqQuantizeModel(w, windows, { ...opts, featureBudget });
    const asked: string[] = [];
    const r = awqQuantizeModel(w, windows, {
      ...opts,
      featureBudget,
      features: owningSource(c, T, asked),
    });
    const p = await awqQuantizeModelParallel(w, windows, {
      ...opts,
      featureBudget,
      workers: 2,
      features: owningSource(c, T, []),
    });
    for (const got of [r, p]) {
      assert.deepEqual(got.weights.layers, ref.weights.layers);
      assert.deepEqual([...got.linears.entries()], [...ref.linears.entries()]);
      assert.deepEqual(got.scales, ref.scales);
      assert.deepEqual(got.clips, ref.clips);
    }
    const block = featureBudget === 0
      ? ["input x null +attnOut", "attention x null +", "attention x null +ffnOut"]
      : ["input x null +attnOut,ffnOut"];
    assert.deepEqual(asked, [0, 1].flatMap((l) => block.map((a) => `${l} ${a}`)));
  }
  const x = embedWindows(w, windows);
  const owned = new AwqSequential(c, windows, { ...opts, features: owningSource(c, T, []) });
  await assert.rejects(
    () => owned.quantizeBlock(0, w.layers[0]),
    /give block 0's inputs to setInputs\(\) once/,
  );
  await owned.setInputs(x);
  await assert.rejects(() => owned.quantizeBlock(0, w.layers[0], x), /no inputs to the blocks/);
  const host = new AwqSequential(c, windows, opts);
  await assert.rejects(() => host.setInputs(x), /keeps no residual stream/);
  await assert.rejects(
    () => host.quantizeBlock(0, w.layers[0]),
    /block 0 needs its inputs per window/,
  );
});

Deno.test("searchWork counts what one ratio's evaluation computes, query-key pair by pair", () => {
  // GQA (kv 16 of dim 32, heads of 8) on uneven windows; every count enumerated.
  const c = GQA, hs = c.dim / c.nHeads, kv = (c.dim / c.nHeads) * c.nKvHeads;
  const lengths = [3, 7, 24];
  let tokens = 0, pairs = 0;
  for (const T of lengths) {
    for (let t = 0; t < T; t++) {
      tokens++;
      for (let h = 0; h < c.nHeads; h++) for (let u = 0; u <= t; u++) pairs++;
    }
  }
  assert.deepEqual(searchWork(c, "attnNorm", lengths), {
    // q, k, v on every token; score and weighted sum of each pair; wo
    macs: tokens * c.dim * (c.dim + 2 * kv) + pairs * 2 * hs + tokens * c.dim * c.dim,
    exps: pairs,
  });
  assert.deepEqual(searchWork(c, "ffnNorm", lengths), {
    macs: tokens * (2 * c.hiddenDim * c.dim + c.hiddenDim * c.dim),
    exps: tokens * c.hiddenDim,
  });
  assert.deepEqual(searchWork(c, "w3", lengths), { macs: tokens * c.dim * c.hiddenDim, exps: 0 });
  assert.deepEqual(searchWork(MHA, "wv", lengths), { macs: tokens * c.dim * c.dim, exps: 0 });
  assert.deepEqual(searchWork(c, "attnNorm", []), { macs: 0, exps: 0 });
});
