/**
 * tokenizer.json written from tok512.model by the test converter (as
 * transformers' LlamaConverter would) must give the ids of the SentencePiece
 * model itself (model/sentencepiece.ts, verified against Google's
 * sentencepiece in tokenizer_test.ts) on whole corpora.
 */
import assert from "node:assert/strict";
import { sharedData } from "../datasets/testing.ts";
import { parseModelProto, SentencePieceTokenizer, TokenizerError } from "./sentencepiece.ts";
import { tokenizerJsonFromSentencePiece } from "./_convert_testing.ts";
import { loadTokenizerJson, mergeByRank, parseTokenizerJson } from "./tokenizer_json.ts";
import { readWikitextRows, wikitextJoin } from "../datasets/wikitext2.ts";
import { tempDir } from "../datasets/_testing.ts";

const proto = parseModelProto(await Deno.readFile(sharedData("stories260K/tok512.model")));
const sp = new SentencePieceTokenizer(proto, { source: "tok512.model" });
const json = tokenizerJsonFromSentencePiece(proto);

function firstDifference(a: Int32Array, b: Int32Array): string {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return `lengths ${a.length} vs ${b.length}, first difference at ${i}: ` +
    `${a.slice(i, i + 8)} vs ${b.slice(i, i + 8)}`;
}

Deno.test("tokenizer.json from tok512.model gives sentencepiece's ids on the whole WikiText-2 test text", async () => {
  const tok = parseTokenizerJson(json, "tok512.json");
  const text = wikitextJoin(await readWikitextRows(sharedData("wikitext-2-raw-v1/wiki.test.raw")));
  assert.equal(text.length, 1_294_336);
  const want = sp.encodeWithBos(text);
  const got = tok.encodeWithBos(text);
  assert.ok(
    got.length === want.length && got.every((v, i) => v === want[i]),
    firstDifference(got, want),
  );
  assert.equal(tok.decode(got.subarray(0, 400)), sp.decode(want.subarray(0, 400)));
});

Deno.test("tokenizer.json from tok512.model gives sentencepiece's ids on the TinyStories validation head, line by line and whole", async () => {
  const tok = parseTokenizerJson(json, "tok512.json");
  const text = await Deno.readTextFile(sharedData("tinystories/tinystories-valid-head.txt"));
  const want = sp.encode(text), got = tok.encode(text);
  assert.ok(
    got.length === want.length && got.every((v, i) => v === want[i]),
    firstDifference(got, want),
  );
  for (const line of text.split("\n").slice(0, 400)) {
    assert.deepEqual(tok.encode(line), sp.encode(line), line);
    assert.equal(tok.decode(tok.encode(line)), sp.decode(sp.encode(line)));
  }
});

Deno.test("tokenizer.json from tok512.model agrees with sentencepiece on whitespace, bytes and edge cases", async () => {
  await using tmp = await tempDir("sqb-tokjson-test-");
  await Deno.writeTextFile(`${tmp.path}/tokenizer.json`, json);
  const tok = await loadTokenizerJson(`${tmp.path}/tokenizer.json`);
  assert.equal(tok.vocabSize, 512);
  assert.equal(tok.bosId, 1);
  assert.equal(tok.eosId, 2);
  for (
    const s of [
      "",
      " ",
      "   ",
      "Hello world",
      "  leading and trailing  ",
      "a  b   c",
      "\n = Title = \n",
      "tab\there",
      "émigré naïve — “quotes” 😀 漢字",
      "<s> not a control token </s>",
      "lone \ud800 surrogate",
    ]
  ) {
    assert.deepEqual(tok.encode(s), sp.encode(s), JSON.stringify(s));
    assert.equal(tok.decode(tok.encode(s)), sp.decode(sp.encode(s)), JSON.stringify(s));
  }
  // Same ids; decoding follows tokenizers' Strip(start=1) decoder, which drops one
  // leading space where sentencepiece (remove_extra_whitespaces) drops them all.
  const esc = "\u2581already escaped";
  assert.deepEqual(tok.encode(esc), sp.encode(esc));
  assert.equal(tok.decode(tok.encode(esc)), " already escaped");
  assert.equal(sp.decode(sp.encode(esc)), "already escaped");
  const ids = sp.encodeWithBos("Once upon a time, a cat said “hi”.");
  for (let i = 1; i < ids.length; i++) {
    assert.equal(tok.decodeToken(ids[i - 1], ids[i]), sp.decodeToken(ids[i - 1], ids[i]));
  }
});

