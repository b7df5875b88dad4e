import assert from "node:assert/strict";
import { type CsrMatrix, type LutTensor, packCodes, toF16 } from "./format.ts";
import { rtn } from "./rtn.ts";
import {
  PAPER_SPARSE_ACCOUNTING,
  type QuantLayout,
  sizeOf,
  sizeOfLayout,
  sizeOfModel,
  type SizeOptions,
  sumSizes,
} from "./size.ts";

/** LLaMA-7B's seven linears of one layer as [rows = out, cols = in]. */
const LLAMA7B: [number, number][] = [
  [4096, 4096], // q
  [4096, 4096], // k
  [4096, 4096], // v
  [4096, 4096], // o
  [11008, 4096], // gate
  [11008, 4096], // up
  [4096, 11008], // down
];

function llama7bAvgBits(
  layout: (rows: number, cols: number) => QuantLayout,
  opts?: SizeOptions,
): number {
  // every layer is the same, so one layer's average is the model's
  return sumSizes(LLAMA7B.map(([r, c]) => sizeOfLayout(layout(r, c), opts))).avgBitsPerWeight;
}

Deno.test("sizeOf() counts 3-bit groups of 128 as 3.25 bits per weight", () => {
  const q = rtn(new Float32Array(8 * 256).map((_, i) => Math.sin(i)), 8, 256, {
    bits: 3,
    groupSize: 128,
  });
  const s = sizeOf({ dense: q });
  assert.equal(s.avgBitsPerWeight, 3.25);
  assert.deepEqual(s.bits, {
    codes: 3 * 8 * 256,
    scales: 16 * 8 * 2,
    zeros: 16 * 8 * 2,
    gIdx: 0,
    lut: 0,
    sparseValues: 0,
    sparseIndices: 0,
    sparseRowPtr: 0,
  });
  assert.equal(s.bytes.codes, 8 * 24 * 4); // 768 bits per row = 24 words
  assert.equal(s.bytes.total, 8 * 24 * 4 + 32 + 32);
  assert.equal(
    sizeOfLayout({ kind: "uniform", bits: 3, rows: 4096, cols: 4096, groupsPerRow: 32 })
      .avgBitsPerWeight,
    3.25,
  );
  // one group per row: 16·2/cols more
  assert.equal(
    sizeOfLayout({ kind: "uniform", bits: 4, rows: 10, cols: 4096 }).avgBitsPerWeight,
    4 + 32 / 4096,
  );
});

Deno.test("sizeOf() counts codes without padding but reports the padded bytes", () => {
  // 3 bits × 11 columns = 33 bits per row, stored in 2 words
  const s = sizeOfLayout({ kind: "uniform", bits: 3, rows: 5, cols: 11 });
  assert.equal(s.bits.codes, 5 * 33);
  assert.equal(s.bytes.codes, 5 * 8);
  assert.equal(s.avgBitsPerWeight, (5 * 33 + 32 * 5) / 55);
});

Deno.test("sizeOf() counts g_idx at 32 bits per column", () => {
  const s = sizeOfLayout({
    kind: "uniform",
    bits: 4,
    rows: 64,
    cols: 256,
    groupsPerRow: 2,
    gIdx: true,
  });
  assert.equal(s.bits.gIdx, 32 * 256);
  assert.equal(s.avgBitsPerWeight, 4 + 32 / 128 + 32 / 64);
  const q = rtn(new Float32Array(4 * 8).fill(1), 4, 8, { bits: 2, groupSize: 4 });
  const withIdx = sizeOf({ dense: { ...q, gIdx: Int32Array.from([1, 0, 1, 0, 1, 0, 1, 0]) } });
  assert.equal(withIdx.bits.gIdx, 32 * 8);
  assert.equal(withIdx.bytes.gIdx, 32);
});

Deno.test("sizeOf() adds 16·2^b/cols bits for a per-row lookup table (3.03125 at 4096 columns)", () => {
  const rows = 2, cols = 4096;
  const lut: LutTensor = {
    kind: "lut",
    bits: 3,
    rows,
    cols,
    codes: packCodes(new Uint8Array(rows * cols), rows, cols, 3),
    lut: toF16(new Float32Array(rows * 8)),
  };
  const s = sizeOf({ dense: lut });
  assert.equal(s.avgBitsPerWeight, 3 + (16 * 8) / 4096);
  assert.equal(s.avgBitsPerWeight, 3.03125);
  assert.equal(s.bits.lut, 16 * 8 * rows);
  assert.equal(s.bytes.lut, 32);
});

