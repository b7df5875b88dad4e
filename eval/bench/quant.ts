/**
 * Benchmark of the CPU quantizers on LLaMA-7B-shaped layers: RTN and GPTQ
 * (quant/gptq_fast.ts) on a 4096×4096 (q/k/v/o_proj) and an 11008×4096
 * (gate/up_proj) weight, seeded random (N(0, 0.02²)), with H accumulated
 * from 4,096 seeded random calibration rows of width 4096 (GPTQ's add_batch,
 * counted as one window). Both layers read 4096-wide inputs, so H is
 * accumulated once and copied; the time of add_batch is reported on its own.
 *
 * `peer: true` (`deno task bench quant --peer`) also races the official
 * GPTQ on the q_proj layer: eval/bench/peers/gptq_official.py implements
 * IST-DASLab/gptq's `add_batch` + `fasterquant` step by step in PyTorch, run
 * by /usr/bin/python3 on the same x and W (written to a temporary folder),
 * same bits and groups. The four runs are interleaved in one process — ours
 * on one thread, the official code on one thread (OMP/OpenBLAS threads 1),
 * ours on every worker, the official code on every thread — so that load
 * from other processes hits both sides alike. Ratios are ours / official
 * (below 1: ours is faster); the one-thread runs also report CPU seconds
 * and their ratios (`hessianRatioCpu`, `fasterquantRatioCpu`), which a busy
 * machine moves much less than wall-clock time. The official code runs with torch's defaults
 * (OpenMP's default wait policy: on a machine whose cores are busy with
 * other work, its threads can spin for minutes; the figures say so).
 *
 * `deno task bench quant` runs it through the CLI; `--small` divides every
 * width by 8 (512×512 and 1376×512, 512 calibration rows) for a smoke test.
 *
 * @module
 */
import process from "node:process";
import { randn } from "../../model/random.ts";
import { GptqFast } from "../../quant/gptq_fast.ts";
import { rtn } from "../../quant/rtn.ts";
import { DEFAULT_WORKERS } from "../../quant/spec.ts";

/** Options of {@linkcode benchQuant}. */
export interface BenchQuantOptions {
  /** Every width divided by 8, for a quick run. @default false */
  small?: boolean;
  /** Bits per weight. @default 3 */
  bits?: number;
  /** Columns per group; −1 for one group per row. @default 128 */
  groupSize?: number;
  /** Also time GPTQ with act-order. @default false */
  actOrder?: boolean;
  /** Seed of the weights and calibration rows. @default 0 */
  seed?: number;
  /** Worker threads of our solver ("all threads"). @default DEFAULT_WORKERS (quant/spec.ts) */
  workers?: number;
  /** Race the official GPTQ (PyTorch) on the q_proj layer. @default false */
  peer?: boolean;
  /** Python with PyTorch for the peer. @default "/usr/bin/python3" */
  python?: string;
  /** Where progress lines go. @default console.log */
  log?: (line: string) => void;
}

/** Timings of one layer. */
export interface BenchQuantLayer {
  name: string;
  rows: number;
  cols: number;
  rtnSeconds: number;
  /** GptqFast.fasterquant on `workers` threads. */
  gptqSeconds: number;
  /** GPTQ's Σ Losses. */
  gptqError: number;
}

/** Ours against the official GPTQ on one layer; seconds, ratios ours / official. */
export interface PeerComparison {
  rows: number;
  cols: number;
  calibRows: number;
  /** Threads of the "all threads" runs (our workers; torch's and OpenBLAS's threads). */
  threadsAll: number;
  oursHessianSeconds1: number;
  oursFasterquantSeconds1: number;
  officialHessianSeconds1: number;
  officialFasterquantSeconds1: number;
  oursHessianSecondsAll: number;
  oursFasterquantSecondsAll: number;
  officialHessianSecondsAll: number;
  officialFasterquantSecondsAll: number;
  /** Hessian, one thread each: ours / official. */
  hessianRatio: number;
  /** fasterquant, one thread each: ours / official. */
  fasterquantRatio: number;
  hessianRatioAllThreads: number;
  fasterquantRatioAllThreads: number;
  /**
   * CPU seconds (user + system, every thread of the process) of the
   * one-thread runs: what each side costs whatever else runs on the machine
   * (wall-clock ratios move with the load; these much less).
   */
  oursHessianCpuSeconds1: number;
  oursFasterquantCpuSeconds1: number;
  officialHessianCpuSeconds1: number;
  officialFasterquantCpuSeconds1: number;
  /** Hessian, one thread each, CPU time: ours / official. */
  hessianRatioCpu: number;
  /** fasterquant, one thread each, CPU time: ours / official. */
  fasterquantRatioCpu: number;
  /** Σ Losses of ours and of the official code (same layer; close, not equal: fp16 scales here). */
  oursError: number;
  officialError: number;
  torch: string;
}

