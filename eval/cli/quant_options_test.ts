import assert from "node:assert/strict";
import { parseError } from "./_testing.ts";
import { QUANT_HELP, QUANT_OPTIONS, quantRequest, specFromOptions } from "./quant_options.ts";
import { DEFAULTS, defaultSpec, QUANT_PARAMS } from "../../quant/spec.ts";

Deno.test("specFromOptions() fills the table's defaults and reads every flag", () => {
  assert.equal(specFromOptions({}), null);
  assert.equal(specFromOptions({ method: "fp32" }), null);
  assert.deepEqual(specFromOptions({ method: "awq", bits: "3" }), defaultSpec("awq", 3));
  assert.deepEqual(
    specFromOptions({
      method: "gptq",
      bits: "4",
      group: "32",
      sym: true,
      "act-order": true,
      "static-groups": true,
      "no-true-sequential": true,
      blocksize: "64",
      percdamp: "0.1",
      calib: "tinystories",
      nsamples: "16",
      seed: "3",
    }),
    {
      ...defaultSpec("gptq", 4),
      groupSize: 32,
      sym: true,
      actOrder: true,
      staticGroups: true,
      trueSequential: false,
      blocksize: 64,
      percdamp: 0.1,
      calib: { source: "tinystories", nsamples: 16, seqlen: null, seed: 3 },
    },
  );
  const sq = specFromOptions({
    method: "squeezellm",
    bits: "3",
    sensitive: "0.05",
    outliers: "0.4",
    "fisher-samples": "8",
  });
  assert.deepEqual(sq, {
    ...defaultSpec("squeezellm", 3),
    sensitivePct: 0.05,
    outlierPct: 0.4,
    fisherSamples: 8,
  });
});

Deno.test("--sym with squeezellm or awq is an error naming the flag (no squeezellm.w3.sym twin)", () => {
  assert.equal(
    parseError({ method: "squeezellm", bits: "3", sym: true }),
    "--sym does not apply to --method squeezellm (only to rtn, gptq)",
  );
  assert.match(
    parseError({ method: "awq", bits: "3", sym: true }),
    /--sym does not apply to --method awq/,
  );
});

Deno.test("GPTQ-only flags with rtn, awq or squeezellm are errors", () => {
  for (const m of ["rtn", "awq", "squeezellm"]) {
    for (const flag of ["act-order", "static-groups", "no-true-sequential"]) {
      assert.equal(
        parseError({ method: m, bits: "3", [flag]: true }),
        `--${flag} does not apply to --method ${m} (only to gptq)`,
      );
    }
    assert.match(
      parseError({ method: m, bits: "3", percdamp: "0.1" }),
      /--percdamp does not apply/,
    );
  }
  assert.match(
    parseError({ method: "gptq", bits: "3", "static-groups": true }),
    /--static-groups needs --group G/,
  );
});

Deno.test("--outliers must be in (0, 100): -1, 0 and 100 are errors at parse time", () => {
  for (const v of ["-1", "0", "100"]) {
    assert.equal(
      parseError({ method: "squeezellm", bits: "3", outliers: v }),
      `--outliers must be a number in (0, 100), got ${Number(v)}`,
    );
  }
  assert.match(
    parseError({ method: "squeezellm", bits: "3", outliers: "abc" }),
    /--outliers must be a number in \(0, 100\), got "abc"/,
  );
});

Deno.test("--sensitive 150 fails at parse time naming --sensitive and 0..100", () => {
  assert.equal(
    parseError({ method: "squeezellm", bits: "3", sensitive: "150" }),
    "--sensitive must be a number in 0..100, got 150",
  );
  assert.match(parseError({ method: "squeezellm", bits: "3", sensitive: "-0.1" }), /0\.\.100/);
});

Deno.test("SqueezeLLM-only flags with other methods are errors; flags without --method too", () => {
  for (const m of ["rtn", "gptq", "awq"]) {
    for (const [flag, v] of [["fisher-samples", "4"], ["sensitive", "0.05"], ["outliers", "0.4"]]) {
      assert.equal(
        parseError({ method: m, bits: "3", [flag]: v }),
        `--${flag} does not apply to --method ${m} (only to squeezellm)`,
      );
    }
  }
  assert.match(
    parseError({ method: "rtn", bits: "3", nsamples: "4" }),
    /--nsamples does not apply to --method rtn \(only to gptq, awq, smoothquant, abq\)/,
  );
  assert.match(parseError({ method: "squeezellm", bits: "3", nsamples: "4" }), /only to gptq, awq/);
  assert.match(
    parseError({ method: "awq", bits: "3", grid: "0" }),
    /--grid must be an integer ≥ 1, got 0/,
  );
  assert.equal(
    parseError({ "fisher-samples": "4" }),
    "--fisher-samples needs --method (squeezellm)",
  );
  assert.match(parseError({ bits: "3" }), /--bits needs --method/);
  assert.match(
    parseError({ method: "squeezellm", bits: "3", outliers: "0.4", "outlier-range": "2" }),
    /give --outliers P or --outlier-range R, not both/,
  );
  assert.throws(
    () => quantRequest({ quantized: "m.sqbq", bits: "3" }),
    /--bits does not apply to --quantized FILE/,
  );
});

Deno.test("the help is generated from the table: every flag, its methods and defaults", () => {
  for (const p of QUANT_PARAMS) {
    assert.match(QUANT_HELP, new RegExp(`--${p.flag}\\b`));
    assert.ok(p.flag in QUANT_OPTIONS, p.flag);
  }
  // what the code does with AWQ's default group on a model it does not divide
  const flat = QUANT_HELP.replace(/\s+/g, " ");
  assert.match(
    flat,
    /awq: default 128 \(one group per row when 128 does not divide every layer's input width\)/,
  );
  assert.doesNotMatch(QUANT_HELP, /largest of 128/);
  assert.match(QUANT_HELP, new RegExp(`\\[gptq: default ${DEFAULTS.gptq.blocksize}\\]`));
  assert.match(flat, /--fisher-samples N .*\[squeezellm: default 100\]/);
  assert.match(QUANT_HELP, /--sym .*\[rtn, gptq\]/);
});

Deno.test("ppl and quantize reject a bad quantization flag before loading any model or data", async () => {
  const main = new URL("./main.ts", import.meta.url).pathname;
  for (
    const [args, re] of [
      [
        ["ppl", "--method", "squeezellm", "--bits", "3", "--sensitive", "150"],
        /--sensitive must be a number in 0\.\.100, got 150/,
      ],
      [
        ["ppl", "--method", "squeezellm", "--bits", "3", "--sym"],
        /--sym does not apply to --method squeezellm/,
      ],
      [
        ["quantize", "--method", "rtn", "--bits", "3", "--act-order", "--out", "/tmp/x.sqbq"],
        /--act-order does not apply to --method rtn/,
      ],
      [
        ["ppl", "--quantized", "/tmp/x.sqbq", "--sensitive", "0.05"],
        /--sensitive does not apply to --quantized FILE/,
      ],
    ] as const
  ) {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", main, ...args, "--data-dir", "/nonexistent-data-dir", "--offline"],
      env: { NO_COLOR: "1", HF_HUB_OFFLINE: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(r.stderr);
    assert.equal(r.code, 2, err);
    assert.match(err, re);
    assert.doesNotMatch(err, /nonexistent-data-dir/, "the flag is checked before the data dir");
  }
});
