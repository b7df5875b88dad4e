/**
 * Hugging Face checkpoint folders written from stories260K by the test
 * converter (model/_convert_testing.ts) must give the llama2.c file's logits.
 */
import assert from "node:assert/strict";
import { loadCheckpoint } from "./checkpoint.ts";
import { forward } from "./forward.ts";
import { generate } from "../eval/generate.ts";
import { loadTokenizer } from "./tokenizer.ts";
import {
  hfConfigJson,
  hfTensors,
  safetensorsBytes,
  tokenizerJsonFromSentencePiece,
  writeHfCheckpoint,
} from "./_convert_testing.ts";
import {
  loadHfFisher,
  loadHfModel,
  parseHfConfig,
  permuteRotateHalf,
  unpermuteRotateHalf,
} from "./hf.ts";
import { mulberry32, randomWeights, tinyConfig } from "./random.ts";
import { parseModelProto, SentencePieceTokenizer } from "./sentencepiece.ts";
import { TokenizerJson } from "./tokenizer_json.ts";
import { ModelFormatError } from "./tensor_file.ts";
import {
  headSize,
  LINEAR_NAMES,
  type LinearName,
  type LlamaWeights,
  withLinears,
} from "./config.ts";
import { maxRelError, sharedData } from "../datasets/testing.ts";
import { tempDir } from "../datasets/_testing.ts";

const MODEL = sharedData("stories260K/stories260K.bin");
const TOKENS = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 13, 10, 500];
/** The greedy text documented for stories260K (../shared/data/README.md). */
const GREEDY =
  "Once upon a time, there was a little girl named Lily. She loved to play outside in " +
  "the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high";

/** Largest relative error of the logits of `got` against `want` on TOKENS. */
function logitError(got: LlamaWeights, want: LlamaWeights): number {
  const a = forward(got, TOKENS).slice();
  return maxRelError(a, forward(want, TOKENS));
}

Deno.test("loadHfModel() reads stories260K as F32 safetensors with the llama2.c file's logits, and greedy text", async () => {
  const ref = await loadCheckpoint(MODEL);
  await using tmp = await tempDir("sqb-hf-test-");
  await writeHfCheckpoint(tmp.path, ref, {
    files: { "tokenizer.model": await Deno.readFile(sharedData("stories260K/tok512.model")) },
  });
  const m = await loadHfModel(tmp.path);
  assert.deepEqual(m.config, ref.config);
  assert.equal(m.architecture, "LlamaForCausalLM");
  assert.equal(m.torchDtype, "float32");
  assert.equal(m.weights.classifier, m.weights.tokenEmbedding, "tied: one array");
  const err = logitError(m.weights, ref);
  assert.ok(err <= 1e-6, `relative error ${err}`);
  assert.ok(m.tokenizer, "tokenizer.model beside the checkpoint is used");
  const text = generate(m.weights, m.tokenizer!, { steps: 60 }).text;
  assert.ok(text.startsWith(GREEDY), text);
  const refText = generate(ref, await loadTokenizer(sharedData("stories260K/tok512.model")), {
    steps: 60,
  }).text;
  assert.equal(text, refText);
});

for (const [dtype, tol] of [["F16", 2e-3], ["BF16", 2e-2]] as const) {
  Deno.test(`loadHfModel() reads ${dtype} safetensors within ${dtype} precision (${tol} relative)`, async () => {
    const ref = await loadCheckpoint(MODEL);
    await using tmp = await tempDir("sqb-hf-test-");
    await writeHfCheckpoint(tmp.path, ref, { dtype });
    const m = await loadHfModel(tmp.path);
    assert.equal(m.torchDtype, dtype === "F16" ? "float16" : "bfloat16");
    const err = logitError(m.weights, ref);
    assert.ok(err > 0 && err < tol, `relative error ${err}`);
  });
}

