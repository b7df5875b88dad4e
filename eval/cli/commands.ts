/**
 * The subcommands of the CLI. Each one parses its options into the library's
 * option objects (one source of defaults: quant/spec.ts; the quantization
 * options and their help are generated in ./quant_options.ts), runs, prints human-readable output and returns its results object.
 *
 * @module
 */
import type { Command } from "./options.ts";
import {
  checkOutputFile,
  checkStoreFile,
  choice,
  CliError,
  int,
  list,
  MODEL_HELP,
  MODEL_OPTIONS,
  num,
  optionLabel,
  str,
} from "./options.ts";
import {
  calibrationNeed,
  evalSetNeed,
  loadModelFromOptions,
  requireDataFromOptions,
} from "./load.ts";
import type { DataNeed } from "../../datasets/datadir.ts";
import { generate } from "../generate.ts";
import { perplexity } from "../perplexity.ts";
import { Progress } from "./progress.ts";
import { EVAL_SETS, type EvalSetName, loadEvalSet } from "../../datasets/eval_sets.ts";
import { METHODS, type QuantSpec, saveQuantized, variantName } from "../../quant/methods.ts";
import {
  QUANT_HELP,
  QUANT_OPTIONS,
  quantizedFromOptions,
  quantRequest,
  specFromOptions,
  workersOf,
} from "./quant_options.ts";
import { SWEEPS } from "./presets.ts";
import { BENCHES, runBench } from "../bench/bench.ts";

/** The calibration files the specs' methods read (none for fp32 and RTN). */
function calibNeeds(specs: readonly (QuantSpec | null)[]): DataNeed[] {
  const sources = new Set(specs.flatMap((s) => s && "calib" in s ? [s.calib.source] : []));
  return [...sources].map(calibrationNeed);
}

/**
 * The window length: `--seqlen` when given, else the max_seq_len of the
 * model evaluated (`what` names it in the message).
 */
function seqlenFor(given: number | undefined, maxSeqLen: number, what: string): number {
  if (given === undefined) return maxSeqLen;
  if (given > maxSeqLen) {
    throw new CliError(
      `--seqlen ${given} exceeds the model's max_seq_len ${maxSeqLen} (${what}); ` +
        `leave --seqlen out to use ${maxSeqLen}`,
    );
  }
  return given;
}

const generateCmd: Command = {
  summary: "generate text (greedy at --temperature 0)",
  options: {
    ...MODEL_OPTIONS,
    steps: { type: "string" },
    temperature: { type: "string" },
    prompt: { type: "string" },
    seed: { type: "string" },
  },
  help: `deno task generate [options]

  --steps N            positions to run, the prompt included (default 256, at most max_seq_len)
  --temperature T      0 = greedy (default 0)
  --prompt TEXT        text to start from (default: BOS only)
  --seed S             sampling seed (default 0)
${MODEL_HELP}`,
  async run(values) {
    const steps = int(values, "steps", 256, 1)!;
    const temperature = num(values, "temperature", 0)!;
    if (temperature < 0) throw new CliError(`--temperature must be ≥ 0, got ${temperature}`);
    const seed = int(values, "seed", 0, 0);
    const model = await loadModelFromOptions(values);
    const t0 = performance.now();
    const out = generate(model.weights, model.tokenizer, {
      steps,
      temperature,
      prompt: str(values, "prompt"),
      seed,
      onText: values.json ? undefined : (p) => Deno.stdout.writeSync(new TextEncoder().encode(p)),
    });
    const seconds = (performance.now() - t0) / 1000;
    if (!values.json) console.log();
    console.error(
      `${out.tokens.length - 1} tokens in ${seconds.toFixed(2)} s (${
        ((out.tokens.length - 1) / seconds).toFixed(1)
      } tok/s)`,
    );
    if (values.json) console.log(out.text);
    return { model: model.name, text: out.text, tokens: out.tokens, steps, temperature, seconds };
  },
};

