import assert from "node:assert/strict";
import type { LinearName } from "../model/config.ts";
import { LINEAR_NAMES } from "../model/config.ts";
import { embed } from "../model/forward.ts";
import { mulberry32, randomWeights, randomWindows, tinyConfig } from "../model/random.ts";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { sharedData } from "../datasets/testing.ts";
import {
  abqQuantizeModel,
  type BlockParams,
  EffectiveBlock,
  initParams,
  lossAndParamGrads,
  lossOnly,
  teacherMap,
  zerosLike,
} from "./abq.ts";
import { AbqBlockState, fakeQuantRowsWith } from "./abq_grad.ts";
import { fakeQuantRows } from "./act_quant.ts";
import { roundHalfEven } from "./rtn.ts";

/** The straight-through estimator's forward: its true derivative is the STE gradient. */
const identity = (v: number) => v;

/** Every parameter vector of p, named. */
function vectors(p: BlockParams): [string, Float32Array][] {
  const out: [string, Float32Array][] = [
    ["LET s_qkv", p.sQkv],
    ["LET s_fc1", p.sFc1],
    ["LET s_out", p.sOut],
    ["q/k scale", p.sQk],
    ["LET s_fc2", p.sFc2],
    ["compensation a", p.compA!],
    ["compensation b", p.compB!],
  ];
  for (const n of LINEAR_NAMES as readonly LinearName[]) {
    out.push([`LWC γ ${n}`, p.lwc[n].gamma], [`LWC β ${n}`, p.lwc[n].beta]);
  }
  return out;
}

Deno.test("abq gradients: every learnable parameter (LWC γ/β, LET scales, q/k scale, compensation a/b) matches central finite differences on a tiny random block, with 4-bit activations and Q/K/V", () => {
  const c = tinyConfig({ dim: 8, hiddenDim: 12, nHeads: 2, nKvHeads: 1, nLayers: 1, maxSeqLen: 6 });
  const w = randomWeights(c, 3);
  const lw = w.layers[0];
  const T = 6;
  const [tok] = randomWindows(1, T, c.vocabSize, 5);
  const x = new Float32Array(T * c.dim);
  embed(w, tok, x);
  const u = mulberry32(11);
  // targets: the fp block on x and on a perturbed x
  const fp = new AbqBlockState(c, T, null);
  const t1 = fp.forward(lw, x, T).slice();
  const teacher = teacherMap(fp.avgProbs, T);
  const x2 = x.map((v) => v + 0.05 * (u() - 0.5));
  const t2 = fp.forward(lw, x2, T).slice();
  const act = {
    qkv: new Float32Array(c.dim).fill(1),
    out: new Float32Array(c.dim).fill(1),
    fc1: new Float32Array(c.dim).fill(1),
    fc2: new Float32Array(c.hiddenDim).fill(1),
  };
  const p = initParams(c, lw, act, 0, 4);
  // move away from the initialisation so that every path carries gradient
  for (const [, v] of vectors(p)) for (let i = 0; i < v.length; i++) v[i] += 0.4 * (u() - 0.5);
  for (const n of LINEAR_NAMES) {
    for (const v of [p.lwc[n].gamma, p.lwc[n].beta]) v.forEach((_, i) => (v[i] = 1 + 2 * u()));
  }
  const st = new AbqBlockState(c, T, { abits: 4, kvBits: 4, bitBalance: false }, identity);
  const eff = new EffectiveBlock(c, 4, 7, identity);
  const dp = zerosLike(p);
  const L0 = lossAndParamGrads(st, eff, lw, p, dp, x, t1, t2, teacher, T).loss;
  assert.ok(Number.isFinite(L0));
  const L = () => lossOnly(st, eff, lw, p, x, t1, t2, teacher, T).loss;
  const dvec = new Map(vectors(dp));
  let checked = 0;
  for (const [name, v] of vectors(p)) {
    const g = dvec.get(name)!;
    for (const i of [0, Math.floor(v.length / 2), v.length - 1]) {
      const h = 1e-3, keep = v[i];
      v[i] = keep + h;
      const lp = L();
      v[i] = keep - h;
      const lm = L();
      v[i] = keep;
      const fd = (lp - lm) / (2 * h);
      const err = Math.abs(fd - g[i]);
      assert.ok(
        err <= 0.03 * Math.max(Math.abs(fd), Math.abs(g[i])) + 2e-3,
        `${name}[${i}]: analytic ${g[i]}, finite differences ${fd}`,
      );
      checked++;
    }
  }
  assert.equal(checked, 3 * 21);
  // every parameter vector carries gradient here (LWC clips: γ, β in [1, 3])
  for (const [name, g] of vectors(dp)) {
    assert.ok(g.some((v) => Math.abs(v) > 1e-4), `${name} has no gradient`);
  }
});

Deno.test("fakeQuantRowsWith() with round-half-even is act_quant.ts's fakeQuantRows exactly", () => {
  const u = mulberry32(2);
  const x = Float32Array.from({ length: 40 }, () => u() * 4 - 1);
  assert.deepEqual(
    fakeQuantRowsWith(x, 5, 8, 15, new Float32Array(40), roundHalfEven),
    fakeQuantRows(x, 5, 8, 15, new Float32Array(40)),
  );
});

const stories = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));

Deno.test("abq: the loss decreases over epochs on stories260K's first block (W3A16, 4 windows of 64 random tokens, 4 epochs)", async () => {
  const c = { ...stories.config, nLayers: 1 };
  const one = { ...stories, config: c, layers: [stories.layers[0]] };
  const windows = randomWindows(4, 64, c.vocabSize, 7);
  const r = await abqQuantizeModel(one, windows, {
    bits: 3,
    groupSize: null,
    bitBalance: false,
    act: null,
    epochs: 4,
    letLr: 5e-3,
    lwcLr: 1e-2,
  });
  const [{ firstLoss, lastLoss }] = r.stats;
  assert.ok(lastLoss < firstLoss, `first epoch ${firstLoss}, last ${lastLoss}`);
});

Deno.test("abq: the same codes, scales and losses with the step split over a worker as on one thread (W4A8 with Q/K/V at 8 bits, group 4, stories260K's first 2 blocks, 2 windows of 40)", async () => {
  const c = { ...stories.config, nLayers: 2 };
  const two = { ...stories, config: c, layers: stories.layers.slice(0, 2) };
  const windows = randomWindows(2, 40, c.vocabSize, 3);
  const run = (workers: number) =>
    abqQuantizeModel(two, windows, {
      bits: 4,
      groupSize: 4,
      bitBalance: false,
      act: { abits: 8, kvBits: 8, bitBalance: false },
      epochs: 2,
      letLr: 5e-3,
      lwcLr: 1e-2,
      workers,
    });
  const solo = await run(0), split = await run(1);
  assert.deepEqual(split.stats, solo.stats);
  assert.ok(solo.stats.every((s) => Number.isFinite(s.lastLoss)));
  for (const [key, q] of solo.linears) assert.deepEqual(split.linears.get(key), q, key);
});
