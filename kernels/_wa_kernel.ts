/**
 * The one skeleton of the weight × activation (W×A) integer kernels: the
 * bit-plane kernel (kernels/bitplane.ts) and the W8A8 kernel
 * (kernels/int8.ts) differ only in how a 32-column block of one weight row
 * and one token becomes an integer; this file holds everything else.
 *
 * ## Layout
 *
 * A scheme stores a 32-column block of a weight row in `wWords` u32 words and
 * of a token in `xWords` words (bit planes: one per bit; int8: eight words of
 * four bytes), block-interleaved and row-major:
 * W [rows, kBlocks, wWords], X [batch, kBlocks, xWords], kBlocks = ⌈cols/32⌉.
 * Per token a {@linkcode TOKEN_FIELDS} record (scale, zero, SX = Σ codes);
 * per weight row and group its scale, integer zero and SW = Σ codes.
 *
 * ## Kernel
 *
 * As kernels/matvec.ts's dense kernel: one workgroup of ROWS·TPR threads
 * computes ROWS output rows for every token; the TPR threads of a row take
 * the blocks t·TPR + tr of tile t. The workgroup stages the tile's token
 * words [B, TPR, xWords] in workgroup memory, each thread loads its block's
 * weight words once and reuses them for all B tokens. Integers are i32 with
 * wrapping arithmetic (WGSL's), so partial sums may wrap while the final
 * accumulator is exact.
 *
 * - `row` groups (one group per weight row): the threads accumulate the raw
 *   product D; the epilogue applies D − z_w·SX − z_x·SW + cols·z_x·z_w with the
 *   precomputed sums and writes s_w·s_x·acc.
 * - `block` groups (groups of whole blocks): every block's product is
 *   corrected exactly on the spot, d − z_w·sx − z_x·sw + n·z_x·z_w, with the
 *   block's own sums (from its words: a few popcounts or byte dots), and
 *   folded with the group's scale in f32.
 *
 * `output: "i32"` writes the integer accumulator instead of y, for the exact
 * tests (kernels/bitplane_reference.ts's `waAccRef`).
 *
 * @module
 */
import type { Gpu, Kernel } from "./device.ts";
import { dispatchSize, OwnedBuffers, readBuffer } from "./device.ts";

/** Largest activation batch of the W×A kernels. */
export const WA_MAX_BATCH = 8;

/** How a W×A scheme turns one block into integers (WGSL snippets). */
export interface WaScheme {
  /** Names the scheme in the pipeline key, e.g. "bitplane.w4a8". */
  name: string;
  /** u32 words per 32-column block of a weight row. */
  wWords: number;
  /** u32 words per 32-column block of a token. */
  xWords: number;
  /** Helper functions the snippets call. */
  prelude: string;
  /** WGSL expression (i32): the block's integer product of words w0.. and x0... */
  dot: string;
  /** WGSL expression (i32): Σ of the block's weight codes, from w0... */
  wSum: string;
  /** WGSL expression (i32): Σ of the block's token codes, from x0... */
  xSum: string;
}

/** Everything that changes the W×A kernel's source. */
export interface WaParams {
  scheme: WaScheme;
  batch: number;
  rowsPerWg: number;
  threadsPerRow: number;
  groups: "row" | "block";
  output: "f32" | "i32";
}

/** The per-token record, one field list for the WGSL struct and the host array (4-byte fields). */
export const TOKEN_FIELDS = [["scale", "f32"], ["zero", "i32"], ["sum", "i32"], [
  "pad",
  "u32",
]] as const;

/** The uniform parameters, one field list for the WGSL struct and the host array (u32 each). */
const PARAM_FIELDS = [
  "rows",
  "cols",
  "kBlocks",
  "nx",
  "groupBlocks",
  "nGroups",
  "p0",
  "p1",
] as const;

/** The W×A kernel (module doc). */
export const WA_KERNEL: Kernel<WaParams> = {
  name: "wa",
  key: (p) => [p.scheme.name, p.batch, p.rowsPerWg, p.threadsPerRow, p.groups, p.output].join(","),
  wgsl: waWgsl,
};