const pplCmd: Command = {
  summary: "perplexity under the GPTQ protocol",
  options: {
    ...MODEL_OPTIONS,
    ...QUANT_OPTIONS,
    dataset: { type: "string" },
    seqlen: { type: "string" },
    limit: { type: "string" },
    quantized: { type: "string" },
    store: { type: "string" },
  },
  help: `deno task ppl [options]

  --dataset D          wikitext2 | c4 | c4-new | tinystories (default wikitext2)
  --seqlen N           window length (default: the model's max_seq_len)
  --limit N            evaluate only the first N windows (said in the output)
  --quantized FILE     evaluate a model written by "deno task quantize"
  --store FILE         also record the result in this DuckDB results store
${QUANT_HELP}
${MODEL_HELP}`,
  async run(values) {
    // Every option, output file and data file is checked before any work.
    const dataset = choice(values, "dataset", EVAL_SETS, "wikitext2");
    const seqlenGiven = int(values, "seqlen", undefined, 2);
    const limit = int(values, "limit", undefined, 1);
    const workers = workersOf(values);
    const storePath = str(values, "store");
    if (storePath) {
      await checkStoreFile("--store", storePath);
      await checkOutputFile("--store", storePath);
    }
    const file = str(values, "quantized");
    const { spec } = quantRequest(values); // stray quantization flags fail here, before any I/O
    const model = await loadModelFromOptions(values, [evalSetNeed(dataset), ...calibNeeds([spec])]);
    const fromFile = file ? await quantizedFromOptions(model, values) : null;
    // The window length defaults to the max_seq_len of the model evaluated (a
    // quantized file may come from another checkpoint than --model).
    const seqlen = fromFile
      ? seqlenFor(seqlenGiven, fromFile.weights.config.maxSeqLen, `the quantized model ${file}`)
      : seqlenFor(seqlenGiven, model.weights.config.maxSeqLen, model.name);
    const q = fromFile ?? await quantizedFromOptions(model, values);
    const set = await loadEvalSet(dataset as EvalSetName, {
      dataDir: model.dataDir,
      tokenizer: model.tokenizer,
      seqlen,
      offline: model.offline,
    });
    const weights = q ? q.weights : model.weights;
    const total = Math.min(Math.floor(set.tokens.length / seqlen), limit ?? Infinity);
    const bar = new Progress(`ppl ${dataset}`, total, "windows", seqlen, "tok");
    const variant = q ? variantName(q.spec) : "fp32";
    const r = await perplexity(weights, set.tokens, {
      seqlen,
      limit,
      workers,
      onProgress: (d) => bar.update(d),
      label: `${file ?? model.name} ${variant}`,
    });
    const limited = r.windows < r.windowsAvailable
      ? ` (--limit: ${r.windows} of ${r.windowsAvailable} windows)`
      : "";
    console.log(
      `${model.name} ${variant} ${dataset}: ppl ${
        r.ppl.toFixed(4)
      } over ${r.windows} windows of ${seqlen}${limited}`,
    );
    console.log(`protocol: ${set.protocol}\ndata: ${set.file}`);
    const result = {
      model: model.name,
      modelSha256: model.checkpointSha256,
      variant,
      quant: q
        ? { spec: q.spec, avgBits: q.avgBits, calibration: q.calibration, seconds: q.seconds }
        : null,
      dataset,
      protocol: set.protocol,
      dataFile: set.file,
      ppl: r.ppl,
      windows: r.windows,
      windowsAvailable: r.windowsAvailable,
      limited: r.windows < r.windowsAvailable,
      tokens: r.tokens,
      seqlen,
      seconds: r.seconds,
      tokensPerSecond: r.tokens / r.seconds,
    };
    if (storePath) {
      const { recordPpl } = await import("./sweep.ts");
      await recordPpl(storePath, model, q, set, r, Deno.args.join(" "));
    }
    return result;
  },
};

