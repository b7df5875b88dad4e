/**
 * The W8A8 baseline (the CUTLASS int8 GEMM of ABQ-LLM's speed comparison,
 * SmoothQuant's format): weight and per-token activation codes as signed
 * bytes, four per u32, multiplied with WGSL's `dot4I8Packed` where the
 * adapter has the `packed_4x8_integer_dot_product` language feature, else
 * with the same products unpacked by `extractBits` (identical integers).
 *
 * Codes are the unsigned codes of quant/format.ts (0..2^b − 1, any b ≤ 8)
 * shifted by −128 into int8 (q XOR 0x80), zero points shifted alike; the
 * zero-point correction is kernels/bitplane_reference.ts's with the shifted
 * values, so the integer accumulators are exactly the bit-plane kernel's.
 * Layout: a 32-column block is 8 words, bytes in column order (the packed
 * 4×8 order, low column in the low byte), W [rows, kBlocks, 8],
 * X [batch, kBlocks, 8]; columns past `cols` are the byte 0. The kernel
 * skeleton is kernels/_wa_kernel.ts.
 *
 * @module
 */
import type { UniformTensor } from "../quant/format.ts";
import { codeAt, fromF16 } from "../quant/format.ts";
import type { Gpu } from "./device.ts";
import type { WaPlan, WaPlanOptions, WaScheme, WaWeight, WaWeightHost } from "./_wa_kernel.ts";
import { createWaPlan, runWaOnce, uploadWaWeight } from "./_wa_kernel.ts";
import type { ActCodes } from "./bitplane_reference.ts";
import { checkActCodes, checkWaWeight, weightGroupSums } from "./bitplane_reference.ts";

/** The WGSL language feature that provides `dot4I8Packed`. */
export const PACKED_DOT_FEATURE = "packed_4x8_integer_dot_product";

/**
 * Whether this runtime's WGSL has packed 4×8 integer dot products.
 *
 * @returns true when `navigator.gpu.wgslLanguageFeatures` lists {@linkcode PACKED_DOT_FEATURE}
 */
export function hasPackedDot(): boolean {
  const gpu = (navigator as { gpu?: { wgslLanguageFeatures?: ReadonlySet<string> } }).gpu;
  return gpu?.wgslLanguageFeatures?.has(PACKED_DOT_FEATURE) ?? false;
}

/**
 * The int8 scheme: eight words of four signed bytes per 32-column block.
 *
 * @param packed use `dot4I8Packed` (needs {@linkcode hasPackedDot}); false unpacks the bytes
 * @returns the scheme for kernels/_wa_kernel.ts
 */
export function int8Scheme(packed: boolean): WaScheme {
  const dot = packed ? "dot4I8Packed" : "dot4I8";
  const terms = (f: (k: number) => string) => Array.from({ length: 8 }, (_, k) => f(k)).join(" + ");
  return {
    name: `int8.${packed ? "packed" : "unpacked"}`,
    wWords: 8,
    xWords: 8,
    prelude: packed ? "" : `fn dot4I8(a: u32, b: u32) -> i32 {
  let x = bitcast<i32>(a);
  let y = bitcast<i32>(b);
  return extractBits(x, 0u, 8u) * extractBits(y, 0u, 8u) +
    extractBits(x, 8u, 8u) * extractBits(y, 8u, 8u) +
    extractBits(x, 16u, 8u) * extractBits(y, 16u, 8u) +
    extractBits(x, 24u, 8u) * extractBits(y, 24u, 8u);
}`,
    dot: (x, w) => terms((k) => `${dot}(${x}${k}, ${w}${k})`),
    wSum: (w) => terms((k) => `${dot}(${w}${k}, 0x01010101u)`),
    xSum: (x) => terms((k) => `${dot}(${x}${k}, 0x01010101u)`),
  };
}

/** Signed-byte words [n, ⌈cols/32⌉, 8] of codes (q − 128 per byte; 0 past cols). */
function packBytes(code: (r: number, c: number) => number, n: number, cols: number): Uint32Array {
  const kBlocks = Math.ceil(cols / 32);
  const out = new Uint32Array(n * kBlocks * 8);
  const bytes = new Uint8Array(out.buffer);
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < cols; c++) bytes[r * kBlocks * 32 + c] = code(r, c) ^ 0x80;
  }
  if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) {
    throw new Error("int8 packing assumes a little-endian host");
  }
  return out;
}

/**
 * A uniform weight in the int8 layout (module doc): signed-byte words,
 * scales, zeros − 128 and per-group sums of (q − 128).
 *
 * @param t the weight (codes of ≤ 8 bits; no gIdx; groups of whole 32-column blocks or one per row)
 * @returns the host arrays for {@linkcode uploadInt8Weight}
 */
