/**
 * `--model PATH|ORG/NAME[@REV]`: what a model argument names, decided by
 * content, not by file name, opened for block-by-block reads
 * ({@linkcode openModelSource}: a model/weight_source.ts `WeightSource`; GGUF
 * and Hugging Face tensors stay on disk until a block is used) or loaded
 * whole as fp32 {@linkcode LlamaWeights} ({@linkcode loadModelSource}).
 *
 * | it is                                   | detected by                              | loaded by |
 * | --------------------------------------- | ---------------------------------------- | --------- |
 * | a llama2.c checkpoint                   | magic "ak42", or a legacy header whose shapes give exactly the file size | model/checkpoint.ts |
 * | a GGUF file                             | magic "GGUF"                             | model/gguf.ts |
 * | a Hugging Face checkpoint folder        | a folder with config.json                | model/hf.ts |
 * | `ORG/NAME[@REV]` (no such path)         | the id's form                            | datasets/hf_cache.ts, then model/hf.ts |
 * | a squeezebench quantized model          | magic "SQBQ"                             | not here: evaluate it with `--quantized` |
 *
 * @module
 */
import type { LlamaWeights } from "../model/config.ts";
import { LLAMA2C_MAGIC, loadCheckpoint } from "../model/checkpoint.ts";
import { openGgufWeights } from "../model/gguf.ts";
import { type HfWeightSource, loadHfTokenizer, openHfWeights } from "../model/hf.ts";
import {
  materializeWeights,
  memoryWeightSource,
  type WeightSource,
} from "../model/weight_source.ts";
import { ModelFormatError } from "../model/tensor_file.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import {
  parseHfModelId,
  type ResolvedHfModel,
  resolveHfModel,
  type ResolveHfModelOptions,
} from "../datasets/hf_cache.ts";
import { QMODEL_MAGIC } from "../quant/qmodel.ts";
import { sha256File } from "../datasets/hub.ts";
import { sha256Hex } from "../reports/identity.ts";
import { join } from "node:path";

/** What a model path holds. */
export type ModelSourceKind = "llama2c" | "gguf" | "hf" | "safetensors" | "quantized";

/** A model opened for block-by-block reads, whatever its source. */
export interface OpenedModelSource {
  kind: "llama2c" | "gguf" | "hf";
  /** The file or folder the weights are read from (the cache snapshot for a model id). */
  path: string;
  /**
   * The weights in llama2.c's layout and RoPE convention, read block by block
   * (model/weight_source.ts); a llama2.c file is read whole (it is fp32 already).
   * Dispose it to close the files.
   */
  source: WeightSource;
  /** The tokenizer stored with the model (GGUF metadata, tokenizer.model / tokenizer.json); undefined for llama2.c files. */
  tokenizer: Tokenizer | undefined;
  /** For `ORG/NAME[@REV]`: repository, revision and commit used. */
  hub?: ResolvedHfModel;
  /** One line for logs: kind, path, and dtype or format version. */
  description: string;
}

/** A loaded model, whatever its source. */
export interface ModelSource extends Omit<OpenedModelSource, "source"> {
  /** fp32 weights in llama2.c's layout and RoPE convention. */
  weights: LlamaWeights;
}

/**
 * The kind of model at `path`, from its content.
 *
 * @param path a file or folder
 * @returns its kind
 * @throws {ModelFormatError} when it does not exist or is none of the kinds
 */
export async function detectModelSource(path: string): Promise<ModelSourceKind> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "no such file or folder" : (e as Error).message;
    throw new ModelFormatError(`Cannot read model ${path}: ${why}`);
  }
  if (info.isDirectory) {
    try {
      if ((await Deno.stat(`${path}/config.json`)).isFile) return "hf";
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    throw new ModelFormatError(
      `Model folder ${path} has no config.json: not a Hugging Face checkpoint folder`,
    );
  }
  const head = new Uint8Array(32);
  let n = 0;
  {
    using f = await Deno.open(path, { read: true });
    for (;;) {
      const r = await f.read(head.subarray(n));
      if (r === null || r === 0) break;
      n += r;
      if (n === head.length) break;
    }
  }
  const view = new DataView(head.buffer);
  const ascii = (a: number, b: number) => new TextDecoder().decode(head.subarray(a, b));
  if (n >= 4 && ascii(0, 4) === "GGUF") return "gguf";
  if (n >= 4 && ascii(0, 4) === QMODEL_MAGIC) return "quantized";
  if (n >= 4 && view.getUint32(0, true) === LLAMA2C_MAGIC) return "llama2c";
  if (n >= 9 && head[8] === 0x7b /* "{" */ && view.getBigUint64(0, true) < BigInt(info.size)) {
    return "safetensors";
  }
  const legacySize = n >= 28 ? legacyLlama2cSize(view) : -1;
  if (legacySize === info.size) return "llama2c";
  // A plausible legacy header with the wrong size is most likely a cut llama2.c file: say so.
  const cut = legacySize > 0
    ? `; read as a legacy llama2.c header it needs ${legacySize} bytes, file has ${info.size} ` +
      `(${legacySize > info.size ? "truncated" : "trailing bytes"})`
    : "";
  throw new ModelFormatError(
    `Cannot tell what model ${path} is (${info.size} bytes): not a llama2.c checkpoint, ` +
      `GGUF file, Hugging Face folder or squeezebench quantized model${cut}`,
  );
}

/**
 * The size a legacy llama2.c checkpoint with this header would have
 * (model/checkpoint.ts's layout), or -1 when the header is implausible.
 */
