/**
 * One LLaMA block on the GPU over a window of T tokens, for layer-by-layer
 * calibration (GPTQ's `llama_sequential`, AWQ's calibration features): the
 * block inputs of the calibration windows stay in GPU buffers, the block
 * runs there stage by stage, and the inputs of its linears are left in GPU
 * buffers for the Hessian (kernels/hessian.ts `addBatchGpu`) and |x|
 * accumulators ({@linkcode AbsMeanAccumulator}), or copied out as the run
 * passes them, so only the statistics (and the features AWQ asks for)
 * travel back to the host.
 *
 * The block is kernels/prefill.ts's, built from the same kernels (RMSNorm,
 * the tiled matmul of kernels/matmul.ts in each linear's format, RoPE,
 * tiled grouped-query attention, SwiGLU, residual adds) and cut at the
 * stages of model/forward.ts's `block` (`BlockStage`): "qkv" (the inputs of
 * wq, wk, wv: RMSNorm(x) in `xn`), "wo" (attention output in `att`), "ffn"
 * (RMSNorm of the updated stream in `xn`: w1, w3), "block" (the whole
 * block; w2's input, silu(w1 x) ⊙ w3 x, stays in `h1`).
 *
 * A run copies window j of the inputs buffer into the residual stream x,
 * encodes the stages up to `until`, and with `writeBack` copies x back over
 * window j as the run leaves it: the block's output (GPTQ's `outs =
 * layer(inps)`, in place; AWQ's stream kept on the device), or the stream
 * after the attention's residual addition for a run until "ffn" (AWQ's
 * staged collection). Linears are replaced one
 * at a time ({@linkcode GpuBlock.setLinear}) once solved, so later stages
 * see the quantized outputs, as true-sequential GPTQ does.
 *
 * @module
 */
import type { LayerWeights, LinearName, LlamaConfig } from "../model/config.ts";
import { headSize, kvDim, LINEAR_NAMES, linearShape, ropeTables } from "../model/config.ts";
import type { LinearWeight } from "../quant/format.ts";
import type { Gpu, Kernel } from "./device.ts";
import { dispatchSize, OwnedBuffers, readBuffer } from "./device.ts";
import { uploadLinear } from "./matvec.ts";
import type { MatmulPlan } from "./matmul.ts";
import { createMatmulPlan, UniformLayout } from "./matmul.ts";
import type { GpuLinear } from "./matvec.ts";
import {
  attentionShape,
  PREFILL_KERNEL,
  PREFILL_LAYOUTS,
  PREFILL_WG,
  type PrefillOpName,
} from "./prefill.ts";

/** How far a block runs (model/forward.ts's BlockStage, in order). */
export type GpuBlockStage = "qkv" | "wo" | "ffn" | "block";
const STAGES: readonly GpuBlockStage[] = ["qkv", "wo", "ffn", "block"];

/**
 * The steps of a block, in order: attention RMSNorm; q/k/v, RoPE and
 * attention; wo and its residual addition; FFN RMSNorm; w1, w3, SwiGLU, w2
 * and its residual addition. A stage ends after one of them.
 */
const SEGMENTS = 5;
/** The last segment of each stage. */
const STAGE_END: Record<GpuBlockStage, number> = { qkv: 0, wo: 1, ffn: 3, block: 4 };

/** Where a run starts: the block's input, or the stream after the attention's residual addition. */
export type GpuBlockStart = "input" | "attention";
const START_SEGMENT: Record<GpuBlockStart, number> = { input: 0, attention: 3 };

/**
 * An activation of the block a run can copy out (the names of quant/awq.ts's
 * calibration features): the inputs of wq/wk/wv ("attnIn"), of wo
 * ("woIn"), of w1/w3 ("ffnIn"), of w2 ("w2In"), and the outputs of wo
 * ("attnOut") and w2 ("ffnOut"), each [T, width] (width hiddenDim for w2In,
 * dim for the others).
 */
export type GpuBlockActivation = "attnIn" | "woIn" | "attnOut" | "ffnIn" | "w2In" | "ffnOut";

/** The buffer holding each activation and the segment after which it is there. */
const ACTIVATION_AT: Record<GpuBlockActivation, { buf: "xn" | "att" | "o" | "h1"; seg: number }> = {
  attnIn: { buf: "xn", seg: 0 },
  woIn: { buf: "att", seg: 1 },
  attnOut: { buf: "o", seg: 2 },
  ffnIn: { buf: "xn", seg: 3 },
  w2In: { buf: "h1", seg: 4 },
  ffnOut: { buf: "o", seg: 4 },
};