/** What {@linkcode benchQuant} returns. */
export interface BenchQuantResult {
  bench: "quant";
  small: boolean;
  bits: number;
  groupSize: number;
  actOrder: boolean;
  calibRows: number;
  workers: number;
  /** Seconds of GptqFast.addBatch + flush over all calibration rows, `workers` threads. */
  hessianSeconds: number;
  layers: BenchQuantLayer[];
  peer?: PeerComparison | { skipped: string };
  /** The machine's logical cores. */
  cores: number;
}

/**
 * Times RTN and GPTQ on LLaMA-7B-shaped layers (and, with `peer`, the
 * official GPTQ) and prints the seconds.
 *
 * @param opts small, bits, groupSize, actOrder, seed, workers, peer, python, log
 * @returns the timings
 * @example
 * ```ts
 * const r = await benchQuant({ small: true });
 * console.log(r.layers[0].gptqSeconds);
 * ```
 */
export async function benchQuant(opts: BenchQuantOptions = {}): Promise<BenchQuantResult> {
  const small = opts.small ?? false;
  const bits = opts.bits ?? 3;
  const groupSize = opts.groupSize ?? 128;
  const actOrder = opts.actOrder ?? false;
  const seed = opts.seed ?? 0;
  const workers = opts.workers ?? DEFAULT_WORKERS;
  const log = opts.log ?? ((s: string) => console.log(s));
  const div = small ? 8 : 1;
  const cols = 4096 / div, calibRows = 4096 / div;
  const shapes: [string, number][] = [["q_proj", 4096 / div], ["gate_proj", 11008 / div]];
  const group = groupSize === -1 ? null : groupSize;
  log(
    `bench quant: ${bits}-bit, group ${groupSize}${actOrder ? ", act-order" : ""}, ` +
      `H from ${calibRows} rows × ${cols}, ${workers} workers${
        small ? " (--small: widths / 8)" : ""
      }`,
  );

  const x = randn(calibRows * cols, seed * 100 + 1); // [calibRows, cols]
  const weights = shapes.map(([, rows], i) => randn(rows * cols, seed * 100 + 2 + i, 0.02));

  let peer: BenchQuantResult["peer"];
  if (opts.peer) {
    peer = await comparePeer(x, calibRows, weights[0], shapes[0][1], cols, {
      bits,
      group,
      workers,
      python: opts.python ?? "/usr/bin/python3",
      log,
    });
  }

  const base = new GptqFast(1, cols, { workers });
  let t = performance.now();
  base.addBatch(x, calibRows);
  await base.flush();
  const hessianSeconds = (performance.now() - t) / 1000;
  log(`  add_batch ${calibRows}×${cols}: ${hessianSeconds.toFixed(2)} s`);

  const layers: BenchQuantLayer[] = [];
  for (const [i, [name, rows]] of shapes.entries()) {
    const W = weights[i]; // [rows, cols]
    t = performance.now();
    rtn(W, rows, cols, { bits, groupSize: group });
    const rtnSeconds = (performance.now() - t) / 1000;
    const g = await base.copyFor(rows);
    const r = await g.fasterquant(W, { bits, groupSize: group, actOrder });
    g.free();
    layers.push({ name, rows, cols, rtnSeconds, gptqSeconds: r.seconds, gptqError: r.error });
    log(
      `  ${name} ${rows}×${cols}: RTN ${rtnSeconds.toFixed(2)} s, GPTQ ${r.seconds.toFixed(2)} s ` +
        `(error ${r.error.toFixed(2)})`,
    );
  }
  base.free();
  return {
    bench: "quant",
    small,
    bits,
    groupSize,
    actOrder,
    calibRows,
    workers,
    hessianSeconds,
    layers,
    ...(peer ? { peer } : {}),
    cores: navigator.hardwareConcurrency,
  };
}

