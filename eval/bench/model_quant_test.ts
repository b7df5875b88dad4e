import assert from "node:assert/strict";
import { benchModelQuant, PUBLISHED, SMALL_BLOCK } from "./model_quant.ts";

/** A block small enough to time in a test. */
const config = { ...SMALL_BLOCK, dim: 128, hiddenDim: 256, nHeads: 2, nKvHeads: 2, maxSeqLen: 16 };

Deno.test("benchModelQuant() projects RTN, GPTQ, AWQ and SqueezeLLM and labels the published figures", async () => {
  const lines: string[] = [];
  const r = await benchModelQuant({
    config,
    blocks: 3,
    workers: 0,
    seqlen: 16,
    rowDivisor: 16,
    log: (l) => lines.push(l),
  });
  assert.deepEqual(r.methods.map((m) => m.method), ["rtn", "gptq", "awq", "squeezellm"]);
  for (const m of r.methods) {
    assert.ok(Number.isFinite(m.blockSeconds) && m.blockSeconds > 0, m.method);
    assert.ok(m.blockSeconds <= m.blockSecondsOneThread + 1e-12, m.method);
    assert.equal(m.modelSeconds, m.blockSeconds * 3);
  }
  // GPTQ: the solver and llama_sequential's forwards (on one thread), part by part
  const gptq = r.methods[1];
  const parts = gptq.parts!;
  assert.deepEqual(Object.keys(parts), ["hessians", "fasterquant", "forwards"]);
  assert.ok(Object.values(parts).every((v) => Number.isFinite(v) && v > 0), JSON.stringify(parts));
  assert.ok(
    Math.abs(parts.hessians + parts.fasterquant + parts.forwards - gptq.blockSecondsOneThread) <
      1e-9,
  );
  assert.equal(gptq.blockSeconds, gptq.blockSecondsOneThread, "workers 0: all on this thread");
  assert.match(
    gptq.note,
    /forwards \(.* a block on one thread: quant\/sequential.ts's passes for 4 groups and the output\)/,
  );
  assert.equal(r.bits, 3);
  // each method's default calibration: GPTQ 128 windows, AWQ at most 128 blocks, of 16 tokens
  assert.deepEqual(r.methods.map((m) => m.calibrationTokens), [0, 128 * 16, 128 * 16, 0]);
  assert.match(lines[0], /3 blocks of dim 128, hidden 256/);
  const p = lines.indexOf("  published (not measured here):");
  assert.equal(p, 1 + r.methods.length, "the published figures come after the measured ones");
  assert.equal(lines.length, p + 1 + PUBLISHED.length);
  assert.match(lines[p + 1], /squeezellm +k-means of LLaMA-7B ≈ 11 min on a 48-core machine/);
  assert.match(lines.at(-1)!, /gptq +175-billion-parameter models in ≈ 4 GPU hours/);
});

Deno.test("benchModelQuant() times only the methods asked for and names a bad one", async () => {
  const r = await benchModelQuant({
    config,
    workers: 2,
    seqlen: 16,
    methods: ["squeezellm", "rtn"],
    log: () => {},
  });
  assert.deepEqual(r.methods.map((m) => m.method), ["rtn", "squeezellm"]);
  const awq = await benchModelQuant({
    config,
    workers: 0,
    seqlen: 16,
    rowDivisor: 16,
    awqBlocks: 3,
    methods: ["awq"],
    log: () => {},
  });
  assert.equal(awq.methods[0].calibrationTokens, 3 * 16);
  assert.match(awq.methods[0].note, /× 3 blocks of 16 tokens \(awq-blocks rule\)/);
  const sq = r.methods[1];
  assert.ok(Math.abs(sq.blockSeconds - sq.blockSecondsOneThread / 2) < 1e-12, "÷ 2 workers");
  await assert.rejects(
    () => benchModelQuant({ config, methods: ["hqq" as "rtn"], log: () => {} }),
    /methods: expected some of rtn, gptq, awq, squeezellm, got "hqq"/,
  );
});

Deno.test("benchModelQuant() measures AWQ on llm-awq's 512-token blocks where GPTQ's windows are the model's 1024", async () => {
  const long = { ...config, maxSeqLen: 1024 };
  const r = await benchModelQuant({
    config: long,
    workers: 0,
    rowDivisor: 16,
    awqBlocks: 5,
    methods: ["gptq", "awq"],
    log: () => {},
  });
  assert.deepEqual(r.methods.map((m) => m.calibrationTokens), [128 * 1024, 5 * 512]);
  assert.match(r.methods[1].note, /× 5 blocks of 512 tokens/);
});
