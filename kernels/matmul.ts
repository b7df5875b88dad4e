/**
 * WGSL matrix-matrix kernels for a whole window of tokens at once (prefill):
 * Y[T, rows] = X[T, cols] · Wᵀ (+ X · Sᵀ for a CSR sparse part), for every
 * storage format of quant/format.ts (f32, f16, uniform b-bit with groups and
 * act-order gIdx, lut b-bit, b = 2..8), W [rows = out, cols = in] uploaded
 * as-is by kernels/matvec.ts's `uploadLinear`.
 *
 * ## Tiling ({@linkcode MATMUL_KERNEL})
 *
 * One workgroup of 64 threads (an 8 × 8 grid) computes a tile of TM = 64
 * tokens × TN = 64 output rows; thread (tx, ty) owns tokens ty + 8i (i < 8)
 * and rows tx + 8j (j < 8), 64 accumulators in sixteen vec4 registers, so
 * each staged value a thread loads serves eight dot products (loads, not
 * arithmetic, bound a software adapter such as llvmpipe; on a GPU the
 * larger register tile halves the workgroup-memory traffic per
 * multiply-add). The columns are walked in chunks of KC = 32 (one 32-code
 * block of a packed row, b whole words):
 *
 * 1. the workgroup stages X[tile tokens, chunk] in workgroup memory as vec4s
 *    (zero past the last token or column; one vec4 load when cols % 4 = 0);
 * 2. every thread decodes W[tile rows, chunk] to fp32 into workgroup memory,
 *    one row's 32-code block each — every weight is decoded once per tile
 *    of 64 tokens, not once per token. A block of 32 b-bit codes is exactly b
 *    whole words of the row's bitstream, read at once and split with shifts
 *    that are WGSL constants (bits is baked into the source), as in
 *    kernels/matvec.ts; `uniform` w = s·(q − z) with s, z read once per
 *    block when the block lies in one group (GroupMode "block"), else per
 *    code from the act-order / derived group table ("column"); `lut`
 *    w = lut[row][q]; f16 is read natively as `array<f16>` when the device
 *    is a GPU with `shader-f16`, else with `unpack2x16float` (the same
 *    values either way; {@linkcode defaultNativeF16}). A partial last chunk
 *    (cols not a multiple of 32) takes a per-code path with bounds checks;
 * 3. every thread dots its eight token vec4s with its eight row vec4s, KC / 4
 *    times per chunk (fp32 accumulation);
 * 4. the CSR sparse part (compiled into every variant, switched by a uniform
 *    flag) adds each owned row's nonzeros times the owned tokens' inputs,
 *    read from global memory, before the single write of Y.
 *
 * ## Register tiling (software adapters: {@linkcode defaultTiling})
 *
 * llvmpipe runs eight invocations in the lanes of a SIMD register and every
 * storage or workgroup load lane by lane (a loop with a branch per lane and
 * component), while arithmetic is one instruction for all eight: a load
 * costs tens of multiply-adds, and workgroup memory is no cheaper than a
 * storage buffer. So the "registers" tiling drops workgroup memory and
 * barriers: each thread owns {@linkcode REG_TOKENS} tokens ×
 * {@linkcode REG_ROWS} rows, reads its tokens' X as vec4s once per chunk
 * and decodes each of its rows' 32-code blocks itself, straight from the
 * packed words into registers — a uniform 4-bit word is 8 weights for one
 * load, where the staged tile cost one load per weight per thread. A lut
 * row's 2^b entries (b ≤ 4) are loaded once per chunk and a code's value is
 * picked by a select tree on its bits (arithmetic, not a load per code).
 * The sums run in the same order as the shared tiling's (bit-identical
 * results). Codes wider than 4 bits and per-code group tables stay on the
 * shared tiling (their unrolled source takes llvmpipe minutes to compile). On llvmpipe, 1024 × 1024 at T = 256: 1.7× (f16) to 3× (uniform
 * 4-bit, lut 3-bit) the shared tiling's speed; 8 × 16 per thread beat 4 × 16,
 * 8 × 8 and 16 × 8.
 *
 * Device limits: a dense part larger than maxStorageBufferBindingSize is
 * bound as several row windows (as kernels/matvec.ts does), and X / Y larger
 * than it as several token windows (multiples of 64 tokens, so binding
 * offsets stay 256-byte aligned): one dispatch per (row window, token
 * window). Workgroup ids are linearized through `dispatchSize`.
 *
 * The uniform parameters of every kernel here and in kernels/prefill.ts are
 * declared once as a field list ({@linkcode UniformLayout}), from which both
 * the WGSL struct and the host-side packing are generated.
 *
 * @module
 */
import type { LinearWeight } from "../quant/format.ts";
import type { Gpu, Kernel } from "./device.ts";
import { dispatchSize, isSoftwareInfo, OwnedBuffers } from "./device.ts";
import type { GpuLinear, GroupMode } from "./matvec.ts";
import { rowWindows, runOnce, uploadLinear, weightEntries } from "./matvec.ts";

