/**
 * `deno task bench NAME`: benchmarks that print figures (speed targets live
 * here, never in timed tests). Each returns its figures as data too.
 *
 * @module
 */
import { forward, RunState } from "../../model/forward.ts";
import { loadEvalSet } from "../../datasets/eval_sets.ts";
import {
  calibrationNeed,
  evalSetNeed,
  KNOWN_MODELS,
  loadModelFromOptions,
  requireDataFromOptions,
} from "../cli/load.ts";
import { perplexity } from "../perplexity.ts";
import { Progress } from "../cli/progress.ts";
import { checkOutputFile, checkStoreFile, CliError, int, list, str } from "../cli/options.ts";
import { type DataNeed, resolveCacheDir } from "../../datasets/datadir.ts";
import { DEFAULT_WORKERS } from "../../quant/spec.ts";

type Values = Record<string, unknown>;

/** The files of the benchmarks that read stories260K and TinyStories from the data dir directly. */
const STORIES260K_NEEDS: DataNeed[] = [
  { what: "stories260K checkpoint", candidates: [KNOWN_MODELS.stories260K.checkpoint] },
  { what: "stories260K tokenizer", candidates: [KNOWN_MODELS.stories260K.tokenizer] },
  evalSetNeed("tinystories"),
];

async function benchForward(values: Values) {
  const model = await loadModelFromOptions(values, [evalSetNeed("tinystories")]);
  const seqlen = model.weights.config.maxSeqLen;
  const set = await loadEvalSet("tinystories", {
    dataDir: model.dataDir,
    tokenizer: model.tokenizer,
    seqlen,
    offline: model.offline,
  });
  const windows = Math.min(values.small ? 4 : 24, Math.floor(set.tokens.length / seqlen));
  const state = new RunState(model.weights.config, seqlen);
  forward(model.weights, set.tokens.subarray(0, seqlen), { state }); // warm-up
  const t0 = performance.now();
  for (let i = 0; i < windows; i++) {
    forward(model.weights, set.tokens.subarray(i * seqlen, (i + 1) * seqlen), { state });
  }
  const single = (windows * seqlen) / ((performance.now() - t0) / 1000);
  const workers = int(values, "workers", DEFAULT_WORKERS, 1)!;
  const r = await perplexity(model.weights, set.tokens, { seqlen, limit: windows * 2, workers });
  const parallel = r.tokens / r.seconds;
  console.log(`prefill forward, ${model.name}, ${seqlen}-token windows of TinyStories text`);
  console.log(`  1 thread:            ${single.toFixed(0)} tokens/s (${windows} windows)`);
  console.log(
    `  ${workers} worker threads:    ${
      parallel.toFixed(0)
    } tokens/s (${r.windows} windows, incl. start-up)`,
  );
  return {
    model: model.name,
    seqlen,
    windows,
    tokensPerSecond1Thread: single,
    workers,
    tokensPerSecondWorkers: parallel,
  };
}

async function benchPpl(values: Values) {
  const model = await loadModelFromOptions(values, [evalSetNeed("wikitext2")]);
  const seqlen = model.weights.config.maxSeqLen;
  const t0 = performance.now();
  const set = await loadEvalSet("wikitext2", {
    dataDir: model.dataDir,
    tokenizer: model.tokenizer,
    seqlen,
    offline: model.offline,
  });
  const loadSeconds = (performance.now() - t0) / 1000;
  const workers = int(values, "workers", DEFAULT_WORKERS, 0)!;
  const total = Math.floor(set.tokens.length / seqlen);
  const bar = new Progress("wikitext2", total, "windows", seqlen, "tok");
  const r = await perplexity(model.weights, set.tokens, {
    seqlen,
    workers,
    onProgress: (d) => bar.update(d),
  });
  const wall = (performance.now() - t0) / 1000;
  console.log(
    `WikiText-2 perplexity of ${model.name}: ${
      r.ppl.toFixed(4)
    } (${r.windows} windows of ${seqlen})`,
  );
  console.log(
    `  load + tokenize ${loadSeconds.toFixed(2)} s, evaluate ${r.seconds.toFixed(2)} s, wall ${
      wall.toFixed(2)
    } s`,
  );
  console.log(`  ${(r.tokens / r.seconds).toFixed(0)} tokens/s with ${workers} workers`);
  return {
    model: model.name,
    ppl: r.ppl,
    windows: r.windows,
    seqlen,
    loadSeconds,
    evalSeconds: r.seconds,
    wallSeconds: wall,
    tokensPerSecond: r.tokens / r.seconds,
    workers,
  };
}

