/**
 * Kernel benchmark: median / min time of every storage format's
 * matrix-vector kernel on LLaMA-shaped layers, its effective bandwidth
 * (bytes of all weight parts + activations in and out, over time), the
 * fraction of a copy kernel's bandwidth on the same adapter, and its speedup
 * over the fp16 and fp32 kernels of the same shape and batch.
 *
 * Weights are seeded random N(0, 0.02²) values quantized by the fast builders
 * of eval/bench/synthetic.ts (min/max round-to-nearest for uniform, per-row
 * quantile tables for lut, 0.45 % random nonzeros for the sparse part): only
 * the layout matters for speed.
 *
 * @module
 */
import type { Gpu, GpuInfo } from "../../kernels/device.ts";
import { adapterLabel, getGpu } from "../../kernels/device.ts";
import { createMatvecPlan, uploadLinear } from "../../kernels/matvec.ts";
import type { MatvecPlanOptions } from "../../kernels/matvec.ts";
import { copyBandwidth, timeGpu } from "../../kernels/timing.ts";
import type { Timing } from "../../kernels/timing.ts";
import { quantileLut, randomCsr, rtnUniform } from "./synthetic.ts";
import { markdownTable } from "../../reports/markdown.ts";
import { randn } from "../../model/random.ts";
import type { LinearWeight, SizeReport } from "../../quant/format.ts";
import { checkBits, f16Tensor, f32Tensor, sizeOf } from "../../quant/format.ts";

/** A format the benchmark can time. */
export type BenchFormat = "f32" | "f16" | "uniform" | "lut" | "lut+sparse" | "uniform+sparse";

/** Every {@linkcode BenchFormat}. */
export const BENCH_FORMATS: readonly BenchFormat[] = [
  "f32",
  "f16",
  "uniform",
  "lut",
  "lut+sparse",
  "uniform+sparse",
];

/** LLaMA-7B's linear shapes (rows × cols = out × in): q/k/v/o, gate/up, down. */
export const LLAMA7B_SHAPES: readonly [number, number][] = [[4096, 4096], [11008, 4096], [
  4096,
  11008,
]];

/**
 * stories260K's linear shapes (dim 64, hidden 172, kv 32, vocab 512):
 * wq/wo, wk/wv, w1/w3, w2 and the classifier.
 */
export const STORIES260K_SHAPES: readonly [number, number][] = [
  [64, 64],
  [32, 64],
  [172, 64],
  [64, 172],
  [512, 64],
];

/** Options of {@linkcode benchKernels}. */
export interface BenchKernelsOptions {
  /** "llama7b", "stories260K" or a list "ROWSxCOLS,…". @default "llama7b" */
  shapes?: string;
  /** @default ["f32", "f16", "uniform", "lut", "lut+sparse"] */
  formats?: BenchFormat[];
  /** Code widths of the quantized formats. @default [3, 4] */
  bits?: number[];
  /** Activation rows. @default [1] */
  batch?: number[];
  /** Timed runs per kernel. @default 20 */
  runs?: number;
  /** Untimed runs first. @default 3 */
  warmup?: number;
  /**
   * Uniform group size; 0 for one group per row. A shape whose input width it
   * does not divide (stories260K: 64, 172 for 128) gets one group per row, as
   * quant/methods.ts's `resolveGroup` does for AWQ's default. @default 128
   */
  groupSize?: number;
  /** Fraction of sparse nonzeros. @default 0.0045 */
  density?: number;
  /** How the sparse part runs. @default "fused" */
  sparseMode?: "fused" | "separate";
  /** Seed of the random weights. @default 1 */
  seed?: number;
  /** Bytes the copy kernel copies. @default 64 MiB */
  copyBytes?: number;
  /** Prints progress and the table; pass `() => {}` for silence. @default console.log */
  log?: (line: string) => void;
  /** A device to reuse; one is requested otherwise. */
  gpu?: Gpu;
  /** Tiling passed to every plan. */
  tiling?: Pick<MatvecPlanOptions, "rowsPerWg" | "threadsPerRow">;
}

