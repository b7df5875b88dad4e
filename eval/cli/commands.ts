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
  choiceList,
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
  blockwiseModel,
  calibrationNeed,
  evalSetNeed,
  fitsInMemory,
  loadModelFromOptions,
  loadOpenedModel,
  openModelFromOptions,
  requireDataFromOptions,
} from "./load.ts";
import type { DataNeed } from "../../datasets/datadir.ts";
import { generate } from "../generate.ts";
import { perplexity, type PerplexityResult } from "../perplexity.ts";
import { type Device, DEVICES, GPU_EVALUATOR, prefillPerplexity } from "../gpu_perplexity.ts";
import type { Gpu } from "../../kernels/device.ts";
import { type LlamaConfig, protocolSeqlen } from "../../model/config.ts";
import { gpuHessians } from "../gpu_calibration.ts";
import { Progress } from "./progress.ts";
import { EVAL_SETS, type EvalSetName, loadEvalSet } from "../../datasets/eval_sets.ts";
import {
  METHODS,
  QUANTIZERS,
  type QuantSpec,
  saveQuantized,
  variantName,
} from "../../quant/methods.ts";
import {
  QUANT_HELP,
  QUANT_OPTIONS,
  quantizedFromOptions,
  quantRequest,
  specFromOptions,
  workersOf,
} from "./quant_options.ts";
import { presetNames } from "./presets.ts";
import { BENCHES, runBench } from "../bench/bench.ts";
import { BLOCKWISE_HELP, BLOCKWISE_OPTIONS, pplBlockwise } from "./ppl_blockwise.ts";
import { pplResultRow } from "./ppl_result.ts";
import { fisherCmd } from "./fisher_cmd.ts";
import {
  checkedFisherFile,
  FISHER_HELP,
  FISHER_OPTIONS,
  fisherDirOf,
  quantizeFileBlockwise,
  quantizesBlockwise,
} from "./quantize_file.ts";
import { streamProblem } from "../quantize_stream.ts";

/** The calibration files the specs' methods read (none for fp32 and RTN). */
function calibNeeds(specs: readonly (QuantSpec | null)[]): DataNeed[] {
  const sources = new Set(specs.flatMap((s) => s && "calib" in s ? [s.calib.source] : []));
  return [...sources].map(calibrationNeed);
}

/**
 * The window length: `--seqlen` when given, else the protocol's window of
 * the model evaluated (model/config.ts `protocolSeqlen`: 2048 tokens, or its
 * max_seq_len where shorter; `what` names it in the message).
 */
function seqlenFor(given: number | undefined, config: LlamaConfig, what: string): number {
  const { maxSeqLen } = config;
  if (given === undefined) return protocolSeqlen(config);
  if (given > maxSeqLen) {
    throw new CliError(
      `--seqlen ${given} exceeds the model's max_seq_len ${maxSeqLen} (${what}); ` +
        `leave --seqlen out to use ${protocolSeqlen(config)}`,
    );
  }
  return given;
}

/** Help of `--device` (ppl and eval). */
const DEVICE_HELP =
  `  --device cpu|gpu     where perplexity runs: cpu (default: the WebAssembly forward, bit-exact
                       across runs) or gpu (WebGPU prefill, every linear in its stored format;
                       equal to cpu within 1e-4, stored under its own result keys). No
                       auto-detection: a software adapter (llvmpipe) is slower than the CPU.
                       GPTQ's Hessians and AWQ's features are then computed on the GPU too
                       (see quantize)`;

/** Help of `--device` for quantizing. */
const QUANTIZE_DEVICE_HELP =
  `  --device cpu|gpu     where the calibration pass of GPTQ (block forward and Hessians, XᵀX of
                       every linear's inputs) and of AWQ (block forward: the scaled groups'
                       inputs, the sub-blocks' outputs, mean |x|) runs; the searches and solvers
                       stay on the CPU: cpu (default) or gpu (WebGPU; GPTQ's block inputs kept on
                       the device; equal to cpu within fp32 rounding, so a code may differ at a
                       tie; recorded in the calibration identity, so its results are keyed
                       apart). Other methods' calibration runs on the CPU`;

