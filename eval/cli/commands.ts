/**
 * The subcommands of the CLI. Each one parses its options into the library's
 * option objects (one source of defaults: quant/methods.ts and the modules it
 * calls), runs, prints human-readable output and returns its results object.
 *
 * @module
 */
import type { Command } from "./options.ts";
import { choice, CliError, int, list, MODEL_HELP, MODEL_OPTIONS, num, str } from "./options.ts";
import { type LoadedModel, loadModelFromOptions } from "./load.ts";
import { generate } from "../generate.ts";
import { perplexity } from "../perplexity.ts";
import { Progress } from "./progress.ts";
import { EVAL_SETS, type EvalSetName, loadEvalSet } from "../../datasets/eval_sets.ts";
import {
  CALIB_SOURCES,
  type CalibSource,
  defaultSpec,
  loadQuantized,
  METHODS,
  type QuantizedModel,
  quantizeModel,
  type QuantSpec,
  saveQuantized,
  variantName,
} from "../../quant/methods.ts";
import { SWEEPS } from "./presets.ts";
import { BENCHES, runBench } from "../bench/bench.ts";

const QUANT_OPTIONS = {
  method: { type: "string" },
  bits: { type: "string" },
  group: { type: "string" },
  sym: { type: "boolean" },
  "act-order": { type: "boolean" },
  "static-groups": { type: "boolean" },
  "no-true-sequential": { type: "boolean" },
  calib: { type: "string" },
  nsamples: { type: "string" },
  seed: { type: "string" },
  sensitive: { type: "string" },
  outliers: { type: "string" },
  "outlier-range": { type: "string" },
  "fisher-samples": { type: "string" },
  workers: { type: "string" },
} as const;

const QUANT_HELP = `Quantization:
  --method M           rtn | gptq | awq | squeezellm (absent: fp32)
  --bits B             2..8
  --group G            columns per scale group (default: one group per row; AWQ: 128, or the
                       largest of 128/64/32/… dividing every layer width)
  --sym                symmetric grid (RTN/GPTQ; AWQ is asymmetric like its official default)
  --act-order          GPTQ: quantize columns by descending diag(H)
  --static-groups      GPTQ: group parameters from the unpermuted weights
  --no-true-sequential GPTQ: quantize all sub-layers of a block from the same inputs
  --calib SRC          c4 | wikitext2 | tinystories (calibration data, default c4)
  --nsamples N         calibration windows (default 128, as GPTQ)
  --seed S             calibration and k-means seed (default 0)
  --sensitive P        SqueezeLLM: % of weights kept sparse by Fisher value (e.g. 0.05)
  --outliers P         SqueezeLLM: % of weights kept sparse as outliers (searches the range r)
  --outlier-range R    SqueezeLLM: outlier range r directly (T = max(|q1 − r·IQR|, |q3 + r·IQR|))
  --fisher-samples N   SqueezeLLM: calibration windows of the Fisher pass (default 100)
  --workers N          worker threads (default: number of cores)`;

/** The quantization spec given by the options, or null for fp32. */
export function specFromOptions(values: Record<string, unknown>): QuantSpec | null {
  const method = str(values, "method");
  if (method === undefined || method === "fp32") {
    for (const k of ["bits", "group", "sensitive", "outliers", "outlier-range"]) {
      if (values[k] !== undefined) {
        throw new CliError(`--${k} needs --method (${METHODS.join(", ")})`);
      }
    }
    return null;
  }
  const m = choice(values, "method", METHODS, "rtn");
  if (values.bits === undefined) throw new CliError(`--method ${m} needs --bits B (2..8)`);
  const bits = int(values, "bits", undefined, 2, 8)!;
  const spec = defaultSpec(m, bits);
  const group = int(values, "group", undefined, 1);
  if (group !== undefined) spec.groupSize = group;
  if (values.sym) spec.sym = true;
  if (values["act-order"]) spec.actOrder = true;
  if (values["static-groups"]) spec.staticGroups = true;
  if (values["no-true-sequential"]) spec.trueSequential = false;
  spec.calib.source = choice(values, "calib", CALIB_SOURCES, spec.calib.source as CalibSource);
  spec.calib.nsamples = int(values, "nsamples", spec.calib.nsamples, 1)!;
  spec.calib.seed = int(values, "seed", spec.calib.seed, 0)!;
  spec.sensitivePct = num(values, "sensitive", spec.sensitivePct)!;
  spec.outlierPct = num(values, "outliers", spec.outlierPct ?? undefined) ?? null;
  spec.outlierRange = num(values, "outlier-range", spec.outlierRange ?? undefined) ?? null;
  spec.fisherSamples = int(values, "fisher-samples", spec.fisherSamples, 1)!;
  if (m !== "squeezellm" && (values.sensitive || values.outliers || values["outlier-range"])) {
    throw new CliError(`--sensitive/--outliers/--outlier-range apply to --method squeezellm only`);
  }
  if (spec.outlierPct !== null && spec.outlierRange !== null) {
    throw new CliError(`give --outliers P or --outlier-range R, not both`);
  }
  return spec;
}

function workersOf(values: Record<string, unknown>): number {
  return int(values, "workers", navigator.hardwareConcurrency, 0, 64)!;
}

