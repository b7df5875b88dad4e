/**
 * What determines a quantized model: {@linkcode QuantSpec}, one variant per
 * method, and the ONE table of defaults ({@linkcode DEFAULTS}) and parameters
 * ({@linkcode QUANT_PARAMS}: CLI flag, valid range, description) that the
 * library, the CLI's parser and its generated help all read.
 *
 * A spec that went through {@linkcode resolveSpec} has every default filled
 * in (but the activation fields of {@linkcode ActSpec}, absent when off), its
 * group size resolved against the model and its keys in table order:
 * it is a plain JSON value that identifies the quantization (the results
 * store hashes it). {@linkcode variantName} is for people.
 *
 * One encoding of "one group per row" throughout quant/: `groupSize: null`
 * in specs and options (undefined in an options object means the default,
 * which is also per row); only the packed format (quant/format.ts
 * `UniformTensor.groupSize`) says `cols`.
 *
 * @module
 */
import type { LlamaConfig } from "../model/config.ts";
import { LINEAR_NAMES, linearShape, PROTOCOL_SEQLEN } from "../model/config.ts";
import { checkBits, MAX_BITS, MIN_BITS } from "./format.ts";

/** The quantization methods. */
export const METHODS = ["rtn", "gptq", "awq", "squeezellm", "smoothquant", "abq"] as const;
/** One of {@linkcode METHODS}. */
export type Method = typeof METHODS[number];
/** Where calibration windows come from. */
export const CALIB_SOURCES = ["c4", "wikitext2", "tinystories"] as const;
/** One of {@linkcode CALIB_SOURCES}. */
export type CalibSource = typeof CALIB_SOURCES[number];

/** Calibration windows of GPTQ and AWQ: `nsamples` windows of `seqlen` tokens drawn with `seed`. */
export interface CalibSpec {
  source: CalibSource;
  nsamples: number;
  /** Tokens per window; null = the model's max_seq_len. */
  seqlen: number | null;
  /** `random.seed(seed)` of the window draw. */
  seed: number;
}

/**
 * What every method's spec may carry besides its own parameters: activation
 * quantization (quant/act_quant.ts) and bit balance. Each is absent when off
 * (abits 16, kvBits null with abits 16, bitBalance false), so a weight-only
 * spec is exactly what it was before these existed and its result keys stay
 * valid; {@linkcode resolveSpec} drops them when they change nothing.
 */
export interface ActSpec {
  /**
   * Bits of the dynamic per-token asymmetric min/max fake quantization of the
   * input of every linear (ABQ-LLM's `act_quant_params`), 2..8; 16 = off.
   */
  abits?: number;
  /**
   * Bits of Q and K after RoPE and of V, per head and token vector, 2..8;
   * 16 = off; null = `abits` (ABQ-LLM's q/k/v quantizers take `abits`).
   */
  kvBits?: number | null;
  /**
   * ABQ-LLM's bit balance: every 2-bit asymmetric grid (uniform weights,
   * activations, Q/K/V) gets a fifth level, q_max = 2^n = 4 and step =
   * range / 4; such weights are stored as 3-bit codes. No effect elsewhere.
   */
  bitBalance?: boolean;
}

/** Round-to-nearest on GPTQ's min-max grid (quant/rtn.ts). */
export interface RtnSpec extends ActSpec {
  method: "rtn";
  bits: number;
  /** Columns per scale group; null = one group per row. */
  groupSize: number | null;
  /** Symmetric grid. */
  sym: boolean;
}

/** GPTQ (quant/gptq.ts, quant/sequential.ts). */
export interface GptqSpec extends ActSpec {
  method: "gptq";
  bits: number;
  groupSize: number | null;
  sym: boolean;
  /** Columns in order of descending diag(H). */
  actOrder: boolean;
  /** Group parameters from the unpermuted weights. */
  staticGroups: boolean;
  /** Sub-layers quantized in order k,v,q → o → up,gate → down. */
  trueSequential: boolean;
  /** Columns per lazy-update block. */
  blocksize: number;
  /** Damping: fraction of mean(diag H) added to diag(H). */
  percdamp: number;
  calib: CalibSpec;
}