function legacyLlama2cSize(view: DataView): number {
  const v = Array.from({ length: 7 }, (_, i) => view.getInt32(4 * i, true));
  const [dim, hidden, L, heads, kvHeads, vocabSigned, seq] = v;
  const vocab = Math.abs(vocabSigned);
  if (![dim, hidden, L, heads, kvHeads, vocab, seq].every((x) => x > 0 && x <= 1 << 24)) return -1;
  if (dim % heads !== 0 || heads % kvHeads !== 0) return -1;
  const hs = dim / heads, kv = (dim * kvHeads) / heads;
  const floats = vocab * dim + L * (2 * dim + 2 * dim * dim + 2 * kv * dim + 3 * hidden * dim) +
    dim + seq * hs + (vocabSigned > 0 ? 0 : vocab * dim);
  return 28 + 4 * floats;
}

/** Options of {@linkcode loadModelSource}: how a model id is resolved. */
export type LoadModelSourceOptions = ResolveHfModelOptions;

/**
 * Opens `--model` for block-by-block reads: a llama2.c file, a GGUF file or
 * a Hugging Face folder (detected by content), or, when no such path exists,
 * `ORG/NAME[@REV]` from the Hugging Face cache (downloaded there when missing
 * and online). Only headers are read; tensors when the source is asked.
 *
 * @param pathOrId a path or a model id
 * @param options cache, offline mode, endpoint, token for model ids
 * @returns the open source (dispose `source`), tokenizer and where they came from
 * @throws {ModelFormatError} naming the file and what is wrong (a squeezebench
 *   quantized file: "evaluate it with --quantized")
 * @throws {CheckpointError} for a malformed llama2.c file
 * @throws {MissingDataError} for a model id missing offline
 * @example
 * ```ts
 * const m = await openModelSource("meta-llama/Llama-2-7b-hf", { offline: true });
 * using src = m.source;
 * const block0 = src.layer(0);
 * ```
 */
export async function openModelSource(
  pathOrId: string,
  options: LoadModelSourceOptions = {},
): Promise<OpenedModelSource> {
  if (!(await exists(pathOrId)) && parseHfModelId(pathOrId)) {
    const hub = await resolveHfModel(pathOrId, options);
    const m = await openHf(hub.dir);
    return {
      ...m,
      hub,
      description: `${hub.repo}@${hub.revision} (commit ${hub.commit.slice(0, 10)}, ` +
        `${m.source.architecture}, ${m.source.torchDtype ?? "dtype unstated"})`,
    };
  }
  const kind = await detectModelSource(pathOrId);
  switch (kind) {
    case "llama2c":
      return {
        kind,
        path: pathOrId,
        source: memoryWeightSource(await loadCheckpoint(pathOrId), pathOrId),
        tokenizer: undefined,
        description: `llama2.c checkpoint ${pathOrId}`,
      };
    case "gguf": {
      const source = openGgufWeights(pathOrId);
      return {
        kind,
        path: pathOrId,
        source,
        tokenizer: source.tokenizer,
        description: `GGUF v${source.version} ${pathOrId}`,
      };
    }
    case "hf": {
      const m = await openHf(pathOrId);
      return {
        ...m,
        description: `Hugging Face ${m.source.architecture} ${pathOrId} (${
          m.source.torchDtype ?? "dtype unstated"
        })`,
      };
    }
    case "safetensors":
      throw new ModelFormatError(
        `${pathOrId} is a bare safetensors file: pass the folder that holds it with its config.json`,
      );
    case "quantized":
      throw new ModelFormatError(
        `${pathOrId} is a squeezebench quantized model: evaluate it with --quantized ${pathOrId}`,
      );
  }
}

/** A Hugging Face folder opened, with its tokenizer (the source is closed if the tokenizer fails). */
async function openHf(
  dir: string,
): Promise<{ kind: "hf"; path: string; source: HfWeightSource; tokenizer: Tokenizer | undefined }> {
  const source = await openHfWeights(dir);
  try {
    const tokenizer = await loadHfTokenizer(source.path, source.config.vocabSize);
    return { kind: "hf", path: dir, source, tokenizer };
  } catch (e) {
    source[Symbol.dispose]();
    throw e;
  }
}

/**
 * Loads `--model` whole, in fp32 ({@linkcode openModelSource}, then every block read).
 *
 * @param pathOrId a path or a model id
 * @param options cache, offline mode, endpoint, token for model ids
 * @returns weights, tokenizer and where they came from
 * @throws what {@linkcode openModelSource} throws
 * @example
 * ```ts
 * const m = await loadModelSource("meta-llama/Llama-2-7b-hf", { offline: true });
 * const m2 = await loadModelSource("stories260K.gguf");
 * ```
 */
export async function loadModelSource(
  pathOrId: string,
  options: LoadModelSourceOptions = {},
): Promise<ModelSource> {
  const { source, ...rest } = await openModelSource(pathOrId, options);
  using src = source;
  return { ...rest, weights: materializeWeights(src) };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * The sha256 of a Hugging Face checkpoint folder (a model, or SqueezeLLM's
 * Fisher checkpoint): of the list of its config.json and weight files with
 * each file's own sha256 (sorted by name), so the same checkpoint gives the
 * same key wherever it is kept.
 *
 * @param dir the folder
 * @returns lowercase hex
 */
export async function hfFolderSha256(dir: string): Promise<string> {
  const names = [...Deno.readDirSync(dir)]
    .map((e) => e.name)
    .filter((n) => n === "config.json" || n.endsWith(".safetensors"))
    .sort();
  const lines: string[] = [];
  for (const n of names) lines.push(`${await sha256File(join(dir, n))}  ${n}`);
  return await sha256Hex(lines.join("\n") + "\n");
}