async function benchQuantAll(values: Values) {
  const { benchQuant } = await import("./quant.ts");
  const { benchAwq } = await import("./awq.ts");
  const model = await loadModelFromOptions(values); // before any work: it may need a download
  const workers = int(values, "workers", DEFAULT_WORKERS, 0)!;
  const layer = await benchQuant({
    small: values.small === true,
    peer: values.peer === true,
    workers,
  });
  const awq = benchAwq({ small: values.small === true, weights: model.weights });
  // --peer: GPTQ's ratios to the official PyTorch code (ours / official) at the top
  const peer = layer.peer && "hessianRatio" in layer.peer
    ? {
      hessianRatio: layer.peer.hessianRatio,
      fasterquantRatio: layer.peer.fasterquantRatio,
      hessianRatioAllThreads: layer.peer.hessianRatioAllThreads,
      fasterquantRatioAllThreads: layer.peer.fasterquantRatioAllThreads,
      hessianRatioCpu: layer.peer.hessianRatioCpu,
      fasterquantRatioCpu: layer.peer.fasterquantRatioCpu,
    }
    : {};
  return { ...peer, layer, awq };
}

async function benchSqueezellmAll(values: Values) {
  const { benchSqueezellm } = await import("./squeezellm.ts");
  const { benchFisher } = await import("./fisher.ts");
  const { dataDir } = await requireDataFromOptions(values, STORIES260K_NEEDS);
  const kmeans = await benchSqueezellm({ small: values.small === true });
  const fisher = await benchFisher({ small: values.small === true, dataDir });
  return { kmeans, fisher };
}

/** Runs `fn` with a GPU device that is destroyed afterwards (before the process exits). */
async function withGpu<T>(
  fn: (gpu: import("../../kernels/device.ts").Gpu) => Promise<T>,
): Promise<T> {
  const { getGpu } = await import("../../kernels/device.ts");
  const gpu = await getGpu();
  try {
    return await fn(gpu);
  } finally {
    gpu.pool.trim();
    gpu.device.destroy();
  }
}

async function benchKernelsCmd(values: Values) {
  const storePath = str(values, "store");
  if (storePath) {
    await checkStoreFile("--store", storePath);
    await checkOutputFile("--store", storePath);
  }
  const { benchKernels } = await import("./kernels.ts");
  const r = await withGpu((gpu) =>
    benchKernels({
      gpu,
      shapes: str(values, "shapes", "llama7b")!,
      formats: list(values, "formats", ["f32", "f16", "uniform", "lut", "lut+sparse"]) as never,
      bits: list(values, "bits", ["3", "4"]).map(Number),
      batch: list(values, "batch", ["1"]).map(Number),
      runs: int(values, "runs", values.small ? 5 : 30, 1)!,
      warmup: 3,
    })
  );
  if (storePath) {
    const { ResultsStore, currentRun } = await import("../../reports/store.ts");
    const store = await ResultsStore.open(storePath);
    try {
      const run = await currentRun(Deno.args.join(" "));
      await store.addRun(run);
      for (const row of r.rows) {
        const [rows, cols] = String(row.shape).split("x").map(Number);
        await store.addKernel({
          runId: run.runId,
          adapter: r.adapter,
          format: row.format,
          bits: row.bits ?? null,
          rows,
          cols,
          batch: row.batch,
          medianUs: row.medianUs,
          minUs: row.minUs,
          gbps: row.GBps,
          fractionOfCopy: row.fractionOfCopy,
          speedupVsF16: row.speedupVsF16 ?? null,
          infoBits: row.avgInfoBits,
          storedBits: row.avgStoredBits,
        });
      }
    } finally {
      store.close();
    }
  }
  return r;
}

