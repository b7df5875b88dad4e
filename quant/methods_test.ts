import assert from "node:assert/strict";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { sharedData } from "../datasets/testing.ts";
import { rtn } from "./rtn.ts";
import { dequantize } from "./format.ts";
import {
  defaultSpec,
  loadQuantized,
  QUANTIZERS,
  quantizeWith,
  resolveGroup,
  resolveSpec,
  saveQuantized,
  variantName,
} from "./methods.ts";

const weights = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));

Deno.test("variantName() carries the config; resolveGroup() names the valid groups", () => {
  assert.equal(variantName(defaultSpec("rtn", 3)), "rtn.w3");
  assert.equal(
    variantName({ ...defaultSpec("gptq", 4), groupSize: 128, actOrder: true }),
    "gptq.w4.g128.act",
  );
  assert.equal(
    variantName({ ...defaultSpec("squeezellm", 3), sensitivePct: 0.05, outlierPct: 0.4 }),
    "squeezellm.w3.s0.45",
  );
  assert.throws(() => defaultSpec("rtn", 9), /--bits must be an integer from 2 to 8, got 9/);
  const c = weights.config;
  assert.equal(
    resolveGroup({ ...defaultSpec("rtn", 3), groupSize: 4 }, c, { groupGiven: true }),
    4,
  );
  assert.equal(resolveGroup(defaultSpec("awq", 3), c, { groupGiven: false }), null); // 128 ∤ 64, 172
  assert.throws(
    () => resolveGroup({ ...defaultSpec("rtn", 3), groupSize: 32 }, c, { groupGiven: true }),
    /--group 32 does not divide every layer's input width \(64, 172\); valid groups for this model: 1, 2, 4/,
  );
});

Deno.test("the registry says what calibration each method needs", () => {
  assert.deepEqual(
    Object.values(QUANTIZERS).map((q) => [q.method, q.calibration]),
    [
      ["rtn", "none"],
      ["gptq", "activations"],
      ["awq", "activations"],
      [
        "squeezellm",
        "fisher",
      ],
      ["smoothquant", "activations"],
      ["abq", "activations"],
    ],
  );
});

Deno.test("quantizeWith() RTN equals rtn() per linear, and its file round-trips", async () => {
  const spec = resolveSpec({ ...defaultSpec("rtn", 4), groupSize: 4 }, weights.config);
  const q = await quantizeWith(weights, spec, null, { workers: 0 });
  assert.equal(q.variantName, "rtn.w4.g4");
  assert.equal(q.calibration, null);
  const [rows, cols] = [weights.config.dim, weights.config.dim];
  const want = dequantize({
    dense: rtn(weights.layers[1].wo, rows, cols, { bits: 4, groupSize: 4 }),
  });
  assert.deepEqual(q.weights.layers[1].wo, want);
  const dir = await Deno.makeTempDir();
  try {
    await saveQuantized(`${dir}/m.sqbq`, q, { path: "stories260K.bin", sha256: "x" });
    const back = await loadQuantized(`${dir}/m.sqbq`);
    assert.deepEqual(back.spec, q.spec);
    assert.equal(JSON.stringify(back.spec), JSON.stringify(q.spec), "same key order");
    assert.deepEqual(back.weights.layers, q.weights.layers);
    assert.equal(back.avgBits, q.avgBits);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("quantizeWith() refuses calibration a method does not take, and none where it needs some", async () => {
  const c = weights.config;
  await assert.rejects(
    () => quantizeWith(weights, resolveSpec(defaultSpec("gptq", 3), c), null, { workers: 0 }),
    /gptq needs calibration "activations", got none/,
  );
  const identity = {
    source: "c4" as const,
    file: "f",
    fileSha256: "0",
    nsamples: 1,
    seqlen: 8,
    seed: 0,
    tokensSha256: "0",
  };
  await assert.rejects(
    () =>
      quantizeWith(weights, resolveSpec(defaultSpec("rtn", 3), c), {
        inputs: { windows: [new Int32Array(8)] },
        identity,
        text: "t",
      }, { workers: 0 }),
    /rtn needs calibration "none", got calibration data/,
  );
});
