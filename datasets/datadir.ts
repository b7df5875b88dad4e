/**
 * The data dir: where models and datasets live, laid out exactly like
 * `../shared/data` (see its README), and the registry of files the project
 * knows how to fetch from their public homes on the Hugging Face hub.
 *
 * Resolution: the `--data-dir` flag, else `$SQB_DATA_DIR`, else a per-user
 * cache (`$XDG_CACHE_HOME/squeezebench`, else `~/.cache/squeezebench`).
 * A `--data-dir` the user names must exist ({@linkcode requireDataDir});
 * the default folders are created as needed. A missing known file is
 * downloaded (see {@linkcode download}) unless offline (`--offline` or
 * `HF_HUB_OFFLINE=1`); offline, or with the network unreachable, the error
 * names the missing file, where to put it and its URL.
 * {@linkcode requireDataFiles} resolves every file a run needs before the
 * run starts.
 *
 * Caches (Fisher information, quantized artifacts) never go into the data
 * dir, which may be read-only: they live in {@linkcode resolveCacheDir}.
 *
 * @module
 */
import {
  denoEnv,
  download,
  type DownloadProgress,
  type EnvLookup,
  hubEndpoint,
  hubUrl,
  UnreachableError,
} from "./hub.ts";
import { isFile } from "../model/tensor_file.ts";

/** Where a known file comes from. */
export interface KnownFile {
  /** Hub repository (`datasets/allenai/c4`, `karpathy/tinyllamas`); null = no public download. */
  repo: string | null;
  /** Revision on the hub. */
  revision: string;
  /** Path inside the repository (unused when `repo` is null). */
  path: string;
  /** sha256 (hex) where known; checked after every download. */
  sha256?: string;
  /** What the file is. */
  description: string;
}

/**
 * Files known by their path relative to the data dir. Checksums are those
 * listed in `../shared/data/README.md`.
 */
export const KNOWN_FILES: Readonly<Record<string, KnownFile>> = {
  "stories260K/stories260K.bin": {
    repo: "karpathy/tinyllamas",
    revision: "main",
    path: "stories260K/stories260K.bin",
    sha256: "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696",
    description: "llama2.c stories260K checkpoint",
  },
  "stories260K/tok512.bin": {
    repo: "karpathy/tinyllamas",
    revision: "main",
    path: "stories260K/tok512.bin",
    sha256: "037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312",
    description: "stories260K tokenizer (llama2.c tokenizer.bin)",
  },
  "stories260K/tok512.model": {
    repo: "karpathy/tinyllamas",
    revision: "main",
    path: "stories260K/tok512.model",
    sha256: "dfff07d929db979913f166ec94a6f5ecad4c70cfed8eb5c9cbe7e464455e46f5",
    description: "stories260K tokenizer (SentencePiece model)",
  },
  "wikitext-2-raw-v1/test-00000-of-00001.parquet": {
    repo: "datasets/Salesforce/wikitext",
    revision: "main",
    path: "wikitext-2-raw-v1/test-00000-of-00001.parquet",
    sha256: "11c1d37441258bc72e41e56d519e044d22bdbd876314c38ca4ed74d6e5cee15b",
    description: "WikiText-2 (raw) test split, 4,358 rows",
  },
  "wikitext-2-raw-v1/train-00000-of-00001.parquet": {
    repo: "datasets/Salesforce/wikitext",
    revision: "main",
    path: "wikitext-2-raw-v1/train-00000-of-00001.parquet",
    description: "WikiText-2 (raw) train split",
  },
  "wikitext-2-raw-v1/wiki.test.raw": {
    repo: null,
    revision: "main",
    path: "wikitext-2-raw-v1/wiki.test.raw",
    sha256: "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08",
    description: "WikiText-2 (raw) test split from wikitext-2-raw-v1.zip (not on the hub; " +
      "the Parquet file is the downloadable equivalent)",
  },
  "wikitext-2-raw-v1/wiki.train.raw": {
    repo: null,
    revision: "main",
    path: "wikitext-2-raw-v1/wiki.train.raw",
    description: "WikiText-2 (raw) train split from wikitext-2-raw-v1.zip (not on the hub; " +
      "the Parquet file is the downloadable equivalent)",
  },
  "c4/en/c4-validation.00000-of-00008.json.gz": {
    repo: "datasets/allenai/c4",
    revision: "main",
    path: "en/c4-validation.00000-of-00008.json.gz",
    description: "C4 (en) validation shard 0 of 8",
  },
  "c4/en/c4-train.00000-of-01024.json.gz": {
    repo: "datasets/allenai/c4",
    revision: "main",
    path: "en/c4-train.00000-of-01024.json.gz",
    description: "C4 (en) train shard 0 of 1024",
  },
  "c4/c4-validation-2k.json.gz": {
    repo: null,
    revision: "main",
    path: "c4/c4-validation-2k.json.gz",
    sha256: "4a9a0f0bc5fe2f477cdd0ce4f9c017f74e29ff91b18e257cbfdd71b453f69d35",
    description: "2,000 C4 validation documents, a local proxy for the head of " +
      "en/c4-validation.00000-of-00008.json.gz (no public download)",
  },
  "tinystories/tinystories-valid-head.txt": {
    repo: null,
    revision: "main",
    path: "tinystories/tinystories-valid-head.txt",
    description: "head of the TinyStories validation text (local file, no public download)",
  },
  "tinystories/TinyStories-valid.txt": {
    repo: "datasets/roneneldan/TinyStories",
    revision: "main",
    path: "TinyStories-valid.txt",
    description: "the public TinyStories validation text (stories separated by <|endoftext|> " +
      "lines); the tinystories set reads its head when tinystories-valid-head.txt is absent",
  },
  "tinystories/tinystories-train-sample.txt": {
    repo: null,
    revision: "main",
    path: "tinystories/tinystories-train-sample.txt",
    description: "2 MiB sample of the TinyStories train text (local file, no public download)",
  },
};

