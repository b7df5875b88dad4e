/**
 * GGUF files written from stories260K by the test converter
 * (model/_convert_testing.ts, as llama.cpp's convert_hf_to_gguf.py writes
 * them) must give the llama2.c file's logits and tokenizer.
 */
import assert from "node:assert/strict";
import { loadCheckpoint } from "./checkpoint.ts";
import { forward } from "./forward.ts";
import { generate } from "../eval/generate.ts";
import { parseModelProto, SentencePieceTokenizer } from "./sentencepiece.ts";
import { ggufBytes, ggufModelBytes, ggufModelParts, quantizeQ8_0 } from "./_convert_testing.ts";
import {
  dequantizeQ8_0,
  GGML_TYPES,
  GgufFile,
  ggufLlamaConfig,
  GgufType,
  loadGgufModel,
  parseGgufHeader,
} from "./gguf.ts";
import { randomWeights, tinyConfig } from "./random.ts";
import { memoryByteSource, ModelFormatError } from "./tensor_file.ts";
import { maxRelError, sharedData } from "../datasets/testing.ts";
import { tempDir } from "../datasets/_testing.ts";

const MODEL = sharedData("stories260K/stories260K.bin");
const proto = parseModelProto(await Deno.readFile(sharedData("stories260K/tok512.model")));
const TOKENS = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 13, 10, 500];

for (
  const [type, version, tol] of [
    ["F32", 3, 1e-6],
    ["F32", 2, 1e-6],
    ["F16", 3, 2e-3],
    ["BF16", 3, 2e-2],
    ["Q8_0", 3, 2e-2],
  ] as const
) {
  Deno.test(`loadGgufModel() reads stories260K as GGUF v${version} ${type} with the llama2.c logits (${tol} relative)`, async () => {
    const ref = await loadCheckpoint(MODEL);
    await using tmp = await tempDir("sqb-gguf-test-");
    const path = `${tmp.path}/stories260K-${type}.gguf`;
    await Deno.writeFile(path, ggufModelBytes(ref, { type, version, tokenizer: proto }));
    const m = loadGgufModel(path);
    assert.equal(m.version, version);
    assert.deepEqual(
      { ...m.config, normEps: 0 },
      { ...ref.config, normEps: 0 },
    );
    assert.equal(m.config.normEps, Math.fround(1e-5), "stored as float32");
    const got = forward(m.weights, TOKENS).slice();
    const err = maxRelError(got, forward(ref, TOKENS));
    assert.ok(err <= tol, `relative error ${err}`);
    if (type !== "F32") assert.ok(err > 0, "a 16/8-bit copy is not bit-identical");
    if (type === "F32") {
      const tok = m.tokenizer!;
      const text = generate(m.weights, tok, { steps: 60 }).text;
      const refText = generate(ref, new SentencePieceTokenizer(proto), { steps: 60 }).text;
      assert.equal(text, refText);
    }
  });
}

Deno.test("the GGUF tokenizer gives sentencepiece's ids on the TinyStories head", async () => {
  const ref = await loadCheckpoint(MODEL);
  await using tmp = await tempDir("sqb-gguf-test-");
  await Deno.writeFile(`${tmp.path}/m.gguf`, ggufModelBytes(ref, { tokenizer: proto }));
  const tok = loadGgufModel(`${tmp.path}/m.gguf`).tokenizer!;
  const sp = new SentencePieceTokenizer(proto);
  const text = await Deno.readTextFile(sharedData("tinystories/tinystories-valid-head.txt"));
  assert.deepEqual(tok.encodeWithBos(text), sp.encodeWithBos(text));
  assert.equal(tok.source, `${tmp.path}/m.gguf`);
});

