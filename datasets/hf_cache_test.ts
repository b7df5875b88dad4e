/**
 * Model ids resolved in a huggingface_hub cache laid out by the test, and
 * downloaded from a loopback hub (gated: 401 without the bearer token).
 */
import assert from "node:assert/strict";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { forward } from "../model/forward.ts";
import { loadHfModel } from "../model/hf.ts";
import { writeHfCheckpoint } from "../model/_convert_testing.ts";
import { maxRelError, sharedData } from "./testing.ts";
import { tempDir } from "./_testing.ts";
import { download, DownloadError, type EnvLookup } from "./hub.ts";
import { MissingDataError } from "./datadir.ts";
import { hfHubCache, hfToken, parseHfModelId, repoCacheDir, resolveHfModel } from "./hf_cache.ts";

const HASH_A = "a".repeat(40);
const HASH_B = "0123456789abcdef0123456789abcdef01234567";
const TOKEN = "hf_test_secret";

const envOf = (vars: Record<string, string>): EnvLookup => (name) => vars[name];

Deno.test("parseHfModelId() reads ORG/NAME[@REVISION] and refuses paths", () => {
  assert.deepEqual(parseHfModelId("meta-llama/Llama-2-7b-hf"), {
    repo: "meta-llama/Llama-2-7b-hf",
    revision: "main",
  });
  assert.deepEqual(parseHfModelId(`org/m@${HASH_B}`), { repo: "org/m", revision: HASH_B });
  assert.deepEqual(parseHfModelId("org/m@refs/pr/1"), { repo: "org/m", revision: "refs/pr/1" });
  for (const bad of ["m", "a/b/c", "/abs/path", "./x/y", "org/m@", "org/m@../x", "../x"]) {
    assert.equal(parseHfModelId(bad), null, bad);
  }
});

Deno.test("hfHubCache() and hfToken() follow huggingface_hub's variables", async () => {
  assert.equal(hfHubCache(envOf({ HF_HUB_CACHE: "/c/", HF_HOME: "/h" })), "/c");
  assert.equal(hfHubCache(envOf({ HF_HOME: "/h", HOME: "/u" })), "/h/hub");
  assert.equal(hfHubCache(envOf({ XDG_CACHE_HOME: "/x", HOME: "/u" })), "/x/huggingface/hub");
  assert.equal(hfHubCache(envOf({ HOME: "/u" })), "/u/.cache/huggingface/hub");
  assert.throws(() => hfHubCache(envOf({})), MissingDataError);
  await using tmp = await tempDir("sqb-hfcache-test-");
  assert.equal(hfToken(envOf({ HF_TOKEN: " t1 ", HF_HOME: tmp.path })), "t1");
  assert.equal(hfToken(envOf({ HF_HOME: tmp.path })), undefined);
  await Deno.writeTextFile(`${tmp.path}/token`, "t2\n");
  assert.equal(hfToken(envOf({ HF_HOME: tmp.path })), "t2");
});

/** A cache with org/tiny: refs/main → HASH_A (complete), refs/v1 → HASH_B (no weights). */
async function cacheFixture(cache: string): Promise<string> {
  const root = repoCacheDir(cache, "org/tiny");
  await Deno.mkdir(`${root}/refs`, { recursive: true });
  await Deno.writeTextFile(`${root}/refs/main`, HASH_A);
  await Deno.writeTextFile(`${root}/refs/v1`, HASH_B);
  await writeHfCheckpoint(
    `${root}/snapshots/${HASH_A}`,
    await loadCheckpoint(sharedData("stories260K/stories260K.bin")),
  );
  await Deno.mkdir(`${root}/snapshots/${HASH_B}`, { recursive: true });
  await Deno.writeTextFile(`${root}/snapshots/${HASH_B}/config.json`, "{}");
  return root;
}