/**
 * A uniform struct declared once: the WGSL `struct` and the host bytes are
 * both generated from the same ordered field list, so they cannot drift.
 *
 * @example
 * ```ts
 * const L = new UniformLayout("Params", { n: "u32", eps: "f32" });
 * L.wgsl(); // "struct Params { n: u32, eps: f32, _p0: u32, _p1: u32 }"
 * L.pack({ n: 3, eps: 1e-5 }); // 16 bytes
 * ```
 */
export class UniformLayout<F extends string> {
  readonly names: readonly F[];
  /** Bytes of the struct (a multiple of 16). */
  readonly size: number;

  /**
   * @param struct the WGSL struct name
   * @param fields field name → scalar type, in declaration order
   */
  constructor(readonly struct: string, readonly fields: Record<F, "u32" | "f32">) {
    this.names = Object.keys(fields) as F[];
    this.size = Math.max(16, Math.ceil(this.names.length / 4) * 16);
  }

  /** The WGSL declaration, padded to a multiple of 16 bytes. */
  wgsl(): string {
    const decl = this.names.map((n) => `${n}: ${this.fields[n]}`);
    for (let i = this.names.length; i < this.size / 4; i++) {
      decl.push(`_p${i - this.names.length}: u32`);
    }
    return `struct ${this.struct} { ${decl.join(", ")} }`;
  }

  /**
   * The struct's bytes.
   * @param values every field's value (missing fields are an error)
   */
  pack(values: Record<F, number>): ArrayBuffer {
    const buf = new ArrayBuffer(this.size);
    const u = new Uint32Array(buf), f = new Float32Array(buf);
    this.names.forEach((n, i) => {
      const v = values[n];
      if (typeof v !== "number" || Number.isNaN(v)) {
        throw new RangeError(`${this.struct}.${n}: expected a number, got ${v}`);
      }
      if (this.fields[n] === "f32") f[i] = v;
      else u[i] = v >>> 0;
    });
    return buf;
  }
}

/** Tokens per workgroup tile. */
export const MATMUL_TM = 64;
/** Output rows per workgroup tile. */
export const MATMUL_TN = 64;
/** Columns per chunk (one 32-code block). */
const KC = 32;
const MATMUL_WG = 64;

/** Everything that changes the matmul kernel's WGSL source. */
export interface MatmulParams {
  format: GpuLinear["format"];
  /** Code width for uniform / lut; 0 for f32 / f16. */
  bits: number;
  /** "column": the group of a column comes from the group table. */
  groups: GroupMode;
  /** f16 weights read as `array<f16>` (device feature `shader-f16`). */
  nativeF16: boolean;
  /** cols % 4 == 0: X (and f32 weights) read as vec4; f16 rows start on whole words. */
  aligned: boolean;
  /** "shared": workgroup tiles staged in workgroup memory; "registers": per-thread tiles ({@linkcode MatmulTiling}). */
  tiling: MatmulTiling;
}

/**
 * How a matmul is tiled (module doc): "shared" stages X and the decoded
 * weight tile in workgroup memory (a GPU's way); "registers" has every
 * thread decode its own rows straight from the packed words into registers
 * and read its tokens' X directly, with no workgroup memory and no barriers
 * (a software adapter's way: llvmpipe runs every load lane by lane, so a
 * packed word that yields 32 / bits weights beats a staged fp32 weight).
 */
export type MatmulTiling = "shared" | "registers";

/** Tokens per thread of the "registers" tiling. */
export const REG_TOKENS = 8;
/** Rows per thread of the "registers" tiling. */
export const REG_ROWS = 16;

const MATMUL_PARAMS = new UniformLayout("Params", {
  T: "u32", // tokens of this token window
  rows: "u32", // rows of the whole weight (Y's row stride)
  cols: "u32",
  wpr: "u32",
  wBase: "u32", // first word of the bound weight window
  rowBase: "u32", // first row of this row window
  chunkRows: "u32", // rows of this row window
  nx: "u32", // workgroups per grid row (linearization)
  tilesN: "u32", // row tiles of this window
  groupSize: "u32",
  nGroups: "u32",
  sparse: "u32",
  sparseF32: "u32",
});

/** The tiled matmul kernel (module doc, "Tiling"). */
export const MATMUL_KERNEL: Kernel<MatmulParams> = {
  name: "matmul",
  key: (p) => [p.format, p.bits, p.groups, p.nativeF16, p.aligned, p.tiling].join(","),
  wgsl: matmulWgsl,
};