/** A data file that is missing and may not (or cannot) be downloaded. */
export class MissingDataError extends Error {
  override name = "MissingDataError";
}

/**
 * The data dir: `flag` (the `--data-dir` option), else `$SQB_DATA_DIR`, else
 * `$XDG_CACHE_HOME/squeezebench`, else `~/.cache/squeezebench`.
 *
 * @param flag value of `--data-dir`, if given
 * @param env environment lookup @default {the process environment}
 * @returns an absolute or relative folder path (not created here)
 * @throws {MissingDataError} when no flag, variable or home folder is available
 * @example
 * ```ts
 * resolveDataDir("../shared/data"); // "../shared/data"
 * resolveDataDir(); // e.g. "/home/me/.cache/squeezebench"
 * ```
 */
export function resolveDataDir(flag?: string, env: EnvLookup = denoEnv): string {
  if (flag !== undefined && flag !== "") return flag.replace(/\/+$/, "") || "/";
  const sqb = env("SQB_DATA_DIR");
  if (sqb) return sqb.replace(/\/+$/, "") || "/";
  const xdg = env("XDG_CACHE_HOME");
  if (xdg) return `${xdg.replace(/\/+$/, "")}/squeezebench`;
  const home = env("HOME") ?? env("USERPROFILE");
  if (!home) {
    throw new MissingDataError(
      "Cannot choose a data dir: no --data-dir, $SQB_DATA_DIR, $XDG_CACHE_HOME or $HOME",
    );
  }
  return `${home.replace(/\/+$/, "")}/.cache/squeezebench`;
}

/**
 * The cache dir, where derived files go (the Fisher cache; never the data
 * dir): `$SQB_CACHE_DIR`, else `~/.cache/squeezebench/cache`.
 *
 * @param env environment lookup @default {the process environment}
 * @returns a folder path (not created here)
 * @throws {MissingDataError} when neither the variable nor a home folder is available
 * @example
 * ```ts
 * resolveCacheDir(); // e.g. "/home/me/.cache/squeezebench/cache"
 * ```
 */
export function resolveCacheDir(env: EnvLookup = denoEnv): string {
  const sqb = env("SQB_CACHE_DIR");
  if (sqb) return sqb.replace(/\/+$/, "") || "/";
  const home = env("HOME") ?? env("USERPROFILE");
  if (!home) {
    throw new MissingDataError("Cannot choose a cache dir: no $SQB_CACHE_DIR or $HOME");
  }
  return `${home.replace(/\/+$/, "")}/.cache/squeezebench/cache`;
}

/**
 * {@linkcode resolveDataDir}, checked: a data dir the user named with
 * `--data-dir` must be an existing folder (a typo never becomes a fresh,
 * empty data dir that downloads everything); the default folders are
 * created later, as files are downloaded into them.
 *
 * @param flag value of `--data-dir`, if given
 * @param env environment lookup @default {the process environment}
 * @returns the data dir
 * @throws {MissingDataError} when `flag` names no folder
 * @example
 * ```ts
 * requireDataDir("../shared/data"); // "../shared/data"
 * requireDataDir("/nonexistent"); // throws: --data-dir /nonexistent does not exist
 * ```
 */