Deno.test("resolveHfModel() reads huggingface_hub's own layout: snapshot files linked into blobs/", async () => {
  await using tmp = await tempDir("sqb-hfcache-test-");
  const root = repoCacheDir(tmp.path, "org/linked");
  await using src = await tempDir("sqb-hfcache-src-");
  await writeHfCheckpoint(
    src.path,
    await loadCheckpoint(sharedData("stories260K/stories260K.bin")),
  );
  await Deno.mkdir(`${root}/blobs`, { recursive: true });
  await Deno.mkdir(`${root}/snapshots/${HASH_B}`, { recursive: true });
  await Deno.mkdir(`${root}/refs`);
  await Deno.writeTextFile(`${root}/refs/v1.0`, HASH_B);
  for (const [i, name] of ["config.json", "model.safetensors"].entries()) {
    const blob = String(i).repeat(64); // huggingface_hub names blobs by etag (sha256 for LFS)
    await Deno.copyFile(`${src.path}/${name}`, `${root}/blobs/${blob}`);
    await Deno.symlink(`../../blobs/${blob}`, `${root}/snapshots/${HASH_B}/${name}`);
  }
  const r = await resolveHfModel("org/linked@v1.0", { cacheDir: tmp.path, offline: true });
  assert.equal(r.dir, `${root}/snapshots/${HASH_B}`);
  assert.equal((await loadHfModel(r.dir)).config.nLayers, 5);
});

Deno.test("resolveHfModel() finds refs and snapshots in the cache offline, and names what is missing", async () => {
  await using tmp = await tempDir("sqb-hfcache-test-");
  const root = await cacheFixture(tmp.path);
  const env = envOf({ HF_HUB_CACHE: tmp.path, HF_HUB_OFFLINE: "1" });
  const a = await resolveHfModel("org/tiny", { env });
  assert.equal(a.dir, `${root}/snapshots/${HASH_A}`);
  assert.equal(a.commit, HASH_A);
  assert.deepEqual(a.downloaded, []);
  assert.equal((await resolveHfModel(`org/tiny@${HASH_A}`, { env })).dir, a.dir);
  // the snapshot is a loadable checkpoint folder
  assert.equal((await loadHfModel(a.dir)).config.dim, 64);
  await assert.rejects(resolveHfModel("org/tiny@v1", { env }), (e: Error) => {
    assert.ok(e instanceof MissingDataError, String(e));
    assert.ok(e.message.includes(`${root}/snapshots/${HASH_B}/model.safetensors`), e.message);
    assert.match(e.message, /offline mode/);
    return true;
  });
  await assert.rejects(resolveHfModel("org/tiny@v2", { env }), (e: Error) => {
    assert.ok(e instanceof MissingDataError);
    assert.ok(e.message.includes(`${root}/refs/v2 not found`), e.message);
    return true;
  });
  await assert.rejects(
    resolveHfModel("org/other", { cacheDir: tmp.path, offline: true, env: envOf({}) }),
    /Model org\/other@main is not in the Hugging Face cache: .*models--org--other\/refs\/main not found/,
  );
});

/** A loopback hub serving one gated repo (`org/gated`) from `files`; counts requests. */
function gatedHub(files: Map<string, Uint8Array>, sha: string) {
  const seen: { path: string; status: number; auth: string | null }[] = [];
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 20_000);
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: abort.signal, onListen: () => {} },
    (req) => {
      const path = new URL(req.url).pathname;
      const auth = req.headers.get("authorization");
      const answer = (status: number, body: BodyInit | null, headers: HeadersInit = {}) => {
        seen.push({ path, status, auth });
        return new Response(body, { status, headers });
      };
      if (auth !== `Bearer ${TOKEN}`) return answer(401, "Access to model org/gated is restricted");
      if (path === "/api/models/org/gated/revision/main") {
        return answer(
          200,
          JSON.stringify({ sha, siblings: [...files.keys()].map((rfilename) => ({ rfilename })) }),
          { "content-type": "application/json" },
        );
      }
      const prefix = `/org/gated/resolve/${sha}/`;
      const body = path.startsWith(prefix) ? files.get(path.slice(prefix.length)) : undefined;
      if (!body) return answer(404, "Entry not found");
      return answer(200, body.slice(), { "content-length": String(body.length) });
    },
  );
  return {
    endpoint: `http://127.0.0.1:${server.addr.port}`,
    seen,
    async [Symbol.asyncDispose]() {
      clearTimeout(timer);
      abort.abort();
      await server.finished;
    },
  };
}

