/**
 * Speed of SqueezeLLM's per-row k-means: seconds per row (one thread) and per
 * LLaMA-7B-shaped layer (4096×4096 attention, 11008×4096 MLP; on workers),
 * at 3 and 4 bits, on seeded random weights W ~ N(0, 0.02²) and Fisher
 * F = squares of standard Gaussians; and scikit-learn's weighted KMeans per
 * row on the same rows (how the official `nuq.py` clusters), run with
 * /usr/bin/python3 when it has scikit-learn.
 *
 * Run: `deno run -A eval/bench/squeezellm.ts [--small]` (or through the CLI's
 * `bench squeezellm`).
 *
 * @module
 */
import { randn } from "../../model/random.ts";
import { kmeans1d } from "../../quant/kmeans1d.ts";
import {
  quantizeLutRows,
  rowSeed,
  SQUEEZELLM_DEFAULTS,
  squeezellmQuantize,
} from "../../quant/squeezellm.ts";
import { DEFAULT_WORKERS } from "../../quant/spec.ts";

/** Options of {@linkcode benchSqueezellm}. */
export interface BenchSqueezellmOptions {
  /** Smoke run: 1/16 of the layer rows, 20 timed rows, 10 scikit-learn rows. @default false */
  small?: boolean;
  /** Worker threads for the layer timings. @default DEFAULT_WORKERS (quant/spec.ts: the number of cores) */
  workers?: number;
  /** Bit widths. @default [3, 4] */
  bits?: number[];
  /** Rows timed on one thread per bit width. @default 200 (small: 20) */
  rows?: number;
  /** Rows given to scikit-learn (at the first bit width). @default 50 (small: 10) */
  sklearnRows?: number;
  /** Python with numpy and scikit-learn; absent or failing: that part is skipped. @default "/usr/bin/python3" */
  python?: string;
  /** Seed of the random weights and of k-means. @default 0 */
  seed?: number;
  /** Where lines go. @default console.log */
  log?: (line: string) => void;
}

/** One-thread timing of whole rows (k-means, fp16 LUT, codes, packing); best of 3 passes. */
export interface RowTiming {
  bits: number;
  cols: number;
  rows: number;
  secondsPerRow: number;
  /** Mean Lloyd iterations. */
  iterations: number;
}

/** Timing of {@linkcode squeezellmQuantize} on one dense-only layer. */
export interface LayerTiming {
  bits: number;
  rows: number;
  cols: number;
  workers: number;
  seconds: number;
  /** seconds / rows: wall time per row with all workers busy. */
  secondsPerRow: number;
}

/** scikit-learn against ours on the same rows. */
export interface SklearnComparison {
  bits: number;
  rows: number;
  cols: number;
  /** scikit-learn 'KMeans(2^b, random_state=0, n_init="auto", max_iter=50).fit' per row, its default threads. */
  sklearnSecondsPerRow: number;
  /** The same with OMP_NUM_THREADS=1. */
  sklearnSecondsPerRow1Thread: number;
  /** kmeans1d per row on one thread (best of 5 passes over the rows). */
  oursSecondsPerRow: number;
  /** sklearnSecondsPerRow1Thread / oursSecondsPerRow. */
  speedup: number;
  /** Mean over rows of our inertia / scikit-learn's (below 1: ours is better). */
  meanInertiaRatio: number;
  sklearnVersion: string;
}

/** Everything {@linkcode benchSqueezellm} measured. */
export interface BenchSqueezellmResult {
  perRow: RowTiming[];
  layers: LayerTiming[];
  sklearn: SklearnComparison | { skipped: string };
}

/** Layer shapes of LLaMA-7B: attention projections and the MLP's gate/up. */
const LLAMA7B_SHAPES: [number, number][] = [[4096, 4096], [11008, 4096]];

/**
 * Measures SqueezeLLM's k-means speed (see the module doc), prints one line
 * per figure and returns them.
 *
 * @param opts see {@linkcode BenchSqueezellmOptions}
 * @returns per-row and per-layer timings, and the scikit-learn comparison (or why it was skipped)
 *
 * @example
 * ```ts
 * const r = await benchSqueezellm({ small: true });
 * r.perRow[0].secondsPerRow;
 * ```
 */