function matmulWgsl(p: MatmulParams): string {
  const { format, bits } = p;
  const native = format === "f16" && p.nativeF16;
  const L: string[] = [];
  if (native) L.push("enable f16;");
  L.push(`// ${MATMUL_KERNEL.name}: ${MATMUL_KERNEL.key(p)}`);
  L.push(
    `const TM = ${MATMUL_TM}u;`,
    `const TN = ${MATMUL_TN}u;`,
    `const KC = ${KC}u;`,
    `const K4 = ${KC / 4}u;`,
    `const WG = ${MATMUL_WG}u;`,
  );
  if (bits) L.push(`const BITS = ${bits}u;`, `const MASK = ${(1 << bits) - 1}u;`);
  L.push(MATMUL_PARAMS.wgsl());
  const A = p.aligned;
  L.push(`@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<${A ? "vec4<f32>" : "f32"}>; // [T, cols]
@group(0) @binding(2) var<storage, read_write> Y: array<f32>; // [T, rows]`);
  L.push(
    A
      ? `fn xAt(i: u32) -> f32 { return X[i >> 2u][i & 3u]; }`
      : `fn xAt(i: u32) -> f32 { return X[i]; }`,
  );
  const f32v4 = format === "f32" && A;
  const wType = format === "f32" ? (f32v4 ? "vec4<f32>" : "f32") : native ? "f16" : "u32";
  L.push(
    `@group(0) @binding(3) var<storage, read> W: array<${wType}>; // row window of the dense part`,
  );
  const half = (name: string, buf: string) =>
    `fn ${name}(i: u32) -> f32 { return unpack2x16float(${buf}[i >> 1u])[i & 1u]; }`;
  // weightAt(row, c): one weight (partial last chunk); FAST: the 32 weights of the chunk as
  // ws[tid · K4 + j] = vec4 (the chunk lies inside the row; c0 is a multiple of 32).
  let weight: string;
  const fast: string[] = [];
  const put = (j: number, v: string) =>
    fast.push(p.tiling === "shared" ? `ws[tid * K4 + ${j}u] = ${v};` : `let wv${j} = ${v};`);
  if (format === "f32") {
    weight = f32v4
      ? `let i = row * P.cols + c - P.wBase; return W[i >> 2u][i & 3u];`
      : `return W[row * P.cols + c - P.wBase];`;
    if (f32v4) {
      fast.push(`let w4 = (row * P.cols + c0 - P.wBase) >> 2u;`);
      for (let j = 0; j < 8; j++) put(j, `W[w4 + ${j}u]`);
    } else {
      fast.push(`let w1 = row * P.cols + c0 - P.wBase;`);
      for (let j = 0; j < 8; j++) {
        put(j, `vec4<f32>(${[0, 1, 2, 3].map((k) => `W[w1 + ${4 * j + k}u]`).join(", ")})`);
      }
    }
  } else if (format === "f16") {
    const i = `row * P.cols + c - 2u * P.wBase`;
    weight = native
      ? `return f32(W[${i}]);`
      : `return unpack2x16float(W[(${i}) >> 1u])[(${i}) & 1u];`;
    fast.push(`let h0 = row * P.cols + c0 - 2u * P.wBase;`);
    for (let j = 0; j < 8; j++) {
      if (native) {
        put(j, `vec4<f32>(${[0, 1, 2, 3].map((k) => `f32(W[h0 + ${4 * j + k}u])`).join(", ")})`);
      } else if (A) {
        put(
          j,
          `vec4<f32>(unpack2x16float(W[(h0 >> 1u) + ${2 * j}u]), unpack2x16float(W[(h0 >> 1u) + ${
            2 * j + 1
          }u]))`,
        );
      } else {
        const h = (k: number) =>
          `unpack2x16float(W[(h0 + ${4 * j + k}u) >> 1u])[(h0 + ${4 * j + k}u) & 1u]`;
        put(j, `vec4<f32>(${[0, 1, 2, 3].map(h).join(", ")})`);
      }
    }
  } else {
    L.push(`fn code(row: u32, c: u32) -> u32 {
  let bit = c * BITS;
  let wi = row * P.wpr + (bit >> 5u) - P.wBase;
  let s = bit & 31u;
  var v = W[wi] >> s;
  if (s + BITS > 32u) { v = v | (W[wi + 1u] << (32u - s)); }
  return v & MASK;
}`);
    // A 32-code block is exactly BITS whole words; code i from constant shifts.
    fast.push(`let wi = row * P.wpr + (c0 >> 5u) * BITS - P.wBase;`);
    for (let k = 0; k < bits; k++) fast.push(`let w${k} = W[wi + ${k}u];`);
    const code = (i: number) => {
      const bit = i * bits, w = bit >> 5, sh = bit & 31;
      const lo = sh ? `(w${w} >> ${sh}u)` : `w${w}`;
      if (sh + bits > 32) return `((${lo} | (w${w + 1} << ${32 - sh}u)) & MASK)`;
      return `(${lo} & MASK)`;
    };
    const q4 = (j: number) => [0, 1, 2, 3].map((k) => code(4 * j + k));
    if (format === "lut") {
      L.push(`@group(0) @binding(4) var<storage, read> LT: array<u32>; // fp16 [rows, 2^BITS]`);
      L.push(half("lutAt", "LT"));
      weight = `return lutAt((row << BITS) + code(row, c));`;
      fast.push(`let lb = row << BITS;`);
      if (p.tiling === "registers" && bits <= 4) {
        // the row's 2^BITS entries in registers, a code's value by a select tree on its bits
        const n = 1 << bits;
        for (let v = 0; v < n; v += 2) {
          fast.push(`let lp${v} = unpack2x16float(LT[(lb >> 1u) + ${v / 2}u]);`);
        }
        const tree = (q: string) => {
          let level = Array.from({ length: n }, (_, v) => `lp${v & ~1}[${v & 1}]`);
          for (let b = 0; level.length > 1; b++) {
            const bit = `(((${q}) & ${1 << b}u) != 0u)`;
            level = Array.from(
              { length: level.length / 2 },
              (_, m) => `select(${level[2 * m]}, ${level[2 * m + 1]}, ${bit})`,
            );
          }
          return level[0];
        };
        for (let j = 0; j < 8; j++) {
          fast.push(`let q${j} = vec4<u32>(${q4(j).join(", ")});`);
          put(j, `vec4<f32>(${[0, 1, 2, 3].map((k) => tree(`q${j}[${k}]`)).join(", ")})`);
        }
      } else {
        for (let j = 0; j < 8; j++) {
          put(j, `vec4<f32>(${q4(j).map((q) => `lutAt(lb + ${q})`).join(", ")})`);
        }
      }
    } else {
      L.push(`@group(0) @binding(4) var<storage, read> S: array<u32>; // fp16 [rows, nGroups]
@group(0) @binding(5) var<storage, read> Z: array<u32>; // fp16 [rows, nGroups]`);
      L.push(half("scaleAt", "S"), half("zeroAt", "Z"));
      let g = `c / P.groupSize`;
      if (p.groups === "column") {
        L.push(
          `@group(0) @binding(6) var<storage, read> G: array<i32>; // [cols] group of each column`,
        );
        g = `u32(G[c])`;
        // per code: s, z of the column's group
        const w = (i: number, q: string) => `wq(row * P.nGroups + u32(G[c0 + ${i}u]), ${q})`;
        L.push(`fn wq(gi: u32, q: u32) -> f32 { return scaleAt(gi) * (f32(q) - zeroAt(gi)); }`);
        for (let j = 0; j < 8; j++) {
          put(j, `vec4<f32>(${q4(j).map((q, k) => w(4 * j + k, q)).join(", ")})`);
        }
      } else {
        // one group per block (group a multiple of 32, or one group per row)
        fast.push(`let gi = row * P.nGroups + c0 / P.groupSize;`);
        fast.push(`let s = scaleAt(gi);`, `let z = vec4<f32>(zeroAt(gi));`);
        for (let j = 0; j < 8; j++) {
          put(j, `s * (vec4<f32>(vec4<u32>(${q4(j).join(", ")})) - z)`);
        }
      }
      weight = `let gi = row * P.nGroups + ${g};
  return scaleAt(gi) * (f32(code(row, c)) - zeroAt(gi));`;
    }
  }
  L.push(`fn weightAt(row: u32, c: u32) -> f32 {
  if (c >= P.cols) { return 0.0; }
  ${weight}
}`);
  L.push(`@group(0) @binding(7) var<storage, read> RP: array<i32>; // [rows + 1]
@group(0) @binding(8) var<storage, read> CI: array<i32>; // [nnz]
@group(0) @binding(9) var<storage, read> V: array<u32>; // [nnz] fp32, or fp16 pairs
fn valAt(k: u32) -> f32 {
  if (P.sparseF32 != 0u) { return bitcast<f32>(V[k]); }
  return unpack2x16float(V[k >> 1u])[k & 1u];
}`);
  if (p.tiling === "registers") {
    L.push(registersMain(A, fast));
    return L.join("\n");
  }
  L.push(`var<workgroup> xs: array<vec4<f32>, ${(MATMUL_TM * KC) / 4}>; // [TM, KC / 4]
var<workgroup> ws: array<vec4<f32>, ${(MATMUL_TN * KC) / 4}>; // [TN, KC / 4]`);
  // Thread (tx, ty): tokens ty + 8i; accumulators acc{i}_{h}, a vec4 over its rows tx + 8j,
  // j = 4h .. 4h + 3.
  const J8 = [0, 1, 2, 3, 4, 5, 6, 7];
  const H2 = [0, 1];
  const unroll = (f: (i: number) => string, sep = "\n    ") => J8.map(f).join(sep);
  const IT = Array.from({ length: MATMUL_TM / 8 }, (_, i) => i); // tokens of a thread
  const unrollT = (f: (i: number) => string, sep = "\n    ") => IT.map(f).join(sep);
  L.push(`@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let id = wid.y * P.nx + wid.x;
  let tilesM = (P.T + TM - 1u) / TM;
  if (id >= P.tilesN * tilesM) { return; }
  let r0 = (id % P.tilesN) * TN; // first row of the tile, within the window
  let t0 = (id / P.tilesN) * TM; // first token of the tile
  let tx = tid % 8u;
  let ty = tid / 8u;
  ${unrollT((i) => H2.map((h) => `var acc${i}_${h} = vec4<f32>();`).join(" "), "\n  ")}
  for (var c0 = 0u; c0 < P.cols; c0 += KC) {
    workgroupBarrier();
    for (var i = tid; i < TM * K4; i += WG) {
      let t = t0 + i / K4;
      let c = c0 + 4u * (i % K4);
      var v = vec4<f32>();
      if (t < P.T && c < P.cols) {
        let o = t * P.cols + c;
        ${
    A
      ? "v = X[o >> 2u];"
      : `v = vec4<f32>(${
        [0, 1, 2, 3].map((k) => k ? `select(0.0, xAt(o + ${k}u), c + ${k}u < P.cols)` : "xAt(o)")
          .join(", ")
      });`
  }
      }
      xs[i] = v;
    }
    { // thread tid decodes row r0 + tid of the chunk (TN = WG)
      let r = r0 + tid;
      if (r >= P.chunkRows) {
        for (var j = 0u; j < K4; j++) { ws[tid * K4 + j] = vec4<f32>(); }
      } else if (c0 + KC <= P.cols) {
        let row = P.rowBase + r;
        ${fast.join("\n        ")}
      } else {
        let row = P.rowBase + r;
        for (var j = 0u; j < K4; j++) {
          let c = c0 + 4u * j;
          ws[tid * K4 + j] = vec4<f32>(${
    [0, 1, 2, 3].map((k) => `weightAt(row, c + ${k}u)`).join(", ")
  });
        }
      }
    }
    workgroupBarrier();
    for (var k = 0u; k < K4; k++) {
      ${unroll((j) => `let b${j} = ws[(tx + ${8 * j}u) * K4 + k];`, "\n      ")}
      ${
    unrollT(
      (i) =>
        `{ let a = xs[(ty + ${8 * i}u) * K4 + k]; ${
          H2.map((h) =>
            `acc${i}_${h} += vec4<f32>(${
              [0, 1, 2, 3].map((j) => `dot(a, b${4 * h + j})`).join(", ")
            });`
          ).join(" ")
        } }`,
      "\n      ",
    )
  }
    }
  }
  if (P.sparse != 0u) {
    for (var j = 0u; j < 8u; j++) {
      let r = r0 + tx + 8u * j;
      if (r >= P.chunkRows) { continue; }
      let row = P.rowBase + r;
      ${unrollT((i) => `var add${i} = 0.0;`, "\n      ")}
      for (var k = u32(RP[row]); k < u32(RP[row + 1u]); k++) {
        let v = valAt(k);
        let c = u32(CI[k]);
        ${
    unrollT(
      (i) =>
        `if (t0 + ty + ${8 * i}u < P.T) { add${i} += v * xAt((t0 + ty + ${
          8 * i
        }u) * P.cols + c); }`,
      "\n        ",
    )
  }
      }
      ${
    unrollT(
      (i) => `if (j < 4u) { acc${i}_0[j] += add${i}; } else { acc${i}_1[j - 4u] += add${i}; }`,
      "\n      ",
    )
  }
    }
  }
  for (var j = 0u; j < 8u; j++) {
    let r = r0 + tx + 8u * j;
    if (r >= P.chunkRows) { continue; }
    let row = P.rowBase + r;
    ${
    unrollT((i) =>
      `if (t0 + ty + ${8 * i}u < P.T) { Y[(t0 + ty + ${
        8 * i
      }u) * P.rows + row] = select(acc${i}_1[j & 3u], acc${i}_0[j & 3u], j < 4u); }`
    )
  }
  }
}`);
  return L.join("\n");
}