/**
 * The `--device` option and, for gpu, the adapter — opened before any work,
 * so a missing adapter fails at once with the driver hint.
 */
async function deviceFromOptions(
  values: Record<string, unknown>,
  runs = { cpu: "WebAssembly forward", gpu: "WebGPU prefill" },
): Promise<{ device: Device; gpu: Gpu | null; text: string }> {
  const device = choice(values, "device", DEVICES, "cpu");
  if (device === "cpu") return { device, gpu: null, text: `cpu (${runs.cpu})` };
  const { adapterLabel, getGpu } = await import("../../kernels/device.ts");
  try {
    const gpu = await getGpu();
    return { device, gpu, text: `gpu (${runs.gpu} on ${adapterLabel(gpu.info)})` };
  } catch (e) {
    throw new CliError(`--device gpu: ${(e as Error).message}; or use --device cpu`);
  }
}

/** --device gpu cannot run a model with activation quantization (the prefill has no hooks). */
function checkGpuModel(device: Device, actQuant: unknown, variant: string): void {
  if (device === "gpu" && actQuant) {
    throw new CliError(
      `--device gpu: ${variant} quantizes activations (--abits / --kv-bits), which only the CPU ` +
        `forward runs; use --device cpu`,
    );
  }
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
    ...FISHER_OPTIONS,
    ...BLOCKWISE_OPTIONS,
    datasets: { type: "string" },
    dataset: { type: "string" },
    seqlen: { type: "string" },
    limit: { type: "string" },
    quantized: { type: "string" },
    store: { type: "string" },
    device: { type: "string" },
  },
  help: `deno task ppl [options]

  --datasets LIST      comma-separated: wikitext2,c4,c4-new,tinystories (default wikitext2); the
                       model is quantized once and evaluated on each (--dataset D: the same)
  --seqlen N           window length (default: 2048, the papers' protocol, or the model's
                       max_seq_len where shorter)
  --limit N            evaluate only the first N windows (said in the output)
  --quantized FILE     evaluate a model written by "deno task quantize"
  --store FILE         also record the result in this DuckDB results store
${DEVICE_HELP}
${BLOCKWISE_HELP}
${QUANT_HELP}
${FISHER_HELP}
${MODEL_HELP}`,
  async run(values) {
    // Every option, output file and data file is checked before any work.
    if (values.dataset !== undefined && values.datasets !== undefined) {
      throw new CliError(`give --datasets LIST or its alias --dataset, not both`);
    }
    const flag = values.dataset !== undefined ? "dataset" : "datasets";
    const datasets = choiceList(values, flag, EVAL_SETS, ["wikitext2"]);
    const seqlenGiven = int(values, "seqlen", undefined, 2);
    const limit = int(values, "limit", undefined, 1);
    if (values.blockwise) return await pplBlockwise(values, datasets, seqlenGiven, limit);
    const workers = workersOf(values);
    const storePath = str(values, "store");
    if (storePath) {
      await checkStoreFile("--store", storePath);
      await checkOutputFile("--store", storePath);
    }
    const file = str(values, "quantized");
    const { spec } = quantRequest(values); // stray quantization flags fail here, before any I/O
    const { device, gpu, text: deviceText } = await deviceFromOptions(values);
    if (spec) {
      checkGpuModel(
        device,
        (spec.abits ?? 16) < 16 || (spec.kvBits ?? null) !== null,
        variantName(spec),
      );
    }
    const model = await loadModelFromOptions(values, [
      ...datasets.map(evalSetNeed),
      ...calibNeeds(fisherDirOf(values, spec) === undefined ? [spec] : []),
    ]);
    const fromFile = file ? await quantizedFromOptions(model, values) : null;
    const hessians = gpu && !file ? await gpuHessians(gpu) : undefined;
    // The window length defaults to the protocol's window of the model evaluated (a
    // quantized file may come from another checkpoint than --model).
    const seqlen = fromFile
      ? seqlenFor(seqlenGiven, fromFile.weights.config, `the quantized model ${file}`)
      : seqlenFor(seqlenGiven, model.weights.config, model.name);
    const q = fromFile ?? await quantizedFromOptions(model, values, { hessians });
    hessians?.release();
    const weights = q ? q.weights : model.weights;
    const variant = q ? variantName(q.spec) : "fp32";
    checkGpuModel(device, q?.actQuant, variant);
    const label = `${file ?? model.name} ${variant}`;
    const results: Record<string, unknown>[] = [];
    for (const dataset of datasets) {
      const set = await loadEvalSet(dataset, {
        dataDir: model.dataDir,
        tokenizer: model.tokenizer,
        seqlen,
        offline: model.offline,
      });
      const total = Math.min(Math.floor(set.tokens.length / seqlen), limit ?? Infinity);
      const bar = new Progress(`ppl ${dataset} (${device})`, total, "windows", seqlen, "tok");
      const r: PerplexityResult = gpu
        ? await prefillPerplexity(gpu, weights, q ? q.linears : null, set.tokens, {
          seqlen,
          limit,
          onProgress: (d) => bar.update(d),
          label,
        })
        : await perplexity(weights, set.tokens, {
          seqlen,
          limit,
          workers,
          actQuant: q?.actQuant,
          linears: q?.linears,
          onProgress: (d) => bar.update(d),
          label,
        });
      const limited = r.windows < r.windowsAvailable
        ? ` (--limit: ${r.windows} of ${r.windowsAvailable} windows)`
        : "";
      console.log(
        `${model.name} ${variant} ${dataset}: ppl ${
          r.ppl.toFixed(4)
        } over ${r.windows} windows of ${seqlen}${limited}`,
      );
      console.log(`protocol: ${set.protocol}\ndata: ${set.file}\ndevice: ${deviceText}`);
      results.push({
        ...pplResultRow(model, variant, q, set, r),
        device,
        adapter: gpu ? gpu.info : null,
      });
      if (storePath) {
        const { recordPpl } = await import("./sweep.ts");
        await recordPpl(storePath, model, q, set, r, Deno.args.join(" "), {
          evaluator: gpu ? GPU_EVALUATOR : undefined,
        });
      }
    }
    return results.length === 1 ? results[0] : { model: model.name, variant, results };
  },
};

