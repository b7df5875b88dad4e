import assert from "node:assert/strict";
import { loadHfFisher, loadHfModel } from "../../model/hf.ts";
import { tempDir } from "../../datasets/_testing.ts";
import { sharedData } from "../../datasets/testing.ts";
import { parseLlama2cTokenizer } from "../../model/tokenizer.ts";
import { sha256File } from "../../datasets/hub.ts";
import {
  benchScale,
  paddedTokenizer,
  SCALE_DATA_VERSION,
  SCALE_SHAPES,
  writeSyntheticCheckpoint,
} from "./scale.ts";

Deno.test("writeSyntheticCheckpoint() writes a seeded fp16 HF checkpoint and Fisher that the loaders read", async () => {
  await using tmp = await tempDir("sqb-scale-test-");
  const c = SCALE_SHAPES.tiny;
  writeSyntheticCheckpoint(`${tmp.path}/a`, c, "model");
  writeSyntheticCheckpoint(`${tmp.path}/b`, c, "model");
  writeSyntheticCheckpoint(`${tmp.path}/f`, c, "fisher");
  const [a, b] = [await loadHfModel(`${tmp.path}/a`), await loadHfModel(`${tmp.path}/b`)];
  assert.deepEqual(a.config, c);
  assert.equal(a.torchDtype, "float16");
  assert.deepEqual(a.weights.layers[1].w2, b.weights.layers[1].w2, "same seed, same weights");
  const w = a.weights.layers[0].w1;
  const std = Math.sqrt(w.reduce((s, x) => s + x * x, 0) / w.length);
  assert.ok(Math.abs(std - 0.02) < 0.001, `std ${std}`);
  assert.ok(Math.abs(a.weights.finalNorm[3] - 1) < 0.1);
  const fisher = await loadHfFisher(`${tmp.path}/f`, c);
  assert.equal(fisher.length, c.nLayers);
  assert.ok(fisher[1].wk.every((x) => x >= 0));
  // The cache keeps checkpoints by seed and SCALE_DATA_VERSION: other bytes need another version.
  assert.deepEqual(
    [
      await sha256File(`${tmp.path}/a/model.safetensors`),
      await sha256File(`${tmp.path}/f/model.safetensors`),
    ],
    [
      "c4878d5428a980e82e529ab243d2866a5a2c520e6f5243f8707f7e236dfe0034",
      "b01437b2acc1098d75d4280bc9800433416a474060a04928549853675b432e8b",
    ],
    `the synthetic bytes changed: bump SCALE_DATA_VERSION (now ${SCALE_DATA_VERSION}) and these hashes`,
  );
});

Deno.test("benchScale() quantizes the synthetic checkpoint in a child process and reports its time and peak memory", async () => {
  await using cache = await tempDir("sqb-scale-cache-");
  await using out = await tempDir("sqb-scale-out-");
  const opts = {
    shape: "tiny",
    cacheDir: cache.path,
    outDir: out.path,
    workers: 0,
    dataDir: sharedData(""),
  } as const;
  const r = await benchScale({ ...opts, log: () => {} });
  assert.deepEqual(r.figures.map((f) => f.run), [
    "rtn.w4.g128",
    "squeezellm.w3",
    "gptq.w3",
    "awq.w3",
  ]);
  assert.ok(r.writeSeconds > 0);
  assert.ok(r.checkpointBytes > 2 * r.fp32Bytes / 4, "fp16: half the fp32 size");
  for (const f of r.figures) {
    assert.ok(
      f.peakRssBytes > 1e6 && f.wallSeconds > 0 && f.cpuSeconds > 0 && f.fileBytes > 0,
      JSON.stringify(f),
    );
  }
  assert.equal(r.figures[0].avgBits, 4 + 32 / 128); // fp16 scale and zero per group of 128
  assert.ok(r.figures[1].avgBits > 3 && r.figures[1].avgBits < 4);
  // GPTQ: 3 bits and an fp16 scale and zero per row (rows of 128 or 256 weights)
  assert.ok(r.figures[2].avgBits > 3 + 32 / 256 && r.figures[2].avgBits < 3 + 32 / 128);
  assert.equal(r.figures[3].avgBits, 3 + 32 / 128, "AWQ: groups of 128");
  assert.deepEqual([...Deno.readDirSync(out.path)], [], "quantized files removed");
  // the checkpoints are written once
  const again = await benchScale({ ...opts, runs: ["rtn.w4.g128"], log: () => {} });
  assert.equal(again.writeSeconds, 0);
  assert.equal(again.figures[0].avgBits, r.figures[0].avgBits);
});

Deno.test("paddedTokenizer() keeps the base tokenizer's tokens and pads them to the vocabulary", () => {
  const base = Deno.readFileSync(sharedData("stories260K/tok512.bin"));
  const big = parseLlama2cTokenizer(paddedTokenizer(base, 1000), "big", 1000);
  const tok512 = parseLlama2cTokenizer(base, "tok512");
  const text = "Once upon a time, there was a little girl.";
  assert.deepEqual(big.encode(text), tok512.encode(text));
  assert.deepEqual(paddedTokenizer(base, 512), base);
  assert.throws(() => paddedTokenizer(base, 300), /has 512 tokens, more than 300/);
});