export async function benchSqueezellm(
  opts: BenchSqueezellmOptions = {},
): Promise<BenchSqueezellmResult> {
  const small = opts.small ?? false;
  const workers = opts.workers ?? DEFAULT_WORKERS;
  const bitsList = opts.bits ?? [3, 4];
  const nRows = opts.rows ?? (small ? 20 : 200);
  const nSk = opts.sklearnRows ?? (small ? 10 : 50);
  const seed = opts.seed ?? 0;
  const log = opts.log ?? console.log;
  const cols = 4096;

  // Per row, one thread: the work of one row of a layer.
  const { W, F } = randomLayer(nRows, cols, seed);
  const perRow: RowTiming[] = [];
  for (const bits of bitsList) {
    const rowOpts = { ...SQUEEZELLM_DEFAULTS, bits, seed };
    // Best of 3 passes over the rows (the first also warms up the JIT).
    let secondsPerRow = Infinity, r!: ReturnType<typeof quantizeLutRows>;
    for (let rep = 0; rep < 3; rep++) {
      const t0 = performance.now();
      r = quantizeLutRows(W, F, nRows, cols, 0, rowOpts);
      secondsPerRow = Math.min(secondsPerRow, (performance.now() - t0) / 1000 / nRows);
    }
    perRow.push({ bits, cols, rows: nRows, secondsPerRow, iterations: r.iterations / nRows });
    log(
      `squeezellm row ${cols} cols, ${bits} bits, 1 thread: ${fmtMs(secondsPerRow)} per row ` +
        `(${(r.iterations / nRows).toFixed(1)} Lloyd iterations)`,
    );
  }

  // Per layer, on workers.
  const layers: LayerTiming[] = [];
  for (const [fullRows, c] of LLAMA7B_SHAPES) {
    const rows = small ? fullRows / 16 : fullRows;
    const L = randomLayer(rows, c, seed + 1);
    for (const bits of bitsList) {
      const { stats } = await squeezellmQuantize(L.W, L.F, rows, c, { bits, seed, workers });
      layers.push({
        bits,
        rows,
        cols: c,
        workers,
        seconds: stats.seconds,
        secondsPerRow: stats.seconds / rows,
      });
      log(
        `squeezellm layer ${rows}×${c}, ${bits} bits, ${workers} workers: ${
          stats.seconds.toFixed(2)
        } s ` +
          `(${fmtMs(stats.seconds / rows)} per row)`,
      );
    }
  }

  const sklearn = await compareSklearn(
    W.subarray(0, Math.min(nSk, nRows) * cols),
    F.subarray(0, Math.min(nSk, nRows) * cols),
    Math.min(nSk, nRows),
    cols,
    bitsList[0],
    seed,
    opts.python ?? "/usr/bin/python3",
  );
  if ("skipped" in sklearn) log(`squeezellm vs scikit-learn: skipped (${sklearn.skipped})`);
  else {
    log(
      `scikit-learn ${sklearn.sklearnVersion} KMeans per row (${sklearn.rows} rows × ${cols}, ` +
        `${sklearn.bits} bits): ${fmtMs(sklearn.sklearnSecondsPerRow)} (default threads), ` +
        `${fmtMs(sklearn.sklearnSecondsPerRow1Thread)} (1 thread); ours ${
          fmtMs(sklearn.oursSecondsPerRow)
        }: ` +
        `${sklearn.speedup.toFixed(1)}× faster per row on one thread; ` +
        `inertia ours/scikit-learn ${sklearn.meanInertiaRatio.toFixed(4)}`,
    );
  }
  return { perRow, layers, sklearn };
}

function fmtMs(seconds: number): string {
  return `${(seconds * 1000).toFixed(3)} ms`;
}

/** W [rows, cols] ~ N(0, 0.02²), F [rows, cols] = squared N(0, 1). */
function randomLayer(rows: number, cols: number, seed: number) {
  const W = randn(rows * cols, 1000 + 2 * seed, 0.02);
  const F = randn(rows * cols, 1001 + 2 * seed);
  for (let i = 0; i < F.length; i++) F[i] *= F[i];
  return { W, F };
}