function waWgsl(p: WaParams): string {
  const { scheme: s, batch: B, rowsPerWg: ROWS, threadsPerRow: TPR, groups, output } = p;
  const WG = ROWS * TPR, WW = s.wWords, XW = s.xWords;
  const block = groups === "block";
  const words = (v: string, n: number, src: (k: number) => string) =>
    Array.from({ length: n }, (_, k) => `let ${v}${k} = ${src(k)};`).join(" ");
  return `// ${WA_KERNEL.name}: ${WA_KERNEL.key(p)}
const B = ${B}u;
const ROWS = ${ROWS}u;
const TPR = ${TPR}u;
const WG = ${WG}u;
const XW = ${XW}u; // words per block of a token
const WW = ${WW}u; // words per block of a weight row
struct Params { ${PARAM_FIELDS.map((f) => `${f}: u32`).join(", ")} }
struct Token { ${TOKEN_FIELDS.map(([f, t]) => `${f}: ${t}`).join(", ")} }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<u32>; // [B, kBlocks, XW]
@group(0) @binding(2) var<storage, read> T: array<Token>; // [B]
@group(0) @binding(3) var<storage, read_write> Y: array<${output}>; // [B, rows]
@group(0) @binding(4) var<storage, read> W: array<u32>; // [rows, kBlocks, WW]
@group(0) @binding(5) var<storage, read> S: array<f32>; // [rows, nGroups]
@group(0) @binding(6) var<storage, read> Z: array<i32>; // [rows, nGroups]
${block ? "" : "@group(0) @binding(7) var<storage, read> SW: array<i32>; // [rows, nGroups]"}
var<workgroup> xs: array<u32, ${B * TPR * XW}>; // [B, TPR, XW] this tile's token words
var<workgroup> redI: array<i32, ${WG * B}>; // [WG, B]
${block ? `var<workgroup> redF: array<f32, ${WG * B}>; // [WG, B]` : ""}
${s.prelude}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let first = (wid.y * P.nx + wid.x) * ROWS; // first row of this workgroup
  if (first >= P.rows) { return; }
  let rl = tid / TPR;
  let tr = tid % TPR;
  let row = min(first + rl, P.rows - 1u); // clamped: loads stay in bounds
  var accI = array<i32, B>();
${
    block
      ? `  var accF = array<f32, B>();
  var zx = array<i32, B>();
  for (var b = 0u; b < B; b++) { zx[b] = T[b].zero; }`
      : ""
  }
  let nTiles = (P.kBlocks + TPR - 1u) / TPR;
  for (var t = 0u; t < nTiles; t++) {
    workgroupBarrier();
    for (var i = tid; i < B * TPR * XW; i += WG) {
      let b = i / (TPR * XW);
      let r = i % (TPR * XW);
      let blk = t * TPR + r / XW;
      var v = 0u;
      if (blk < P.kBlocks) { v = X[(b * P.kBlocks + blk) * XW + r % XW]; }
      xs[i] = v;
    }
    workgroupBarrier();
    let blk = t * TPR + tr;
    if (blk < P.kBlocks) {
      let wi = (row * P.kBlocks + blk) * WW;
      ${words("w", WW, (k) => `W[wi + ${k}u]`)}
${
    block
      ? `      let gi = row * P.nGroups + blk / P.groupBlocks;
      let s = S[gi];
      let zw = Z[gi];
      let n = i32(min(32u, P.cols - 32u * blk));
      let sw = ${s.wSum};`
      : ""
  }
      for (var b = 0u; b < B; b++) {
        let xb = (b * TPR + tr) * XW;
        ${words("x", XW, (k) => `xs[xb + ${k}u]`)}
        let d = ${s.dot};
${
    block
      ? `        let sx = ${s.xSum};
        let tb = d - zw * sx - zx[b] * sw + n * zx[b] * zw;
        accI[b] += tb;
        accF[b] += s * f32(tb);`
      : `        accI[b] += d;`
  }
      }
    }
  }
  for (var b = 0u; b < B; b++) {
    redI[tid * B + b] = accI[b];
    ${block ? "redF[tid * B + b] = accF[b];" : ""}
  }
  workgroupBarrier();
  if (tr == 0u && first + rl < P.rows) {
    for (var b = 0u; b < B; b++) {
      var a = 0i;
      ${block ? "var f = 0.0;" : ""}
      for (var u = 0u; u < TPR; u++) {
        a += redI[(tid + u) * B + b];
        ${block ? "f += redF[(tid + u) * B + b];" : ""}
      }
      let tok = T[b];
${
    block
      ? output === "i32"
        ? `      Y[b * P.rows + row] = a;`
        : `      Y[b * P.rows + row] = tok.scale * f;`
      : `      let gi = row * P.nGroups;
      let zw = Z[gi];
      let acc = a - zw * tok.sum - tok.zero * SW[gi] + i32(P.cols) * tok.zero * zw;
      Y[b * P.rows + row] = ${output === "i32" ? "acc" : "S[gi] * tok.scale * f32(acc)"};`
  }
    }
  }
}
`;
}

/**
 * The bindings the source of `p` reads (layout "auto" drops the others): the
 * sums SW only with one group per row, the scales S not when one group per
 * row writes integers.
 */
function usedBindings(p: WaParams): number[] {
  if (p.groups === "block") return [0, 1, 2, 3, 4, 5, 6];
  return p.output === "i32" ? [0, 1, 2, 3, 4, 6, 7] : [0, 1, 2, 3, 4, 5, 6, 7];
}

/** A weight uploaded for a W×A scheme. */
export interface WaWeight {
  rows: number;
  cols: number;
  kBlocks: number;
  nGroups: number;
  /** Columns per group (a multiple of 32, or cols for one group per row). */
  groupSize: number;
  groups: "row" | "block";
  /** Words per block of a row (the scheme's wWords). */
  wWords: number;
  w: GPUBuffer; // u32 [rows, kBlocks, wWords]
  scales: GPUBuffer; // f32 [rows, nGroups]
  zeros: GPUBuffer; // i32 [rows, nGroups]
  sums: GPUBuffer; // i32 [rows, nGroups]
  /** Bytes a kernel run reads of the weight (every buffer above). */
  bytes: number;
  /** Returns every buffer to the pool. */
  release(): void;
}

/** The host arrays of a weight in a scheme's layout. */
export interface WaWeightHost {
  rows: number;
  cols: number;
  groupSize: number;
  nGroups: number;
  words: Uint32Array; // [rows, kBlocks, wWords]
  scales: Float32Array; // [rows, nGroups]
  zeros: Int32Array; // [rows, nGroups]
  sums: Int32Array; // [rows, nGroups]
}

/**
 * Uploads a weight laid out for a scheme with `wWords` words per block.
 *
 * @param gpu the device
 * @param h the host arrays
 * @param wWords words per 32-column block of a row
 * @returns the buffers; call `release()` when done
 */
export function uploadWaWeight(gpu: Gpu, h: WaWeightHost, wWords: number): WaWeight {
  const kBlocks = Math.ceil(h.cols / 32);
  if (h.words.length !== h.rows * kBlocks * wWords) {
    throw new RangeError(
      `uploadWaWeight(): expected ${h.rows}×${kBlocks}×${wWords} words, found ${h.words.length}`,
    );
  }
  const maxBind = gpu.device.limits.maxStorageBufferBindingSize;
  if (h.words.byteLength > maxBind) {
    throw new RangeError(
      `uploadWaWeight(): ${h.words.byteLength} bytes of weight words exceed the device's ` +
        `maxStorageBufferBindingSize ${maxBind}; split the layer by rows`,
    );
  }
  const owned = new OwnedBuffers(gpu.pool);
  const up = (a: ArrayBufferView, label: string) => owned.upload(a, 0, label);
  return {
    rows: h.rows,
    cols: h.cols,
    kBlocks,
    nGroups: h.nGroups,
    groupSize: h.groupSize,
    groups: h.nGroups === 1 ? "row" : "block",
    wWords,
    w: up(h.words, "wa-words"),
    scales: up(h.scales, "wa-scales"),
    zeros: up(h.zeros, "wa-zeros"),
    sums: up(h.sums, "wa-sums"),
    bytes: h.words.byteLength + 12 * h.rows * h.nGroups,
    release: owned.releaser("WaWeight"),
  };
}

