/**
 * The WebAssembly SIMD kernels of the CPU forward pass, and of GPTQ's solver (source:
 * `kernels.wat`, compiled by `build.ts` into `_kernels_wasm.ts`), wrapped
 * for Float32Array operands: each call copies its operands into the
 * instance's own linear memory (grown as needed, reused between calls),
 * runs the kernel and copies the result out.
 *
 * The forward kernels accumulate in float32 (unfused multiply and add, so
 * the bits are the same on every engine); GPTQ's solver kernels
 * (`gemm_f32` with `fused` 1, `gptq_block`, `gemm_f64`) use relaxed SIMD's
 * multiply-add, fused where the host has FMA (the same bits on one host,
 * possibly not across hosts); see `kernels.wat` for the summation order.
 *
 * The two contracts every version meets (model/matmul.ts, attention.ts) are
 * stated once here as {@linkcode MatmulFn} and {@linkcode AttentionFn}.
 *
 * @module
 */
import { KERNELS_WASM_BASE64 } from "./_kernels_wasm.ts";

/**
 * The matmul contract: out[t, o] = Σ_i x[t, i] · W[o, i] for t < T, i.e.
 * out [T, d] = x [T, n] @ Wᵀ with W [d, n] row-major (PyTorch's
 * Linear.weight). `out` is written, the others are read.
 */
export type MatmulFn = (
  out: Float32Array,
  x: Float32Array,
  w: Float32Array,
  T: number,
  n: number,
  d: number,
) => void;

/**
 * The causal attention contract, all heads over a prefill window (positions
 * 0..T−1) with grouped-query heads (head h reads kv head
 * g = ⌊h / (nHeads / nKvHeads)⌋):
 * att[t, h] = Σ_{u≤t} softmax_u(q[t, h] · k[u, g] / √headSize) · v[u, g],
 * with att, q [T, nHeads · headSize] and k, v [T, nKvHeads · headSize]
 * (heads side by side; RoPE already applied to q and k). `att` is written.
 */
export type AttentionFn = (
  att: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  T: number,
  nHeads: number,
  nKvHeads: number,
  headSize: number,
) => void;

/** The exports of `kernels.wat`. Pointers are byte offsets into `memory`. */
interface KernelExports {
  memory: WebAssembly.Memory;
  matmul(
    px: number,
    pw: number,
    po: number,
    T: number,
    np: number,
    dp: number,
    tb: number,
    ob: number,
  ): void;
  attention(
    pq: number,
    pk: number,
    pv: number,
    po: number,
    pkt: number,
    ps: number,
    T: number,
    nHeads: number,
    nKvHeads: number,
    headSize: number,
    scale: number,
    pvt: number,
  ): void;
  attention_hs8(
    pq: number,
    pkt: number,
    pvt: number,
    po: number,
    ps: number,
    T: number,
    nHeads: number,
    nKvHeads: number,
    c: number,
  ): void;
  rmsnorm(px: number, pw: number, po: number, T: number, dim: number, eps: number): void;
  swiglu(p1: number, p3: number, pe: number, po: number, n: number): void;
  softmax_sums(px: number, T: number, np: number, pe: number, pm: number, ps: number): void;
}

/**
 * The exports of `kernels.wat` for callers that lay out the linear memory
 * themselves (quant/gptq_fast.ts, quant/linalg.ts): GPTQ's f32 matrix
 * product, in-block sweep and f64 matrix product. Pointers and strides are
 * bytes; the contracts are stated in `kernels.wat` above each function.
 */