/** One timed kernel. */
export interface BenchRow {
  format: BenchFormat;
  /** Code width; 32 / 16 for f32 / f16. */
  bits: number;
  /** "ROWSxCOLS". */
  shape: string;
  batch: number;
  medianUs: number;
  minUs: number;
  /** Bytes one run reads and writes: every stored weight part + fp32 activations, 4·batch·(rows + cols). */
  bytesMoved: number;
  /** Effective bandwidth: bytesMoved / median time, 10⁹ B/s. */
  GBps: number;
  fractionOfCopy: number;
  speedupVsF16: number;
  speedupVsF32: number;
  /** Information bits per weight (quant/format.ts's `sizeOf`), all parts included. */
  avgInfoBits: number;
  /** Stored bits per weight, what the kernel reads: all parts, row padding and int32 CSR indices included. */
  avgStoredBits: number;
  /** Columns per scale group of the uniform formats (cols for one per row); null for the others. */
  groupSize: number | null;
  method: Timing["method"];
}

/** Result of {@linkcode benchKernels}. */
export interface BenchKernelsResult {
  adapter: GpuInfo;
  copyGBps: number;
  options: {
    shapes: string;
    formats: BenchFormat[];
    bits: number[];
    batch: number[];
    runs: number;
    warmup: number;
    groupSize: number;
    density: number;
    sparseMode: "fused" | "separate";
    seed: number;
  };
  rows: BenchRow[];
}

/**
 * Parses a shape list: "llama7b", "stories260K" or "ROWSxCOLS,…".
 * @param spec the list
 * @returns [rows, cols] pairs
 * @throws RangeError naming --shapes on a malformed entry
 */
export function parseShapes(spec: string): [number, number][] {
  if (spec === "llama7b") return LLAMA7B_SHAPES.map(([r, c]) => [r, c]);
  if (spec === "stories260K") return STORIES260K_SHAPES.map(([r, c]) => [r, c]);
  return spec.split(",").map((s) => {
    const m = /^\s*(\d+)\s*[x×]\s*(\d+)\s*$/.exec(s);
    if (!m || +m[1] < 1 || +m[2] < 1) {
      throw new RangeError(`--shapes: expected llama7b, stories260K or ROWSxCOLS,…; found "${s}"`);
    }
    return [+m[1], +m[2]];
  });
}

/**
 * Times every format × bits × shape × batch and prints a table.
 *
 * @param opts see {@linkcode BenchKernelsOptions}
 * @returns adapter info, copy bandwidth and one row per timed kernel
 * @example
 * ```ts
 * const r = await benchKernels({ shapes: "512x512", formats: ["f16", "lut"], bits: [4], runs: 5 });
 * console.log(r.rows[0].GBps);
 * ```
 */