/** AWQ (quant/awq.ts): asymmetric grid, as llm-awq's default zero_point=True. */
export interface AwqSpec extends ActSpec {
  method: "awq";
  bits: number;
  groupSize: number | null;
  /** Scale ratios searched and clip-grid denominator (n_grid). */
  nGrid: number;
  /** Largest fraction of amax|w| clipping may remove (max_shrink). */
  maxShrink: number;
  /** Tokens the clip search samples (n_sample_token). */
  nSampleTokens: number;
  calib: CalibSpec;
}

/** SqueezeLLM (quant/squeezellm.ts) with its Fisher pass; `calib.seed` also seeds k-means. */
export interface SqueezeLLMSpec extends ActSpec {
  method: "squeezellm";
  bits: number;
  /** % of weights kept in fp16 by largest Fisher value, 0..100. */
  sensitivePct: number;
  /** % of weights kept as outliers (the range r is searched), in (0, 100); null = none. */
  outlierPct: number | null;
  /** The outlier range r, given directly; null = none. */
  outlierRange: number | null;
  /** Windows of the Fisher pass (the official default is 100). */
  fisherSamples: number;
  /** Most Lloyd iterations per row. */
  kmeansIters: number;
  /** Lloyd's relative tolerance. */
  kmeansTol: number;
  calib: Omit<CalibSpec, "nsamples">;
}

/**
 * SmoothQuant (quant/smoothquant.ts): per-channel smoothing factors
 * s = max|X_c|^α / max|W_c|^(1−α) from calibration activations, folded into
 * the preceding norm and the weights, then per-channel RTN of the weights —
 * ABQ-LLM Table 2's W8A8 / W6A6 / W4A4 baseline.
 */
export interface SmoothQuantSpec extends ActSpec {
  method: "smoothquant";
  bits: number;
  /** Migration strength α in 0..1. */
  alpha: number;
  calib: CalibSpec;
}

/**
 * ABQ-LLM (quant/abq.ts): block-wise reconstruction with learnable weight
 * clipping, learnable equivalent transformations and compensation vectors;
 * asymmetric uniform grid with the learned clipping in its scales and zeros.
 */
export interface AbqSpec extends ActSpec {
  method: "abq";
  bits: number;
  /** Columns per LWC group; null = one per row (ABQ-LLM's scripts). */
  groupSize: number | null;
  /** Passes over the windows per block; null = ABQ-LLM's scripts: 40 at 2 bits and W8A8, else 20. */
  epochs: number | null;
  /** AdamW learning rate of the LET scales. */
  letLr: number;
  /** AdamW learning rate of the LWC bounds. */
  lwcLr: number;
  calib: CalibSpec;
}

/** Everything that determines a quantized model, per method. */
export type QuantSpec = RtnSpec | GptqSpec | AwqSpec | SqueezeLLMSpec | SmoothQuantSpec | AbqSpec;
/** The spec variant of method M. */
export type SpecOf<M extends Method> = Extract<QuantSpec, { method: M }>;
/** The fields of a method's spec that have defaults. */
export type SpecDefaults<M extends Method> = Omit<SpecOf<M>, "method" | "bits">;

const CALIB: CalibSpec = { source: "c4", nsamples: 128, seqlen: null, seed: 0 };

/**
 * llm-awq's calibration block: `run_awq` is called with seqlen = 512 (awq/entry.py)
 * whatever the model's length, and get_calib_dataset keeps texts of at most
 * that many tokens and cuts their concatenation into blocks of it.
 */
export const AWQ_BLOCK_SIZE = 512;

/**
 * SqueezeLLM's Fisher windows: kssteven418/SqueezeLLM-gradients run.py draws
 * its C4 calibration with `get_loaders(..., seqlen=512, nsamples=100)`
 * whatever the model's length.
 */
export const SQUEEZELLM_FISHER_SEQLEN = 512;

