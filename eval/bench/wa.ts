/**
 * `deno task bench wa`: the weight × activation kernels against each other,
 * in one run on one device: every bit-plane pair W2..8 × A2..8
 * (kernels/bitplane.ts), the W8A8 kernel (kernels/int8.ts, `dot4I8Packed`
 * where the runtime's WGSL has it) and the fp16 weight-only kernels, on
 * LLaMA-7B's linear shapes (4096×4096, 11008×4096, 4096×11008):
 * - decode rows at batch 1, 4 and 8 (the W×A decode tiles; fp16 through
 *   kernels/matvec.ts),
 * - prefill rows at T = 512 tokens (the W×A prefill tiles; fp16 through the
 *   tiled matmul of kernels/matmul.ts, the GPU prefill's GEMM).
 * Each row prints its median time, tokens/s and its speedup over W8A8 and
 * fp16 of the same shape and tokens: ABQ-LLM (arXiv 2408.08554, Fig. 1 /
 * Table 5) reports W2A8 ≈ 4× and W4A8 ≈ 2.1× its CUTLASS W8A8 at batch 1 on
 * an A800. ABQ-LLM's W2* (bit balance: five levels) stores 3-bit codes, so
 * W2*A8 runs as the 3-plane kernel, w3a8.
 *
 * For each shape and batch every kernel is planned first, then timed in
 * rounds (warm-up rounds, then `runs` rounds, each kernel once per round
 * with GPU timestamps when the adapter has them): on a shared machine the
 * load of the moment slows every kernel of a round alike, so the ratios are
 * steadier than the times. Median and minimum over the rounds.
 *
 * Operands are seeded random bit planes, bytes and halves: kernel time does
 * not depend on the values, only on the layout (one group per row, the
 * per-channel weight scales of ABQ-LLM's W×A setting). Kernel time only: the
 * per-token activation quantization and packing are not timed (ABQ-LLM's
 * engine reports them apart too).
 *
 * ```sh
 * deno task bench wa                      # every pair, LLaMA-7B shapes, batch 1, 4, 8 and T = 512
 * deno task bench wa --small              # 512×512 etc., five pairs, three runs
 * deno task bench wa --shapes 4096x4096 --pairs w2a8,w4a8 --batch 1 --tokens 0   # decode only
 * deno task bench wa --pairs w2a8,w4a8 --runs 5,1 --warmup 2,0   # rounds: decode, prefill
 * ```
 *
 * @module
 */
import type { Gpu, GpuInfo } from "../../kernels/device.ts";
import { adapterLabel } from "../../kernels/device.ts";
import { createMatvecPlan, uploadLinear } from "../../kernels/matvec.ts";
import { createMatmulPlan } from "../../kernels/matmul.ts";
import { createBitplanePlan, uploadWeightPlanes, WA_MAX_BATCH } from "../../kernels/bitplane.ts";
import { createInt8Plan, hasPackedDot, uploadInt8Weight } from "../../kernels/int8.ts";
import type { WaPlan, WaWeight } from "../../kernels/_wa_kernel.ts";
import { timeGpu } from "../../kernels/timing.ts";
import type { Timing } from "../../kernels/timing.ts";
import { parseShapes } from "./kernels.ts";
import { markdownTable } from "../../reports/markdown.ts";
import { mulberry32 } from "../../model/random.ts";
import { checkBits } from "../../quant/format.ts";
import type { UniformTensor } from "../../quant/format.ts";

/** A weight × activation bit pair. */
export interface WaPair {
  w: number;
  a: number;
}

/** Every pair W2..8 × A2..8. */
export const ALL_PAIRS: readonly WaPair[] = [2, 3, 4, 5, 6, 7, 8].flatMap((w) =>
  [2, 3, 4, 5, 6, 7, 8].map((a) => ({ w, a }))
);

/** The pairs of `--small`: ABQ-LLM's headline ones. */
export const SMALL_PAIRS: readonly WaPair[] = [
  { w: 2, a: 8 },
  { w: 4, a: 8 },
  { w: 4, a: 4 },
  { w: 6, a: 6 },
  { w: 8, a: 8 },
];

/** LLaMA-7B's shapes divided by 8 (a quick run). */
export const SMALL_SHAPES = "512x512,1376x512,512x1376";