const quantizeCmd: Command = {
  summary: "quantize a model and write it to a file",
  options: {
    ...MODEL_OPTIONS,
    ...QUANT_OPTIONS,
    ...FISHER_OPTIONS,
    out: { type: "string" },
    device: { type: "string" },
  },
  help: `deno task quantize --method M --bits B --out FILE [options]

  --out FILE           where to write the quantized model (squeezebench .sqbq format, see quant/qmodel.ts)
${QUANTIZE_DEVICE_HELP}
${QUANT_HELP}
${FISHER_HELP}
${MODEL_HELP}`,
  async run(values) {
    const out = str(values, "out");
    if (!out) throw new CliError(`--out FILE is required`);
    if (!values.method) throw new CliError(`--method is required (${METHODS.join(", ")})`);
    await checkOutputFile("--out", out);
    const spec = specFromOptions(values);
    choice(values, "device", DEVICES, "cpu"); // checked before any work; used by GPTQ and AWQ
    // RTN, SqueezeLLM, GPTQ and AWQ quantize block by block, in bounded memory
    // (eval/quantize_stream.ts)
    const blockwise = quantizesBlockwise(spec);
    const onDevice = spec && QUANTIZERS[spec.method].deviceCalibration;
    if (blockwise && !onDevice) return await quantizeFileBlockwise(values, spec, out);
    const { device, gpu, text: deviceText } = await deviceFromOptions(values, {
      cpu: "calibration on the CPU",
      gpu: onDevice ? `${spec!.method.toUpperCase()} ${onDevice}` : "unused by this method",
    });
    console.error(`device: ${deviceText}`);
    if (blockwise) {
      const hessians = gpu ? await gpuHessians(gpu) : undefined;
      try {
        const r = await quantizeFileBlockwise(values, spec, out, hessians);
        return { ...r, device, adapter: gpu ? gpu.info : null };
      } finally {
        hessians?.release();
      }
    }
    const model = await loadModelFromOptions(
      values,
      calibNeeds(fisherDirOf(values, spec) === undefined ? [spec] : []),
    );
    const hessians = gpu ? await gpuHessians(gpu) : undefined;
    const q = (await quantizedFromOptions(model, values, { hessians }))!;
    hessians?.release();
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
      device,
      adapter: gpu ? gpu.info : null,
    };
  },
};