export function packInt8Weight(t: UniformTensor): WaWeightHost {
  checkWaWeight(t);
  const { rows, cols, bits, codes } = t;
  const { nGroups: ng, groupSize: gs, sums } = weightGroupSums(t, 128);
  return {
    rows,
    cols,
    groupSize: gs,
    nGroups: ng,
    words: packBytes((r, c) => codeAt(codes, cols, bits, r, c), rows, cols),
    scales: fromF16(t.scales),
    zeros: Int32Array.from(fromF16(t.zeros), (z) => z - 128),
    sums,
  };
}

/** Per-token activations in the int8 layout. */
export interface Int8Acts {
  batch: number;
  cols: number;
  words: Uint32Array; // [batch, kBlocks, 8] signed bytes q − 128
  scales: Float32Array; // [batch]
  zeros: Int32Array; // [batch] z − 128
  sums: Int32Array; // [batch] Σ (q − 128)
}

/**
 * Per-token activation codes in the int8 layout.
 *
 * @param x codes (≤ 8 bits), scales and zeros per token
 * @returns signed-byte words, shifted zeros and sums
 */
export function packInt8Acts(x: ActCodes): Int8Acts {
  checkActCodes(x);
  const { batch, cols, codes } = x;
  const sums = new Int32Array(batch);
  for (let b = 0; b < batch; b++) {
    for (let c = 0; c < cols; c++) sums[b] += codes[b * cols + c] - 128;
  }
  return {
    batch,
    cols,
    words: packBytes((b, c) => codes[b * cols + c], batch, cols),
    scales: x.scales,
    zeros: Int32Array.from(x.zeros, (z) => z - 128),
    sums,
  };
}

/**
 * Uploads a uniform weight in the int8 layout.
 *
 * @param gpu the device
 * @param t the weight
 * @returns the buffers; call `release()` when done
 */
export function uploadInt8Weight(gpu: Gpu, t: UniformTensor): WaWeight {
  return uploadWaWeight(gpu, packInt8Weight(t), 8);
}

/** Options of {@linkcode createInt8Plan}. */
export interface Int8PlanOptions extends WaPlanOptions {
  /** Use `dot4I8Packed`. @default hasPackedDot() */
  packed?: boolean;
}

/** An int8 kernel bound to its buffers. */
export interface Int8Plan extends WaPlan {
  /** Whether the kernel uses `dot4I8Packed`. */
  readonly packed: boolean;
  /** Writes `batch` tokens. */
  write(x: Int8Acts): void;
}

/**
 * Binds an uploaded int8 weight to a batch size.
 *
 * @param gpu the device
 * @param lin the weight, from {@linkcode uploadInt8Weight}
 * @param opts tokens (`batch`: any T), output kind, tiling, packed or unpacked products
 * @returns the plan; release it before releasing `lin`
 * @throws RangeError when `packed` is asked for and the runtime lacks the feature
 */
export async function createInt8Plan(
  gpu: Gpu,
  lin: WaWeight,
  opts: Int8PlanOptions,
): Promise<Int8Plan> {
  const packed = opts.packed ?? hasPackedDot();
  if (packed && !hasPackedDot()) {
    throw new RangeError(
      `createInt8Plan(): packed: true needs the WGSL language feature ${PACKED_DOT_FEATURE}, ` +
        `which this runtime lacks; pass packed: false`,
    );
  }
  const plan = await createWaPlan(gpu, int8Scheme(packed), lin, opts);
  return {
    ...plan,
    packed,
    write(x: Int8Acts) {
      if (x.cols !== lin.cols || x.batch !== plan.batch) {
        throw new RangeError(
          `Int8Plan.write(): the plan takes ${plan.batch}×${lin.cols} activations, found ` +
            `${x.batch}×${x.cols}`,
        );
      }
      plan.writeTokens(x.words, x.scales, x.zeros, x.sums);
    },
  };
}

/**
 * One-shot W8A8 product on the GPU (any codes of ≤ 8 bits): packs and
 * uploads both sides, runs, reads back and releases everything.
 *
 * @param gpu the device
 * @param w the uniform weight [rows, cols]
 * @param x per-token activation codes [T, cols] (any T: decode or prefill tiles)
 * @param opts `output: "i32"` returns the exact integer accumulators; `packed`; tiling
 * @returns y [batch, rows] (Float32Array), or the accumulators (Int32Array)
 */
export async function int8MatmulGpu(
  gpu: Gpu,
  w: UniformTensor,
  x: ActCodes,
  opts: Omit<Int8PlanOptions, "batch"> = {},
): Promise<Float32Array | Int32Array> {
  if (x.cols !== w.cols) {
    throw new RangeError(`int8MatmulGpu(): weight has ${w.cols} columns, activations ${x.cols}`);
  }
  const lin = uploadInt8Weight(gpu, w);
  return await runWaOnce(
    gpu,
    lin,
    () => createInt8Plan(gpu, lin, { ...opts, batch: x.batch }),
    (plan) => plan.write(packInt8Acts(x)),
    opts.output,
  );
}
