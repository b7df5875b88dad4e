/**
 * WGSL matrix-vector / small-batch kernels over the packed formats of
 * quant/format.ts: y[b, r] = Σ_c W[r, c] · x[b, c] (+ sparse part), for
 * batch B = 1..8 activation rows, W [rows = out, cols = in].
 *
 * ## Dense kernel ({@linkcode MATVEC_KERNEL})
 *
 * One workgroup of WG = ROWS·TPR threads (default 16 rows × 4 threads)
 * computes ROWS output rows; the TPR threads of a row split its columns. The
 * columns are walked in tiles of TILE = TPR·32:
 *
 * 1. the workgroup stages x[0..B, tile] in workgroup memory as vec4s of four
 *    consecutive columns (zero past the last column), reused by its ROWS
 *    rows; for act-order gIdx or group sizes that are not multiples of 32 it
 *    also stages the group of every column of the tile;
 * 2. thread (row, t) takes the 32-code block at column tile + 32·t. A block
 *    of 32 b-bit codes is exactly b whole u32 words of the row's bitstream
 *    (rows start on fresh words), so the thread loads b consecutive words and
 *    extracts the codes with shifts that are WGSL constants (bits is baked
 *    into the source), including the codes that straddle two words for
 *    b = 3, 5, 6, 7. fp16 blocks are 16 words (unpack2x16float, no
 *    shader-f16 needed); fp32 blocks are 8 vec4 loads when cols % 4 == 0.
 *    A partial last block (cols not a multiple of 32) takes a per-code path
 *    with bounds checks;
 * 3. decode, four weights at a time into a vec4 that is dotted with the
 *    staged x vec4 of every batch row: `uniform` w = s·(q − z) with s, z of
 *    the block's group read once per block (groups that are multiples of 32,
 *    or one group per row: s multiplies the block's dot product), or per code
 *    (act-order / other group sizes); `lut` w = lut[row][q] from the row's
 *    table: for b ≤ 4 each thread loads its row's 2^b entries into registers
 *    once and picks four weights at a time with a tree of 2^b − 1 vec4 selects on
 *    the code bits (llvmpipe turns dynamically indexed loads into one scalar
 *    load per SIMD lane, which made the lookup slower than fp16); for b > 4
 *    the tables are staged in workgroup memory as the official SqueezeLLM
 *    CUDA kernel stages its per-channel tables;
 * 4. each thread keeps B partial sums; the fused sparse part (compiled into
 *    every variant, switched by a uniform flag) adds the row's nonzeros
 *    strided over the row's TPR threads; partial sums are reduced in
 *    workgroup memory (reusing the x tile) and one thread per (row, b)
 *    writes y.
 *
 * Workgroup ids are linearized (`wid.y · nx + wid.x`) so more than 65535
 * workgroups fold into a 2-D grid. Weights larger than the device's
 * maxStorageBufferBindingSize are bound as several row windows, one
 * dispatch per window. The source depends on format, bits, batch, tiling,
 * group mode and two alignment flags: that tuple is the pipeline key.
 *
 * ## Separate sparse pass ({@linkcode SPMV_CHUNK_KERNEL}, {@linkcode SPMV_REDUCE_KERNEL})
 *
 * Load-balanced CSR, atomic-free and deterministic. The nonzeros are split
 * into chunks of `chunk` (default 10, as in the official balanced kernel);
 * thread i owns nonzeros [10i, 10i + 10), finds its first row by binary
 * search in rowPtr and walks its range. A row that lies entirely inside one
 * thread's range and is neither its first nor last row is added to y
 * directly (no other thread touches it). The partial sums of the thread's
 * first and last row go to a scratch record (row id + B sums) instead. A
 * second dispatch, one thread per row, adds the records of the threads
 * ⌊rowPtr[r]/10⌋ … ⌊(rowPtr[r+1]−1)/10⌋ whose record names row r. Both
 * dispatches run after the dense kernel in the same compute pass.
 *
 * @module
 */
import type { CsrMatrix, DenseFormat, LinearWeight, SizeReport } from "../quant/format.ts";
import { nGroups, sizeOf, validateWeight, wordsPerRow } from "../quant/format.ts";
import type { Gpu, Kernel } from "./device.ts";
import { dispatchSize, OwnedBuffers, readBuffer } from "./device.ts";

/** Largest activation batch a kernel takes. */
export const MAX_BATCH = 8;

/** How a uniform kernel finds the group of a column. */
export type GroupMode =
  /** not uniform */
  | "none"
  /**
   * one group per 32-code block: groupSize a multiple of 32, or one group per
   * row; s, z are read once per block
   */
  | "block"
  /**
   * per column: act-order gIdx, or ⌊c / groupSize⌋ for other group sizes
   * (uploaded as a derived int32 [cols] table); staged per tile, s, z per code
   */
  | "column";

/** Everything that changes the dense kernel's WGSL source. */
export interface MatvecParams {
  format: DenseFormat;
  /** Code width for uniform / lut; 0 for f32 / f16. */
  bits: number;
  /** Activation rows B (1..8). */
  batch: number;
  /** Output rows per workgroup (ROWS). */
  rowsPerWg: number;
  /** Threads per output row (TPR); WG = ROWS·TPR. */
  threadsPerRow: number;
  groups: GroupMode;
  /** f32: cols % 4 == 0 (vec4 loads); f16: cols even (rows word-aligned). Else false. */
  aligned: boolean;
  /** cols % 4 == 0: x rows are read as vec4 when staged. */
  xAligned: boolean;
}