export function requireDataDir(flag?: string, env: EnvLookup = denoEnv): string {
  const dir = resolveDataDir(flag, env);
  if (flag === undefined || flag === "") return dir;
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(dir);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new MissingDataError(
        `--data-dir ${flag} does not exist; give an existing folder (laid out like ` +
          `../shared/data), or leave --data-dir out to use ${resolveDataDir(undefined, env)}`,
      );
    }
    throw e;
  }
  if (!info.isDirectory) throw new MissingDataError(`--data-dir ${flag} is not a folder`);
  return dir;
}

/**
 * Whether downloads are forbidden: the `--offline` flag, or `HF_HUB_OFFLINE`
 * set to 1/true/yes/on (as huggingface_hub reads it).
 *
 * @param flag value of `--offline` @default {false}
 * @param env environment lookup @default {the process environment}
 * @returns true when nothing may be downloaded
 * @example
 * ```ts
 * isOffline(true); // true
 * ```
 */
export function isOffline(flag = false, env: EnvLookup = denoEnv): boolean {
  if (flag) return true;
  const v = env("HF_HUB_OFFLINE")?.trim().toLowerCase();
  return v === "1" || v === "true" || v === "yes" || v === "on";
}

/**
 * The download URL of a known file, or null when it has no public download.
 *
 * @param relPath path relative to the data dir (a key of {@linkcode KNOWN_FILES})
 * @param endpoint hub endpoint @default {hubEndpoint()}
 * @returns the URL, or null
 * @example
 * ```ts
 * knownFileUrl("c4/en/c4-validation.00000-of-00008.json.gz", "https://huggingface.co");
 * // "https://huggingface.co/datasets/allenai/c4/resolve/main/en/c4-validation.00000-of-00008.json.gz"
 * ```
 */
export function knownFileUrl(relPath: string, endpoint: string = hubEndpoint()): string | null {
  const k = KNOWN_FILES[relPath];
  return k?.repo ? hubUrl({ repo: k.repo, revision: k.revision, path: k.path }, endpoint) : null;
}

/** Options of {@linkcode dataFile} and {@linkcode findDataFile}. */
export interface DataFileOptions {
  /** Never touch the network (also forced by `HF_HUB_OFFLINE=1`). @default {false} */
  offline?: boolean;
  /** Download progress sink (the CLI draws it); `false` or absent for none. */
  progress?: DownloadProgress | false;
  /** Hub endpoint. @default {hubEndpoint(env)} */
  endpoint?: string;
  /** Environment lookup (HF_HUB_OFFLINE, HF_ENDPOINT). @default {the process environment} */
  env?: EnvLookup;
}

/** Joins the data dir and a relative path. */
export function dataPath(dataDir: string, relPath: string): string {
  return `${dataDir.replace(/\/+$/, "")}/${relPath}`;
}

/**
 * The local path of `relPath` in the data dir, downloading it first when it
 * is missing, known and online.
 *
 * @param dataDir the data dir (see {@linkcode resolveDataDir})
 * @param relPath path relative to the data dir, e.g. `"stories260K/tok512.model"`
 * @param options offline mode, progress, endpoint
 * @returns the local path (the file exists)
 * @throws {MissingDataError} when missing and offline, unknown or not downloadable:
 *   the message names the file, where to put it and its URL
 * @throws {DownloadError} when the download fails
 * @example
 * ```ts
 * const path = await dataFile(resolveDataDir(), "stories260K/stories260K.bin", { offline: true });
 * ```
 */
export async function dataFile(
  dataDir: string,
  relPath: string,
  options: DataFileOptions = {},
): Promise<string> {
  const local = dataPath(dataDir, relPath);
  if (await isFile(local)) return local;
  const known = KNOWN_FILES[relPath];
  const env = options.env ?? denoEnv;
  const url = knownFileUrl(relPath, options.endpoint ?? hubEndpoint(env));
  if (!known) {
    throw new MissingDataError(
      `Missing data file ${relPath}: not found at ${local}, and it is not a known file ` +
        `(${Object.keys(KNOWN_FILES).length} known: see KNOWN_FILES in datasets/datadir.ts), ` +
        `so it cannot be downloaded`,
    );
  }
  if (url === null) {
    throw new MissingDataError(
      `Missing data file ${relPath} (${known.description}): not found at ${local}; ` +
        `it has no public download: copy it to ${local}`,
    );
  }
  if (isOffline(options.offline, env)) {
    throw new MissingDataError(
      `Missing data file ${relPath} (${known.description}): not found at ${local}, and ` +
        `offline mode (--offline or HF_HUB_OFFLINE=1) forbids downloading it. ` +
        `Put it at ${local}; its URL is ${url}`,
    );
  }
  try {
    await download(url, local, { sha256: known.sha256, progress: options.progress });
  } catch (e) {
    if (!(e instanceof UnreachableError)) throw e;
    throw new MissingDataError(
      `Missing data file ${relPath} (${known.description}): not found at ${local}, and the ` +
        `network is unreachable (${e.message}). Put it at ${local}; its URL is ${url}`,
    );
  }
  return local;
}

