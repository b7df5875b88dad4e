/**
 * `deno task fisher --out DIR`: SqueezeLLM's Fisher information of a model,
 * computed block by block (quant/fisher_blockwise.ts: one block in fp32 at
 * a time, the whole-model pass's numbers bit for bit) from the calibration
 * windows SqueezeLLM draws, written in the layout of SqueezeLLM's gradient
 * script (kssteven418/SqueezeLLM-gradients), so that `quantize`, `ppl` and
 * `eval` read it with `--fisher DIR`, here or on another machine.
 *
 * @module
 */
import { resolveSpec } from "../../quant/methods.ts";
import { writeFisherCheckpoint } from "../../quant/fisher_blockwise.ts";
import { drawCalibration } from "../pipeline.ts";
import { hfFolderSha256 } from "../model_source.ts";
import { calibrationNeed, openModelFromOptions } from "./load.ts";
import { CliError, type Command, MODEL_HELP, MODEL_OPTIONS, str } from "./options.ts";
import { progressBars } from "./progress.ts";
import { QUANT_OPTIONS, specFromOptions, workersOf } from "./quant_options.ts";
import { peakRssBytes } from "./quantize_file.ts";

/** The calibration flags of SqueezeLLM that decide its Fisher information. */
const CALIB_FLAGS = ["fisher-samples", "calib", "calib-seqlen", "seed"] as const;

/** The `fisher` subcommand. */
export const fisherCmd: Command = {
  summary: "SqueezeLLM's Fisher information, block by block, written for --fisher DIR",
  options: {
    ...MODEL_OPTIONS,
    ...Object.fromEntries(CALIB_FLAGS.map((f) => [f, QUANT_OPTIONS[f]])),
    out: { type: "string" },
    workers: { type: "string" },
  },
  help: `deno task fisher --out DIR [options]

  --out DIR            a new or empty folder: the Fisher information (Σ over windows of the squared
                       gradients of every linear weight) in SqueezeLLM-gradients' layout (config.json,
                       float32 safetensors, one shard per block); read it with --fisher DIR
  --fisher-samples N   calibration windows (default: SqueezeLLM's, 100)
  --calib SRC          calibration data (default c4)
  --calib-seqlen N     tokens per window (default: 512, SqueezeLLM-gradients' run.py, or the
                       model's max_seq_len if shorter)
  --seed S             seed of the calibration draw (default 0)
  --workers N          worker threads (default: the cores, for blocks large enough to pay for them);
                       the numbers do not depend on it
${MODEL_HELP}`,
  async run(values) {
    const out = str(values, "out");
    if (!out) throw new CliError(`--out DIR is required`);
    try {
      if ([...Deno.readDirSync(out)].length > 0) {
        throw new CliError(`--out ${out} is not empty; give a new or empty folder`);
      }
    } catch (e) {
      if (e instanceof Deno.errors.NotADirectory) throw new CliError(`--out ${out} is a file`);
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    // SqueezeLLM's spec carries the calibration request; the bit width does not enter the Fisher.
    const spec = specFromOptions({ ...values, method: "squeezellm", bits: "3" })!;
    if (!("calib" in spec)) throw new Error("squeezellm: no calibration request");
    const model = await openModelFromOptions(values, [calibrationNeed(spec.calib.source)]);
    using source = model.source;
    let resolved;
    try {
      resolved = resolveSpec(spec, source.config);
    } catch (e) {
      throw new CliError((e as Error).message);
    }
    const drawn = (await drawCalibration(source.config, resolved, {
      tokenizer: model.tokenizer!,
      dataDir: model.dataDir,
      offline: model.offline,
    }))!;
    console.error(`fisher: ${model.name}, ${drawn.text}, block by block`);
    const r = await writeFisherCheckpoint(out, source, drawn.windows, {
      onProgress: progressBars("fisher"),
      workers: values.workers === undefined ? undefined : workersOf(values),
    });
    const sha256 = await hfFolderSha256(out);
    const peak = peakRssBytes();
    console.log(
      `wrote ${out} (${r.bytes} bytes): ${r.windows} windows, mean loss ${r.meanLoss.toFixed(4)}, ${
        r.seconds.toFixed(1)
      } s, sha256 ${sha256.slice(0, 12)}…` +
        (peak === null ? "" : `, peak memory ${(peak / 2 ** 20).toFixed(0)} MiB`),
    );
    return {
      out,
      sha256,
      model: model.name,
      modelSha256: model.checkpointSha256,
      calibration: drawn.identity,
      windows: r.windows,
      meanLoss: r.meanLoss,
      seconds: r.seconds,
      bytes: r.bytes,
      scratchBytes: r.scratchBytes,
      peakRssBytes: peak,
    };
  },
};