const HALF_FN = (name: string, buf: string) =>
  `fn ${name}(i: u32) -> f32 { return unpack2x16float(${buf}[i >> 1u])[i & 1u]; }`;

/** The dense matvec kernel (module doc, "Dense kernel"). */
export const MATVEC_KERNEL: Kernel<MatvecParams> = {
  name: "matvec",
  key: (p) =>
    [p.format, p.bits, p.batch, p.rowsPerWg, p.threadsPerRow, p.groups, p.aligned, p.xAligned].join(
      ",",
    ),
  wgsl: matvecWgsl,
};

/** Largest lut code width whose table a thread keeps in registers (select tree of 2^b − 1 blends). */
const LUT_REG_BITS = 4;

/**
 * WGSL `lutPick(q, l)`: entries l[q] of a 2^bits table for four codes, as a
 * binary tree of selects on the bits of q (high bit at the root); every index
 * is a constant, so the table stays in registers.
 */
function lutPickFn(bits: number): string {
  const tree = (bit: number, base: number): string => {
    if (bit < 0) return `vec4<f32>(l[${base}])`;
    const lo = tree(bit - 1, base), hi = tree(bit - 1, base + (1 << bit));
    return `select(${lo}, ${hi}, (q & vec4<u32>(${1 << bit}u)) != vec4<u32>())`;
  };
  return `fn lutPick(q: vec4<u32>, l: array<f32, K>) -> vec4<f32> {
  return ${tree(bits - 1, 0)};
}`;
}