export async function benchKernels(opts: BenchKernelsOptions = {}): Promise<BenchKernelsResult> {
  const o = {
    shapes: opts.shapes ?? "llama7b",
    formats: opts.formats ?? ["f32", "f16", "uniform", "lut", "lut+sparse"],
    bits: opts.bits ?? [3, 4],
    batch: opts.batch ?? [1],
    runs: opts.runs ?? 20,
    warmup: opts.warmup ?? 3,
    groupSize: opts.groupSize ?? 128,
    density: opts.density ?? 0.0045,
    sparseMode: opts.sparseMode ?? "fused",
    seed: opts.seed ?? 1,
  } satisfies BenchKernelsResult["options"];
  for (const f of o.formats) {
    if (!BENCH_FORMATS.includes(f)) {
      throw new RangeError(`--formats: expected some of ${BENCH_FORMATS.join(", ")}; found "${f}"`);
    }
  }
  for (const b of o.bits) checkBits(b, "--bits");
  for (const b of o.batch) {
    if (!(Number.isInteger(b) && b >= 1 && b <= 8)) {
      throw new RangeError(`--batch: expected integers in 1..8, found ${b}`);
    }
  }
  const log = opts.log ?? ((s: string) => console.log(s));
  const shapes = parseShapes(o.shapes);
  const gpu = opts.gpu ?? await getGpu();
  const copy = await copyBandwidth(gpu, opts.copyBytes, {
    runs: Math.max(5, o.runs),
    warmup: o.warmup,
  });
  log(
    `adapter: ${adapterLabel(gpu.info)}; ` +
      `copy bandwidth ${copy.GBps.toFixed(2)} GB/s (${copy.method})`,
  );
  const rows: BenchRow[] = [];
  for (const [R, C] of shapes) {
    const shape = `${R}x${C}`;
    const w = randn(R * C, o.seed * 7919 + R * 31 + C, 0.02);
    const group = o.groupSize > 0 && C % o.groupSize === 0 ? o.groupSize : C;
    if (
      o.groupSize > 0 && group !== o.groupSize && o.formats.some((f) => f.startsWith("uniform"))
    ) {
      log(`${shape}: groups of ${o.groupSize} do not divide ${C} columns; one group per row`);
    }
    const sparse = o.formats.some((f) => f.endsWith("+sparse"))
      ? randomCsr(R, C, o.density, o.seed + R + C, "f16", 0.05)
      : undefined;
    const cases: { format: BenchFormat; bits: number; weight: () => LinearWeight }[] = [
      { format: "f32", bits: 32, weight: () => ({ dense: f32Tensor(w, R, C) }) },
      { format: "f16", bits: 16, weight: () => ({ dense: f16Tensor(w, R, C) }) },
    ];
    for (const bits of o.bits) {
      // Built on first use and shared by the dense-only and dense+sparse cases.
      const uni = once(() => rtnUniform(w, R, C, { bits, groupSize: group }));
      const lut = once(() => quantileLut(w, R, C, bits));
      for (const f of o.formats) {
        if (f === "uniform") cases.push({ format: f, bits, weight: () => ({ dense: uni() }) });
        if (f === "lut") cases.push({ format: f, bits, weight: () => ({ dense: lut() }) });
        if (f === "uniform+sparse") {
          cases.push({ format: f, bits, weight: () => ({ dense: uni(), sparse }) });
        }
        if (f === "lut+sparse") {
          cases.push({ format: f, bits, weight: () => ({ dense: lut(), sparse }) });
        }
      }
    }
    const timed: {
      c: (typeof cases)[number];
      B: number;
      t: Timing;
      bytes: number;
      size: SizeReport;
    }[] = [];
    for (const c of cases) {
      const weight = c.weight();
      const lin = uploadLinear(gpu, weight);
      try {
        for (const B of o.batch) {
          const plan = await createMatvecPlan(gpu, lin, {
            batch: B,
            sparseMode: o.sparseMode,
            ...opts.tiling,
          });
          try {
            const x = randn(B * C, o.seed + B) as Float32Array<ArrayBuffer>;
            gpu.device.queue.writeBuffer(plan.x, 0, x);
            const t = await timeGpu(gpu, (pass) => plan.encode(pass), {
              runs: o.runs,
              warmup: o.warmup,
            });
            timed.push({ c, B, t, bytes: plan.bytesMoved, size: sizeOf(weight) });
            log(
              `${shape} ${c.format} b=${c.bits} B=${B}: ${t.medianUs.toFixed(1)} µs (min ${
                t.minUs.toFixed(1)
              })`,
            );
          } finally {
            plan.release();
          }
        }
      } finally {
        lin.release();
      }
    }
    // Baselines are timed whatever the formats: every row reports its speedup over them.
    const baseline = (format: BenchFormat, B: number) =>
      timed.find((e) => e.c.format === format && e.B === B)!.t.medianUs;
    for (const { c, B, t, bytes, size } of timed) {
      if (!o.formats.includes(c.format)) continue;
      const GBps = bytes / (t.medianUs * 1e3);
      rows.push({
        format: c.format,
        bits: c.bits,
        shape,
        batch: B,
        bytesMoved: bytes,
        medianUs: t.medianUs,
        minUs: t.minUs,
        GBps,
        fractionOfCopy: GBps / copy.GBps,
        speedupVsF16: baseline("f16", B) / t.medianUs,
        speedupVsF32: baseline("f32", B) / t.medianUs,
        avgInfoBits: size.avgInfoBits,
        avgStoredBits: size.avgStoredBits,
        groupSize: c.format.startsWith("uniform") ? group : null,
        method: t.method,
      });
    }
  }
  gpu.pool.trim();
  log(benchTable(rows));
  return { adapter: gpu.info, copyGBps: copy.GBps, options: o, rows };
}

function once<T>(f: () => T): () => T {
  let v: T | undefined;
  return () => v ??= f();
}

/**
 * The benchmark rows as a markdown table.
 * @param rows rows of {@linkcode benchKernels}
 */
export function benchTable(rows: BenchRow[]): string {
  const head = [
    "shape",
    "format",
    "bits",
    "stored bits",
    "B",
    "median µs",
    "min µs",
    "GB/s",
    "of copy",
    "vs f16",
    "vs f32",
  ];
  const lines = rows.map((r) => [
    r.shape,
    r.format,
    String(r.bits),
    r.avgStoredBits.toFixed(2),
    String(r.batch),
    r.medianUs.toFixed(1),
    r.minUs.toFixed(1),
    r.GBps.toFixed(2),
    `${(100 * r.fractionOfCopy).toFixed(1)}%`,
    `${r.speedupVsF16.toFixed(2)}×`,
    `${r.speedupVsF32.toFixed(2)}×`,
  ]);
  return markdownTable(head, lines);
}
