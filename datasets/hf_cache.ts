/**
 * Hugging Face model ids (`ORG/NAME[@REVISION]`) resolved in the cache that
 * Python's huggingface_hub writes, so a model downloaded with
 * `huggingface-cli download` is used in place, and downloaded into that same
 * cache when missing.
 *
 * Cache layout (huggingface_hub `file_download.py`):
 *
 * ```
 * $HF_HUB_CACHE (else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub)
 *   models--ORG--NAME/
 *     refs/main                 the commit hash "main" points to (no newline)
 *     snapshots/<commit>/       the repository's files at that commit
 *     blobs/                    (huggingface_hub's content store; snapshot files link into it)
 * ```
 *
 * A 40-hex revision names a snapshot directly; any other revision (branch or
 * tag) is looked up in `refs/`. Downloads go through datasets/hub.ts
 * (resumable `.partial` files, `HF_ENDPOINT`, the token as
 * `Authorization: Bearer`) and are written as plain files in
 * `snapshots/<commit>/`, with `refs/<revision>` recording the commit:
 * huggingface_hub reads such files like its own links. Only the files a
 * LLaMA checkpoint needs are fetched: config.json, the safetensors (single or
 * index + shards) and the tokenizer files.
 *
 * @module
 */
import {
  denoEnv,
  download,
  DownloadError,
  type DownloadProgress,
  type EnvLookup,
  hubEndpoint,
  hubUrl,
  UnreachableError,
} from "./hub.ts";
import { isOffline, MissingDataError } from "./datadir.ts";
import { isFile } from "../model/tensor_file.ts";

/** A parsed model id. */
export interface HfModelId {
  /** `ORG/NAME`. */
  repo: string;
  /** Branch, tag or commit. @default "main" */
  revision: string;
}

const ID_PART = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const COMMIT = /^[0-9a-f]{40}$/;

/**
 * Parses `ORG/NAME[@REVISION]`; null when `id` is not of that form.
 *
 * @param id the model id
 * @returns repo and revision, or null
 * @example
 * ```ts
 * parseHfModelId("meta-llama/Llama-2-7b-hf@main"); // { repo: "meta-llama/Llama-2-7b-hf", revision: "main" }
 * ```
 */
export function parseHfModelId(id: string): HfModelId | null {
  const at = id.indexOf("@");
  const repo = at < 0 ? id : id.slice(0, at);
  const revision = at < 0 ? "main" : id.slice(at + 1);
  const parts = repo.split("/");
  if (parts.length !== 2 || !parts.every((p) => ID_PART.test(p) && !p.includes(".."))) return null;
  if (revision === "" || revision.split("/").some((p) => p === "" || p === "." || p === "..")) {
    return null;
  }
  return { repo, revision };
}

/**
 * The hub cache folder: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
 * `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
 *
 * @param env environment lookup @default {the process environment}
 * @returns the folder (not created here)
 * @throws {MissingDataError} when no variable or home folder is set
 */
export function hfHubCache(env: EnvLookup = denoEnv): string {
  const strip = (p: string) => p.replace(/\/+$/, "") || "/";
  const hub = env("HF_HUB_CACHE");
  if (hub) return strip(hub);
  return `${hfHome(env)}/hub`;
}

function hfHome(env: EnvLookup): string {
  const strip = (p: string) => p.replace(/\/+$/, "") || "/";
  const home = env("HF_HOME");
  if (home) return strip(home);
  const xdg = env("XDG_CACHE_HOME");
  if (xdg) return `${strip(xdg)}/huggingface`;
  const user = env("HOME") ?? env("USERPROFILE");
  if (!user) {
    throw new MissingDataError(
      "Cannot locate the Hugging Face cache: no $HF_HUB_CACHE, $HF_HOME, $XDG_CACHE_HOME or $HOME",
    );
  }
  return `${strip(user)}/.cache/huggingface`;
}

/**
 * The access token: `$HF_TOKEN`, else the file `huggingface-cli login` writes
 * (`$HF_TOKEN_PATH`, else `$HF_HOME/token`); undefined when there is none.
 *
 * @param env environment lookup @default {the process environment}
 * @returns the token or undefined
 */