Deno.test("loadHfModel() reads a sharded checkpoint with an untied lm_head", async () => {
  const ref = await loadCheckpoint(MODEL);
  await using tmp = await tempDir("sqb-hf-test-");
  await writeHfCheckpoint(tmp.path, ref, { shards: 3, untie: true });
  const files = [...Deno.readDirSync(tmp.path)].map((e) => e.name).sort();
  assert.deepEqual(files, [
    "config.json",
    "model-00001-of-00003.safetensors",
    "model-00002-of-00003.safetensors",
    "model-00003-of-00003.safetensors",
    "model.safetensors.index.json",
  ]);
  const m = await loadHfModel(tmp.path);
  assert.equal(m.config.sharedClassifier, false);
  assert.notEqual(m.weights.classifier, m.weights.tokenEmbedding);
  assert.equal(m.tokenizer, undefined);
  assert.ok(logitError(m.weights, ref) <= 1e-6);
});

Deno.test("loadHfModel() uses lm_head.weight of a model with a separate classifier", async () => {
  const c = tinyConfig({ dim: 32, nHeads: 4, nKvHeads: 2, vocabSize: 40, sharedClassifier: false });
  const ref = randomWeights(c, 3);
  await using tmp = await tempDir("sqb-hf-test-");
  await writeHfCheckpoint(tmp.path, ref);
  const m = await loadHfModel(tmp.path);
  assert.deepEqual(m.weights.classifier, ref.classifier);
  const tokens = [1, 5, 9, 33, 2, 17];
  const got = forward(m.weights, tokens).slice();
  assert.ok(maxRelError(got, forward(ref, tokens)) <= 1e-6);
});

/**
 * Hugging Face's apply_rotary_pos_emb on one head vector laid out rotate-half:
 * q·cos + rotate_half(q)·sin with cos/sin = cat(freqs, freqs).
 */
function ropeRotateHalf(q: Float64Array, pos: number, theta: number): Float64Array {
  const hs = q.length, half = hs / 2;
  const out = new Float64Array(hs);
  for (let i = 0; i < hs; i++) {
    const f = 1 / Math.pow(theta, (2 * (i % half)) / hs);
    const rot = i < half ? -q[i + half] : q[i - half];
    out[i] = q[i] * Math.cos(pos * f) + rot * Math.sin(pos * f);
  }
  return out;
}

/** llama2.c's RoPE on one head vector: pairs (2i, 2i+1) rotated by pos · theta^(-2i/hs). */
function ropeInterleaved(q: Float64Array, pos: number, theta: number): Float64Array {
  const hs = q.length;
  const out = new Float64Array(hs);
  for (let i = 0; i < hs; i += 2) {
    const f = 1 / Math.pow(theta, i / hs);
    const c = Math.cos(pos * f), s = Math.sin(pos * f);
    out[i] = q[i] * c - q[i + 1] * s;
    out[i + 1] = q[i] * s + q[i + 1] * c;
  }
  return out;
}

Deno.test("permuteRotateHalf() is HF's permutation: rotate-half RoPE on permuted rows = interleaved RoPE, then the same permutation", async () => {
  const w = await loadCheckpoint(MODEL);
  const c = w.config, hs = headSize(c);
  const wq = w.layers[2].wq; // [dim, dim]
  const hf = permuteRotateHalf(wq, c.nHeads, c.dim);
  assert.deepEqual(unpermuteRotateHalf(hf, c.nHeads, c.dim), wq);
  const x = Float64Array.from({ length: c.dim }, (_, i) => Math.sin(i + 1));
  const matvec = (m: Float32Array) =>
    Float64Array.from({ length: c.dim }, (_, o) => {
      let s = 0;
      for (let i = 0; i < c.dim; i++) s += m[o * c.dim + i] * x[i];
      return s;
    });
  const qMeta = matvec(wq), qHf = matvec(hf);
  const pos = 7;
  for (let h = 0; h < c.nHeads; h++) {
    const a = ropeInterleaved(qMeta.subarray(h * hs, (h + 1) * hs), pos, c.ropeTheta);
    const b = ropeRotateHalf(qHf.subarray(h * hs, (h + 1) * hs), pos, c.ropeTheta);
    // HF element p·half + i is Meta element 2i + p
    for (let i = 0; i < hs / 2; i++) {
      for (let p = 0; p < 2; p++) {
        assert.ok(Math.abs(a[2 * i + p] - b[p * hs / 2 + i]) < 1e-9, `head ${h} element ${i},${p}`);
      }
    }
  }
});