const quantizeCmd: Command = {
  summary: "quantize a model and write it to a file",
  options: { ...MODEL_OPTIONS, ...QUANT_OPTIONS, out: { type: "string" } },
  help: `deno task quantize --method M --bits B --out FILE [options]

  --out FILE           where to write the quantized model (squeezebench .sqbq format, see quant/qmodel.ts)
${QUANT_HELP}
${MODEL_HELP}`,
  async run(values) {
    const out = str(values, "out");
    if (!out) throw new CliError(`--out FILE is required`);
    if (!values.method) throw new CliError(`--method is required (${METHODS.join(", ")})`);
    await checkOutputFile("--out", out);
    const spec = specFromOptions(values);
    const model = await loadModelFromOptions(values, calibNeeds([spec]));
    const q = (await quantizedFromOptions(model, values))!;
    await saveQuantized(out, q, { path: model.checkpointPath, sha256: model.checkpointSha256 }, {
      model: model.name,
      command: Deno.args.join(" "), // the task name is Deno.args[0]
      created: new Date().toISOString(),
    });
    const bytes = (await Deno.stat(out)).size;
    console.log(
      `wrote ${out} (${bytes} bytes): ${variantName(q.spec)}, ${q.avgBits.toFixed(3)} average bits`,
    );
    return {
      out,
      bytes,
      variant: variantName(q.spec),
      spec: q.spec,
      avgBits: q.avgBits,
      calibration: q.calibration,
      seconds: q.seconds,
    };
  },
};

const evalCmd: Command = {
  summary: "every method × bit width: quantize, evaluate all datasets, store, report",
  options: {
    ...MODEL_OPTIONS,
    sweep: { type: "string" },
    datasets: { type: "string" },
    seqlen: { type: "string" },
    limit: { type: "string" },
    store: { type: "string" },
    report: { type: "string" },
    workers: { type: "string" },
    "no-resume": { type: "boolean" },
  },
  help: `deno task eval [options]

  --sweep NAME         ${Object.keys(SWEEPS).join(" | ")} (default paper: SqueezeLLM Table 1's rows)
  --datasets LIST      comma-separated (default wikitext2,c4,c4-new,tinystories)
  --seqlen N           window length (default: the model's max_seq_len)
  --limit N            only the first N windows of each dataset (said in the results)
  --store FILE         DuckDB results store (default out/results.duckdb)
  --report FILE        HTML report written at the end (default out/report.html)
  --no-resume          re-evaluate results already in the store
  --workers N          worker threads (default: number of cores)
${MODEL_HELP}`,
  async run(values) {
    // Every option, output file and data file is checked before any work.
    const sweep = choice(values, "sweep", Object.keys(SWEEPS) as (keyof typeof SWEEPS)[], "paper");
    const datasets = list(values, "datasets", [...EVAL_SETS]);
    for (const d of datasets) {
      if (!(EVAL_SETS as readonly string[]).includes(d)) {
        throw new CliError(`--datasets: unknown dataset "${d}" (${EVAL_SETS.join(", ")})`);
      }
    }
    const seqlenGiven = int(values, "seqlen", undefined, 2);
    const limit = int(values, "limit", undefined, 1);
    const workers = workersOf(values);
    const storePath = str(values, "store", "out/results.duckdb")!;
    const reportPath = str(values, "report", "out/report.html")!;
    await checkStoreFile(optionLabel(values, "store"), storePath);
    await checkOutputFile(optionLabel(values, "store"), storePath, { createDir: true });
    await checkOutputFile(optionLabel(values, "report"), reportPath, { createDir: true });
    const model = await loadModelFromOptions(
      values,
      (datasets as EvalSetName[]).map(evalSetNeed),
    );
    const seqlen = seqlenFor(seqlenGiven, model.weights.config.maxSeqLen, model.name);
    const specs = SWEEPS[sweep](model.weights.config);
    await requireDataFromOptions(values, calibNeeds(specs));
    const { runSweep } = await import("./sweep.ts");
    return await runSweep(model, {
      specs,
      datasets: datasets as EvalSetName[],
      seqlen,
      limit,
      storePath,
      reportPath,
      workers,
      resume: !values["no-resume"],
      command: Deno.args.join(" "), // the task name is Deno.args[0]
    });
  },
};

