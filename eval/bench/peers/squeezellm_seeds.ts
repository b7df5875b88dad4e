/**
 * squeezebench's side of the SqueezeLLM peer check (`squeezellm_official.py`
 * beside this file): quantizes stories260K with {@linkcode squeezellmQuantize}
 * exactly as `quantizeModel` does, but with the k-means seed separate from the
 * calibration seed (the CLI's `--seed` sets both; the official code keeps the
 * calibration fixed and uses `random_state=0` for k-means), then evaluates
 * TinyStories perplexity. Optionally writes every layer's parts for the
 * Python script's `--compare` mode, and the Fisher it used (`--fisher-out`,
 * the Python script's `--fisher-file` input).
 *
 * Run:
 *   deno run -A eval/bench/peers/squeezellm_seeds.ts --data-dir ../shared/data \
 *     --bits 3 --sensitive 0.05 --outliers 0.40 --kmeans-seed 0 [--calib-seed 0] \
 *     [--fisher-samples 100] [--workers 1] [--dump DIR] [--fisher-out FILE]
 *     [--lloyd-init DIR] [--no-ppl]
 *
 * `--lloyd-init DIR` (with the DIR of a first `squeezellm_official.py
 * --compare DIR` run, which wrote scikit-learn's k-means++ init of every row
 * as `l{l}_{name}.init.f64`): also runs squeezebench's Lloyd ({@linkcode kmeans1d})
 * from those inits on the same dense rows and sample weights, and writes the
 * centroids as `l{l}_{name}.lloyd.f64` for the second `--compare` run.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { loadCheckpoint } from "../../../model/checkpoint.ts";
import { LINEAR_NAMES, linearShape, withLinears } from "../../../model/config.ts";
import { loadTokenizer } from "../../../model/tokenizer.ts";
import { calibrationWindows } from "../../../datasets/calibration.ts";
import { loadEvalSet } from "../../../datasets/eval_sets.ts";
import { fisherInformation } from "../../../quant/fisher.ts";
import { findOutlierRange, squeezellmQuantize } from "../../../quant/squeezellm.ts";
import { csrValues, dequantize, fromF16, unpackCodes } from "../../../quant/format.ts";
import { kmeans1d } from "../../../quant/kmeans1d.ts";
import { perplexity } from "../../perplexity.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    "data-dir": { type: "string", default: "../shared/data" },
    bits: { type: "string", default: "3" },
    sensitive: { type: "string", default: "0.05" },
    outliers: { type: "string", default: "0.40" },
    "kmeans-seed": { type: "string", default: "0" },
    "calib-seed": { type: "string", default: "0" },
    "fisher-samples": { type: "string", default: "100" },
    workers: { type: "string", default: "1" },
    dump: { type: "string" },
    "fisher-out": { type: "string" },
    "lloyd-init": { type: "string" },
    "no-ppl": { type: "boolean", default: false },
  },
});
const dataDir = a["data-dir"]!, bits = +a.bits!, sens = +a.sensitive!, outPct = +a.outliers!;
const seed = +a["kmeans-seed"]!, workers = +a.workers!;
const w = await loadCheckpoint(`${dataDir}/stories260K/stories260K.bin`);
const tok = await loadTokenizer(`${dataDir}/stories260K/tok512.model`);
const c = w.config;
const cal = await calibrationWindows({
  source: "tinystories",
  nsamples: +a["fisher-samples"]!,
  seqlen: c.maxSeqLen,
  seed: +a["calib-seed"]!,
  dataDir,
  tokenizer: tok,
  offline: true,
  progress: false,
});
const fisher = await fisherInformation(w, cal.windows, { workers });
console.log(`fisher: ${fisher.windows} windows, mean loss ${fisher.meanLoss.toFixed(6)}`);
if (a["fisher-out"]) {
  const parts = w.layers.flatMap((_, l) => LINEAR_NAMES.map((n) => fisher.fisher[l][n]));
  const all = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  parts.reduce((o, p) => (all.set(p, o), o + p.length), 0);
  await Deno.writeFile(a["fisher-out"], new Uint8Array(all.buffer));
}
let r: number | undefined;
if (outPct > 0) {
  r = findOutlierRange(w.layers.flatMap((lw) => LINEAR_NAMES.map((n) => lw[n])), outPct);
  console.log(`outlier range r = ${r.toPrecision(6)} gives ${outPct}% outliers`);
}
if (a.dump) await Deno.mkdir(a.dump, { recursive: true });
const bytes = (x: ArrayBufferView) => new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
const deq = new Map<string, Float32Array>();
let nnz = 0;
console.log("layer module  sens  outl  T");
for (let l = 0; l < c.nLayers; l++) {
  for (const n of LINEAR_NAMES) {
    const [rows, cols] = linearShape(c, n);
    const { q, stats } = await squeezellmQuantize(w.layers[l][n], fisher.fisher[l][n], rows, cols, {
      bits,
      seed,
      sensitivePct: sens,
      outlierRange: r,
      workers: 0,
    });
    nnz += stats.nnz;
    const Wq = dequantize(q);
    deq.set(`${l}.${n}`, Wq);
    const T = stats.outlierThreshold?.toPrecision(6) ?? "-";
    console.log(`${l} ${n} ${stats.nSensitive} ${stats.nOutliers} ${T}`);
    if (a.dump) {
      // Sparse part as a dense [rows, cols] array; `removed` marks its positions.
      const sp = new Float32Array(rows * cols), removed = new Uint8Array(rows * cols);
      if (q.sparse) {
        const s = q.sparse, v = csrValues(s);
        for (let i = 0; i < rows; i++) {
          for (let p = s.rowPtr[i]; p < s.rowPtr[i + 1]; p++) {
            sp[i * cols + s.colIdx[p]] = v[p];
            removed[i * cols + s.colIdx[p]] = 1;
          }
        }
      }
      const base = `${a.dump}/l${l}_${n}`;
      await Deno.writeFile(`${base}.lut.f32`, bytes(fromF16(q.dense.lut)));
      await Deno.writeFile(`${base}.codes.u8`, bytes(unpackCodes(q.dense.codes, rows, cols, bits)));
      await Deno.writeFile(`${base}.sparse.f32`, bytes(sp));
      await Deno.writeFile(`${base}.removed.u8`, removed);
      await Deno.writeFile(`${base}.wq.f32`, bytes(Wq));
    }
    if (a["lloyd-init"]) {
      // squeezebench's Lloyd from scikit-learn's init, on W_d with weights F · (W_d ≠ 0).
      const base = `${a["lloyd-init"]}/l${l}_${n}`, k = 1 << bits;
      const init = new Float64Array((await Deno.readFile(`${base}.init.f64`)).buffer);
      const Wd = Float32Array.from(w.layers[l][n]), F = fisher.fisher[l][n];
      if (q.sparse) {
        const s = q.sparse;
        for (let i = 0; i < rows; i++) {
          for (let p = s.rowPtr[i]; p < s.rowPtr[i + 1]; p++) Wd[i * cols + s.colIdx[p]] = 0;
        }
      }
      const out = new Float64Array(rows * k);
      for (let i = 0; i < rows; i++) {
        const x = Wd.subarray(i * cols, (i + 1) * cols);
        const sw = F.slice(i * cols, (i + 1) * cols).map((g, c) => (x[c] !== 0 ? g : 0));
        const km = kmeans1d(x, sw, k, { init: init.subarray(i * k, (i + 1) * k), codes: false });
        out.set(km.centroids, i * k);
      }
      await Deno.writeFile(`${base}.lloyd.f64`, bytes(out));
    }
  }
}
if (a["no-ppl"]) Deno.exit(0);
const ev = await loadEvalSet("tinystories", {
  dataDir,
  tokenizer: tok,
  seqlen: c.maxSeqLen,
  offline: true,
  progress: false,
});
const p = await perplexity(withLinears(w, (l, n) => deq.get(`${l}.${n}`)), ev.tokens, { workers });
console.log(
  `squeezebench-${bits}bit kmeans seed ${seed} sensitive ${sens} outliers ${outPct}: ${nnz} sparse; ` +
    `tinystories ppl ${p.ppl.toFixed(6)} over ${p.windows} windows`,
);