/**
 * The tokens per calibration window that a spec's `calib.seqlen: null`
 * stands for: the protocol's 2048 tokens (model/config.ts `protocolSeqlen`:
 * GPTQ's llama.py and ABQ-LLM's windows), but AWQ's block of
 * {@linkcode AWQ_BLOCK_SIZE} tokens and SqueezeLLM's Fisher windows of
 * {@linkcode SQUEEZELLM_FISHER_SEQLEN}; the model's max_seq_len where it is
 * shorter.
 *
 * @example
 * ```ts
 * defaultCalibSeqlen("awq", { ...stories260K.config, maxSeqLen: 2048 }); // 512
 * defaultCalibSeqlen("gptq", { ...stories260K.config, maxSeqLen: 4096 }); // 2048
 * ```
 */
export function defaultCalibSeqlen(method: Method, config: LlamaConfig): number {
  const own = method === "awq"
    ? AWQ_BLOCK_SIZE
    : method === "squeezellm"
    ? SQUEEZELLM_FISHER_SEQLEN
    : PROTOCOL_SEQLEN;
  return Math.min(own, config.maxSeqLen);
}
/** Activation quantization off, bit balance off: every method's default but ABQ's. */
const ACT = { abits: 16, kvBits: null, bitBalance: false } as const;

/**
 * The defaults of every method — the papers' official code — in one table.
 * A method takes exactly the parameters listed under it; the CLI's help and
 * its checks of which flags apply are generated from this table.
 */
export const DEFAULTS: { readonly [M in Method]: Readonly<SpecDefaults<M>> } = {
  rtn: { groupSize: null, sym: false, ...ACT },
  // GPTQ llama.py: wbits, groupsize −1, sym off, act-order off, true-sequential on; fasterquant's
  // blocksize 128 and percdamp .01; 128 C4 windows of the model's length, seed 0.
  gptq: {
    groupSize: null,
    sym: false,
    actOrder: false,
    staticGroups: false,
    trueSequential: true,
    blocksize: 128,
    percdamp: 0.01,
    calib: CALIB,
    ...ACT,
  },
  // llm-awq run_awq: q_group_size 128, n_grid 20, max_shrink 0.5, n_sample_token 512, 128 samples
  // in blocks of 512 tokens (calib.seqlen null: defaultCalibSeqlen).
  awq: { groupSize: 128, nGrid: 20, maxShrink: 0.5, nSampleTokens: 512, calib: CALIB, ...ACT },
  // SqueezeLLM: 100 Fisher windows of 512 tokens (calib.seqlen null: defaultCalibSeqlen);
  // scikit-learn KMeans' max_iter 50 (as the official nuq.py), tol 1e-4.
  squeezellm: {
    sensitivePct: 0,
    outlierPct: null,
    outlierRange: null,
    fisherSamples: 100,
    kmeansIters: 50,
    kmeansTol: 1e-4,
    calib: { source: "c4", seqlen: null, seed: 0 },
    ...ACT,
  },
  // SmoothQuant's α = 0.5 (ABQ-LLM's LET initialisation too); activation maxima from the
  // calibration windows (ABQ-LLM's generate_act_scale_shift.py: 128 windows).
  smoothquant: { alpha: 0.5, calib: CALIB, ...ACT },
  // ABQ-LLM main.py and scripts: per-channel LWC and LET, let_lr 5e-3, lwc_lr 1e-2, 128 windows,
  // seed 2 (its calibration seed); epochs 20 (40 at w2 and w8a8); bit balance at 2 bits always.
  abq: {
    groupSize: null,
    epochs: null,
    letLr: 5e-3,
    lwcLr: 1e-2,
    calib: { ...CALIB, seed: 2 },
    ...ACT,
    bitBalance: true,
  },
};

/** Worker threads of the parallel passes (perplexity, Fisher, k-means) unless told otherwise. */
export const DEFAULT_WORKERS: number = navigator.hardwareConcurrency;

/** A numeric range; bounds inclusive unless marked open. */
export interface ParamRange {
  min: number;
  max?: number;
  minOpen?: boolean;
  maxOpen?: boolean;
}