/**
 * The "registers" tiling's entry point: thread g owns tokens t0 .. t0 + RT − 1
 * and rows r0 .. r0 + RR − 1 (RT = {@linkcode REG_TOKENS}, RR =
 * {@linkcode REG_ROWS}; rows vary fastest between threads), accumulators
 * acc{i}_{j} in registers. Per 32-column chunk it reads its tokens' X as
 * vec4s x{i}_{k}, then decodes each row's 32 weights (`fast`, as w0..w7)
 * and adds dot(x{i}_{k}, w{k}) in k order (the "shared" tiling's order);
 * a partial last chunk goes code by code. Out-of-range tokens and rows are
 * clamped for loads and skipped for stores.
 */
function registersMain(aligned: boolean, fast: string[]): string {
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  const I = range(REG_TOKENS), J = range(REG_ROWS), K = range(KC / 4);
  const xv = (i: number, c: string) =>
    aligned
      ? `X[(xo${i} + ${c}) >> 2u]`
      : `vec4<f32>(${[0, 1, 2, 3].map((q) => `xAt(xo${i} + ${c} + ${q}u)`).join(", ")})`;
  const xPart = (i: number) =>
    `vec4<f32>(${
      [0, 1, 2, 3].map((q) => `select(0.0, xAt(xo${i} + c + ${q}u), c + ${q}u < P.cols)`).join(", ")
    })`;
  const rowOf = (j: number) => `P.rowBase + min(r0 + ${j}u, P.chunkRows - 1u)`;
  return `const RT = ${REG_TOKENS}u;
const RR = ${REG_ROWS}u;
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let g = (wid.y * P.nx + wid.x) * WG + tid;
  let rowBlocks = (P.chunkRows + RR - 1u) / RR;
  if (g >= rowBlocks * ((P.T + RT - 1u) / RT)) { return; }
  let r0 = (g % rowBlocks) * RR; // first row, within the window
  let t0 = (g / rowBlocks) * RT; // first token
  ${I.map((i) => `let xo${i} = min(t0 + ${i}u, P.T - 1u) * P.cols;`).join("\n  ")}
  ${I.map((i) => J.map((j) => `var acc${i}_${j} = 0.0;`).join(" ")).join("\n  ")}
  var c0 = 0u;
  for (; c0 + KC <= P.cols; c0 += KC) {
    ${
    I.map((i) => K.map((k) => `let x${i}_${k} = ${xv(i, `c0 + ${4 * k}u`)};`).join(" ")).join(
      "\n    ",
    )
  }
    ${
    J.map((j) =>
      `{
      let row = ${rowOf(j)};
      ${fast.join("\n      ")}
      ${
        I.map((i) => K.map((k) => `acc${i}_${j} += dot(x${i}_${k}, wv${k});`).join(" ")).join(
          "\n      ",
        )
      }
    }`
    ).join("\n    ")
  }
  }
  if (c0 < P.cols) { // partial last chunk, code by code (weightAt and X are zero past cols)
    for (var k = 0u; k < K4; k++) {
      let c = c0 + 4u * k;
      ${I.map((i) => `let x${i} = ${xPart(i)};`).join("\n      ")}
      ${
    J.map((j) =>
      `{
        let row = ${rowOf(j)};
        let w = vec4<f32>(${[0, 1, 2, 3].map((q) => `weightAt(row, c + ${q}u)`).join(", ")});
        ${I.map((i) => `acc${i}_${j} += dot(x${i}, w);`).join(" ")}
      }`
    ).join("\n      ")
  }
    }
  }
  if (P.sparse != 0u) {
    ${
    J.map((j) =>
      `{
      let row = ${rowOf(j)};
      ${I.map((i) => `var add${i} = 0.0;`).join(" ")}
      for (var k = u32(RP[row]); k < u32(RP[row + 1u]); k++) {
        let v = valAt(k);
        let c = u32(CI[k]);
        ${I.map((i) => `add${i} += v * xAt(xo${i} + c);`).join(" ")}
      }
      ${I.map((i) => `acc${i}_${j} += add${i};`).join(" ")}
    }`
    ).join("\n    ")
  }
  }
  ${
    J.map((j) =>
      `if (r0 + ${j}u < P.chunkRows) {
    ${
        I.map((i) =>
          `if (t0 + ${i}u < P.T) { Y[(t0 + ${i}u) * P.rows + P.rowBase + r0 + ${j}u] = acc${i}_${j}; }`
        ).join("\n    ")
      }
  }`
    ).join("\n  ")
  }
}`;
}