export interface SolverKernels {
  memory: WebAssembly.Memory;
  gemm_f32(
    pa: number,
    s8: number,
    sak: number,
    pb: number,
    K: number,
    pc: number,
    ldc: number,
    R: number,
    J: number,
    jblk: number,
    mode: number,
    doff: number,
    /** 1: relaxed_madd (fused where the host has FMA; GPTQ); 0 or absent: plain multiply and add. */
    fused?: number,
  ): void;
  gptq_block(
    pw: number,
    ldw: number,
    R: number,
    count: number,
    ph: number,
    ps: number,
    pz: number,
    pq: number,
    pe: number,
    pt: number,
    pl: number,
    maxq: number,
  ): void;
  gemm_f64(
    pa: number,
    lda: number,
    pb: number,
    ldb: number,
    pc: number,
    ldc: number,
    R: number,
    J: number,
    K: number,
    mode: number,
    doff: number,
    jblk: number,
  ): void;
}

/** The compiled kernels (`kernels.wat`), decoded from `_kernels_wasm.ts`. */
export const KERNELS_WASM_BYTES: Uint8Array<ArrayBuffer> = Uint8Array.from(
  atob(KERNELS_WASM_BASE64),
  (c) => c.charCodeAt(0),
);

/**
 * Whether this engine runs WebAssembly with fixed-width SIMD (the kernels
 * validate). True in every current Deno, Node and browser.
 */
export const WASM_SIMD: boolean = typeof WebAssembly === "object" &&
  WebAssembly.validate(KERNELS_WASM_BYTES);

/** The compiled module, shared by every {@linkcode WasmKernels}; undefined without SIMD. */
const kernelsModule: WebAssembly.Module | undefined = WASM_SIMD
  ? new WebAssembly.Module(KERNELS_WASM_BYTES)
  : undefined;

const PAGE = 65536; // bytes per WebAssembly memory page
const MAX_BYTES = 65536 * PAGE; // wasm32 address space: 4 GiB
/** Rows of x per cache block of the matmul kernel: about 16 KiB of x (half an L1). */
const L1_BLOCK_BYTES = 16384;
/** Rows of W per cache block of the matmul kernel: about 256 KiB of W (half a small L2). */
const L2_BLOCK_BYTES = 262144;

const ceil4 = (v: number) => (v + 3) & ~3;

/** Throws a RangeError unless `v` is a non-negative safe integer. */
function checkDim(fn: string, name: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) {
    throw new RangeError(`${fn}: ${name} must be a non-negative integer, found ${v}`);
  }
}

/** Throws a RangeError unless `a` holds at least `need` elements. */
function checkLength(fn: string, name: string, a: Float32Array, need: number, how: string): void {
  if (a.length < need) {
    throw new RangeError(
      `${fn}: ${name} has ${a.length} elements, expected at least ${how} = ${need}`,
    );
  }
}

/**
 * Validates the operands of a {@linkcode MatmulFn} (x: [T, n], w: [d, n], out: [T, d]).
 *
 * @param fn name of the calling function, for the error message.
 * @throws RangeError naming the function, the operand, the expected and the found size.
 */
export function checkMatmulArgs(fn: string, ...[out, x, w, T, n, d]: Parameters<MatmulFn>): void {
  checkDim(fn, "T", T);
  checkDim(fn, "n", n);
  checkDim(fn, "d", d);
  checkLength(fn, "x", x, T * n, `T·n = ${T}·${n}`);
  checkLength(fn, "w", w, d * n, `d·n = ${d}·${n}`);
  checkLength(fn, "out", out, T * d, `T·d = ${T}·${d}`);
}

/**
 * Validates the operands of an {@linkcode AttentionFn} over a window of T
 * positions: q, att: [T, nHeads · headSize], k, v: [T, nKvHeads · headSize].
 *
 * @param fn name of the calling function, for the error message.
 * @throws RangeError naming the function, the operand, the expected and the found value.
 */
