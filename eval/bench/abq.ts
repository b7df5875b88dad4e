/**
 * Speed of ABQ-LLM (quant/abq.ts) on stories260K: the time of one training
 * step on one block (the effective weights, the block's forward, the loss,
 * the block's backward, the parameters' gradient), wall and CPU, and the
 * time of one whole quantization. Calibration windows are seeded random
 * tokens: the work does not depend on their values.
 *
 * Run: `deno run -A eval/bench/abq.ts CHECKPOINT [--small] [--windows N]
 * [--seqlen N] [--epochs N] [--bits B]`. The defaults are the official
 * setting (128 windows of max_seq_len, 20 epochs at 3 bits); `--small` is a
 * smoke run (4 windows of 128, 1 epoch). The issue's target: one official
 * quantization ≤ 5 minutes on the 2-core CI machine.
 *
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { loadCheckpoint } from "../../model/checkpoint.ts";
import { embed } from "../../model/forward.ts";
import { randomWindows } from "../../model/random.ts";
import {
  abqLoss,
  abqQuantizeModel,
  type ActMaxima,
  EffectiveBlock,
  initParams,
  teacherMap,
  zerosLike,
} from "../../quant/abq.ts";
import { AbqBlockState, triangle } from "../../quant/abq_grad.ts";
import { gridMaxq } from "../../quant/rtn.ts";

/** CPU time of this process (user + system), ms. */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** The figures {@linkcode benchAbq} measures. */
export interface AbqBenchResult {
  windows: number;
  seqlen: number;
  epochs: number;
  /** One training step (one window on one block), ms, by part, CPU time. */
  stepCpuMs: Record<string, number>;
  stepWallMs: number;
  /** Steps of a whole quantization: nLayers × epochs × windows. */
  steps: number;
  /** The whole quantization. */
  totalWallS: number;
  totalCpuS: number;
}

/** Measures one ABQ step and one whole ABQ quantization of `path`. */
export async function benchAbq(
  path: string,
  opts: { windows: number; seqlen: number; epochs: number; bits: number },
): Promise<AbqBenchResult> {
  const w = await loadCheckpoint(path);
  const c = w.config, T = opts.seqlen, lw = w.layers[0];
  const windows = randomWindows(opts.windows, T, c.vocabSize, 1);
  // one step, 20 times
  const x = new Float32Array(T * c.dim);
  embed(w, windows[0], x);
  const fp = new AbqBlockState(c, T, null), st = new AbqBlockState(c, T, null);
  const t1 = fp.forward(lw, x, T).slice();
  const teacher = teacherMap(fp.avgProbs, T);
  const ones = (n: number) => new Float32Array(n).fill(1);
  const act: ActMaxima = {
    qkv: ones(c.dim),
    out: ones(c.dim),
    fc1: ones(c.dim),
    fc2: ones(c.hiddenDim),
  };
  const p = initParams(c, lw, act, 0, null), dp = zerosLike(p);
  const eff = new EffectiveBlock(c, null, gridMaxq(opts.bits));
  const dY = new Float32Array(T * c.dim), dA = new Float32Array(triangle(T));
  const parts: Record<string, number> = {};
  const time = <R>(k: string, f: () => R): R => {
    const t0 = cpuMs();
    const r = f();
    parts[k] = (parts[k] ?? 0) + cpuMs() - t0;
    return r;
  };
  const reps = 20, w0 = performance.now();
  for (let i = 0; i < reps; i++) {
    const q = time("weights", () => eff.forward(lw, p));
    const Y = time("block forward", () => st.forward(q, x, T));
    time("loss", () => abqLoss(Y, t1, t1, st.avgProbs, teacher, T, c.dim, dY, dA));
    const g = time("block backward", () => st.backward(q, dY, dA, T));
    time("weights backward", () => eff.backward(lw, p, g, dp));
  }
  const stepWallMs = (performance.now() - w0) / reps;
  for (const k in parts) parts[k] /= reps;
  // the whole quantization
  const c0 = cpuMs(), t0 = performance.now();
  abqQuantizeModel(w, windows, {
    bits: opts.bits,
    groupSize: null,
    bitBalance: false,
    act: null,
    epochs: opts.epochs,
    letLr: 5e-3,
    lwcLr: 1e-2,
  });
  return {
    ...opts,
    stepCpuMs: parts,
    stepWallMs,
    steps: c.nLayers * opts.epochs * opts.windows,
    totalWallS: (performance.now() - t0) / 1000,
    totalCpuS: (cpuMs() - c0) / 1000,
  };
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      small: { type: "boolean" },
      windows: { type: "string" },
      seqlen: { type: "string" },
      epochs: { type: "string" },
      bits: { type: "string" },
    },
  });
  const path = positionals[0];
  if (!path) throw new Error("usage: deno run -A eval/bench/abq.ts CHECKPOINT [--small] …");
  const small = values.small === true;
  const r = await benchAbq(path, {
    windows: Number(values.windows ?? (small ? 4 : 128)),
    seqlen: Number(values.seqlen ?? (small ? 128 : 512)),
    epochs: Number(values.epochs ?? (small ? 1 : 20)),
    bits: Number(values.bits ?? 3),
  });
  const stepCpu = Object.values(r.stepCpuMs).reduce((a, b) => a + b, 0);
  console.log(JSON.stringify(r, null, 2));
  console.log(
    `one step: ${stepCpu.toFixed(1)} ms CPU (${r.stepWallMs.toFixed(1)} ms wall); ` +
      `${r.steps} steps: ${r.totalWallS.toFixed(1)} s wall, ${r.totalCpuS.toFixed(1)} s CPU ` +
      `(target for 128 windows × 20 epochs: ≤ 300 s)`,
  );
}
