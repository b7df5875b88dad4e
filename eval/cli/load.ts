/**
 * Resolves the model options of the CLI (`--model`, `--tokenizer`,
 * `--data-dir`, `--offline`) to a loaded checkpoint and tokenizer, and names
 * the data files a command will read ({@linkcode evalSetNeed},
 * {@linkcode calibrationNeed}) so that they are all found or downloaded
 * before any work starts.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { hfFolderSha256, type OpenedModelSource, openModelSource } from "../model_source.ts";
import { parseHfModelId } from "../../datasets/hf_cache.ts";
import { type LlamaConfig, type LlamaWeights, parameterCount } from "../../model/config.ts";
import { materializeWeights, type WeightSource } from "../../model/weight_source.ts";
import { loadTokenizer, type Tokenizer } from "../../model/tokenizer.ts";
import {
  type DataNeed,
  isOffline,
  requireDataDir,
  requireDataFiles,
} from "../../datasets/datadir.ts";
import { CliError, str } from "./options.ts";
import { downloadBars } from "./progress.ts";
import { sha256File } from "../../datasets/hub.ts";
import type { EvalSetName } from "../../datasets/eval_sets.ts";
import { TINYSTORIES_VALID_FILES } from "../../datasets/eval_sets.ts";
import { TINYSTORIES_TRAIN_FILE } from "../../datasets/calibration.ts";
import { C4_PROXY_FILE, C4_TRAIN_FILE, C4_VALIDATION_FILES } from "../../datasets/c4.ts";
import { WIKITEXT2_TEST_FILES, WIKITEXT2_TRAIN_FILES } from "../../datasets/wikitext2.ts";
import { QMODEL_MAGIC } from "../../quant/qmodel.ts";

/** Models known by name: files relative to the data dir. */
export const KNOWN_MODELS: Record<string, { checkpoint: string; tokenizer: string }> = {
  stories260K: { checkpoint: "stories260K/stories260K.bin", tokenizer: "stories260K/tok512.model" },
};

/** The default model of every command. */
export const DEFAULT_MODEL = "stories260K";

/** A loaded model with where it came from. */
export interface LoadedModel extends Omit<OpenedModel, "source" | "tokenizer"> {
  config: LlamaConfig;
  weights: LlamaWeights;
  tokenizer: Tokenizer;
}

/** A model opened for block-by-block reads (eval/quantize_stream.ts), with where it came from. */
export interface OpenedModel {
  name: string;
  /** Dispose it to close the model's files. */
  source: WeightSource;
  /** Undefined only when not required ({@linkcode OpenModelOptions}) and none was found. */
  tokenizer: Tokenizer | undefined;
  checkpointPath: string;
  checkpointSha256: string;
  tokenizerPath: string;
  dataDir: string;
  offline: boolean;
}

/** The data files of evaluation set `name` (the candidates datasets/eval_sets.ts reads). */
export function evalSetNeed(name: EvalSetName): DataNeed {
  switch (name) {
    case "wikitext2":
      return { what: "WikiText-2 test", candidates: WIKITEXT2_TEST_FILES };
    case "c4":
    case "c4-new":
      return { what: "C4 validation", candidates: C4_VALIDATION_FILES };
    case "tinystories":
      return { what: "TinyStories validation", candidates: TINYSTORIES_VALID_FILES };
  }
}

/** The data files of calibration source `source` (those datasets/calibration.ts reads). */
export function calibrationNeed(source: "c4" | "wikitext2" | "tinystories"): DataNeed {
  switch (source) {
    case "c4":
      return { what: "C4 train (calibration)", candidates: [C4_TRAIN_FILE, C4_PROXY_FILE] };
    case "wikitext2":
      return { what: "WikiText-2 train (calibration)", candidates: WIKITEXT2_TRAIN_FILES };
    case "tinystories":
      return { what: "TinyStories train (calibration)", candidates: [TINYSTORIES_TRAIN_FILE] };
  }
}

/**
 * The data dir, offline mode and every data file a command needs, resolved
 * before any work: the files are found or downloaded now, and one error
 * names all that are missing. `paths[i]` is the file of `needs[i]` when the
 * needs are distinct (a repeated need is resolved once).
 */
export async function requireDataFromOptions(
  values: Record<string, unknown>,
  needs: readonly DataNeed[],
): Promise<{ dataDir: string; offline: boolean; paths: string[] }> {
  const dataDir = requireDataDir(str(values, "data-dir"));
  const offline = isOffline(values.offline === true);
  const seen = new Set<string>();
  const unique = needs.filter((n) => {
    const key = n.candidates.join("\n");
    return !seen.has(key) && seen.add(key);
  });
  const found = await requireDataFiles(dataDir, unique, { offline, progress: downloadBars() });
  return { dataDir, offline, paths: found.map((f) => f.path) };
}