/**
 * The first of several candidate files that exists in the data dir; when
 * none does, downloads the first downloadable candidate (online).
 *
 * @param dataDir the data dir
 * @param candidates relative paths in order of preference
 * @param what what the files are, for the error message (e.g. "WikiText-2 test")
 * @param options offline mode, progress, endpoint
 * @returns relative and local path of the file used
 * @throws {MissingDataError} naming every candidate, where to put it and the URLs
 * @example
 * ```ts
 * const { relPath, path } = await findDataFile(dir, ["c4/en/c4-validation.00000-of-00008.json.gz",
 *   "c4/c4-validation-2k.json.gz"], "C4 validation", { offline: true });
 * ```
 */
export async function findDataFile(
  dataDir: string,
  candidates: readonly string[],
  what: string,
  options: DataFileOptions = {},
): Promise<{ relPath: string; path: string }> {
  for (const rel of candidates) {
    const local = dataPath(dataDir, rel);
    if (await isFile(local)) return { relPath: rel, path: local };
  }
  const env = options.env ?? denoEnv;
  const endpoint = options.endpoint ?? hubEndpoint(env);
  const downloadable = candidates.find((rel) => knownFileUrl(rel, endpoint) !== null);
  const where = candidates.map((rel) => {
    const url = knownFileUrl(rel, endpoint);
    return `${dataPath(dataDir, rel)}${url ? ` (from ${url})` : " (no public download)"}`;
  }).join(", or ");
  if (downloadable === undefined || isOffline(options.offline, env)) {
    const why = downloadable === undefined
      ? "none of them can be downloaded"
      : "offline mode (--offline or HF_HUB_OFFLINE=1) forbids downloading";
    throw new MissingDataError(
      `Missing ${what} data: none of ${candidates.join(", ")} is in the data dir ${dataDir}, ` +
        `and ${why}. Put one at ${where}`,
    );
  }
  return { relPath: downloadable, path: await dataFile(dataDir, downloadable, options) };
}

/** A file a run reads: what it is, and the paths (relative to the data dir) that can serve. */
export interface DataNeed {
  /** What the file is, for the error message (e.g. "WikiText-2 test"). */
  what: string;
  /** Relative paths in order of preference (see {@linkcode findDataFile}). */
  candidates: readonly string[];
}

/**
 * Resolves every file a run needs before the run starts: each is found in
 * the data dir or downloaded (online), so a missing file fails the command
 * at once rather than after minutes of work. Every file that cannot be had
 * is named in one error.
 *
 * @param dataDir the data dir
 * @param needs the files, each with its candidates
 * @param options offline mode, progress, endpoint
 * @returns relative and local path of the file used for each need, in order
 * @throws {MissingDataError} naming every missing file, where to put it and its URL
 * @example
 * ```ts
 * await requireDataFiles(dir, [
 *   { what: "stories260K checkpoint", candidates: ["stories260K/stories260K.bin"] },
 *   { what: "TinyStories validation", candidates: ["tinystories/tinystories-valid-head.txt"] },
 * ], { offline: true });
 * ```
 */
export async function requireDataFiles(
  dataDir: string,
  needs: readonly DataNeed[],
  options: DataFileOptions = {},
): Promise<{ relPath: string; path: string }[]> {
  const found: { relPath: string; path: string }[] = [];
  const missing: string[] = [];
  for (const need of needs) {
    try {
      found.push(await findDataFile(dataDir, need.candidates, need.what, options));
    } catch (e) {
      if (!(e instanceof MissingDataError)) throw e;
      missing.push(e.message);
    }
  }
  if (missing.length === 1) throw new MissingDataError(missing[0]);
  if (missing.length > 1) {
    throw new MissingDataError(
      `${missing.length} data files are missing:\n  - ${missing.join("\n  - ")}`,
    );
  }
  return found;
}
