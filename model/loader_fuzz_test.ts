/**
 * Seeded fuzzers of the model-file parsers: safetensors headers and index
 * files, GGUF files, tokenizer.json. Each starts from a valid file written by
 * the test converters and applies 1–3 random mutations, structural (claims
 * of a header over 100 MB, offsets outside the file, overlapping tensors,
 * unknown dtypes and types, shape/size mismatches, counts that would allocate
 * absurd memory, wrong metadata types) or raw (bit flips, 64-bit "interesting"
 * values written over the header, truncation, trailing bytes).
 *
 * Every file must either load (every tensor read, the tokenizer run) or be
 * rejected with the loader's own error class; any other exception is a
 * failure. Every read the parser makes is checked to stay inside the file
 * (so no allocation is sized by an unchecked claim), and an accepted tensor
 * never holds more values than its bytes in the file.
 */
import assert from "node:assert/strict";
import { mulberry32, randomWeights, tinyConfig } from "./random.ts";
import {
  ggufBytes,
  type GgufKv,
  ggufModelParts,
  type GgufRawTensor,
  hfTensors,
  type RawTensor,
  safetensorsBytes,
  tokenizerJsonFromSentencePiece,
} from "./_convert_testing.ts";
import { parseSafetensorsIndex, SafetensorsFile } from "./safetensors.ts";
import { GgufFile, ggufLlamaConfig, ggufLlamaWeights, ggufTokenizer, GgufType } from "./gguf.ts";
import { parseTokenizerJson } from "./tokenizer_json.ts";
import { type ByteSource, ModelFormatError } from "./tensor_file.ts";
import { parseModelProto, TokenizerError } from "./sentencepiece.ts";
import { sharedData } from "../datasets/testing.ts";

const FILES = 1000;
const rand = (seed: number) => {
  const u = mulberry32(seed);
  const int = (n: number) => Math.floor(u() * n);
  return { u, int, pick: <T>(xs: readonly T[]): T => xs[int(xs.length)] };
};

/** A source over `bytes` that records reads outside the file instead of allowing them. */
function checkedSource(bytes: Uint8Array, path: string, violations: string[]): ByteSource {
  return {
    path,
    size: bytes.length,
    read(offset, length) {
      if (
        !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 ||
        length < 0 || offset + length > bytes.length
      ) {
        violations.push(`${path}: read(${offset}, ${length}) outside ${bytes.length} bytes`);
        throw new ModelFormatError("read outside the file (recorded as a violation)");
      }
      return bytes.slice(offset, offset + length);
    },
    [Symbol.dispose]() {},
  };
}

/** 64-bit values that break length and count fields. */
const INTERESTING = [
  0n,
  1n,
  7n,
  255n,
  2n ** 31n - 1n,
  2n ** 32n - 1n,
  2n ** 32n,
  2n ** 53n,
  2n ** 63n,
  2n ** 64n - 1n,
  100_000_001n,
];

/** Raw mutations: flips, interesting u64s, truncation, trailing bytes. */
function rawMutation(b: Uint8Array, r: ReturnType<typeof rand>, headerEnd: number): Uint8Array {
  const op = r.int(4);
  const end = Math.max(1, Math.min(headerEnd, b.length));
  if (op === 0) {
    const out = b.slice();
    for (let k = 1 + r.int(4); k > 0; k--) out[r.int(end)] ^= 1 << r.int(8);
    return out;
  }
  if (op === 1 && b.length >= 8) {
    const out = b.slice();
    const at = r.int(Math.max(1, Math.min(end, b.length - 8)));
    new DataView(out.buffer).setBigUint64(at, r.pick(INTERESTING), true);
    return out;
  }
  if (op === 2) return b.slice(0, r.int(b.length));
  const out = new Uint8Array(b.length + 1 + r.int(64));
  out.set(b);
  out.fill(r.int(256), b.length);
  return out;
}