function matvecWgsl(p: MatvecParams): string {
  const { format, bits, batch: B, rowsPerWg: ROWS, threadsPerRow: TPR } = p;
  const WG = ROWS * TPR, TILE = TPR * 32, T4 = TILE / 4;
  const quant = format === "uniform" || format === "lut";
  const L: string[] = [];
  L.push(`// ${MATVEC_KERNEL.name}: ${MATVEC_KERNEL.key(p)}`);
  L.push(
    `const B = ${B}u;`,
    `const ROWS = ${ROWS}u;`,
    `const TPR = ${TPR}u;`,
    `const WG = ${WG}u;`,
  );
  L.push(`const TILE = ${TILE}u; // columns per tile`, `const T4 = ${T4}u;`);
  if (quant) L.push(`const BITS = ${bits}u;`, `const MASK = ${(1 << bits) - 1}u;`);
  if (format === "lut") L.push(`const K = ${1 << bits}u;`);
  L.push(`struct Params {
  rows: u32, cols: u32, wpr: u32, wBase: u32,
  rowBase: u32, chunkRows: u32, nx: u32, groupSize: u32,
  nGroups: u32, sparse: u32, sparseF32: u32, p2: u32,
}`);
  L.push(`@group(0) @binding(0) var<uniform> P: Params;`);
  if (p.xAligned) {
    L.push(`@group(0) @binding(1) var<storage, read> X: array<vec4<f32>>; // [B, cols / 4]`);
    L.push(`fn xAt(i: u32) -> f32 { return X[i >> 2u][i & 3u]; }`);
  } else {
    L.push(`@group(0) @binding(1) var<storage, read> X: array<f32>; // [B, cols]`);
    L.push(`fn xAt(i: u32) -> f32 { return X[i]; }`);
  }
  L.push(`@group(0) @binding(2) var<storage, read_write> Y: array<f32>; // [B, rows]`);
  const wType = format === "f32" ? (p.aligned ? "vec4<f32>" : "f32") : "u32";
  L.push(
    `@group(0) @binding(3) var<storage, read> W: array<${wType}>; // window of the dense part`,
  );
  if (format === "uniform") {
    L.push(`@group(0) @binding(4) var<storage, read> S: array<u32>; // fp16 [rows, nGroups]`);
    L.push(`@group(0) @binding(5) var<storage, read> Z: array<u32>; // fp16 [rows, nGroups]`);
    L.push(HALF_FN("scaleAt", "S"), HALF_FN("zeroAt", "Z"));
    if (p.groups === "column") {
      L.push(
        `@group(0) @binding(6) var<storage, read> G: array<i32>; // [cols] group of each column`,
      );
    }
  }
  // b ≤ 4: each thread holds its row's table in registers and picks entries with a select
  // tree (llvmpipe runs dynamically indexed loads lane by lane; selects are SIMD blends).
  const lutRegs = format === "lut" && bits <= LUT_REG_BITS;
  if (format === "lut") {
    L.push(`@group(0) @binding(4) var<storage, read> LT: array<u32>; // fp16 [rows, K]`);
    L.push(HALF_FN("lutAt", "LT"));
    if (lutRegs) L.push(lutPickFn(bits));
    else L.push(`var<workgroup> lutS: array<f32, ${ROWS << bits}>; // [ROWS, K]`);
  }
  // The fused sparse part is always compiled in and switched by P.sparse, so it costs no variants.
  L.push(`@group(0) @binding(7) var<storage, read> RP: array<i32>; // [rows + 1]`);
  L.push(`@group(0) @binding(8) var<storage, read> CI: array<i32>; // [nnz]`);
  L.push(`@group(0) @binding(9) var<storage, read> V: array<u32>; // [nnz] fp32, or fp16 pairs`);
  L.push(`fn valAt(k: u32) -> f32 {
  if (P.sparseF32 != 0u) { return bitcast<f32>(V[k]); }
  return unpack2x16float(V[k >> 1u])[k & 1u];
}`);
  if (format === "f16") L.push(HALF_FN("w16", "W"));
  if (format === "f32" && p.aligned) {
    L.push(`fn w32(i: u32) -> f32 { return W[i >> 2u][i & 3u]; }`);
  } else if (format === "f32") L.push(`fn w32(i: u32) -> f32 { return W[i]; }`);
  // x[b, tile columns 4j..4j+3] as one vec4 (zero past the last column); after the last tile
  // the same memory holds the [WG, B] partial sums.
  L.push(`var<workgroup> xs: array<vec4<f32>, ${B * T4}>; // [B, TILE / 4]`);
  if (p.groups === "column") {
    L.push(`var<workgroup> gs: array<u32, TILE>; // group of each tile column`);
  }

  // Weight of (row, column c) on the per-code path for a partial last block.
  let slowWeight: string;
  switch (format) {
    case "f32":
      slowWeight = `w32(row * P.cols + c - P.wBase)`;
      break;
    case "f16":
      slowWeight = `w16(row * P.cols + c - 2u * P.wBase)`;
      break;
    default: {
      const code = `codeSlow(row, c)`;
      if (lutRegs) slowWeight = `lutPick(vec4<u32>(${code}), lr).x`;
      else if (format === "lut") slowWeight = `lutS[rl * K + ${code}]`;
      else {
        const g = p.groups === "column" ? `gs[cl + i]` : `c / P.groupSize`;
        slowWeight = `wUniform(row, ${g}, ${code})`;
      }
      L.push(`fn codeSlow(row: u32, c: u32) -> u32 {
  let bit = c * BITS;
  let wi = row * P.wpr + (bit >> 5u) - P.wBase;
  let s = bit & 31u;
  var v = W[wi] >> s;
  if (s + BITS > 32u) { v = v | (W[wi + 1u] << (32u - s)); }
  return v & MASK;
}`);
      if (format === "uniform") {
        L.push(`fn wUniform(row: u32, g: u32, q: u32) -> f32 {
  let gi = row * P.nGroups + g;
  return scaleAt(gi) * (f32(q) - zeroAt(gi));
}`);
      }
    }
  }

  // Fast path over the full 32-column block at column cb: 8 groups of 4 weights as a vec4,
  // each dotted with x[b, 4 columns] for every batch row b.
  const fast: string[] = [];
  const dot4 = (target: string, w4: string, j: number) =>
    `{ let w4 = ${w4}; for (var b = 0u; b < B; b++) { ${target}[b] += dot(w4, xs[b * T4 + q4 + ${j}u]); } }`;
  const vec4Of = (f: (i: number) => string, j: number) =>
    `vec4<f32>(${[0, 1, 2, 3].map((k) => f(4 * j + k)).join(", ")})`;
  if (format === "f32" && p.aligned) {
    fast.push(`let w0 = (row * P.cols + cb - P.wBase) >> 2u;`);
    for (let j = 0; j < 8; j++) fast.push(dot4("acc", `W[w0 + ${j}u]`, j));
  } else if (format === "f32") {
    fast.push(`let w0 = row * P.cols + cb - P.wBase;`);
    for (let j = 0; j < 8; j++) fast.push(dot4("acc", vec4Of((i) => `W[w0 + ${i}u]`, j), j));
  } else if (format === "f16" && !p.aligned) {
    fast.push(`let h0 = row * P.cols + cb - 2u * P.wBase;`);
    for (let j = 0; j < 8; j++) fast.push(dot4("acc", vec4Of((i) => `w16(h0 + ${i}u)`, j), j));
  } else if (format === "f16") {
    fast.push(`let w0 = ((row * P.cols + cb) >> 1u) - P.wBase;`);
    for (let j = 0; j < 8; j++) {
      fast.push(dot4(
        "acc",
        `vec4<f32>(unpack2x16float(W[w0 + ${2 * j}u]), unpack2x16float(W[w0 + ${2 * j + 1}u]))`,
        j,
      ));
    }
  } else {
    fast.push(`let wi = row * P.wpr + (cb >> 5u) * BITS - P.wBase;`);
    for (let k = 0; k < bits; k++) fast.push(`let w${k} = W[wi + ${k}u];`);
    // Code i of the block: stream bits [i·b, i·b + b) of words w0..w(b−1); shifts are constants.
    const code = (i: number) => {
      const bit = i * bits, w = bit >> 5, s = bit & 31;
      const lo = s ? `(w${w} >> ${s}u)` : `w${w}`;
      if (s + bits > 32) return `((${lo} | (w${w + 1} << ${32 - s}u)) & MASK)`;
      return `(${lo} & MASK)`;
    };
    if (lutRegs) {
      for (let j = 0; j < 8; j++) {
        const q4 = `vec4<u32>(${[0, 1, 2, 3].map((k) => code(4 * j + k)).join(", ")})`;
        fast.push(dot4("acc", `lutPick(${q4}, lr)`, j));
      }
    } else if (format === "lut") {
      for (let j = 0; j < 8; j++) {
        fast.push(dot4("acc", vec4Of((i) => `lutS[lb + ${code(i)}]`, j), j));
      }
    } else if (p.groups === "block") {
      fast.push(`let gi = row * P.nGroups + cb / P.groupSize;`);
      fast.push(`let s = scaleAt(gi);`, `let z = vec4<f32>(zeroAt(gi));`);
      fast.push(
        `var dq = array<f32, B>(); // explicit: naga does not re-zero a var declared in a loop`,
      );
      for (let j = 0; j < 8; j++) {
        fast.push(
          dot4(
            "dq",
            `vec4<f32>(vec4<u32>(${[0, 1, 2, 3].map((k) => code(4 * j + k)).join(", ")})) - z`,
            j,
          ),
        );
      }
      fast.push(`for (var b = 0u; b < B; b++) { acc[b] += s * dq[b]; }`);
    } else {
      const w = (i: number) => `wUniform(row, gs[cl + ${i}u], ${code(i)})`;
      for (let j = 0; j < 8; j++) fast.push(dot4("acc", vec4Of(w, j), j));
    }
  }

  L.push(`@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let first = (wid.y * P.nx + wid.x) * ROWS; // first row of this workgroup, within the window
  if (first >= P.chunkRows) { return; }
  let rl = tid / TPR;
  let tr = tid % TPR;
  let row = P.rowBase + min(first + rl, P.chunkRows - 1u); // clamped: loads stay in bounds
  var acc = array<f32, B>();`);
  if (lutRegs) {
    const entries = Array.from({ length: 1 << bits }, (_, i) => `lutAt(row * K + ${i}u)`);
    L.push(`  let lr = array<f32, K>(${entries.join(", ")}); // this row's table`);
  } else if (format === "lut") {
    L.push(`  let lb = rl * K;
  for (var i = tid; i < ROWS * K; i += WG) {
    let r = P.rowBase + min(first + i / K, P.chunkRows - 1u);
    lutS[i] = lutAt(r * K + (i % K));
  }`);
  }
  L.push(`  let nTiles = (P.cols + TILE - 1u) / TILE;
  for (var t = 0u; t < nTiles; t++) {
    let c0 = t * TILE;
    workgroupBarrier();
    for (var i = tid; i < B * T4; i += WG) {
      let b = i / T4;
      let c = c0 + 4u * (i % T4);
      ${
    p.xAligned
      ? `var v = vec4<f32>();
      if (c < P.cols) { v = X[(b * P.cols + c) >> 2u]; }`
      : `var v = vec4<f32>();
      for (var k = 0u; k < 4u; k++) { if (c + k < P.cols) { v[k] = X[b * P.cols + c + k]; } }`
  }
      xs[i] = v;
    }`);
  if (p.groups === "column") {
    L.push(`    for (var i = tid; i < TILE; i += WG) {
      let c = c0 + i;
      var g = 0u;
      if (c < P.cols) { g = u32(G[c]); }
      gs[i] = g;
    }`);
  }
  L.push(`    workgroupBarrier();
    let cl = tr * 32u; // tile column of this thread's block
    let q4 = tr * 8u;
    let cb = c0 + cl;
    if (cb + 32u <= P.cols) {
${fast.map((s) => "      " + s).join("\n")}
    } else if (cb < P.cols) {
      for (var i = 0u; i < P.cols - cb; i++) {
        let c = cb + i;
        let wv = ${slowWeight};
        for (var b = 0u; b < B; b++) { acc[b] += wv * xs[b * T4 + ((cl + i) >> 2u)][i & 3u]; }
      }
    }
  }
  if (P.sparse != 0u) {
    let kEnd = u32(RP[row + 1u]);
    for (var k = u32(RP[row]) + tr; k < kEnd; k += TPR) {
      let c = u32(CI[k]);
      let v = valAt(k);
      for (var b = 0u; b < B; b++) { acc[b] += v * xAt(b * P.cols + c); }
    }
  }
  workgroupBarrier();
  for (var b = 0u; b < B; b++) { let i = tid * B + b; xs[i >> 2u][i & 3u] = acc[b]; }
  workgroupBarrier();
  for (var o = tid; o < ROWS * B; o += WG) {
    let r2 = o / B;
    let b = o % B;
    var s = 0.0;
    for (var k = 0u; k < TPR; k++) { let i = (r2 * TPR + k) * B + b; s += xs[i >> 2u][i & 3u]; }
    let out = first + r2;
    if (out < P.chunkRows) { Y[b * P.rows + P.rowBase + out] = s; }
  }
}`);
  return L.join("\n");
}