const benchCmd: Command = {
  summary: "benchmarks: forward | ppl | quant | squeezellm | kernels | decode | matmul",
  positionals: "NAME",
  options: {
    ...MODEL_OPTIONS,
    shapes: { type: "string" },
    formats: { type: "string" },
    bits: { type: "string" },
    batch: { type: "string" },
    runs: { type: "string" },
    tokens: { type: "string" },
    small: { type: "boolean" },
    workers: { type: "string" },
    store: { type: "string" },
  },
  help: `deno task bench NAME [options]

  forward      tokens/s of the prefill forward on stories260K, 512-token windows of real text
  ppl          full WikiText-2 perplexity of stories260K: wall time and tokens/s
  quant        RTN and GPTQ on LLaMA-7B-shaped layers; AWQ's search on a stories260K block
  squeezellm   k-means per row / per layer (3 and 4 bits) vs scikit-learn; Fisher windows/s
  kernels      WebGPU kernels: --shapes llama7b|stories260K|NxK,… --formats f16,uniform,lut,lut+sparse
               --bits 2,3,4 --batch 1,4,8 --runs N
  decode       stories260K decoding with every linear on the GPU in its quantized format: tokens/s,
               perplexity through the kernels and greedy text per format (--formats f32,rtn.w3,
               squeezellm.w3.s0.45,… --tokens N)
  matmul       GFLOP/s of the CPU matmul variants
  --small      a quick, smaller run (smoke test)
  --store FILE record kernel timings in this DuckDB results store
${MODEL_HELP}`,
  async run(values, positionals) {
    const name = positionals[0];
    if (!name || !(name in BENCHES)) {
      throw new CliError(
        `bench needs one of: ${Object.keys(BENCHES).join(", ")}${name ? ` (got "${name}")` : ""}`,
      );
    }
    return await runBench(name as keyof typeof BENCHES, values);
  },
};

const reportCmd: Command = {
  summary: "render the HTML report (and a markdown table) from a results store",
  options: { store: { type: "string" }, out: { type: "string" } },
  help: `deno task report [--store out/results.duckdb] [--out out/report.html]`,
  async run(values) {
    const storePath = str(values, "store", "out/results.duckdb")!;
    await checkStoreFile(optionLabel(values, "store"), storePath, { mustExist: true });
    const out = str(values, "out", "out/report.html")!;
    await checkOutputFile(optionLabel(values, "out"), out, { createDir: true });
    const { openForReport } = await import("../../reports/store.ts");
    const { markdownReport, renderReport, reportData } = await import("../../reports/report.ts");
    // Read-only: works on a read-only file and while a sweep is writing to it.
    const store = await openForReport(storePath, (s) => console.error(s));
    const data = await reportData(store);
    store.close();
    await Deno.mkdir(out.replace(/\/[^/]*$/, "") || ".", { recursive: true });
    await Deno.writeTextFile(out, await renderReport(data));
    console.log(`\n${markdownReport(data.tables)}\n\nwrote ${out}`);
    return {
      out,
      store: storePath,
      models: [...new Set(data.tables.map((t) => t.model))],
      tables: data.tables.map((t) => ({ title: t.title, seqlen: t.seqlen, columns: t.columns })),
    };
  },
};

/** Every subcommand by name. */
export const COMMANDS: Record<string, Command> = {
  eval: evalCmd,
  ppl: pplCmd,
  quantize: quantizeCmd,
  generate: generateCmd,
  bench: benchCmd,
  report: reportCmd,
};