export function hfToken(env: EnvLookup = denoEnv): string | undefined {
  const t = env("HF_TOKEN")?.trim();
  if (t) return t;
  let path: string;
  try {
    path = env("HF_TOKEN_PATH") ?? `${hfHome(env)}/token`;
  } catch (e) {
    if (e instanceof MissingDataError) return undefined; // no home: no token file either
    throw e;
  }
  try {
    return Deno.readTextFileSync(path).trim() || undefined;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/** The cache folder of one repository: `models--ORG--NAME`. */
export function repoCacheDir(cache: string, repo: string): string {
  return `${cache}/models--${repo.replaceAll("/", "--")}`;
}

/** Options of {@linkcode resolveHfModel}. */
export interface ResolveHfModelOptions {
  /** Never touch the network (also forced by `HF_HUB_OFFLINE=1`). @default {false} */
  offline?: boolean;
  /** Environment (HF_HUB_CACHE, HF_HOME, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE). @default {the process environment} */
  env?: EnvLookup;
  /** The cache folder. @default {hfHubCache(env)} */
  cacheDir?: string;
  /** Hub endpoint. @default {hubEndpoint(env)} */
  endpoint?: string;
  /** Access token. @default {hfToken(env)} */
  token?: string;
  /** Download progress sink. */
  progress?: DownloadProgress | false;
}

/** What {@linkcode resolveHfModel} found. */
export interface ResolvedHfModel {
  /** The snapshot folder: a Hugging Face checkpoint folder. */
  dir: string;
  repo: string;
  revision: string;
  commit: string;
  /** Files fetched by this call (empty when everything was cached). */
  downloaded: string[];
}

/**
 * The local checkpoint folder of `ORG/NAME[@REVISION]`: the cached snapshot
 * when it holds config.json and the safetensors, else (online) a download
 * of the missing files into the cache.
 *
 * @param id `ORG/NAME[@REVISION]`
 * @param options offline mode, environment, cache folder, endpoint, token
 * @returns the snapshot folder and the commit
 * @throws {MissingDataError} when missing and offline: names the missing file and where it was looked for
 * @throws {DownloadError} when the hub refuses (401/403: names HF_TOKEN; 404: no such repo or revision)
 * @example
 * ```ts
 * const { dir } = await resolveHfModel("meta-llama/Llama-2-7b-hf", { offline: true });
 * ```
 */
export async function resolveHfModel(
  id: string,
  options: ResolveHfModelOptions = {},
): Promise<ResolvedHfModel> {
  const parsed = parseHfModelId(id);
  if (!parsed) {
    throw new MissingDataError(`"${id}" is not a Hugging Face model id (ORG/NAME[@REVISION])`);
  }
  const { repo, revision } = parsed;
  const env = options.env ?? denoEnv;
  const cache = options.cacheDir ?? hfHubCache(env);
  const root = repoCacheDir(cache, repo);
  let commit = COMMIT.test(revision) ? revision : readRef(root, revision);
  if (commit) {
    const missing = missingFiles(`${root}/snapshots/${commit}`);
    if (missing.length === 0) {
      return { dir: `${root}/snapshots/${commit}`, repo, revision, commit, downloaded: [] };
    }
    if (isOffline(options.offline, env)) {
      throw new MissingDataError(
        `Model ${repo}@${revision} is incomplete in the Hugging Face cache: ${
          missing.join(", ")
        } not found, and offline mode (--offline or HF_HUB_OFFLINE=1) forbids downloading it`,
      );
    }
  } else if (isOffline(options.offline, env)) {
    throw new MissingDataError(
      `Model ${repo}@${revision} is not in the Hugging Face cache: ${root}/refs/${revision} ` +
        `not found, and offline mode (--offline or HF_HUB_OFFLINE=1) forbids downloading it ` +
        `(with Python: huggingface-cli download ${repo} --revision ${revision})`,
    );
  }
  const endpoint = options.endpoint ?? hubEndpoint(env);
  const token = options.token ?? hfToken(env);
  const info = await repoInfo(endpoint, repo, revision, token);
  commit = info.sha;
  if (!COMMIT.test(revision)) {
    await Deno.mkdir(dirOf(`${root}/refs/${revision}`), { recursive: true });
    await Deno.writeTextFile(`${root}/refs/${revision}`, commit);
  }
  const dir = `${root}/snapshots/${commit}`;
  const listed = new Set(info.files);
  const downloaded: string[] = [];
  const fetchFile = async (path: string) => {
    if (await isFile(`${dir}/${path}`)) return;
    const url = hubUrl({ repo, revision: commit!, path }, endpoint);
    try {
      await download(url, `${dir}/${path}`, { token, progress: options.progress });
    } catch (e) {
      if (e instanceof DownloadError && (e.status === 401 || e.status === 403)) {
        throw authError(e, repo, token);
      }
      throw e;
    }
    downloaded.push(path);
  };
  if (!listed.has("config.json")) {
    throw new MissingDataError(`${repo}@${revision} has no config.json: not a transformers model`);
  }
  await fetchFile("config.json");
  if (listed.has("model.safetensors.index.json")) {
    await fetchFile("model.safetensors.index.json");
    for (const shard of shardsOf(`${dir}/model.safetensors.index.json`)) await fetchFile(shard);
  } else if (listed.has("model.safetensors")) {
    await fetchFile("model.safetensors");
  } else {
    throw new MissingDataError(
      `${repo}@${revision} has no model.safetensors or model.safetensors.index.json ` +
        `(only safetensors weights are read; files: ${[...listed].slice(0, 20).join(", ")})`,
    );
  }
  for (const f of ["tokenizer.model", "tokenizer.json", "tokenizer_config.json"]) {
    if (listed.has(f)) await fetchFile(f);
  }
  return { dir, repo, revision, commit, downloaded };
}

/** The commit `refs/<revision>` names, or undefined. */
function readRef(root: string, revision: string): string | undefined {
  try {
    const c = Deno.readTextFileSync(`${root}/refs/${revision}`).trim();
    return COMMIT.test(c) ? c : undefined;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/** The files a checkpoint folder lacks: config.json, the safetensors (index + shards). */
function missingFiles(dir: string): string[] {
  const has = (f: string) => {
    try {
      return Deno.statSync(`${dir}/${f}`).isFile;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return false;
      throw e;
    }
  };
  const missing: string[] = [];
  if (!has("config.json")) missing.push(`${dir}/config.json`);
  if (has("model.safetensors.index.json")) {
    for (const s of shardsOf(`${dir}/model.safetensors.index.json`)) {
      if (!has(s)) missing.push(`${dir}/${s}`);
    }
  } else if (!has("model.safetensors")) {
    missing.push(`${dir}/model.safetensors (or model.safetensors.index.json)`);
  }
  return missing;
}

/** Shard names in a safetensors index (plain file names only). */
function shardsOf(indexPath: string): string[] {
  let map: unknown;
  try {
    map = JSON.parse(Deno.readTextFileSync(indexPath)).weight_map;
  } catch (e) {
    throw new MissingDataError(`Cannot read ${indexPath}: ${(e as Error).message}`);
  }
  if (typeof map !== "object" || map === null) {
    throw new MissingDataError(`${indexPath} has no weight_map object`);
  }
  const shards = new Set<string>();
  for (const v of Object.values(map)) {
    if (typeof v !== "string" || !/^[^/\\]+\.safetensors$/.test(v) || v.startsWith(".")) {
      throw new MissingDataError(`${indexPath} names shard ${JSON.stringify(v)}, not a file name`);
    }
    shards.add(v);
  }
  return [...shards].sort();
}

/** The hub's answer to `GET /api/models/{repo}/revision/{revision}`. */
async function repoInfo(
  endpoint: string,
  repo: string,
  revision: string,
  token: string | undefined,
): Promise<{ sha: string; files: string[] }> {
  const url = `${endpoint.replace(/\/+$/, "")}/api/models/${
    repo.split("/").map(encodeURIComponent).join("/")
  }/revision/${encodeURIComponent(revision)}`;
  const headers: Record<string, string> = {};
  if (token) headers["Authorization"] = `Bearer ${token}`;
  let res: Response;
  try {
    res = await fetch(url, { headers, redirect: "follow" });
  } catch (e) {
    throw new UnreachableError(`Cannot reach ${url}: ${(e as Error).message}`, url);
  }
  if (res.status === 401 || res.status === 403) {
    await res.body?.cancel();
    throw authError(
      new DownloadError(`Cannot read ${url}: HTTP ${res.status}`, url, res.status),
      repo,
      token,
    );
  }
  if (!res.ok) {
    await res.body?.cancel();
    const what = res.status === 404 ? "404 (no such repository or revision)" : `HTTP ${res.status}`;
    throw new DownloadError(`Cannot read ${url}: ${what}`, url, res.status);
  }
  const body = await res.json() as { sha?: unknown; siblings?: { rfilename?: unknown }[] };
  if (typeof body.sha !== "string" || !COMMIT.test(body.sha) || !Array.isArray(body.siblings)) {
    throw new DownloadError(`Cannot read ${url}: no commit sha and file list in the answer`, url);
  }
  const files = body.siblings.map((s) => s.rfilename).filter((f): f is string =>
    typeof f === "string"
  );
  return { sha: body.sha, files };
}

function authError(e: DownloadError, repo: string, token: string | undefined): DownloadError {
  const hint = token
    ? "the token in HF_TOKEN (or the saved login) does not grant access: accept the model's " +
      "license on its page with that account"
    : "the repository is gated or private: set HF_TOKEN to an access token (or run " +
      "huggingface-cli login) after accepting its license";
  return new DownloadError(`${e.message}: ${repo}: ${hint}`, e.url, e.status);
}

function dirOf(path: string): string {
  return path.slice(0, path.lastIndexOf("/")) || "/";
}