Deno.test("GGUF: general.alignment is honoured, metadata of every type and arrays round-trip", () => {
  const T = GgufType;
  const bytes = ggufBytes(
    [
      { key: "general.alignment", type: T.UINT32, value: 64 },
      { key: "u8", type: T.UINT8, value: 200 },
      { key: "i8", type: T.INT8, value: -3 },
      { key: "u16", type: T.UINT16, value: 60000 },
      { key: "i16", type: T.INT16, value: -300 },
      { key: "i32", type: T.INT32, value: -70000 },
      { key: "f32", type: T.FLOAT32, value: 0.5 },
      { key: "b", type: T.BOOL, value: true },
      { key: "u64", type: T.UINT64, value: 2 ** 40 },
      { key: "i64", type: T.INT64, value: -(2 ** 40) },
      { key: "f64", type: T.FLOAT64, value: Math.PI },
      { key: "s", type: T.STRING, value: "héllo" },
      { key: "as", type: T.ARRAY, elemType: T.STRING, value: ["a", "", "ç"] },
      { key: "ai", type: T.ARRAY, elemType: T.INT32, value: [1, -2, 3] },
      { key: "ab", type: T.ARRAY, elemType: T.BOOL, value: [true, false] },
    ],
    [
      { name: "a", ne: [3], type: 0, data: new Uint8Array(new Float32Array([1, 2, 3]).buffer) },
      { name: "b", ne: [2], type: 0, data: new Uint8Array(new Float32Array([4, 5]).buffer) },
    ],
    3,
    64,
  );
  using g = new GgufFile(memoryByteSource(bytes, "x.gguf"));
  const md = g.header.metadata;
  assert.equal(g.header.alignment, 64);
  assert.equal(g.header.dataStart % 64, 0);
  assert.equal(g.header.tensors.get("b")!.begin - g.header.dataStart, 64);
  assert.deepEqual(
    ["u8", "i8", "u16", "i16", "i32", "f32", "b", "u64", "i64", "f64", "s"].map((k) => md.get(k)),
    [200, -3, 60000, -300, -70000, 0.5, true, 2 ** 40, -(2 ** 40), Math.PI, "héllo"],
  );
  assert.deepEqual(md.get("as"), ["a", "", "ç"]);
  assert.deepEqual(md.get("ai"), Int32Array.of(1, -2, 3));
  assert.deepEqual(md.get("ab"), [true, false]);
  assert.deepEqual(g.read("a"), Float32Array.of(1, 2, 3));
  assert.deepEqual(g.read("b"), Float32Array.of(4, 5));
});

Deno.test("dequantizeQ8_0() inverts llama.cpp's Q8_0 quantization within half a step", () => {
  const x = Float32Array.from({ length: 96 }, (_, i) => Math.sin(i * 0.37) * (i < 32 ? 0.01 : 3));
  const y = dequantizeQ8_0(quantizeQ8_0(x));
  for (let b = 0; b < 3; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]));
    for (let j = 0; j < 32; j++) {
      const i = b * 32 + j;
      assert.ok(Math.abs(y[i] - x[i]) <= (amax / 127) * 0.51 + 1e-7, `element ${i}`);
    }
  }
  assert.deepEqual(dequantizeQ8_0(quantizeQ8_0(new Float32Array(32))), new Float32Array(32));
});

Deno.test("GGUF: a Q4_K tensor is an 'unsupported tensor type' error naming the file", () => {
  const kvs = [{ key: "general.architecture", type: GgufType.STRING, value: "llama" }];
  // Q4_K: blocks of 256 elements in 144 bytes
  const q4 = ggufBytes(kvs, [{ name: "t", ne: [256, 4], type: 12, data: new Uint8Array(4 * 144) }]);
  using g = new GgufFile(memoryByteSource(q4, "/models/q4.gguf"));
  assert.equal(GGML_TYPES[g.header.tensors.get("t")!.type].name, "Q4_K");
  assert.throws(
    () => g.read("t"),
    (e: Error) =>
      e instanceof ModelFormatError &&
      /^Unsupported tensor type Q4_K in \/models\/q4\.gguf/.test(e.message),
  );
});