export function checkAttentionArgs(
  fn: string,
  ...[att, q, k, v, T, nHeads, nKvHeads, headSize]: Parameters<AttentionFn>
): void {
  checkDim(fn, "T", T);
  checkDim(fn, "nHeads", nHeads);
  checkDim(fn, "nKvHeads", nKvHeads);
  checkDim(fn, "headSize", headSize);
  if (nKvHeads === 0 || nHeads % nKvHeads !== 0) {
    throw new RangeError(
      `${fn}: nHeads (${nHeads}) must be a multiple of nKvHeads (${nKvHeads}) and nKvHeads ≥ 1`,
    );
  }
  const dim = nHeads * headSize, kv = nKvHeads * headSize;
  checkLength(fn, "q", q, T * dim, `T·nHeads·headSize = ${T}·${dim}`);
  checkLength(fn, "k", k, T * kv, `T·nKvHeads·headSize = ${T}·${kv}`);
  checkLength(fn, "v", v, T * kv, `T·nKvHeads·headSize = ${T}·${kv}`);
  checkLength(fn, "att", att, T * dim, `T·nHeads·headSize = ${T}·${dim}`);
}

/**
 * One instance of the kernels with its own linear memory: scratch space only,
 * so results never depend on earlier calls. Not safe to share between
 * concurrent callers (there are none within one JS thread).
 *
 * @example
 * ```ts
 * const k = new WasmKernels();
 * const out = new Float32Array(2 * 3);
 * k.matmul(out, new Float32Array(2 * 4).fill(1), new Float32Array(3 * 4).fill(0.5), 2, 4, 3);
 * // out is [2, 2, 2, 2, 2, 2]
 * ```
 */
export class WasmKernels {
  readonly #exports: KernelExports;
  #f32: Float32Array; // view of the whole linear memory

  /** Instantiates the kernels; throws an Error when the engine lacks WebAssembly SIMD. */
  constructor() {
    if (!kernelsModule) {
      throw new Error(
        "WasmKernels: this engine has no WebAssembly SIMD (the kernels in model/wasm/kernels.wat do not validate)",
      );
    }
    this.#exports = new WebAssembly.Instance(kernelsModule, {}).exports as unknown as KernelExports;
    this.#f32 = new Float32Array(this.#exports.memory.buffer);
  }

  /** Bytes of linear memory this instance holds now (grows with the largest call). */
  get memoryBytes(): number {
    return this.#exports.memory.buffer.byteLength;
  }

  /** A float view of the memory, grown to at least `bytes`. */
  #reserve(fn: string, bytes: number): Float32Array {
    const mem = this.#exports.memory;
    if (mem.buffer.byteLength < bytes) {
      if (bytes > MAX_BYTES) {
        throw new RangeError(
          `${fn}: operands need ${bytes} bytes of WebAssembly memory, the limit is ${MAX_BYTES}`,
        );
      }
      mem.grow(Math.ceil((bytes - mem.buffer.byteLength) / PAGE));
    }
    if (this.#f32.buffer !== mem.buffer) this.#f32 = new Float32Array(mem.buffer);
    return this.#f32;
  }

  /**
   * out[t, o] = Σ_i x[t, i] · W[o, i] (x @ Wᵀ), the {@linkcode MatmulFn}
   * contract, accumulated in float32. Bound to this instance (may be passed
   * around as a function).
   *
   * @param out [T, d], written
   * @param x [T, n]
   * @param w [d, n], row-major (PyTorch's Linear.weight)
   * @throws RangeError when a dimension is not a non-negative integer or an operand is too short.
   */
  readonly matmul: MatmulFn = (out, x, w, T, n, d) => {
    checkMatmulArgs("matmulWasm", out, x, w, T, n, d);
    if (T === 0 || d === 0) return;
    if (!forwardWarm && T * n * d >= WARM_MIN_WORK) warmForward();
    if (n === 0) {
      out.fill(0, 0, T * d);
      return;
    }
    const np = ceil4(n), dp = ceil4(d);
    // Layout (floats): x [T, np] at 0, W [dp, np] at fw, out [T, dp] at fo.
    const fw = T * np, fo = fw + dp * np;
    const f = this.#reserve("matmulWasm", (fo + T * dp) * 4);
    copyRows(f, 0, np, x, T, n);
    copyRows(f, fw, np, w, d, n);
    f.fill(0, fw + d * np, fo); // W rows d..dp-1
    const tb = Math.max(2, Math.floor(L1_BLOCK_BYTES / (np * 4)) & ~1);
    const ob = Math.max(4, Math.floor(L2_BLOCK_BYTES / (np * 4)) & ~3);
    this.#exports.matmul(0, fw * 4, fo * 4, T, np, dp, tb, ob);
    if (dp === d) out.set(f.subarray(fo, fo + T * d));
    else {
      for (let t = 0; t < T; t++) {
        const src = fo + t * dp, dst = t * d;
        for (let o = 0; o < d; o++) out[dst + o] = f[src + o];
      }
    }
  };

