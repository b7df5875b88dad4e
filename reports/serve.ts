/**
 * Serves a report folder over HTTP on the loopback interface, read-only:
 * browsers refuse to start the SQL panel's worker and WebAssembly from
 * `file://`, so `deno task report --serve` serves the folder instead. Only
 * GET and HEAD of files inside the folder; no listing, no writes.
 *
 * @module
 */
import { extname, join, normalize, resolve, sep } from "node:path";

/** Content types of the files a report folder holds. */
export const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".wasm": "application/wasm",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".css": "text/css; charset=utf-8",
  ".parquet": "application/vnd.apache.parquet",
  ".duckdb": "application/octet-stream",
};

/** Options of {@linkcode serveReport}. */
export interface ServeOptions {
  /** TCP port; 0 picks a free one. @default {8000} */
  port?: number;
  /** Interface to listen on. @default {"127.0.0.1"} */
  hostname?: string;
  /** Stops the server when aborted. */
  signal?: AbortSignal;
}

/** A running report server. */
export interface ReportServer {
  /** e.g. "http://127.0.0.1:8000/". */
  url: string;
  /** Resolves when the server has stopped. */
  finished: Promise<void>;
  /** Stops the server. */
  shutdown(): Promise<void>;
}

/**
 * Serves `dir` (a report folder) on the loopback interface.
 *
 * @param dir the folder of `index.html`
 * @param options port, interface, abort signal
 * @returns the server and its address
 * @example
 * ```ts
 * const s = serveReport("out/report", { port: 0 });
 * console.log(`open ${s.url}`);
 * await s.shutdown();
 * ```
 */
export function serveReport(dir: string, options: ServeOptions = {}): ReportServer {
  const root = resolve(dir);
  const server = Deno.serve({
    port: options.port ?? 8000,
    hostname: options.hostname ?? "127.0.0.1",
    signal: options.signal,
    onListen: () => {},
  }, async (req) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("method not allowed", { status: 405, headers: { allow: "GET, HEAD" } });
    }
    let path = decodeURIComponent(new URL(req.url).pathname);
    if (path.endsWith("/")) path += "index.html";
    const file = normalize(join(root, path));
    if (file !== root && !file.startsWith(root + sep)) {
      return new Response("not found", { status: 404 });
    }
    try {
      const info = await Deno.stat(file);
      if (!info.isFile) return new Response("not found", { status: 404 });
      const headers = {
        "content-type": CONTENT_TYPES[extname(file)] ?? "application/octet-stream",
        "content-length": String(info.size),
        "cache-control": "no-cache",
      };
      if (req.method === "HEAD") return new Response(null, { headers });
      return new Response((await Deno.open(file)).readable, { headers });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return new Response("not found", { status: 404 });
      throw e;
    }
  });
  const addr = server.addr as Deno.NetAddr;
  return {
    url: `http://${addr.hostname}:${addr.port}/`,
    finished: server.finished,
    shutdown: () => server.shutdown(),
  };
}
