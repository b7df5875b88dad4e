import assert from "node:assert/strict";
import { tinyConfig } from "../model/random.ts";
import type { LlamaConfig } from "../model/config.ts";
import {
  AWQ_BLOCK_SIZE,
  checkSpec,
  defaultCalibSeqlen,
  DEFAULTS,
  defaultSpec,
  METHODS,
  paramDefaults,
  pickSpec,
  QUANT_PARAMS,
  type QuantSpec,
  resolveSpec,
  SQUEEZELLM_FISHER_SEQLEN,
} from "./spec.ts";
import { GPTQ_BLOCKSIZE, GPTQ_PERCDAMP } from "./gptq.ts";

/** stories260K's shape: layer input widths 64 and 172. */
const stories: LlamaConfig = { ...tinyConfig(), dim: 64, hiddenDim: 172, maxSeqLen: 512 };

Deno.test("defaultSpec() takes every default from the one table, in table order", () => {
  assert.deepEqual(defaultSpec("gptq", 3), {
    method: "gptq",
    bits: 3,
    groupSize: null,
    sym: false,
    actOrder: false,
    staticGroups: false,
    trueSequential: true,
    blocksize: 128,
    percdamp: 0.01,
    calib: { source: "c4", nsamples: 128, seqlen: null, seed: 0 },
  });
  assert.equal(
    JSON.stringify(Object.keys(defaultSpec("awq", 4))),
    '["method","bits","groupSize","nGrid","maxShrink","nSampleTokens","calib"]',
  );
  assert.equal(defaultSpec("awq", 3).nGrid, 20);
  assert.equal(defaultSpec("squeezellm", 3).kmeansIters, 50);
  assert.equal(GPTQ_BLOCKSIZE, DEFAULTS.gptq.blocksize);
  assert.equal(GPTQ_PERCDAMP, DEFAULTS.gptq.percdamp);
  // fresh objects: changing one spec's calibration leaves the table alone
  const s = defaultSpec("gptq", 3);
  s.calib.source = "tinystories";
  assert.equal(DEFAULTS.gptq.calib.source, "c4");
  // every parameter is taken by some method, and every default is valid
  for (const p of QUANT_PARAMS) assert.ok(paramDefaults(p).size > 0, p.key);
  for (const m of METHODS) checkSpec(defaultSpec(m, 3));
});

Deno.test("resolveSpec() fills defaults, resolves the group and calibration length, with a stable key order", () => {
  const partial = { method: "squeezellm", bits: 3, sensitivePct: 0.05 } as unknown as QuantSpec;
  const r = resolveSpec(partial, stories);
  assert.equal(
    JSON.stringify(r),
    JSON.stringify({
      method: "squeezellm",
      bits: 3,
      sensitivePct: 0.05,
      outlierPct: null,
      outlierRange: null,
      fisherSamples: 100,
      kmeansIters: 50,
      kmeansTol: 1e-4,
      calib: { source: "c4", seqlen: 512, seed: 0 },
    }),
  );
  // the same spec written in another key order resolves to the same JSON
  const a = resolveSpec({ ...defaultSpec("rtn", 3), groupSize: 4 }, stories);
  const b = resolveSpec({ sym: false, groupSize: 4, bits: 3, method: "rtn" }, stories);
  assert.equal(JSON.stringify(a), JSON.stringify(b));
  // AWQ's default 128 does not divide 64 and 172: one group per row; asked for, an error
  assert.equal(resolveSpec(defaultSpec("awq", 3), stories).groupSize, null);
  assert.throws(
    () => resolveSpec(defaultSpec("awq", 3), stories, { groupGiven: true }),
    /--group 128 does not divide every layer's input width \(64, 172\)/,
  );
  assert.throws(
    () => resolveSpec({ ...defaultSpec("awq", 3), groupSize: 32 }, stories),
    /--group 32 does not divide/,
  );
  assert.equal(
    resolveSpec(defaultSpec("awq", 3), { ...stories, hiddenDim: 256, dim: 128 }).groupSize,
    128,
  );
});