/** Options of {@linkcode createWaPlan}. */
export interface WaPlanOptions {
  /** Tokens (1..8). */
  batch: number;
  /** "f32": y [batch, rows]; "i32": the integer accumulators. @default "f32" */
  output?: "f32" | "i32";
  /** Output rows per workgroup. @default 16 */
  rowsPerWg?: number;
  /** Threads per output row. @default 4 */
  threadsPerRow?: number;
  /** Per-dimension workgroup cap (tests force 2-D grids with a small one). */
  maxWorkgroupsPerDim?: number;
}

/** A W×A kernel bound to its buffers, ready to encode any number of times. */
export interface WaPlan {
  readonly batch: number;
  /** Token words [batch, kBlocks, xWords] (write with {@linkcode WaPlan.writeTokens}). */
  readonly x: GPUBuffer;
  /** Token records [batch] of {@linkcode TOKEN_FIELDS}. */
  readonly tokens: GPUBuffer;
  /** Output [batch, rows], f32 or i32 (COPY_SRC). */
  readonly y: GPUBuffer;
  /** Bytes one run reads and writes at least: weight buffers, token words and records, y. */
  readonly bytesMoved: number;
  /**
   * Writes the tokens: their words, scales, integer zeros and sums SX.
   * @param words [batch, kBlocks, xWords]
   * @param scales [batch]
   * @param zeros [batch]
   * @param sums [batch]
   */
  writeTokens(words: Uint32Array, scales: Float32Array, zeros: Int32Array, sums: Int32Array): void;
  /** Records the run's dispatch into a compute pass. */
  encode(pass: GPUComputePassEncoder): void;
  /** Returns the plan's buffers to the pool. */
  release(): void;
}