Deno.test("parseHfConfig() maps config.json fields and rejects what the forward pass lacks", async () => {
  const ref = await loadCheckpoint(MODEL);
  const base = JSON.parse(hfConfigJson(ref, "F16"));
  const parse = (over: Record<string, unknown>) =>
    parseHfConfig(JSON.stringify({ ...base, ...over }), "/m/config.json");
  assert.deepEqual(parse({}).config, ref.config);
  const mistral = parse({
    architectures: ["MistralForCausalLM"],
    sliding_window: 256,
    rope_theta: 1e6,
  });
  assert.equal(mistral.config.maxSeqLen, 256);
  assert.equal(mistral.config.ropeTheta, 1e6);
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ architectures: ["GPT2LMHeadModel"] }, /architecture GPT2LMHeadModel is not supported/],
    [{ hidden_size: 65 }, /not a multiple of num_attention_heads/],
    [{ num_key_value_heads: 3 }, /not a multiple of num_key_value_heads 3/],
    [{ rope_scaling: { type: "linear", factor: 2 } }, /rope_scaling .* is not supported/],
    [{ attention_bias: true }, /attention_bias = true is not supported/],
    [{ intermediate_size: -1 }, /intermediate_size is -1, expected a positive integer/],
    [{ head_dim: 16 }, /head_dim 16 differs/],
  ];
  for (const [over, re] of cases) {
    assert.throws(() => parse(over), (e: Error) => {
      assert.ok(e instanceof ModelFormatError, String(e));
      assert.match(e.message, /\/m\/config\.json/);
      assert.match(e.message, re);
      return true;
    });
  }
});

Deno.test("loadHfModel() names the file and tensor when a tensor is missing or misshapen", async () => {
  const ref = await loadCheckpoint(MODEL);
  await using tmp = await tempDir("sqb-hf-test-");
  await writeHfCheckpoint(tmp.path, ref);
  const cfg = JSON.parse(await Deno.readTextFile(`${tmp.path}/config.json`));
  await Deno.writeTextFile(
    `${tmp.path}/config.json`,
    JSON.stringify({ ...cfg, intermediate_size: 160 }),
  );
  await assert.rejects(loadHfModel(tmp.path), (e: Error) => {
    assert.ok(e instanceof ModelFormatError);
    assert.match(
      e.message,
      /model\.layers\.0\.mlp\.gate_proj\.weight.* has shape \[172,64\], config\.json implies \[160,64\]/,
    );
    return true;
  });
  await Deno.writeTextFile(
    `${tmp.path}/config.json`,
    JSON.stringify({ ...cfg, tie_word_embeddings: false }),
  );
  await assert.rejects(loadHfModel(tmp.path), /Missing tensor "lm_head\.weight" in /);
  await Deno.remove(`${tmp.path}/model.safetensors`);
  await assert.rejects(
    loadHfModel(tmp.path),
    /No weights in .*: neither model\.safetensors nor model\.safetensors\.index\.json exists/,
  );
});

Deno.test("loadHfFisher() reads SqueezeLLM-gradients output (squared gradients under the model's tensor names) in llama2.c's layout", async () => {
  const ref = await loadCheckpoint(MODEL);
  const u = mulberry32(11);
  const fisher = ref.layers.map((lw) =>
    Object.fromEntries(
      LINEAR_NAMES.map((n) => [n, Float32Array.from(lw[n], () => u() * 1e-3)]),
    ) as Record<LinearName, Float32Array>
  );
  // save_pretrained of the gradients: every parameter, linears hold F = Σ g²
  const grads = withLinears(ref, (l, n) => fisher[l][n]);
  await using tmp = await tempDir("sqb-hf-test-");
  await writeHfCheckpoint(tmp.path, grads);
  const got = await loadHfFisher(tmp.path, ref.config);
  assert.equal(got.length, ref.config.nLayers);
  for (let l = 0; l < got.length; l++) {
    for (const n of LINEAR_NAMES) assert.deepEqual(got[l][n], fisher[l][n], `layer ${l} ${n}`);
  }
  await assert.rejects(
    loadHfFisher(tmp.path, { ...ref.config, hiddenDim: 160 }),
    /Fisher checkpoint .* is for another model: its hiddenDim is 172, the model's 160/,
  );
  fisher[1].w2[5] = -1;
  await writeHfCheckpoint(tmp.path, withLinears(ref, (l, n) => fisher[l][n]));
  await assert.rejects(
    loadHfFisher(tmp.path, ref.config),
    /Fisher tensor "model\.layers\.1\.mlp\.down_proj\.weight" in .* has a negative value \(-1\) at index 5/,
  );
});

