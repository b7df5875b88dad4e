import assert from "node:assert/strict";
import { SHARED_DATA } from "../../datasets/testing.ts";
import { tempDir } from "../../datasets/_testing.ts";
import { cli, lastJson } from "./_testing.ts";

Deno.test("generate --json prints the documented story as the last stdout line's JSON", async () => {
  const r = await cli(
    "generate",
    "--model",
    "stories260K",
    "--data-dir",
    SHARED_DATA,
    "--steps",
    "40",
    "--temperature",
    "0",
    "--json",
  );
  assert.equal(r.code, 0, r.err);
  const j = lastJson(r.out);
  assert.match(
    j.text,
    /^Once upon a time, there was a little girl named Lily\. She loved to play outside in the park\./,
  );
  assert.equal(j.tokens[0], 1);
});

Deno.test("every subcommand answers --help", async () => {
  for (const name of ["eval", "ppl", "quantize", "generate", "bench", "report"]) {
    const r = await cli(name, "--help");
    assert.equal(r.code, 0, `${name}: ${r.err}`);
    assert.match(r.out, new RegExp(`deno task ${name}`));
  }
});

Deno.test("bad input gets one clear error line and exit code 2, never a stack trace", async () => {
  // A --data-dir that does not exist is an error of its own (checks_test.ts): an empty one.
  await using empty = await tempDir("sqb-cli-test-");
  const cases: [string[], RegExp][] = [
    [["frobnicate"], /unknown command "frobnicate"/],
    [
      ["ppl", "--data-dir", SHARED_DATA, "--method", "rtn", "--bits", "9"],
      /--bits must be an integer in 2\.\.8, got "9"/,
    ],
    [
      ["ppl", "--data-dir", SHARED_DATA, "--method", "nope", "--bits", "3"],
      /--method must be one of rtn, gptq, awq, squeezellm, smoothquant, abq; got "nope"/,
    ],
    [["ppl", "--data-dir", SHARED_DATA, "--bits", "3"], /--bits needs --method/],
    [
      ["ppl", "--data-dir", SHARED_DATA, "--method", "rtn", "--bits", "3", "--group", "5"],
      /--group 5 does not divide every layer's input width \(64, 172\)/,
    ],
    [
      ["ppl", "--data-dir", SHARED_DATA, "--method", "awq", "--bits", "3", "--group", "32"],
      /--group 32 does not divide every layer's input width \(64, 172\)/,
    ],
    [["ppl", "--data-dir", SHARED_DATA, "--dataset", "imdb"], /--dataset must be one of/],
    [
      ["ppl", "--data-dir", SHARED_DATA, "--seqlen", "4096", "--limit", "1"],
      /--seqlen 4096 exceeds the model's max_seq_len 512/,
    ],
    [
      ["generate", "--model", "/nonexistent/x.bin"],
      /--model "\/nonexistent\/x\.bin" is neither a known model/,
    ],
    [["generate", "--frob"], /Unknown option '--frob'/],
    [["generate", "--data-dir", empty.path, "--offline"], /stories260K\/stories260K\.bin/],
  ];
  for (const [args, re] of cases) {
    const r = await cli(...args);
    assert.equal(r.code, 2, `${args.join(" ")}: exit ${r.code}\n${r.err}`);
    assert.match(r.err, re);
    assert.doesNotMatch(r.err, /\n\s+at /, `stack trace for ${args.join(" ")}`);
  }
});

Deno.test("generate rejects a truncated checkpoint with the file name and byte counts", async () => {
  const dir = await Deno.makeTempDir();
  const bytes = await Deno.readFile(`${SHARED_DATA}stories260K/stories260K.bin`);
  await Deno.writeFile(`${dir}/cut.bin`, bytes.subarray(0, 100_000));
  await Deno.copyFile(`${SHARED_DATA}stories260K/tok512.model`, `${dir}/tok512.model`);
  const r = await cli("generate", "--model", `${dir}/cut.bin`, "--steps", "5");
  assert.equal(r.code, 2);
  assert.match(r.err, /cut\.bin.*needs 1056540 bytes, file has 100000 \(truncated\)/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("quantize --out FILE, then ppl --quantized FILE, gives the in-memory perplexity", async () => {
  const dir = await Deno.makeTempDir();
  const common = ["--data-dir", SHARED_DATA, "--dataset", "tinystories", "--limit", "2", "--json"];
  const q = await cli(
    "quantize",
    "--data-dir",
    SHARED_DATA,
    "--method",
    "rtn",
    "--bits",
    "4",
    "--out",
    `${dir}/m.sqbq`,
    "--json",
  );
  assert.equal(q.code, 0, q.err);
  assert.equal(lastJson(q.out).variant, "rtn.w4");
  const fromFile = lastJson((await cli("ppl", "--quantized", `${dir}/m.sqbq`, ...common)).out);
  const inMemory = lastJson((await cli("ppl", "--method", "rtn", "--bits", "4", ...common)).out);
  assert.equal(fromFile.ppl, inMemory.ppl);
  assert.equal(fromFile.windows, 2);
  assert.equal(fromFile.limited, true);
  assert.match(fromFile.protocol, /tinystories/);
  await Deno.writeFile(`${dir}/bad.sqbq`, new TextEncoder().encode("not a model"));
  const bad = await cli("ppl", "--quantized", `${dir}/bad.sqbq`, ...common);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /bad\.sqbq/);
  await Deno.remove(dir, { recursive: true });
});
