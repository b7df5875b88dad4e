import assert from "node:assert/strict";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { openHfWeights } from "../model/hf.ts";
import { randomWindows } from "../model/random.ts";
import { materializeWeights } from "../model/weight_source.ts";
import { writeHfCheckpoint } from "../model/_convert_testing.ts";
import { sharedData } from "../datasets/testing.ts";
import { tempDir } from "../datasets/_testing.ts";
import {
  type CalibrationIdentity,
  defaultSpec,
  quantizeWith,
  resolveSpec,
  variantName,
} from "../quant/methods.ts";
import type { AwqStats } from "../quant/awq.ts";
import { dequantizedWeights, loadQuantizedModel } from "../quant/qmodel.ts";
import { quantizeToFile } from "./quantize_stream.ts";

const ref = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));

/** The identity recorded for the random windows (quantizeWith needs one). */
const RANDOM_WINDOWS: CalibrationIdentity = {
  rule: "awq-blocks",
  source: "c4",
  file: "-",
  fileSha256: "-",
  nsamples: 0,
  seqlen: 0,
  seed: 0,
  tokensSha256: "-",
};

Deno.test("quantizeToFile() AWQ block by block from an fp16 checkpoint gives the whole-model AWQ's codes and scaled norms, bit for bit, on 0 and 2 workers", async () => {
  await using tmp = await tempDir("sqb-stream-awq-test-");
  const modelDir = `${tmp.path}/model`;
  await writeHfCheckpoint(modelDir, ref, { dtype: "F16" });
  using src = await openHfWeights(modelDir);
  const whole = materializeWeights(src);
  const windows = randomWindows(3, 64, src.config.vocabSize, 5);
  const spec = resolveSpec({ ...defaultSpec("awq", 3), nGrid: 4 }, src.config);
  const expected = await quantizeWith(
    whole,
    spec,
    { inputs: { windows }, identity: RANDOM_WINDOWS, text: "" },
    { workers: 0 },
  );
  for (const workers of [0, 2]) {
    const out = `${tmp.path}/${variantName(spec)}.${workers}.sqbq`;
    const r = await quantizeToFile({
      source: src,
      spec,
      windows,
      out,
      base: { path: modelDir, sha256: "0".repeat(64) },
      calibration: RANDOM_WINDOWS,
      calibrationText: "3 random windows",
      workers,
    });
    const file = await loadQuantizedModel(out);
    assert.equal(r.avgBits, expected.avgBits);
    assert.equal(file.linears.size, expected.linears.size);
    for (const [key, q] of expected.linears) {
      assert.deepEqual(file.linears.get(key), q, `${key} on ${workers} workers`);
    }
    // AWQ scales the norms: the file holds the whole-model AWQ's, not the checkpoint's.
    const layers = dequantizedWeights(file).layers;
    layers.forEach((lw, l) => {
      assert.deepEqual(lw.attnNorm, expected.weights.layers[l].attnNorm, `layers.${l}.attnNorm`);
      assert.deepEqual(lw.ffnNorm, expected.weights.layers[l].ffnNorm, `layers.${l}.ffnNorm`);
      assert.notDeepEqual(lw.attnNorm, whole.layers[l].attnNorm);
    });
    const stats = (file.provenance.details as { stats: AwqStats }).stats;
    assert.equal(stats.tokens, 3 * 64);
    assert.equal(stats.skipped.length, src.config.nLayers, "GQA: wv→wo skipped in every block");
    assert.deepEqual(file.provenance.calibration, RANDOM_WINDOWS);
  }
  await assert.rejects(
    () =>
      quantizeToFile({
        source: src,
        spec,
        out: `${tmp.path}/none.sqbq`,
        base: { path: modelDir, sha256: "0".repeat(64) },
        calibration: null,
        calibrationText: null,
        workers: 0,
      }),
    /awq needs calibration windows/,
  );
});
