import assert from "node:assert/strict";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { loadTokenizer } from "../model/tokenizer.ts";
import { generate } from "./generate.ts";
import { sharedData } from "../datasets/testing.ts";

Deno.test("generate() prints stories260K's documented greedy story", async () => {
  const w = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));
  const tok = await loadTokenizer(sharedData("stories260K/tok512.model"));
  const { text, tokens } = generate(w, tok, { steps: 40, temperature: 0 });
  assert.equal(tokens[0], 1);
  assert.ok(
    text.startsWith(
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.",
    ),
    text,
  );
  // Same seed, same text when sampling.
  const a = generate(w, tok, { steps: 30, temperature: 0.8, seed: 5 }).text;
  assert.equal(generate(w, tok, { steps: 30, temperature: 0.8, seed: 5 }).text, a);
});
