/**
 * Speed of the CPU forward's hot loops: every matmul variant on the
 * stories260K linear-layer shapes at T = 512 (a prefill window) and on a
 * LLaMA-7B-sized 4096 × 4096 layer at T = 8; causal attention at T = 512.
 * Single-threaded. Each figure is the best of several timed batches, in
 * wall-clock time and in this process's CPU time (on a shared machine the
 * CPU time is the steadier measure of the code's own speed).
 *
 * ```sh
 * deno run -A eval/bench/matmul.ts
 * ```
 *
 * @module
 */
import process from "node:process";
import { matmulBlocked, matmulRef, matmulWasm } from "../../model/matmul.ts";
import { randn } from "../../model/random.ts";
import { causalAttentionRef, causalAttentionWasm } from "../../model/wasm/attention.ts";

/** A matmul shape: out [T, d] = x [T, n] @ Wᵀ, W [d, n]. */
export interface MatmulShape {
  /** What the shape is, e.g. "w1 (64→172)". */
  label: string;
  T: number;
  n: number;
  d: number;
}

/** One measurement of {@linkcode benchMatmul} or {@linkcode benchAttention}. */
export interface BenchRow {
  /** Function measured, e.g. "matmulWasm". */
  variant: string;
  /** The shape, as in {@linkcode MatmulShape.label}. */
  label: string;
  /** Wall-clock milliseconds per call (best batch). */
  ms: number;
  /** CPU milliseconds of this process per call (best batch). */
  cpuMs: number;
  /** Useful floating-point operations per wall-clock second, in 1e9 (2 per multiply-add). */
  gflops: number;
  /** The same per CPU second. */
  cpuGflops: number;
}

/** stories260K's linear layers at T = 512, then a 4096 × 4096 layer at T = 8. */
export const BENCH_SHAPES: readonly MatmulShape[] = [
  { label: "wq/wo (64→64)", T: 512, n: 64, d: 64 },
  { label: "wk/wv (64→32)", T: 512, n: 64, d: 32 },
  { label: "w1/w3 (64→172)", T: 512, n: 64, d: 172 },
  { label: "w2 (172→64)", T: 512, n: 172, d: 64 },
  { label: "classifier (64→512)", T: 512, n: 64, d: 512 },
  { label: "4096→4096, T=8", T: 8, n: 4096, d: 4096 },
];

/** Options of {@linkcode benchMatmul} and {@linkcode benchAttention}. */
export interface BenchOptions {
  /** Timed batches per measurement; the best one counts. @default 5 */
  batches?: number;
  /** Minimum milliseconds per batch (calls repeat until reached). @default 50 */
  minBatchMs?: number;
  /** Print a table to stdout. @default true */
  print?: boolean;
}

/**
 * Best wall-clock and CPU milliseconds per call of `fn` over `batches`
 * batches of at least `minBatchMs` each.
 */
function timeCall(
  fn: () => void,
  batches: number,
  minBatchMs: number,
): { ms: number; cpuMs: number } {
  fn(); // warm-up: JIT tier-up, wasm memory growth
  let ms = Infinity, cpuMs = Infinity;
  for (let b = 0; b < batches; b++) {
    let calls = 0;
    const c0 = process.cpuUsage(), t0 = performance.now();
    let dt = 0;
    do {
      fn();
      calls++;
      dt = performance.now() - t0;
    } while (dt < minBatchMs);
    const c = process.cpuUsage(c0);
    ms = Math.min(ms, dt / calls);
    cpuMs = Math.min(cpuMs, (c.user + c.system) / 1000 / calls);
  }
  return { ms, cpuMs };
}

/** A row from a timing and the operation count of one call. */
function row(variant: string, label: string, t: { ms: number; cpuMs: number }, flop: number) {
  return { variant, label, ...t, gflops: flop / (t.ms * 1e6), cpuGflops: flop / (t.cpuMs * 1e6) };
}