Deno.test("loadHfModel() uses tokenizer.json when the folder has no tokenizer.model", async () => {
  const ref = await loadCheckpoint(MODEL);
  const proto = parseModelProto(await Deno.readFile(sharedData("stories260K/tok512.model")));
  await using tmp = await tempDir("sqb-hf-test-");
  await writeHfCheckpoint(tmp.path, ref, {
    files: { "tokenizer.json": tokenizerJsonFromSentencePiece(proto) },
  });
  const m = await loadHfModel(tmp.path);
  assert.ok(m.tokenizer instanceof TokenizerJson);
  const text = "Once upon a time, there was a big dog.";
  assert.deepEqual(
    m.tokenizer.encodeWithBos(text),
    new SentencePieceTokenizer(proto).encodeWithBos(text),
  );
  assert.ok(generate(m.weights, m.tokenizer, { steps: 60 }).text.startsWith(GREEDY));
});

Deno.test("loadHfModel() refuses a tensor the forward pass would not read (a bias, a block too many, a stray), names it and the folder", async () => {
  const w = randomWeights(tinyConfig({ nLayers: 2 }), 5);
  await using tmp = await tempDir("sqb-hf-extra-");
  await writeHfCheckpoint(tmp.path, w);
  const withExtra = async (name: string, n: number, values?: Float32Array) => {
    const data = values ? new Uint8Array(values.buffer) : new Uint8Array(4 * n);
    const extra = { name, dtype: "F32", shape: [n], data };
    await Deno.writeFile(
      `${tmp.path}/model.safetensors`,
      safetensorsBytes([...hfTensors(w, "F32"), extra]),
    );
    return loadHfModel(tmp.path);
  };
  const { dim } = w.config;
  // Saved by older transformers: accepted when it is rope_theta's, else refused.
  const hs = headSize(w.config), theta = w.config.ropeTheta;
  const invFreq = new Float32Array(hs / 2).map((_, i) => theta ** (-2 * i / hs));
  const rotary = "model.layers.1.self_attn.rotary_emb.inv_freq";
  await withExtra(rotary, hs / 2, invFreq);
  await assert.rejects(
    withExtra(rotary, hs / 2, invFreq.map((v, i) => i === 1 ? v / 4 : v)), // a scaled frequency
    /tensor "model\.layers\.1\.self_attn\.rotary_emb\.inv_freq" holds RoPE frequencies other than rope_theta's \(10000\) .* \(entry 1: /,
  );
  await assert.rejects(
    withExtra(rotary, hs, new Float32Array(hs)),
    new RegExp(`\\(${hs} entries\\)`),
  );
  // A tied model's saved lm_head (transformers ties it to the embedding): accepted.
  assert.ok(w.config.sharedClassifier);
  await withExtra("lm_head.weight", dim);
  for (
    const [name, re] of [
      ["model.layers.0.self_attn.q_proj.bias", /is a bias, and the forward pass has none/],
      ["model.layers.2.input_layernorm.weight", /belongs to block 2, past num_hidden_layers \(2\)/],
      ["model.layers.0.mlp.experts.0.w1.weight", /is not one of a LLaMA model's tensors/],
    ] as const
  ) {
    await assert.rejects(withExtra(name, dim), (e: Error) => {
      assert.ok(e instanceof ModelFormatError, String(e));
      assert.ok(e.message.startsWith(`Cannot use ${tmp.path}: tensor "${name}" `), e.message);
      assert.match(e.message, re);
      return true;
    });
  }
});
