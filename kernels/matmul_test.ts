/**
 * The tiled matmul kernels (both tilings) equal the CPU reference — quant/format.ts's
 * dequantization to fp32 weights, then Y = X · Wᵀ accumulated in float64 —
 * within 1e-5 relative, for every format × bits 2..8, on odd shapes: T = 37
 * tokens (two token tiles, the second partial), 45 rows (a partial row
 * tile) and 83 columns (not a multiple of 32 or 4).
 */
import assert from "node:assert/strict";
import { randn } from "../model/random.ts";
import { maxRelError } from "../datasets/testing.ts";
import { gpuTest } from "./_testing.ts";
import type { Gpu } from "./device.ts";
import type { MatmulPlanOptions } from "./matmul.ts";
import {
  defaultNativeF16,
  hasShaderF16,
  isSoftwareAdapter,
  matmulGpu,
  UniformLayout,
} from "./matmul.ts";
import type { LinearWeight } from "../quant/format.ts";
import { addSparse, dequantizeDense, f16Tensor, f32Tensor, fromF16 } from "../quant/format.ts";
import { quantileLut, randomCsr, rtnUniform } from "../eval/bench/synthetic.ts";

const T = 37, ROWS = 45, COLS = 83, TOL = 1e-5;

/** The reference: fp32 weights from quant/format.ts, Y [T, rows] = X · Wᵀ in float64. */
function reference(w: LinearWeight, x: Float32Array, T: number): Float32Array {
  const d = w.dense;
  const { rows, cols } = d;
  const W = d.kind === "f32"
    ? Float32Array.from(d.data)
    : d.kind === "f16"
    ? fromF16(d.data)
    : dequantizeDense(d);
  if (w.sparse) addSparse(W, w.sparse);
  const y = new Float32Array(T * rows);
  for (let t = 0; t < T; t++) {
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let c = 0; c < cols; c++) s += W[r * cols + c] * x[t * cols + c];
      y[t * rows + r] = s;
    }
  }
  return y;
}

async function check(
  gpu: Gpu,
  what: string,
  w: LinearWeight,
  opts: Omit<MatmulPlanOptions, "tokens"> = {},
  tokens = T,
) {
  const x = randn(tokens * w.dense.cols, 11);
  const want = reference(w, x, tokens);
  for (const tiling of ["shared", "registers"] as const) {
    const got = await matmulGpu(gpu, w, x, tokens, { tiling, ...opts });
    const err = maxRelError(got, want);
    assert.ok(err <= TOL, `${what} T=${tokens} ${tiling}: relative error ${err} > ${TOL}`);
  }
}

const weights = randn(ROWS * COLS, 3);

gpuTest(
  "matmul: f32 and f16 (native shader-f16 and unpack2x16float) equal the reference",
  async (gpu) => {
    const before = gpu.pool.bytesInUse;
    await check(gpu, "f32", { dense: f32Tensor(weights, ROWS, COLS) });
    await check(gpu, "f32 aligned", { dense: f32Tensor(randn(33 * 64, 4), 33, 64) });
    const h = { dense: f16Tensor(weights, ROWS, COLS) };
    await check(gpu, "f16 fallback", h, { nativeF16: false });
    await check(gpu, `f16 native=${hasShaderF16(gpu)}`, h, { nativeF16: true });
    await check(gpu, "f16 even cols", { dense: f16Tensor(randn(33 * 64, 4), 33, 64) });
    assert.equal(gpu.pool.bytesInUse, before, "every buffer returned to the pool");
  },
);

gpuTest(
  "matmul: f16 read as array<f16> and with unpack2x16float give the same bits; software adapters default to unpack",
  async (gpu) => {
    assert.equal(defaultNativeF16(gpu), hasShaderF16(gpu) && !isSoftwareAdapter(gpu));
    if (/llvmpipe/i.test(gpu.info.description)) assert.equal(defaultNativeF16(gpu), false);
    if (!hasShaderF16(gpu)) return; // nothing to compare: only the unpack read exists
    for (const [rows, cols] of [[ROWS, COLS], [33, 64]]) {
      const h = { dense: f16Tensor(randn(rows * cols, 5), rows, cols) };
      const x = randn(T * cols, 6);
      for (const tiling of ["shared", "registers"] as const) {
        const native = await matmulGpu(gpu, h, x, T, { tiling, nativeF16: true });
        const packed = await matmulGpu(gpu, h, x, T, { tiling, nativeF16: false });
        const differ = native.findIndex((v, i) => !Object.is(v, packed[i]));
        assert.equal(differ, -1, `${rows}×${cols} ${tiling}: output ${differ} differs`);
      }
    }
  },
);