/** One parameter of a spec: where it lives, its CLI flag, its valid values, what it means. */
export interface QuantParam {
  /** Path in the spec: "groupSize", "calib.source". */
  key: string;
  /** CLI flag without dashes. */
  flag: string;
  /** Placeholder of the flag's value in help; absent for a boolean flag. */
  arg?: string;
  kind: "int" | "number" | "boolean" | "choice";
  /** A boolean flag that sets the parameter to false (--no-true-sequential). */
  negated?: boolean;
  /** Nullable parameters: what null means ("one group per row"). */
  nullable?: string;
  /** A value outside `range` that is also valid and turns the parameter off (abits 16). */
  off?: number;
  /** A boolean parameter's second flag, which sets it to false (--no-bit-balance). */
  negFlag?: string;
  range?: ParamRange;
  choices?: readonly string[];
  doc: string;
  /** What a method does with its default, when more than the value (e.g. AWQ's group fallback). */
  defaultNote?: Partial<Record<Method, string>>;
}

/** Every parameter of every method, in the key order of a resolved spec. */
export const QUANT_PARAMS: readonly QuantParam[] = [
  {
    key: "groupSize",
    flag: "group",
    arg: "G",
    kind: "int",
    nullable: "one group per row",
    range: { min: 1 },
    doc: "columns per scale group; must divide every layer's input width",
    defaultNote: {
      awq: "one group per row when 128 does not divide every layer's input width",
    },
  },
  { key: "sym", flag: "sym", kind: "boolean", doc: "symmetric grid (zero fixed at 2^(b−1))" },
  {
    key: "actOrder",
    flag: "act-order",
    kind: "boolean",
    doc: "quantize columns by descending diag(H)",
  },
  {
    key: "staticGroups",
    flag: "static-groups",
    kind: "boolean",
    doc: "group parameters from the unpermuted weights",
  },
  {
    key: "trueSequential",
    flag: "no-true-sequential",
    kind: "boolean",
    negated: true,
    doc: "quantize all sub-layers of a block from the same inputs",
  },
  {
    key: "blocksize",
    flag: "blocksize",
    arg: "N",
    kind: "int",
    range: { min: 1 },
    doc: "columns per lazy-update block",
  },
  {
    key: "percdamp",
    flag: "percdamp",
    arg: "F",
    kind: "number",
    range: { min: 0 },
    doc: "damping, a fraction of mean(diag H)",
  },
  {
    key: "nGrid",
    flag: "grid",
    arg: "N",
    kind: "int",
    range: { min: 1 },
    doc: "scale ratios searched, and the clip grid's steps",
  },
  {
    key: "maxShrink",
    flag: "max-shrink",
    arg: "F",
    kind: "number",
    range: { min: 0, max: 1, maxOpen: true },
    doc: "largest fraction of amax|w| clipping may remove",
  },
  {
    key: "nSampleTokens",
    flag: "clip-tokens",
    arg: "N",
    kind: "int",
    range: { min: 1 },
    doc: "calibration tokens the clip search samples",
  },
  {
    key: "sensitivePct",
    flag: "sensitive",
    arg: "P",
    kind: "number",
    range: { min: 0, max: 100 },
    doc: "% of weights kept sparse by Fisher value (e.g. 0.05)",
  },
  {
    key: "outlierPct",
    flag: "outliers",
    arg: "P",
    kind: "number",
    nullable: "none",
    range: { min: 0, max: 100, minOpen: true, maxOpen: true },
    doc: "% of weights kept sparse as outliers (searches the range r)",
  },
  {
    key: "outlierRange",
    flag: "outlier-range",
    arg: "R",
    kind: "number",
    nullable: "none",
    range: { min: 0 },
    doc: "outlier range r directly (T = max(|q1 − r·IQR|, |q3 + r·IQR|))",
  },
  {
    key: "fisherSamples",
    flag: "fisher-samples",
    arg: "N",
    kind: "int",
    range: { min: 1 },
    doc: "calibration windows of the Fisher pass",
  },
  {
    key: "kmeansIters",
    flag: "kmeans-iters",
    arg: "N",
    kind: "int",
    range: { min: 1 },
    doc: "most Lloyd iterations per row",
  },
  {
    key: "kmeansTol",
    flag: "kmeans-tol",
    arg: "T",
    kind: "number",
    range: { min: 0 },
    doc: "Lloyd's relative tolerance",
  },
  {
    key: "alpha",
    flag: "alpha",
    arg: "F",
    kind: "number",
    range: { min: 0, max: 1 },
    doc: "SmoothQuant's migration strength: s = max|X|^α / max|W|^(1−α)",
  },
  {
    key: "epochs",
    flag: "epochs",
    arg: "N",
    kind: "int",
    nullable: "40 at 2 bits and W8A8, else 20 (ABQ-LLM's scripts)",
    range: { min: 0 },
    doc: "ABQ-LLM's passes over the calibration windows per block",
  },
  {
    key: "letLr",
    flag: "let-lr",
    arg: "F",
    kind: "number",
    range: { min: 0 },
    doc: "ABQ-LLM's AdamW learning rate of the equivalent-transformation scales",
  },
  {
    key: "lwcLr",
    flag: "lwc-lr",
    arg: "F",
    kind: "number",
    range: { min: 0 },
    doc: "ABQ-LLM's AdamW learning rate of the weight-clipping bounds",
  },
  {
    key: "abits",
    flag: "abits",
    arg: "A",
    kind: "int",
    range: { min: MIN_BITS, max: MAX_BITS },
    off: 16,
    doc: "bits of the dynamic per-token asymmetric quantization of every linear's input",
  },
  {
    key: "kvBits",
    flag: "kv-bits",
    arg: "K",
    kind: "int",
    nullable: "as --abits",
    range: { min: MIN_BITS, max: MAX_BITS },
    off: 16,
    doc: "bits of Q, K (after RoPE) and V per head and token; the softmax output stays fp32",
  },
  {
    key: "bitBalance",
    flag: "bit-balance",
    negFlag: "no-bit-balance",
    kind: "boolean",
    doc: "2-bit asymmetric grids get a fifth level (ABQ-LLM's W2*; weights stored as 3-bit codes)",
  },
  {
    key: "calib.source",
    flag: "calib",
    arg: "SRC",
    kind: "choice",
    choices: CALIB_SOURCES,
    doc: "calibration data",
  },
  {
    key: "calib.nsamples",
    flag: "nsamples",
    arg: "N",
    kind: "int",
    range: { min: 1 },
    doc: "calibration windows",
  },
  {
    key: "calib.seqlen",
    flag: "calib-seqlen",
    arg: "N",
    kind: "int",
    nullable:
      "2048 (GPTQ's), AWQ and SqueezeLLM's Fisher 512 (their code's), or the model's max_seq_len if shorter",
    range: { min: 1 },
    doc: "tokens per calibration window",
  },
  {
    key: "calib.seed",
    flag: "seed",
    arg: "S",
    kind: "int",
    range: { min: 0 },
    doc: "seed of the calibration draw (and of SqueezeLLM's k-means)",
  },
];

