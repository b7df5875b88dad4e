import assert from "node:assert/strict";
import type { LayerWeights, LinearName, LlamaWeights } from "../model/config.ts";
import { LINEAR_NAMES, linearShape } from "../model/config.ts";
import { attention, block, rmsnorm, RunState } from "../model/forward.ts";
import { randomWeights, randomWindows, tinyConfig } from "../model/random.ts";
import { dequantize, type UniformTensor } from "./format.ts";
import { Gptq } from "./gptq.ts";
import { rtn } from "./rtn.ts";
import {
  embedWindows,
  gptqQuantizeModel,
  gptqQuantizeModelAsync,
  GptqSequential,
  passesOnWorkers,
  passPlan,
  TRUE_SEQUENTIAL_GROUPS,
} from "./sequential.ts";

const C = tinyConfig({ dim: 32, hiddenDim: 64, vocabSize: 64, maxSeqLen: 32 });

/**
 * Inputs of every linear of layer l when layers < l are `quantized`'s and
 * layer l is `fp`'s (what GPTQ without true-sequential sees): name → [N, in].
 */
function layerInputs(
  quantized: LlamaWeights,
  fp: LlamaWeights,
  l: number,
  windows: Int32Array[],
): Map<LinearName, Float32Array[]> {
  const c = fp.config;
  const s = new RunState(c, c.maxSeqLen);
  const got = new Map<LinearName, Float32Array[]>(LINEAR_NAMES.map((n) => [n, []]));
  embedWindows(fp, windows).forEach((x, j) => {
    const T = windows[j].length;
    for (let k = 0; k < l; k++) block(c, quantized.layers[k], k, x, T, s);
    block(c, fp.layers[l], l, x, T, s, {
      onLinearInput(_l, name, xin, T) {
        got.get(name)!.push(xin.slice(0, T * linearShape(c, name)[1]));
      },
    });
  });
  return got;
}

/** GPTQ's layer-wise objective Σ_t ‖(Ŵ − W) x_t‖² over the inputs xs. */
function objective(
  W: Float32Array,
  What: Float32Array,
  rows: number,
  cols: number,
  xs: Float32Array[],
) {
  let e = 0;
  for (const x of xs) {
    for (let t = 0; t < x.length / cols; t++) {
      for (let r = 0; r < rows; r++) {
        let d = 0;
        for (let i = 0; i < cols; i++) {
          d += (What[r * cols + i] - W[r * cols + i]) * x[t * cols + i];
        }
        e += d * d;
      }
    }
  }
  return e;
}

Deno.test("gptqQuantizeModel() has a lower layer-wise objective than RTN on every layer", () => {
  const w = randomWeights(C, 3);
  const windows = randomWindows(8, 32, C.vocabSize, 4);
  for (const [bits, groupSize] of [[3, undefined], [4, 8]] as const) {
    const r = gptqQuantizeModel(w, windows, { bits, groupSize, trueSequential: false });
    for (let l = 0; l < C.nLayers; l++) {
      const xs = layerInputs(r.weights, w, l, windows);
      let eG = 0, eR = 0;
      for (const name of LINEAR_NAMES) {
        const [rows, cols] = linearShape(C, name);
        const W = w.layers[l][name];
        const Wr = dequantize({ dense: rtn(W, rows, cols, { bits, groupSize }) });
        eG += objective(W, r.weights.layers[l][name], rows, cols, xs.get(name)!);
        eR += objective(W, Wr, rows, cols, xs.get(name)!);
      }
      assert.ok(eG < eR, `bits ${bits} g${groupSize} layer ${l}: GPTQ ${eG} ≥ RTN ${eR}`);
    }
  }
});

/** GPTQ on one linear from inputs produced by `feed(addBatch)`. */
function solve(
  name: LinearName,
  W: Float32Array,
  feed: (add: (x: Float32Array, T: number) => void) => void,
): UniformTensor {
  const [rows, cols] = linearShape(C, name);
  const g = new Gptq(rows, cols);
  feed((x, T) => g.addBatch(x.subarray(0, T * cols), T));
  return g.fasterquant(W, { bits: 3 }).q as UniformTensor;
}