/** Options of {@linkcode GpuBlock.run}. */
export interface GpuBlockRunOptions {
  /** How far to run. @default "block" */
  until?: GpuBlockStage;
  /**
   * Where the window's stream stands: "input" (the block's input) or
   * "attention" (after the attention's residual addition: only the FFN half
   * runs, so `until` must be "ffn" or "block"). @default "input"
   */
  from?: GpuBlockStart;
  /**
   * Copy the stream x as the run leaves it over the window's input: the
   * block's output (until "block"), or the stream after the attention
   * (from "input" until "ffn"); the run must pass a residual addition
   * ({@linkcode GpuBlock.residualsAdded}). @default false
   */
  writeBack?: boolean;
  /** Activations copied out as the run passes them, each into [T, width] floats from offset 0. */
  taps?: Partial<Record<GpuBlockActivation, GPUBuffer>>;
}

/** The buffer holding each linear's input once its stage has run. */
const INPUT_OF: Record<LinearName, "xn" | "att" | "h1"> = {
  wq: "xn",
  wk: "xn",
  wv: "xn",
  wo: "att",
  w1: "xn",
  w3: "xn",
  w2: "h1",
};

type Step = { pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; x: number; y: number } | {
  plan: MatmulPlan;
};

/**
 * One block of `config` on the GPU for windows of T tokens (module doc).
 * {@linkcode GpuBlock.create}, then {@linkcode GpuBlock.setLayer} per block,
 * {@linkcode GpuBlock.run} per window, {@linkcode GpuBlock.release}.
 */
export class GpuBlock {
  readonly #owned: OwnedBuffers;
  readonly #bufs: Record<"x" | "xn" | "q" | "k" | "v" | "att" | "o" | "h1" | "h3", GPUBuffer>;
  readonly #cos: GPUBuffer;
  readonly #sin: GPUBuffer;
  /** This layer's uploads (norms, linears, plans), released when the layer changes. */
  #layer: OwnedBuffers | null = null;
  #linears = new Map<LinearName, { lin: GpuLinear; plan: MatmulPlan }>();
  /** This layer's two RMSNorm steps (attention, feed-forward). */
  #norms: [Step, Step] | null = null;
  /** Steps of each stage (rebuilt when a linear changes). */
  #stages: Step[][] = [];
  #fixed: Record<"rope" | "attention" | "add" | "swiglu", Step[]> | null = null;

