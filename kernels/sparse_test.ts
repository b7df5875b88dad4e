/**
 * Dense + CSR sparse kernels: the sparse part fused into the dense kernel and
 * as the separate load-balanced two-pass kernel both equal the CPU
 * reference, including degenerate sparsity patterns, 2-D grids and weights
 * bound as several windows.
 */
import assert from "node:assert/strict";
import type { CsrMatrix } from "../quant/format.ts";
import { randn } from "../model/random.ts";
import { maxRelError } from "../datasets/testing.ts";
import { gpuTest } from "./_testing.ts";
import type { Gpu } from "./device.ts";
import { matvecGpu } from "./matvec.ts";
import type { MatvecPlanOptions } from "./matvec.ts";
import { matvecRef } from "./reference.ts";
import { f16Tensor, f32Tensor } from "../quant/format.ts";
import type { LinearWeight } from "../quant/format.ts";
import { csrFrom, quantileLut, randomCsr, rtnUniform } from "../eval/bench/synthetic.ts";

const MODES = ["fused", "separate"] as const;

async function expectMatch(
  gpu: Gpu,
  what: string,
  weight: LinearWeight,
  opts: Omit<MatvecPlanOptions, "batch"> = {},
  batches = [1, 5],
) {
  const { cols } = weight.dense;
  for (const B of batches) {
    const x = randn(B * cols, 100 + B);
    const want = matvecRef(weight, x, B);
    for (const sparseMode of MODES) {
      const got = await matvecGpu(gpu, weight, x, B, { ...opts, sparseMode });
      const err = maxRelError(got, want);
      assert.ok(err <= 1e-5, `${what} B=${B} ${sparseMode}: relative error ${err}`);
    }
  }
}

for (let bits = 2; bits <= 8; bits++) {
  gpuTest(
    `lut+sparse and uniform+sparse ${bits}-bit, fused and separate, equal the CPU reference`,
    async (gpu) => {
      for (const [rows, cols] of [[37, 83], [129, 167]]) {
        const w = randn(rows * cols, bits * rows);
        const sparse = randomCsr(rows, cols, 0.04, bits, bits % 2 ? "f16" : "f32");
        await expectMatch(gpu, `lut b=${bits} ${rows}×${cols}`, {
          dense: quantileLut(w, rows, cols, bits),
          sparse,
        });
        await expectMatch(gpu, `uniform b=${bits} ${rows}×${cols}`, {
          dense: rtnUniform(w, rows, cols, { bits }),
          sparse,
        });
      }
    },
  );
}

/** Sparsity patterns that stress the chunking: rows × cols = 61 × 83. */
function patterns(dtype: "f16" | "f32"): [string, CsrMatrix][] {
  const rows = 61, cols = 83;
  const vals = (n: number) => Array.from(randn(n, n + 1));
  const fromRows = (rowCols: number[][]) => {
    const rowPtr = [0], colIdx: number[] = [];
    for (const cs of rowCols) {
      colIdx.push(...cs);
      rowPtr.push(colIdx.length);
    }
    return csrFrom(rows, cols, rowPtr, colIdx, vals(colIdx.length), dtype);
  };
  const all = Array.from({ length: cols }, (_, c) => c);
  return [
    ["no nonzeros", fromRows(Array.from({ length: rows }, () => []))],
    [
      "one row holding every nonzero",
      fromRows(Array.from({ length: rows }, (_, r) => r === 17 ? all : [])),
    ],
    [
      "only the last row",
      fromRows(Array.from({ length: rows }, (_, r) => r === rows - 1 ? [0, 5, 82] : [])),
    ],
    [
      "empty rows between rows that cross chunk boundaries",
      fromRows(
        Array.from(
          { length: rows },
          (_, r) => r % 3 ? [] : all.filter((c) => (c * 7 + r) % (r % 11 + 2) === 0),
        ),
      ),
    ],
    [
      "rows of exactly 10 and 20 nonzeros (chunk-aligned)",
      fromRows(Array.from({ length: rows }, (_, r) => all.slice(r, r + (r % 2 ? 10 : 20)))),
    ],
    ["a full matrix", fromRows(Array.from({ length: rows }, () => all))],
  ];
}

gpuTest(
  "sparse edge cases (no nonzeros, one full row, empty rows, chunk-aligned rows), f16 and f32 values",
  async (gpu) => {
    const w = randn(61 * 83, 9);
    for (const dtype of ["f16", "f32"] as const) {
      for (const [name, sparse] of patterns(dtype)) {
        await expectMatch(gpu, `${name} (${dtype}) + lut3`, {
          dense: quantileLut(w, 61, 83, 3),
          sparse,
        });
        await expectMatch(
          gpu,
          `${name} (${dtype}) + f32`,
          { dense: f32Tensor(w, 61, 83), sparse },
          {},
          [1],
        );
      }
    }
  },
);

gpuTest(
  "2-D workgroup grids and weights split into binding windows give the same results",
  async (gpu) => {
    const [rows, cols] = [129, 67];
    const w = randn(rows * cols, 4);
    const sparse = randomCsr(rows, cols, 0.5, 5, "f32"); // ~430 chunks: 7 workgroups
    const cases: [string, LinearWeight][] = [
      ["f32", { dense: f32Tensor(w, rows, cols), sparse }],
      ["f32 aligned", { dense: f32Tensor(w.subarray(0, rows * 64), rows, 64) }],
      ["f16 (odd cols: rows start mid-word)", { dense: f16Tensor(w, rows, cols), sparse }],
      ["uniform 3-bit g32", {
        dense: rtnUniform(w, rows, cols, { bits: 3, groupSize: 32 }),
        sparse,
      }],
      ["uniform 5-bit gIdx", {
        dense: rtnUniform(w, rows, cols, { bits: 5, groupSize: 8, actOrderSeed: 1 }),
      }],
      ["lut 7-bit", { dense: quantileLut(w, rows, cols, 7), sparse }],
    ];
    for (const [name, weight] of cases) {
      // ≤ 3 workgroups per dimension (9 groups of 16 rows → 3×3 grid, 7 chunk groups → 3×3),
      // and ≤ 1 KiB per weight binding (many windows at 256-byte-aligned offsets).
      await expectMatch(gpu, `${name} 2-D`, weight, { maxWorkgroupsPerDim: 3 }, [5]);
      await expectMatch(gpu, `${name} windows`, weight, { maxBindingBytes: 1024 }, [1]);
    }
  },
);