const evalCmd: Command = {
  summary: "a preset (default table1: SqueezeLLM Table 1) run as a plan: quantize, evaluate, " +
    "time kernels, store, report",
  options: {
    ...MODEL_OPTIONS,
    preset: { type: "string" },
    methods: { type: "string" },
    bits: { type: "string" },
    datasets: { type: "string" },
    group: { type: "string" },
    kernels: { type: "string" },
    seqlen: { type: "string" },
    limit: { type: "string" },
    store: { type: "string" },
    out: { type: "string" },
    shard: { type: "string" },
    "dry-run": { type: "boolean" },
    workers: { type: "string" },
    "no-resume": { type: "boolean" },
    blockwise: { type: "boolean" },
    device: { type: "string" },
    ...FISHER_OPTIONS,
  },
  help: `deno task eval [options]

  --preset NAME        a file eval/presets/NAME.json: ${presetNames().join(" | ")} (default table1)
  --methods LIST       only these methods' rows (fp32,rtn,gptq,awq,squeezellm,smoothquant,abq; a
                       method the preset lacks gets its default row)
  --bits LIST          bit widths, each in 2..8 (default: the preset's; a preset of W×A tables keeps
                       its settings of these weight bits)
  --datasets LIST      ${EVAL_SETS.join(",")} (default: the preset's)
  --group N            group size of every RTN/GPTQ/AWQ row; must divide every layer width
  --kernels LIST|none  kernel shapes: model,llama7b,ROWSxCOLS (default: the preset's)
  --seqlen N           window length (default: the preset's, else 2048, the papers' protocol,
                       or the model's max_seq_len where shorter)
  --limit N|all        only the first N windows of each dataset (default: the preset's)
  --store FILE         DuckDB results store (default out/results.duckdb)
  --out DIR            report folder re-rendered at the end (default out/report)
  --shard i/n|auto     run the i-th of n disjoint, balanced parts of the plan (0-based); auto
                       reads a Slurm job array (SLURM_ARRAY_TASK_ID, _COUNT or _MIN/_MAX)
  --dry-run            print the plan with what is already stored or cached, and stop
  --no-resume          re-evaluate results already in the store
  --blockwise          never hold the model whole: quantize block by block into the cache, evaluate
                       one block at a time (the same numbers; RTN, GPTQ, AWQ, SqueezeLLM
                       without --outliers; cpu only); the default for a model larger than
                       memory in fp32
  --workers N          worker threads (default: number of cores)
${DEVICE_HELP}
${FISHER_HELP}; the SqueezeLLM rows then need no Fisher pass
  --json               also one JSON line per finished job on stderr
${MODEL_HELP}`,
  async run(values) {
    // Every option, output file and data file is checked before any work.
    const { applyOverrides, loadPreset, DEFAULT_PRESET } = await import("./presets.ts");
    const preset0 = await loadPreset(str(values, "preset", DEFAULT_PRESET)!);
    const datasets = values.datasets === undefined
      ? undefined
      : choiceList(values, "datasets", EVAL_SETS, []);
    const bits = values.bits === undefined ? undefined : list(values, "bits", []).map((b) => {
      const n = Number(b);
      if (!Number.isInteger(n) || n < 2 || n > 8) {
        throw new CliError(`--bits: each width must be an integer in 2..8, got "${b}"`);
      }
      return n;
    });
    const kernels = values.kernels === undefined
      ? undefined
      : str(values, "kernels") === "none"
      ? []
      : list(values, "kernels", []).map((k) => {
        if (!/^(model|llama7b|\d+x\d+)$/.test(k)) {
          throw new CliError(`--kernels: expected model, llama7b, ROWSxCOLS or none; got "${k}"`);
        }
        return k;
      });
    const limit = str(values, "limit") === "all" ? null : int(values, "limit", undefined, 1);
    const preset = applyOverrides(preset0, {
      methods: values.methods === undefined ? undefined : list(values, "methods", []),
      bits,
      datasets: datasets as EvalSetName[] | undefined,
      seqlen: int(values, "seqlen", undefined, 2),
      limit,
      group: int(values, "group", undefined, 1),
      kernelShapes: kernels,
    });
    const { parseShard } = await import("./shard.ts");
    const shardValue = str(values, "shard");
    const shard = shardValue === undefined ? null : parseShard(shardValue);
    const workers = workersOf(values);
    const storePath = str(values, "store", "out/results.duckdb")!;
    const outDir = str(values, "out", "out/report")!;
    const dryRun = values["dry-run"] === true;
    await checkStoreFile(optionLabel(values, "store"), storePath);
    const { gpu, text: deviceText } = await deviceFromOptions(values);
    console.error(`device: ${deviceText}`);
    if (!dryRun) {
      await checkOutputFile(optionLabel(values, "store"), storePath, { createDir: true });
      await checkOutputDir(optionLabel(values, "out"), outDir);
    }
    const whole = await openModelFromOptions(values, preset.datasets.map(evalSetNeed));
    // a model larger than memory in fp32 is evaluated block by block (the same numbers)
    const opened = values.blockwise || !fitsInMemory(whole.source.config) ? whole : undefined;
    if (opened && !values.blockwise) {
      console.error(`${opened.name} is larger than memory in fp32: evaluating block by block`);
    }
    using _ = opened?.source;
    if (opened && gpu) throw new CliError(`--blockwise runs on the cpu (--device cpu)`);
    const model = opened ? blockwiseModel(opened) : loadOpenedModel(whole);
    const seqlen = seqlenFor(preset.seqlen ?? undefined, model.config, model.name);
    const { expandVariants } = await import("./plan.ts");
    const specs = expandVariants(preset, model.config).variants.map((v) => v.spec);
    const notStreamed = specs.filter((s) => s !== null && !quantizesBlockwise(s));
    if (opened && notStreamed.length > 0) {
      throw new CliError(
        `--blockwise: ${notStreamed.map((s) => variantName(s!)).join(", ")} cannot be ` +
          `quantized block by block (${streamProblem(notStreamed[0]!)}); leave them out with ` +
          `--methods`,
      );
    }
    const fisherDir = str(values, "fisher");
    if (fisherDir !== undefined && !specs.some((s) => s?.method === "squeezellm")) {
      throw new CliError(
        `--fisher applies to SqueezeLLM rows only, and this plan has none ` +
          `(--methods squeezellm adds its row)`,
      );
    }
    const fisher = fisherDir === undefined
      ? undefined
      : await checkedFisherFile(fisherDir, model.config);
    const computed = fisher ? specs.filter((s) => s?.method !== "squeezellm") : specs;
    if (preset.datasets.length > 0) await requireDataFromOptions(values, calibNeeds(computed));
    const { resolveCacheDir } = await import("../../datasets/datadir.ts");
    const { runSweep } = await import("./sweep.ts");
    return await runSweep(model, {
      preset,
      seqlen,
      storePath,
      outDir,
      cacheDir: resolveCacheDir(),
      workers,
      resume: !values["no-resume"],
      dryRun,
      shard,
      jsonEvents: values.json === true,
      fisher,
      command: Deno.args.join(" "), // the task name is Deno.args[0]
      gpu,
      hessians: gpu ? await gpuHessians(gpu) : undefined,
      blockwise: opened,
    });
  },
};