  /**
   * Causal softmax attention of every head over a prefill window, the
   * {@linkcode AttentionFn} contract: head h reads kv head
   * ⌊h / (nHeads / nKvHeads)⌋, q and k are used as given (RoPE already
   * applied). Bound to this instance (may be passed around as a function).
   *
   * @param att [T, nHeads · headSize], written
   * @param q [T, nHeads · headSize]
   * @param k [T, nKvHeads · headSize]
   * @param v [T, nKvHeads · headSize]
   * @param headSize must be a multiple of 4
   * @throws RangeError on a bad shape, an operand too short or headSize not a multiple of 4.
   */
  readonly attention: AttentionFn = (att, q, k, v, T, nHeads, nKvHeads, headSize) => {
    const fn = "causalAttentionWasm";
    checkAttentionArgs(fn, att, q, k, v, T, nHeads, nKvHeads, headSize);
    if (headSize % 4 !== 0) {
      throw new RangeError(`${fn}: headSize must be a multiple of 4, found ${headSize}`);
    }
    if (T === 0 || nHeads === 0 || headSize === 0) return;
    if (!forwardWarm && T * T * nHeads * headSize >= WARM_MIN_WORK) warmForward();
    if (headSize === 8) return this.#attentionHs8(att, q, k, v, T, nHeads, nKvHeads);
    const dim = nHeads * headSize, kv = nKvHeads * headSize, Tp = ceil4(T);
    // Layout (floats): q [T, dim], k [T, kv], v [Tp, kv] (zero rows from T),
    // att [T, dim], kt [⌈T/16⌉, headSize, 16], vt [headSize, Tp] (kernels.wat), p [Tp].
    const fk = T * dim, fv = fk + T * kv, fo = fv + Tp * kv, fkt = fo + T * dim;
    const fvt = fkt + headSize * Math.ceil(T / 16) * 16, fs = fvt + headSize * Tp;
    const f = this.#reserve(fn, (fs + Tp) * 4);
    copyRows(f, 0, dim, q, T, dim);
    copyRows(f, fk, kv, k, T, kv);
    copyRows(f, fv, kv, v, T, kv);
    f.fill(0, fv + T * kv, fo);
    this.#exports.attention(
      0,
      fk * 4,
      fv * 4,
      fo * 4,
      fkt * 4,
      fs * 4,
      T,
      nHeads,
      nKvHeads,
      headSize,
      1 / Math.sqrt(headSize),
      fvt * 4,
    );
    att.set(f.subarray(fo, fo + T * dim));
  };

  /**
   * {@linkcode WasmKernels.attention} for head size 8 (kernels.wat
   * `attention_hs8`): K and V are packed on the way in, in panels of 4 keys
   * per kv head, so that the kernel holds 4 keys per vector; scores are
   * taken in base 2.
   */
  #attentionHs8(
    att: Float32Array,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    T: number,
    nHeads: number,
    nKvHeads: number,
  ): void {
    const dim = nHeads * 8, kv = nKvHeads * 8, Tp = ceil4(T);
    // Layout (floats): q [T, dim], kp and vp [nKvHeads, Tp/4, 8, 4] (zero from T),
    // att [T, dim], p [Tp].
    const fk = T * dim, fv = fk + kv * Tp, fo = fv + kv * Tp, fs = fo + T * dim;
    const f = this.#reserve("causalAttentionWasm", (fs + Tp) * 4);
    copyRows(f, 0, dim, q, T, dim);
    packPanels(f, fk, k, T, nKvHeads);
    packPanels(f, fv, v, T, nKvHeads);
    this.#exports.attention_hs8(0, fk * 4, fv * 4, fo * 4, fs * 4, T, nHeads, nKvHeads, C_HS8);
    att.set(f.subarray(fo, fo + T * dim));
  }

  /**
   * RMSNorm of T rows of width dim: out[t] = x[t] / √(mean(x[t]²) + eps) ⊙ weight,
   * in float64 per element as model/forward.ts's `rmsnormRef` (only the
   * order of the sum of squares differs), rounded once to float32. `out`
   * may be `x`. Bound to this instance.
   *
   * @param dim must be a multiple of 4
   * @throws RangeError on a bad dimension or an operand too short.
   */
  readonly rmsnorm = (
    out: Float32Array,
    x: Float32Array,
    weight: Float32Array,
    T: number,
    dim: number,
    eps: number,
  ): void => {
    const fn = "rmsnormWasm";
    checkDim(fn, "T", T);
    checkDim(fn, "dim", dim);
    if (dim % 4 !== 0 || dim === 0) {
      throw new RangeError(`${fn}: dim must be a positive multiple of 4, found ${dim}`);
    }
    checkLength(fn, "x", x, T * dim, `T·dim = ${T}·${dim}`);
    checkLength(fn, "weight", weight, dim, "dim");
    checkLength(fn, "out", out, T * dim, `T·dim = ${T}·${dim}`);
    if (T === 0) return;
    // Layout (floats): x [T, dim] at 0 (the output in place), weight [dim] after it.
    const f = this.#reserve(fn, (T + 1) * dim * 4);
    copyRows(f, 0, dim, x, T, dim);
    copyRows(f, T * dim, dim, weight, 1, dim);
    this.#exports.rmsnorm(0, T * dim * 4, 0, T, dim, eps);
    out.set(f.subarray(0, T * dim));
  };

  /**
   * The SwiGLU gate out[i] = silu(h1[i]) · h3[i] = h1[i] / (1 + e^−h1[i]) · h3[i]
   * for i < n, in float32 with kernels.wat's `$exp2` (within a few ulp of
   * the float64 formula rounded to float32). `out` may be `h1` or `h3`.
   * Bound to this instance.
   *
   * @throws RangeError when n is not a non-negative integer or an operand is too short.
   */
  readonly swiglu = (out: Float32Array, h1: Float32Array, h3: Float32Array, n: number): void => {
    const fn = "swigluWasm";
    checkDim(fn, "n", n);
    checkLength(fn, "h1", h1, n, "n");
    checkLength(fn, "h3", h3, n, "n");
    checkLength(fn, "out", out, n, "n");
    const np = ceil4(n);
    // Layout (floats): h1 [np] at 0 (the output in place), h3 [np] at np, e^−h1 [np]
    // at 2·np; zero padded.
    const f = this.#reserve(fn, 3 * np * 4);
    copyRows(f, 0, np, h1, 1, n);
    copyRows(f, np, np, h3, 1, n);
    this.#exports.swiglu(0, np * 4, 2 * np * 4, 0, np);
    out.set(f.subarray(0, n));
  };

  /**
   * Log-sum-exp of each row of x [T, V]: lse[t] = m + log Σ_i e^(x[t, i] − m),
   * m = max_i x[t, i]; the terms in float32 by kernels.wat's `$exp2`
   * (relative error ≤ 2e−7 + |x − m| · 6e−8), summed in float64. A row with
   * NaN gives NaN. Bound to this instance.
   *
   * @param lse [T], written
   * @param x [T, V]
   * @throws RangeError when a dimension is not a non-negative integer or an operand is too short.
   */
  readonly logSumExp = (lse: Float64Array, x: Float32Array, T: number, V: number): void => {
    const fn = "logSumExpWasm";
    checkDim(fn, "T", T);
    checkDim(fn, "V", V);
    checkLength(fn, "x", x, T * V, `T·V = ${T}·${V}`);
    if (lse.length < T) {
      throw new RangeError(`${fn}: lse has ${lse.length} elements, expected T = ${T}`);
    }
    if (T === 0) return;
    const np = ceil4(Math.max(V, 1));
    // Layout (floats): x [T, np] at 0 (pad lanes −∞), scratch [np], m [T], then s [T]
    // float64 (8-aligned).
    const fe = T * np, fm = fe + np, fs = ceil4(fm + T);
    const f = this.#reserve(fn, fs * 4 + T * 8);
    copyRows(f, 0, np, x, T, V);
    if (np !== V) { for (let t = 0; t < T; t++) f.fill(-Infinity, t * np + V, (t + 1) * np); }
    this.#exports.softmax_sums(0, T, np, fe * 4, fm * 4, fs * 4);
    const s = new Float64Array(f.buffer, fs * 4, T);
    for (let t = 0; t < T; t++) lse[t] = f[fm + t] + Math.log(s[t]);
  };
}