Deno.test("gptqQuantizeModel() true-sequential feeds wo from the quantized wq, wk, wv, and layer 1 from quantized layer 0", () => {
  const w = randomWeights(C, 5);
  const windows = randomWindows(6, 32, C.vocabSize, 6);
  const seq = gptqQuantizeModel(w, windows, { bits: 3 });
  const all = gptqQuantizeModel(w, windows, { bits: 3, trueSequential: false });
  const s = new RunState(C, 32);
  const lw = w.layers[0];
  const emb = embedWindows(w, windows);
  const xn = new Float32Array(32 * C.dim), out = new Float32Array(32 * C.dim);
  // Step 1 by hand: wk, wv, wq on the normalized embeddings.
  const normed = (add: (x: Float32Array, T: number) => void) =>
    emb.forEach((x) => {
      rmsnorm(xn, x, lw.attnNorm, 32, C.dim, C.normEps);
      add(xn, 32);
    });
  const q1: LayerWeights = { ...lw };
  for (const name of ["wk", "wv", "wq"] as const) {
    const q = solve(name, lw[name], normed);
    assert.deepEqual(q, seq.linears.get(`layers.0.${name}`)!.dense, name);
    q1[name] = dequantize({ dense: q });
  }
  // Step 2 by hand: wo on the attention output of the quantized wq, wk, wv …
  const woFrom = (weights: LayerWeights) => (add: (x: Float32Array, T: number) => void) =>
    emb.forEach((x) => {
      rmsnorm(xn, x, lw.attnNorm, 32, C.dim, C.normEps);
      attention(C, weights, 0, xn, 32, s, out, {
        onLinearInput: (_l, n, a, T) => n === "wo" && add(a, T),
      });
    });
  assert.deepEqual(solve("wo", lw.wo, woFrom(q1)), seq.linears.get("layers.0.wo")!.dense);
  // … while without true-sequential wo sees the full-precision attention.
  assert.deepEqual(solve("wo", lw.wo, woFrom(lw)), all.linears.get("layers.0.wo")!.dense);
  assert.notDeepEqual(
    seq.linears.get("layers.0.wo")!.dense.codes,
    all.linears.get("layers.0.wo")!.dense.codes,
  );
  // Layer 1's first group sees the output of the fully quantized layer 0.
  const layer1From = (l0: LayerWeights) => (add: (x: Float32Array, T: number) => void) =>
    embedWindows(w, windows).forEach((x) => {
      block(C, l0, 0, x, 32, s);
      rmsnorm(xn, x, w.layers[1].attnNorm, 32, C.dim, C.normEps);
      add(xn, 32);
    });
  assert.deepEqual(
    solve("wq", w.layers[1].wq, layer1From(seq.weights.layers[0])),
    seq.linears.get("layers.1.wq")!.dense,
  );
  assert.notDeepEqual(
    solve("wq", w.layers[1].wq, layer1From(lw)).codes,
    seq.linears.get("layers.1.wq")!.dense.codes,
  );
});

Deno.test("passPlan(): the attention runs until it is final, then the passes start after it", () => {
  assert.deepEqual(passPlan(TRUE_SEQUENTIAL_GROUPS).map((p) => [p.names, p.until, p.mode]), [
    [["wk", "wv", "wq"], "qkv", "scratch"],
    [["wo"], "wo", "scratch"],
    [["w3", "w1"], "ffn", "advance"],
    [["w2"], "block", "after"],
    [[], "block", "output-after"],
  ]);
  assert.deepEqual(passPlan([LINEAR_NAMES]).map((p) => [p.until, p.mode]), [
    ["block", "scratch"],
    ["block", "output"],
  ]);
  // w1 before wo is quantized: the attention is not final yet
  assert.deepEqual(
    passPlan([["wq", "wk", "wv"], ["w1", "w3"], ["wo"], ["w2"]]).map((p) => p.mode),
    [
      "scratch",
      "scratch",
      "scratch",
      "scratch",
      "output",
    ],
  );
});

Deno.test("gptqQuantizeModel() true-sequential feeds w1, w3 and w2 from the quantized attention and gate, on two blocks", () => {
  const w = randomWeights({ ...C, nLayers: 2 }, 8);
  const windows = randomWindows(5, 32, C.vocabSize, 9);
  const seq = gptqQuantizeModel(w, windows, { bits: 3 });
  const s = new RunState(C, 32);
  // Block l's linears' inputs by hand: the whole block (model/forward.ts block) on a copy of
  // its inputs, with the weights given, every earlier block fully quantized.
  const inputsOf =
    (l: number, weights: LayerWeights, name: LinearName) =>
    (add: (x: Float32Array, T: number) => void) =>
      embedWindows(w, windows).forEach((x) => {
        for (let k = 0; k < l; k++) block(C, seq.weights.layers[k], k, x, 32, s);
        block(C, weights, l, x, 32, s, { onLinearInput: (_l, n, a, T) => n === name && add(a, T) });
      });
  for (let l = 0; l < 2; l++) {
    const fp = w.layers[l], q = seq.weights.layers[l];
    // w3, w1 after the quantized attention; w2 after the quantized w1, w3 too
    const attnQ: LayerWeights = { ...fp, wq: q.wq, wk: q.wk, wv: q.wv, wo: q.wo };
    for (const name of ["w1", "w3"] as const) {
      const key = `layers.${l}.${name}`;
      assert.deepEqual(
        solve(name, fp[name], inputsOf(l, attnQ, name)),
        seq.linears.get(key)!.dense,
        key,
      );
    }
    const gateQ: LayerWeights = { ...attnQ, w1: q.w1, w3: q.w3 };
    const key = `layers.${l}.w2`;
    assert.deepEqual(
      solve("w2", fp.w2, inputsOf(l, gateQ, "w2")),
      seq.linears.get(key)!.dense,
      key,
    );
    // and not from the full-precision attention
    assert.notDeepEqual(
      solve("w2", fp.w2, inputsOf(l, { ...fp, w1: q.w1, w3: q.w3 }, "w2")).codes,
      seq.linears.get(key)!.dense.codes,
    );
  }
});

