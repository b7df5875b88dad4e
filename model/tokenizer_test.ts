/**
 * Tokenizer tests against the real stories260K tokenizer (tok512.model and
 * tok512.bin). Expected ids come from Google's sentencepiece 0.1.97 (Debian's
 * python3-sentencepiece), produced once with e.g.
 *
 *   /usr/bin/python3 -c "import sentencepiece as s; \
 *     sp = s.SentencePieceProcessor(model_file='tok512.model'); print(sp.encode('...'))"
 *
 * and pasted here as literals; long outputs are stored as a count and a
 * SHA-256 of the id lists (see `idsDigest`).
 */
import assert from "node:assert/strict";
import { sharedData } from "../datasets/testing.ts";
import {
  Llama2cTokenizer,
  loadTokenizer,
  parseLlama2cTokenizer,
  SentencePieceTokenizer,
  type Tokenizer,
  TokenizerError,
} from "./tokenizer.ts";
import {
  bpeMerge,
  decodeUtf8Lenient,
  type ModelProto,
  ModelType,
  parseModelProto,
} from "./sentencepiece.ts";

const MODEL = sharedData("stories260K/tok512.model");
const BIN = sharedData("stories260K/tok512.bin");
const WIKI = sharedData("wikitext-2-raw-v1/wiki.test.raw");
const STORIES = sharedData("tinystories/tinystories-valid-head.txt");

