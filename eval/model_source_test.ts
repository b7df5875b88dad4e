import assert from "node:assert/strict";
import { loadCheckpoint, serializeV1 } from "../model/checkpoint.ts";
import { forward } from "../model/forward.ts";
import { ggufModelBytes, safetensorsBytes, writeHfCheckpoint } from "../model/_convert_testing.ts";
import { parseModelProto } from "../model/sentencepiece.ts";
import { detectModelSource, loadModelSource } from "./model_source.ts";
import { ModelFormatError } from "../model/tensor_file.ts";
import { maxRelError, sharedData } from "../datasets/testing.ts";
import { tempDir } from "../datasets/_testing.ts";
import { repoCacheDir } from "../datasets/hf_cache.ts";
import { MissingDataError } from "../datasets/datadir.ts";

const MODEL = sharedData("stories260K/stories260K.bin");
const TOKENS = [1, 403, 407, 261, 378, 432];

Deno.test("detectModelSource() tells llama2.c (legacy and v1), GGUF, HF folders, safetensors and quantized files apart by content", async () => {
  const ref = await loadCheckpoint(MODEL);
  await using tmp = await tempDir("sqb-source-test-");
  const p = (n: string) => `${tmp.path}/${n}`;
  await Deno.writeFile(p("v1.weights"), serializeV1(ref));
  await Deno.writeFile(p("model.bin"), ggufModelBytes(ref)); // GGUF under a misleading name
  await writeHfCheckpoint(p("hf"), ref);
  await Deno.writeFile(p("q.sqb"), new TextEncoder().encode("SQBQ" + "\0".repeat(60)));
  await Deno.writeFile(p("x.safetensors"), safetensorsBytes([]));
  assert.equal(await detectModelSource(MODEL), "llama2c");
  assert.equal(await detectModelSource(p("v1.weights")), "llama2c");
  assert.equal(await detectModelSource(p("model.bin")), "gguf");
  assert.equal(await detectModelSource(p("hf")), "hf");
  assert.equal(await detectModelSource(p("q.sqb")), "quantized");
  assert.equal(await detectModelSource(p("x.safetensors")), "safetensors");
  // a legacy header whose shapes do not give the file size is not taken for llama2.c
  const cut = (await Deno.readFile(MODEL)).subarray(0, 500_000);
  await Deno.writeFile(p("cut.bin"), cut);
  await assert.rejects(detectModelSource(p("cut.bin")), (e: Error) => {
    assert.ok(e instanceof ModelFormatError);
    assert.match(e.message, /Cannot tell what model .*cut\.bin is \(500000 bytes\)/);
    return true;
  });
  await Deno.mkdir(p("empty"));
  await assert.rejects(detectModelSource(p("empty")), /empty has no config\.json/);
  await assert.rejects(detectModelSource(p("nope")), /Cannot read model .*nope: no such file/);
});

Deno.test("loadModelSource() gives the same logits from the llama2.c file, a GGUF file, a HF folder and a cached model id", async () => {
  const ref = await loadCheckpoint(MODEL);
  const want = forward(ref, TOKENS).slice();
  await using tmp = await tempDir("sqb-source-test-");
  const proto = parseModelProto(await Deno.readFile(sharedData("stories260K/tok512.model")));
  await Deno.writeFile(`${tmp.path}/m.gguf`, ggufModelBytes(ref, { tokenizer: proto }));
  await writeHfCheckpoint(`${tmp.path}/hf`, ref, { shards: 2 });
  const cache = `${tmp.path}/cache`;
  const hash = "c".repeat(40);
  const root = repoCacheDir(cache, "karpathy/stories260K-hf");
  await writeHfCheckpoint(`${root}/snapshots/${hash}`, ref, { dtype: "BF16" });
  await Deno.mkdir(`${root}/refs`);
  await Deno.writeTextFile(`${root}/refs/main`, hash);
  const opts = { cacheDir: cache, offline: true };
  const cases: [string, string, number][] = [
    [MODEL, "llama2c", 1e-6],
    [`${tmp.path}/m.gguf`, "gguf", 1e-6],
    [`${tmp.path}/hf`, "hf", 1e-6],
    ["karpathy/stories260K-hf", "hf", 2e-2],
  ];
  for (const [arg, kind, tol] of cases) {
    const m = await loadModelSource(arg, opts);
    assert.equal(m.kind, kind, arg);
    const err = maxRelError(forward(m.weights, TOKENS), want);
    assert.ok(err <= tol, `${arg}: relative error ${err}`);
  }
  const g = await loadModelSource(`${tmp.path}/m.gguf`);
  assert.equal(g.tokenizer?.vocabSize, 512);
  assert.match(g.description, /^GGUF v3 /);
  const id = await loadModelSource("karpathy/stories260K-hf", opts);
  assert.equal(id.path, `${root}/snapshots/${hash}`);
  assert.equal(id.hub?.commit, hash);
  assert.match(
    id.description,
    /karpathy\/stories260K-hf@main \(commit cccccccccc, LlamaForCausalLM, bfloat16\)/,
  );
  await assert.rejects(
    loadModelSource("karpathy/missing", opts),
    (e: Error) => e instanceof MissingDataError && /refs\/main not found/.test(e.message),
  );
});

Deno.test("loadModelSource() sends a quantized file to --quantized and a bare safetensors file to its folder", async () => {
  await using tmp = await tempDir("sqb-source-test-");
  await Deno.writeFile(`${tmp.path}/q.sqb`, new TextEncoder().encode("SQBQ" + "\0".repeat(60)));
  await assert.rejects(
    loadModelSource(`${tmp.path}/q.sqb`),
    /q\.sqb is a squeezebench quantized model: evaluate it with --quantized /,
  );
  await Deno.writeFile(`${tmp.path}/model.safetensors`, safetensorsBytes([]));
  await assert.rejects(
    loadModelSource(`${tmp.path}/model.safetensors`),
    /is a bare safetensors file: pass the folder that holds it with its config\.json/,
  );
});