/** Options of {@linkcode createMatmulPlan}. */
export interface MatmulPlanOptions {
  /** Tokens T of the window. */
  tokens: number;
  /** X [≥ xOffsetTokens + T, cols] (STORAGE); created by the plan when absent. */
  x?: GPUBuffer;
  /** First token of X read by this plan (a multiple of 64). @default 0 */
  xOffsetTokens?: number;
  /** Y [T, rows] (STORAGE); created by the plan when absent. */
  y?: GPUBuffer;
  /**
   * Read f16 weights as `array<f16>` (only where the device has shader-f16).
   * @default {@linkcode defaultNativeF16} of the device
   */
  nativeF16?: boolean;
  /** Largest binding (tests use a small one to force row and token windows). */
  maxBindingBytes?: number;
  /** Per-dimension workgroup cap (tests use a small one to force 2-D grids). */
  maxWorkgroupsPerDim?: number;
  /** The tiling (where the weight's format allows it). @default {@linkcode defaultTiling} of the device */
  tiling?: MatmulTiling;
}

/** True on a software adapter (llvmpipe, SwiftShader, or one the browser calls a fallback). */
export function isSoftwareAdapter(gpu: Gpu): boolean {
  return isSoftwareInfo(gpu.info);
}

/**
 * The tiling a device runs fastest: "registers" on a software adapter
 * (llvmpipe: loads, not arithmetic, are its cost), "shared" on a GPU.
 * @param gpu the device
 */