/**
 * Binds a weight to token and output buffers for a batch size and compiles
 * (or reuses) the pipeline.
 *
 * @param gpu the device
 * @param scheme how a block becomes an integer
 * @param lin the weight, uploaded with the scheme's layout
 * @param opts batch, output kind, tiling
 * @returns the plan; release it before releasing `lin`
 */
export async function createWaPlan(
  gpu: Gpu,
  scheme: WaScheme,
  lin: WaWeight,
  opts: WaPlanOptions,
): Promise<WaPlan> {
  const { device, pool } = gpu;
  const B = opts.batch;
  if (!(Number.isInteger(B) && B >= 1 && B <= WA_MAX_BATCH)) {
    throw new RangeError(`W×A kernel: batch must be an integer in 1..${WA_MAX_BATCH}, got ${B}`);
  }
  if (lin.wWords !== scheme.wWords) {
    throw new RangeError(
      `W×A kernel: the weight has ${lin.wWords} words per block, scheme ${scheme.name} reads ` +
        `${scheme.wWords}; upload it for this scheme`,
    );
  }
  const ROWS = opts.rowsPerWg ?? 16, TPR = opts.threadsPerRow ?? 4;
  if (!(Number.isInteger(ROWS) && Number.isInteger(TPR) && ROWS >= 1 && TPR >= 1)) {
    throw new RangeError(`W×A kernel: rowsPerWg and threadsPerRow must be positive integers`);
  }
  if (ROWS * TPR > device.limits.maxComputeInvocationsPerWorkgroup) {
    throw new RangeError(
      `W×A kernel: ${ROWS} rows × ${TPR} threads exceed the device's ` +
        `${device.limits.maxComputeInvocationsPerWorkgroup} invocations per workgroup`,
    );
  }
  const output = opts.output ?? "f32";
  const params: WaParams = {
    scheme,
    batch: B,
    rowsPerWg: ROWS,
    threadsPerRow: TPR,
    groups: lin.groups,
    output,
  };
  const pipeline = await gpu.pipelines.get(WA_KERNEL, params);
  const owned = new OwnedBuffers(pool);
  const own = (size: number, usage: GPUBufferUsageFlags, label: string) =>
    owned.acquire(size, usage, label);
  const xBytes = B * lin.kBlocks * scheme.xWords * 4;
  const copyDst = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
  const x = own(xBytes, copyDst, "wa-x");
  const tokens = own(B * TOKEN_FIELDS.length * 4, copyDst, "wa-tokens");
  const y = own(B * lin.rows * 4, copyDst | GPUBufferUsage.COPY_SRC, "wa-y");
  const grid = dispatchSize(Math.ceil(lin.rows / ROWS), device.limits, opts.maxWorkgroupsPerDim);
  const u = own(PARAM_FIELDS.length * 4, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, "wa");
  const values: Record<(typeof PARAM_FIELDS)[number], number> = {
    rows: lin.rows,
    cols: lin.cols,
    kBlocks: lin.kBlocks,
    nx: grid.nx,
    groupBlocks: Math.ceil(lin.groupSize / 32),
    nGroups: lin.nGroups,
    p0: 0,
    p1: 0,
  };
  device.queue.writeBuffer(u, 0, new Uint32Array(PARAM_FIELDS.map((f) => values[f])));
  const buffers = [u, x, tokens, y, lin.w, lin.scales, lin.zeros, lin.sums];
  const bindGroup = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: usedBindings(params).map((binding) => ({
      binding,
      resource: { buffer: buffers[binding] },
    })),
  });
  return {
    batch: B,
    x,
    tokens,
    y,
    bytesMoved: lin.bytes + xBytes + B * 4 * (TOKEN_FIELDS.length + lin.rows),
    writeTokens(words, scales, zeros, sums) {
      if (words.byteLength !== xBytes) {
        throw new RangeError(
          `WaPlan.writeTokens(): expected ${xBytes / 4} words (${B} tokens × ${lin.kBlocks} ` +
            `blocks × ${scheme.xWords}), found ${words.length}`,
        );
      }
      if (scales.length !== B || zeros.length !== B || sums.length !== B) {
        throw new RangeError(`WaPlan.writeTokens(): scales, zeros and sums need ${B} values each`);
      }
      device.queue.writeBuffer(x, 0, words as Uint32Array<ArrayBuffer>);
      const rec = new ArrayBuffer(B * TOKEN_FIELDS.length * 4);
      const f32 = new Float32Array(rec), i32 = new Int32Array(rec);
      const n = TOKEN_FIELDS.length;
      for (let b = 0; b < B; b++) {
        TOKEN_FIELDS.forEach(([field], k) => {
          if (field === "scale") f32[b * n + k] = scales[b];
          else if (field === "zero") i32[b * n + k] = zeros[b];
          else if (field === "sum") i32[b * n + k] = sums[b];
        });
      }
      device.queue.writeBuffer(tokens, 0, rec);
    },
    encode(pass) {
      if (grid.count === 0) return;
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(grid.x, grid.y);
    },
    release: owned.releaser("WaPlan"),
  };
}

