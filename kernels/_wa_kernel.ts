/**
 * The one skeleton of the weight × activation (W×A) integer kernels: the
 * bit-plane kernel (kernels/bitplane.ts) and the W8A8 kernel
 * (kernels/int8.ts) differ only in how a 32-column block of one weight row
 * and one token becomes an integer; this file holds everything else, for a
 * few tokens (decode, batch ≤ {@linkcode WA_MAX_BATCH}) and for whole
 * windows (prefill, any T) alike.
 *
 * ## Layout
 *
 * A scheme stores a 32-column block of a weight row in `wWords` u32 words and
 * of a token in `xWords` words (bit planes: one per bit; int8: eight words of
 * four bytes), block-interleaved and row-major:
 * W [rows, kBlocks, wWords], X [T, kBlocks, xWords], kBlocks = ⌈cols/32⌉.
 * Per token a {@linkcode TOKEN_FIELDS} record (scale, zero, SX = Σ codes);
 * per weight row and group its scale, integer zero and SW = Σ codes.
 *
 * ## Kernel
 *
 * A workgroup computes a tile of TT tokens × ROWS output rows. Its threads
 * form RT row groups × TPR threads per row group; a thread owns RR rows
 * (first + rl + j·RT, j < RR, so ROWS = RT·RR) and takes the blocks
 * t·TPR + tr of step t. Per step the workgroup stages the tile's token words
 * [TT, TPR, xWords] in workgroup memory; each thread loads its RR rows'
 * weight words once into registers and reuses them for all TT tokens, and
 * each staged token word serves RR rows: every weight word is loaded once
 * per tile of TT tokens, every token word once per thread and RR rows.
 * Workgroups are linearized (`dispatchSize`) as token tile · rowTiles + row
 * tile. Integers are i32 with wrapping arithmetic (WGSL's), so partial sums
 * may wrap while the final accumulator is exact.
 *
 * The two tile shapes ({@linkcode waTiling}):
 * - decode (batch ≤ {@linkcode WA_MAX_BATCH}): one token tile of all B
 *   tokens, RR = 1, 16 rows × TPR = 4 threads (kernels/matvec.ts's shape:
 *   the weight is read once, the threads of a row split its blocks and add
 *   their partial sums through workgroup memory);
 * - prefill (more tokens): tiles of TT = 8 tokens, RR = 8 rows per thread,
 *   64 threads of one row group each (TPR = 1: no reduction), 512 rows per
 *   workgroup — the popcounts per staged word grow with RR·TT, and loads,
 *   not arithmetic, are what a software adapter pays for (kernels/matmul.ts
 *   "Register tiling"); T need not be a multiple of TT.
 *
 * Zero points:
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

/** Largest batch of the decode tile shape (one tile of every token); larger batches run the prefill tiles. */
export const WA_MAX_BATCH = 8;

/**
 * How a W×A scheme turns one block into integers: WGSL expressions over
 * the block's words, named by a prefix and their index (`x0`, `x1`, …).
 */
export interface WaScheme {
  /** Names the scheme in the pipeline key, e.g. "bitplane.w4a8". */
  name: string;
  /** u32 words per 32-column block of a weight row. */
  wWords: number;
  /** u32 words per 32-column block of a token. */
  xWords: number;
  /** Helper functions the snippets call. */
  prelude: string;
  /** WGSL expression (i32): the block's integer product of the token words `x`0.. and weight words `w`0... */
  dot(x: string, w: string): string;
  /** WGSL expression (i32): Σ of the block's weight codes, from the words `w`0... */
  wSum(w: string): string;
  /** WGSL expression (i32): Σ of the block's token codes, from the words `x`0... */
  xSum(x: string): string;
}

/** A tile shape of the W×A kernel (module doc, "Kernel"). */
export interface WaTiling {
  /** Tokens per workgroup (TT). */
  tokensPerWg: number;
  /** Output rows per workgroup (ROWS, a multiple of rowsPerThread). */
  rowsPerWg: number;
  /** Rows per thread, in registers (RR). */
  rowsPerThread: number;
  /** Threads sharing a row's blocks (TPR). */
  threadsPerRow: number;
}