Deno.test("gptqQuantizeModel() is deterministic and returns weights equal to dequantize(linears)", () => {
  const w = randomWeights(C, 7);
  const windows = randomWindows(4, 24, C.vocabSize, 8);
  const opts = { bits: 4, groupSize: 16, actOrder: true };
  const a = gptqQuantizeModel(w, windows, opts), b = gptqQuantizeModel(w, windows, opts);
  assert.deepEqual([...a.linears.entries()], [...b.linears.entries()]);
  assert.equal(a.linears.size, C.nLayers * 7);
  for (let l = 0; l < C.nLayers; l++) {
    for (const name of LINEAR_NAMES) {
      assert.deepEqual(
        a.weights.layers[l][name],
        dequantize(a.linears.get(`layers.${l}.${name}`)!),
      );
    }
    assert.equal(
      a.weights.layers[l].attnNorm,
      w.layers[l].attnNorm,
      "norms are shared, not copied",
    );
  }
  assert.deepEqual(
    a.stats.linears.slice(0, 7).map((x) => x.key),
    ["wk", "wv", "wq", "wo", "w3", "w1", "w2"].map((n) => `layers.0.${n}`),
  );
  assert.equal(a.stats.tokens, 96);
  assert.ok(a.stats.linears.every((x) => x.error > 0 && Number.isFinite(x.error)));
});

Deno.test("gptqQuantizeModel() rejects empty or too long calibration windows and bad bits", () => {
  const w = randomWeights(C, 9);
  assert.throws(() => gptqQuantizeModel(w, [], { bits: 3 }), /at least one calibration window/);
  assert.throws(
    () => gptqQuantizeModel(w, [new Int32Array(33)], { bits: 3 }),
    /calibration window 0 has 33 tokens, expected 1\.\.32/,
  );
  assert.throws(
    () => gptqQuantizeModel(w, [new Int32Array(8)], { bits: 1 }),
    /bits must be an integer from 2 to 8, got 1/,
  );
});

Deno.test("gptqQuantizeModel() reports each solved linear as a progress step", () => {
  const w = randomWeights(C, 7);
  const windows = randomWindows(2, 12, C.vocabSize, 8);
  const steps: [number, number, string][] = [];
  gptqQuantizeModel(w, windows, { bits: 4, onProgress: (d, n, what) => steps.push([d, n, what]) });
  const total = C.nLayers * 7;
  assert.deepEqual(
    steps.map(([d, n]) => [d, n]),
    Array.from({ length: total }, (_, i) => [i + 1, total]),
  );
  assert.deepEqual(steps.slice(0, 4).map(([, , what]) => what), [
    "gptq layers.0.wk",
    "gptq layers.0.wv",
    "gptq layers.0.wq",
    "gptq layers.0.wo",
  ]);
});

// The fast path on workers gives the same numbers as on this thread (quant/gptq_fast_test.ts).
Deno.test('gptqQuantizeModelAsync() with the "fast" solver gives the reference solver\'s codes', async () => {
  const w = randomWeights(C, 7);
  const windows = randomWindows(4, 24, C.vocabSize, 8);
  const configs = [
    { bits: 3 },
    { bits: 4, groupSize: 16, actOrder: true },
    { bits: 3, trueSequential: false },
  ];
  for (const opts of configs) {
    const ref = gptqQuantizeModel(w, windows, opts);
    const fast = await gptqQuantizeModelAsync(w, windows, { ...opts, solver: "fast", workers: 0 });
    assert.deepEqual([...fast.linears.keys()], [...ref.linears.keys()]);
    for (const [key, q] of ref.linears) {
      const f = fast.linears.get(key)!.dense as UniformTensor, r = q.dense as UniformTensor;
      assert.deepEqual(f.codes, r.codes, `${key} ${JSON.stringify(opts)}`);
      assert.deepEqual([f.scales, f.zeros], [r.scales, r.zeros], key);
    }
  }
  assert.throws(
    () => gptqQuantizeModel(w, windows, { bits: 3, solver: "fast" }),
    /"fast" solver is asynchronous; use gptqQuantizeModelAsync/,
  );
});