/** Our kmeans1d and scikit-learn's KMeans on the same rows; timings and inertias. */
async function compareSklearn(
  W: Float32Array,
  F: Float32Array,
  rows: number,
  cols: number,
  bits: number,
  seed: number,
  python: string,
): Promise<SklearnComparison | { skipped: string }> {
  const k = 1 << bits;
  const dir = await Deno.makeTempDir({ prefix: "sqb_sklearn_" });
  try {
    await Deno.writeFile(`${dir}/w.bin`, new Uint8Array(W.buffer, W.byteOffset, W.byteLength));
    await Deno.writeFile(`${dir}/f.bin`, new Uint8Array(F.buffer, F.byteOffset, F.byteLength));
    // Rows exactly as nuq.py passes them: float32 values, weights masked where w == 0.
    const script = `
import json, sys, time
import numpy as np, sklearn
from sklearn.cluster import KMeans
rows, cols, k = ${rows}, ${cols}, ${k}
W = np.fromfile(sys.argv[1] + "/w.bin", dtype=np.float32).reshape(rows, cols)
F = np.fromfile(sys.argv[1] + "/f.bin", dtype=np.float32).reshape(rows, cols)
times, inertias = [], []
for i in range(rows):
    sw = F[i] * (W[i] != 0)
    if np.sum(sw) == 0:
        sw = np.ones_like(sw)
    t = time.perf_counter()
    km = KMeans(n_clusters=k, random_state=0, n_init="auto", max_iter=50).fit(W[i].reshape(-1, 1), sample_weight=sw)
    times.append(time.perf_counter() - t)
    c = np.sort(km.cluster_centers_.reshape(-1).astype(np.float64))
    x = W[i].astype(np.float64)
    d = np.min((x[:, None] - c[None, :]) ** 2, axis=1)
    inertias.append(float(np.sum(sw.astype(np.float64) * d)))
print(json.dumps({"times": times, "inertias": inertias, "version": sklearn.__version__}))
`;
    const run = async (env: Record<string, string>) => {
      const out = await new Deno.Command(python, {
        args: ["-c", script, dir],
        env,
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!out.success) {
        const err = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1);
        throw new Error(`${python} failed: ${err}`);
      }
      return JSON.parse(new TextDecoder().decode(out.stdout)) as {
        times: number[];
        inertias: number[];
        version: string;
      };
    };
    let multi, single;
    try {
      multi = await run({});
      single = await run({ OMP_NUM_THREADS: "1" });
    } catch (e) {
      return { skipped: `${(e as Error).message}; install python3-sklearn (apt) to compare` };
    }
    // Ours on the same rows, one thread, after a warm-up.
    const sw = new Float32Array(cols);
    const ours = (r: number) => {
      const x = W.subarray(r * cols, (r + 1) * cols), g = F.subarray(r * cols, (r + 1) * cols);
      for (let c = 0; c < cols; c++) sw[c] = x[c] !== 0 ? g[c] : 0;
      return kmeans1d(x, sw, k, { seed: rowSeed(seed, r) });
    };
    // Best of 5 passes over the rows (the first also warms up the JIT).
    let ratio = 0, oursSecondsPerRow = Infinity, inertias: number[] = [];
    for (let rep = 0; rep < 5; rep++) {
      const t0 = performance.now();
      inertias = Array.from({ length: rows }, (_, r) => ours(r).inertia);
      oursSecondsPerRow = Math.min(oursSecondsPerRow, (performance.now() - t0) / 1000 / rows);
    }
    for (let r = 0; r < rows; r++) ratio += inertias[r] / single.inertias[r];
    // Mean per row, leaving out scikit-learn's first (warm-up) row.
    const mean = (a: number[]) => {
      const b = a.length > 1 ? a.slice(1) : a;
      return b.reduce((p, q) => p + q, 0) / b.length;
    };
    const sk1 = mean(single.times);
    return {
      bits,
      rows,
      cols,
      sklearnSecondsPerRow: mean(multi.times),
      sklearnSecondsPerRow1Thread: sk1,
      oursSecondsPerRow,
      speedup: sk1 / oursSecondsPerRow,
      meanInertiaRatio: ratio / rows,
      sklearnVersion: multi.version,
    };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { skipped: `${python} not found` };
    throw e;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  await benchSqueezellm({ small: Deno.args.includes("--small") });
}
