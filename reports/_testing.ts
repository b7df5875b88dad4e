/**
 * A small but real results store for the report's tests: stories260K
 * quantized by every method at a few bit widths, each evaluated on the first
 * windows of WikiText-2 and the C4 proxy, recorded as `deno task ppl --store`
 * records them; and, where WebGPU works, kernel timings recorded by
 * `deno task bench kernels --store` in a child process. Every number is
 * computed here, none typed in.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { SHARED_DATA } from "../datasets/testing.ts";
import { loadModelFromOptions } from "../eval/cli/load.ts";
import { recordPpl } from "../eval/cli/sweep.ts";
import { quantizeModel } from "../eval/pipeline.ts";
import { perplexity } from "../eval/perplexity.ts";
import { type EvalSetName, loadEvalSet } from "../datasets/eval_sets.ts";
import { defaultSpec, type QuantSpec } from "../quant/methods.ts";

const REPO = fileURLToPath(new URL("../", import.meta.url));

/** The quantizations of the fixture: null is the fp32 model. */
function fixtureSpecs(): (QuantSpec | null)[] {
  const calib = { source: "c4" as const, nsamples: 4, seqlen: 128, seed: 0 };
  const fisherCalib = { source: "c4" as const, seqlen: 128, seed: 0 };
  const specs: (QuantSpec | null)[] = [null];
  for (const bits of [2, 3, 4]) {
    specs.push({ ...defaultSpec("rtn", bits) });
    specs.push({ ...defaultSpec("gptq", bits), calib } as QuantSpec);
    specs.push(
      { ...defaultSpec("squeezellm", bits), fisherSamples: 4, calib: fisherCalib } as QuantSpec,
    );
  }
  for (const bits of [3, 4]) {
    specs.push({ ...defaultSpec("awq", bits), nGrid: 10, nSampleTokens: 128, calib } as QuantSpec);
  }
  for (const bits of [3, 4]) {
    specs.push({
      ...defaultSpec("squeezellm", bits),
      fisherSamples: 4,
      sensitivePct: 0.05,
      outlierPct: 0.4,
      calib: fisherCalib,
    } as QuantSpec);
  }
  return specs;
}

/** Options of {@linkcode buildFixtureStore}. */
export interface FixtureOptions {
  /** Windows evaluated per dataset. @default {2} */
  windows?: number;
  /** Evaluation sets. @default {["wikitext2", "c4"]} */
  datasets?: EvalSetName[];
  /** Where the Fisher cache goes (a temp folder in tests). */
  cacheDir: string;
}

/**
 * Fills `path` with perplexities of stories260K (see the module doc).
 *
 * @param path the store file (created)
 * @param options windows, datasets, cache dir
 * @returns how many results were recorded
 */
export async function buildFixtureStore(path: string, options: FixtureOptions): Promise<number> {
  const model = await loadModelFromOptions({ "data-dir": SHARED_DATA, offline: true });
  const seqlen = model.weights.config.maxSeqLen;
  const sets = await Promise.all(
    (options.datasets ?? ["wikitext2", "c4"]).map((name) =>
      loadEvalSet(name, {
        dataDir: model.dataDir,
        tokenizer: model.tokenizer,
        seqlen,
        offline: true,
      })
    ),
  );
  let n = 0;
  for (const spec of fixtureSpecs()) {
    const q = spec
      ? await quantizeModel(model.weights, spec, {
        tokenizer: model.tokenizer,
        dataDir: model.dataDir,
        offline: true,
        modelKey: model.checkpointSha256,
        workers: 0,
        cacheDir: options.cacheDir,
      })
      : null;
    for (const set of sets) {
      const r = await perplexity(q ? q.weights : model.weights, set.tokens, {
        seqlen,
        limit: options.windows ?? 2,
        workers: 0,
      });
      await recordPpl(path, model, q, set, r, `ppl (report fixture) ${set.name}`);
      n++;
    }
  }
  return n;
}

/**
 * Records real kernel timings into `path` with `deno task bench kernels`
 * (a child process, so WebGPU never runs in the test's own process): small
 * shapes, a few runs.
 *
 * @returns null on success, else why there are no timings (the child's error output)
 */
export async function recordFixtureKernels(path: string): Promise<string | null> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "eval/cli/main.ts",
      "bench",
      "kernels",
      "--small",
      "--shapes",
      "64x64,172x64,64x172",
      "--formats",
      "f32,f16,uniform,lut,lut+sparse",
      "--bits",
      "2,3,4",
      "--runs",
      "3",
      "--store",
      path,
    ],
    cwd: REPO,
    env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return out.success ? null : new TextDecoder().decode(out.stderr).slice(-2000);
}
