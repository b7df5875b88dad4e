/**
 * quant/abq_kernels.wat compiled once per thread: the attention kernels of
 * ABQ-LLM's training step (quant/abq_attention.ts instantiates them on its
 * own maps' memory) and the per-token activation quantizer with its
 * straight-through backward, which {@linkcode ACT_QUANT_KERNELS} runs on a
 * memory of its own for quant/act_quant.ts and quant/abq_grad.ts.
 *
 * @module
 */
import { WASM_SIMD } from "../model/wasm/kernels.ts";
import { ABQ_KERNELS_WASM_BASE64 } from "./_abq_kernels_wasm.ts";

/** The exports of `abq_kernels.wat` (byte offsets into the imported memory; contracts there). */
export interface AbqKernelExports {
  causal_softmax(ps: number, ld: number, T: number, scale: number, pavg: number, inv: number): void;
  causal_softmax_backward(
    pp: number,
    pd: number,
    ld: number,
    T: number,
    scale: number,
    pdavg: number,
    inv: number,
  ): void;
  causal_pv(pm: number, ld: number, pv: number, po: number, T: number, w: number): void;
  exp_f32(px: number, po: number, n: number): void;
  fake_quant_rows(px: number, po: number, rows: number, width: number, maxq: number): void;
  fake_quant_grad_rows(pg: number, px: number, rows: number, width: number, maxq: number): void;
}

/** The compiled `abq_kernels.wat`; undefined without WebAssembly SIMD. */
export const ABQ_KERNELS_MODULE: WebAssembly.Module | undefined = WASM_SIMD
  ? new WebAssembly.Module(Uint8Array.from(atob(ABQ_KERNELS_WASM_BASE64), (c) => c.charCodeAt(0)))
  : undefined;

/** An instance of the kernels on `memory`; throws without WebAssembly SIMD. */
export function abqKernels(memory: WebAssembly.Memory): AbqKernelExports {
  if (!ABQ_KERNELS_MODULE) throw new Error("abq kernels: this engine has no WebAssembly SIMD");
  return new WebAssembly.Instance(ABQ_KERNELS_MODULE, { env: { memory } })
    .exports as unknown as AbqKernelExports;
}

const PAGE = 65536;

/**
 * The per-token activation quantizer in WebAssembly, bit for bit
 * quant/act_quant.ts's `fakeQuantRows` and quant/abq_grad.ts's
 * `fakeQuantGrad` (tested): each call copies its operands into this
 * instance's memory (grown as needed) and the result out.
 */
export class ActQuantKernels {
  readonly #memory = new WebAssembly.Memory({ initial: 1 });
  readonly #k = abqKernels(this.#memory);
  #f32 = new Float32Array(this.#memory.buffer);

  #reserve(floats: number): Float32Array {
    const have = this.#memory.buffer.byteLength, need = floats * 4;
    if (have < need) this.#memory.grow(Math.ceil((need - have) / PAGE));
    if (this.#f32.buffer !== this.#memory.buffer) this.#f32 = new Float32Array(this.#memory.buffer);
    return this.#f32;
  }

  /** out [rows, width] = the fake-quantized rows of x [rows, width] (out may be x). */
  fakeQuantRows(
    x: Float32Array,
    rows: number,
    width: number,
    maxq: number,
    out: Float32Array,
  ): Float32Array {
    const n = rows * width, f = this.#reserve(n);
    f.set(x.subarray(0, n));
    this.#k.fake_quant_rows(0, 0, rows, width, maxq);
    out.set(f.subarray(0, n));
    return out;
  }

  /** g [rows, width]: dL/dx̂ in, dL/dx out, for x [rows, width] before quantization. */
  fakeQuantRowsGrad(
    g: Float32Array,
    x: Float32Array,
    rows: number,
    width: number,
    maxq: number,
  ): void {
    const n = rows * width, f = this.#reserve(2 * n);
    f.set(g.subarray(0, n));
    f.set(x.subarray(0, n), n);
    this.#k.fake_quant_grad_rows(0, n * 4, rows, width, maxq);
    g.set(f.subarray(0, n));
  }
}

/** This thread's {@linkcode ActQuantKernels}; undefined without WebAssembly SIMD. */
export const ACT_QUANT_KERNELS: ActQuantKernels | undefined = ABQ_KERNELS_MODULE
  ? new ActQuantKernels()
  : undefined;
