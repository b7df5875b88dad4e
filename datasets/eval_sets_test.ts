// Expected token counts and sums come from /usr/bin/python3 with sentencepiece
// on the same files (tok512.model; ids = [1] + sp.encode(text)), e.g. for WikiText-2:
//   rows = [l if l.strip() else "" for l in open("wiki.test.raw").readlines()]
//   ids = [1] + sp.encode("\n\n".join(rows)); print(len(ids), sum(ids), ids[:12])
// c4: see datasets/c4_test.ts; c4-new: ids = [1] + sp.encode(" ".join(docs[:1100])),
// sum(ids[:256 * seqlen]); tinystories: ids = [1] + sp.encode(open(f).read()).
import assert from "node:assert/strict";
import { SHARED_DATA, sharedData } from "./testing.ts";
import { loadTokenizer } from "../model/tokenizer.ts";
import { MissingDataError } from "./datadir.ts";
import { loadEvalSet } from "./eval_sets.ts";
import { tempDir, wikitextDataDir } from "./_testing.ts";

const tok = await loadTokenizer(sharedData("stories260K/tok512.model"));
const opts = { dataDir: SHARED_DATA, tokenizer: tok, offline: true };
const sum = (a: Int32Array) => a.reduce((s, x) => s + x, 0);

Deno.test("loadEvalSet('wikitext2') tokenizes the joined test rows once, with one BOS", async () => {
  const set = await loadEvalSet("wikitext2", { ...opts, seqlen: 512 });
  assert.equal(set.name, "wikitext2");
  assert.equal(set.tokens.length, 815066);
  assert.equal(sum(set.tokens), 295666016);
  assert.deepEqual([...set.tokens.subarray(0, 12)], [
    1,
    410,
    13,
    13,
    410,
    64,
    410,
    461,
    414,
    430,
    285,
    413,
  ]);
  assert.equal(set.tokens.indexOf(1, 1), -1, "a single BOS");
  assert.equal(set.file, sharedData("wikitext-2-raw-v1/test-00000-of-00001.parquet"));
  assert.equal(set.fileSha256, "11c1d37441258bc72e41e56d519e044d22bdbd876314c38ca4ed74d6e5cee15b");
  assert.match(set.protocol, /4358 test rows .* 1294336 chars/);
});

Deno.test("loadEvalSet('wikitext2') gives the same tokens from wiki.test.raw alone", async () => {
  await using tmp = await wikitextDataDir("sqb-eval-test-", "wiki.test.raw");
  const dir = tmp.path;
  const raw = await loadEvalSet("wikitext2", { ...opts, dataDir: dir, seqlen: 512 });
  const parquet = await loadEvalSet("wikitext2", { ...opts, seqlen: 512 });
  assert.equal(raw.file, `${dir}/wikitext-2-raw-v1/wiki.test.raw`);
  assert.deepEqual(raw.tokens, parquet.tokens);
  assert.match(raw.protocol, /wiki\.test\.raw/);
});

Deno.test("loadEvalSet('c4') concatenates GPTQ's 256 random windows from the first 1,100 docs", async () => {
  const set = await loadEvalSet("c4", { ...opts, seqlen: 512 });
  assert.equal(set.tokens.length, 256 * 512);
  assert.equal(sum(set.tokens), 47878540);
  assert.equal(set.fileSha256, "4a9a0f0bc5fe2f477cdd0ce4f9c017f74e29ff91b18e257cbfdd71b453f69d35");
  assert.match(set.protocol, /random\.seed\(0\), 256 windows of 512 from docs 0\.\.1099/);
  assert.match(set.protocol, /deviation/);
});

Deno.test("loadEvalSet('c4-new') joins the first 1,100 docs and keeps 256 × seqlen tokens", async () => {
  const a = await loadEvalSet("c4-new", { ...opts, seqlen: 512 });
  assert.equal(a.tokens.length, 256 * 512);
  assert.equal(sum(a.tokens), 47844984);
  assert.equal(a.tokens[0], 1);
  // the joined text is tokenized once: a shorter seqlen keeps a prefix of the same stream
  const b = await loadEvalSet("c4-new", { ...opts, seqlen: 128 });
  assert.equal(b.tokens.length, 256 * 128);
  assert.equal(sum(b.tokens), 11951043);
  assert.deepEqual(b.tokens, a.tokens.subarray(0, 256 * 128));
  assert.match(a.protocol, /" "\.join\(docs 0\.\.1099 of c4\/c4-validation-2k\.json\.gz\)/);
});

Deno.test("loadEvalSet('tinystories') tokenizes the whole validation head", async () => {
  const set = await loadEvalSet("tinystories", { ...opts, seqlen: 512 });
  assert.equal(set.tokens.length, 393013);
  assert.equal(sum(set.tokens), 136149065);
  assert.match(set.protocol, /793451 chars/);
  // a caller's changes never reach the memoized stream
  set.tokens.fill(0);
  assert.equal(sum((await loadEvalSet("tinystories", { ...opts, seqlen: 512 })).tokens), 136149065);
});