/** The value at `key` ("a" or "a.b") of `o`, or undefined. */
export function getPath(o: unknown, key: string): unknown {
  let v = o;
  for (const k of key.split(".")) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return v;
}

/** The methods that take parameter `p`, and their defaults. */
export function paramDefaults(p: QuantParam): Map<Method, unknown> {
  const out = new Map<Method, unknown>();
  for (const m of METHODS) {
    const v = getPath(DEFAULTS[m], p.key);
    if (v !== undefined) out.set(m, v);
  }
  return out;
}

/** Whether method `m` takes parameter `p`. */
export function appliesTo(p: QuantParam, m: Method): boolean {
  return getPath(DEFAULTS[m], p.key) !== undefined;
}

/** "in 0..100", "in (0, 100)", "≥ 1". */
export function describeRange(r: ParamRange): string {
  if (r.max === undefined) return `${r.minOpen ? ">" : "≥"} ${r.min}`;
  if (!r.minOpen && !r.maxOpen) return `in ${r.min}..${r.max}`;
  return `in ${r.minOpen ? "(" : "["}${r.min}, ${r.max}${r.maxOpen ? ")" : "]"}`;
}

/**
 * Null when `value` is valid for `p`, else the message, naming the flag:
 * `--sensitive must be a number in 0..100, got 150`.
 */