Deno.test("GPTQ's calibration passes on 2 workers give the one-thread codes, errors and block outputs", async () => {
  const w = randomWeights(C, 12);
  const windows = [
    ...randomWindows(3, 24, C.vocabSize, 13),
    ...randomWindows(2, 11, C.vocabSize, 14),
  ];
  const lengths = windows.map((x) => x.length);
  assert.ok(passesOnWorkers(C, lengths, 2, 0) && !passesOnWorkers(C, lengths, 2));
  assert.ok(!passesOnWorkers(C, lengths, 0, 0), "no workers, no passes on them");
  for (const trueSequential of [true, false]) {
    const opts = { bits: 3, solver: "fast" as const, trueSequential };
    const one = await gptqQuantizeModelAsync(w, windows, { ...opts, workers: 0 });
    const two = await gptqQuantizeModelAsync(w, windows, { ...opts, workers: 2, passMinMacs: 0 });
    assert.deepEqual(two.linears, one.linears, `trueSequential ${trueSequential}`);
    assert.deepEqual(
      two.stats.linears.map((x) => [x.key, x.error]),
      one.stats.linears.map((x) => [x.key, x.error]),
    );
  }
  // Block by block, the caller's inputs become the next block's, as on one thread: updated in
  // place when they are in shared memory, copied there and back when not.
  const opts2 = { bits: 3, solver: "fast" as const, workers: 2, passMinMacs: 0 };
  const g2 = new GptqSequential(C, windows, opts2), g2c = new GptqSequential(C, windows, opts2);
  const g0 = new GptqSequential(C, windows, { bits: 3, solver: "fast", workers: 0 });
  const x2 = embedWindows(w, windows, true), x2c = embedWindows(w, windows);
  const x0 = embedWindows(w, windows);
  assert.ok(
    x2[0].buffer instanceof SharedArrayBuffer && !(x2c[0].buffer instanceof SharedArrayBuffer),
  );
  for (let l = 0; l < C.nLayers; l++) {
    const b2 = await g2.quantizeBlock(l, w.layers[l], x2);
    const b2c = await g2c.quantizeBlock(l, w.layers[l], x2c);
    const b0 = await g0.quantizeBlock(l, w.layers[l], x0);
    assert.deepEqual([b2.linears, b2c.linears], [b0.linears, b0.linears], `block ${l}`);
    assert.deepEqual(x2.map((x) => x.slice()), x0, `inputs of block ${l + 1}`);
    assert.deepEqual(x2c, x0, `inputs of block ${l + 1} (copied)`);
  }
});

Deno.test("GptqSequential block by block gives gptqQuantizeModelAsync()'s codes and errors, and the same block inputs", async () => {
  const w = randomWeights(C, 11);
  const windows = [...randomWindows(3, 24, C.vocabSize, 5), ...randomWindows(1, 9, C.vocabSize, 6)];
  for (
    const opts of [{ bits: 3 }, {
      bits: 4,
      groupSize: 16,
      actOrder: true,
      solver: "fast" as const,
      workers: 0,
    }]
  ) {
    const whole = await gptqQuantizeModelAsync(w, windows, opts);
    const g = new GptqSequential(C, windows, opts);
    const inps = embedWindows(w, windows);
    const s = new RunState(C, 24);
    const expected = embedWindows(w, windows); // block l's inputs through the whole run's quantized blocks
    for (let l = 0; l < C.nLayers; l++) {
      const b = await g.quantizeBlock(l, w.layers[l], inps);
      for (const [key, q] of b.linears) assert.deepEqual(q, whole.linears.get(key), key);
      assert.equal(b.linears.size, 7);
      expected.forEach((x, j) => block(C, whole.weights.layers[l], l, x, windows[j].length, s));
      assert.deepEqual(inps, expected, `inputs of block ${l + 1}`);
    }
    assert.deepEqual(
      g.stats().linears.map((x) => [x.key, x.error]),
      whole.stats.linears.map((x) => [x.key, x.error]),
    );
  }
  const g = new GptqSequential(C, windows, { bits: 3 });
  await assert.rejects(
    () => g.quantizeBlock(1, w.layers[1], embedWindows(w, windows)),
    /block 1 given, expected block 0/,
  );
});