/** Ours (1 thread), official (1 thread), ours (all), official (all), on one layer. */
async function comparePeer(
  x: Float32Array,
  calibRows: number,
  W: Float32Array,
  rows: number,
  cols: number,
  o: {
    bits: number;
    group: number | null;
    workers: number;
    python: string;
    log: (line: string) => void;
  },
): Promise<PeerComparison | { skipped: string }> {
  const threadsAll = Math.max(1, o.workers);
  const dir = await Deno.makeTempDir({ prefix: "sqb_gptq_peer_" });
  try {
    await Deno.writeFile(`${dir}/x.bin`, new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
    await Deno.writeFile(`${dir}/w.bin`, new Uint8Array(W.buffer, W.byteOffset, W.byteLength));
    const ours = async (workers: number) => {
      const g = new GptqFast(rows, cols, { workers });
      const t = performance.now(), c = cpuSeconds();
      g.addBatch(x, calibRows);
      await g.flush();
      const hessian = (performance.now() - t) / 1000, hessianCpu = cpuSeconds() - c;
      const c1 = cpuSeconds();
      const r = await g.fasterquant(W, { bits: o.bits, groupSize: o.group });
      const fasterquantCpu = cpuSeconds() - c1;
      g.free();
      return { hessian, fasterquant: r.seconds, hessianCpu, fasterquantCpu, error: r.error };
    };
    const official = (threads: number) =>
      runOfficial(o.python, dir, { rows, cols, calibRows, bits: o.bits, group: o.group, threads });
    o.log(`  vs official GPTQ (PyTorch) on ${rows}×${cols}, H from ${calibRows} rows:`);
    const line = (who: string, h: number, f: number) =>
      o.log(`    ${who}: add_batch ${h.toFixed(2)} s, fasterquant ${f.toFixed(2)} s`);
    const o1 = await ours(0);
    line("ours, 1 thread          ", o1.hessian, o1.fasterquant);
    let p1;
    try {
      p1 = await official(1);
    } catch (e) {
      if (e instanceof PeerError || e instanceof Deno.errors.NotFound) {
        const why = `${(e as Error).message}; install python3-torch (apt) to compare`;
        o.log(`    official: skipped (${why})`);
        return { skipped: why };
      }
      throw e;
    }
    line("official, 1 thread      ", p1.hessianSeconds, p1.fasterquantSeconds);
    const oa = await ours(o.workers);
    line(`ours, ${threadsAll} workers         `, oa.hessian, oa.fasterquant);
    const pa = await official(threadsAll);
    line(`official, ${threadsAll} threads     `, pa.hessianSeconds, pa.fasterquantSeconds);
    const r: PeerComparison = {
      rows,
      cols,
      calibRows,
      threadsAll,
      oursHessianSeconds1: o1.hessian,
      oursFasterquantSeconds1: o1.fasterquant,
      officialHessianSeconds1: p1.hessianSeconds,
      officialFasterquantSeconds1: p1.fasterquantSeconds,
      oursHessianSecondsAll: oa.hessian,
      oursFasterquantSecondsAll: oa.fasterquant,
      officialHessianSecondsAll: pa.hessianSeconds,
      officialFasterquantSecondsAll: pa.fasterquantSeconds,
      hessianRatio: o1.hessian / p1.hessianSeconds,
      fasterquantRatio: o1.fasterquant / p1.fasterquantSeconds,
      hessianRatioAllThreads: oa.hessian / pa.hessianSeconds,
      fasterquantRatioAllThreads: oa.fasterquant / pa.fasterquantSeconds,
      oursHessianCpuSeconds1: o1.hessianCpu,
      oursFasterquantCpuSeconds1: o1.fasterquantCpu,
      officialHessianCpuSeconds1: p1.hessianCpuSeconds,
      officialFasterquantCpuSeconds1: p1.fasterquantCpuSeconds,
      hessianRatioCpu: o1.hessianCpu / p1.hessianCpuSeconds,
      fasterquantRatioCpu: o1.fasterquantCpu / p1.fasterquantCpuSeconds,
      oursError: o1.error,
      officialError: p1.error,
      torch: p1.torch,
    };
    o.log(
      `    ours / official: add_batch ${r.hessianRatio.toFixed(2)}×, fasterquant ` +
        `${r.fasterquantRatio.toFixed(2)}× (1 thread each); ${
          r.hessianRatioAllThreads.toFixed(2)
        }×, ${r.fasterquantRatioAllThreads.toFixed(2)}× (${threadsAll} threads each); ` +
        `error ${r.oursError.toFixed(1)} vs ${r.officialError.toFixed(1)} (torch ${r.torch})`,
    );
    o.log(
      `    CPU seconds, 1 thread each: add_batch ${o1.hessianCpu.toFixed(2)} vs ` +
        `${p1.hessianCpuSeconds.toFixed(2)} (${r.hessianRatioCpu.toFixed(2)}×), fasterquant ` +
        `${o1.fasterquantCpu.toFixed(2)} vs ${p1.fasterquantCpuSeconds.toFixed(2)} ` +
        `(${r.fasterquantRatioCpu.toFixed(2)}×)`,
    );
    return r;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** What eval/bench/peers/gptq_official.py prints (fasterquant's fields absent with `hessianOnly`). */
interface OfficialRun {
  hessianSeconds: number;
  fasterquantSeconds: number;
  hessianCpuSeconds: number;
  fasterquantCpuSeconds: number;
  error: number;
  torch: string;
}

/**
 * Runs the official GPTQ (eval/bench/peers/gptq_official.py) on DIR/x.bin
 * and DIR/w.bin with `threads` threads (OpenMP, OpenBLAS, MKL and torch).
 *
 * @throws {PeerError} when the script fails (no PyTorch)
 */
async function runOfficial(
  python: string,
  dir: string,
  o: {
    rows: number;
    cols: number;
    calibRows: number;
    bits: number;
    group: number | null;
    threads: number;
    hessianOnly?: boolean;
  },
): Promise<OfficialRun> {
  const script = new URL("./peers/gptq_official.py", import.meta.url).pathname;
  const n = String(o.threads);
  const out = await new Deno.Command(python, {
    args: [
      script,
      dir,
      ...["--rows", String(o.rows), "--cols", String(o.cols)],
      ...["--calib-rows", String(o.calibRows), "--bits", String(o.bits)],
      ...["--group", String(o.group ?? -1), "--threads", n],
      ...(o.hessianOnly ? ["--hessian-only"] : []),
    ],
    env: { OMP_NUM_THREADS: n, OPENBLAS_NUM_THREADS: n, MKL_NUM_THREADS: n },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1);
    throw new PeerError(`${python} ${script} failed: ${err}`);
  }
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  return JSON.parse(lines.at(-1)!) as OfficialRun;
}

/** Options of {@linkcode benchHessian}. */
export interface BenchHessianOptions {
  /** Interleaved rounds (ours, then the official code, each round). @default 5 */
  rounds?: number;
  /** Every width divided by 8. @default false */
  small?: boolean;
  /** Seed of the calibration rows (as {@linkcode benchQuant}'s). @default 0 */
  seed?: number;
  /** Python with PyTorch. @default "/usr/bin/python3" */
  python?: string;
  /** Where progress lines go. @default console.log */
  log?: (line: string) => void;
}

/** One-thread Hessian times, ours and the official code's, per round. */
export interface BenchHessianResult {
  bench: "quant-hessian";
  cols: number;
  calibRows: number;
  /** CPU seconds of GptqFast.addBatch + flush (0 workers), per round. */
  oursCpuSeconds: number[];
  /** CPU seconds of the official `add_batch` (1 thread), per round. */
  officialCpuSeconds: number[];
  /** ours / official per round, and their median. */
  ratiosCpu: number[];
  medianRatioCpu: number;
  torch: string;
}

/**
 * The Hessian alone, one thread each, `rounds` times interleaved (ours,
 * then the official `add_batch` in a fresh Python process): the figure of
 * {@linkcode benchQuant}'s `hessianRatioCpu` with a spread, for a machine
 * whose load moves single runs. `deno run -A eval/bench/quant.ts --hessian
 * [--rounds N] [--small]`.
 *
 * @param opts rounds, small, seed, python, log
 * @returns the CPU seconds and ratios per round
 * @throws {PeerError} when the official code cannot run (no PyTorch)
 * @example
 * ```ts
 * const r = await benchHessian({ rounds: 3, small: true });
 * console.log(r.medianRatioCpu);
 * ```
 */
export async function benchHessian(opts: BenchHessianOptions = {}): Promise<BenchHessianResult> {
  const rounds = opts.rounds ?? 5, seed = opts.seed ?? 0;
  if (!Number.isInteger(rounds) || rounds < 1) {
    throw new RangeError(`bench quant --hessian: --rounds must be an integer ≥ 1, got ${rounds}`);
  }
  const log = opts.log ?? ((s: string) => console.log(s));
  const div = opts.small ? 8 : 1, cols = 4096 / div, calibRows = 4096 / div;
  const x = randn(calibRows * cols, seed * 100 + 1); // [calibRows, cols], as benchQuant's
  const dir = await Deno.makeTempDir({ prefix: "sqb_gptq_hessian_" });
  try {
    await Deno.writeFile(`${dir}/x.bin`, new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
    await Deno.writeFile(`${dir}/w.bin`, new Uint8Array(cols * 4)); // one row: not used
    const r: BenchHessianResult = {
      bench: "quant-hessian",
      cols,
      calibRows,
      oursCpuSeconds: [],
      officialCpuSeconds: [],
      ratiosCpu: [],
      medianRatioCpu: NaN,
      torch: "",
    };
    log(`bench quant --hessian: H from ${calibRows} rows × ${cols}, 1 thread each, CPU seconds`);
    for (let round = 0; round < rounds; round++) {
      const g = new GptqFast(1, cols, { workers: 0 });
      const c = cpuSeconds();
      g.addBatch(x, calibRows);
      await g.flush();
      const ours = cpuSeconds() - c;
      g.free();
      const p = await runOfficial(opts.python ?? "/usr/bin/python3", dir, {
        rows: 1,
        cols,
        calibRows,
        bits: 3,
        group: null,
        threads: 1,
        hessianOnly: true,
      });
      r.oursCpuSeconds.push(ours);
      r.officialCpuSeconds.push(p.hessianCpuSeconds);
      r.ratiosCpu.push(ours / p.hessianCpuSeconds);
      r.torch = p.torch;
      log(
        `  round ${round + 1}: ours ${ours.toFixed(3)} s, official ${
          p.hessianCpuSeconds.toFixed(3)
        } s: ${(ours / p.hessianCpuSeconds).toFixed(3)}×`,
      );
    }
    const sorted = [...r.ratiosCpu].sort((a, b) => a - b), m = sorted.length >> 1;
    r.medianRatioCpu = sorted.length % 2 ? sorted[m] : (sorted[m - 1] + sorted[m]) / 2;
    log(`  median ours / official: ${r.medianRatioCpu.toFixed(3)}× (torch ${r.torch})`);
    return r;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** CPU time of this process (user + system, every thread), seconds. */
function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** The peer script could not run (no PyTorch, or it failed). */
class PeerError extends Error {}

if (import.meta.main) {
  const small = Deno.args.includes("--small");
  const at = Deno.args.indexOf("--rounds");
  if (Deno.args.includes("--hessian")) {
    await benchHessian({ small, rounds: at >= 0 ? Number(Deno.args[at + 1]) : undefined });
  } else {
    await benchQuant({ small, peer: Deno.args.includes("--peer") });
  }
}