export function paramError(p: QuantParam, value: unknown): string | null {
  const got = typeof value === "string" ? `"${value}"` : String(value);
  if (value === null) return p.nullable ? null : `--${p.flag} must be given a value, got null`;
  if (p.off !== undefined && value === p.off) return null;
  switch (p.kind) {
    case "boolean":
      return typeof value === "boolean" ? null : `--${p.flag} is a flag, got ${got}`;
    case "choice":
      return p.choices!.includes(value as string)
        ? null
        : `--${p.flag} must be one of ${p.choices!.join(", ")}; got ${got}`;
    case "int":
    case "number": {
      const n = value as number;
      const what = p.kind === "int" ? "an integer" : "a number";
      const r = p.range!;
      const ok = typeof n === "number" && Number.isFinite(n) &&
        (p.kind === "number" || Number.isInteger(n)) &&
        (r.minOpen ? n > r.min : n >= r.min) &&
        (r.max === undefined || (r.maxOpen ? n < r.max : n <= r.max));
      const off = p.off !== undefined ? ` or ${p.off} (off)` : "";
      return ok ? null : `--${p.flag} must be ${what} ${describeRange(r)}${off}, got ${got}`;
    }
  }
}

/** Sets the value at `key` ("a" or "a.b") of `o`, creating the inner object. */
export function setPath(o: Record<string, unknown>, key: string, v: unknown): void {
  const ks = key.split(".");
  let t = o;
  for (const k of ks.slice(0, -1)) t = (t[k] ??= {}) as Record<string, unknown>;
  t[ks.at(-1)!] = v;
}

/**
 * The spec of `method` at `bits` with the table's defaults (a fresh object).
 *
 * @param method one of {@linkcode METHODS}
 * @param bits 2..8
 * @returns the default spec, keys in table order
 * @throws {RangeError} for bits outside 2..8
 * @example
 * ```ts
 * defaultSpec("awq", 3).groupSize; // 128
 * ```
 */
export function defaultSpec<M extends Method>(method: M, bits: number): SpecOf<M> {
  if (!(METHODS as readonly string[]).includes(method)) {
    throw new RangeError(`unknown quantization method "${method}"; expected ${METHODS.join(", ")}`);
  }
  checkBits(bits);
  return build(method, bits, () => undefined) as SpecOf<M>;
}

/** A spec of `method`/`bits` with every parameter from `given(p)`, else the default, in table order. */
function build(method: Method, bits: number, given: (p: QuantParam) => unknown): QuantSpec {
  const out: Record<string, unknown> = { method, bits };
  for (const p of QUANT_PARAMS) {
    const d = getPath(DEFAULTS[method], p.key);
    if (d === undefined) continue;
    const v = given(p);
    setPath(out, p.key, v === undefined ? d : v);
  }
  return canonicalAct(out as unknown as QuantSpec);
}

/** Methods whose weights sit on a uniform grid (bit balance applies to them). */
const NON_UNIFORM: readonly Method[] = ["squeezellm"];

/** The bits of Q, K and V of `s`: kvBits, else abits; 16 = off. */
export function effectiveKvBits(s: ActSpec): number {
  return s.kvBits ?? s.abits ?? 16;
}

/**
 * Whether bit balance changes anything in `s`: a 2-bit asymmetric weight
 * grid (uniform methods), 2-bit activations, or 2-bit Q/K/V.
 */
export function hasTwoBitGrid(s: QuantSpec): boolean {
  const sym = "sym" in s && s.sym === true;
  return (s.bits === 2 && !sym && !NON_UNIFORM.includes(s.method)) || s.abits === 2 ||
    effectiveKvBits(s) === 2;
}

