import assert from "node:assert/strict";
import { SHARED_DATA, sharedData } from "./testing.ts";
import {
  dataFile,
  findDataFile,
  isOffline,
  KNOWN_FILES,
  knownFileUrl,
  MissingDataError,
  resolveDataDir,
} from "./datadir.ts";
import { download, DownloadError, hubEndpoint, hubUrl, sha256File } from "./hub.ts";
import { tempDir } from "./_testing.ts";

/** How the loopback hub behaves. */
interface ServerBehaviour {
  /** Answer Range requests with 206 (else ignore them and send 200). @default {true} */
  honorRange?: boolean;
  /** Send this many bytes of the body, then drop the connection. */
  dropAfter?: number;
}

/** One request the loopback hub saw. */
interface Seen {
  path: string;
  range: string | null;
  status: number;
}

/**
 * A loopback HTTP server that serves ../shared/data under the hub URL of
 * every known file (`/{repo}/resolve/{revision}/{path}`). It stops when
 * disposed, and on its own after 20 s at the latest.
 */
function loopbackHub(behaviour: ServerBehaviour = {}) {
  const routes = new Map<string, string>();
  for (const rel of Object.keys(KNOWN_FILES)) {
    const url = knownFileUrl(rel, "");
    if (url) routes.set(url, sharedData(rel));
  }
  const seen: Seen[] = [];
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 20_000);
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: abort.signal, onListen: () => {} },
    async (req) => {
      const path = new URL(req.url).pathname;
      const range = req.headers.get("range");
      const file = routes.get(path);
      let bytes: Uint8Array<ArrayBuffer> | null = null;
      if (file) {
        try {
          bytes = await Deno.readFile(file);
        } catch {
          bytes = null; // a known file that ../shared/data lacks: 404 like the hub
        }
      }
      if (!bytes) {
        seen.push({ path, range, status: 404 });
        return new Response("Entry not found", { status: 404 });
      }
      let start = 0, status = 200;
      const headers = new Headers({ "accept-ranges": "bytes" });
      const m = range?.match(/^bytes=(\d+)-$/);
      if (m && behaviour.honorRange !== false) {
        start = Number(m[1]);
        if (start >= bytes.length) {
          seen.push({ path, range, status: 416 });
          return new Response(null, {
            status: 416,
            headers: { "content-range": `bytes */${bytes.length}` },
          });
        }
        status = 206;
        headers.set("content-range", `bytes ${start}-${bytes.length - 1}/${bytes.length}`);
      }
      const body = bytes.slice(start);
      headers.set("content-length", String(body.length));
      seen.push({ path, range, status });
      const drop = behaviour.dropAfter;
      if (drop === undefined) return new Response(body, { status, headers });
      const stream = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(body.slice(0, drop));
          // let the first part reach the client before the connection drops
          setTimeout(
            () => controller.error(new Error("test server drops the connection here (expected)")),
            50,
          );
        },
      });
      return new Response(stream, { status, headers });
    },
  );
  const endpoint = `http://127.0.0.1:${server.addr.port}`;
  return {
    endpoint,
    seen,
    async [Symbol.asyncDispose]() {
      clearTimeout(timer);
      abort.abort();
      await server.finished;
    },
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

const MODEL = "stories260K/stories260K.bin";

Deno.test("dataFile() downloads a known file from the hub and checks its sha256", async () => {
  await using hub = loopbackHub();
  await using tmp = await tempDir("sqb-hub-test-");
  const dir = tmp.path;
  const progress: [number, number | null, string][] = [];
  const path = await dataFile(dir, MODEL, {
    endpoint: hub.endpoint,
    progress: (d, t, what) => progress.push([d, t, what]),
  });
  assert.equal(path, `${dir}/${MODEL}`);
  assert.equal(await sha256File(path), KNOWN_FILES[MODEL].sha256);
  assert.equal(await exists(path + ".partial"), false);
  assert.deepEqual(hub.seen, [{
    path: "/karpathy/tinyllamas/resolve/main/stories260K/stories260K.bin",
    range: null,
    status: 200,
  }]);
  assert.deepEqual(progress.at(-1), [1056540, 1056540, "stories260K.bin"]);
  // present now: a second call does not touch the network
  assert.equal(await dataFile(dir, MODEL, { endpoint: hub.endpoint }), path);
  assert.equal(hub.seen.length, 1);
});

Deno.test("download() resumes a partial file with a Range request (206)", async () => {
  await using hub = loopbackHub();
  await using tmp = await tempDir("sqb-hub-test-");
  const dir = tmp.path;
  const whole = await Deno.readFile(sharedData(MODEL));
  const dest = `${dir}/m.bin`;
  await Deno.writeFile(dest + ".partial", whole.subarray(0, 400_000));
  const r = await download(knownFileUrl(MODEL, hub.endpoint)!, dest, {
    sha256: KNOWN_FILES[MODEL].sha256,
    progress: false,
  });
  assert.equal(r.resumedFrom, 400_000);
  assert.equal(r.bytes, whole.length);
  assert.deepEqual(hub.seen.map((s) => [s.range, s.status]), [["bytes=400000-", 206]]);
  assert.deepEqual(await Deno.readFile(dest), whole);
});

Deno.test("download() restarts from zero when the server answers a Range request with 200", async () => {
  await using hub = loopbackHub({ honorRange: false });
  await using tmp = await tempDir("sqb-hub-test-");
  const dir = tmp.path;
  const whole = await Deno.readFile(sharedData(MODEL));
  const dest = `${dir}/m.bin`;
  // a partial file with wrong bytes: must be overwritten, not appended to
  await Deno.writeFile(dest + ".partial", new Uint8Array(300_000).fill(7));
  const r = await download(knownFileUrl(MODEL, hub.endpoint)!, dest, {
    sha256: KNOWN_FILES[MODEL].sha256,
    progress: false,
  });
  assert.equal(r.resumedFrom, 0);
  assert.deepEqual(hub.seen.map((s) => [s.range, s.status]), [["bytes=300000-", 200]]);
  assert.deepEqual(await Deno.readFile(dest), whole);
});

Deno.test("download() keeps the partial file when the connection drops, and a retry resumes it", async () => {
  await using tmp = await tempDir("sqb-hub-test-");
  const dir = tmp.path;
  const whole = await Deno.readFile(sharedData(MODEL));
  const dest = `${dir}/m.bin`;
  {
    await using hub = loopbackHub({ dropAfter: 500_000 });
    const url = knownFileUrl(MODEL, hub.endpoint)!;
    await assert.rejects(
      download(url, dest, { progress: false }),
      (e: Error) => {
        assert.ok(e instanceof DownloadError, String(e));
        assert.match(e.message, /interrupted after \d+ of 1056540 bytes/);
        assert.ok(e.message.includes(url));
        assert.ok(e.message.includes(dest + ".partial"));
        return true;
      },
    );
  }
  assert.equal(await exists(dest), false, "no file under the final name");
  const kept = (await Deno.stat(dest + ".partial")).size;
  assert.ok(kept > 0 && kept <= 500_000, `partial has ${kept} bytes`);
  assert.deepEqual(await Deno.readFile(dest + ".partial"), whole.subarray(0, kept));
  await using hub = loopbackHub();
  const r = await download(knownFileUrl(MODEL, hub.endpoint)!, dest, {
    sha256: KNOWN_FILES[MODEL].sha256,
    progress: false,
  });
  assert.equal(r.resumedFrom, kept);
  assert.deepEqual(hub.seen.map((s) => [s.range, s.status]), [[`bytes=${kept}-`, 206]]);
  assert.deepEqual(await Deno.readFile(dest), whole);
});

Deno.test("download() accepts a complete partial file when the server answers 416", async () => {
  await using hub = loopbackHub();
  await using tmp = await tempDir("sqb-hub-test-");
  const dir = tmp.path;
  const dest = `${dir}/tok.model`;
  await Deno.copyFile(sharedData("stories260K/tok512.model"), dest + ".partial");
  const r = await download(
    knownFileUrl("stories260K/tok512.model", hub.endpoint)!,
    dest,
    { sha256: KNOWN_FILES["stories260K/tok512.model"].sha256, progress: false },
  );
  assert.equal(r.bytes, 7645);
  assert.deepEqual(hub.seen.map((s) => s.status), [416]);
});

Deno.test("download() reports 404 with the URL and leaves no file", async () => {
  await using hub = loopbackHub();
  await using tmp = await tempDir("sqb-hub-test-");
  const dir = tmp.path;
  const url = hubUrl({ repo: "karpathy/tinyllamas", path: "no/such.bin" }, hub.endpoint);
  await assert.rejects(download(url, `${dir}/x.bin`, { progress: false }), (e: Error) => {
    assert.ok(e instanceof DownloadError);
    assert.equal(e.status, 404);
    assert.ok(e.message.includes(url), e.message);
    assert.match(e.message, /404 Not Found/);
    return true;
  });
  assert.equal(await exists(`${dir}/x.bin`), false);
  assert.equal(await exists(`${dir}/x.bin.partial`), false);
});

Deno.test("download() deletes a file whose sha256 does not match", async () => {
  await using hub = loopbackHub();
  await using tmp = await tempDir("sqb-hub-test-");
  const dir = tmp.path;
  const url = knownFileUrl("stories260K/tok512.bin", hub.endpoint)!;
  const wrong = "0".repeat(64);
  await assert.rejects(
    download(url, `${dir}/t.bin`, { sha256: wrong, progress: false }),
    new RegExp(`expected sha256 ${wrong}, found ${KNOWN_FILES["stories260K/tok512.bin"].sha256}`),
  );
  assert.equal(await exists(`${dir}/t.bin`), false);
  assert.equal(await exists(`${dir}/t.bin.partial`), false);
});

Deno.test("dataFile() offline never touches the network and names the file, place and URL", async () => {
  await using hub = loopbackHub();
  await using tmp = await tempDir("sqb-hub-test-");
  const dir = tmp.path;
  const rel = "wikitext-2-raw-v1/test-00000-of-00001.parquet";
  const check = (e: Error) => {
    assert.ok(e instanceof MissingDataError);
    assert.ok(e.message.includes(rel));
    assert.ok(e.message.includes(`${dir}/${rel}`));
    assert.ok(e.message.includes(
      `${hub.endpoint}/datasets/Salesforce/wikitext/resolve/main/${rel}`,
    ));
    assert.match(e.message, /offline/);
    return true;
  };
  await assert.rejects(dataFile(dir, rel, { offline: true, endpoint: hub.endpoint }), check);
  // HF_HUB_OFFLINE=1 alone has the same effect
  const env = (name: string) => name === "HF_HUB_OFFLINE" ? "1" : undefined;
  assert.equal(isOffline(false, env), true);
  await assert.rejects(dataFile(dir, rel, { endpoint: hub.endpoint, env }), check);
  assert.deepEqual(hub.seen, []);
  assert.equal(await exists(`${dir}/${rel}`), false);
});

Deno.test("dataFile() explains files that have no public download", async () => {
  await using tmp = await tempDir("sqb-hub-test-");
  const dir = tmp.path;
  await assert.rejects(
    dataFile(dir, "c4/c4-validation-2k.json.gz", { endpoint: "http://127.0.0.1:9" }),
    /no public download: copy it to .*c4\/c4-validation-2k\.json\.gz/,
  );
  await assert.rejects(dataFile(dir, "x/unknown.bin"), /not a known file/);
});

Deno.test("findDataFile() prefers the first present candidate, else downloads", async () => {
  await using hub = loopbackHub();
  await using tmp = await tempDir("sqb-hub-test-");
  const dir = tmp.path;
  const wt = ["wikitext-2-raw-v1/test-00000-of-00001.parquet", "wikitext-2-raw-v1/wiki.test.raw"];
  // present in the shared data dir: the Parquet file wins
  assert.deepEqual(await findDataFile(SHARED_DATA, wt, "WikiText-2 test", { offline: true }), {
    relPath: wt[0],
    path: `${SHARED_DATA.replace(/\/$/, "")}/${wt[0]}`,
  });
  // empty dir, offline: the error lists both candidates
  await assert.rejects(
    findDataFile(dir, wt, "WikiText-2 test", { offline: true, endpoint: hub.endpoint }),
    (e: Error) => {
      assert.ok(e instanceof MissingDataError);
      assert.ok(e.message.includes(wt[0]) && e.message.includes(wt[1]), e.message);
      assert.ok(e.message.includes(knownFileUrl(wt[0], hub.endpoint)!));
      return true;
    },
  );
  // empty dir, online: downloads the downloadable one
  const r = await findDataFile(dir, wt, "WikiText-2 test", {
    endpoint: hub.endpoint,
    progress: false,
  });
  assert.equal(r.relPath, wt[0]);
  assert.equal(await sha256File(r.path), KNOWN_FILES[wt[0]].sha256);
});

/** An environment lookup over a fixed table (the process environment stays untouched). */
const fakeEnv = (vars: Record<string, string>) => (name: string) => vars[name];

Deno.test("resolveDataDir() takes the flag, else SQB_DATA_DIR, else the XDG or home cache", () => {
  const all = { SQB_DATA_DIR: "/env/data/", XDG_CACHE_HOME: "/xdg", HOME: "/home/u" };
  assert.equal(resolveDataDir("/flag/dir", fakeEnv(all)), "/flag/dir");
  assert.equal(resolveDataDir(undefined, fakeEnv(all)), "/env/data");
  assert.equal(
    resolveDataDir(undefined, fakeEnv({ ...all, SQB_DATA_DIR: "" })),
    "/xdg/squeezebench",
  );
  assert.equal(
    resolveDataDir(undefined, fakeEnv({ HOME: "/home/u" })),
    "/home/u/.cache/squeezebench",
  );
  assert.throws(() => resolveDataDir(undefined, fakeEnv({})), MissingDataError);
});

Deno.test("isOffline() reads --offline and HF_HUB_OFFLINE", () => {
  assert.equal(isOffline(true, fakeEnv({})), true);
  assert.equal(isOffline(false, fakeEnv({})), false);
  assert.equal(isOffline(false, fakeEnv({ HF_HUB_OFFLINE: "0" })), false);
  assert.equal(isOffline(false, fakeEnv({ HF_HUB_OFFLINE: "true" })), true);
});

Deno.test("hubEndpoint() and hubUrl() follow HF_ENDPOINT and the hub's URL layout", () => {
  assert.equal(hubEndpoint(fakeEnv({})), "https://huggingface.co");
  assert.equal(
    knownFileUrl("c4/en/c4-validation.00000-of-00008.json.gz", hubEndpoint(fakeEnv({}))),
    "https://huggingface.co/datasets/allenai/c4/resolve/main/en/c4-validation.00000-of-00008.json.gz",
  );
  const mirror = hubEndpoint(fakeEnv({ HF_ENDPOINT: "http://mirror.local:8080/" }));
  assert.equal(
    knownFileUrl("stories260K/tok512.model", mirror),
    "http://mirror.local:8080/karpathy/tinyllamas/resolve/main/stories260K/tok512.model",
  );
  assert.equal(
    hubUrl(
      { repo: "datasets/Salesforce/wikitext", revision: "v1.0", path: "a b/c.parquet" },
      mirror,
    ),
    "http://mirror.local:8080/datasets/Salesforce/wikitext/resolve/v1.0/a%20b/c.parquet",
  );
});
