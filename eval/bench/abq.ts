/**
 * Speed of ABQ-LLM (quant/abq.ts) on stories260K: the time of one training
 * step on one block (the effective weights, the block's forward, the loss,
 * the block's backward, the parameters' gradient), wall and CPU, and the
 * time of one whole quantization. Calibration windows are seeded random
 * tokens: the work does not depend on their values.
 *
 * Run: `deno run -A eval/bench/abq.ts CHECKPOINT [--small] [--windows N]
 * [--seqlen N] [--epochs N] [--bits B] [--workers W]` (W = 1: the step split
 * over a worker, quant/abq_parallel.ts; the default). The defaults are the official
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
  abqQuantizeModel,
  type ActMaxima,
  EffectiveBlock,
  initParams,
  teacherMap,
  zerosLike,
} from "../../quant/abq.ts";
import { AbqBlockState } from "../../quant/abq_grad.ts";
import { AbqSteps } from "../../quant/abq_parallel.ts";
import { gridMaxq } from "../../quant/rtn.ts";

/** CPU time of this process (user + system, every thread), ms. */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** The figures {@linkcode benchAbq} measures. */
export interface AbqBenchResult {
  windows: number;
  seqlen: number;
  epochs: number;
  /** Worker threads of the whole quantization. */
  workers: number;
  /** One training step (one window on one block) with 0 and 1 workers: median ms, wall and CPU. */
  step: Record<"workers0" | "workers1", { wallMs: number; cpuMs: number }>;
  /** Steps of a whole quantization: nLayers × epochs × windows. */
  steps: number;
  /** The whole quantization. */
  totalWallS: number;
  totalCpuS: number;
}

/** Measures one ABQ step (interleaved, 0 and 1 workers) and one whole ABQ quantization of `path`. */
export async function benchAbq(
  path: string,
  opts: { windows: number; seqlen: number; epochs: number; bits: number; workers: number },
): Promise<AbqBenchResult> {
  const w = await loadCheckpoint(path);
  const c = w.config, T = opts.seqlen, lw = w.layers[0];
  const windows = randomWindows(opts.windows, T, c.vocabSize, 1);
  const x = new Float32Array(T * c.dim);
  embed(w, windows[0], x);
  const fp = new AbqBlockState(c, T, null);
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
  const runs = {
    workers0: await AbqSteps.start(c, T, null, 0),
    workers1: await AbqSteps.start(c, T, null, 1),
  };
  const times: Record<string, { wall: number[]; cpu: number[] }> = {};
  try {
    for (let round = 0; round < 6; round++) {
      for (const [k, steps] of Object.entries(runs)) {
        const reps = 10, w0 = performance.now(), c0 = cpuMs();
        for (let i = 0; i < reps; i++) {
          steps.step(eff.forward(lw, p), x, t1, t1, teacher, T);
          eff.backward(lw, p, steps.st.grads, dp);
        }
        if (round === 0) continue; // warm-up
        (times[k] ??= { wall: [], cpu: [] }).wall.push((performance.now() - w0) / reps);
        times[k].cpu.push((cpuMs() - c0) / reps);
      }
    }
  } finally {
    for (const steps of Object.values(runs)) await steps.close();
  }
  const median = (a: number[]) => a.slice().sort((u, v) => u - v)[a.length >> 1];
  const step = {} as AbqBenchResult["step"];
  for (const k of ["workers0", "workers1"] as const) {
    step[k] = { wallMs: median(times[k].wall), cpuMs: median(times[k].cpu) };
  }
  // the whole quantization
  const c0 = cpuMs(), t0 = performance.now();
  await abqQuantizeModel(w, windows, {
    bits: opts.bits,
    groupSize: null,
    bitBalance: false,
    act: null,
    epochs: opts.epochs,
    letLr: 5e-3,
    lwcLr: 1e-2,
    workers: opts.workers,
  });
  return {
    ...opts,
    step,
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
      workers: { type: "string" },
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
    workers: Number(values.workers ?? 1),
  });
  const { workers0: s0, workers1: s1 } = r.step;
  console.log(JSON.stringify(r, null, 2));
  console.log(
    `one step: ${s0.wallMs.toFixed(1)} ms wall (${s0.cpuMs.toFixed(1)} ms CPU) on one thread, ` +
      `${s1.wallMs.toFixed(1)} ms wall (${s1.cpuMs.toFixed(1)} ms CPU) with a worker; ` +
      `${r.steps} steps with ${r.workers} worker(s): ${r.totalWallS.toFixed(1)} s wall, ` +
      `${r.totalCpuS.toFixed(1)} s CPU (target for 128 windows × 20 epochs: ≤ 300 s wall)`,
  );
}
