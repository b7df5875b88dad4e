import assert from "node:assert/strict";
import { encodeFloats, safetensorsBytes, writeHfCheckpoint } from "./_convert_testing.ts";
import {
  MAX_SAFETENSORS_HEADER,
  parseSafetensorsHeader,
  parseSafetensorsIndex,
  SafetensorsFile,
  ShardedSafetensors,
} from "./safetensors.ts";
import {
  bf16ToF32,
  type ByteSource,
  f16ToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  memoryByteSource,
  ModelFormatError,
} from "./tensor_file.ts";
import { loadCheckpoint } from "./checkpoint.ts";
import { loadHfModel } from "./hf.ts";
import { loadTokenizer } from "./tokenizer.ts";
import { perplexity } from "../eval/perplexity.ts";
import { sharedData } from "../datasets/testing.ts";
import { tempDir } from "../datasets/_testing.ts";

const A = Float32Array.of(1, -2.5, 3e-3, 65504);
const B = Float32Array.of(0.1, 0.2);

function sample(): Uint8Array {
  return safetensorsBytes([
    { name: "a", dtype: "F32", shape: [2, 2], data: encodeFloats(A, "F32") },
    { name: "b", dtype: "F16", shape: [2], data: encodeFloats(B, "F16") },
    { name: "c", dtype: "BF16", shape: [1, 2], data: encodeFloats(B, "BF16") },
    { name: "i", dtype: "I32", shape: [1], data: new Uint8Array(4) },
  ]);
}

/** A source that records every read (offset, length). */
function recording(bytes: Uint8Array, reads: [number, number][]): ByteSource {
  const src = memoryByteSource(bytes, "rec.safetensors");
  return {
    ...src,
    path: src.path,
    size: src.size,
    read(o, n) {
      reads.push([o, n]);
      return src.read(o, n);
    },
  };
}

Deno.test("SafetensorsFile reads F32, F16 and BF16 tensors, and only the bytes of the tensor asked for", () => {
  const bytes = sample();
  const reads: [number, number][] = [];
  using f = new SafetensorsFile(recording(bytes, reads));
  const hlen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.deepEqual(reads, [[0, 8], [8, hlen]], "opening reads the header only");
  assert.deepEqual(f.read("a"), A);
  assert.deepEqual(reads.at(-1), [8 + hlen, 16]);
  assert.deepEqual(f.read("b"), f16ToF32(Uint16Array.from(B, f32ToF16Bits)));
  assert.deepEqual(reads.at(-1), [8 + hlen + 16, 4]);
  assert.deepEqual(f.read("c"), bf16ToF32(Uint16Array.from(B, f32ToBf16Bits)));
  assert.equal(reads.length, 5);
  const raw = f.readRaw("b");
  assert.deepEqual([raw.dtype, raw.shape], ["F16", [2]]);
  assert.deepEqual(raw.bytes, encodeFloats(B, "F16"));
  assert.deepEqual(f.metadata, { format: "pt" });
  assert.deepEqual(f.tensors.get("a")!.shape, [2, 2]);
  assert.throws(() => f.read("i"), /Unsupported dtype I32 for tensor "i" in rec\.safetensors/);
  assert.throws(() => f.read("zz"), /No tensor "zz" in rec\.safetensors/);
});

Deno.test("f16/bf16 conversions are exact on representable values and round to nearest even", () => {
  for (const v of [0, -0, 1, -1, 0.5, 65504, 2 ** -24, 2 ** -14, 1 / 3, 1e-8, 7e4]) {
    const h = f32ToF16Bits(v);
    const back = f16ToF32(Uint16Array.of(h))[0];
    const want = Math.abs(v) >= 65520 ? Math.sign(v) * Infinity : v;
    if (Number.isFinite(want)) {
      assert.ok(Math.abs(back - want) <= Math.abs(want) * 2 ** -11 + 2 ** -25, `${v} → ${back}`);
    } else assert.equal(back, want);
  }
  assert.equal(f32ToF16Bits(1 + 2 ** -11), 0x3c00, "tie → even (1.0)");
  assert.equal(f32ToF16Bits(1 + 3 * 2 ** -11), 0x3c02, "tie → even (1 + 2^-9)");
  assert.equal(f32ToBf16Bits(1 + 2 ** -8), 0x3f80, "tie → even");
  assert.equal(bf16ToF32(Uint16Array.of(f32ToBf16Bits(-3.5)))[0], -3.5);
});