function printRows(title: string, rows: BenchRow[]): void {
  console.log(title);
  for (const r of rows) {
    console.log(
      `  ${r.variant.padEnd(20)} ${r.label.padEnd(26)} wall ${r.ms.toFixed(3).padStart(8)} ms ` +
        `${r.gflops.toFixed(2).padStart(6)} GFLOP/s | cpu ${r.cpuMs.toFixed(3).padStart(8)} ms ` +
        `${r.cpuGflops.toFixed(2).padStart(6)} GFLOP/s`,
    );
  }
}

/**
 * Times matmulRef, matmulBlocked and matmulWasm (including its copies in and
 * out of WebAssembly memory) on each shape.
 *
 * @param shapes shapes to measure. @default BENCH_SHAPES
 * @returns one row per variant and shape.
 * @example
 * ```ts
 * const rows = benchMatmul(BENCH_SHAPES, { print: false });
 * ```
 */
export function benchMatmul(
  shapes: readonly MatmulShape[] = BENCH_SHAPES,
  opts: BenchOptions = {},
): BenchRow[] {
  const { batches = 5, minBatchMs = 50, print = true } = opts;
  const variants = { matmulRef, matmulBlocked, matmulWasm };
  const rows: BenchRow[] = [];
  for (const { label, T, n, d } of shapes) {
    const x = randn(T * n, 1), w = randn(d * n, 2, 1 / Math.sqrt(n));
    const out = new Float32Array(T * d);
    for (const [variant, fn] of Object.entries(variants)) {
      const t = timeCall(() => fn(out, x, w, T, n, d), batches, minBatchMs);
      rows.push(row(variant, label, t, 2 * T * n * d));
    }
  }
  if (print) printRows("matmul, out [T, d] = x [T, n] @ Wᵀ, one thread:", rows);
  return rows;
}

/** An attention shape: T positions, nHeads query heads over nKvHeads kv heads. */
export interface AttentionShape {
  label: string;
  T: number;
  nHeads: number;
  nKvHeads: number;
  headSize: number;
}

/** stories260K's attention (one layer) at T = 512. */
export const BENCH_ATTENTION_SHAPES: readonly AttentionShape[] = [
  { label: "stories260K layer, T=512", T: 512, nHeads: 8, nKvHeads: 4, headSize: 8 },
];

/**
 * Times causalAttentionRef and causalAttentionWasm on each shape; GFLOP/s
 * counts the 2 · T(T+1)/2 · headSize multiply-adds of scores and weighted
 * sums per head.
 *
 * @param shapes shapes to measure. @default BENCH_ATTENTION_SHAPES
 * @returns one row per variant and shape.
 */
export function benchAttention(
  shapes: readonly AttentionShape[] = BENCH_ATTENTION_SHAPES,
  opts: BenchOptions = {},
): BenchRow[] {
  const { batches = 5, minBatchMs = 50, print = true } = opts;
  const variants = { causalAttentionRef, causalAttentionWasm };
  const rows: BenchRow[] = [];
  for (const { label, T, nHeads, nKvHeads, headSize } of shapes) {
    const dim = nHeads * headSize, kv = nKvHeads * headSize;
    const q = randn(T * dim, 1), k = randn(T * kv, 2), v = randn(T * kv, 3);
    const att = new Float32Array(T * dim);
    const macs = nHeads * headSize * T * (T + 1); // scores + weighted sum
    for (const [variant, fn] of Object.entries(variants)) {
      const t = timeCall(
        () => fn(att, q, k, v, T, nHeads, nKvHeads, headSize),
        batches,
        minBatchMs,
      );
      rows.push(row(variant, label, t, 2 * macs));
    }
  }
  if (print) printRows("causal attention, all heads of one layer, one thread:", rows);
  return rows;
}

if (import.meta.main) {
  benchMatmul();
  benchAttention();
}
