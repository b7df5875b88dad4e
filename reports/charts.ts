/**
 * The report's charts as vega-lite specs built from data (pure functions),
 * and their rendering to SVG at build time (vega's `View.toSVG()`, headless).
 *
 * - {@linkcode pplVsBitsSpec}: perplexity against the code width, one line per
 *   method family, one panel per dataset; the fp32 model is a dashed line.
 * - {@linkcode paretoSpec}: perplexity against average bits per weight for
 *   every stored variant, with the Pareto front ({@linkcode paretoFront})
 *   drawn: the size-matched comparison the SqueezeLLM paper argues with.
 * - {@linkcode kernelSpec}: kernel latency or speedup over fp16 against bits,
 *   one line per format, one panel per layer shape, for one adapter; f16 and
 *   f32 are dashed reference lines.
 *
 * Every spec carries its data inline, so the `.vl.json` file the report
 * writes beside each chart renders as is in any vega-lite viewer.
 *
 * @module
 */
import * as vl from "vega-lite";
import * as vega from "vega";

/** The vega-lite schema every spec names. */
export const VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json";

/** Methods in the order the papers list them; colors follow this order. */
export const METHOD_ORDER = ["fp32", "rtn", "gptq", "awq", "squeezellm", "smoothquant", "abq"];

/** One perplexity of one stored variant. */
export interface PplPoint {
  /** Row label in the tables, e.g. "SqueezeLLM 0.45%". */
  family: string;
  method: string;
  /** Variant name with its distinguishing suffixes, e.g. "squeezellm.w3.s0.45". */
  variant: string;
  /** Code width; null for the unquantized model. */
  bits: number | null;
  /** Information bits per weight (the papers' "Avg. Bits"). */
  avgBits: number;
  /** Column label, e.g. "wikitext2 (1591 w)". */
  dataset: string;
  ppl: number;
  /** True on the Pareto front of its dataset (set by {@linkcode paretoSpec}). */
  pareto?: boolean;
}

/** One kernel timing, as the report reads it from `kernel_results`. */
export interface KernelPoint {
  format: string;
  /** Code width; 16 / 32 for f16 / f32. */
  bits: number;
  /** e.g. "4096×11008". */
  shape: string;
  batch: number;
  /** Median microseconds per call. */
  medianUs: number;
  /** Speedup over the f16 kernel of the same shape, batch and adapter. */
  speedup: number | null;
  adapter: string;
}

/**
 * The points no other point beats: for each, every point with fewer or equal
 * average bits has a higher perplexity. Sorted by average bits.
 *
 * @param points perplexities of one dataset
 * @returns the front, fewest bits first
 * @example
 * ```ts
 * paretoFront([{ avgBits: 3, ppl: 9 }, { avgBits: 4, ppl: 10 }, { avgBits: 4, ppl: 8 }]);
 * // [{ avgBits: 3, ppl: 9 }, { avgBits: 4, ppl: 8 }]
 * ```
 */
export function paretoFront<T extends { avgBits: number; ppl: number }>(points: readonly T[]): T[] {
  const sorted = [...points].sort((a, b) => a.avgBits - b.avgBits || a.ppl - b.ppl);
  const front: T[] = [];
  let best = Infinity;
  for (const p of sorted) {
    if (p.ppl < best) {
      if (front.length && front[front.length - 1].avgBits === p.avgBits) front.pop();
      front.push(p);
      best = p.ppl;
    }
  }
  return front;
}

const colorOf = (families: string[]) => ({
  field: "family",
  type: "nominal" as const,
  title: "method",
  sort: families,
});

/** Logarithmic perplexity axis; ticks at readable values. */
const pplAxis = {
  field: "ppl",
  type: "quantitative" as const,
  title: "perplexity (log scale)",
  scale: { type: "log" as const, nice: false },
  axis: { format: "~s", tickCount: 6 },
};

/**
 * Perplexity against bits per method family, one panel per dataset.
 *
 * @param points the quantized and fp32 points of one table
 * @param families family labels in the order the table lists them
 */
export function pplVsBitsSpec(points: PplPoint[], families: string[]): vl.TopLevelSpec {
  return panels({
    values: points,
    facet: { field: "dataset" },
    columns: 2,
    width: 320,
    height: 200,
    layer: [
      {
        transform: [{ filter: "datum.bits !== null" }],
        mark: { type: "line", point: { filled: true, size: 50 }, strokeWidth: 1.5 },
        encoding: {
          x: {
            field: "bits",
            type: "quantitative",
            title: "bits per weight (code width)",
            axis: { tickMinStep: 1, format: "d" },
            scale: { zero: false, nice: false, padding: 12 },
          },
          y: pplAxis,
          color: colorOf(families.filter((f) => f !== "FP32")),
          tooltip: [{ field: "variant" }, { field: "ppl", format: ".3f" }, {
            field: "avgBits",
            title: "avg bits",
            format: ".2f",
          }],
        },
      },
      fp32Rule(),
    ],
  });
}

/**
 * Small multiples: `layer` drawn once per value of the facet field, `columns` panels a row,
 * each panel with its own y scale, the data inline.
 */
function panels(o: {
  values: object[];
  facet: { field: string; sort?: { field: string; op: "max" } };
  columns: number;
  width: number;
  height: number;
  layer: object[];
}): vl.TopLevelSpec {
  return {
    $schema: VEGA_LITE_SCHEMA,
    data: { values: o.values },
    facet: {
      field: o.facet.field,
      type: "nominal",
      title: null,
      ...(o.facet.sort ? { sort: o.facet.sort } : {}),
      header: { labelFontSize: 12, labelFontWeight: "bold" },
    },
    columns: o.columns,
    resolve: { scale: { y: "independent" } },
    spec: { width: o.width, height: o.height, layer: o.layer },
  } as vl.TopLevelSpec;
}