/**
 * The one instance behind the CPU forward pass's kernels (model/matmul.ts's
 * `matmulWasm`, attention.ts's `causalAttentionWasm`); undefined without
 * WebAssembly SIMD.
 */
export const FORWARD_KERNELS: WasmKernels | undefined = kernelsModule
  ? new WasmKernels()
  : undefined;

/**
 * A new instance of the kernels with its own linear memory (one page), for
 * a caller that lays out the memory itself; grow it with `memory.grow`. A
 * fresh instance per large job lets its memory be collected afterwards.
 *
 * @throws Error when the engine has no WebAssembly SIMD, naming `fn`
 * @example
 * ```ts
 * const k = solverKernels("upperCholeskyOfInverseSimd");
 * k.memory.grow(16);
 * ```
 */
export function solverKernels(fn: string): SolverKernels {
  if (!kernelsModule) {
    throw new Error(`${fn}: this engine has no WebAssembly SIMD (model/wasm/kernels.wat)`);
  }
  const instance = () =>
    new WebAssembly.Instance(kernelsModule, {}).exports as unknown as SolverKernels;
  if (!solverWarm) warmUp(instance());
  solverWarm = true;
  return instance();
}

/**
 * Whether this thread has run {@linkcode warmUp} (a cache of the engine's
 * state, not an option: results never depend on it).
 */
