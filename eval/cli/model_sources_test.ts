/**
 * `--model` accepts every model source model/source.ts reads: the same
 * stories260K weights as a Hugging Face folder, a GGUF file and a model id
 * in the Hugging Face cache give the llama2.c file's perplexity.
 */
import assert from "node:assert/strict";
import { loadCheckpoint } from "../../model/checkpoint.ts";
import { ggufModelBytes, writeHfCheckpoint } from "../../model/_convert_testing.ts";
import { SHARED_DATA, sharedData } from "../../datasets/testing.ts";
import { tempDir } from "../../datasets/_testing.ts";
import { cli, cliWith, lastJson } from "./_testing.ts";

const PPL = [
  "ppl",
  "--data-dir",
  SHARED_DATA,
  "--dataset",
  "tinystories",
  "--limit",
  "2",
  "--json",
];
const TOKENIZER = sharedData("stories260K/tok512.model");

async function pplOf(run: Promise<{ code: number; out: string; err: string }>): Promise<number> {
  const r = await run;
  assert.equal(r.code, 0, r.err);
  return lastJson(r.out).ppl;
}

Deno.test("ppl --model takes a Hugging Face folder, a GGUF file and a cached model id", async () => {
  await using tmp = await tempDir("sqb-model-sources-");
  const w = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));
  const tokenizerModel = await Deno.readFile(TOKENIZER);
  const reference = await pplOf(cli(...PPL));

  const folder = `${tmp.path}/stories-hf`;
  await writeHfCheckpoint(folder, w, { files: { "tokenizer.model": tokenizerModel } });
  assert.equal(await pplOf(cli(...PPL, "--model", folder)), reference);

  const gguf = `${tmp.path}/stories.gguf`;
  await Deno.writeFile(gguf, ggufModelBytes(w, { type: "F32" }));
  // GGUF keeps the RMSNorm epsilon as a float32 (1e-5 → 9.99999975e-6), hence not bit-equal.
  const ggufPpl = await pplOf(cli(...PPL, "--model", gguf, "--tokenizer", TOKENIZER));
  assert.ok(Math.abs(ggufPpl / reference - 1) < 1e-6, `${ggufPpl} vs ${reference}`);

  // huggingface_hub's cache layout: refs/main names the snapshot.
  const hub = `${tmp.path}/hub`, commit = "0123456789abcdef0123456789abcdef01234567";
  const repo = `${hub}/models--tiny--stories260K`;
  await writeHfCheckpoint(`${repo}/snapshots/${commit}`, w, {
    files: { "tokenizer.model": tokenizerModel },
  });
  await Deno.mkdir(`${repo}/refs`, { recursive: true });
  await Deno.writeTextFile(`${repo}/refs/main`, commit);
  const byId = await cliWith({ HF_HUB_CACHE: hub }, ...PPL, "--model", "tiny/stories260K");
  assert.equal(await pplOf(Promise.resolve(byId)), reference);
  assert.equal(lastJson(byId.out).model, "tiny/stories260K");

  const missing = await cliWith({ HF_HUB_CACHE: hub }, ...PPL, "--model", "tiny/absent");
  assert.equal(missing.code, 2);
  assert.match(missing.err, /tiny\/absent/);
  assert.doesNotMatch(missing.err, /^\s+at /m);
});
