/**
 * GPU decoding of stories260K with quantized linear layers equals the CPU
 * fake-quant forward (model/forward.ts over the dequantized weights).
 */
import assert from "node:assert/strict";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { withLinears } from "../model/config.ts";
import { forward } from "../model/forward.ts";
import { dequantize } from "../quant/format.ts";
import type { QuantizedLinear } from "../quant/format.ts";
import { maxRelError, sharedData } from "../datasets/testing.ts";
import { gpuTest } from "./_testing.ts";
import { argmax, GpuDecoder } from "./decode.ts";
import type { LinearSource } from "./decode.ts";
import { benchDecode } from "../eval/bench/decode.ts";
import { syntheticLinear } from "../eval/bench/synthetic.ts";
import { loadTokenizer } from "../model/tokenizer.ts";
import type { SyntheticSpec } from "../eval/bench/synthetic.ts";
import { linearShape } from "../model/config.ts";
import type { LlamaWeights } from "../model/config.ts";
import type { LinearWeight } from "../quant/format.ts";

const PROMPT = [1, 403, 407, 261, 378, 70, 30, 267]; // BOS and seven arbitrary tokens

function quantizeAll(w: LlamaWeights, spec: SyntheticSpec): Map<string, LinearWeight> {
  const m = new Map<string, LinearWeight>();
  w.layers.forEach((lw, l) => {
    for (const name of ["wq", "wk", "wv", "wo", "w1", "w2", "w3"] as const) {
      const [rows, cols] = linearShape(w.config, name);
      m.set(`${l}.${name}`, syntheticLinear(lw[name], rows, cols, spec));
    }
  });
  return m;
}

/** Dense weights [rows, cols] of a linear as the CPU fake-quant forward sees them. */
function fakeQuant(q: LinearWeight): Float32Array {
  const d = q.dense;
  if (d.kind === "f32") return d.data;
  if (d.kind === "f16") return Float32Array.from(new Float16Array(d.data.buffer));
  return dequantize(q as QuantizedLinear);
}

const SPECS: SyntheticSpec[] = [
  { format: "uniform", bits: 4, groupSize: 32 },
  { format: "lut", bits: 3, outliers: 0.0045 },
  { format: "f16" },
];

gpuTest(
  "GpuDecoder logits equal the CPU fake-quant forward (1e-4) on stories260K, per format",
  async (gpu) => {
    const w = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));
    for (const spec of SPECS) {
      const q = quantizeAll(w, spec);
      const source: LinearSource = (l, name) => q.get(`${l}.${name}`)!;
      const want = forward(withLinears(w, (l, name) => fakeQuant(source(l, name))), PROMPT);
      const V = w.config.vocabSize;
      const dec = await GpuDecoder.create(gpu, w, source, {
        sparseMode: spec.outliers ? "separate" : "fused",
      });
      try {
        for (let t = 0; t < PROMPT.length; t++) {
          const got = await dec.step(PROMPT[t]);
          const err = maxRelError(got, want.subarray(t * V, (t + 1) * V));
          assert.ok(
            err < 1e-4,
            `${spec.format} b=${spec.bits} position ${t}: relative error ${err}`,
          );
        }
      } finally {
        dec.release();
      }
    }
  },
);

gpuTest(
  "GpuDecoder.generate() with fp32 linears decodes stories260K's documented greedy story",
  async (gpu) => {
    const w = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));
    const tok = await loadTokenizer(sharedData("stories260K/tok512.bin"));
    const before = gpu.pool.bytesInUse;
    const f32: LinearSource = (l, name) => {
      const [rows, cols] = linearShape(w.config, name);
      return { dense: { kind: "f32", rows, cols, data: w.layers[l][name] } };
    };
    const [row] = await benchDecode(gpu, w, [{ format: "f32", bits: 32, linears: f32 }], 40);
    assert.ok(row.tokensPerSec > 0 && row.tokens === 40);
    assert.equal(gpu.pool.bytesInUse, before, "the decoder returned its buffers");
    // data/README.md: greedy decoding from BOS at temperature 0 begins with this text.
    assert.ok(
      tok.decode(row.generated).startsWith("Once upon a time, there was a little girl named Lily."),
      tok.decode(row.generated),
    );
    // The same tokens as the CPU forward's argmax at every position.
    const tokens = [1, ...row.generated];
    const cpu = forward(w, tokens.slice(0, -1));
    const V = w.config.vocabSize;
    for (let t = 0; t < 40; t++) {
      assert.equal(
        tokens[t + 1],
        argmax(cpu.subarray(t * V, (t + 1) * V)),
        `position ${t}`,
      );
    }
  },
);