/** Runs `f`; returns "accepted", "rejected" (expected error class) or records a failure. */
function attempt(
  f: () => void,
  ok: (e: unknown) => boolean,
  failures: string[],
  what: string,
): "accepted" | "rejected" | "failed" {
  try {
    f();
    return "accepted";
  } catch (e) {
    if (ok(e)) return "rejected";
    failures.push(`${what}: ${(e as Error)?.stack ?? String(e)}`);
    return "failed";
  }
}

Deno.test("fuzz safetensors: 1000 mutated headers and 1000 mutated index files, only ModelFormatError", () => {
  const r = rand(20240611);
  const w = randomWeights(tinyConfig({ sharedClassifier: false }), 5);
  const bases: RawTensor[][] = ["F32", "F16", "BF16"].map((d) => hfTensors(w, d));
  bases[0].push({ name: "extra.int", dtype: "I64", shape: [2], data: new Uint8Array(16) });
  const failures: string[] = [], violations: string[] = [];
  const counts = { accepted: 0, rejected: 0, failed: 0 };
  for (let i = 0; i < FILES; i++) {
    const tensors = r.pick(bases);
    const bytes0 = safetensorsBytes(tensors);
    const hlen = Number(new DataView(bytes0.buffer).getBigUint64(0, true));
    let header = JSON.parse(new TextDecoder().decode(bytes0.subarray(8, 8 + hlen)));
    let data = bytes0.subarray(8 + hlen);
    let lenField: bigint | undefined;
    let raw = false;
    for (let k = 1 + r.int(3); k > 0; k--) {
      if (typeof header !== "object" || header === null || Array.isArray(header)) break;
      const names = Object.keys(header).filter((n) => n !== "__metadata__");
      const name = names.length ? r.pick(names) : "x";
      const t = typeof header[name] === "object" && header[name] !== null ? header[name] : {};
      switch (r.int(13)) {
        case 0:
          t.dtype = r.pick(["F32", "F16", "BF16", "I8", "F64", "Q4_K", "f32", "", 7, null]);
          break;
        case 10: // valid: tensors listed in another order
          header = Object.fromEntries(Object.entries(header).reverse());
          break;
        case 11: // valid: F16 ↔ BF16 (same size)
          if (t.dtype === "F16" || t.dtype === "BF16") t.dtype = t.dtype === "F16" ? "BF16" : "F16";
          break;
        case 12: // valid: metadata strings
          header.__metadata__ = { format: "pt", note: "x".repeat(r.int(100)) };
          break;
        case 1:
          t.shape = r.pick([[], [0], [1e9, 1e9], [-1, 4], [2.5], ["4"], [2 ** 53], null, [
            ...(t.shape ?? []),
            2,
          ]]);
          break;
        case 2: {
          const [b, e] = t.data_offsets ?? [0, 0];
          t.data_offsets = r.pick([
            [0, data.length + 8],
            [b, e + 1],
            [Math.max(0, b - 4), e - 4],
            [e, b],
            [2 ** 60, 2 ** 60 + 4],
            [b],
            "x",
            [-4, 0],
          ]);
          break;
        }
        case 3:
          if (header && typeof header === "object") delete header[name];
          break;
        case 4:
          if (header && typeof header === "object") {
            header[`${name}.alias`] = { ...t }; // same span: overlaps
          }
          break;
        case 5:
          if (header && typeof header === "object") {
            header.__metadata__ = r.pick([5, { a: 1 }, [], "s", { ok: "yes" }]);
          }
          break;
        case 6:
          header = r.pick([[], 5, "x", null, {}]);
          break;
        case 7:
          lenField = r.pick([100_000_001n, 2n ** 40n, 2n ** 64n - 1n, BigInt(hlen + 1), 0n]);
          break;
        case 8:
          data = data.subarray(0, r.int(data.length + 1));
          break;
        default:
          raw = true;
      }
    }
    const json = new TextEncoder().encode(JSON.stringify(header));
    let bytes: Uint8Array = new Uint8Array(8 + json.length + data.length);
    new DataView(bytes.buffer).setBigUint64(0, lenField ?? BigInt(json.length), true);
    bytes.set(json, 8);
    bytes.set(data, 8 + json.length);
    if (raw) bytes = rawMutation(bytes, r, 8 + json.length);
    const path = `fuzz-${i}.safetensors`;
    const res = attempt(
      () => {
        using f = new SafetensorsFile(checkedSource(bytes, path, violations));
        for (const [name, t] of f.tensors) {
          if (!["F32", "F16", "BF16"].includes(t.dtype)) {
            assert.throws(() => f.read(name), /Unsupported dtype/);
            continue;
          }
          const x = f.read(name);
          assert.equal(x.length, t.shape.reduce((a, b) => a * b, 1), `${name}: shape [${t.shape}]`);
          assert.equal(x.length * (t.dtype === "F32" ? 4 : 2), t.end - t.begin);
          assert.ok(t.end <= bytes.length);
        }
      },
      (e) => e instanceof ModelFormatError,
      failures,
      path,
    );
    counts[res]++;
  }
  // index files
  const index = { accepted: 0, rejected: 0, failed: 0 };
  const baseIndex = {
    metadata: { total_size: 1234 },
    weight_map: Object.fromEntries(
      bases[0].map((t, i) => [t.name, `model-0000${1 + (i % 3)}-of-00003.safetensors`]),
    ),
  };
  for (let i = 0; i < FILES; i++) {
    const j = structuredClone(baseIndex) as Record<string, unknown>;
    const wm = j.weight_map as Record<string, unknown>;
    let text: string | undefined;
    const names = Object.keys(wm);
    switch (r.int(6)) {
      case 0:
        wm[r.pick(names)] = r.pick([
          5,
          "../a.safetensors",
          "a/b.safetensors",
          ".h.safetensors",
          "x.bin",
          "",
          null,
        ]);
        break;
      case 1:
        j.weight_map = r.pick([[], null, "x", {}, 7]);
        break;
      case 2:
        delete j.weight_map;
        break;
      default: {
        const t = new TextEncoder().encode(JSON.stringify(j));
        text = new TextDecoder().decode(rawMutation(t, r, t.length));
      }
    }
    const res = attempt(
      () => parseSafetensorsIndex(text ?? JSON.stringify(j), `fuzz-${i}.index.json`),
      (e) => e instanceof ModelFormatError,
      failures,
      `index ${i}`,
    );
    index[res]++;
  }
  console.log(
    `fuzz safetensors: ${FILES} files, ${counts.rejected} rejected, ${counts.accepted} accepted`,
  );
  console.log(
    `fuzz safetensors index: ${FILES} files, ${index.rejected} rejected, ${index.accepted} accepted`,
  );
  assert.deepEqual(failures.slice(0, 3), []);
  assert.deepEqual(violations.slice(0, 3), []);
  assert.ok(counts.accepted > 20 && counts.rejected > 500, JSON.stringify(counts));
  assert.ok(index.accepted > 20 && index.rejected > 300, JSON.stringify(index));
});