/** Parameters of the separate sparse kernels. */
export interface SpmvParams {
  batch: number;
}

const SPMV_WG = 64;

function spmvHeader(p: SpmvParams): string {
  return `const B = ${p.batch}u;
const WG = ${SPMV_WG}u;
struct Params { rows: u32, cols: u32, nnz: u32, chunk: u32, nThreads: u32, nx: u32, valuesF32: u32, p1: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>; // [B, cols]
@group(0) @binding(2) var<storage, read_write> Y: array<f32>; // [B, rows]
@group(0) @binding(3) var<storage, read> RP: array<i32>; // [rows + 1]
@group(0) @binding(4) var<storage, read> CI: array<i32>; // [nnz]
@group(0) @binding(5) var<storage, read> V: array<u32>; // [nnz] fp32, or fp16 pairs
fn valAt(k: u32) -> f32 {
  if (P.valuesF32 != 0u) { return bitcast<f32>(V[k]); }
  return unpack2x16float(V[k >> 1u])[k & 1u];
}
@group(0) @binding(6) var<storage, read_write> RROW: array<i32>; // [nThreads, 2] record rows
@group(0) @binding(7) var<storage, read_write> RVAL: array<f32>; // [nThreads, 2, B] record sums`;
}

/** Pass 1 of the separate sparse part: one thread per chunk of nonzeros. */
export const SPMV_CHUNK_KERNEL: Kernel<SpmvParams> = {
  name: "spmv-chunk",
  key: (p) => `${p.batch}`,
  wgsl: (p) =>
    `${spmvHeader(p)}
fn record(slot: u32, r: u32, sums: array<f32, B>) {
  RROW[slot] = i32(r);
  for (var b = 0u; b < B; b++) { RVAL[slot * B + b] = sums[b]; }
}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * P.nx + wid.x) * WG + lid;
  if (i >= P.nThreads) { return; }
  let k0 = i * P.chunk;
  let k1 = min(k0 + P.chunk, P.nnz);
  // Row holding nonzero k0: the largest r with rowPtr[r] <= k0.
  var lo = 0u;
  var hi = P.rows;
  while (lo < hi) {
    let mid = (lo + hi + 1u) / 2u;
    if (u32(RP[mid]) <= k0) { lo = mid; } else { hi = mid - 1u; }
  }
  var r = lo;
  var rowEnd = u32(RP[r + 1u]);
  var firstRow = true;
  var sums = array<f32, B>();
  RROW[2u * i + 1u] = -1;
  for (var k = k0; k < k1; k++) {
    if (k == rowEnd) {
      if (firstRow) { record(2u * i, r, sums); firstRow = false; }
      else { for (var b = 0u; b < B; b++) { Y[b * P.rows + r] += sums[b]; } }
      for (var b = 0u; b < B; b++) { sums[b] = 0.0; }
      loop { r++; rowEnd = u32(RP[r + 1u]); if (rowEnd > k) { break; } }
    }
    let c = u32(CI[k]);
    let v = valAt(k);
    for (var b = 0u; b < B; b++) { sums[b] += v * X[b * P.cols + c]; }
  }
  if (firstRow) { record(2u * i, r, sums); } else { record(2u * i + 1u, r, sums); }
}`,
};

