/**
 * Benchmark of the CPU quantizers on LLaMA-7B-shaped layers: RTN and GPTQ
 * on a 4096×4096 (q/k/v/o_proj) and an 11008×4096 (gate/up_proj) weight,
 * seeded random (N(0, 0.02²)), with H accumulated from 4,096 seeded random
 * calibration rows of width 4096 (GPTQ's add_batch, counted as one window).
 * Both layers read 4096-wide inputs, so H is accumulated once and copied
 * ({@linkcode Gptq.copyFor}); the time of add_batch is reported on its own.
 *
 * `deno task bench quant` runs it through the CLI; `--small` divides every
 * width by 8 (512×512 and 1376×512, 512 calibration rows) for a smoke test.
 *
 * @module
 */
import { randn } from "../../model/random.ts";
import { Gptq } from "../../quant/gptq.ts";
import { rtn } from "../../quant/rtn.ts";

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
  /** Where progress lines go. @default console.log */
  log?: (line: string) => void;
}

/** Timings of one layer. */
export interface BenchQuantLayer {
  name: string;
  rows: number;
  cols: number;
  rtnSeconds: number;
  gptqSeconds: number;
  /** GPTQ's Σ Losses. */
  gptqError: number;
}

/** What {@linkcode benchQuant} returns. */
export interface BenchQuantResult {
  bench: "quant";
  small: boolean;
  bits: number;
  groupSize: number;
  actOrder: boolean;
  calibRows: number;
  /** Seconds of Gptq.addBatch over all calibration rows. */
  hessianSeconds: number;
  layers: BenchQuantLayer[];
  /** The machine's logical cores (the solvers here use one). */
  cores: number;
}

/**
 * Times RTN and GPTQ on LLaMA-7B-shaped layers and prints the seconds.
 *
 * @param opts small, bits, groupSize, actOrder, seed, log
 * @returns the timings
 * @example
 * ```ts
 * const r = await benchQuant({ small: true });
 * console.log(r.layers[0].gptqSeconds);
 * ```
 */
export function benchQuant(opts: BenchQuantOptions = {}): Promise<BenchQuantResult> {
  const small = opts.small ?? false;
  const bits = opts.bits ?? 3;
  const groupSize = opts.groupSize ?? 128;
  const actOrder = opts.actOrder ?? false;
  const seed = opts.seed ?? 0;
  const log = opts.log ?? ((s: string) => console.log(s));
  const div = small ? 8 : 1;
  const cols = 4096 / div, calibRows = 4096 / div;
  const shapes: [string, number][] = [["q_proj", 4096 / div], ["gate_proj", 11008 / div]];
  log(
    `bench quant: ${bits}-bit, group ${groupSize}${actOrder ? ", act-order" : ""}, ` +
      `H from ${calibRows} rows × ${cols}${small ? " (--small: widths / 8)" : ""}`,
  );

  const x = randn(calibRows * cols, seed * 100 + 1); // [calibRows, cols]
  const base = new Gptq(1, cols);
  let t = performance.now();
  base.addBatch(x, calibRows);
  const hessianSeconds = (performance.now() - t) / 1000;
  log(`  add_batch ${calibRows}×${cols}: ${hessianSeconds.toFixed(2)} s`);

  const layers: BenchQuantLayer[] = [];
  for (const [i, [name, rows]] of shapes.entries()) {
    const W = randn(rows * cols, seed * 100 + 2 + i, 0.02); // [rows, cols]
    t = performance.now();
    rtn(W, rows, cols, { bits, groupSize });
    const rtnSeconds = (performance.now() - t) / 1000;
    const g = base.copyFor(rows);
    const r = g.fasterquant(W, { bits, groupSize, actOrder });
    g.free();
    layers.push({ name, rows, cols, rtnSeconds, gptqSeconds: r.seconds, gptqError: r.error });
    log(
      `  ${name} ${rows}×${cols}: RTN ${rtnSeconds.toFixed(2)} s, GPTQ ${r.seconds.toFixed(2)} s ` +
        `(error ${r.error.toFixed(2)})`,
    );
  }
  base.free();
  return Promise.resolve({
    bench: "quant",
    small,
    bits,
    groupSize,
    actOrder,
    calibRows,
    hessianSeconds,
    layers,
    cores: navigator.hardwareConcurrency,
  });
}

if (import.meta.main) await benchQuant({ small: Deno.args.includes("--small") });