Deno.test("parseGgufHeader() rejects malformed headers with messages that say what is wrong", () => {
  const T = GgufType;
  const ok = ggufBytes([{ key: "k", type: T.STRING, value: "v" }], [
    { name: "a", ne: [4], type: 0, data: new Uint8Array(16) },
  ]);
  const parse = (b: Uint8Array) => parseGgufHeader(memoryByteSource(b, "/x.gguf"));
  const expectErr = (b: Uint8Array, re: RegExp) =>
    assert.throws(() => parse(b), (e: Error) => {
      assert.ok(e instanceof ModelFormatError, String(e));
      assert.match(e.message, /\/x\.gguf/);
      assert.match(e.message, re);
      return true;
    });
  parse(ok);
  const mut = (f: (d: DataView, b: Uint8Array) => void) => {
    const b = ok.slice();
    f(new DataView(b.buffer), b);
    return b;
  };
  expectErr(mut((d) => d.setUint32(0, 0x46554746, true)), /not a GGUF file/);
  expectErr(mut((d) => d.setUint32(4, 1, true)), /version 1 is not supported/);
  expectErr(
    mut((d) => d.setBigUint64(8, 2n ** 40n, true)),
    /header claims 1 metadata entries and 1099511627776 tensors/,
  );
  expectErr(
    ok.subarray(0, ok.length - 24),
    /needs data bytes 0\.\.16, the file has 8 after the header/,
  );
  expectErr(
    ok.subarray(0, 70),
    /truncated: tensor "a" type needs 4 bytes at offset 67, file has 70/,
  );
  // value type of "k" (after magic, version, 2 counts, key length 8 + "k")
  expectErr(mut((d) => d.setUint32(33, 99, true)), /unknown value type 99/);
  expectErr(
    ggufBytes([], [{ name: "a", ne: [4], type: 13 + 100, data: new Uint8Array(16) }]),
    /unknown ggml type 113/,
  );
  expectErr(
    ggufBytes([], [{ name: "a", ne: [33], type: 8, data: new Uint8Array(34) }]),
    /ne\[0\] = 33 is not a multiple of the block 32/,
  );
  expectErr(
    ggufBytes([{ key: "general.alignment", type: T.UINT32, value: 24 }], []),
    /general\.alignment is 24, expected a power of two/,
  );
  expectErr(
    ggufBytes([{ key: "a", type: T.UINT8, value: 1 }, { key: "a", type: T.UINT8, value: 2 }], []),
    /metadata key "a" appears twice/,
  );
});

Deno.test("ggufLlamaConfig() refuses a tensor the forward pass would not read: RoPE factors, biases, experts, strays", () => {
  const w = randomWeights(tinyConfig({ nLayers: 2 }), 3);
  const config = (extra: { name: string; ne: number[] }[]) => {
    const { kvs, tensors } = ggufModelParts(w);
    for (const t of extra) {
      const n = t.ne.reduce((a, b) => a * b, 1);
      tensors.push({ ...t, type: 0, data: new Uint8Array(4 * n) });
    }
    using g = new GgufFile(memoryByteSource(ggufBytes(kvs, tensors, 3, 32), "/m/llama.gguf"));
    return ggufLlamaConfig(g);
  };
  assert.deepEqual(config([]), { ...w.config, normEps: Math.fround(w.config.normEps) }); // f32 in GGUF
  const hs = w.config.dim / w.config.nHeads;
  for (
    const [name, ne, re] of [
      ["rope_freqs.weight", [hs / 2], /RoPE frequency factors \(LLaMA 3\.1's rope_scaling/],
      ["blk.0.attn_q.bias", [w.config.dim], /is a bias, and the forward pass has none/],
      ["blk.1.ffn_gate_inp.weight", [w.config.dim, 8], /mixture of experts/],
      ["blk.0.ffn_up_exps.weight", [w.config.dim, 4, 8], /mixture of experts/],
      ["blk.2.attn_norm.weight", [w.config.dim], /belongs to block 2, but llama\.block_count is 2/],
      ["blk.0.attn_rot_embd", [hs / 2], /not one of a LLaMA model's tensors/],
    ] as const
  ) {
    assert.throws(() => config([{ name, ne: [...ne] }]), (e: Error) => {
      assert.ok(e instanceof ModelFormatError, String(e));
      assert.match(e.message, /^Cannot use GGUF file \/m\/llama\.gguf: tensor "/);
      assert.ok(e.message.includes(`"${name}"`), e.message);
      assert.match(e.message, re);
      return true;
    });
  }
});