Deno.test("sizeOf() counts CSR values, 16/32-bit indices and row pointers", () => {
  const dense = rtn(new Float32Array(3 * 10), 3, 10, { bits: 2 });
  const sparse: CsrMatrix = {
    rows: 3,
    cols: 10,
    rowPtr: Int32Array.from([0, 2, 2, 4]),
    colIdx: Int32Array.from([1, 9, 0, 5]),
    values: toF16([1, 2, 3, 4]),
    dtype: "f16",
  };
  const s = sizeOf({ dense, sparse });
  assert.equal(s.bits.sparseValues, 4 * 16);
  assert.equal(s.bits.sparseIndices, 4 * 16);
  assert.equal(s.bits.sparseRowPtr, 4 * 32);
  assert.equal(s.bytes.sparseRowPtr, 16);
  const s32 = sizeOf({ dense, sparse: { ...sparse, values: new Float32Array(4), dtype: "f32" } });
  assert.equal(s32.bits.sparseValues, 4 * 32);
  assert.equal(
    sizeOf({ dense, sparse }, { indexBits: 32, rowPtrBits: 0 }).bits.sparseIndices,
    4 * 32,
  );
  assert.equal(sizeOf({ dense, sparse }, PAPER_SPARSE_ACCOUNTING).bits.sparseRowPtr, 0);
  // wide rows need 32-bit indices
  const wide = sizeOfLayout({ kind: "lut", bits: 3, rows: 1, cols: 70000, nnz: 10 });
  assert.equal(wide.bits.sparseIndices, 10 * 32);
  assert.equal(
    sizeOfLayout({ kind: "lut", bits: 3, rows: 1, cols: 65536, nnz: 10 }).bits.sparseIndices,
    160,
  );
  // an empty sparse part still stores its row pointers
  const empty = sizeOf({
    dense,
    sparse: { ...sparse, rowPtr: new Int32Array(4), colIdx: new Int32Array(0) },
  });
  assert.equal(empty.bits.sparseRowPtr, 128);
  assert.equal(empty.bits.sparseValues, 0);
  // the model-level sum
  const m = sizeOfModel([{ dense }, { dense, sparse }]);
  assert.equal(m.weights, 60);
  assert.equal(m.totalBits, sizeOf({ dense }).totalBits * 2 + 64 + 64 + 128);
  assert.equal(m.avgBitsPerWeight, m.totalBits / 60);
  assert.deepEqual(sizeOfModel(new Map([["a", { dense }], ["b", { dense, sparse }]])), m);
});

Deno.test("SqueezeLLM's LLaMA-7B 'Avg. Bits' (3.02 dense, 3.24 with 0.45% sparse) under each accounting", () => {
  const lut = (rows: number, cols: number): QuantLayout => ({ kind: "lut", bits: 3, rows, cols });
  const lutSparse = (rows: number, cols: number): QuantLayout => ({
    ...lut(rows, cols),
    nnz: Math.round(0.0045 * rows * cols),
  });
  // one fp16 LUT per output row: 3 + 128·42496/202375168
  const dense = llama7bAvgBits(lut);
  assert.ok(Math.abs(dense - 3.0268782) < 1e-6, `${dense}`);
  assert.equal(dense.toFixed(2), "3.03"); // the paper prints 3.02
  // 48 bits per nonzero without row pointers reproduces the paper's 3.24
  const paper = llama7bAvgBits(lutSparse, PAPER_SPARSE_ACCOUNTING);
  assert.ok(Math.abs(paper - 3.2428782) < 1e-6, `${paper}`);
  assert.equal(paper.toFixed(2), "3.24");
  // with 32-bit row pointers it would print 3.25
  assert.equal(llama7bAvgBits(lutSparse, { indexBits: 32 }).toFixed(4), "3.2496");
  // the default (fp16 values, 16-bit indices, 32-bit row pointers) is cheaper
  assert.equal(llama7bAvgBits(lutSparse).toFixed(4), "3.1776");
  // SqueezeLLM's released storage: fp32 values, int32 indices and row pointers
  const released = llama7bAvgBits((r, c) => ({ ...lutSparse(r, c), sparseDtype: "f32" }), {
    indexBits: 32,
  });
  assert.equal(released.toFixed(4), "3.3216");
});