async function benchDecodeCmd(values: Values) {
  const { benchDecodeFormats } = await import("./decode.ts");
  const tokens = int(values, "tokens", undefined, 1, 512);
  const formats = values.formats === undefined ? undefined : list(values, "formats", []);
  // SqueezeLLM formats calibrate on TinyStories (decode.ts's default).
  const calib = formats === undefined || formats.some((f) => f.startsWith("squeezellm"))
    ? [calibrationNeed("tinystories")]
    : [];
  const { dataDir, offline } = await requireDataFromOptions(values, [
    ...STORIES260K_NEEDS,
    ...calib,
  ]);
  return await withGpu((gpu) =>
    benchDecodeFormats({
      gpu,
      dataDir,
      offline,
      small: values.small === true,
      tokens,
      formats: formats as never,
    })
  );
}

async function benchMatmulCmd(_values: Values) {
  const { benchMatmul } = await import("./matmul.ts");
  return await benchMatmul();
}

async function benchWaCmd(values: Values) {
  const { benchWa, parsePairs, parseRounds, SMALL_PAIRS, SMALL_SHAPES } = await import("./wa.ts");
  const small = values.small === true;
  const [runs, prefillRuns] = parseRounds(str(values, "runs"), "runs", small ? [3, 1] : [10, 3], 1);
  const [warmup, prefillWarmup] = parseRounds(str(values, "warmup"), "warmup", [2, 1], 0);
  return await withGpu((gpu) =>
    benchWa({
      gpu,
      shapes: str(values, "shapes", small ? SMALL_SHAPES : "llama7b")!,
      pairs: values.pairs === undefined && small
        ? [...SMALL_PAIRS]
        : parsePairs(str(values, "pairs", "all")!),
      batch: list(values, "batch", ["1", "4", "8"]).map(Number),
      prefill: list(values, "tokens", [small ? "64" : "512"]).map(Number).filter((t) => t !== 0),
      runs,
      warmup,
      prefillRuns,
      prefillWarmup,
    })
  );
}

/** Benchmarks by name. */
async function benchPrefillCmd(values: Values) {
  const { benchPrefill, PREFILL_FORMATS } = await import("./prefill.ts");
  const models = list(
    values,
    "models",
    values.small ? ["stories260K"] : ["stories260K", "llama7b"],
  );
  for (const m of models) {
    if (m !== "stories260K" && m !== "llama7b") {
      throw new CliError(`--models: expected stories260K and/or llama7b; got "${m}"`);
    }
  }
  const seqlens = list(values, "seqlens", values.small ? ["512"] : ["512", "2048"]).map((v) => {
    const n = Number(v);
    if (!(Number.isInteger(n) && n >= 2 && n <= 2048)) {
      throw new CliError(`--seqlens: each window length must be an integer in 2..2048, got "${v}"`);
    }
    return n;
  });
  const formats = list(values, "formats", [...PREFILL_FORMATS]);
  const windows = int(values, "windows", values.small ? 1 : 2, 1)!;
  const stories260K = models.includes("stories260K")
    ? (await loadModelFromOptions(values)).weights
    : undefined;
  return await withGpu((gpu) =>
    benchPrefill({
      gpu,
      stories260K,
      llama7bBlock: models.includes("llama7b"),
      seqlens,
      formats: formats as never,
      windows,
    })
  );
}