const benchCmd: Command = {
  summary:
    "benchmarks: forward | ppl | quant | squeezellm | kernels | decode | matmul | wa | prefill | gpu-check | model-quant | scale",
  positionals: "NAME",
  options: {
    ...MODEL_OPTIONS,
    shapes: { type: "string" },
    shape: { type: "string" },
    methods: { type: "string" },
    formats: { type: "string" },
    bits: { type: "string" },
    batch: { type: "string" },
    runs: { type: "string" },
    tokens: { type: "string" },
    small: { type: "boolean" },
    peer: { type: "boolean" },
    workers: { type: "string" },
    store: { type: "string" },
    pairs: { type: "string" },
    warmup: { type: "string" },
    models: { type: "string" },
    seqlens: { type: "string" },
    windows: { type: "string" },
    datasets: { type: "string" },
    limit: { type: "string" },
  },
  help: `deno task bench NAME [options]

  forward      tokens/s of the prefill forward on stories260K, 512-token windows of real text
  ppl          full WikiText-2 perplexity of stories260K: wall time and tokens/s
  quant        RTN and GPTQ on LLaMA-7B-shaped layers; AWQ's search on a stories260K block;
               --peer: GPTQ against the official PyTorch code (1 thread and all threads each)
  squeezellm   k-means per row / per layer (3 and 4 bits) vs scikit-learn; Fisher windows/s
  kernels      WebGPU kernels: --shapes llama7b|stories260K|NxK,… --formats f16,uniform,lut,lut+sparse
               --bits 2,3,4 --batch 1,4,8 --runs N
  decode       stories260K decoding with every linear on the GPU in its quantized format: tokens/s,
               perplexity through the kernels and greedy text per format (--formats f32,rtn.w3,
               squeezellm.w3.s0.45,… --tokens N)
  matmul       GFLOP/s of the CPU matmul variants
  wa           W×A kernels: every bit-plane pair W2..8 × A2..8 vs W8A8 (dot4I8Packed) and fp16,
               LLaMA-7B shapes, batch 1, 4, 8 and prefill T = 512: --pairs all|w2a8,w4a8,…
               --shapes --batch --tokens 512|0 --runs 10,3 --warmup 2,1 (rounds: decode, prefill)
  prefill      tokens/s of GPU prefill vs token-by-token GPU decoding vs the CPU forward:
               --models stories260K,llama7b --seqlens 512,2048 --formats f16,uniform3,uniform4,
               lut3,lut4 --windows N (--small: stories260K, T = 512, 1 window)
  gpu-check    GPU prefill perplexity vs the CPU's (tolerance 1e-4) on full sets: --methods fp32,rtn,
               gptq-act,awq,squeezellm-0.45 --datasets wikitext2,tinystories --bits 3 --limit N
  model-quant  projected whole-model time of RTN, GPTQ, AWQ, SqueezeLLM on LLaMA-7B shapes
               (--shape llama7b, --bits 3, --windows 1, --methods rtn,gptq,awq,squeezellm;
               --small: a 1/16-width block), beside the published figures
  scale        wall time and peak memory (VmHWM) of quantize (RTN w4 g128, SqueezeLLM w3 with
               --fisher, GPTQ w3 and AWQ w3 on 4 C4 windows of 512) on a synthetic fp16
               checkpoint written once into the cache dir: --shape tinyllama (default, 2.2 GB) |
               llama7b (13.5 GB) (--small: a tiny shape), --methods rtn.w4.g128,squeezellm.w3,
               gptq.w3,awq.w3 (default all)
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
  summary: "write the report folder (and markdown tables) from one or more results stores",
  options: {
    store: { type: "string", multiple: true },
    out: { type: "string" },
    serve: { type: "boolean" },
    port: { type: "string" },
  },
  help: `deno task report [--store FILE …] [--out DIR] [--serve [--port N]]

  --store FILE         a results store; repeat it, or give a quoted pattern ("out/shard-*.duckdb"),
                       to merge several (the shards of a sweep) (default out/results.duckdb)
  --out DIR            the report folder: index.html, charts/*.vl.json, data/*.parquet, assets/
                       (default out/report)
  --serve              then serve the folder on http://127.0.0.1:PORT/ until interrupted: browsers
                       do not run the SQL panel (WebAssembly in a worker) from file://
  --port N             port of --serve (default 8000; 0 picks a free one)`,
  async run(values) {
    const given = (values.store as string[] | undefined) ?? [];
    const patterns = given.length ? given : ["out/results.duckdb"];
    const out = str(values, "out", "out/report")!;
    const port = int(values, "port", 8000, 0, 65535)!;
    const { expandStorePaths, MergedResults } = await import("../../reports/results.ts");
    let stores: string[];
    try {
      stores = await expandStorePaths(patterns);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      throw new CliError(
        `${e.message}${given.length ? "" : ' (the default); run "deno task eval" first'}`,
      );
    }
    for (const s of stores) {
      await checkStoreFile(optionLabel(values, "store"), s, { mustExist: true });
    }
    await checkOutputDir(optionLabel(values, "out"), out);
    const { markdownReport, writeReport } = await import("../../reports/report.ts");
    // Read-only: works on read-only files and while a sweep is writing to them.
    const results = await MergedResults.open(stores, { log: (s) => console.error(s) });
    let written;
    try {
      written = await writeReport(results, out);
    } finally {
      results.close();
    }
    console.log(`\n${markdownReport(written.data.tables)}\n\nwrote ${written.index}`);
    const summary = {
      out,
      index: written.index,
      stores,
      models: [...new Set(written.data.tables.map((t) => t.model))],
      tables: written.data.tables.map((t) => ({
        title: t.title,
        seqlen: t.seqlen,
        columns: t.columns,
      })),
      kernelTimings: written.data.kernels.length,
      files: written.files,
    };
    if (values.serve) {
      const { serveReport } = await import("../../reports/serve.ts");
      const server = serveReport(out, { port });
      console.error(`serving ${out} on ${server.url} (Ctrl+C stops)`);
      if (values.json) console.log(JSON.stringify({ ...summary, url: server.url }));
      await server.finished;
    }
    return summary;
  },
};

/** Checks that `dir` can be the report folder: a folder or nothing yet (created now), writable. */
async function checkOutputDir(label: string, dir: string): Promise<void> {
  try {
    await Deno.mkdir(dir, { recursive: true });
  } catch (e) {
    throw new CliError(
      e instanceof Deno.errors.AlreadyExists
        ? `${label} ${dir} is a file; give a folder for the report`
        : `${label} ${dir}: cannot create the report folder (${(e as Error).message})`,
    );
  }
  if (!(await Deno.stat(dir)).isDirectory) {
    throw new CliError(`${label} ${dir} is a file; give a folder for the report`);
  }
  await checkOutputFile(label, `${dir}/index.html`);
}

/** Every subcommand by name. */
export const COMMANDS: Record<string, Command> = {
  eval: evalCmd,
  ppl: pplCmd,
  quantize: quantizeCmd,
  fisher: fisherCmd,
  generate: generateCmd,
  bench: benchCmd,
  report: reportCmd,
};