/** Pass 2 of the separate sparse part: one thread per row adds the records naming it. */
export const SPMV_REDUCE_KERNEL: Kernel<SpmvParams> = {
  name: "spmv-reduce",
  key: (p) => `${p.batch}`,
  wgsl: (p) =>
    `${spmvHeader(p)}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = (wid.y * P.nx + wid.x) * WG + lid;
  if (r >= P.rows) { return; }
  let s = u32(RP[r]);
  let e = u32(RP[r + 1u]);
  if (s == e) { return; }
  var sums = array<f32, B>();
  var found = false;
  for (var i = s / P.chunk; i <= (e - 1u) / P.chunk; i++) {
    for (var slot = 2u * i; slot < 2u * i + 2u; slot++) {
      if (RROW[slot] == i32(r)) {
        found = true;
        for (var b = 0u; b < B; b++) { sums[b] += RVAL[slot * B + b]; }
      }
    }
  }
  if (found) { for (var b = 0u; b < B; b++) { Y[b * P.rows + r] += sums[b]; } }
}`,
};

/** A weight uploaded to the GPU as-is (no repacking). */
export interface GpuLinear {
  rows: number;
  cols: number;
  format: DenseFormat;
  /** 0 for f32 / f16. */
  bits: number;
  groups: GroupMode;
  groupSize: number;
  nGroups: number;
  /** Words (f32: floats) per row for quantized codes; 0 for f16 / f32. */
  wpr: number;
  /** Bytes of one row of the dense part (f16 / f32: cols·2 / cols·4). */
  rowBytes: number;
  /** The dense part: codes, fp16 words or fp32 values. */
  w: GPUBuffer;
  scales?: GPUBuffer;
  zeros?: GPUBuffer;
  gIdx?: GPUBuffer;
  lut?: GPUBuffer;
  sparse?: {
    rowPtr: GPUBuffer;
    colIdx: GPUBuffer;
    values: GPUBuffer;
    nnz: number;
    dtype: "f16" | "f32";
  };
  /** Bytes of every stored part, quant/format.ts's `sizeOf` (for effective bandwidth). */
  bytes: SizeReport["storedBytes"];
  /** Returns every buffer to the pool. */
  release(): void;
}

/**
 * Uploads a weight as-is: codes, fp16 words and int32 indices are copied
 * byte for byte into storage buffers (fp16 arrays padded to 4 bytes).
 *
 * @param gpu the device
 * @param weight the weight (dense part + optional CSR sparse part)
 * @returns GPU buffers and shape metadata; call `release()` when done
 */
export function uploadLinear(gpu: Gpu, weight: LinearWeight): GpuLinear {
  validateWeight(weight);
  const d = weight.dense;
  const { pool } = gpu;
  const owned = new OwnedBuffers(pool);
  const up = (a: ArrayBufferView, label: string) => owned.upload(a, 0, label);
  const base = { rows: d.rows, cols: d.cols, format: d.kind, bytes: sizeOf(weight).storedBytes };
  let lin: Omit<GpuLinear, "sparse" | "release">;
  if (d.kind === "f32" || d.kind === "f16") {
    lin = {
      ...base,
      bits: 0,
      groups: "none",
      groupSize: 0,
      nGroups: 0,
      wpr: 0,
      rowBytes: d.cols * (d.kind === "f32" ? 4 : 2),
      w: up(d.data, d.kind),
    };
  } else {
    const wpr = wordsPerRow(d.cols, d.bits);
    const common = { ...base, bits: d.bits, wpr, rowBytes: wpr * 4, w: up(d.codes, "codes") };
    if (d.kind === "lut") {
      lin = { ...common, groups: "none", groupSize: 0, nGroups: 0, lut: up(d.lut, "lut") };
    } else {
      const ng = nGroups(d);
      const groups: GroupMode = !d.gIdx && (ng === 1 || d.groupSize % 32 === 0)
        ? "block"
        : "column";
      // Column mode reads a group table: gIdx as stored, or ⌊c / groupSize⌋ derived here.
      const table = groups === "block"
        ? undefined
        : d.gIdx ?? Int32Array.from({ length: d.cols }, (_, c) => Math.floor(c / d.groupSize));
      lin = {
        ...common,
        groups,
        // One group per row is groupSize ≥ cols (quant/format.ts): every column maps to group 0.
        groupSize: d.groupSize,
        nGroups: ng,
        scales: up(d.scales, "scales"),
        zeros: up(d.zeros, "zeros"),
        gIdx: table ? up(table, "gIdx") : undefined,
      };
    }
  }
  const s = weight.sparse;
  const sparse = s
    ? {
      rowPtr: up(s.rowPtr, "rowPtr"),
      colIdx: up(s.colIdx, "colIdx"),
      values: up(s.values, "values"),
      nnz: s.rowPtr[s.rows],
      dtype: s.dtype,
    }
    : undefined;
  return {
    ...lin,
    sparse,
    release: owned.releaser("GpuLinear"),
  };
}