Deno.test("TokenizerJson: Metaspace pre-tokenizer with split, string merges, and ranks that are not scores", () => {
  // vocab a b c ab bc abc ▁ ▁a; merges by rank: (b,c) before (a,b)
  const tj = {
    model: {
      type: "BPE",
      unk_token: "<unk>",
      vocab: { "<unk>": 0, "a": 1, "b": 2, "c": 3, "ab": 4, "bc": 5, "abc": 6, "▁": 7, "▁a": 8 },
      merges: ["b c", "a b", "▁ a", "a bc"],
    },
    pre_tokenizer: { type: "Metaspace", replacement: "▁", prepend_scheme: "always", split: true },
  };
  const tok = parseTokenizerJson(JSON.stringify(tj));
  // "abc": b+c first (rank 0), then a+bc (rank 3) → abc; "▁abc" → ▁+a (rank 2) wins over nothing
  assert.deepEqual([...tok.encode("abc")], [8, 5]); // "▁abc": (b,c) rank 0, then (▁,a) rank 2
  // "▁ab": (a,b) rank 1 beats (▁,a) rank 2 → ▁ ab
  assert.deepEqual([...tok.encode("ab abc")], [7, 4, 8, 5]);
  assert.deepEqual([...tok.encode("xa")], [7, 0, 1]); // x unknown, no byte fallback → <unk>
  assert.equal(tok.decode([8, 5]), "abc");
  // mergeByRank directly: lowest rank first, leftmost on ties
  const merges = new Map([[1 * 10 + 2, 1], [2 * 10 + 3, 0]]);
  assert.deepEqual(mergeByRank([1, 2, 3], merges, Int32Array.of(5, 4), 10), [1, 5]);
  assert.deepEqual(mergeByRank([1, 2, 1, 2], merges, Int32Array.of(5, 4), 10), [4, 4]);
});

Deno.test("parseTokenizerJson() rejects unsupported or inconsistent files with a TokenizerError naming the file", () => {
  const base = JSON.parse(json);
  const cases: [unknown, RegExp][] = [
    ["{", /not valid JSON/],
    [[], /not a JSON object/],
    [
      { ...base, model: { ...base.model, type: "Unigram" } },
      /model type "Unigram" is not supported/,
    ],
    [{ ...base, model: { ...base.model, dropout: 0.1 } }, /dropout 0\.1 is not supported/],
    [{ ...base, model: { ...base.model, merges: [["▁", "zz"]] } }, /"zz" is not in the vocab/],
    [
      { ...base, model: { ...base.model, vocab: { ...base.model.vocab, "x": 100000 } } },
      /ids are not dense/,
    ],
    [{ ...base, model: { ...base.model, vocab: { ...base.model.vocab, "x": 5 } } }, /id 5 is both/],
    [
      { ...base, pre_tokenizer: { type: "ByteLevel" } },
      /pre_tokenizer type "ByteLevel" is not supported/,
    ],
    [
      { ...base, normalizer: { type: "Lowercase" } },
      /normalizer type "Lowercase" is not supported/,
    ],
    [
      { ...base, normalizer: { type: "Replace", pattern: { Regex: "(" }, content: "" } },
      /regex .* is invalid/,
    ],
  ];
  for (const [j, re] of cases) {
    const text = typeof j === "string" ? j : JSON.stringify(j);
    assert.throws(() => parseTokenizerJson(text, "/m/tokenizer.json"), (e: Error) => {
      assert.ok(e instanceof TokenizerError, String(e));
      assert.match(e.message, /\/m\/tokenizer\.json/);
      assert.match(e.message, re);
      return true;
    });
  }
});
