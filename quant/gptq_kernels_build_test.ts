import assert from "node:assert/strict";
import { mulberry32 } from "../model/random.ts";
import { renderKernelsModule } from "../model/wasm/build.ts";
import {
  compileGptqKernels,
  GPTQ_KERNELS_MODULE_URL,
  GPTQ_KERNELS_ORIGIN,
} from "./gptq_kernels_build.ts";
import { GPTQ_KERNELS_WASM_BASE64 } from "./_gptq_kernels_wasm.ts";

const committed = Uint8Array.from(atob(GPTQ_KERNELS_WASM_BASE64), (c) => c.charCodeAt(0));

Deno.test("compileGptqKernels() reproduces the committed _gptq_kernels_wasm.ts byte for byte", async () => {
  const bytes = await compileGptqKernels();
  assert.deepEqual(bytes, committed, "rebuild with `deno run -A quant/gptq_kernels_build.ts`");
  assert.equal(
    renderKernelsModule(bytes, GPTQ_KERNELS_ORIGIN),
    await Deno.readTextFile(GPTQ_KERNELS_MODULE_URL),
  );
});

Deno.test("gemm_4x8 adds A·B in its packed layouts, every tile or the upper ones, flushing every kflush", () => {
  const memory = new WebAssembly.Memory({ initial: 4 });
  const { gemm_4x8 } = new WebAssembly.Instance(new WebAssembly.Module(committed), {
    env: { memory },
  }).exports as unknown as { gemm_4x8: (...args: number[]) => void };
  const f = new Float32Array(memory.buffer);
  const rand = mulberry32(7);
  // A [R, K] in panels of 8 rows at 0; B [K, J] in panels of 8 columns after; C [R, J] after
  for (
    const [R, J, K, kflush, upper, doff] of [[12, 24, 7, 7, 0, 0], [20, 16, 33, 4, 1, 0], [
      8,
      32,
      10,
      3,
      1,
      8,
    ]]
  ) {
    const R8 = (R + 7) & ~7, oB = R8 * K, oC = oB + J * K;
    const A = Float32Array.from({ length: R * K }, () => rand() - 0.5);
    const B = Float32Array.from({ length: K * J }, () => rand() - 0.5);
    const C0 = Float32Array.from({ length: R * J }, () => rand());
    f.fill(0);
    for (let r = 0; r < R; r++) {
      for (let k = 0; k < K; k++) f[(r >> 3) * K * 8 + k * 8 + (r & 7)] = A[r * K + k];
    }
    for (let k = 0; k < K; k++) {
      for (let j = 0; j < J; j++) f[oB + (j >> 3) * K * 8 + k * 8 + (j & 7)] = B[k * J + j];
    }
    f.set(C0, oC);
    gemm_4x8(0, K * 32, oB * 4, K, kflush, oC * 4, J * 4, R, J, 8, upper, doff);
    for (let r = 0; r < R; r++) {
      for (let j = 0; j < J; j++) {
        const computed = !upper || ((j & ~7) + 8 > (r & ~3) + doff);
        let want = C0[r * J + j];
        if (computed) {
          // fp32 sums of kflush products, each added to C (fused or not: 1e-5 covers both)
          for (let k0 = 0; k0 < K; k0 += kflush) {
            let s = 0;
            for (let k = k0; k < Math.min(k0 + kflush, K); k++) s += A[r * K + k] * B[k * J + j];
            want += s;
          }
        }
        const got = f[oC + r * J + j];
        assert.ok(
          Math.abs(got - want) <= 1e-5,
          `R ${R} J ${J} K ${K}: C[${r}, ${j}] = ${got}, want ${want}`,
        );
      }
    }
  }
});

Deno.test("transpose_f32 transposes a strided block of 4 × 4 tiles and writes nothing else", () => {
  const memory = new WebAssembly.Memory({ initial: 1 });
  const { transpose_f32 } = new WebAssembly.Instance(new WebAssembly.Module(committed), {
    env: { memory },
  }).exports as unknown as { transpose_f32: (...args: number[]) => void };
  const f = new Float32Array(memory.buffer);
  const rows = 8, cols = 260, lds = 264, ldd = 12; // S [rows, lds] at 0, D [cols, ldd] after
  const oD = rows * lds;
  for (let i = 0; i < oD; i++) f[i] = i + 0.5;
  f.fill(-1, oD, oD + cols * ldd);
  transpose_f32(0, lds * 4, oD * 4, ldd * 4, rows, cols);
  for (let c = 0; c < cols; c++) {
    for (let r = 0; r < ldd; r++) {
      assert.equal(f[oD + c * ldd + r], r < rows ? r * lds + c + 0.5 : -1, `D[${c}, ${r}]`);
    }
  }
});
