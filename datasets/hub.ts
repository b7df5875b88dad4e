/**
 * Downloads from the Hugging Face hub (or any server laid out like it):
 * `{endpoint}/{repo}/resolve/{revision}/{path}`, with `HF_ENDPOINT`
 * overriding the endpoint.
 *
 * A download writes `<file>.partial` and renames it only once it is complete
 * (and its sha256 matches, when known), so an interrupted download never
 * leaves a corrupt file under the final name. A later call resumes the
 * partial file with an HTTP `Range` request; a server that answers 200
 * instead of 206 gets the whole file again.
 *
 * @module
 */
import { createHash } from "node:crypto";

/** The public hub. */
export const DEFAULT_HUB_ENDPOINT = "https://huggingface.co";

/** One file in a hub repository. */
export interface HubFile {
  /** Repository as it appears in URLs: `karpathy/tinyllamas`, `datasets/allenai/c4`. */
  repo: string;
  /** Branch, tag or commit. @default {"main"} */
  revision?: string;
  /** Path of the file inside the repository. */
  path: string;
}

/** A download that failed: HTTP error, dropped connection or checksum mismatch. */
export class DownloadError extends Error {
  override name = "DownloadError";
  /**
   * @param message what happened, naming the URL
   * @param url the URL being downloaded
   * @param status the HTTP status, when the server answered
   */
  constructor(message: string, readonly url: string, readonly status?: number) {
    super(message);
  }
}

/** A download that never reached the server: no network, DNS failure, connection refused. */
export class UnreachableError extends DownloadError {
  override name = "UnreachableError";
}

/**
 * The hub endpoint: `HF_ENDPOINT` when set, else {@linkcode DEFAULT_HUB_ENDPOINT}.
 *
 * @param env environment lookup @default {the process environment}
 * @returns the endpoint without a trailing slash
 * @example
 * ```ts
 * hubEndpoint(); // "https://huggingface.co" unless HF_ENDPOINT is set
 * ```
 */
export function hubEndpoint(env: EnvLookup = denoEnv): string {
  const v = env("HF_ENDPOINT")?.trim();
  return (v ? v : DEFAULT_HUB_ENDPOINT).replace(/\/+$/, "");
}

/** Reads an environment variable (injectable so tests never mutate the process environment). */
export type EnvLookup = (name: string) => string | undefined;

/** The process environment. */
export const denoEnv: EnvLookup = (name) => Deno.env.get(name);

/**
 * The download URL of a hub file.
 *
 * @param file repository, revision and path
 * @param endpoint hub endpoint @default {hubEndpoint()}
 * @returns `{endpoint}/{repo}/resolve/{revision}/{path}`
 * @example
 * ```ts
 * hubUrl({ repo: "karpathy/tinyllamas", path: "stories260K/stories260K.bin" }, "https://huggingface.co");
 * // "https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/stories260K.bin"
 * ```
 */
export function hubUrl(file: HubFile, endpoint: string = hubEndpoint()): string {
  const enc = (p: string) => p.split("/").map(encodeURIComponent).join("/");
  return `${endpoint.replace(/\/+$/, "")}/${enc(file.repo)}/resolve/${
    encodeURIComponent(file.revision ?? "main")
  }/${enc(file.path)}`;
}

/**
 * Hex sha256 of a file, streamed (constant memory).
 *
 * @param path file to hash
 * @returns 64 lowercase hex digits
 * @example
 * ```ts
 * await sha256File("../shared/data/stories260K/tok512.model");
 * // "dfff07d929db979913f166ec94a6f5ecad4c70cfed8eb5c9cbe7e464455e46f5"
 * ```
 */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path, { read: true });
  for await (const chunk of file.readable) hash.update(chunk);
  return hash.digest("hex");
}

/**
 * Called as bytes arrive: `done` includes a resumed prefix; `total` is null
 * when unknown; `what` is the file's name. Library code only reports: the
 * CLI draws the bar (eval/cli/progress.ts `downloadBars`).
 */
export type DownloadProgress = (done: number, total: number | null, what: string) => void;

/** Options of {@linkcode download}. */
export interface DownloadOptions {
  /** Expected sha256 (hex); a mismatch deletes the download and throws. */
  sha256?: string;
  /** Progress sink; `false` or absent for none. */
  progress?: DownloadProgress | false;
  /** Aborts the transfer (the partial file is kept). */
  signal?: AbortSignal;
  /** Access token (`HF_TOKEN`), sent as `Authorization: Bearer <token>` for gated repositories. */
  token?: string;
}

/** What {@linkcode download} did. */
export interface DownloadResult {
  /** Final path. */
  path: string;
  /** File size in bytes. */
  bytes: number;
  /** Bytes taken over from an earlier `.partial` (0 when it started afresh). */
  resumedFrom: number;
  /** sha256 of the file (hex). */
  sha256: string;
}

/**
 * Downloads `url` to `dest` through `dest + ".partial"`, resuming a partial
 * file when the server honours `Range` (206), restarting when it answers 200.
 *
 * @param url file URL (see {@linkcode hubUrl})
 * @param dest final path; its folder is created
 * @param options checksum, progress, abort signal
 * @returns size, resumed prefix and sha256
 * @throws {DownloadError} on an HTTP error (404 names the URL), a dropped
 *   connection (the partial file is kept for a resume) or a sha256 mismatch
 * @example
 * ```ts
 * await download(hubUrl({ repo: "karpathy/tinyllamas", path: "stories260K/tok512.model" }),
 *   "/tmp/tok512.model", { sha256: "dfff07d9…" });
 * ```
 */