/** Rows r0 .. r0+nr of a dense weight, bound as bytes [start, end) of its buffer. */
export interface RowWindow {
  r0: number;
  nr: number;
  start: number;
  end: number;
}

/**
 * Splits `lin`'s dense part into row windows, each within the binding limit
 * (the device's maxStorageBufferBindingSize, or `maxBindingBytes` if smaller),
 * starting at offsets aligned to minStorageBufferOffsetAlignment.
 *
 * @param gpu the device
 * @param lin the uploaded weight
 * @param maxBindingBytes a lower binding limit (tests use one to force several windows)
 * @param caller the function named in the error
 * @returns the binding limit in force and the windows, in row order
 * @throws RangeError when one row exceeds the binding limit
 * @example
 * ```ts
 * const { windows } = rowWindows(gpu, lin, undefined, "createMatvecPlan()");
 * ```
 */
export function rowWindows(
  gpu: Gpu,
  lin: GpuLinear,
  maxBindingBytes: number | undefined,
  caller: string,
): { maxBind: number; windows: RowWindow[] } {
  const { device } = gpu;
  const maxBind = Math.min(maxBindingBytes ?? Infinity, device.limits.maxStorageBufferBindingSize);
  const align = device.limits.minStorageBufferOffsetAlignment;
  const total = lin.w.size, rows = lin.rows;
  const rowsPerWindow = total <= maxBind ? rows : Math.floor((maxBind - align - 4) / lin.rowBytes);
  if (rowsPerWindow < 1) {
    throw new RangeError(
      `${caller}: one row of ${lin.rowBytes} bytes exceeds the binding limit ${maxBind}`,
    );
  }
  const windows: RowWindow[] = [];
  for (let r0 = 0; r0 < rows; r0 += rowsPerWindow) {
    const nr = Math.min(rowsPerWindow, rows - r0);
    const start = total <= maxBind ? 0 : Math.floor((r0 * lin.rowBytes) / align) * align;
    const end = total <= maxBind
      ? total
      : Math.min(total, Math.ceil(((r0 + nr) * lin.rowBytes) / 4) * 4);
    windows.push({ r0, nr, start, end });
  }
  return { maxBind, windows };
}

/**
 * The weight's bind-group entries shared by the matvec and matmul kernels:
 * binding 3 the dense window, 4–6 its format's side buffers (scales, zeros,
 * column group index; or the LUT), 7–9 the fused sparse part's CSR arrays.
 *
 * @param lin the uploaded weight
 * @param win the row window bound at binding 3
 * @param sparse the fused sparse part, or undefined
 * @param dummy the buffer bound to 7–9 when `sparse` is undefined
 * @returns entries for bindings 3–9 (those the format uses)
 * @example
 * ```ts
 * const entries = [...head, ...weightEntries(lin, windows[0], lin.sparse, undefined)];
 * ```
 */
export function weightEntries(
  lin: GpuLinear,
  win: RowWindow,
  sparse: GpuLinear["sparse"],
  dummy: GPUBuffer | undefined,
): GPUBindGroupEntry[] {
  const entries: GPUBindGroupEntry[] = [
    { binding: 3, resource: { buffer: lin.w, offset: win.start, size: win.end - win.start } },
  ];
  if (lin.format === "uniform") {
    entries.push({ binding: 4, resource: { buffer: lin.scales! } });
    entries.push({ binding: 5, resource: { buffer: lin.zeros! } });
    if (lin.groups === "column") entries.push({ binding: 6, resource: { buffer: lin.gIdx! } });
  }
  if (lin.format === "lut") entries.push({ binding: 4, resource: { buffer: lin.lut! } });
  entries.push({ binding: 7, resource: { buffer: sparse?.rowPtr ?? dummy! } });
  entries.push({ binding: 8, resource: { buffer: sparse?.colIdx ?? dummy! } });
  entries.push({ binding: 9, resource: { buffer: sparse?.values ?? dummy! } });
  return entries;
}

/**
 * Runs a freshly made one-shot plan: writes X, encodes one pass, submits,
 * reads `outFloats` floats of Y back, then releases the plan and the weight.
 *
 * @param gpu the device
 * @param lin the uploaded weight (released here)
 * @param plan the plan over `lin` (released here)
 * @param x activations to write to `plan.x`
 * @param outFloats how many floats of `plan.y` to read
 * @returns Y
 * @example
 * ```ts
 * const y = await runOnce(gpu, lin, await createMatvecPlan(gpu, lin, { batch: 1 }), x, lin.rows);
 * ```
 */