/**
 * Parses `--pairs`: "all" or a list like "w2a8,W4A8".
 * @param spec the list
 * @returns the pairs
 * @throws RangeError naming --pairs on a malformed entry
 */
export function parsePairs(spec: string): WaPair[] {
  if (spec === "all") return ALL_PAIRS.map((p) => ({ ...p }));
  return spec.split(",").map((s) => {
    const m = /^\s*w(\d)a(\d)\s*$/i.exec(s);
    if (!m) throw new RangeError(`--pairs: expected all or wXaY,… (e.g. w2a8,w4a8); found "${s}"`);
    return {
      w: checkBits(+m[1], "--pairs weight bits"),
      a: checkBits(+m[2], "--pairs activation bits"),
    };
  });
}

/**
 * Parses `--runs` / `--warmup`: "N" (both phases) or "N,M" (decode, prefill).
 * @param spec the option's value, or undefined
 * @param name the option, for messages
 * @param fallback [decode, prefill] when `spec` is undefined
 * @param min smallest allowed count
 * @returns [decode, prefill]
 * @throws RangeError naming the option
 */
export function parseRounds(
  spec: string | undefined,
  name: string,
  fallback: [number, number],
  min: number,
): [number, number] {
  if (spec === undefined) return fallback;
  const v = spec.split(",").map((x) => Number(x.trim()));
  if (v.length > 2 || v.some((n) => !Number.isInteger(n) || n < min)) {
    throw new RangeError(
      `--${name}: expected N or N,M (decode, prefill rounds), integers ≥ ${min}; found "${spec}"`,
    );
  }
  return [v[0], v[1] ?? v[0]];
}

/** Options of {@linkcode benchWa}. */
export interface BenchWaOptions {
  gpu: Gpu;
  /** "llama7b", "stories260K" or "ROWSxCOLS,…". @default "llama7b" */
  shapes?: string;
  /** @default every pair */
  pairs?: WaPair[];
  /** Tokens of the decode rows (1..8). @default [1, 4, 8] */
  batch?: number[];
  /** Tokens T of the prefill rows (> 8; [] for none). @default [512] */
  prefill?: number[];
  /** Timed rounds of the decode rows (each kernel once per round). @default 10 */
  runs?: number;
  /** Untimed rounds first, decode rows. @default 2 */
  warmup?: number;
  /** Timed rounds of the prefill rows (on llvmpipe one LLaMA-7B prefill run takes seconds). @default 3 */
  prefillRuns?: number;
  /** Untimed rounds first, prefill rows. @default 1 */
  prefillWarmup?: number;
  /** Seed of the random operands. @default 1 */
  seed?: number;
  /** Progress and the table. @default console.log */
  log?: (line: string) => void;
}

/** One timed kernel. */
export interface WaRow {
  shape: string;
  /** "decode" (batch ≤ 8: matvec-shaped tiles) or "prefill" (a window of T tokens). */
  phase: "decode" | "prefill";
  /** Tokens (the batch, or T). */
  batch: number;
  /** "f16", "int8" (the W8A8 baseline) or "wXaY" (bit planes; "w8a8" is the bit-plane W8A8). */
  kernel: string;
  medianUs: number;
  minUs: number;
  /** Tokens per second at the median time. */
  tokensPerS: number;
  /** Median time of the int8 W8A8 kernel / this one (> 1: faster than W8A8). */
  speedupVsW8A8: number;
  /** Median time of fp16 / this one. */
  speedupVsF16: number;
  /** Minimum time of the int8 W8A8 kernel / this one's (steadier than medians on a shared machine). */
  minSpeedupVsW8A8: number;
  /** Bytes one run reads and writes at least (weights, activations, outputs). */
  bytesMoved: number;
  method: Timing["method"];
}

/** Result of {@linkcode benchWa}. */
export interface BenchWaResult {
  adapter: GpuInfo;
  /** Whether the W8A8 kernel used dot4I8Packed. */
  packedDot: boolean;
  options: {
    shapes: string;
    pairs: string[];
    batch: number[];
    prefill: number[];
    runs: number;
    warmup: number;
    prefillRuns: number;
    prefillWarmup: number;
  };
  rows: WaRow[];
}