/**
 * `s` (modified) with the activation fields in their one form: kvBits equal
 * to abits becomes null; bit balance that changes nothing becomes false; and
 * each field that is off (abits 16, kvBits null, bitBalance false) is
 * removed, so a weight-only spec keeps its pre-existing identity.
 */
function canonicalAct<S extends QuantSpec>(s: S): S {
  if (s.kvBits !== undefined && s.kvBits !== null && s.kvBits === (s.abits ?? 16)) s.kvBits = null;
  if (s.bitBalance && !hasTwoBitGrid(s)) s.bitBalance = false;
  if (s.abits === 16) delete s.abits;
  if (s.kvBits === null) delete s.kvBits;
  // ABQ's default is on: its false stays, or resolving again would turn it back on
  if (s.bitBalance === false && s.method !== "abq") delete s.bitBalance;
  return s;
}

/**
 * The spec of `method`/`bits` made of the parameters of `o` that the method
 * takes (others are ignored: e.g. an older file's options), defaults for the
 * rest, checked.
 *
 * @throws {RangeError} for an unknown method, bad bits or a value out of range
 */
export function pickSpec(method: string, bits: number, o: Record<string, unknown>): QuantSpec {
  const s = defaultSpec(method as Method, bits);
  const out = build(s.method, bits, (p) => getPath(o, p.key));
  checkSpec(out);
  return out;
}

/** Keys of `o` (nested one level for objects), as paths. */
function paths(o: Record<string, unknown>): string[] {
  return Object.entries(o).flatMap(([k, v]) =>
    v !== null && typeof v === "object" && !Array.isArray(v)
      ? Object.keys(v).map((j) => `${k}.${j}`)
      : [k]
  );
}

/**
 * Throws a RangeError naming the first parameter of `spec` that its method
 * does not take or whose value is out of range; checks the combinations
 * (static groups need groups; --outliers and --outlier-range exclude each
 * other).
 */
export function checkSpec(spec: QuantSpec): void {
  const m = spec.method;
  if (!(METHODS as readonly string[]).includes(m)) {
    throw new RangeError(`unknown quantization method "${m}"; expected ${METHODS.join(", ")}`);
  }
  checkBits(spec.bits);
  for (const key of paths(spec as unknown as Record<string, unknown>)) {
    if (key === "method" || key === "bits") continue;
    const p = QUANT_PARAMS.find((q) => q.key === key);
    if (!p) throw new RangeError(`${m} spec: unknown parameter "${key}"`);
    if (!appliesTo(p, m)) {
      throw new RangeError(`${m} spec: ${key} (--${p.flag}) does not apply to ${m}`);
    }
    const v = getPath(spec, key);
    if (v === undefined) continue;
    const err = paramError(p, v);
    if (err) throw new RangeError(`${m} spec: ${key}: ${err}`);
  }
  if (m === "squeezellm" && spec.outlierPct != null && spec.outlierRange != null) {
    throw new RangeError(`squeezellm spec: give --outliers P or --outlier-range R, not both`);
  }
  if (m === "gptq" && spec.staticGroups && spec.groupSize === null) {
    throw new RangeError(
      `gptq spec: --static-groups needs --group G (with one group per row there are no groups to fix)`,
    );
  }
}

/** Widths of the layers a group size must divide (the input width of each linear). */
export function inputWidths(c: LlamaConfig): number[] {
  return [...new Set(LINEAR_NAMES.map((n) => linearShape(c, n)[1]))].sort((a, b) => a - b);
}

/** Options of {@linkcode resolveSpec}. */
export interface ResolveOptions {
  /**
   * The group size was asked for (on the command line): one that does not
   * divide every width is an error even where the method's default would
   * fall back to one group per row. @default false
   */
  groupGiven?: boolean;
}

/**
 * The group size to use for `spec` on a model: null (per row) or a size that
 * divides every layer's input width. A method's default group that does not
 * divide every width (AWQ's 128 on stories260K: 64 and 172) falls back to one
 * group per row unless `groupGiven`; any other group that does not divide is
 * an error listing the valid groups.
 */