export async function runOnce(
  gpu: Gpu,
  lin: GpuLinear,
  plan: Pick<MatvecPlan, "x" | "y" | "encode" | "release">,
  x: Float32Array,
  outFloats: number,
): Promise<Float32Array> {
  try {
    gpu.device.queue.writeBuffer(plan.x, 0, x as Float32Array<ArrayBuffer>);
    const enc = gpu.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    plan.encode(pass);
    pass.end();
    gpu.device.queue.submit([enc.finish()]);
    return new Float32Array(await readBuffer(gpu, plan.y, outFloats * 4));
  } finally {
    plan.release();
    lin.release();
  }
}

/** Options of {@linkcode createMatvecPlan}. */
export interface MatvecPlanOptions {
  /** Activation rows (1..8). */
  batch: number;
  /** x [batch, cols] (STORAGE); created by the plan when absent. */
  x?: GPUBuffer;
  /** y [batch, rows] (STORAGE); created by the plan when absent. */
  y?: GPUBuffer;
  /** How the sparse part runs. @default "fused" */
  sparseMode?: "fused" | "separate";
  /** Output rows per workgroup (at most 32). @default 16 */
  rowsPerWg?: number;
  /** Threads per output row. @default 4 */
  threadsPerRow?: number;
  /** Nonzeros per thread in the separate sparse pass. @default 10 */
  sparseChunk?: number;
  /** Per-dimension workgroup cap (tests use a small one to force 2-D grids). */
  maxWorkgroupsPerDim?: number;
  /** Largest weight window per binding (tests use a small one to force several windows). */
  maxBindingBytes?: number;
}

/** A dense kernel (and sparse passes) bound to buffers, ready to encode any number of times. */
export interface MatvecPlan {
  readonly batch: number;
  readonly linear: GpuLinear;
  /** Activations [batch, cols] (write with queue.writeBuffer). */
  readonly x: GPUBuffer;
  /** Output [batch, rows] (COPY_SRC, for readback). */
  readonly y: GPUBuffer;
  /** Number of dispatches one run takes. */
  readonly dispatchCount: number;
  /** Bytes one run must move at least: every weight part + x + y. */
  readonly bytesMoved: number;
  /** Records the run's dispatches into a compute pass. */
  encode(pass: GPUComputePassEncoder): void;
  /** Returns the plan's own buffers (params, scratch, x / y it created) to the pool. */
  release(): void;
}

interface Dispatch {
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  x: number;
  y: number;
}

/**
 * Binds `lin` to activation / output buffers for a batch size: compiles (or
 * reuses) the pipelines, writes the uniform parameters, and splits the dense
 * part into windows no larger than maxStorageBufferBindingSize.
 *
 * @param gpu the device
 * @param lin the uploaded weight
 * @param opts batch size, buffers and tiling; see {@linkcode MatvecPlanOptions}
 * @returns the plan; release it before releasing `lin`
 */