export function defaultTiling(gpu: Gpu): MatmulTiling {
  return isSoftwareAdapter(gpu) ? "registers" : "shared";
}

/**
 * Whether f16 weights are read as `array<f16>` by default: on a GPU with
 * `shader-f16`, yes; on a software adapter, no, even where it offers the
 * feature: llvmpipe converts each f16 it loads lane by lane, and reading the
 * packed words with `unpack2x16float` (as kernels/matvec.ts always does)
 * ran 1.33–1.36× faster there (4096 × 4096 at T = 512: 5.1 s against
 * 6.8 s). Both reads give the same values, so the same outputs to the bit
 * (tested).
 * @param gpu the device
 */
export function defaultNativeF16(gpu: Gpu): boolean {
  return hasShaderF16(gpu) && !isSoftwareAdapter(gpu);
}

/**
 * The tiling a plan of `lin` uses: `asked` (else the device's default),
 * except that the "registers" tiling covers only f32, f16 and codes of at
 * most 4 bits with one group per 32-code block — its unrolled source
 * grows with the code width and the per-code group table, and llvmpipe's
 * compile time with it (minutes at 7 bits) — the rest use "shared".
 */
function planTiling(gpu: Gpu, lin: GpuLinear, asked: MatmulTiling | undefined): MatmulTiling {
  const tiling = asked ?? defaultTiling(gpu);
  const small = lin.bits === 0 ||
    (lin.bits <= 4 && (lin.format === "lut" || lin.groups === "block"));
  return tiling === "registers" && !small ? "shared" : tiling;
}