/** Seeded random u32 words. */
function randomWords(n: number, seed: number): Uint32Array {
  const u = mulberry32(seed);
  return Uint32Array.from({ length: n }, () => (u() * 4294967296) >>> 0);
}

/**
 * Times every pair, W8A8 and fp16 on every shape, decode batch and prefill
 * window; prints a table with the ratios.
 *
 * @param opts see {@linkcode BenchWaOptions}
 * @returns the adapter and one row per timed kernel
 */
export async function benchWa(opts: BenchWaOptions): Promise<BenchWaResult> {
  const { gpu } = opts;
  const o = {
    shapes: opts.shapes ?? "llama7b",
    pairs: (opts.pairs ?? ALL_PAIRS).map((p) => `w${p.w}a${p.a}`),
    batch: opts.batch ?? [1, 4, 8],
    prefill: opts.prefill ?? [512],
    runs: opts.runs ?? 10,
    warmup: opts.warmup ?? 2,
    prefillRuns: opts.prefillRuns ?? 3,
    prefillWarmup: opts.prefillWarmup ?? 1,
  };
  const pairs = opts.pairs ?? ALL_PAIRS;
  for (const b of o.batch) {
    if (!(Number.isInteger(b) && b >= 1 && b <= 8)) {
      throw new RangeError(`--batch: expected integers in 1..8, found ${b}`);
    }
  }
  for (const t of o.prefill) {
    if (!(Number.isInteger(t) && t > WA_MAX_BATCH)) {
      throw new RangeError(
        `--tokens: expected prefill lengths above ${WA_MAX_BATCH} (or 0 for none), found ${t}`,
      );
    }
  }
  const seed = opts.seed ?? 1;
  const log = opts.log ?? ((s: string) => console.log(s));
  const packed = hasPackedDot();
  log(
    `adapter: ${adapterLabel(gpu.info)}; ` +
      `W8A8 through ${packed ? "dot4I8Packed" : "unpacked int8 products"}`,
  );
  const rows: WaRow[] = [];
  for (const [R, C] of parseShapes(o.shapes)) {
    const shape = `${R}x${C}`;
    const kBlocks = Math.ceil(C / 32);
    // Every weight of the shape: fp16, int8, and the planes of each weight width asked for.
    // fp16 from random halves (finite: the top exponent bit cleared).
    const halves = new Uint16Array(randomWords((R * C) / 2 + 1, seed).buffer, 0, R * C)
      .map((h) => h & 0xbfff);
    const held: WaWeight[] = [];
    const f16 = uploadLinear(gpu, { dense: { kind: "f16", rows: R, cols: C, data: halves } });
    try {
      const w8: UniformTensor = {
        kind: "uniform",
        bits: 8,
        rows: R,
        cols: C,
        groupSize: C,
        sym: false,
        codes: randomWords(R * Math.ceil(C / 4), seed + 1),
        scales: new Uint16Array(R).fill(0x2000),
        zeros: new Uint16Array(R).fill(0x5800), // fp16 128
      };
      const i8 = uploadInt8Weight(gpu, w8);
      held.push(i8);
      const planes = new Map<number, WaWeight>(); // weight bits → planes (random words are random codes)
      for (const wBits of new Set(pairs.map((p) => p.w))) {
        const lin = uploadWeightPlanes(gpu, {
          rows: R,
          cols: C,
          bits: wBits,
          kBlocks,
          groupSize: C,
          nGroups: 1,
          planes: randomWords(R * kBlocks * wBits, seed + 10 + wBits),
          scales: new Float32Array(R).fill(0.01),
          zeros: new Int32Array(R).fill(1 << (wBits - 1)),
          sums: new Int32Array(R),
        });
        held.push(lin);
        planes.set(wBits, lin);
      }
      for (const B of [...o.batch, ...o.prefill]) {
        const phase = B <= WA_MAX_BATCH ? "decode" : "prefill";
        const kernels: {
          name: string;
          plan: { encode(p: GPUComputePassEncoder): void; release(): void };
          bytes: number;
        }[] = [];
        try {
          // fp16: the matvec kernel for a decode batch, the prefill GEMM for a window.
          const mv = phase === "decode"
            ? await createMatvecPlan(gpu, f16, { batch: B })
            : await createMatmulPlan(gpu, f16, { tokens: B });
          const f16Bytes = "bytesMoved" in mv ? mv.bytesMoved : 2 * R * C + 4 * B * (R + C);
          kernels.push({ name: "f16", plan: mv, bytes: f16Bytes });
          gpu.device.queue.writeBuffer(mv.x, 0, new Float32Array(B * C).fill(0.5));
          const ip = await createInt8Plan(gpu, i8, { batch: B });
          kernels.push({ name: "int8", plan: ip, bytes: ip.bytesMoved });
          writeRandomTokens(ip, B * kBlocks * 8, B, seed + B);
          for (const { w, a } of pairs) {
            const bp = await createBitplanePlan(gpu, planes.get(w)!, a, { batch: B });
            kernels.push({ name: `w${w}a${a}`, plan: bp, bytes: bp.bytesMoved });
            writeRandomTokens(bp, B * kBlocks * a, B, seed + 100 * a + B);
          }
          // Rounds: every kernel once per round, so a busy machine slows all of them alike.
          const us = kernels.map(() => [] as number[]);
          let method: Timing["method"] = "wall";
          const [runs, warmup] = phase === "decode"
            ? [o.runs, o.warmup]
            : [o.prefillRuns, o.prefillWarmup];
          for (let r = -warmup; r < runs; r++) {
            for (const [i, k] of kernels.entries()) {
              const t = await timeGpu(gpu, (pass) => k.plan.encode(pass), {
                runs: 1,
                warmup: 0,
                reps: 1,
              });
              method = t.method;
              if (r >= 0) us[i].push(t.medianUs);
            }
          }
          const stat = (i: number) => {
            const v = [...us[i]].sort((x, y) => x - y), n = v.length;
            return { median: n % 2 ? v[n >> 1] : (v[n / 2 - 1] + v[n / 2]) / 2, min: v[0] };
          };
          const base = (name: string) => stat(kernels.findIndex((k) => k.name === name));
          for (const [i, k] of kernels.entries()) {
            const t = stat(i);
            const row: WaRow = {
              shape,
              phase,
              batch: B,
              kernel: k.name,
              medianUs: t.median,
              minUs: t.min,
              tokensPerS: B / (t.median * 1e-6),
              speedupVsW8A8: base("int8").median / t.median,
              speedupVsF16: base("f16").median / t.median,
              minSpeedupVsW8A8: base("int8").min / t.min,
              bytesMoved: k.bytes,
              method,
            };
            rows.push(row);
            log(
              `${shape} ${phase} T=${B} ${k.name}: ${t.median.toFixed(1)} µs ` +
                `(min ${t.min.toFixed(1)}), ${row.tokensPerS.toFixed(1)} tok/s, ` +
                `${row.speedupVsW8A8.toFixed(2)}× int8, ${row.speedupVsF16.toFixed(2)}× f16`,
            );
          }
        } finally {
          for (const k of kernels) k.plan.release();
        }
      }
    } finally {
      for (const w of held) w.release();
      f16.release();
    }
  }
  gpu.pool.trim();
  log(waTable(rows));
  return { adapter: gpu.info, packedDot: packed, options: o, rows };
}

function writeRandomTokens(plan: WaPlan, words: number, B: number, seed: number): void {
  plan.writeTokens(
    randomWords(words, seed),
    new Float32Array(B).fill(0.01),
    new Int32Array(B).fill(3),
    new Int32Array(B),
  );
}

/**
 * The rows as a markdown table.
 * @param rows rows of {@linkcode benchWa}
 */
export function waTable(rows: WaRow[]): string {
  return markdownTable(
    [
      "shape",
      "phase",
      "tokens",
      "kernel",
      "median µs",
      "min µs",
      "tokens/s",
      "vs int8 W8A8",
      "(by min)",
      "vs f16",
    ],
    rows.map((r) => [
      r.shape,
      r.phase,
      String(r.batch),
      r.kernel,
      r.medianUs.toFixed(1),
      r.minUs.toFixed(1),
      r.tokensPerS.toFixed(1),
      `${r.speedupVsW8A8.toFixed(2)}×`,
      `${r.minSpeedupVsW8A8.toFixed(2)}×`,
      `${r.speedupVsF16.toFixed(2)}×`,
    ]),
  );
}