Deno.test("parseSafetensorsHeader() rejects malformed headers with messages that name the file and the fault", () => {
  const ok = sample();
  const hlen = Number(new DataView(ok.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(ok.subarray(8, 8 + hlen)));
  const data = ok.subarray(8 + hlen);
  const build = (h: unknown, d = data, len?: bigint) => {
    const j = new TextEncoder().encode(JSON.stringify(h));
    const out = new Uint8Array(8 + j.length + d.length);
    new DataView(out.buffer).setBigUint64(0, len ?? BigInt(j.length), true);
    out.set(j, 8);
    out.set(d, 8 + j.length);
    return out;
  };
  const expectErr = (b: Uint8Array, re: RegExp) =>
    assert.throws(
      () => parseSafetensorsHeader(memoryByteSource(b, "/m/x.safetensors")),
      (e: Error) => {
        assert.ok(e instanceof ModelFormatError, String(e));
        assert.match(e.message, /^Cannot parse safetensors file \/m\/x\.safetensors: /);
        assert.match(e.message, re);
        return true;
      },
    );
  const big = BigInt(MAX_SAFETENSORS_HEADER + 1);
  expectErr(
    build(header, data, big),
    /header claims 100000001 bytes, more than the 100000000-byte limit/,
  );
  expectErr(build(header, data, 5000n), /header claims 5000 bytes, file has \d+ after the length/);
  expectErr(ok.subarray(0, 5), /too short for the 8-byte header length/);
  expectErr(build([1, 2]), /header is not a JSON object/);
  expectErr(
    build({ ...header, a: { ...header.a, dtype: "F128" } }),
    /tensor "a" has unknown dtype "F128"/,
  );
  expectErr(
    build({ ...header, a: { ...header.a, shape: [2, 3] } }),
    /tensor "a" of shape \[2,3\] F32 needs 24 bytes, data_offsets span 16/,
  );
  expectErr(
    build({ ...header, a: { ...header.a, shape: [-1] } }),
    /has shape \[-1\], expected non-negative integers/,
  );
  expectErr(
    build({ ...header, i: { ...header.i, data_offsets: [24, 4000] } }),
    /tensor "i" spans data bytes 24\.\.4000, the data section has 28 bytes/,
  );
  expectErr(
    build({ ...header, b: { ...header.b, data_offsets: [12, 16] } }),
    /tensor "b" \(data bytes 12\.\.16\) overlaps tensor "a" \(data bytes 0\.\.16\)/,
  );
  expectErr(
    build(header, data.subarray(0, 26)),
    /spans data bytes 24\.\.28, the data section has 26 bytes/,
  );
  const trailing = new Uint8Array(data.length + 4);
  trailing.set(data);
  expectErr(build(header, trailing), /data bytes 28\.\.32 belong to no tensor/);
  expectErr(build({ ...header, __metadata__: { n: 5 } }), /__metadata__\.n is not a string/);
  const bad = ok.slice();
  bad[9] = 0xff;
  expectErr(bad, /header is not valid UTF-8 JSON/);
});

Deno.test("parseSafetensorsIndex() and ShardedSafetensors check the weight map against the shards", async () => {
  assert.deepEqual(
    parseSafetensorsIndex('{"weight_map": {"a": "m-1.safetensors"}}', "i.json"),
    new Map([["a", "m-1.safetensors"]]),
  );
  assert.throws(
    () => parseSafetensorsIndex('{"weight_map": {"a": "../m.safetensors"}}', "i.json"),
    /tensor "a" maps to "\.\.\/m\.safetensors", expected a \*\.safetensors file name/,
  );
  assert.throws(() => parseSafetensorsIndex("{}", "i.json"), /no "weight_map" object/);
  const ref = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));
  await using tmp = await tempDir("sqb-st-test-");
  await writeHfCheckpoint(tmp.path, ref, { shards: 2 });
  const indexPath = `${tmp.path}/model.safetensors.index.json`;
  const index = JSON.parse(await Deno.readTextFile(indexPath));
  {
    using st = ShardedSafetensors.open(tmp.path);
    assert.equal(st.names().length, Object.keys(index.weight_map).length);
  }
  index.weight_map["model.norm.weight"] = "model-00001-of-00002.safetensors";
  await Deno.writeTextFile(indexPath, JSON.stringify(index));
  assert.throws(
    () => ShardedSafetensors.open(tmp.path),
    /Tensor "model\.norm\.weight" is in .*model-00002-of-00002\.safetensors, but .* puts it in model-00001-of-00002\.safetensors/,
  );
  index.weight_map["model.norm.weight"] = "model-00003-of-00002.safetensors";
  await Deno.writeTextFile(indexPath, JSON.stringify(index));
  assert.throws(
    () => ShardedSafetensors.open(tmp.path),
    /Cannot open .*model-00003-of-00002\.safetensors: file not found/,
  );
});

Deno.test("perplexity of the HF safetensors copy of stories260K equals the llama2.c file's", async () => {
  const ref = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));
  await using tmp = await tempDir("sqb-st-test-");
  await writeHfCheckpoint(tmp.path, ref, { shards: 2 });
  const hf = await loadHfModel(tmp.path);
  const tok = await loadTokenizer(sharedData("stories260K/tok512.model"));
  const text = await Deno.readTextFile(sharedData("tinystories/tinystories-valid-head.txt"));
  const tokens = tok.encodeWithBos(text.slice(0, 20_000));
  const a = await perplexity(ref, tokens, { seqlen: 256 });
  const b = await perplexity(hf.weights, tokens, { seqlen: 256 });
  assert.ok(a.windows >= 4);
  assert.equal(b.ppl, a.ppl);
  assert.ok(a.ppl > 1 && a.ppl < 100, `ppl ${a.ppl}`);
});