/**
 * Runs a one-shot W×A product: makes the plan over `lin`, writes the tokens
 * with `write`, encodes one pass, submits and reads Y back, then releases the
 * plan and the weight (also when making or writing the plan throws).
 *
 * @param gpu the device
 * @param lin the uploaded weight (released here)
 * @param makePlan binds `lin` to a batch (kernels/bitplane.ts's or kernels/int8.ts's plan)
 * @param write writes the packed activations into the plan
 * @param output `"i32"` returns the exact integer accumulators
 * @returns y [batch, rows] (Float32Array), or the accumulators (Int32Array)
 * @example
 * ```ts
 * const y = await runWaOnce(gpu, lin, () => createInt8Plan(gpu, lin, { batch: 1 }),
 *   (plan) => plan.write(acts), "f32");
 * ```
 */
export async function runWaOnce<P extends WaPlan>(
  gpu: Gpu,
  lin: WaWeight,
  makePlan: () => Promise<P>,
  write: (plan: P) => void,
  output: "f32" | "i32" | undefined,
): Promise<Float32Array | Int32Array> {
  try {
    const plan = await makePlan();
    try {
      write(plan);
      const enc = gpu.device.createCommandEncoder();
      const pass = enc.beginComputePass();
      plan.encode(pass);
      pass.end();
      gpu.device.queue.submit([enc.finish()]);
      const out = await readBuffer(gpu, plan.y, plan.batch * lin.rows * 4);
      return output === "i32" ? new Int32Array(out) : new Float32Array(out);
    } finally {
      plan.release();
    }
  } finally {
    lin.release();
  }
}