Deno.test("resolveHfModel() downloads a gated sharded model with HF_TOKEN into the cache (401 without it), then works offline", async () => {
  const ref = await loadCheckpoint(sharedData("stories260K/stories260K.bin"));
  await using src = await tempDir("sqb-hfcache-src-");
  await writeHfCheckpoint(src.path, ref, {
    shards: 2,
    dtype: "F16",
    files: { "tokenizer.model": await Deno.readFile(sharedData("stories260K/tok512.model")) },
  });
  const files = new Map<string, Uint8Array>();
  for (const e of Deno.readDirSync(src.path)) {
    files.set(e.name, await Deno.readFile(`${src.path}/${e.name}`));
  }
  files.set("README.md", new TextEncoder().encode("not fetched"));
  await using hub = gatedHub(files, HASH_B);
  await using cache = await tempDir("sqb-hfcache-test-");
  const base = { HF_HUB_CACHE: cache.path, HF_ENDPOINT: hub.endpoint, HF_HOME: cache.path };
  await assert.rejects(resolveHfModel("org/gated", { env: envOf(base) }), (e: Error) => {
    assert.ok(e instanceof DownloadError, String(e));
    assert.equal(e.status, 401);
    assert.match(e.message, /gated or private: set HF_TOKEN/);
    return true;
  });
  assert.deepEqual(hub.seen.map((s) => s.status), [401]);
  const r = await resolveHfModel("org/gated", { env: envOf({ ...base, HF_TOKEN: TOKEN }) });
  const root = repoCacheDir(cache.path, "org/gated");
  assert.equal(r.dir, `${root}/snapshots/${HASH_B}`);
  assert.equal(await Deno.readTextFile(`${root}/refs/main`), HASH_B);
  assert.deepEqual(r.downloaded.sort(), [
    "config.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
    "tokenizer.model",
  ]);
  assert.ok(hub.seen.slice(1).every((s) => s.auth === `Bearer ${TOKEN}` && s.status === 200));
  const m = await loadHfModel(r.dir);
  const tokens = [1, 403, 407, 261, 378];
  const got = forward(m.weights, tokens).slice();
  assert.ok(maxRelError(got, forward(ref, tokens)) < 2e-3);
  assert.equal(m.tokenizer?.vocabSize, 512);
  // now cached: offline, no request
  const n = hub.seen.length;
  const again = await resolveHfModel("org/gated", {
    env: envOf({ ...base, HF_HUB_OFFLINE: "1" }),
  });
  assert.equal(again.dir, r.dir);
  assert.equal(hub.seen.length, n);
});

Deno.test("download() sends the token as a bearer header", async () => {
  const files = new Map([["config.json", new TextEncoder().encode("{}")]]);
  await using hub = gatedHub(files, HASH_A);
  await using tmp = await tempDir("sqb-hfcache-test-");
  const url = `${hub.endpoint}/org/gated/resolve/${HASH_A}/config.json`;
  await assert.rejects(download(url, `${tmp.path}/c.json`), (e: Error) => {
    return e instanceof DownloadError && e.status === 401;
  });
  const r = await download(url, `${tmp.path}/c.json`, { token: TOKEN });
  assert.equal(r.bytes, 2);
  assert.deepEqual(hub.seen.map((s) => [s.status, s.auth]), [[401, null], [
    200,
    `Bearer ${TOKEN}`,
  ]]);
});