Deno.test("fuzz GGUF: 1000 mutated files (header, metadata, tensor infos, tokenizer), only ModelFormatError", async () => {
  const r = rand(777);
  const proto = parseModelProto(await Deno.readFile(sharedData("stories260K/tok512.model")));
  const w = randomWeights(
    tinyConfig({ dim: 32, hiddenDim: 64, nHeads: 4, vocabSize: 512, sharedClassifier: false }),
    9,
  );
  const T = GgufType;
  const failures: string[] = [], violations: string[] = [];
  const counts = { accepted: 0, rejected: 0, failed: 0 };
  const types = ["F32", "F16", "BF16", "Q8_0"] as const;
  const baseParts = types.map((type) => ggufModelParts(w, { type, tokenizer: proto }));
  for (let i = 0; i < FILES; i++) {
    const parts = structuredClone(r.pick(baseParts));
    const kvs: GgufKv[] = parts.kvs;
    const tensors: GgufRawTensor[] = parts.tensors;
    let version = 3, alignment = 32, raw = false;
    for (let k = 1 + r.int(3); k > 0; k--) {
      const kv = r.pick(kvs);
      const t = r.pick(tensors);
      switch (r.int(12)) {
        case 0: // a value of another type than declared (the writer converts)
          if (kv.type !== T.ARRAY) {
            kv.type = r.pick([T.UINT8, T.INT64, T.FLOAT64, T.STRING, T.BOOL]);
          }
          break;
        case 1:
          if (kv.type !== T.ARRAY && kv.type !== T.STRING) {
            kv.value = r.pick([0, -1, 2 ** 31, 3.5, 1e30]);
          }
          break;
        case 2:
          kvs.splice(kvs.indexOf(kv), 1);
          break;
        case 3:
          alignment = r.pick([1, 8, 64, 4096]);
          kvs.push({
            key: "general.alignment",
            type: T.UINT32,
            value: r.pick([0, 3, 24, alignment]),
          });
          break;
        case 4:
          kvs.push({ ...kv });
          break;
        case 5: {
          const arr = kvs.find((x) =>
            x.key ===
              r.pick([
                "tokenizer.ggml.scores",
                "tokenizer.ggml.token_type",
                "tokenizer.ggml.tokens",
              ])
          );
          if (arr) {
            const v = Array.from(arr.value as ArrayLike<unknown>);
            arr.value = r.pick([v.slice(1), v.map((x, j) => (j === 7 ? 99 : x)), []]) as number[];
            if (r.int(3) === 0) arr.elemType = r.pick([T.INT32, T.FLOAT32, T.STRING, T.UINT8]);
          }
          break;
        }
        case 6:
          t.ne = r.pick([[2 ** 40, 2 ** 40], [0], [33, 5], [1, 2, 3, 4, 5], [...t.ne, 2], [
            t.ne[0] + 32,
          ]]);
          break;
        case 7:
          t.type = r.int(45);
          break;
        case 8:
          t.offset = r.pick([0, 1, 2 ** 50, 32, 64 * 1024 * 1024]);
          break;
        case 9:
          t.name = r.pick(tensors).name;
          break;
        case 10:
          version = r.pick([1, 2, 4, 0xffffffff]);
          break;
        default:
          raw = true;
      }
    }
    let bytes: Uint8Array;
    try {
      bytes = ggufBytes(kvs, tensors, version, alignment);
    } catch (e) {
      // a mutation the writer cannot express (e.g. a string where a number goes): skip it
      if (e instanceof RangeError || e instanceof TypeError || e instanceof SyntaxError) {
        i--;
        continue;
      }
      throw e;
    }
    const headerEnd = bytes.length - tensors.reduce((s, t) => s + t.data.length, 0);
    if (raw) bytes = rawMutation(bytes, r, headerEnd);
    const path = `fuzz-${i}.gguf`;
    const res = attempt(
      () => {
        using g = new GgufFile(checkedSource(bytes, path, violations));
        for (const [name, t] of g.header.tensors) {
          assert.ok(t.begin + t.bytes <= bytes.length);
          const x = attemptRead(() => g.read(name));
          if (x) {
            assert.equal(x.length, t.ne.reduce((a, b) => a * b, 1), `${name}: ne [${t.ne}]`);
            assert.ok(x.length <= 2 * t.bytes, `${name}: ${x.length} values from ${t.bytes} bytes`);
          }
        }
        const c = ggufLlamaConfig(g);
        ggufTokenizer(g)?.encode("Once upon a time, 🙂");
        ggufLlamaWeights(g, c);
      },
      (e) => e instanceof ModelFormatError,
      failures,
      path,
    );
    counts[res]++;
  }
  console.log(
    `fuzz gguf: ${FILES} files, ${counts.rejected} rejected, ${counts.accepted} accepted`,
  );
  assert.deepEqual(failures.slice(0, 3), []);
  assert.deepEqual(violations.slice(0, 3), []);
  assert.ok(counts.accepted > 20 && counts.rejected > 500, JSON.stringify(counts));
});