async function benchGpuCheckCmd(values: Values) {
  const { benchGpuCheck, GPU_CHECK_VARIANTS, gpuCheckSpec } = await import("./gpu_check.ts");
  const { EVAL_SETS } = await import("../../datasets/eval_sets.ts");
  const variants = list(values, "methods", [...GPU_CHECK_VARIANTS]).map((v) => {
    if (!(GPU_CHECK_VARIANTS as readonly string[]).includes(v)) {
      throw new CliError(`--methods: expected some of ${GPU_CHECK_VARIANTS.join(",")}; got "${v}"`);
    }
    return v as typeof GPU_CHECK_VARIANTS[number];
  });
  const datasets = list(values, "datasets", ["wikitext2", "tinystories"]).map((d) => {
    if (!(EVAL_SETS as readonly string[]).includes(d)) {
      throw new CliError(`--datasets: expected some of ${EVAL_SETS.join(",")}; got "${d}"`);
    }
    return d as typeof EVAL_SETS[number];
  });
  const bits = int(values, "bits", 3, 2, 8)!;
  const specs = variants.map((v) => gpuCheckSpec(v, bits));
  const sources = new Set(specs.flatMap((s) => s && "calib" in s ? [s.calib.source] : []));
  const model = await loadModelFromOptions(values, [
    ...datasets.map(evalSetNeed),
    ...[...sources].map(calibrationNeed),
  ]);
  return await withGpu((gpu) =>
    benchGpuCheck({
      gpu,
      model,
      variants,
      datasets,
      bits,
      limit: int(values, "limit", undefined, 1),
      workers: int(values, "workers", DEFAULT_WORKERS, 0)!,
    })
  );
}

async function benchModelQuantCmd(values: Values) {
  const { benchModelQuant, MODEL_QUANT_METHODS } = await import("./model_quant.ts");
  const shape = str(values, "shape", "llama7b")!;
  if (shape !== "llama7b") throw new CliError(`--shape: expected llama7b, got "${shape}"`);
  return await benchModelQuant({
    small: values.small === true,
    bits: int(values, "bits", 3, 2, 8)!,
    workers: int(values, "workers", DEFAULT_WORKERS, 0)!,
    windows: int(values, "windows", 1, 1),
    methods: list(values, "methods", [...MODEL_QUANT_METHODS]).map((m) => {
      if (!(MODEL_QUANT_METHODS as readonly string[]).includes(m)) {
        throw new CliError(
          `--methods: expected some of ${MODEL_QUANT_METHODS.join(",")}; got "${m}"`,
        );
      }
      return m as typeof MODEL_QUANT_METHODS[number];
    }),
  });
}

async function benchScaleCmd(values: Values) {
  const { benchScale, SCALE_RUNS, SCALE_SHAPES } = await import("./scale.ts");
  const shape = str(values, "shape", values.small ? "tiny" : "tinyllama")!;
  if (!(shape in SCALE_SHAPES)) {
    throw new CliError(
      `--shape: expected ${Object.keys(SCALE_SHAPES).join(", ")}; got "${shape}"`,
    );
  }
  const runs = list(values, "methods", Object.keys(SCALE_RUNS)).map((r) => {
    if (!(r in SCALE_RUNS)) {
      throw new CliError(`--methods: expected some of ${Object.keys(SCALE_RUNS)}; got "${r}"`);
    }
    return r as keyof typeof SCALE_RUNS;
  });
  const outDir = await Deno.makeTempDir({ prefix: "sqb-bench-scale-" });
  try {
    return await benchScale({
      shape: shape as keyof typeof SCALE_SHAPES,
      cacheDir: resolveCacheDir(),
      outDir,
      runs,
      workers: int(values, "workers", DEFAULT_WORKERS, 0)!,
      dataDir: str(values, "data-dir"),
    });
  } finally {
    await Deno.remove(outDir, { recursive: true });
  }
}

export const BENCHES = {
  forward: benchForward,
  ppl: benchPpl,
  quant: benchQuantAll,
  squeezellm: benchSqueezellmAll,
  kernels: benchKernelsCmd,
  decode: benchDecodeCmd,
  matmul: benchMatmulCmd,
  wa: benchWaCmd,
  prefill: benchPrefillCmd,
  "gpu-check": benchGpuCheckCmd,
  "model-quant": benchModelQuantCmd,
  scale: benchScaleCmd,
} as const;

/** Runs benchmark `name`. */
export async function runBench(name: keyof typeof BENCHES, values: Values): Promise<object> {
  return await BENCHES[name](values);
}
