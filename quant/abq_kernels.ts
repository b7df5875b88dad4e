/**
 * quant/abq_kernels.wat compiled once per thread: the attention kernels of
 * ABQ-LLM's training step (quant/abq_attention.ts instantiates them on its
 * own maps' memory), the per-token activation quantizer with its
 * straight-through backward and the integer W×A linear, which
 * {@linkcode ACT_QUANT_KERNELS} runs on a memory of its own for
 * quant/act_quant.ts, quant/abq_grad.ts and quant/wa_int.ts.
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
  wa_quant_rows(
    px: number,
    pq: number,
    ps: number,
    ppos: number,
    rows: number,
    width: number,
    stride: number,
    maxq: number,
  ): void;
  wa_int_linear(
    px: number,
    psx: number,
    pw: number,
    psw: number,
    py: number,
    T: number,
    rows: number,
    ng: number,
    gs: number,
  ): void;
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

/** Byte offsets of consecutive arrays of the given byte lengths, each 16-byte aligned, and the end. */
function layout(bytes: readonly number[]): { at: number[]; end: number } {
  const at: number[] = [];
  let end = 0;
  for (const b of bytes) {
    at.push(end);
    end += Math.ceil(b / 16) * 16;
  }
  return { at, end };
}

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

  /** Copies `arrays` into this instance's memory, 16-byte aligned; returns their byte offsets. */
  #place(arrays: readonly (ArrayBufferView & { length: number })[], extra = 0): number[] {
    const { at, end } = layout([...arrays.map((a) => a.byteLength), extra]);
    this.#reserve(end / 4);
    const bytes = new Uint8Array(this.#memory.buffer);
    arrays.forEach((a, i) =>
      bytes.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), at[i])
    );
    return at;
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

  /**
   * quant/wa_int.ts's `quantizeActsScalar` bit for bit: codes [rows, stride]
   * (i16: q − zero at slot pos[i] of each row, 0 in the other slots) and
   * scales [rows] of x [rows, width].
   */
  quantCodesRows(
    x: Float32Array,
    rows: number,
    width: number,
    maxq: number,
    pos: Int32Array,
    stride: number,
    codes: Int16Array,
    scales: Float32Array,
  ): void {
    const n = rows * stride;
    const [px, ppos, pq] = this.#place([x.subarray(0, rows * width), pos], n * 2);
    const ps = pq + Math.ceil((n * 2) / 16) * 16;
    this.#reserve(ps / 4 + rows);
    this.#k.wa_quant_rows(px, pq, ps, ppos, rows, width, stride, maxq);
    codes.set(new Int16Array(this.#memory.buffer, pq, n));
    scales.set(new Float32Array(this.#memory.buffer, ps, rows));
  }

  /**
   * quant/wa_int.ts's `intLinearScalar` bit for bit: y [T, rows] from
   * activation codes xq [T, ng·gs] with scales sx [T] and weight codes wq
   * [rows, ng·gs] with scales sw [rows, ng] (gs a multiple of 8).
   */
  intLinear(
    y: Float32Array,
    xq: Int16Array,
    sx: Float32Array,
    T: number,
    wq: Int16Array,
    sw: Float32Array,
    rows: number,
    ng: number,
    gs: number,
  ): void {
    const K = ng * gs;
    const [px, psx, pw, psw, py] = this.#place(
      [xq.subarray(0, T * K), sx.subarray(0, T), wq, sw],
      T * rows * 4,
    );
    this.#k.wa_int_linear(px, psx, pw, psw, py, T, rows, ng, gs);
    y.set(new Float32Array(this.#memory.buffer, py, T * rows));
  }
}

/** This thread's {@linkcode ActQuantKernels}; undefined without WebAssembly SIMD. */
export const ACT_QUANT_KERNELS: ActQuantKernels | undefined = ABQ_KERNELS_MODULE
  ? new ActQuantKernels()
  : undefined;