/** A tensor read that may be refused for its type (counted by the caller's outcome). */
function attemptRead(f: () => Float32Array): Float32Array | undefined {
  try {
    return f();
  } catch (e) {
    if (e instanceof ModelFormatError && /^Unsupported tensor type/.test(e.message)) {
      return undefined;
    }
    throw e;
  }
}

Deno.test("fuzz tokenizer.json: 1000 mutated files, only TokenizerError", async () => {
  const r = rand(4242);
  const proto = parseModelProto(await Deno.readFile(sharedData("stories260K/tok512.model")));
  const base = JSON.parse(tokenizerJsonFromSentencePiece(proto));
  const sample = "Once upon a time,  there was a 🙂 café.\n";
  const failures: string[] = [];
  const counts = { accepted: 0, rejected: 0, failed: 0 };
  const pieces = Object.keys(base.model.vocab);
  for (let i = 0; i < FILES; i++) {
    const j = structuredClone(base);
    let text: string | undefined;
    for (let k = 1 + r.int(3); k > 0; k--) {
      if (typeof j.model !== "object" || j.model === null || Array.isArray(j.model)) break;
      if (typeof j.model.vocab !== "object" || !Array.isArray(j.model.merges)) break;
      switch (r.int(10)) {
        case 0:
          j.model.vocab[r.pick(pieces)] = r.pick([2 ** 40, -1, 1.5, "3", 0, 511, 512, null]);
          break;
        case 1:
          j.model.merges[r.int(j.model.merges.length)] = r.pick([
            ["▁", "nope"],
            "a b c",
            "ab",
            ["a"],
            5,
            null,
            "▁ t",
          ]);
          break;
        case 2:
          j.added_tokens.push({
            id: r.pick([2 ** 50, 512, 0, -3]),
            content: r.pick(["<x>", "", 4]),
          });
          break;
        case 3:
          j.normalizer = r.pick([
            null,
            { type: "Lowercase" },
            { type: "Replace", pattern: { Regex: "(" }, content: "" },
            { type: "Replace", pattern: { String: "" }, content: "x" },
            { type: "Replace", pattern: { Regex: "a*" }, content: "" },
            { type: "Sequence", normalizers: 5 },
            { type: "NFKC" },
            { type: "Strip", left: true, right: true },
            { type: "Prepend", prepend: 7 },
          ]);
          break;
        case 4:
          j.pre_tokenizer = r.pick([
            { type: "ByteLevel" },
            { type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: true },
            { type: "Metaspace", replacement: "ab" },
            { type: "Metaspace", prepend_scheme: "sometimes" },
            { type: "Sequence", pretokenizers: [{ type: "Metaspace" }] },
            7,
          ]);
          break;
        case 5:
          j.model.type = r.pick(["Unigram", "WordPiece", 3, undefined]);
          break;
        case 6:
          j.model.unk_token = r.pick([null, "<nope>", 5, "<s>"]);
          j.model.byte_fallback = r.pick([false, true]);
          break;
        case 7:
          delete j.model.vocab[r.pick(pieces)];
          break;
        case 8:
          j.model = r.pick([null, [], "x", { type: "BPE" }]);
          break;
        default: {
          const t = new TextEncoder().encode(JSON.stringify(j));
          text = new TextDecoder().decode(rawMutation(t, r, t.length));
        }
      }
      if (text !== undefined) break;
    }
    const path = `fuzz-${i}/tokenizer.json`;
    const res = attempt(
      () => {
        const tok = parseTokenizerJson(text ?? JSON.stringify(j), path);
        const ids = tok.encode(sample);
        tok.decode(ids);
        for (let k = 1; k < ids.length; k++) tok.decodeToken(ids[k - 1], ids[k]);
      },
      (e) => e instanceof TokenizerError,
      failures,
      path,
    );
    counts[res]++;
  }
  console.log(
    `fuzz tokenizer.json: ${FILES} files, ${counts.rejected} rejected, ${counts.accepted} accepted`,
  );
  assert.deepEqual(failures.slice(0, 3), []);
  assert.ok(counts.accepted > 20 && counts.rejected > 300, JSON.stringify(counts));
});