export async function createMatvecPlan(
  gpu: Gpu,
  lin: GpuLinear,
  opts: MatvecPlanOptions,
): Promise<MatvecPlan> {
  const { device, pool } = gpu;
  const B = opts.batch;
  if (!(Number.isInteger(B) && B >= 1 && B <= MAX_BATCH)) {
    throw new RangeError(
      `createMatvecPlan(): batch must be an integer in 1..${MAX_BATCH}, got ${B}`,
    );
  }
  const ROWS = opts.rowsPerWg ?? 16, TPR = opts.threadsPerRow ?? 4;
  if (!(ROWS >= 1 && TPR >= 1 && Number.isInteger(ROWS) && Number.isInteger(TPR))) {
    throw new RangeError(
      `createMatvecPlan(): rowsPerWg and threadsPerRow must be positive integers`,
    );
  }
  const WG = ROWS * TPR;
  // The reduction reuses the x tile: WG·B partial sums must fit in its B·TILE floats.
  if (WG > device.limits.maxComputeInvocationsPerWorkgroup || ROWS > 32) {
    throw new RangeError(
      `createMatvecPlan(): a workgroup of ${ROWS} rows × ${TPR} threads must have at most ` +
        `${device.limits.maxComputeInvocationsPerWorkgroup} threads and at most 32 rows`,
    );
  }
  const sparseMode = opts.sparseMode ?? "fused";
  const { rows, cols } = lin;
  const owned = new OwnedBuffers(pool);
  const own = (size: number, usage: GPUBufferUsageFlags, label: string) =>
    owned.acquire(size, usage, label);
  const x = opts.x ?? own(B * cols * 4, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, "x");
  const y = opts.y ??
    own(
      B * rows * 4,
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      "y",
    );
  const fused = lin.sparse && sparseMode === "fused" ? lin.sparse : undefined;
  const params: MatvecParams = {
    format: lin.format,
    bits: lin.bits,
    batch: B,
    rowsPerWg: ROWS,
    threadsPerRow: TPR,
    groups: lin.groups,
    aligned: lin.format === "f32" ? cols % 4 === 0 : lin.format === "f16" ? cols % 2 === 0 : false,
    xAligned: cols % 4 === 0,
  };
  const shared = 4 *
    (B * TPR * 32 + (lin.format === "lut" && lin.bits > LUT_REG_BITS ? ROWS << lin.bits : 0) +
      (lin.groups === "column" ? TPR * 32 : 0));
  if (shared > device.limits.maxComputeWorkgroupStorageSize) {
    throw new RangeError(
      `createMatvecPlan(): ${ROWS} rows × ${TPR} threads at batch ${B} need ${shared} bytes of ` +
        `workgroup memory, device allows ${device.limits.maxComputeWorkgroupStorageSize}`,
    );
  }
  const pipeline = await gpu.pipelines.get(MATVEC_KERNEL, params);
  const dispatches: Dispatch[] = [];
  const uniformUsage = GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST;

  // Row windows of the dense part, each within maxStorageBufferBindingSize.
  const { windows } = rowWindows(gpu, lin, opts.maxBindingBytes, "createMatvecPlan()");
  let dummy: GPUBuffer | undefined; // bound to the sparse slots when no part is fused
  for (const win of windows) {
    const { r0, nr, start } = win;
    const grid = dispatchSize(Math.ceil(nr / ROWS), device.limits, opts.maxWorkgroupsPerDim);
    const u = own(48, uniformUsage, "matvec-params");
    device.queue.writeBuffer(
      u,
      0,
      new Uint32Array([
        rows,
        cols,
        lin.wpr,
        start / 4,
        r0,
        nr,
        grid.nx,
        lin.groupSize > 0 ? lin.groupSize : 1,
        lin.nGroups,
        fused ? 1 : 0,
        fused?.dtype === "f32" ? 1 : 0,
        0,
      ]),
    );
    dummy ??= fused ? undefined : own(16, GPUBufferUsage.STORAGE, "no-sparse");
    const entries: GPUBindGroupEntry[] = [
      { binding: 0, resource: { buffer: u } },
      { binding: 1, resource: { buffer: x } },
      { binding: 2, resource: { buffer: y } },
      ...weightEntries(lin, win, fused, dummy),
    ];
    const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    if (grid.count > 0) dispatches.push({ pipeline, bindGroup, x: grid.x, y: grid.y });
  }

  if (lin.sparse && sparseMode === "separate" && lin.sparse.nnz > 0) {
    const s = lin.sparse;
    const chunk = opts.sparseChunk ?? 10;
    const nThreads = Math.ceil(s.nnz / chunk);
    const sp: SpmvParams = { batch: B };
    const rowRec = own(2 * nThreads * 4, GPUBufferUsage.STORAGE, "spmv-rec-rows");
    const valRec = own(2 * nThreads * B * 4, GPUBufferUsage.STORAGE, "spmv-rec-vals");
    const passes = [
      [SPMV_CHUNK_KERNEL, nThreads, [0, 1, 2, 3, 4, 5, 6, 7]],
      [SPMV_REDUCE_KERNEL, rows, [0, 2, 3, 6, 7]], // reads no x, colIdx or values
    ] as const;
    for (const [kernel, threads, used] of passes) {
      const pipe = await gpu.pipelines.get(kernel, sp);
      const grid = dispatchSize(
        Math.ceil(threads / SPMV_WG),
        device.limits,
        opts.maxWorkgroupsPerDim,
      );
      const u = own(32, uniformUsage, `${kernel.name}-params`);
      device.queue.writeBuffer(
        u,
        0,
        new Uint32Array([
          rows,
          cols,
          s.nnz,
          chunk,
          nThreads,
          grid.nx,
          s.dtype === "f32" ? 1 : 0,
          0,
        ]),
      );
      const all = [u, x, y, s.rowPtr, s.colIdx, s.values, rowRec, valRec];
      const bindGroup = device.createBindGroup({
        layout: pipe.getBindGroupLayout(0),
        entries: used.map((binding) => ({ binding, resource: { buffer: all[binding] } })),
      });
      dispatches.push({ pipeline: pipe, bindGroup, x: grid.x, y: grid.y });
    }
  }

  return {
    batch: B,
    linear: lin,
    x,
    y,
    dispatchCount: dispatches.length,
    bytesMoved: lin.bytes.total + 4 * B * (rows + cols),
    encode(pass) {
      for (const d of dispatches) {
        pass.setPipeline(d.pipeline);
        pass.setBindGroup(0, d.bindGroup);
        pass.dispatchWorkgroups(d.x, d.y);
      }
    },
    release: owned.releaser("MatvecPlan"),
  };
}

/**
 * One-shot y = W · xᵀ on the GPU: uploads the weight and x, runs, reads y
 * back and releases everything. For repeated runs use
 * {@linkcode uploadLinear} + {@linkcode createMatvecPlan}.
 *
 * @param gpu the device
 * @param weight the weight
 * @param x activations [batch, cols]
 * @param batch activation rows (1..8)
 * @param opts plan options (sparse mode, tiling)
 * @returns y [batch, rows]
 * @example
 * ```ts
 * const gpu = await getGpu();
 * const w = { dense: { kind: "f32", rows: 2, cols: 2, data: new Float32Array([1, 2, 3, 4]) } } as const;
 * await matvecGpu(gpu, w, new Float32Array([1, 1]), 1); // Float32Array [3, 7]
 * ```
 */
export async function matvecGpu(
  gpu: Gpu,
  weight: LinearWeight,
  x: Float32Array,
  batch: number,
  opts: Omit<MatvecPlanOptions, "batch" | "x" | "y"> = {},
): Promise<Float32Array> {
  const { rows, cols } = weight.dense;
  if (x.length !== batch * cols) {
    throw new RangeError(
      `matvecGpu(): x must hold batch×cols = ${batch}×${cols} values, found ${x.length}`,
    );
  }
  const lin = uploadLinear(gpu, weight);
  const plan = await createMatvecPlan(gpu, lin, { ...opts, batch });
  return await runOnce(gpu, lin, plan, x, batch * rows);
}

/** Rows and the sparse part of a CSR matrix as a one-line summary (for errors and tables). */
export function describeSparse(s: CsrMatrix | undefined): string {
  return s ? `csr ${s.rows}×${s.cols} nnz=${s.rowPtr[s.rows]} ${s.dtype}` : "none";
}