/** A matmul bound to buffers, ready to encode any number of times. */
export interface MatmulPlan {
  readonly tokens: number;
  readonly linear: GpuLinear;
  /** Activations [T, cols] (write with queue.writeBuffer). */
  readonly x: GPUBuffer;
  /** Output [T, rows] (COPY_SRC, for readback). */
  readonly y: GPUBuffer;
  /** Number of dispatches one run takes (row windows × token windows). */
  readonly dispatchCount: number;
  /** Multiply-adds of one run: T · rows · cols (+ T · nnz). */
  readonly macs: number;
  /** Records the run's dispatches into a compute pass. */
  encode(pass: GPUComputePassEncoder): void;
  /** Returns the plan's own buffers to the pool. */
  release(): void;
}

/** True when `gpu`'s device has the shader-f16 feature. */
export function hasShaderF16(gpu: Gpu): boolean {
  return gpu.device.features.has("shader-f16");
}

/**
 * Binds `lin` to activation / output buffers for T tokens: compiles (or
 * reuses) the pipeline, writes the uniform parameters, and splits the work
 * into row windows of the dense part and token windows of X / Y, each
 * within maxStorageBufferBindingSize.
 *
 * @param gpu the device
 * @param lin the uploaded weight (kernels/matvec.ts's `uploadLinear`)
 * @param opts tokens, buffers, limits; see {@linkcode MatmulPlanOptions}
 * @returns the plan; release it before releasing `lin`
 * @throws RangeError when one row or one 64-token slice exceeds the binding limit
 */
