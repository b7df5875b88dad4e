/**
 * The kernels of GPTQ's fast solver on one WebAssembly memory: model/wasm's
 * solver instance (`gemm_f32`, `gptq_block`, `gemm_f64`) and
 * quant/gptq_kernels.wat (`gemm_4x8`, `transpose_f32`, `chol_panel_f32`,
 * `trinv_rows_f32`, `gemm_tri_f32`, `pack_t_f32`) instantiated on its memory, for
 * quant/gptq_fast.ts (the Hessian and the sweep) and quant/linalg.ts (the
 * fp32 Hinv). Pointers and strides are in bytes; each kernel's contract is
 * in its .wat source.
 *
 * @module
 */
import { type SolverKernels, solverKernels, WASM_SIMD } from "../model/wasm/kernels.ts";
import { GPTQ_KERNELS_WASM_BASE64 } from "./_gptq_kernels_wasm.ts";

/** The exports of quant/gptq_kernels.wat. */
interface GptqWatKernels {
  gemm_4x8(
    pa: number,
    s8: number,
    pb: number,
    K: number,
    kflush: number,
    pc: number,
    ldc: number,
    R: number,
    J: number,
    jblk: number,
    upper: number,
    doff: number,
  ): void;
  transpose_f32(ps: number, lds: number, pd: number, ldd: number, rows: number, cols: number): void;
  chol_panel_f32(pt: number, ldt: number, pd: number, bw: number, m: number): void;
  trinv_rows_f32(px: number, rs: number, cs: number, pd: number, ib: number, w: number): void;
  gemm_tri_f32(
    pa: number,
    sa: number,
    pb: number,
    sp: number,
    pc: number,
    R: number,
    J: number,
    K: number,
    kc: number,
  ): void;
  pack_t_f32(ps: number, lds: number, pd: number, J: number, K: number, neg: number): void;
}

/** The solver's kernels on one memory. */
export type GptqKernels = SolverKernels & GptqWatKernels;

/** The compiled quant/gptq_kernels.wat; undefined without WebAssembly SIMD. */
const gptqModule: WebAssembly.Module | undefined = WASM_SIMD
  ? new WebAssembly.Module(Uint8Array.from(atob(GPTQ_KERNELS_WASM_BASE64), (c) => c.charCodeAt(0)))
  : undefined;

/**
 * Whether this thread has warmed gptq_kernels.wat up (a cache of the
 * engine's state, not an option: results never depend on it).
 */
let gptqWarm = false;

/**
 * A fresh set of the solver's kernels (model/wasm/kernels.ts
 * `solverKernels` and gptq_kernels.wat instantiated on its memory, one
 * page; grow it with model/wasm/kernels.ts `growMemory`). V8 runs a wasm
 * function as baseline code until its next call after enough work, so the
 * first call on each thread makes small calls of each kernel on a throwaway
 * memory first (as model/wasm/kernels.ts's `warmUp`).
 *
 * @param fn the caller, named in the error
 * @throws Error naming `fn` when the engine has no WebAssembly SIMD
 * @example
 * ```ts
 * const k = gptqKernels("upperCholeskyOfInverseF32()");
 * k.transpose_f32(0, 64, 4096, 64, 16, 16);
 * ```
 */
export function gptqKernels(fn: string): GptqKernels {
  const k = solverKernels(fn);
  const instance = (memory: WebAssembly.Memory) =>
    new WebAssembly.Instance(gptqModule!, { env: { memory } }).exports as unknown as GptqWatKernels;
  if (!gptqWarm) {
    const memory = new WebAssembly.Memory({ initial: 1 });
    const w = instance(memory);
    const D = new Float64Array(memory.buffer, 32768, 64); // [8, 8] at 32768: the identity
    for (let r = 0; r < 8; r++) D[r * 9] = 1;
    for (let rep = 0; rep < 300; rep++) {
      // A = B: 2 panels of 63 rows; C [8, 16] after them; a 16 × 16 transpose
      w.gemm_4x8(0, 63 * 32, 0, 63, 16, 8192, 64, 8, 16, 8, rep & 1, 0);
      w.transpose_f32(0, 64, 16384, 64, 16, 16);
      // the Hinv steps: S [8, 16] at 0 packed after 16384; PT [8, 16] and X [8, 16] at 16384
      w.pack_t_f32(0, 64, 16384, 8, 16, rep & 1);
      w.chol_panel_f32(16384, 64, 32768, 8, 16);
      w.trinv_rows_f32(16384, 64, 32, 32768, 0, 8);
      w.gemm_tri_f32(0, 16 * 32, 16384, 16 * 32, 16384 + 8 * 32, 8, 8, 8, 4 + (rep & 3));
    }
    gptqWarm = true;
  }
  const g = instance(k.memory);
  return { ...k, ...g };
}