/** Everything that changes the W×A kernel's source. */
export interface WaParams extends WaTiling {
  scheme: WaScheme;
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
  "T",
  "nx",
  "rowTiles",
  "groupBlocks",
  "nGroups",
] as const;

/** The W×A kernel (module doc). */
export const WA_KERNEL: Kernel<WaParams> = {
  name: "wa",
  key: (p) =>
    [
      p.scheme.name,
      p.tokensPerWg,
      p.rowsPerWg,
      p.rowsPerThread,
      p.threadsPerRow,
      p.groups,
      p.output,
    ].join(","),
  wgsl: waWgsl,
};

/** Workgroup-memory words of the token tile and, with TPR > 1, of the reduction. */
function workgroupWords(p: WaParams): number {
  const WG = (p.rowsPerWg / p.rowsPerThread) * p.threadsPerRow;
  const red = p.threadsPerRow > 1 ? WG * p.rowsPerThread * p.tokensPerWg : 0;
  return p.tokensPerWg * p.threadsPerRow * p.scheme.xWords +
    red * (p.groups === "block" ? 2 : 1);
}

function waWgsl(p: WaParams): string {
  const { scheme: s, tokensPerWg: TT, rowsPerThread: RR, threadsPerRow: TPR, groups, output } = p;
  const RT = p.rowsPerWg / RR, WG = RT * TPR, WW = s.wWords, XW = s.xWords, N = RR * TT;
  const block = groups === "block", reduce = TPR > 1;
  const J = Array.from({ length: RR }, (_, j) => j);
  const words = (v: string, n: number, src: (k: number) => string) =>
    Array.from({ length: n }, (_, k) => `let ${v}${k} = ${src(k)};`).join(" ");
  const perRow = (f: (j: number) => string, sep = "\n      ") => J.map(f).join(sep);
  return `// ${WA_KERNEL.name}: ${WA_KERNEL.key(p)}
const TT = ${TT}u; // tokens per workgroup
const RR = ${RR}u; // rows per thread
const RT = ${RT}u; // row groups
const TPR = ${TPR}u; // threads per row group
const WG = ${WG}u;
const ROWS = ${RT * RR}u; // rows per workgroup
const XW = ${XW}u; // words per block of a token
const WW = ${WW}u; // words per block of a weight row
const N = ${N}u; // accumulators per thread [RR, TT]
struct Params { ${PARAM_FIELDS.map((f) => `${f}: u32`).join(", ")} }
struct Token { ${TOKEN_FIELDS.map(([f, t]) => `${f}: ${t}`).join(", ")} }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<u32>; // [T, kBlocks, XW]
@group(0) @binding(2) var<storage, read> TK: array<Token>; // [T]
@group(0) @binding(3) var<storage, read_write> Y: array<${output}>; // [T, rows]
@group(0) @binding(4) var<storage, read> W: array<u32>; // [rows, kBlocks, WW]
@group(0) @binding(5) var<storage, read> S: array<f32>; // [rows, nGroups]
@group(0) @binding(6) var<storage, read> Z: array<i32>; // [rows, nGroups]
${block ? "" : "@group(0) @binding(7) var<storage, read> SW: array<i32>; // [rows, nGroups]"}
var<workgroup> xs: array<u32, ${TT * TPR * XW}>; // [TT, TPR, XW] this step's token words
${reduce ? `var<workgroup> redI: array<i32, ${WG * N}>; // [WG, N]` : ""}
${reduce && block ? `var<workgroup> redF: array<f32, ${WG * N}>; // [WG, N]` : ""}
${s.prelude}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let wg = wid.y * P.nx + wid.x;
  let tok0 = (wg / P.rowTiles) * TT; // first token of this workgroup
  let first = (wg % P.rowTiles) * ROWS; // first row of this workgroup
  if (tok0 >= P.T) { return; }
  let rl = tid / TPR;
  let tr = tid % TPR;
  // this thread's rows first + rl + j·RT, clamped so that loads stay in bounds
  ${perRow((j) => `let row${j} = min(first + rl + ${j * RT}u, P.rows - 1u);`, "\n  ")}
  var accI = array<i32, N>(); // [RR, TT]
${
    block
      ? `  var accF = array<f32, N>();
  var zx = array<i32, TT>();
  for (var b = 0u; b < TT; b++) { zx[b] = TK[min(tok0 + b, P.T - 1u)].zero; }`
      : ""
  }
  let nSteps = (P.kBlocks + TPR - 1u) / TPR;
  for (var t = 0u; t < nSteps; t++) {
    workgroupBarrier();
    for (var i = tid; i < TT * TPR * XW; i += WG) {
      let b = i / (TPR * XW);
      let r = i % (TPR * XW);
      let blk = t * TPR + r / XW;
      var v = 0u;
      if (blk < P.kBlocks && tok0 + b < P.T) { v = X[((tok0 + b) * P.kBlocks + blk) * XW + r % XW]; }
      xs[i] = v;
    }
    workgroupBarrier();
    let blk = t * TPR + tr;
    if (blk < P.kBlocks) {
      ${
    perRow((j) =>
      `let wi${j} = (row${j} * P.kBlocks + blk) * WW; ` +
      words(`w${j}_`, WW, (k) => `W[wi${j} + ${k}u]`)
    )
  }
${
    block
      ? `      let n = i32(min(32u, P.cols - 32u * blk));
      ${
        perRow((j) =>
          `let gi${j} = row${j} * P.nGroups + blk / P.groupBlocks; let s${j} = S[gi${j}]; ` +
          `let zw${j} = Z[gi${j}]; let sw${j} = ${s.wSum(`w${j}_`)};`
        )
      }`
      : ""
  }
      for (var b = 0u; b < TT; b++) {
        let xb = (b * TPR + tr) * XW;
        ${words("x", XW, (k) => `xs[xb + ${k}u]`)}
${block ? `        let sx = ${s.xSum("x")};` : ""}
        ${
    perRow((j) =>
      block
        ? `{ let d = ${s.dot("x", `w${j}_`)};
          let tb = d - zw${j} * sx - zx[b] * sw${j} + n * zx[b] * zw${j};
          accI[${j}u * TT + b] += tb;
          accF[${j}u * TT + b] += s${j} * f32(tb); }`
        : `accI[${j}u * TT + b] += ${s.dot("x", `w${j}_`)};`, "\n        ")
  }
      }
    }
  }
${
    reduce
      ? `  for (var i = 0u; i < N; i++) {
    redI[tid * N + i] = accI[i];
    ${block ? "redF[tid * N + i] = accF[i];" : ""}
  }
  workgroupBarrier();
  if (tr != 0u) { return; }
  for (var i = 0u; i < N; i++) {
    var a = 0i;
    ${block ? "var f = 0.0;" : ""}
    for (var u = 0u; u < TPR; u++) {
      a += redI[(tid + u) * N + i];
      ${block ? "f += redF[(tid + u) * N + i];" : ""}
    }
    accI[i] = a;
    ${block ? "accF[i] = f;" : ""}
  }`
      : ""
  }
  let nt = min(TT, P.T - tok0);
  ${
    perRow((j) => {
      const r = `first + rl + ${j * RT}u`;
      const row = block
        ? `for (var b = 0u; b < nt; b++) {
      Y[(tok0 + b) * P.rows + ${r}] = ${
          output === "i32" ? `accI[${j}u * TT + b]` : `TK[tok0 + b].scale * accF[${j}u * TT + b]`
        };
    }`
        : `let gi = row${j} * P.nGroups;
    let zw = Z[gi];
    let sw = SW[gi];
    ${output === "i32" ? "" : "let s = S[gi];"}
    for (var b = 0u; b < nt; b++) {
      let tok = TK[tok0 + b];
      let acc = accI[${j}u * TT + b] - zw * tok.sum - tok.zero * sw + i32(P.cols) * tok.zero * zw;
      Y[(tok0 + b) * P.rows + ${r}] = ${output === "i32" ? "acc" : "s * tok.scale * f32(acc)"};
    }`;
      return `if (${r} < P.rows) {
    ${row}
  }`;
    }, "\n  ")
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
export interface WaPlanOptions extends Partial<WaTiling> {
  /**
   * Tokens T (any positive integer): up to {@linkcode WA_MAX_BATCH} run the
   * decode tile shape, more the prefill tiles ({@linkcode waTiling}).
   */
  batch: number;
  /** "f32": y [batch, rows]; "i32": the integer accumulators. @default "f32" */
  output?: "f32" | "i32";
  /** Per-dimension workgroup cap (tests force 2-D grids with a small one). */
  maxWorkgroupsPerDim?: number;
}

/**
 * The tile shape of a plan for T tokens (module doc, "Kernel"), with any
 * field of `asked` taking precedence: the decode shape (one tile of all
 * tokens) up to {@linkcode WA_MAX_BATCH} tokens, the prefill shape above.
 * The prefill shape was picked on llvmpipe (1024 × 1024, T = 256, W4A8 and
 * int8, interleaved rounds on a loaded machine): TT·RR = 8·8 ran about 1.4×
 * faster than 8·4 (8·2 and 16·2 slower still); 16·8 and 8·16 were within
 * the noise of 8·8 and hold twice the accumulators, which a GPU would spill.
 *
 * @param T tokens
 * @param asked fields given by the caller
 * @returns the tiling
 */
export function waTiling(T: number, asked: Partial<WaTiling> = {}): WaTiling {
  const decode = T <= WA_MAX_BATCH;
  const rowsPerThread = asked.rowsPerThread ?? (decode ? 1 : 8);
  return {
    tokensPerWg: asked.tokensPerWg ?? (decode ? T : 8),
    rowsPerThread,
    rowsPerWg: asked.rowsPerWg ?? (decode ? 16 : 64 * rowsPerThread),
    threadsPerRow: asked.threadsPerRow ?? (decode ? 4 : 1),
  };
}

/** A W×A kernel bound to its buffers, ready to encode any number of times. */
export interface WaPlan {
  /** Tokens T. */
  readonly batch: number;
  /** The tile shape. */
  readonly tiling: WaTiling;
  /** Token words [T, kBlocks, xWords] (write with {@linkcode WaPlan.writeTokens}). */
  readonly x: GPUBuffer;
  /** Token records [T] of {@linkcode TOKEN_FIELDS}. */
  readonly tokens: GPUBuffer;
  /** Output [T, rows], f32 or i32 (COPY_SRC). */
  readonly y: GPUBuffer;
  /** Bytes one run reads and writes at least: weight buffers, token words and records, y. */
  readonly bytesMoved: number;
  /**
   * Writes the tokens: their words, scales, integer zeros and sums SX.
   * @param words [T, kBlocks, xWords]
   * @param scales [T]
   * @param zeros [T]
   * @param sums [T]
   */
  writeTokens(words: Uint32Array, scales: Float32Array, zeros: Int32Array, sums: Int32Array): void;
  /** Records the run's dispatch into a compute pass. */
  encode(pass: GPUComputePassEncoder): void;
  /** Returns the plan's buffers to the pool. */
  release(): void;
}

/** Checks a tiling against the device's limits; throws a RangeError naming the field. */
function checkTiling(t: WaTiling, p: WaParams, limits: GPUSupportedLimits): void {
  for (const [k, v] of Object.entries(t)) {
    if (!(Number.isInteger(v) && v >= 1)) {
      throw new RangeError(`W×A kernel: ${k} must be a positive integer, got ${v}`);
    }
  }
  if (t.rowsPerWg % t.rowsPerThread !== 0) {
    throw new RangeError(
      `W×A kernel: rowsPerWg ${t.rowsPerWg} is not a multiple of rowsPerThread ${t.rowsPerThread}`,
    );
  }
  const threads = (t.rowsPerWg / t.rowsPerThread) * t.threadsPerRow;
  if (threads > limits.maxComputeInvocationsPerWorkgroup) {
    throw new RangeError(
      `W×A kernel: ${threads} threads per workgroup exceed the device's ` +
        `${limits.maxComputeInvocationsPerWorkgroup} invocations per workgroup`,
    );
  }
  const bytes = 4 * workgroupWords(p);
  if (bytes > limits.maxComputeWorkgroupStorageSize) {
    throw new RangeError(
      `W×A kernel: the tiling needs ${bytes} bytes of workgroup memory, above the device's ` +
        `${limits.maxComputeWorkgroupStorageSize}; lower tokensPerWg, rowsPerThread or threadsPerRow`,
    );
  }
}

/**
 * Binds a weight to token and output buffers for T tokens and compiles (or
 * reuses) the pipeline.
 *
 * @param gpu the device
 * @param scheme how a block becomes an integer
 * @param lin the weight, uploaded with the scheme's layout
 * @param opts tokens, output kind, tiling
 * @returns the plan; release it before releasing `lin`
 * @throws RangeError on a bad tiling, or when T tokens' words or outputs exceed one binding
 */
export async function createWaPlan(
  gpu: Gpu,
  scheme: WaScheme,
  lin: WaWeight,
  opts: WaPlanOptions,
): Promise<WaPlan> {
  const { device, pool } = gpu;
  const T = opts.batch;
  if (!(Number.isInteger(T) && T >= 1)) {
    throw new RangeError(`W×A kernel: batch (tokens) must be a positive integer, got ${T}`);
  }
  if (lin.wWords !== scheme.wWords) {
    throw new RangeError(
      `W×A kernel: the weight has ${lin.wWords} words per block, scheme ${scheme.name} reads ` +
        `${scheme.wWords}; upload it for this scheme`,
    );
  }
  const tiling = waTiling(T, opts);
  const output = opts.output ?? "f32";
  const params: WaParams = { scheme, ...tiling, groups: lin.groups, output };
  checkTiling(tiling, params, device.limits);
  const xBytes = T * lin.kBlocks * scheme.xWords * 4, yBytes = T * lin.rows * 4;
  const maxBind = device.limits.maxStorageBufferBindingSize;
  if (Math.max(xBytes, yBytes) > maxBind) {
    throw new RangeError(
      `W×A kernel: ${T} tokens of a ${lin.rows}×${lin.cols} layer need ${
        Math.max(xBytes, yBytes)
      } ` +
        `bytes in one binding, above the device's maxStorageBufferBindingSize ${maxBind}; ` +
        `run fewer tokens per plan`,
    );
  }
  const pipeline = await gpu.pipelines.get(WA_KERNEL, params);
  const owned = new OwnedBuffers(pool);
  const own = (size: number, usage: GPUBufferUsageFlags, label: string) =>
    owned.acquire(size, usage, label);
  const copyDst = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
  const x = own(xBytes, copyDst, "wa-x");
  const tokens = own(T * TOKEN_FIELDS.length * 4, copyDst, "wa-tokens");
  const y = own(yBytes, copyDst | GPUBufferUsage.COPY_SRC, "wa-y");
  const rowTiles = Math.ceil(lin.rows / tiling.rowsPerWg);
  const tokenTiles = Math.ceil(T / tiling.tokensPerWg);
  const grid = dispatchSize(rowTiles * tokenTiles, device.limits, opts.maxWorkgroupsPerDim);
  const u = own(PARAM_FIELDS.length * 4, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, "wa");
  const values: Record<(typeof PARAM_FIELDS)[number], number> = {
    rows: lin.rows,
    cols: lin.cols,
    kBlocks: lin.kBlocks,
    T,
    nx: grid.nx,
    rowTiles,
    groupBlocks: Math.ceil(lin.groupSize / 32),
    nGroups: lin.nGroups,
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
    batch: T,
    tiling,
    x,
    tokens,
    y,
    bytesMoved: lin.bytes + xBytes + T * 4 * TOKEN_FIELDS.length + yBytes,
    writeTokens(words, scales, zeros, sums) {
      if (words.byteLength !== xBytes) {
        throw new RangeError(
          `WaPlan.writeTokens(): expected ${xBytes / 4} words (${T} tokens × ${lin.kBlocks} ` +
            `blocks × ${scheme.xWords}), found ${words.length}`,
        );
      }
      if (scales.length !== T || zeros.length !== T || sums.length !== T) {
        throw new RangeError(`WaPlan.writeTokens(): scales, zeros and sums need ${T} values each`);
      }
      device.queue.writeBuffer(x, 0, words as Uint32Array<ArrayBuffer>);
      const rec = new ArrayBuffer(T * TOKEN_FIELDS.length * 4);
      const f32 = new Float32Array(rec), i32 = new Int32Array(rec);
      const n = TOKEN_FIELDS.length;
      for (let b = 0; b < T; b++) {
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
