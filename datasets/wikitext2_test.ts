import assert from "node:assert/strict";
import { sharedData } from "./testing.ts";
import { readWikitextRows, wikitextJoin, wikitextRowsFromRaw } from "./wikitext2.ts";

Deno.test("wikitextRowsFromRaw() splits lines like the Hugging Face dataset", () => {
  assert.deepEqual(wikitextRowsFromRaw(" \n = Title = \n \n Text . \n"), [
    "",
    " = Title = \n",
    "",
    " Text . \n",
  ]);
  assert.deepEqual(wikitextRowsFromRaw("a\nb"), ["a\n", "b"]);
  assert.deepEqual(wikitextRowsFromRaw(""), []);
});

Deno.test("readWikitextRows() gives identical rows from the Parquet file and wiki.test.raw", async () => {
  const [parquet, raw] = await Promise.all([
    readWikitextRows(sharedData("wikitext-2-raw-v1/test-00000-of-00001.parquet")),
    readWikitextRows(sharedData("wikitext-2-raw-v1/wiki.test.raw")),
  ]);
  assert.equal(parquet.length, 4358);
  assert.equal(raw.length, 4358);
  assert.deepEqual(raw, parquet);
  // the GPTQ evaluation string, as the shared data's README states
  assert.equal(wikitextJoin(parquet).length, 1294336);
  assert.equal(parquet.filter((r) => r === "").length, 1467);
});