export async function download(
  url: string,
  dest: string,
  options: DownloadOptions = {},
): Promise<DownloadResult> {
  const partial = dest + ".partial";
  await Deno.mkdir(dirOf(dest), { recursive: true });
  const name = basename(dest);
  const sink = options.progress || undefined;
  const progress = sink && ((done: number, total: number | null) => sink(done, total, name));
  let have = await fileSize(partial);
  let res = await request(url, have, options.signal, options.token);
  if (res.status === 416 && have > 0) {
    // The range starts at or past the end: the partial file is complete or stale.
    const total = contentRangeTotal(res.headers.get("content-range"));
    await res.body?.cancel();
    if (total !== have) {
      await Deno.remove(partial);
      have = 0;
      res = await request(url, 0, options.signal, options.token);
    }
  }
  let resumedFrom = 0;
  if (res.status === 416 && have > 0) {
    resumedFrom = have; // the partial file already holds the whole file
  } else {
    if (!res.ok) {
      await res.body?.cancel();
      const what = res.status === 404
        ? "404 Not Found (no such file, revision or repository)"
        : `HTTP ${res.status} ${res.statusText}`;
      throw new DownloadError(`Cannot download ${url}: ${what}`, url, res.status);
    }
    let total: number | null;
    let append: boolean;
    if (res.status === 206 && have > 0) {
      const start = contentRangeStart(res.headers.get("content-range"));
      if (start !== have) {
        await res.body?.cancel();
        throw new DownloadError(
          `Cannot resume ${url}: asked for bytes ${have}-, server sent Content-Range ` +
            `"${res.headers.get("content-range")}"; delete ${partial} to restart`,
          url,
          206,
        );
      }
      total = contentRangeTotal(res.headers.get("content-range"));
      append = true;
      resumedFrom = have;
    } else {
      // 200: the server ignored the range (or there was none): start afresh.
      const len = res.headers.get("content-length");
      total = len !== null ? Number(len) : null;
      append = false;
      have = 0;
    }
    await receive(res, partial, append, have, total, url, progress);
  }
  const sha256 = await sha256File(partial);
  if (options.sha256 && sha256 !== options.sha256.toLowerCase()) {
    await Deno.remove(partial);
    throw new DownloadError(
      `Checksum mismatch for ${url}: expected sha256 ${options.sha256}, found ${sha256}; ` +
        `the download was deleted`,
      url,
    );
  }
  await Deno.rename(partial, dest);
  return { path: dest, bytes: await fileSize(dest), resumedFrom, sha256 };
}

async function request(
  url: string,
  from: number,
  signal?: AbortSignal,
  token?: string,
): Promise<Response> {
  const headers: Record<string, string> = {};
  if (from > 0) headers["Range"] = `bytes=${from}-`;
  if (token) headers["Authorization"] = `Bearer ${token}`;
  try {
    return await fetch(url, { headers, signal, redirect: "follow" });
  } catch (e) {
    const Err = signal?.aborted ? DownloadError : UnreachableError;
    throw new Err(`Cannot download ${url}: ${(e as Error).message}`, url);
  }
}

/** Streams the body into `partial`; on a dropped connection the bytes so far stay on disk. */
async function receive(
  res: Response,
  partial: string,
  append: boolean,
  have: number,
  total: number | null,
  url: string,
  progress: ((done: number, total: number | null) => void) | undefined,
): Promise<void> {
  using file = await Deno.open(partial, {
    write: true,
    create: true,
    append,
    truncate: !append,
  });
  let done = have;
  progress?.(done, total);
  if (!res.body) throw new DownloadError(`Cannot download ${url}: response has no body`, url);
  try {
    for await (const chunk of res.body) {
      let off = 0;
      while (off < chunk.length) off += await file.write(chunk.subarray(off));
      done += chunk.length;
      progress?.(done, total);
    }
  } catch (e) {
    throw new DownloadError(
      `Download of ${url} interrupted after ${done}${total !== null ? ` of ${total}` : ""} bytes ` +
        `(${
          (e as Error).message
        }); the partial file ${partial} is kept and the next attempt resumes it`,
      url,
    );
  }
  if (total !== null && done !== total) {
    throw new DownloadError(
      `Download of ${url} ended after ${done} of ${total} bytes; the partial file ${partial} ` +
        `is kept and the next attempt resumes it`,
      url,
    );
  }
}

function contentRangeStart(h: string | null): number | null {
  const m = h?.match(/^bytes (\d+)-\d+\/(\d+|\*)$/);
  return m ? Number(m[1]) : null;
}

function contentRangeTotal(h: string | null): number | null {
  const m = h?.match(/\/(\d+)$/);
  return m ? Number(m[1]) : null;
}

async function fileSize(path: string): Promise<number> {
  try {
    return (await Deno.stat(path)).size;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return 0;
    throw e;
  }
}

function dirOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i > 0 ? path.slice(0, i) : i === 0 ? "/" : ".";
}

function basename(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}