export async function createMatmulPlan(
  gpu: Gpu,
  lin: GpuLinear,
  opts: MatmulPlanOptions,
): Promise<MatmulPlan> {
  const { device, pool } = gpu;
  const T = opts.tokens;
  if (!(Number.isInteger(T) && T >= 1)) {
    throw new RangeError(`createMatmulPlan(): tokens must be a positive integer, got ${T}`);
  }
  const xOff = opts.xOffsetTokens ?? 0;
  if (xOff % 64 !== 0) {
    throw new RangeError(`createMatmulPlan(): xOffsetTokens must be a multiple of 64, got ${xOff}`);
  }
  const { rows, cols } = lin;
  const owned = new OwnedBuffers(pool);
  const own = (size: number, usage: GPUBufferUsageFlags, label: string) =>
    owned.acquire(size, usage, label);
  const STO = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const x = opts.x ?? own(4 * T * cols, STO, "matmul-x");
  const y = opts.y ?? own(4 * T * rows, STO, "matmul-y");
  const params: MatmulParams = {
    format: lin.format,
    bits: lin.bits,
    groups: lin.groups,
    nativeF16: lin.format === "f16" && (opts.nativeF16 ?? defaultNativeF16(gpu)) &&
      hasShaderF16(gpu),
    aligned: cols % 4 === 0,
    tiling: planTiling(gpu, lin, opts.tiling),
  };
  const pipeline = await gpu.pipelines.get(MATMUL_KERNEL, params);

  // Row windows of the dense part (as kernels/matvec.ts).
  const { maxBind, windows } = rowWindows(gpu, lin, opts.maxBindingBytes, "createMatmulPlan()");
  // Token windows of X and Y: multiples of 64 tokens keep offsets 256-byte aligned.
  const widest = 4 * Math.max(rows, cols);
  const tokensPerWindow = T * widest <= maxBind ? T : Math.floor(maxBind / widest / 64) * 64;
  if (tokensPerWindow < 1) {
    throw new RangeError(
      `createMatmulPlan(): 64 tokens of a ${rows}×${cols} matmul need ${64 * widest} bytes, ` +
        `above the binding limit ${maxBind}`,
    );
  }
  const sp = lin.sparse && lin.sparse.nnz > 0 ? lin.sparse : undefined;
  const dummy = sp ? undefined : own(16, GPUBufferUsage.STORAGE, "no-sparse");
  const dispatches: { bindGroup: GPUBindGroup; x: number; y: number }[] = [];
  for (const win of windows) {
    const { r0, nr, start } = win;
    for (let t0 = 0; t0 < T; t0 += tokensPerWindow) {
      const nt = Math.min(tokensPerWindow, T - t0);
      const tilesN = Math.ceil(nr / MATMUL_TN);
      const workgroups = params.tiling === "shared"
        ? tilesN * Math.ceil(nt / MATMUL_TM)
        : Math.ceil((Math.ceil(nr / REG_ROWS) * Math.ceil(nt / REG_TOKENS)) / MATMUL_WG);
      const grid = dispatchSize(workgroups, device.limits, opts.maxWorkgroupsPerDim);
      const u = own(
        MATMUL_PARAMS.size,
        GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
        "matmul-params",
      );
      device.queue.writeBuffer(
        u,
        0,
        MATMUL_PARAMS.pack({
          T: nt,
          rows,
          cols,
          wpr: lin.wpr,
          wBase: start / 4,
          rowBase: r0,
          chunkRows: nr,
          nx: grid.nx,
          tilesN,
          groupSize: lin.groupSize > 0 ? lin.groupSize : 1,
          nGroups: lin.nGroups,
          sparse: sp ? 1 : 0,
          sparseF32: sp?.dtype === "f32" ? 1 : 0,
        }),
      );
      const xBytes = 4 * cols, yBytes = 4 * rows;
      const entries: GPUBindGroupEntry[] = [
        { binding: 0, resource: { buffer: u } },
        {
          binding: 1,
          resource: { buffer: x, offset: (xOff + t0) * xBytes, size: nt * xBytes },
        },
        { binding: 2, resource: { buffer: y, offset: t0 * yBytes, size: nt * yBytes } },
        ...weightEntries(lin, win, sp, dummy),
      ];
      const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
      if (grid.count > 0) dispatches.push({ bindGroup, x: grid.x, y: grid.y });
    }
  }
  return {
    tokens: T,
    linear: lin,
    x,
    y,
    dispatchCount: dispatches.length,
    macs: T * (rows * cols + (sp?.nnz ?? 0)),
    encode(pass) {
      pass.setPipeline(pipeline);
      for (const d of dispatches) {
        pass.setBindGroup(0, d.bindGroup);
        pass.dispatchWorkgroups(d.x, d.y);
      }
    },
    release: owned.releaser("MatmulPlan"),
  };
}

/**
 * One-shot Y = X · Wᵀ on the GPU: uploads the weight and X, runs, reads Y
 * back and releases everything. For repeated runs use `uploadLinear` +
 * {@linkcode createMatmulPlan}.
 *
 * @param gpu the device
 * @param weight the weight W [rows, cols] (any format + optional sparse part)
 * @param x activations [T, cols]
 * @param tokens T
 * @param opts plan options (limits, native f16)
 * @returns Y [T, rows]
 * @example
 * ```ts
 * const gpu = await getGpu();
 * const w = { dense: { kind: "f32", rows: 2, cols: 2, data: new Float32Array([1, 2, 3, 4]) } } as const;
 * await matmulGpu(gpu, w, new Float32Array([1, 1, 1, 0]), 2); // Float32Array [3, 7, 1, 3]
 * ```
 */
export async function matmulGpu(
  gpu: Gpu,
  weight: LinearWeight,
  x: Float32Array,
  tokens: number,
  opts: Omit<MatmulPlanOptions, "tokens" | "x" | "y" | "xOffsetTokens"> = {},
): Promise<Float32Array> {
  const { rows, cols } = weight.dense;
  if (x.length !== tokens * cols) {
    throw new RangeError(
      `matmulGpu(): x must hold tokens×cols = ${tokens}×${cols} values, found ${x.length}`,
    );
  }
  const lin = uploadLinear(gpu, weight);
  const plan = await createMatmulPlan(gpu, lin, { ...opts, tokens });
  return await runOnce(gpu, lin, plan, x, tokens * rows);
}
