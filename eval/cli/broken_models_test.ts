/**
 * The CLI refuses results it cannot trust: a perplexity that is not finite
 * and a quantized model file that was damaged after it was written are
 * errors (exit 2, one line naming the model or file), never a number.
 */
import assert from "node:assert/strict";
import { SHARED_DATA } from "../../datasets/testing.ts";
import { loadCheckpoint } from "../../model/checkpoint.ts";
import { parseQuantizedModel } from "../../quant/qmodel.ts";
import { cli } from "./_testing.ts";

Deno.test("ppl of a checkpoint with a 1e30 final norm weight is an error naming the model and the window, exit 2, no ppl printed", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const bytes = await Deno.readFile(`${SHARED_DATA}stories260K/stories260K.bin`);
    // llama2.c's legacy layout: 7 int32, then embedding, attention norms, wq, wk, wv, wo,
    // ffn norms, w1, w2, w3, the final norm (stories260K: dim 64, hidden 172, 5 layers,
    // 8 heads over 4 kv heads, vocab 512)
    const [dim, hidden, L, vocab, kv] = [64, 172, 5, 512, 32];
    const floats = vocab * dim + L * dim + 2 * L * dim * dim + 2 * L * kv * dim + L * dim +
      3 * L * hidden * dim;
    new DataView(bytes.buffer).setFloat32(28 + 4 * floats, 1e30, true); // finalNorm[0]
    const file = `${dir}/huge_norm.bin`;
    await Deno.writeFile(file, bytes);
    await Deno.copyFile(`${SHARED_DATA}stories260K/tok512.model`, `${dir}/tok512.model`);
    assert.equal((await loadCheckpoint(file)).finalNorm[0], Math.fround(1e30), "the final norm");
    const args = ["--model", file, "--data-dir", SHARED_DATA, "--dataset", "tinystories"];
    for (const extra of [["--limit", "2"], ["--limit", "2", "--json"]]) {
      const r = await cli("ppl", ...args, ...extra);
      assert.equal(r.code, 2, `exit ${r.code}\n${r.out}\n${r.err}`);
      assert.match(
        r.err,
        /error: perplexity of \S*huge_norm\.bin fp32 is not finite: window 0 has a mean loss of \S+ nats per token over tokens 0\.\.511, whose exp overflows to Infinity/,
      );
      assert.doesNotMatch(r.out, /ppl|Infinity|null/, "no perplexity printed");
      assert.doesNotMatch(r.err, /\n\s+at /, "no stack trace");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ppl --quantized refuses a file with one flipped scale byte, naming the file and the array", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const common = ["--data-dir", SHARED_DATA, "--dataset", "tinystories", "--limit", "1"];
    const file = `${dir}/m.sqbq`;
    const q = await cli(
      "quantize",
      "--data-dir",
      SHARED_DATA,
      "--method",
      "rtn",
      "--bits",
      "3",
      "--out",
      file,
    );
    assert.equal(q.code, 0, q.err);
    const bytes = await Deno.readFile(file);
    const w1 = parseQuantizedModel(bytes).linears.get("layers.2.w1")!.dense as {
      scales: Uint16Array;
    };
    assert.equal(w1.scales.buffer, bytes.buffer, "scales are a view into the file");
    bytes[w1.scales.byteOffset + 1] ^= 0x04; // one bit of the first scale's exponent
    await Deno.writeFile(`${dir}/flipped.sqbq`, bytes);
    const r = await cli("ppl", "--quantized", `${dir}/flipped.sqbq`, ...common, "--json");
    assert.equal(r.code, 2, r.err);
    assert.match(
      r.err,
      /error: Cannot read quantized model \S*flipped\.sqbq: data checksum mismatch in layers\.2\.w1\.scales/,
    );
    assert.doesNotMatch(r.out, /ppl/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