Deno.test("loadEvalSet() offline with an empty data dir names the missing files", async () => {
  await using tmp = await tempDir("sqb-eval-test-");
  const dir = tmp.path;
  for (
    const [name, file] of [
      ["wikitext2", "wikitext-2-raw-v1/test-00000-of-00001.parquet"],
      ["c4", "c4/en/c4-validation.00000-of-00008.json.gz"],
      ["c4-new", "c4/c4-validation-2k.json.gz"],
      ["tinystories", "tinystories/tinystories-valid-head.txt"],
    ] as const
  ) {
    await assert.rejects(
      loadEvalSet(name, { ...opts, dataDir: dir, seqlen: 512 }),
      (e: Error) => e instanceof MissingDataError && e.message.includes(`${dir}/${file}`),
    );
  }
  await assert.rejects(loadEvalSet("wikitext2", { ...opts, seqlen: 1 }), /seqlen/);
});

/** A loopback server laid out like the hub: `/{repo}/resolve/{revision}/{path}` → bytes. */
function loopbackHubServing(files: Map<string, Uint8Array>) {
  const seen: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const path = new URL(req.url).pathname;
    seen.push(path);
    const body = files.get(path);
    if (!body) return new Response("Entry not found", { status: 404 });
    return new Response(body.slice(), { headers: { "content-length": String(body.length) } });
  });
  return {
    endpoint: `http://127.0.0.1:${server.addr.port}`,
    seen,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

Deno.test("loadEvalSet('tinystories') downloads the public validation file into an empty data dir and evaluates its head", async () => {
  await using tmp = await tempDir("sqb-tinystories-");
  // The public file's layout: stories separated by <|endoftext|> lines.
  const head = await Deno.readTextFile(sharedData("tinystories/tinystories-valid-head.txt"));
  const stories = head.split("\n\n").slice(0, 400);
  const publicText = stories.join("\n<|endoftext|>\n") + "\n".repeat(1) +
    "<|endoftext|>\n" + "Filler story past the head. ".repeat(40_000) + "\n";
  const bytes = new TextEncoder().encode(publicText);
  await using hub = loopbackHubServing(
    new Map([["/datasets/roneneldan/TinyStories/resolve/main/TinyStories-valid.txt", bytes]]),
  );
  const set = await loadEvalSet("tinystories", {
    dataDir: tmp.path,
    tokenizer: tok,
    seqlen: 512,
    endpoint: hub.endpoint,
    env: () => undefined,
  });
  assert.deepEqual(hub.seen, [
    "/datasets/roneneldan/TinyStories/resolve/main/TinyStories-valid.txt",
  ]);
  assert.equal(set.file, `${tmp.path}/tinystories/TinyStories-valid.txt`);
  assert.deepEqual(await Deno.readFile(set.file), bytes);
  const { sha256File } = await import("./hub.ts");
  assert.equal(set.fileSha256, await sha256File(set.file));
  assert.match(set.protocol, /TinyStories-valid\.txt without its <\|endoftext\|> lines/);
  const { tinyStoriesHead, TINYSTORIES_HEAD_BYTES } = await import("./eval_sets.ts");
  const text = tinyStoriesHead(publicText);
  assert.ok(!text.includes("<|endoftext|>"));
  assert.ok(new TextEncoder().encode(text).length <= TINYSTORIES_HEAD_BYTES);
  assert.ok(text.endsWith("\n"));
  assert.ok(text.startsWith(stories[0]));
  assert.deepEqual(set.tokens, tok.encodeWithBos(text));
  // offline and absent: one message naming the file and its public URL
  await using empty = await tempDir("sqb-tinystories-");
  await assert.rejects(
    loadEvalSet("tinystories", { dataDir: empty.path, tokenizer: tok, seqlen: 512, offline: true }),
    (e) =>
      e instanceof MissingDataError && /TinyStories-valid\.txt/.test(e.message) &&
      /huggingface\.co\/datasets\/roneneldan\/TinyStories/.test(e.message),
  );
});

Deno.test("loadEvalSet() with a token cache reads the ids back in a later process, equal; a damaged file is rewritten", async () => {
  await using tmp = await tempDir("sqb-tokens-");
  const cache = { dir: tmp.path, version: "test 1" };
  const first = await loadEvalSet("tinystories", {
    ...opts,
    tokenizer: await loadTokenizer(sharedData("stories260K/tok512.model")), // no in-memory memo
    seqlen: 512,
    tokenCache: cache,
  });
  const files = [...Deno.readDirSync(tmp.path)].map((e) => e.name);
  assert.equal(files.length, 1);
  assert.match(files[0], /^tokens-[0-9a-f]{64}\.bin$/);
  // a new tokenizer object: no in-memory memo, the file is read
  const fresh = await loadTokenizer(sharedData("stories260K/tok512.model"));
  const again = await loadEvalSet("tinystories", {
    ...opts,
    tokenizer: fresh,
    seqlen: 512,
    tokenCache: cache,
  });
  assert.deepEqual(again.tokens, first.tokens);
  assert.equal(again.protocol, first.protocol);
  await Deno.writeFile(`${tmp.path}/${files[0]}`, new Uint8Array(10));
  const third = await loadEvalSet("tinystories", {
    ...opts,
    tokenizer: await loadTokenizer(sharedData("stories260K/tok512.model")),
    seqlen: 512,
    tokenCache: cache,
  });
  assert.deepEqual(third.tokens, first.tokens);
  assert.ok((await Deno.stat(`${tmp.path}/${files[0]}`)).size > 10);
  // another version is another file (a fresh tokenizer: no in-memory memo from earlier tests)
  await loadEvalSet("tinystories", {
    ...opts,
    tokenizer: await loadTokenizer(sharedData("stories260K/tok512.model")),
    seqlen: 512,
    tokenCache: { ...cache, version: "2" },
  });
  assert.equal([...Deno.readDirSync(tmp.path)].length, 2);
});