let solverWarm = false;

/** Whether this thread has run {@linkcode warmForward} (likewise a cache of the engine's state). */
let forwardWarm = false;
/** Multiply-adds of a forward kernel call above which its thread first runs {@linkcode warmForward}. */
const WARM_MIN_WORK = 1 << 24;

/**
 * The forward kernels' counterpart of {@linkcode warmUp}, run before the
 * first large matmul or attention of a thread: V8 runs a call that starts
 * in baseline code to its end there, and the first matmul of a LLaMA-7B
 * window (2048 × 4096 by 11008) took 36.5 s that way against 10 s once
 * optimized. Calls of every forward kernel on a throwaway instance, large
 * enough to spend V8's tiering budget, take about 10 ms once per thread.
 */
function warmForward(): void {
  forwardWarm = true;
  const k = new WasmKernels();
  const a = new Float32Array(64 * 256).fill(0.5), b = new Float32Array(64 * 256).fill(0.25);
  const o = new Float32Array(64 * 64);
  const lse = new Float64Array(16);
  for (let rep = 0; rep < 20; rep++) {
    k.matmul(o, a, b, 16, 256, 64);
    k.attention(a, b, b, b, 64, 2, 1, 16);
    k.attention(a, b, b, b, 64, 2, 1, 8);
    k.rmsnorm(o, a, b, 16, 256, 1e-5);
    k.swiglu(o, a, b, 4096);
    k.logSumExp(lse, a, 16, 256);
  }
}

