// Reference values come from Python reading the same files without DuckDB:
//   /usr/bin/python3 -c "import gzip,json,hashlib; t=[json.loads(l)['text'] for l in
//     gzip.open('c4/c4-validation-2k.json.gz','rt',encoding='utf-8')];
//     print(hashlib.sha256('\n'.join(t).encode()).hexdigest())"
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { sharedData } from "./testing.ts";
import { DatasetFormatError, JsonLinesTable, readParquetColumn } from "./duckdb.ts";
import { tempDir } from "./_testing.ts";

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

Deno.test("readParquetColumn() reads the WikiText-2 test rows in file order", async () => {
  const rows = await readParquetColumn(
    sharedData("wikitext-2-raw-v1/test-00000-of-00001.parquet"),
    "text",
  );
  assert.equal(rows.length, 4358);
  assert.deepEqual(rows.slice(0, 3), ["", " = Robert Boulter = \n", ""]);
  assert.ok(
    rows[3].startsWith(" Robert Boulter is an English film , television and theatre actor"),
  );
  assert.equal(rows.join("\n\n").length, 1294336);
});

Deno.test("JsonLinesTable keeps the C4 documents in file order", async () => {
  using docs = await JsonLinesTable.open(sharedData("c4/c4-validation-2k.json.gz"), "text");
  assert.equal(docs.length, 2000);
  const all = await docs.slice();
  assert.equal(all.length, 2000);
  // same order and content as Python's json.loads over the gzip lines
  assert.equal(
    sha256(all.join("\n")),
    "7ffc0f272006e6b692c0b9c7431100e01a8489e534f4a6558735d775653c5b2d",
  );
  assert.ok(
    (await docs.get(0)).startsWith("We offer valet parking as well as street and private lot.\nOu"),
  );
  assert.ok(
    (await docs.get(1999)).startsWith(
      "In 2016 the Holland Festival – with the support of the EvS M",
    ),
  );
  assert.equal((await docs.get(1100)).length, 570);
  assert.deepEqual(await docs.slice(1100, 1103), [all[1100], all[1101], all[1102]]);
  assert.deepEqual(await docs.slice(1998, 5000), [all[1998], all[1999]]);
  await assert.rejects(docs.get(2000), RangeError);
});

Deno.test("JsonLinesTable reads plain .json lines in order, beyond one DuckDB vector", async () => {
  await using tmp = await tempDir("sqb-duckdb-test-");
  const dir = tmp.path;
  const n = 5000;
  const lines = Array.from(
    { length: n },
    (_, i) => JSON.stringify({ text: `doc ${i} ${"x".repeat(i % 7)}`, url: `u${i}` }),
  );
  await Deno.writeTextFile(`${dir}/d.json`, lines.join("\n") + "\n");
  using t = await JsonLinesTable.open(`${dir}/d.json`, "text");
  assert.equal(t.length, n);
  const all = await t.slice();
  all.forEach((s, i) => assert.equal(s, `doc ${i} ${"x".repeat(i % 7)}`));
  assert.equal(await t.get(4097), all[4097]);
});

Deno.test("JsonLinesTable and readParquetColumn reject bad files, naming them", async () => {
  await using tmp = await tempDir("sqb-duckdb-test-");
  const dir = tmp.path;
  await Deno.writeTextFile(`${dir}/bad.json`, '{"text": "a"}\n{"url": "b"}\n');
  await assert.rejects(
    JsonLinesTable.open(`${dir}/bad.json`, "text"),
    (e: Error) =>
      e instanceof DatasetFormatError && /bad\.json: 1 of 2 rows have no/.test(e.message),
  );
  await assert.rejects(
    JsonLinesTable.open(`${dir}/missing.json.gz`, "text"),
    (e: Error) => e instanceof DatasetFormatError && e.message.includes(`${dir}/missing.json.gz`),
  );
  const parquet = sharedData("wikitext-2-raw-v1/test-00000-of-00001.parquet");
  await assert.rejects(
    readParquetColumn(parquet, "nope"),
    (e: Error) =>
      e instanceof DatasetFormatError && e.message.includes(parquet) && /"nope"/.test(e.message),
  );
  await assert.rejects(
    readParquetColumn(sharedData("c4/c4-validation-2k.json.gz"), "text"),
    DatasetFormatError,
  );
});