/**
 * Loads the model named by the CLI options, whole, in fp32
 * ({@linkcode openModelFromOptions}, then every block read).
 */
export async function loadModelFromOptions(
  values: Record<string, unknown>,
  needs: readonly DataNeed[] = [],
): Promise<LoadedModel> {
  return loadOpenedModel(await openModelFromOptions(values, needs));
}

/**
 * An opened model loaded whole in fp32 (every block read), refused first when
 * it would not fit ({@linkcode checkFitsInMemory}); its files are closed.
 *
 * @param opened the model, with a tokenizer
 * @returns the model with its weights
 */
export function loadOpenedModel(opened: OpenedModel): LoadedModel {
  const { source, tokenizer, ...rest } = opened;
  using src = source;
  checkFitsInMemory(rest.checkpointPath, src.config);
  if (!tokenizer) throw new Error("openModelFromOptions() returned no tokenizer"); // required by default
  return { ...rest, tokenizer, config: src.config, weights: materializeWeights(src) };
}

/**
 * An opened model in the shape of a {@linkcode LoadedModel} for the passes
 * that work block by block (`eval --blockwise`): everything but `weights`,
 * which throws, since nothing there may hold the model whole.
 *
 * @param m the opened model, with a tokenizer
 * @returns the model; its blocks are read from `m.source`
 */
export function blockwiseModel(m: OpenedModel): LoadedModel {
  const { source, tokenizer, ...rest } = m;
  if (!tokenizer) throw new Error("blockwiseModel(): the model has no tokenizer");
  // not enumerable: spreading the model (`{ ...model }`) copies everything else
  return Object.defineProperty({ ...rest, tokenizer, config: source.config }, "weights", {
    get(): LlamaWeights {
      throw new Error(`${m.name} is read block by block here; nothing may load it whole`);
    },
  }) as LoadedModel;
}

/**
 * Refuses, before reading it, a model whose fp32 weights exceed the
 * machine's memory, naming the commands that work on it block by block
 * (instead of the process being killed for memory halfway).
 *
 * @param path the checkpoint, for the message
 * @param config its shapes
 * @throws {CliError} when 4 × its parameters ≥ the machine's total memory
 */
export function checkFitsInMemory(path: string, config: LlamaConfig): void {
  if (fitsInMemory(config)) return;
  const need = 4 * parameterCount(config), { total } = Deno.systemMemoryInfo();
  const gb = (b: number) => `${(b / 1e9).toFixed(1)} GB`;
  throw new CliError(
    `${path} needs ${gb(need)} in fp32, more than this machine's ${gb(total)} of memory; ` +
      `what runs block by block: quantize --method rtn | gptq | awq | squeezellm (without --outliers; ` +
      `its Fisher pass too), ppl --blockwise (a checkpoint or --quantized FILE) and ` +
      `eval --blockwise`,
  );
}

/**
 * Whether a model's fp32 weights fit in this machine's memory (4 × its
 * parameters below the total).
 *
 * @param config its shapes
 * @returns false when loading it whole would exhaust the memory
 */
export function fitsInMemory(config: LlamaConfig): boolean {
  return 4 * parameterCount(config) < Deno.systemMemoryInfo().total;
}

/** Options of {@linkcode openModelFromOptions}. */
export interface OpenModelOptions {
  /**
   * A tokenizer must be found (given, stored with the model or beside it);
   * false for commands that read no text (RTN, SqueezeLLM with --fisher),
   * so a checkpoint without one can be quantized. @default true
   */
  requireTokenizer?: boolean;
}

/**
 * Opens the model named by the CLI options for block-by-block reads. `needs`
 * are the other data files the command will read: they are found or
 * downloaded together with the model's, before the model is opened (one
 * error names every missing file).
 */