/**
 * V8 first runs a wasm function as baseline code and swaps in optimized code
 * only at its next call, after enough work; a solver's first call may be
 * one long loop. Small calls of each solver kernel on a throwaway instance
 * make the engine optimize them before the real work (about 10 ms,
 * once per thread).
 */
function warmUp(k: SolverKernels): void {
  for (let rep = 0; rep < 300; rep++) {
    k.gemm_f32(0, 64 * 32, 32, 16384, 64, 32768, 64, 8, 16, 8, rep & 3, 0, (rep >> 2) & 1);
    k.gemm_f64(0, 512, 16384, 512, 32768, 512, 8, 8, 32, rep % 3, 0, 4);
    k.gptq_block(0, 64, 8, 8, 4096, 8192, 12288, 16384, 20480, 24576, 28672, 7);
  }
}

/**
 * Grows `memory` to at least `bytes` (whole 64 KiB pages).
 *
 * @throws RangeError naming `fn` beyond the 4 GiB of wasm32
 */
export function growMemory(fn: string, memory: WebAssembly.Memory, bytes: number): void {
  if (bytes > MAX_BYTES) {
    throw new RangeError(
      `${fn}: needs ${bytes} bytes of WebAssembly memory, the limit is ${MAX_BYTES}`,
    );
  }
  const have = memory.buffer.byteLength;
  if (have < bytes) memory.grow(Math.ceil((bytes - have) / PAGE));
}

/**
 * What a SIMD-only function is on an engine without WebAssembly SIMD: one
 * that throws an Error naming `fn`, plus `hint` when given.
 */
export function withoutSimd(fn: string, hint?: string): () => never {
  return () => {
    throw new Error(`${fn}: this engine has no WebAssembly SIMD${hint ? `; ${hint}` : ""}`);
  };
}

/** attention_hs8's base-2 score scale: log2(e) / √8. */
const C_HS8 = Math.LOG2E / Math.sqrt(8);

/**
 * Packs src [T, nKvHeads · 8] (k or v) into dst at float offset `at` as
 * attention_hs8 reads it: [nKvHeads, Tp/4, 8, 4], element (g, i, j, l) =
 * src[4i + l, 8g + j], zero for rows ≥ T.
 */
function packPanels(
  dst: Float32Array,
  at: number,
  src: Float32Array,
  T: number,
  nKvHeads: number,
): void {
  const kv = nKvHeads * 8, Tp = ceil4(T);
  for (let g = 0; g < nKvHeads; g++) {
    const base = at + g * Tp * 8;
    for (let u = 0; u < Tp; u++) {
      const o = base + (u >> 2) * 32 + (u & 3), s = u * kv + g * 8;
      for (let j = 0; j < 8; j++) dst[o + j * 4] = u < T ? src[s + j] : 0;
    }
  }
}

/**
 * Copies `rows` rows of width `n` from `src` into `dst` at float offset `at`
 * with row stride `stride` ≥ n, zero-filling columns n..stride-1.
 */
function copyRows(
  dst: Float32Array,
  at: number,
  stride: number,
  src: Float32Array,
  rows: number,
  n: number,
): void {
  if (stride === n) {
    dst.set(src.length === rows * n ? src : src.subarray(0, rows * n), at);
    return;
  }
  for (let r = 0; r < rows; r++) {
    const s = r * n, o = at + r * stride;
    for (let i = 0; i < n; i++) dst[o + i] = src[s + i];
    for (let i = n; i < stride; i++) dst[o + i] = 0;
  }
}
