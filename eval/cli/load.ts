/**
 * Resolves the model options of the CLI (`--model`, `--tokenizer`,
 * `--data-dir`, `--offline`) to a loaded checkpoint and tokenizer.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { existsSync } from "node:fs";
import { loadCheckpoint } from "../../model/checkpoint.ts";
import type { LlamaWeights } from "../../model/config.ts";
import { loadTokenizer, type Tokenizer } from "../../model/tokenizer.ts";
import { dataFile, isOffline, resolveDataDir } from "../../datasets/datadir.ts";
import { CliError, str } from "./options.ts";
import { sha256File } from "../../datasets/hub.ts";

/** Models known by name: files relative to the data dir. */
export const KNOWN_MODELS: Record<string, { checkpoint: string; tokenizer: string }> = {
  stories260K: { checkpoint: "stories260K/stories260K.bin", tokenizer: "stories260K/tok512.model" },
};

/** The default model of every command. */
export const DEFAULT_MODEL = "stories260K";

/** A loaded model with where it came from. */
export interface LoadedModel {
  name: string;
  weights: LlamaWeights;
  tokenizer: Tokenizer;
  checkpointPath: string;
  checkpointSha256: string;
  tokenizerPath: string;
  dataDir: string;
  offline: boolean;
}

/** Loads the model named by the CLI options. */
export async function loadModelFromOptions(values: Record<string, unknown>): Promise<LoadedModel> {
  const dataDir = resolveDataDir(str(values, "data-dir"));
  const offline = isOffline(values.offline === true);
  const name = str(values, "model", DEFAULT_MODEL)!;
  let checkpointPath: string, tokenizerPath: string | undefined = str(values, "tokenizer");
  const known = KNOWN_MODELS[name];
  if (known) {
    checkpointPath = await dataFile(dataDir, known.checkpoint, { offline });
    tokenizerPath ??= await dataFile(dataDir, known.tokenizer, { offline });
  } else {
    if (!existsSync(name)) {
      throw new CliError(
        `--model "${name}" is neither a known model (${
          Object.keys(KNOWN_MODELS).join(", ")
        }) nor an existing file`,
      );
    }
    checkpointPath = name;
    tokenizerPath ??= findTokenizerBeside(name);
  }
  const [weights, tokenizer] = await Promise.all([
    loadCheckpoint(checkpointPath),
    loadTokenizer(tokenizerPath),
  ]);
  if (tokenizer.vocabSize !== weights.config.vocabSize) {
    throw new CliError(
      `tokenizer ${tokenizerPath} has ${tokenizer.vocabSize} pieces but ${checkpointPath} has vocab_size ` +
        `${weights.config.vocabSize}; pass the matching --tokenizer`,
    );
  }
  return {
    name: known ? name : checkpointPath,
    weights,
    tokenizer,
    checkpointPath,
    checkpointSha256: await sha256File(checkpointPath),
    tokenizerPath,
    dataDir,
    offline,
  };
}

function findTokenizerBeside(checkpoint: string): string {
  const dir = dirname(checkpoint);
  const candidates = [...Deno.readDirSync(dir)]
    .map((e) => e.name)
    .filter((n) => n.endsWith(".model") || /^tok.*\.bin$/.test(n) || n === "tokenizer.bin")
    .sort();
  if (candidates.length === 0) {
    throw new CliError(
      `no tokenizer (.model or tokenizer.bin) beside ${checkpoint}; pass --tokenizer PATH`,
    );
  }
  return join(dir, candidates.find((n) => n.endsWith(".model")) ?? candidates[0]);
}