  private constructor(readonly gpu: Gpu, readonly config: LlamaConfig, readonly T: number) {
    const { dim, hiddenDim } = config;
    const kv = kvDim(config);
    this.#owned = new OwnedBuffers(gpu.pool);
    const STO = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    const buf = (floats: number, label: string) => this.#owned.acquire(4 * floats, STO, label);
    this.#bufs = {
      x: buf(T * dim, "block-x"),
      xn: buf(T * dim, "block-xn"),
      q: buf(T * dim, "block-q"),
      k: buf(T * kv, "block-k"),
      v: buf(T * kv, "block-v"),
      att: buf(T * dim, "block-att"),
      o: buf(T * dim, "block-o"),
      h1: buf(T * hiddenDim, "block-h1"),
      h3: buf(T * hiddenDim, "block-h3"),
    };
    const [cos, sin] = ropeTables(config, T);
    this.#cos = this.#owned.upload(cos, GPUBufferUsage.COPY_SRC, "block-rope-cos");
    this.#sin = this.#owned.upload(sin, GPUBufferUsage.COPY_SRC, "block-rope-sin");
  }

  /**
   * Allocates one window's activations and the RoPE tables.
   * @param gpu the device
   * @param config the model
   * @param T tokens per window (≤ max_seq_len)
   */
  static async create(gpu: Gpu, config: LlamaConfig, T: number): Promise<GpuBlock> {
    if (!(Number.isInteger(T) && T >= 1 && T <= config.maxSeqLen)) {
      throw new RangeError(`GpuBlock: T must be in 1..${config.maxSeqLen}, got ${T}`);
    }
    if (headSize(config) % 4 !== 0) {
      throw new RangeError(`GpuBlock: head size ${headSize(config)} must be a multiple of 4`);
    }
    const b = new GpuBlock(gpu, config, T);
    await b.#buildFixed();
    return b;
  }

  /** The buffer holding `name`'s input [T, cols] after a run that reached its stage. */
  input(name: LinearName): GPUBuffer {
    return this.#bufs[INPUT_OF[name]];
  }

  /** The first stage whose run passes every activation of `names` (for taps). */
  static stageReaching(names: readonly GpuBlockActivation[]): GpuBlockStage {
    const seg = Math.max(...names.map((n) => ACTIVATION_AT[n].seg));
    return STAGES.find((s) => STAGE_END[s] >= seg)!;
  }

  /**
   * The sub-block outputs a run from `from` until `until` adds to the stream
   * x (its residual additions, in order): where x stands when the run ends.
   */
  static residualsAdded(
    from: GpuBlockStart,
    until: GpuBlockStage,
  ): ("attnOut" | "ffnOut")[] {
    const first = START_SEGMENT[from], last = STAGE_END[until];
    return (["attnOut", "ffnOut"] as const).filter((n) =>
      first <= ACTIVATION_AT[n].seg && ACTIVATION_AT[n].seg <= last
    );
  }

  /** The stage after which `name`'s input is in {@linkcode GpuBlock.input}. */
  static stageOf(names: readonly LinearName[]): GpuBlockStage {
    const at: Record<LinearName, number> = { wq: 0, wk: 0, wv: 0, wo: 1, w1: 2, w3: 2, w2: 3 };
    return STAGES[Math.max(...names.map((n) => at[n]))];
  }

  async #op(name: PrefillOpName, values: Record<string, number>, bufs: GPUBuffer[], n: number) {
    const { device } = this.gpu;
    const hs = headSize(this.config);
    const pipeline = await this.gpu.pipelines.get(PREFILL_KERNEL, {
      op: name,
      headSize: hs,
      ...attentionShape(hs, this.config.nHeads / this.config.nKvHeads),
    });
    const grid = dispatchSize(n, device.limits);
    const L = PREFILL_LAYOUTS[name] as UniformLayout<string>;
    const u = this.#owned.acquire(L.size, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, name);
    device.queue.writeBuffer(u, 0, L.pack({ ...values, nx: grid.nx }));
    const bindGroup = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [u, ...bufs].map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    return { pipeline, bindGroup, x: grid.x, y: grid.y };
  }

  /** The layer-independent steps: RoPE, attention, adds, SwiGLU (norms need the layer's weights). */
  async #buildFixed(): Promise<void> {
    const c = this.config, T = this.T, B = this.#bufs;
    const { dim, hiddenDim, nHeads, nKvHeads } = c;
    const kv = kvDim(c), hs = headSize(c), WG = PREFILL_WG;
    const groups = (n: number) => Math.ceil(n / WG);
    const shape = attentionShape(hs, nHeads / nKvHeads);
    const rope = [];
    for (const [b, width] of [[B.q, dim], [B.k, kv]] as const) {
      const n = (T * width) / 2;
      rope.push(await this.#op("rope", { n, width, hs }, [b, this.#cos, this.#sin], groups(n)));
    }
    this.#fixed = {
      rope,
      attention: [
        await this.#op(
          "attention",
          { T, nHeads, group: nHeads / nKvHeads, dim, kv, scale: 1 / Math.sqrt(hs) },
          [B.q, B.k, B.v, B.att],
          Math.ceil(T / (WG * shape.queriesPerThread)) * (nHeads / shape.headsPerThread),
        ),
      ],
      add: [await this.#op("add", { n: T * dim }, [B.o, B.x], groups(T * dim))],
      swiglu: [
        await this.#op("swiglu", { n: T * hiddenDim }, [B.h1, B.h3], groups(T * hiddenDim)),
      ],
    };
  }

  /**
   * Makes this the block of `lw`: uploads its norms and every linear
   * (`linears(name)`, any storage format), releasing the previous layer's.
   * @param lw the block's weights (the norms are read from here)
   * @param linears each linear's stored weight
   */
  async setLayer(lw: LayerWeights, linears: (name: LinearName) => LinearWeight): Promise<void> {
    this.#releaseLayer();
    this.#layer = new OwnedBuffers(this.gpu.pool);
    const c = this.config, T = this.T, B = this.#bufs;
    const norm = (w: Float32Array, label: string) =>
      this.#op("rmsnorm", { T, dim: c.dim, eps: c.normEps }, [
        B.x,
        this.#layer!.upload(w, GPUBufferUsage.COPY_SRC, label),
        B.xn,
      ], Math.ceil(T / PREFILL_WG));
    this.#norms = [
      await norm(lw.attnNorm, "block-attn-norm"),
      await norm(lw.ffnNorm, "block-ffn-norm"),
    ];
    for (const name of LINEAR_NAMES) await this.#upload(name, linears(name));
    this.#buildStages();
  }

  /**
   * Replaces one linear of the current layer (e.g. by its quantized form).
   * @param name the linear
   * @param w its new stored weight
   */
  async setLinear(name: LinearName, w: LinearWeight): Promise<void> {
    if (!this.#layer) throw new Error("GpuBlock.setLinear(): call setLayer() first");
    const old = this.#linears.get(name)!;
    old.plan.release();
    old.lin.release();
    await this.#upload(name, w);
    this.#buildStages();
  }

  async #upload(name: LinearName, w: LinearWeight): Promise<void> {
    const [rows, cols] = linearShape(this.config, name);
    if (w.dense.rows !== rows || w.dense.cols !== cols) {
      throw new RangeError(
        `GpuBlock: ${name} is ${w.dense.rows}×${w.dense.cols}, the config needs ${rows}×${cols}`,
      );
    }
    const B = this.#bufs;
    const io: Record<LinearName, [GPUBuffer, GPUBuffer]> = {
      wq: [B.xn, B.q],
      wk: [B.xn, B.k],
      wv: [B.xn, B.v],
      wo: [B.att, B.o],
      w1: [B.xn, B.h1],
      w3: [B.xn, B.h3],
      w2: [B.h1, B.o],
    };
    const lin = uploadLinear(this.gpu, w);
    const plan = await createMatmulPlan(this.gpu, lin, {
      tokens: this.T,
      x: io[name][0],
      y: io[name][1],
    });
    this.#linears.set(name, { lin, plan });
  }

  #buildStages(): void {
    const f = this.#fixed!, [attnNorm, ffnNorm] = this.#norms!;
    const lin = (name: LinearName): Step => ({ plan: this.#linears.get(name)!.plan });
    this.#stages = [ // the SEGMENTS
      [attnNorm],
      [lin("wq"), lin("wk"), lin("wv"), ...f.rope, ...f.attention],
      [lin("wo"), ...f.add],
      [ffnNorm],
      [lin("w1"), lin("w3"), ...f.swiglu, lin("w2"), ...f.add],
    ];
  }

  /**
   * Runs the block on window `window` of `inputs` ([windows, T, dim] fp32)
   * from `opts.from` up to `opts.until`, copying out `opts.taps` as it
   * passes them; with `writeBack` the stream as the run leaves it (the
   * block's output, or the stream after the attention) replaces that window.
   * Submitted at once; later submits see the results.
   *
   * @param inputs the block inputs (or streams, with from "attention") of every window
   * @param window which window
   * @param opts how far, from where, write-back, taps
   */
  run(inputs: GPUBuffer, window: number, opts: GpuBlockRunOptions = {}): void {
    if (this.#stages.length === 0) throw new Error("GpuBlock.run(): call setLayer() first");
    const { until = "block", from = "input", writeBack = false, taps = {} } = opts;
    const first = START_SEGMENT[from], last = STAGE_END[until];
    if (writeBack && GpuBlock.residualsAdded(from, until).length === 0) {
      throw new RangeError(
        `GpuBlock.run(): writeBack needs a run through a residual addition; from "${from}" ` +
          `until "${until}" passes none`,
      );
    }
    if (last < first) {
      throw new RangeError(`GpuBlock.run(): from "${from}" the run reaches "ffn" at least`);
    }
    const copies = Array.from({ length: SEGMENTS }, () => [] as [GPUBuffer, GPUBuffer, number][]);
    for (const [name, to] of Object.entries(taps) as [GpuBlockActivation, GPUBuffer][]) {
      const { buf, seg } = ACTIVATION_AT[name];
      if (seg < first || seg > last) {
        throw new RangeError(
          `GpuBlock.run(): ${name} is not computed by a run from "${from}" until "${until}"`,
        );
      }
      const width = name === "w2In" ? this.config.hiddenDim : this.config.dim;
      copies[seg].push([this.#bufs[buf], to, 4 * this.T * width]);
    }
    const { device } = this.gpu;
    const bytes = 4 * this.T * this.config.dim, off = window * bytes;
    const enc = device.createCommandEncoder();
    enc.copyBufferToBuffer(inputs, off, this.#bufs.x, 0, bytes);
    let pass = enc.beginComputePass();
    for (let seg = first; seg <= last; seg++) {
      for (const s of this.#stages[seg]) {
        if ("plan" in s) s.plan.encode(pass);
        else {
          pass.setPipeline(s.pipeline);
          pass.setBindGroup(0, s.bindGroup);
          pass.dispatchWorkgroups(s.x, s.y);
        }
      }
      if (copies[seg].length > 0) {
        pass.end();
        for (const [src, dst, n] of copies[seg]) enc.copyBufferToBuffer(src, 0, dst, 0, n);
        pass = enc.beginComputePass();
      }
    }
    pass.end();
    if (writeBack) enc.copyBufferToBuffer(this.#bufs.x, 0, inputs, off, bytes);
    device.queue.submit([enc.finish()]);
  }

  #releaseLayer(): void {
    for (const { lin, plan } of this.#linears.values()) {
      plan.release();
      lin.release();
    }
    this.#linears.clear();
    this.#layer?.releaseAll();
    this.#layer = null;
    this.#norms = null;
    this.#stages = [];
  }

  /** Returns every buffer to the pool. */
  release(): void {
    this.#releaseLayer();
    this.#owned.releaseAll();
  }
}

const ABS_PARAMS = new UniformLayout("Params", { rows: "u32", cols: "u32" });

/** S[c] += Σ_t |X[t, c]|: one thread per column. */
export const ABS_SUM_KERNEL: Kernel<Record<string, never>> = {
  name: "abs-sum",
  key: () => "",
  wgsl: () =>
    `${ABS_PARAMS.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>; // [rows, cols]
@group(0) @binding(2) var<storage, read_write> S: array<f32>; // [cols]
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let c = g.x;
  if (c >= P.cols) { return; }
  var s = 0.0;
  for (var t = 0u; t < P.rows; t++) { s += abs(X[t * P.cols + c]); }
  S[c] += s;
}`,
};

/**
 * AWQ's activation statistic of one linear input, accumulated on the GPU:
 * the per-channel mean |x| over every row added
 * (`x.abs().view(-1, x.shape[-1]).mean(0)` of llm-awq's `get_act_scale`).
 */
export class AbsMeanAccumulator {
  readonly #sum: GPUBuffer;
  readonly #owned: OwnedBuffers;
  #rows = 0;

  private constructor(
    readonly gpu: Gpu,
    readonly cols: number,
    readonly pipeline: GPUComputePipeline,
  ) {
    this.#owned = new OwnedBuffers(gpu.pool);
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    this.#sum = this.#owned.acquire(4 * cols, usage, "abs-sum");
    const enc = gpu.device.createCommandEncoder();
    enc.clearBuffer(this.#sum);
    gpu.device.queue.submit([enc.finish()]);
  }

  /**
   * An accumulator of `cols` channels.
   * @param gpu the device
   * @param cols channels (the linear's input width)
   */
  static async create(gpu: Gpu, cols: number): Promise<AbsMeanAccumulator> {
    return new AbsMeanAccumulator(gpu, cols, await gpu.pipelines.get(ABS_SUM_KERNEL, {}));
  }

  /**
   * Adds Σ |x| of `rows` rows already on the GPU.
   * @param x buffer holding [rows, cols] floats from offset 0
   * @param rows rows
   */
  addGpu(x: GPUBuffer, rows: number): void {
    const { device } = this.gpu;
    const u = this.#owned.acquire(
      ABS_PARAMS.size,
      GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      "abs-params",
    );
    device.queue.writeBuffer(u, 0, ABS_PARAMS.pack({ rows, cols: this.cols }));
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(this.pipeline);
    pass.setBindGroup(
      0,
      device.createBindGroup({
        layout: this.pipeline.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: { buffer: u } },
          { binding: 1, resource: { buffer: x, offset: 0, size: 4 * rows * this.cols } },
          { binding: 2, resource: { buffer: this.#sum } },
        ],
      }),
    );
    pass.dispatchWorkgroups(Math.ceil(this.cols / 64));
    pass.end();
    device.queue.submit([enc.finish()]);
    this.#rows += rows;
  }

  /** The mean |x| per channel [cols] (float64); the accumulator is released. */
  async finish(): Promise<Float64Array> {
    if (this.#rows === 0) throw new RangeError("AbsMeanAccumulator.finish(): no rows added");
    try {
      const s = new Float32Array(await readBuffer(this.gpu, this.#sum, 4 * this.cols));
      return Float64Array.from(s, (v) => v / this.#rows);
    } finally {
      this.#owned.releaseAll();
    }
  }

  /** Returns the buffers unread (after a failure); a finished accumulator has none left. */
  release(): void {
    this.#owned.releaseAll();
  }
}