/** Quantizes `model` per the options (or loads --quantized), with progress on stderr. */
async function quantizedFromOptions(
  model: LoadedModel,
  values: Record<string, unknown>,
): Promise<QuantizedModel | null> {
  const file = str(values, "quantized");
  if (file) {
    if (values.method) throw new CliError(`give --quantized FILE or --method, not both`);
    const q = await loadQuantized(file);
    if (q.base.sha256 !== model.checkpointSha256) {
      console.error(
        `warning: ${file} was quantized from ${q.base.path} (sha256 ${
          q.base.sha256.slice(0, 12)
        }…), not ${model.checkpointPath}`,
      );
    }
    return q;
  }
  const spec = specFromOptions(values);
  if (!spec) return null;
  console.error(`quantizing ${model.name} with ${variantName(spec)} …`);
  const q = await quantizeModel(model.weights, spec, {
    tokenizer: model.tokenizer,
    dataDir: model.dataDir,
    offline: model.offline,
    modelKey: model.checkpointSha256,
    workers: workersOf(values),
    log: (s) => console.error(s),
  }, { groupGiven: values.group !== undefined });
  console.error(
    `quantized in ${q.seconds.toFixed(1)} s: ${q.avgBits.toFixed(3)} average bits per weight` +
      (q.calibration ? `; calibration: ${q.calibration}` : ""),
  );
  return q;
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
    const model = await loadModelFromOptions(values);
    const steps = int(values, "steps", 256, 1)!;
    const temperature = num(values, "temperature", 0)!;
    if (temperature < 0) throw new CliError(`--temperature must be ≥ 0, got ${temperature}`);
    const t0 = performance.now();
    const out = generate(model.weights, model.tokenizer, {
      steps,
      temperature,
      prompt: str(values, "prompt"),
      seed: int(values, "seed", 0, 0),
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
    const model = await loadModelFromOptions(values);
    const dataset = choice(values, "dataset", EVAL_SETS, "wikitext2");
    const seqlen = int(values, "seqlen", model.weights.config.maxSeqLen, 2)!;
    const limit = int(values, "limit", undefined, 1);
    const q = await quantizedFromOptions(model, values);
    const set = await loadEvalSet(dataset as EvalSetName, {
      dataDir: model.dataDir,
      tokenizer: model.tokenizer,
      seqlen,
      offline: model.offline,
    });
    const weights = q ? q.weights : model.weights;
    const total = Math.min(Math.floor(set.tokens.length / seqlen), limit ?? Infinity);
    const bar = new Progress(`ppl ${dataset}`, total, "windows", seqlen, "tok");
    const r = await perplexity(weights, set.tokens, {
      seqlen,
      limit,
      workers: workersOf(values),
      onProgress: (d) => bar.update(d),
    });
    const variant = q ? variantName(q.spec) : "fp32";
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
    const storePath = str(values, "store");
    if (storePath) {
      const { recordPpl } = await import("./sweep.ts");
      await recordPpl(storePath, model, q, set, r, "ppl " + Deno.args.join(" "));
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
    const model = await loadModelFromOptions(values);
    const q = (await quantizedFromOptions(model, values))!;
    await saveQuantized(out, q, { path: model.checkpointPath, sha256: model.checkpointSha256 }, {
      model: model.name,
      command: "quantize " + Deno.args.join(" "),
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
    const model = await loadModelFromOptions(values);
    const sweep = choice(values, "sweep", Object.keys(SWEEPS) as (keyof typeof SWEEPS)[], "paper");
    const datasets = list(values, "datasets", [...EVAL_SETS]);
    for (const d of datasets) {
      if (!(EVAL_SETS as readonly string[]).includes(d)) {
        throw new CliError(`--datasets: unknown dataset "${d}" (${EVAL_SETS.join(", ")})`);
      }
    }
    const { runSweep } = await import("./sweep.ts");
    return await runSweep(model, {
      specs: SWEEPS[sweep](model.weights.config),
      datasets: datasets as EvalSetName[],
      seqlen: int(values, "seqlen", model.weights.config.maxSeqLen, 2)!,
      limit: int(values, "limit", undefined, 1),
      storePath: str(values, "store", "out/results.duckdb")!,
      reportPath: str(values, "report", "out/report.html")!,
      workers: workersOf(values),
      resume: !values["no-resume"],
      command: "eval " + Deno.args.join(" "),
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
    try {
      await Deno.stat(storePath);
    } catch {
      throw new CliError(`--store ${storePath} does not exist; run "deno task eval" first`);
    }
    const out = str(values, "out", "out/report.html")!;
    const { ResultsStore } = await import("../../reports/store.ts");
    const { markdownTable, pplTable, renderReport } = await import("../../reports/report.ts");
    const store = await ResultsStore.open(storePath);
    try {
      await Deno.mkdir(out.replace(/\/[^/]*$/, "") || ".", { recursive: true });
      await Deno.writeTextFile(out, await renderReport(store));
      const tables = await pplTable(store);
      for (const [model, rows] of tables) console.log(`\n${model}\n\n${markdownTable(rows)}`);
      console.log(`\nwrote ${out}`);
      return { out, store: storePath, models: [...tables.keys()] };
    } finally {
      store.close();
    }
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