export function resolveGroup(
  spec: QuantSpec,
  c: LlamaConfig,
  opts: ResolveOptions = {},
): number | null {
  if (!("groupSize" in spec)) return null;
  const g = spec.groupSize;
  if (g === null) return null;
  const widths = inputWidths(c);
  if (widths.every((w) => w % g === 0)) return g;
  if (!opts.groupGiven && g === (DEFAULTS[spec.method] as { groupSize?: number }).groupSize) {
    return null;
  }
  const valid = [];
  for (let d = 1; d <= widths[0]; d++) if (widths.every((w) => w % d === 0)) valid.push(d);
  throw new RangeError(
    `--group ${g} does not divide every layer's input width (${widths.join(", ")}); ` +
      `valid groups for this model: ${valid.join(", ")}, or omit --group for one group per row`,
  );
}

/**
 * `spec` with every default filled in, checked ({@linkcode checkSpec}), its
 * group resolved to the model ({@linkcode resolveGroup}) and the calibration
 * window length set: a plain JSON-able object with keys in table order, the
 * identity of the quantization.
 *
 * @param spec a spec (missing parameters take the table's defaults)
 * @param config the model
 * @param opts whether the group was asked for
 * @returns the resolved spec (a fresh object)
 * @throws {RangeError} naming the parameter that does not apply or is out of range
 * @example
 * ```ts
 * resolveSpec(defaultSpec("awq", 3), stories260K.config).groupSize; // null (128 ∤ 172)
 * ```
 */
export function resolveSpec<S extends QuantSpec>(
  spec: S,
  config: LlamaConfig,
  opts: ResolveOptions = {},
): S {
  checkSpec(spec);
  const full = build(spec.method, spec.bits, (p) => getPath(spec, p.key));
  if ("groupSize" in full) full.groupSize = resolveGroup(full, config, opts);
  canonicalAct(full);
  if ("calib" in full) full.calib.seqlen ??= defaultCalibSeqlen(full.method, config);
  return full as S;
}

/**
 * Artifact name carrying the config, e.g. "gptq.w3.g128.act",
 * "squeezellm.w3.s0.45", "gptq.w4a8" (activations at 8 bits), "rtn.w2*a8"
 * (bit balance), "rtn.w4a8kv4" (Q/K/V at other bits than the activations),
 * for people (never a key: keys hash {@linkcode resolveSpec}'s output).
 */
export function variantName(s: QuantSpec): string {
  const star = (b: number) => (s.bitBalance && b === 2 ? "*" : "");
  const weightsStar = hasTwoBitGrid({ ...s, abits: 16, kvBits: 16 } as QuantSpec)
    ? star(s.bits)
    : "";
  const a = s.abits ?? 16, kv = effectiveKvBits(s);
  const parts: string[] = [
    s.method,
    `w${s.bits}${weightsStar}${a < 16 ? `a${a}${star(a)}` : ""}` +
    (kv !== a ? `kv${kv}${star(kv)}` : ""),
  ];
  if ("groupSize" in s && s.groupSize !== null) parts.push(`g${s.groupSize}`);
  if ("sym" in s && s.sym) parts.push("sym");
  if (s.method === "gptq") {
    if (s.actOrder) parts.push("act");
    if (s.staticGroups) parts.push("static");
    if (!s.trueSequential) parts.push("nts");
  }
  if (s.method === "smoothquant" && s.alpha !== DEFAULTS.smoothquant.alpha) {
    parts.push(`alpha${s.alpha}`);
  }
  if (s.method === "squeezellm") {
    const sparse = s.sensitivePct + (s.outlierPct ?? 0);
    if (s.outlierRange !== null) parts.push(`s${s.sensitivePct}`, `r${s.outlierRange}`);
    else if (sparse > 0) parts.push(`s${+sparse.toFixed(4)}`);
  }
  return parts.join(".");
}

/** The range of bits every method takes, for help text. */
export const BITS_RANGE: ParamRange = { min: MIN_BITS, max: MAX_BITS };
