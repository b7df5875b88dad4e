import assert from "node:assert/strict";
import { SHARED_DATA } from "./testing.ts";
import {
  dataFile,
  MissingDataError,
  requireDataDir,
  requireDataFiles,
  resolveCacheDir,
} from "./datadir.ts";
import { tempDir } from "./_testing.ts";

/** A hub endpoint that refuses every connection (the discard port on loopback). */
const UNREACHABLE = "http://127.0.0.1:9";

/** An environment lookup over a fixed table (the process environment stays untouched). */
const fakeEnv = (vars: Record<string, string>) => (name: string) => vars[name];

Deno.test("requireDataDir() rejects a --data-dir that does not exist, and never creates it", async () => {
  await using tmp = await tempDir("sqb-datadir-test-");
  const missing = `${tmp.path}/no/such/dir`;
  assert.throws(
    () => requireDataDir(missing),
    (e: Error) => {
      assert.ok(e instanceof MissingDataError);
      assert.match(e.message, /--data-dir .*\/no\/such\/dir does not exist/);
      return true;
    },
  );
  await assert.rejects(Deno.stat(`${tmp.path}/no`), Deno.errors.NotFound);
  await Deno.writeTextFile(`${tmp.path}/file`, "");
  assert.throws(() => requireDataDir(`${tmp.path}/file`), /is not a folder/);
  assert.equal(requireDataDir(tmp.path), tmp.path);
  // the default (no flag) is not checked: it is created as files are downloaded
  assert.equal(
    requireDataDir(undefined, fakeEnv({ HOME: missing })),
    `${missing}/.cache/squeezebench`,
  );
});

Deno.test("resolveCacheDir() is never inside the data dir", () => {
  assert.equal(resolveCacheDir(fakeEnv({ SQB_CACHE_DIR: "/c/", HOME: "/h" })), "/c");
  assert.equal(
    resolveCacheDir(fakeEnv({ SQB_DATA_DIR: "/data", HOME: "/h" })),
    "/h/.cache/squeezebench/cache",
  );
});

Deno.test("dataFile() with the network unreachable says so, and where to put the file", async () => {
  await using tmp = await tempDir("sqb-datadir-test-");
  await assert.rejects(
    dataFile(tmp.path, "stories260K/stories260K.bin", { endpoint: UNREACHABLE, progress: false }),
    (e: Error) => {
      assert.ok(e instanceof MissingDataError, `${e.name}: ${e.message}`);
      assert.match(e.message, /network is unreachable/);
      assert.ok(e.message.includes(`Put it at ${tmp.path}/stories260K/stories260K.bin`));
      assert.ok(e.message.includes(`${UNREACHABLE}/karpathy/tinyllamas/resolve/main/`));
      return true;
    },
  );
});

Deno.test("requireDataFiles() resolves every need, and names every missing file in one error", async () => {
  const found = await requireDataFiles(SHARED_DATA, [
    { what: "checkpoint", candidates: ["stories260K/stories260K.bin"] },
    {
      what: "WikiText-2 test",
      candidates: [
        "wikitext-2-raw-v1/test-00000-of-00001.parquet",
        "wikitext-2-raw-v1/wiki.test.raw",
      ],
    },
  ], { offline: true });
  assert.deepEqual(found.map((f) => f.relPath), [
    "stories260K/stories260K.bin",
    "wikitext-2-raw-v1/test-00000-of-00001.parquet",
  ]);
  await using tmp = await tempDir("sqb-datadir-test-");
  await assert.rejects(
    requireDataFiles(tmp.path, [
      { what: "checkpoint", candidates: ["stories260K/stories260K.bin"] },
      { what: "TinyStories validation", candidates: ["tinystories/tinystories-valid-head.txt"] },
    ], { endpoint: UNREACHABLE, progress: false }),
    (e: Error) => {
      assert.ok(e instanceof MissingDataError, `${e.name}: ${e.message}`);
      assert.match(e.message, /^2 data files are missing/);
      assert.match(e.message, /stories260K\.bin.*network is unreachable/);
      assert.match(e.message, /tinystories-valid-head\.txt/);
      return true;
    },
  );
});