export async function openModelFromOptions(
  values: Record<string, unknown>,
  needs: readonly DataNeed[] = [],
  opts: OpenModelOptions = {},
): Promise<OpenedModel> {
  const name = str(values, "model", DEFAULT_MODEL)!;
  let tokenizerPath: string | undefined = str(values, "tokenizer");
  const known = KNOWN_MODELS[name];
  const modelNeeds: DataNeed[] = [];
  if (known) {
    modelNeeds.push({ what: `${name} checkpoint`, candidates: [known.checkpoint] });
    if (!tokenizerPath) {
      modelNeeds.push({ what: `${name} tokenizer`, candidates: [known.tokenizer] });
    }
  } else checkModelPath(name);
  const { dataDir, offline, paths } = await requireDataFromOptions(values, [
    ...modelNeeds,
    ...needs,
  ]);
  if (known) tokenizerPath ??= paths[1];
  const opened = await openModelSource(known ? paths[0] : name, {
    offline,
    progress: downloadBars(),
  });
  const { source } = opened;
  try {
    const checkpointPath = opened.path;
    let tokenizer: Tokenizer | undefined;
    tokenizerPath ??= opened.tokenizer ? undefined : findTokenizerBeside(checkpointPath);
    if (tokenizerPath) tokenizer = await loadTokenizer(tokenizerPath);
    else if (opened.tokenizer) {
      tokenizer = opened.tokenizer;
      tokenizerPath = `${checkpointPath} (its own tokenizer)`;
    } else if (opts.requireTokenizer ?? true) {
      throw new CliError(
        `no tokenizer with ${checkpointPath}, nor one (.model or tokenizer.bin) beside it; ` +
          `pass --tokenizer PATH`,
      );
    } else tokenizerPath = "none";
    if (tokenizer && tokenizer.vocabSize !== source.config.vocabSize) {
      throw new CliError(
        `tokenizer ${tokenizerPath} has ${tokenizer.vocabSize} pieces but ${checkpointPath} has vocab_size ` +
          `${source.config.vocabSize}; pass the matching --tokenizer`,
      );
    }
    return {
      name: known || opened.hub ? name : checkpointPath,
      source,
      tokenizer,
      checkpointPath,
      checkpointSha256: await modelSha256(opened.kind, checkpointPath),
      tokenizerPath,
      dataDir,
      offline,
    };
  } catch (e) {
    source[Symbol.dispose]();
    throw e;
  }
}

/**
 * Checks what `--model` names before any data is resolved: an existing file
 * or a Hugging Face folder (model/source.ts tells their kinds by content), or
 * else a Hugging Face model id `ORG/NAME[@REV]`. A squeezebench quantized
 * model (recognized by its magic, quant/qmodel.ts) is sent to `--quantized`.
 */
function checkModelPath(path: string): void {
  const known = Object.keys(KNOWN_MODELS).join(", ");
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory)) throw e;
    if (parseHfModelId(path)) return;
    throw new CliError(
      `--model "${path}" is neither a known model (${known}), an existing file or folder, ` +
        `nor a Hugging Face model id ORG/NAME[@REVISION]`,
    );
  }
  if (info.isDirectory) {
    try {
      if (Deno.statSync(join(path, "config.json")).isFile) return;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    throw new CliError(
      `--model "${path}" is a folder without config.json; give a Hugging Face checkpoint folder, ` +
        `a llama2.c or GGUF file, or a known model (${known})`,
    );
  }
  const head = new Uint8Array(QMODEL_MAGIC.length);
  using file = Deno.openSync(path, { read: true });
  const n = file.readSync(head) ?? 0;
  if (n === head.length && new TextDecoder().decode(head) === QMODEL_MAGIC) {
    throw new CliError(
      `--model "${path}" is a quantized model (squeezebench "${QMODEL_MAGIC}" file, written by ` +
        `"deno task quantize"), not a checkpoint: evaluate it with --quantized ${path} ` +
        `(--model names the checkpoint it was quantized from)`,
    );
  }
}

/**
 * The sha256 that identifies a model in result keys: of the file for a
 * llama2.c or GGUF checkpoint; for a Hugging Face folder
 * ({@linkcode hfFolderSha256}), of its config.json and weight files.
 */
async function modelSha256(kind: OpenedModelSource["kind"], path: string): Promise<string> {
  return kind === "hf" ? await hfFolderSha256(path) : await sha256File(path);
}

/** A tokenizer file in the folder of `checkpoint` (a .model first), or undefined. */
function findTokenizerBeside(checkpoint: string): string | undefined {
  const dir = dirname(checkpoint);
  const candidates = [...Deno.readDirSync(dir)]
    .map((e) => e.name)
    .filter((n) => n.endsWith(".model") || /^tok.*\.bin$/.test(n) || n === "tokenizer.bin")
    .sort();
  if (candidates.length === 0) return undefined;
  return join(dir, candidates.find((n) => n.endsWith(".model")) ?? candidates[0]);
}