for (let bits = 2; bits <= 8; bits++) {
  gpuTest(
    `matmul: uniform ${bits}-bit (per row, groups of 32, groups of 10, act-order gIdx) and lut ${bits}-bit equal the reference`,
    async (gpu) => {
      const u = (o: object) => ({ dense: rtnUniform(weights, ROWS, COLS, { bits, ...o }) });
      await check(gpu, `uniform b=${bits}`, u({}));
      await check(gpu, `uniform b=${bits} g32`, u({ groupSize: 32, sym: true }));
      await check(gpu, `uniform b=${bits} g10`, u({ groupSize: 10 }));
      await check(gpu, `uniform b=${bits} gIdx`, u({ groupSize: 16, actOrderSeed: bits }));
      await check(gpu, `lut b=${bits}`, { dense: quantileLut(weights, ROWS, COLS, bits) });
    },
  );
}

gpuTest(
  "matmul: the CSR sparse part (fp16 and fp32 values) is added to every format",
  async (gpu) => {
    for (const dtype of ["f16", "f32"] as const) {
      const sparse = randomCsr(ROWS, COLS, 0.05, 9, dtype);
      await check(gpu, `lut3+csr ${dtype}`, { dense: quantileLut(weights, ROWS, COLS, 3), sparse });
      await check(gpu, `uniform4 gIdx+csr ${dtype}`, {
        dense: rtnUniform(weights, ROWS, COLS, { bits: 4, groupSize: 16, actOrderSeed: 1 }),
        sparse,
      });
    }
    // A row with every column nonzero, empty rows around it.
    const rowPtr = new Int32Array(ROWS + 1).fill(COLS, 2);
    const dense = f32Tensor(weights, ROWS, COLS);
    const full = randomCsr(1, COLS, 1, 5, "f32");
    await check(gpu, "f32+one full row", {
      dense,
      sparse: { ...full, rows: ROWS, rowPtr },
    });
  },
);

gpuTest(
  "matmul: weights and activations beyond the binding limit split into row and token windows; 2-D grids",
  async (gpu) => {
    const w = { dense: rtnUniform(weights, ROWS, COLS, { bits: 3, groupSize: 10 }) };
    // 64 tokens of 83 floats fit a binding, 150 do not: three token windows.
    await check(gpu, "token windows", w, { maxBindingBytes: 64 * 4 * COLS + 16 }, 150);
    // f32 100×100 (40,000 bytes) and f16 150×150 (45,000 bytes) above a limit that 64 tokens
    // fit: row windows × token windows, on a grid folded into 2-D.
    const f32 = { dense: f32Tensor(randn(100 * 100, 5), 100, 100) };
    await check(gpu, "f32 row+token windows", f32, {
      maxBindingBytes: 64 * 400 + 16,
      maxWorkgroupsPerDim: 3,
    }, 150);
    const f16 = { dense: f16Tensor(randn(150 * 150, 6), 150, 150) };
    await check(gpu, "f16 row+token windows", f16, { maxBindingBytes: 64 * 600 + 16 }, 70);
    await assert.rejects(
      () => matmulGpu(gpu, w, randn(10 * COLS, 1), 10, { maxBindingBytes: 64 }),
      /exceeds the binding limit|above the binding limit/,
    );
  },
);

Deno.test("UniformLayout: the WGSL struct and the packed bytes follow one field list", () => {
  const L = new UniformLayout("Params", { n: "u32", eps: "f32", m: "u32", k: "u32", z: "u32" });
  assert.equal(
    L.wgsl(),
    "struct Params { n: u32, eps: f32, m: u32, k: u32, z: u32, _p0: u32, _p1: u32, _p2: u32 }",
  );
  const b = L.pack({ n: 3, eps: 0.5, m: 7, k: 0xffffffff, z: 1 });
  assert.equal(b.byteLength, 32);
  assert.deepEqual([...new Uint32Array(b, 0, 1)], [3]);
  assert.deepEqual([...new Float32Array(b, 4, 1)], [0.5]);
  assert.deepEqual([...new Uint32Array(b, 12, 1)], [0xffffffff]);
  assert.throws(() => L.pack({ n: 3 } as never), /Params\.eps: expected a number/);
});
