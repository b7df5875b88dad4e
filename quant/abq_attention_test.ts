import assert from "node:assert/strict";
import { kvDim, type LlamaConfig } from "../model/config.ts";
import { mulberry32, tinyConfig } from "../model/random.ts";
import { renderKernelsModule } from "../model/wasm/build.ts";
import { AbqAttention, triangle } from "./abq_attention.ts";
import {
  ABQ_KERNELS_MODULE_URL,
  ABQ_KERNELS_ORIGIN,
  compileAbqKernels,
} from "./abq_kernels_build.ts";
import { ABQ_KERNELS_WASM_BASE64 } from "./_abq_kernels_wasm.ts";

Deno.test("compileAbqKernels() reproduces the committed _abq_kernels_wasm.ts byte for byte", async () => {
  const bytes = await compileAbqKernels();
  const committed = Uint8Array.from(atob(ABQ_KERNELS_WASM_BASE64), (c) => c.charCodeAt(0));
  assert.deepEqual(bytes, committed, "rebuild with `deno run -A quant/abq_kernels_build.ts`");
  assert.equal(
    renderKernelsModule(bytes, ABQ_KERNELS_ORIGIN),
    await Deno.readTextFile(ABQ_KERNELS_MODULE_URL),
  );
});

/**
 * Causal GQA attention and its backward in float64 scalar loops: att, the
 * head-averaged probabilities, and dq | dk | dv from dAtt and dAvg.
 */
function reference(
  c: LlamaConfig,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  dAtt: Float32Array,
  dAvg: Float32Array,
  T: number,
) {
  const { dim, nHeads } = c, kv = kvDim(c), hs = dim / nHeads, groups = nHeads / c.nKvHeads;
  const qkv = dim + 2 * kv, scale = 1 / Math.sqrt(hs);
  const att = new Float64Array(T * dim), avg = new Float64Array(triangle(T));
  const d = new Float64Array(T * qkv);
  for (let h = 0; h < nHeads; h++) {
    const g = Math.floor(h / groups), qo = h * hs, ko = g * hs;
    const P: number[][] = [];
    for (let t = 0; t < T; t++) {
      const s: number[] = [];
      for (let u = 0; u <= t; u++) {
        let x = 0;
        for (let j = 0; j < hs; j++) x += q[t * dim + qo + j] * k[u * kv + ko + j];
        s.push(x * scale);
      }
      const m = Math.max(...s), e = s.map((x) => Math.exp(x - m));
      const z = e.reduce((a, b) => a + b, 0);
      P.push(e.map((x) => x / z));
      for (let u = 0; u <= t; u++) {
        avg[triangle(t) + u] += P[t][u] / nHeads;
        for (let j = 0; j < hs; j++) att[t * dim + qo + j] += P[t][u] * v[u * kv + ko + j];
      }
    }
    for (let t = 0; t < T; t++) {
      const dP: number[] = [];
      for (let u = 0; u <= t; u++) {
        let x = dAvg[triangle(t) + u] / nHeads;
        for (let j = 0; j < hs; j++) {
          x += dAtt[t * dim + qo + j] * v[u * kv + ko + j];
          d[u * qkv + dim + kv + ko + j] += P[t][u] * dAtt[t * dim + qo + j];
        }
        dP.push(x);
      }
      const D = dP.reduce((a, x, u) => a + x * P[t][u], 0);
      for (let u = 0; u <= t; u++) {
        const dS = P[t][u] * (dP[u] - D) * scale;
        for (let j = 0; j < hs; j++) {
          d[t * qkv + qo + j] += dS * k[u * kv + ko + j];
          d[u * qkv + dim + ko + j] += dS * q[t * dim + qo + j];
        }
      }
    }
  }
  return { att, avg, d };
}

function assertClose(name: string, got: Float32Array, want: Float64Array, n: number) {
  for (let i = 0; i < n; i++) {
    const tol = 2e-5 * Math.max(1, Math.abs(want[i]));
    assert.ok(Math.abs(got[i] - want[i]) <= tol, `${name}[${i}]: ${got[i]} vs ${want[i]}`);
  }
}

Deno.test("AbqAttention: forward (output, head-averaged map) and backward (dq, dk, dv with the map's gradient) equal a float64 reference on odd shapes, windows shorter than maxT and reused buffers", () => {
  const cases: [Partial<LlamaConfig>, number, number[]][] = [
    [{ dim: 8, nHeads: 2, nKvHeads: 1 }, 6, [6]], // hs 4: panels padded to 8
    [{ dim: 24, nHeads: 4, nKvHeads: 2 }, 21, [21, 7, 13, 1]], // T not a multiple of 4 or 8
    [{ dim: 64, nHeads: 8, nKvHeads: 4 }, 40, [37]], // stories260K's heads
  ];
  const u = mulberry32(7);
  const rand = (n: number) => Float32Array.from({ length: n }, () => 2 * u() - 1);
  for (const [shape, maxT, windows] of cases) {
    const c = tinyConfig({ ...shape, hiddenDim: 12, nLayers: 1, maxSeqLen: maxT });
    const kv = kvDim(c), a = new AbqAttention(c, maxT);
    for (const T of windows) {
      const q = rand(T * c.dim), k = rand(T * kv), v = rand(T * kv);
      const dAtt = rand(T * c.dim), dAvg = rand(triangle(T));
      const att = new Float32Array(T * c.dim), avg = new Float32Array(triangle(maxT));
      const d = new Float32Array(T * (c.dim + 2 * kv));
      a.forward(att, q, k, v, T, avg);
      a.backward(d, dAtt, dAvg, q, k, v, T);
      const want = reference(c, q, k, v, dAtt, dAvg, T);
      const at = `dim ${c.dim} T ${T}`;
      assertClose(`${at} att`, att, want.att, att.length);
      assertClose(`${at} avg`, avg, want.avg, triangle(T));
      assertClose(`${at} dqkv`, d, want.d, d.length);
    }
  }
});

Deno.test("AbqAttention rejects a window longer than maxT", () => {
  const c = tinyConfig({ dim: 8, nHeads: 2, nKvHeads: 1, nLayers: 1, maxSeqLen: 4 });
  const a = new AbqAttention(c, 4), z = (n: number) => new Float32Array(n);
  assert.throws(
    () => a.forward(z(40), z(40), z(20), z(20), 5, z(15)),
    /AbqAttention: window of 5 > maxT 4/,
  );
});