Deno.test("resolveSpec(): AWQ's blocks and SqueezeLLM's Fisher windows are their code's 512 tokens, the others' windows the protocol's 2048, whatever the model's length", () => {
  const seqlen = (s: QuantSpec, maxSeqLen: number) => {
    const r = resolveSpec(s, { ...stories, maxSeqLen });
    return "calib" in r ? r.calib.seqlen : undefined;
  };
  assert.equal(seqlen(defaultSpec("awq", 3), 2048), 512);
  assert.equal(seqlen(defaultSpec("awq", 3), 4096), 512);
  assert.equal(seqlen(defaultSpec("awq", 3), 256), 256); // a shorter model: its own length
  assert.equal(
    seqlen({ ...defaultSpec("awq", 3), calib: { ...DEFAULTS.awq.calib, seqlen: 1024 } }, 2048),
    1024,
  );
  // SqueezeLLM-gradients' run.py: 100 C4 windows of 512 tokens
  assert.equal(seqlen(defaultSpec("squeezellm", 3), 4096), SQUEEZELLM_FISHER_SEQLEN);
  assert.equal(seqlen(defaultSpec("squeezellm", 3), 256), 256);
  for (const m of ["gptq", "smoothquant", "abq"] as const) {
    assert.equal(seqlen(defaultSpec(m, 3), 2048), 2048, m);
    assert.equal(seqlen(defaultSpec(m, 3), 4096), 2048, m); // llama.py's model.seqlen = 2048
    assert.equal(seqlen(defaultSpec(m, 3), 256), 256, m);
  }
  assert.equal(defaultCalibSeqlen("awq", { ...stories, maxSeqLen: 2048 }), AWQ_BLOCK_SIZE);
});

Deno.test("checkSpec() rejects parameters a method does not take and values out of range", () => {
  const bad: [object, RegExp][] = [
    [
      { ...defaultSpec("squeezellm", 3), sym: true },
      /squeezellm spec: sym \(--sym\) does not apply to squeezellm/,
    ],
    [
      { ...defaultSpec("rtn", 3), actOrder: true },
      /actOrder \(--act-order\) does not apply to rtn/,
    ],
    [
      { ...defaultSpec("squeezellm", 3), sensitivePct: 150 },
      /--sensitive must be a number in 0\.\.100, got 150/,
    ],
    [
      { ...defaultSpec("squeezellm", 3), outlierPct: -1 },
      /--outliers must be a number in \(0, 100\), got -1/,
    ],
    [{ ...defaultSpec("squeezellm", 3), outlierPct: 0.4, outlierRange: 2 }, /not both/],
    [{ ...defaultSpec("gptq", 3), percdamp: -0.1 }, /--percdamp must be a number ≥ 0/],
    [{ ...defaultSpec("gptq", 3), staticGroups: true }, /--static-groups needs --group G/],
    [
      { ...defaultSpec("awq", 3), maxShrink: 1 },
      /--max-shrink must be a number in \[0, 1\), got 1/,
    ],
    [
      { ...defaultSpec("gptq", 3), calib: { ...DEFAULTS.gptq.calib, source: "imdb" } },
      /--calib must be one of c4, wikitext2, tinystories/,
    ],
    [
      { ...defaultSpec("rtn", 3), fisherSamples: 4 },
      /fisherSamples \(--fisher-samples\) does not apply to rtn/,
    ],
    [{ ...defaultSpec("rtn", 3), bogus: 1 }, /rtn spec: unknown parameter "bogus"/],
  ];
  for (const [s, re] of bad) assert.throws(() => checkSpec(s as QuantSpec), re);
});

Deno.test("pickSpec() keeps the parameters of its method from an older, wider options object", () => {
  const old = {
    method: "rtn",
    bits: 3,
    groupSize: null,
    sym: false,
    actOrder: false,
    calib: { source: "c4", nsamples: 128, seqlen: 512, seed: 0 },
    fisherSamples: 100,
  };
  assert.deepEqual(pickSpec("rtn", 3, old), defaultSpec("rtn", 3));
  assert.throws(() => pickSpec("nope", 3, {}), /unknown quantization method "nope"/);
});