function fp32Rule() {
  return {
    transform: [{ filter: "datum.bits === null" }],
    mark: { type: "rule", strokeDash: [4, 4], color: "#555" },
    encoding: {
      y: { field: "ppl", type: "quantitative" },
      tooltip: [{ field: "variant" }, { field: "ppl", format: ".3f" }],
    },
  };
}

/**
 * Perplexity against average bits per weight for every variant, with the
 * Pareto front (over the quantized variants) drawn as a step line.
 *
 * @param points the quantized and fp32 points of one table (marked in place)
 * @param families family labels in table order
 */
export function paretoSpec(points: PplPoint[], families: string[]): vl.TopLevelSpec {
  const byDataset = Map.groupBy(points.filter((p) => p.bits !== null), (p) => p.dataset);
  for (const ps of byDataset.values()) for (const p of paretoFront(ps)) p.pareto = true;
  return panels({
    values: points,
    facet: { field: "dataset" },
    columns: 2,
    width: 320,
    height: 200,
    layer: [
      {
        transform: [{ filter: "datum.pareto === true" }],
        mark: { type: "line", interpolate: "step-after", color: "#999", strokeWidth: 1 },
        encoding: {
          x: { field: "avgBits", type: "quantitative" },
          y: { field: "ppl", type: "quantitative" },
          order: { field: "avgBits" },
        },
      },
      {
        transform: [{ filter: "datum.bits !== null" }],
        mark: { type: "point", filled: true, size: 60, opacity: 0.9 },
        encoding: {
          x: {
            field: "avgBits",
            type: "quantitative",
            title: "average bits per weight (Pareto front: grey step line)",
            scale: { zero: false, nice: false, padding: 12 },
          },
          y: pplAxis,
          color: colorOf(families.filter((f) => f !== "FP32")),
          shape: {
            field: "pareto",
            type: "nominal",
            title: "on the front",
            scale: { domain: [true, false], range: ["diamond", "circle"] },
            legend: { labelExpr: "datum.value ? 'yes' : 'no'" },
          },
          tooltip: [
            { field: "variant" },
            { field: "ppl", format: ".3f" },
            { field: "avgBits", title: "avg bits", format: ".3f" },
          ],
        },
      },
      fp32Rule(),
    ],
  });
}

/**
 * Kernel latency (or speedup over f16) against bits, one line per quantized
 * format, one panel per shape (and batch, when several); f16 and f32 are
 * dashed reference lines (their latency, or their speedup).
 *
 * @param points timings of one adapter
 * @param measure "latency" (median µs) or "speedup"
 */
export function kernelSpec(points: KernelPoint[], measure: "latency" | "speedup"): vl.TopLevelSpec {
  const y = measure === "latency"
    ? {
      field: "medianUs",
      type: "quantitative",
      title: "median latency (µs)",
      scale: { zero: false },
    }
    : { field: "speedup", type: "quantitative", title: "speedup over f16 (×)" };
  const batches = new Set(points.map((p) => p.batch));
  const quantized = [...new Set(points.filter((p) => !isPlain(p.format)).map((p) => p.format))];
  return panels({
    values: points.map((p) => ({
      ...p,
      panel: panelOf(p, batches.size > 1),
      weights: p.shape.split("×").reduce((a, b) => a * Number(b), 1),
    })),
    facet: { field: "panel", sort: { field: "weights", op: "max" } },
    columns: 4,
    width: 190,
    height: 150,
    layer: [
      {
        transform: [{ filter: "datum.format !== 'f16' && datum.format !== 'f32'" }],
        mark: { type: "line", point: { filled: true, size: 40 }, strokeWidth: 1.5 },
        encoding: {
          x: {
            field: "bits",
            type: "quantitative",
            title: "bits",
            axis: { tickMinStep: 1, format: "d" },
            scale: { zero: false, nice: false, padding: 10 },
          },
          y,
          color: { field: "format", type: "nominal", sort: quantized },
          tooltip: [
            { field: "format" },
            { field: "bits" },
            { field: "medianUs", title: "median µs", format: ".1f" },
            { field: "speedup", format: ".2f" },
          ],
        },
      },
      {
        transform: [{ filter: "datum.format === 'f16' || datum.format === 'f32'" }],
        mark: { type: "rule" },
        encoding: {
          y: { field: y.field, type: "quantitative" },
          color: { value: "#555" },
          strokeDash: {
            field: "format",
            type: "nominal",
            title: "reference",
            scale: { domain: ["f16", "f32"], range: [[6, 3], [1, 2]] },
          },
          tooltip: [{ field: "format" }, {
            field: "medianUs",
            title: "median µs",
            format: ".1f",
          }],
        },
      },
    ],
  });
}

const isPlain = (format: string) => format === "f16" || format === "f32";
const panelOf = (p: KernelPoint, withBatch: boolean) =>
  withBatch ? `${p.shape}, batch ${p.batch}` : p.shape;

/**
 * Renders a vega-lite spec to an SVG string, headless.
 *
 * @param spec a vega-lite spec with its data inline
 * @returns the `<svg>` element's markup
 */
export async function renderSvg(spec: vl.TopLevelSpec): Promise<string> {
  const compiled = vl.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
