/**
 * Seeded random operands of the W×A kernel tests: uniform weights with
 * random codes over the whole range, integer zero points and fp16 scales,
 * and per-token activation codes.
 *
 * @module
 */
import assert from "node:assert/strict";
import { mulberry32 } from "../model/random.ts";
import type { UniformTensor } from "../quant/format.ts";
import { packCodes, toF16 } from "../quant/format.ts";
import type { ActCodes } from "./bitplane_reference.ts";
import { waAccRef } from "./bitplane_reference.ts";
import type { Gpu } from "./device.ts";
import { hasPackedDot, int8MatmulGpu } from "./int8.ts";

/**
 * A uniform weight with uniformly random codes, zeros and scales.
 * @param seed seed
 * @param rows output features
 * @param cols input features
 * @param bits code width
 * @param groupSize columns per group (cols for one per row) @default cols
 * @param maxCode largest code (ABQ-LLM's bit balance: 4 at 3 bits) @default 2^bits − 1
 */
export function randomUniform(
  seed: number,
  rows: number,
  cols: number,
  bits: number,
  groupSize = cols,
  maxCode = (1 << bits) - 1,
): UniformTensor {
  const u = mulberry32(seed);
  const ng = Math.ceil(cols / groupSize);
  const codes = Uint8Array.from({ length: rows * cols }, () => Math.floor(u() * (maxCode + 1)));
  return {
    kind: "uniform",
    bits,
    rows,
    cols,
    groupSize,
    sym: false,
    codes: packCodes(codes, rows, cols, bits),
    scales: toF16(Array.from({ length: rows * ng }, () => 0.001 + 0.02 * u())),
    zeros: toF16(Array.from({ length: rows * ng }, () => Math.floor(u() * (maxCode + 1)))),
  };
}

/**
 * Per-token activation codes with uniformly random codes, zeros and scales.
 * @param seed seed
 * @param batch tokens
 * @param cols input features
 * @param bits code width
 */
export function randomActs(seed: number, batch: number, cols: number, bits: number): ActCodes {
  const u = mulberry32(seed);
  const maxq = (1 << bits) - 1;
  return {
    batch,
    cols,
    bits,
    codes: Uint8Array.from({ length: batch * cols }, () => Math.floor(u() * (maxq + 1))),
    scales: Float32Array.from({ length: batch }, () => 0.01 + u()),
    zeros: Int32Array.from({ length: batch }, () => Math.floor(u() * (maxq + 1))),
  };
}

/**
 * 8-bit operands at the accumulator's extreme: every weight and activation
 * code 255 and every zero 0, so each of the `rows` × 2 tokens accumulates
 * K · 255² over K = 4096 columns.
 * @param rows output features
 * @returns the weight [rows, 4096] and 2 tokens of activations
 */
export function maxCodeOperands(rows: number): { w: UniformTensor; x: ActCodes } {
  const w = randomUniform(5, rows, 4096, 8);
  w.codes.fill(0xffffffff);
  w.zeros.fill(0);
  const x = randomActs(6, 2, 4096, 8);
  x.codes.fill(255);
  x.zeros.fill(0);
  return { w, x };
}

/** Where two accumulator arrays first differ, for a failing assertion's message. */
export function firstDiff(a: Int32Array, b: Int32Array): string {
  const i = a.findIndex((v, k) => v !== b[k]);
  return i < 0 ? "equal" : `first difference at ${i}: ${a[i]} vs ${b[i]}`;
}

/**
 * Asserts that the int8 kernel's integer accumulators equal the CPU
 * reference exactly, with the packed dot product where the device has it
 * and without.
 * @param label names the case in a failure
 * @returns the reference accumulators
 */
export async function assertInt8Exact(
  gpu: Gpu,
  w: UniformTensor,
  x: ActCodes,
  label: string,
): Promise<Int32Array> {
  const want = waAccRef(w, x);
  for (const packed of hasPackedDot() ? [true, false] : [false]) {
    const got = await int8MatmulGpu(gpu, w, x, { output: "i32", packed }) as Int32Array;
    assert.deepEqual(got, want, `${label} packed=${packed}: ${firstDiff(got, want)}`);
  }
  return want;
}