async function sha256(text: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** SHA-256 of `"\n".join(",".join(ids) for ids in lists)`, as the Python side computed it. */
function idsDigest(lists: ArrayLike<number>[]): Promise<string> {
  return sha256(lists.map((ids) => Array.from(ids).join(",")).join("\n"));
}

async function spModel(options: { chunkCache?: boolean } = {}): Promise<SentencePieceTokenizer> {
  const proto = parseModelProto(await Deno.readFile(MODEL), MODEL);
  return new SentencePieceTokenizer(proto, { source: MODEL, ...options });
}

async function binModel(): Promise<Llama2cTokenizer> {
  return parseLlama2cTokenizer(await Deno.readFile(BIN), BIN);
}

/**
 * Checks every [text, ids, decoded] case on `proto`, with and without the
 * chunk cache: encode(text) is an Int32Array equal to ids, and decoding it
 * gives `decoded`.
 */
function assertCases(proto: ModelProto, cases: [text: string, ids: number[], decoded: string][]) {
  for (const chunkCache of [true, false]) {
    const tok = new SentencePieceTokenizer(proto, { source: MODEL, chunkCache });
    for (const [text, ids, decoded] of cases) {
      const got = tok.encode(text);
      assert.ok(got instanceof Int32Array);
      assert.deepEqual(Array.from(got), ids, `encode(${JSON.stringify(text)})`);
      assert.equal(tok.decode(got), decoded, `decode(encode(${JSON.stringify(text)}))`);
    }
  }
}

Deno.test("loadTokenizer() reads tok512.model: BPE, byte fallback, identity normalizer", async () => {
  const tok = await loadTokenizer(MODEL);
  assert.ok(tok instanceof SentencePieceTokenizer);
  assert.equal(tok.source, MODEL);
  assert.deepEqual([tok.vocabSize, tok.bosId, tok.eosId, tok.unkId], [512, 1, 2, 0]);
  const { trainerSpec, normalizerSpec } = tok.proto;
  assert.equal(trainerSpec.modelType, ModelType.BPE);
  assert.equal(trainerSpec.byteFallback, true);
  assert.equal(trainerSpec.padId, -1); // a 10-byte negative varint
  assert.equal(normalizerSpec.name, "identity");
  assert.equal(normalizerSpec.precompiledCharsmap.length, 0);
  assert.deepEqual(
    [normalizerSpec.addDummyPrefix, normalizerSpec.removeExtraWhitespaces],
    [true, true],
  );
  assert.equal(tok.idToPiece(3), "<0x00>");
  assert.equal(tok.idToPiece(265), "\u2581the");
  assert.equal(tok.idToPiece(511), "\u200a");
});

// sentencepiece 0.1.97: sp.encode(text) and sp.decode(sp.encode(text)).
const KNOWN: [text: string, ids: number[], decoded: string][] = [
  [
    "Once upon a time, there was a little girl named Lily.",
    [403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426],
    "Once upon a time, there was a little girl named Lily.",
  ],
  ["Hello world", [346, 306, 414, 263, 304, 341], "Hello world"],
  ["   leading spaces", [278, 411, 380, 299, 262, 427, 412, 331, 419], "leading spaces"],
  [
    "multiple   spaces   and trailing  ",
    [284, 425, 421, 413, 417, 427, 305, 262, 427, 412, 331, 419, 269, 259, 420, 412, 290, 299],
    "multiple spaces and trailing",
  ],
  [
    "para one\n\npara two\n",
    [282, 295, 412, 353, 411, 13, 13, 427, 295, 412, 259, 424, 414, 13],
    "para one\n\npara two\n",
  ],
  [
    "tab\tseparated\tvalues",
    [259, 412, 430, 12, 372, 427, 295, 294, 266, 12, 435, 412, 421, 425, 406],
    "tab\tseparated\tvalues",
  ],
  [
    "café naïve résumé",
    [280, 412, 431, 485, 297, 412, 198, 178, 360, 352, 485, 419, 425, 423, 485],
    "café naïve résumé",
  ],
  ["中文", [410, 231, 187, 176, 233, 153, 138], "中文"],
  ["emoji 😀!", [344, 423, 414, 449, 417, 410, 243, 162, 155, 131, 443], "emoji 😀!"],
  ["", [], ""],
  ["   ", [], ""],
  [
    " = Robert Boulter = \n",
    [410, 64, 410, 461, 414, 430, 285, 413, 368, 277, 421, 413, 285, 410, 64, 410, 13],
    "= Robert Boulter = \n",
  ],
  ["\n\nx\ty", [410, 13, 13, 444, 12, 422], "\n\nx\ty"],
  ["a \u2581 b", [261, 410, 410, 268], "a   b"], // a literal "▁" is not a space to collapse
  ["\u2581", [], ""], // ... but trailing "▁" is trimmed
  ["x\u00a0y", [410, 444, 498, 422], "x\u00a0y"],
  ["a\u3000b", [261, 230, 131, 131, 430], "a\u3000b"],
  ["\x00a", [410, 3, 412], "\x00a"],
];

Deno.test("SentencePieceTokenizer.encode() matches sentencepiece on spaces, newlines, tabs, non-ASCII, empty", async () => {
  assertCases(parseModelProto(await Deno.readFile(MODEL), MODEL), KNOWN);
});

Deno.test("SentencePieceTokenizer.encode() matches sentencepiece on 396 WikiText-2 lines", async () => {
  // Python: lines = open(wiki.test.raw, newline='').read().split('\n');
  // sel = [lines[i] + '\n' for i in range(len(lines)) if i % 11 == 5]
  const lines = (await Deno.readTextFile(WIKI)).split("\n");
  const sel = lines.map((l) => l + "\n").filter((_, i) => i % 11 === 5);
  assert.equal(lines.length, 4359);
  assert.equal(sel.length, 396);
  const tok = await spModel();
  const enc = sel.map((l) => tok.encode(l));
  assert.equal(enc.reduce((s, e) => s + e.length, 0), 69059);
  assert.equal(
    await idsDigest(enc),
    "2630ab960d211639e4bb5a439316705679e11a192f1f59b865954fce2f965a93",
  );
});

Deno.test("SentencePieceTokenizer.encode() matches sentencepiece on all of wiki.test.raw, with and without the chunk cache", async () => {
  const text = await Deno.readTextFile(WIKI);
  const cached = await spModel();
  const ids = cached.encode(text);
  // Python: len(sp.encode(text)) and sha256(",".join(map(str, ids)))
  assert.equal(ids.length, 809_284);
  assert.deepEqual([ids[0], ids[1], ids[ids.length - 1]], [410, 13, 13]);
  assert.equal(
    await idsDigest([ids]),
    "f6c6c07a449df5f9c9acc72c0d7b5e24878b1a8b22a44331e6b7f80d9308a78b",
  );
  // The memo is an optimization only: merging the whole text at once gives the same ids.
  const whole = (await spModel({ chunkCache: false })).encode(text);
  assert.deepEqual(whole, ids);
});

Deno.test("SentencePieceTokenizer decode(encode(t)) round-trips WikiText-2 and TinyStories up to whitespace normalization", async () => {
  const tok = await spModel();
  // remove_extra_whitespaces: sentencepiece drops leading/trailing spaces and collapses runs.
  const collapse = (t: string) => t.replace(/ {2,}/g, " ").replace(/^ +| +$/g, "");
  // Python: sha256(sp.decode(sp.encode(text)).encode()).hexdigest(), len(...)
  for (
    const [path, digest, len] of [
      [WIKI, "c17557aa2ba21d18e961ed88e307b518f642bb3e032e4c35c5543d94ce0e8f08", 1_288_551],
      [STORIES, "330e57249d76653c8daa9cdfd74d441f183b533b148fedeea51cfe99642296de", 793_445],
    ] as const
  ) {
    const text = await Deno.readTextFile(path);
    const ids = tok.encode(text);
    const back = tok.decode(ids);
    assert.equal(back.length, len, path);
    assert.equal(await sha256(back), digest, path);
    assert.equal(back, collapse(text), path);
    assert.notEqual(back, text, `${path} has extra spaces, so it cannot round-trip exactly`);
    // Text already in normal form round-trips exactly.
    assert.deepEqual(tok.encode(back), ids);
  }
  const stories = await Deno.readTextFile(STORIES);
  assert.equal(tok.encode(stories).length, 393_012); // len(sp.encode(text))
});

Deno.test("SentencePieceTokenizer.decode() matches sentencepiece on byte runs, <unk>, BOS and leading ▁", async () => {
  const tok = await spModel();
  // Python: sp.decode(ids)
  const cases: [number[], string][] = [
    [[410, 261], "a"],
    [[410, 410, 261], "a"], // remove_extra_whitespaces: every leading ▁ is dropped
    [[13, 261], "\n a"],
    [[261, 261], "a a"],
    [[1, 261], "a"],
    [[1, 410, 261, 2], "a"],
    [[0], " \\342\\201\\207 "], // tok512's unk_surface field is this literal text
    [[0, 261], " \\342\\201\\207  a"],
    [[231, 187], "\ufffd\ufffd"], // a truncated 3-byte sequence: one U+FFFD per byte
    [[231, 187, 176], "中"],
    [[231, 261], "\ufffd a"],
    [[264, 410, 261], "nd  a"],
    [[243, 162, 155, 131], "😀"],
  ];
  for (const [ids, text] of cases) assert.equal(tok.decode(ids), text, `decode(${ids})`);
  assert.throws(() => tok.decode([512]), RangeError);
  assert.throws(() => tok.decode([-1]), RangeError);
});

Deno.test("SentencePieceTokenizer handles USER_DEFINED (frozen, matched first) and UNUSED (resegmented) pieces", async () => {
  // Python: tok512.model re-serialized with pieces 265 "▁the" and 266 "ed" as
  // USER_DEFINED (4) and 260 "he" as UNUSED (5), loaded with model_proto=.
  const proto = parseModelProto(await Deno.readFile(MODEL), MODEL);
  proto.pieces[265].type = 4;
  proto.pieces[266].type = 4;
  proto.pieces[260].type = 5;
  const cases: [string, number[], string][] = [
    [
      "the theory needed the red bed",
      [265, 265, 304, 422, 404, 266, 266, 265, 352, 266, 268, 266],
      "the theory needed the red bed",
    ],
    ["she said hello to them", [358, 336, 281, 306, 414, 267, 265, 423], "she said hello to them"],
    ["bathed and shed", [268, 294, 415, 266, 269, 262, 415, 266], "bathed and shed"],
    ["Then the  hen fled.", [291, 416, 265, 281, 416, 272, 421, 266, 426], "Then the hen fled."],
  ];
  assertCases(proto, cases);
});

Deno.test("SentencePieceTokenizer without byte fallback collapses unknown runs into one <unk>; keeps spaces when told", async () => {
  // Python: byte pieces 3..258 turned CONTROL, trainer_spec.byte_fallback = 0,
  // normalizer_spec add_dummy_prefix = 0, remove_extra_whitespaces = 0.
  const proto = parseModelProto(await Deno.readFile(MODEL), MODEL);
  for (let i = 3; i < 259; i++) proto.pieces[i].type = 3;
  proto.trainerSpec.byteFallback = false;
  proto.normalizerSpec.addDummyPrefix = false;
  proto.normalizerSpec.removeExtraWhitespaces = false;
  const cases: [string, number[], string][] = [
    ["中文 and 😀😀!", [0, 269, 410, 0, 443], " \\342\\201\\207  and  \\342\\201\\207 !"],
    ["  a  b  ", [410, 261, 410, 268, 410, 410], "  a  b  "],
    ["x\n\ny", [444, 0, 422], "x \\342\\201\\207 y"],
    ["Hello world", [440, 411, 306, 414, 263, 304, 341], "Hello world"],
  ];
  assertCases(proto, cases);
});

Deno.test("SentencePieceTokenizer encodes a lone surrogate as U+FFFD (its UTF-8 encoding)", async () => {
  const tok = await spModel();
  // Python: sp.encode("a\ufffdb"); <0xEF><0xBF><0xBD> are ids 0xEF+3, 0xBF+3, 0xBD+3.
  assert.deepEqual(Array.from(tok.encode("a\ufffdb")), [261, 242, 194, 192, 430]);
  assert.deepEqual(tok.encode("a\ud800b"), tok.encode("a\ufffdb"));
});

Deno.test("encodeWithBos() prepends BOS exactly once, for both formats", async () => {
  for (const tok of [await spModel(), await binModel()] as Tokenizer[]) {
    assert.deepEqual(Array.from(tok.encodeWithBos("")), [1]);
    const ids = tok.encode("Once upon a time");
    assert.deepEqual(Array.from(tok.encodeWithBos("Once upon a time")), [1, ...ids]);
    assert.ok(!ids.includes(1), "encode() never adds BOS");
  }
});

Deno.test("decodeToken() prints like llama2.c: no space after BOS, bytes only when printable", async () => {
  for (const tok of [await spModel(), await binModel()] as Tokenizer[]) {
    assert.equal(tok.decodeToken(1, 403), "Once"); // "▁Once" after BOS
    assert.equal(tok.decodeToken(403, 407), " upon");
    assert.equal(tok.decodeToken(426, 13), "\n"); // <0x0A>
    assert.equal(tok.decodeToken(13, 231), ""); // <0xE4>: part of a multi-byte character
    assert.equal(tok.decodeToken(13, 3), ""); // <0x00>: not printable
    assert.equal(tok.decodeToken(426, 2), ""); // EOS
    assert.equal(tok.decodeToken(426, 1), ""); // BOS
    const ids = tok.encodeWithBos("Once upon a time, there was a little girl named Lily.");
    let text = "";
    for (let i = 1; i < ids.length; i++) text += tok.decodeToken(ids[i - 1], ids[i]);
    assert.equal(text, "Once upon a time, there was a little girl named Lily.");
    assert.throws(() => tok.decodeToken(1, 512), RangeError);
  }
});

Deno.test('parseLlama2cTokenizer() reads tok512.bin: 512 tokens, " " for ▁, BOS/EOS texts', async () => {
  const tok = await loadTokenizer(BIN, { vocabSize: 512 });
  assert.ok(tok instanceof Llama2cTokenizer);
  assert.deepEqual([tok.vocabSize, tok.bosId, tok.eosId, tok.maxTokenLength], [512, 1, 2, 7]);
  assert.deepEqual(tok.vocab.slice(0, 4), ["<unk>", "\n<s>\n", "\n</s>\n", "<0x00>"]);
  assert.equal(tok.vocab[410], " ");
  assert.equal(tok.vocab[265], " the");
  assert.equal(tok.scores[265], -6);
});

Deno.test("Llama2cTokenizer.encode() and decode() agree with tok512.model on TinyStories lines without extra spaces", async () => {
  const sp = await spModel();
  const bin = await binModel();
  const lines = (await Deno.readTextFile(STORIES)).split("\n");
  const ordinary = lines.filter((l) => !/ {2}|^ | $/.test(l));
  assert.equal(ordinary.length, 7688); // of 8660; 112 lines have non-ASCII text
  let n = 0;
  for (const line of ordinary) {
    const ids = bin.encode(line);
    assert.deepEqual(ids, sp.encode(line), line);
    assert.equal(bin.decode(ids), sp.decode(ids), line);
    n += ids.length;
  }
  assert.equal(n, 299_483); // Python: sum(len(sp.encode(l)) for l in ordinary)
  // llama2.c does not normalize whitespace: its ids differ where sentencepiece trims.
  assert.deepEqual(Array.from(bin.encode("  a  b  ")), [410, 410, 261, 410, 268, 410, 410]);
  assert.deepEqual(Array.from(sp.encode("  a  b  ")), [261, 268]);
});

/** A literal transcription of llama2.c run.c `encode()` (quadratic merge loop), as a reference. */
function runcEncode(tok: Llama2cTokenizer, text: string): number[] {
  const lookup = (s: string) => {
    const id = tok.vocab.indexOf(s);
    return id < 0 ? undefined : id;
  };
  const tokens: number[] = [];
  if (text !== "") tokens.push(lookup(" ")!);
  for (const ch of text) {
    const id = lookup(ch);
    if (id !== undefined) tokens.push(id);
    else for (const b of new TextEncoder().encode(ch)) tokens.push(b + 3);
  }
  for (;;) {
    let bestScore = -1e10, bestId = -1, bestIdx = -1;
    for (let i = 0; i < tokens.length - 1; i++) {
      const id = lookup(tok.vocab[tokens[i]] + tok.vocab[tokens[i + 1]]);
      if (id !== undefined && tok.scores[id] > bestScore) {
        bestScore = tok.scores[id], bestId = id, bestIdx = i;
      }
    }
    if (bestIdx === -1) break;
    tokens[bestIdx] = bestId;
    tokens.splice(bestIdx + 1, 1);
  }
  return tokens;
}

Deno.test("Llama2cTokenizer.encode() equals run.c's quadratic merge loop on spaced and non-ASCII text", async () => {
  const bin = await binModel();
  const lines = (await Deno.readTextFile(STORIES)).split("\n");
  const odd = lines.filter((l) => / {2}|^ | $|[^ -~]/.test(l)).slice(0, 60);
  odd.push("  a  b  ", "中文 😀 café\t\n\n", "<0x41> <s> \n<s>\n", "");
  for (const line of odd) {
    assert.deepEqual(Array.from(bin.encode(line)), runcEncode(bin, line), JSON.stringify(line));
  }
});

Deno.test("bpeMerge() merges the best-scoring pair first, leftmost on ties", () => {
  const run = (text: string, vocab: [string, number][]) => {
    const strs = [...text];
    const ids = new Int32Array(strs.length).fill(-1);
    const map = new Map(vocab.map(([s], i) => [s, i]));
    const k = bpeMerge(strs, ids, map, vocab.map(([, score]) => score));
    assert.equal(k, strs.length);
    return strs;
  };
  assert.deepEqual(run("abc", [["ab", 0], ["bc", 0]]), ["ab", "c"]); // tie → leftmost
  assert.deepEqual(run("abc", [["ab", 0], ["bc", 1]]), ["a", "bc"]); // higher score wins
  assert.deepEqual(run("aaaa", [["aa", 0]]), ["aa", "aa"]);
  assert.deepEqual(run("aaa", [["aa", 0], ["aaa", 5]]), ["aaa"]);
  assert.deepEqual(run("x", [["xx", 0]]), ["x"]);
});

Deno.test("decodeUtf8Lenient() gives one U+FFFD per invalid byte, like sentencepiece", () => {
  assert.equal(decodeUtf8Lenient([0xe4, 0xb8, 0xad]), "中");
  assert.equal(decodeUtf8Lenient([0xe4, 0xb8]), "\ufffd\ufffd");
  assert.equal(decodeUtf8Lenient([0xc0, 0x80]), "\ufffd\ufffd"); // overlong NUL
  assert.equal(decodeUtf8Lenient([0xed, 0xa0, 0x80]), "\ufffd\ufffd\ufffd"); // surrogate
  assert.equal(decodeUtf8Lenient([0xf0, 0x9f, 0x98, 0x80, 0x41]), "😀A");
});

Deno.test("loadTokenizer() sniffs the format of a file with another extension", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.copyFile(MODEL, `${dir}/tok.dat`);
    await Deno.copyFile(BIN, `${dir}/tok2.dat`);
    assert.ok((await loadTokenizer(`${dir}/tok.dat`)) instanceof SentencePieceTokenizer);
    assert.ok((await loadTokenizer(`${dir}/tok2.dat`)) instanceof Llama2cTokenizer);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadTokenizer() rejects a missing, empty, truncated or corrupt file, naming it", async () => {
  const dir = await Deno.makeTempDir();
  const rejects = async (path: string, pattern: RegExp) => {
    await assert.rejects(loadTokenizer(path), (e: Error) => {
      assert.ok(e instanceof TokenizerError, `${e}`);
      assert.ok(e.message.includes(path), e.message);
      assert.match(e.message, pattern);
      return true;
    });
  };
  try {
    const model = await Deno.readFile(MODEL);
    const bin = await Deno.readFile(BIN);
    await rejects(`${dir}/missing.model`, /not found/);
    await Deno.writeFile(`${dir}/empty.model`, new Uint8Array(0));
    await rejects(`${dir}/empty.model`, /empty/);
    await Deno.writeFile(`${dir}/empty.bin`, new Uint8Array(0));
    await rejects(`${dir}/empty.bin`, /empty/);
    await Deno.writeFile(`${dir}/cut.model`, model.subarray(0, 5000));
    await rejects(`${dir}/cut.model`, /truncated/);
    await Deno.writeFile(`${dir}/cut.bin`, bin.subarray(0, 3001));
    await rejects(`${dir}/cut.bin`, /truncated/);
    const badWire = model.slice();
    badWire[0] = 0x0b; // field 1 with wire type 3 (group)
    await Deno.writeFile(`${dir}/wire.model`, badWire);
    await rejects(`${dir}/wire.model`, /wire type 3/);
    const badLen = bin.slice();
    new DataView(badLen.buffer).setInt32(8, 1000, true); // token 0 claims 1000 bytes
    await Deno.writeFile(`${dir}/len.bin`, badLen);
    await rejects(`${dir}/len.bin`, /token 0 has length 1000/);
    await Deno.writeFile(`${dir}/text.model`, new TextEncoder().encode("not a model\n"));
    await rejects(`${dir}/text.model`, /SentencePiece model/);
    await assert.rejects(loadTokenizer(BIN, { vocabSize: 32000 }), /512 tokens, expected 32000/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SentencePieceTokenizer rejects non-BPE models and non-identity normalizers", async () => {
  const bytes = await Deno.readFile(MODEL);
  const unigram = parseModelProto(bytes, "u.model");
  unigram.trainerSpec.modelType = ModelType.UNIGRAM;
  assert.throws(() => new SentencePieceTokenizer(unigram, { source: "u.model" }), /UNIGRAM/);
  const nfkc = parseModelProto(bytes, "n.model");
  nfkc.normalizerSpec.name = "nmt_nfkc";
  nfkc.normalizerSpec.precompiledCharsmap = new Uint8Array(16);
  assert.throws(
    () => new SentencePieceTokenizer(nfkc, { source: "n.model" }),
    /nmt_nfkc.*identity/,
  );
  const noBytes = parseModelProto(bytes, "b.model");
  noBytes.pieces[100].type = 1; // <0x61> as a normal piece: byte 0x61 missing
  assert.throws(
    () => new SentencePieceTokenizer(noBytes, { source: "b.model" }),
    /<0x61> is missing/,
  );
});

Deno.test("SentencePieceTokenizer's chunk cache stays exact with whitespace-only and 'x▁' pieces", async () => {
  const proto = parseModelProto(await Deno.readFile(MODEL), MODEL);
  proto.normalizerSpec.removeExtraWhitespaces = false;
  // Pieces a chunked merge must still find: "▁▁" inside a run, "▁▁▁a" across the run.
  proto.pieces[511] = { piece: "\u2581\u2581", score: 10, type: 1 };
  proto.pieces[510] = { piece: "\u2581\u2581\u2581a", score: 11, type: 1 };
  const texts = ["a   b", "  a  b  c    d", "x\u2581\u2581 y", "    a", " a  a   a    a"];
  const cached = new SentencePieceTokenizer(proto);
  const whole = new SentencePieceTokenizer(proto, { chunkCache: false });
  for (const t of texts) assert.deepEqual(cached.encode(t), whole.encode(t), JSON.stringify(t));
  assert.deepEqual(Array.from(cached.encode("a   b")), [261, 511, 268]); // ▁a ▁▁ ▁b
  assert.deepEqual(Array.from(cached.encode("  a")), [510]); // ▁▁▁a
  // A piece with "▁" after another character spans chunks: the cache must switch itself off.
  proto.pieces[509] = { piece: "e\u2581", score: 12, type: 1 };
  const spanning = new SentencePieceTokenizer(proto);
  const spanningWhole = new SentencePieceTokenizer(proto, { chunkCache: false });
  for (const t of [...texts, "the end", "one two three"]) {
    assert.deepEqual(spanning.encode(t), spanningWhole.encode(t), JSON.stringify(t));
  }
  assert.ok(spanning.encode("the end").includes(509));
});
