import assert from "node:assert/strict";
import { mulberry32 } from "../model/random.ts";
import { renderKernelsModule } from "../model/wasm/build.ts";
import {
  compileGptqKernels,
  GPTQ_KERNELS_MODULE_URL,
  GPTQ_KERNELS_ORIGIN,
} from "./gptq_kernels_build.ts";
import { GPTQ_KERNELS_WASM_BASE64 } from "./_gptq_kernels_wasm.ts";
import { gptqKernels } from "./gptq_kernels.ts";
import { growMemory } from "../model/wasm/kernels.ts";

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

/** gptq_kernels.wat on a fresh memory of `pages` pages, and a float view of it. */
function instantiate(pages: number) {
  const memory = new WebAssembly.Memory({ initial: pages });
  const k = new WebAssembly.Instance(new WebAssembly.Module(committed), { env: { memory } })
    .exports as unknown as Record<string, (...args: number[]) => void>;
  return { k, f: new Float32Array(memory.buffer), memory };
}

Deno.test("pack_t_f32 packs a strided Sᵀ into panels of 8 columns, negated or not", () => {
  const { k, f } = instantiate(1);
  const J = 16, K = 12, lds = 20; // S [J, lds] at 0, B [K, J] packed at 1024
  for (let i = 0; i < J * lds; i++) f[i] = i - 100.5;
  f[3] = 0; // −0 when negated, as JavaScript's unary minus
  for (const neg of [0, 1]) {
    k.pack_t_f32(0, lds * 4, 4096, J, K, neg);
    for (let kk = 0; kk < K; kk++) {
      for (let j = 0; j < J; j++) {
        const want = neg ? -f[j * lds + kk] : f[j * lds + kk];
        assert.ok(Object.is(f[1024 + ((j >> 3) * K + kk) * 8 + (j & 7)], want), `B[${kk}, ${j}]`);
      }
    }
  }
});

Deno.test("chol_panel_f32 and trinv_rows_f32 give plain JavaScript's float64-then-float32 results bit for bit", () => {
  const rand = mulberry32(11);
  // L_d: a well-conditioned lower-triangular block with a positive diagonal (one zero below it)
  const bw = 12, m = 16, ldt = 20, ib = 8, w = 12, np = ib + w, ldx = 24;
  const Ld = new Float32Array(bw * bw);
  for (let r = 0; r < bw; r++) {
    for (let c = 0; c < r; c++) Ld[r * bw + c] = rand() - 0.5;
    Ld[r * bw + r] = 1 + rand();
  }
  Ld[5 * bw + 2] = 0; // a zero multiplier is skipped, as the TypeScript did
  const { k, f } = instantiate(1);
  const oD = 2048, D = new Float64Array(f.buffer, oD * 4, bw * bw);
  D.set(Ld);

  // chol_panel_f32 on PT [bw, m] (stride ldt) against the row-by-row substitution
  const PT = Float32Array.from({ length: bw * ldt }, () => rand() - 0.5);
  f.set(PT, 0);
  k.chol_panel_f32(0, ldt * 4, oD * 4, bw, m);
  const want = PT.slice();
  for (let c = 0; c < m; c++) {
    for (let j = 0; j < bw; j++) {
      let s = want[j * ldt + c];
      for (let t = 0; t < j; t++) s -= want[t * ldt + c] * Ld[j * bw + t];
      want[j * ldt + c] = s / Ld[j * bw + j];
    }
  }
  for (let i = 0; i < bw * ldt; i++) assert.ok(Object.is(f[i], want[i]), `PT flat ${i}`);

  // trinv_rows_f32 on rows ib..ib+w of X [np, ldx], row-major: rows < ib lower
  // triangular, rows ≥ ib holding values left of ib and zeros elsewhere
  const X = new Float32Array(np * ldx);
  for (let i = 0; i < np; i++) {
    for (let j = 0; j < Math.min(i + 1, ib); j++) X[i * ldx + j] = rand() - 0.5;
  }
  D.set(Ld.subarray(0, w * w)); // D [w, w] (w = bw here)
  f.set(X, 0);
  k.trinv_rows_f32(0, ldx * 4, 32, oD * 4, ib, w);
  const wantX = X.slice();
  for (let i = ib; i < ib + w; i++) {
    const ri = i * ldx, r = i - ib;
    for (let t = ib; t < i; t++) {
      const l = Ld[r * w + t - ib];
      if (l === 0) continue;
      for (let j = 0; j <= t; j++) wantX[ri + j] -= l * wantX[t * ldx + j];
    }
    wantX[ri + i] += 1;
    for (let j = 0; j <= i; j++) wantX[ri + j] /= Ld[r * w + r];
  }
  for (let i = 0; i < np * ldx; i++) assert.ok(Object.is(f[i], wantX[i]), `X flat ${i}`);
});

Deno.test("gemm_tri_f32 gives model/wasm gemm_f32's bits (mode 3, fused) on a triangular inverse's block rows, whatever its k chunk", () => {
  const k = gptqKernels("gemm_tri_f32 test");
  const K = 40, w = 16, ld = 44; // X [K, K] lower triangular; −L [w, K]
  const oX = 0, oXP = K * ld, oP = oXP + K * (K + w), oT = oP + w * K, oC = oT + K * w;
  growMemory("gemm_tri_f32 test", k.memory, (oC + 64) * 4);
  const f = new Float32Array(k.memory.buffer);
  const rand = mulberry32(5);
  // X row-major (stride ld) and in panels of 8 columns with rows K .. K + w after (C)
  const sp = (K + w) * 8; // floats per panel
  for (let i = 0; i < K; i++) {
    for (let j = 0; j <= i; j++) {
      const v = rand() - 0.5;
      f[oX + i * ld + j] = v;
      f[oXP + (j >> 3) * sp + i * 8 + (j & 7)] = v;
    }
  }
  // −L in panels of 8 (rows r): the B of gemm_f32 and the A of gemm_tri_f32
  const L = Float32Array.from({ length: w * K }, () => rand() - 0.5);
  f.set(L, oC); // scratch source for the packing
  k.pack_t_f32(oC * 4, K * 4, oP * 4, w, K, 1);
  // reference: T [K, w] = Xᵀ · (−L)ᵀ, mode 3, one call
  f.fill(0, oT, oT + K * w);
  k.gemm_f32(oX * 4, 32, ld * 4, oP * 4, K, oT * 4, w * 4, K, w, 128, 3, 0, 1);
  for (const kc of [K, 7, 16]) {
    for (let p = 0; p < K / 8; p++) f.fill(0, oXP + p * sp + K * 8, oXP + (p + 1) * sp);
    k.gemm_tri_f32(oP * 4, K * 32, oXP * 4, sp * 4, (oXP + K * 8) * 4, w, K, K, kc);
    for (let r = 0; r < w; r++) {
      for (let j = 0; j < K; j++) {
        const got = f[oXP + (j >> 3) * sp + (K + r) * 8 + (j & 7)];
        assert.ok(Object.is(got, f[oT + j * w + r]), `kc ${kc}: C[${r}, ${j}] = ${got}`);
      }
    }
  }
});
