/**
 * Perplexity with every block linear computed by the W×A kernels: the
 * check that packing, per-token activation codes, zero points and the
 * epilogue of kernels/bitplane.ts (or kernels/int8.ts) give the model that
 * the CPU evaluation (eval/perplexity.ts with the model's linears:
 * quant/wa_int.ts's integer products) evaluates: the same perplexity
 * (eval/wa_perplexity_gpu_test.ts: equal on stories260K).
 *
 * The forward is model/forward.ts's, on the CPU, block by block; only the
 * outputs of the seven linears of each block come from the GPU. A block's
 * linears depend on each other in four stages (wq, wk, wv → wo → w1, w3 →
 * w2), so each block runs `block()` up to a stage with the GPU outputs of
 * the earlier stages put in place (`onLinearOutput`), its inputs go to the
 * GPU (quantized per token to integer codes exactly as quant/act_quant.ts's
 * grid rounds them), and a last pass runs the block with all seven outputs
 * in place. Q, K and V are fake-quantized after RoPE by the same hook as the
 * CPU path (`kvBits`); the classifier is fp32 in both.
 *
 * Loss and perplexity are eval/perplexity.ts's (`windowPlan`,
 * `windowLoss`, `perplexityResult`): GPTQ's protocol.
 *
 * @module
 */
import type { LinearName, LlamaWeights } from "../model/config.ts";
import { LINEAR_NAMES, linearKey, linearShape, protocolSeqlen } from "../model/config.ts";
import type { BlockHooks, BlockStage } from "../model/forward.ts";
import { block, embed, head, RunState } from "../model/forward.ts";
import type { ActQuantConfig } from "../quant/act_quant.ts";
import { ACT_OFF_BITS, actQuantHooks, asymMaxq } from "../quant/act_quant.ts";
import type { QuantizedLinear, UniformTensor } from "../quant/format.ts";
import type { Gpu } from "../kernels/device.ts";
import { readBuffer } from "../kernels/device.ts";
import type { WaWeight } from "../kernels/_wa_kernel.ts";
import type { BitplanePlan } from "../kernels/bitplane.ts";
import type { Int8Plan } from "../kernels/int8.ts";
import { checkWaWeight, packActPlanes, packWeightPlanes } from "../kernels/bitplane_reference.ts";
import { createBitplanePlan, uploadWeightPlanes, WA_MAX_BATCH } from "../kernels/bitplane.ts";
import { createInt8Plan, packInt8Acts, uploadInt8Weight } from "../kernels/int8.ts";
import { planesFor, quantizeTokens } from "./wa_linear.ts";
import type { PerplexityResult } from "./perplexity.ts";
import { checkWindowLoss, perplexityResult, windowLoss, windowPlan } from "./perplexity.ts";

/** The block's linears by the stage after which their inputs exist, in order. */
const STAGES: readonly [BlockStage, readonly LinearName[]][] = [
  ["qkv", ["wq", "wk", "wv"]],
  ["wo", ["wo"]],
  ["ffn", ["w1", "w3"]],
  ["block", ["w2"]],
];

/** Which W×A kernel computes the linears. */
export type WaKernelName = "bitplane" | "int8";

/**
 * Every block linear of a model uploaded for a W×A kernel, with plans per
 * batch size made on first use; {@linkcode WaLinears.run} computes a set of
 * linears for T tokens with one readback each.
 */
export class WaLinears {
  readonly #plans = new Map<string, BitplanePlan | Int8Plan>();
  readonly #out = new Map<string, GPUBuffer>();

  private constructor(
    readonly gpu: Gpu,
    readonly kernel: WaKernelName,
    readonly maxq: number,
    readonly weights: ReadonlyMap<string, WaWeight>,
  ) {}

  /**
   * Uploads every linear.
   *
   * @param gpu the device
   * @param linears "layers.{l}.{name}" → uniform weight (no gIdx; groups of whole 32-column blocks or one per row)
   * @param maxq largest activation code (quant/act_quant.ts's `asymMaxq`)
   * @param kernel which kernel @default "bitplane"
   * @returns the uploaded set; `release()` it when done
   */
  static create(
    gpu: Gpu,
    linears: ReadonlyMap<string, UniformTensor>,
    maxq: number,
    kernel: WaKernelName = "bitplane",
  ): WaLinears {
    const up = new Map<string, WaWeight>();
    try {
      for (const [key, w] of linears) {
        up.set(
          key,
          kernel === "int8"
            ? uploadInt8Weight(gpu, w)
            : uploadWeightPlanes(gpu, packWeightPlanes(w)),
        );
      }
    } catch (e) {
      for (const w of up.values()) w.release();
      throw e;
    }
    return new WaLinears(gpu, kernel, maxq, up);
  }

  /**
   * Uploads the linears of a quantized model (quant/methods.ts's `QuantizedModel.linears`).
   *
   * @param gpu the device
   * @param linears "layers.{l}.{name}" → quantized linear
   * @param maxq largest activation code
   * @param kernel which kernel @default "bitplane"
   * @returns the uploaded set
   * @throws RangeError naming the first linear the W×A kernels cannot take (a lookup table,
   *   a sparse part, act-order, groups that are not whole 32-column blocks)
   */
  static fromQuantized(
    gpu: Gpu,
    linears: ReadonlyMap<string, QuantizedLinear>,
    maxq: number,
    kernel: WaKernelName = "bitplane",
  ): WaLinears {
    return WaLinears.create(gpu, uniformLinears(linears), maxq, kernel);
  }

  async #plan(key: string, lin: WaWeight, B: number) {
    const id = `${key}|${B}`;
    let p = this.#plans.get(id);
    if (!p) {
      p = this.kernel === "int8"
        ? await createInt8Plan(this.gpu, lin, { batch: B })
        : await createBitplanePlan(this.gpu, lin, planesFor(this.maxq), { batch: B });
      this.#plans.set(id, p);
    }
    return p;
  }

  /**
   * y = Q_act(x) · Wᵀ of linear `key` for T tokens: the tokens in chunks of
   * 8, each chunk's output copied into one buffer, read back once.
   *
   * @param key "layers.{l}.{name}"
   * @param x input [≥ T, cols]
   * @param T tokens
   * @returns y [T, rows]
   */
  async run(key: string, x: Float32Array, T: number): Promise<Float32Array> {
    const lin = this.weights.get(key);
    if (!lin) throw new RangeError(`WaLinears.run(): no linear "${key}" was uploaded`);
    const { device, pool } = this.gpu;
    const bytes = T * lin.rows * 4;
    let out = this.#out.get(key);
    if (!out || out.size < bytes) {
      if (out) pool.release(out);
      out = pool.acquire(bytes, GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST, "wa-out");
      this.#out.set(key, out);
    }
    for (let t0 = 0; t0 < T; t0 += WA_MAX_BATCH) {
      const n = Math.min(WA_MAX_BATCH, T - t0);
      const plan = await this.#plan(key, lin, n);
      const codes = quantizeTokens(x, lin.cols, t0, n, this.maxq);
      if ("packed" in plan) plan.write(packInt8Acts(codes));
      else plan.write(packActPlanes(codes));
      const enc = device.createCommandEncoder();
      const pass = enc.beginComputePass();
      plan.encode(pass);
      pass.end();
      enc.copyBufferToBuffer(plan.y, 0, out, t0 * lin.rows * 4, n * lin.rows * 4);
      device.queue.submit([enc.finish()]);
    }
    return new Float32Array(await readBuffer(this.gpu, out, bytes));
  }

  /** Returns every buffer to the pool. */
  release(): void {
    for (const p of this.#plans.values()) p.release();
    for (const b of this.#out.values()) this.gpu.pool.release(b);
    for (const w of this.weights.values()) w.release();
    this.#plans.clear();
    this.#out.clear();
  }
}

/**
 * The uniform dense parts of quantized linears, checked for the W×A kernels.
 *
 * @param linears "layers.{l}.{name}" → quantized linear
 * @returns the same keys → uniform tensors
 * @throws RangeError naming the first linear that is not a uniform tensor the kernels take
 */
export function uniformLinears(
  linears: ReadonlyMap<string, QuantizedLinear>,
): Map<string, UniformTensor> {
  const out = new Map<string, UniformTensor>();
  for (const [key, q] of linears) {
    if (q.dense.kind !== "uniform" || q.sparse) {
      throw new RangeError(
        `${key}: the W×A kernels take uniform codes without a sparse part, found ` +
          `${q.dense.kind}${q.sparse ? " + sparse" : ""}`,
      );
    }
    checkWaWeight(q.dense, key);
    out.set(key, q.dense);
  }
  return out;
}

/** Options of {@linkcode waPerplexity}. */
export interface WaPerplexityOptions {
  /** Window length. @default model/config.ts `protocolSeqlen` (2048, or max_seq_len if shorter) */
  seqlen?: number;
  /** Evaluate only the first `limit` windows. */
  limit?: number;
  /** Called after each window. */
  onProgress?: (done: number, total: number) => void;
  /** Names the model in errors. @default "the model" */
  label?: string;
}

/**
 * Logits [T, vocab] of one window with every block linear from `lin`.
 *
 * @param weights the model (norms, embeddings, classifier; its linears are not read for the output)
 * @param lin the uploaded linears
 * @param act the activation quantization (its kvBits quantize Q, K, V as the fake-quant path does)
 * @param tokens the window [T]
 * @param s run state [≥ T]
 * @returns logits (a view of `s.logits`)
 */
export async function waForward(
  weights: LlamaWeights,
  lin: WaLinears,
  act: ActQuantConfig,
  tokens: ArrayLike<number>,
  s: RunState,
): Promise<Float32Array> {
  const c = weights.config;
  const T = tokens.length;
  const x = s.x.subarray(0, T * c.dim);
  const scratch = new Float32Array(T * c.dim); // [T, dim] the residual stream of an early stop
  embed(weights, tokens, x);
  const kv = actQuantHooks({ ...act, abits: ACT_OFF_BITS }, c, T); // Q, K, V only
  for (let l = 0; l < c.nLayers; l++) {
    const outs = new Map<LinearName, Float32Array>(); // GPU outputs [T, outF]
    const inputs = new Map<LinearName, Float32Array>();
    const hooks: BlockHooks = {
      onQkv: kv.onQkv,
      onLinearInput(_l, name, xin, n) {
        const [, cols] = linearShape(c, name);
        if (!outs.has(name)) inputs.set(name, xin.slice(0, n * cols));
      },
      onLinearOutput(_l, name, y) {
        const o = outs.get(name);
        if (o) y.set(o);
      },
    };
    for (const [stage, names] of STAGES) {
      scratch.set(x);
      inputs.clear();
      block(c, weights.layers[l], l, scratch, T, s, hooks, stage);
      for (const name of names) {
        const xin = inputs.get(name);
        if (!xin) throw new Error(`waForward(): block ${l} reported no input for ${name}`);
        outs.set(name, await lin.run(linearKey(l, name), xin, T));
      }
    }
    block(c, weights.layers[l], l, x, T, s, hooks);
  }
  return head(weights, x, T, s);
}

/**
 * GPTQ's perplexity of `tokens` with every block linear through a W×A kernel.
 *
 * @param weights the model (norms, embeddings, classifier)
 * @param lin every block linear, uploaded ({@linkcode WaLinears.create})
 * @param act the activation quantization the fake-quant path evaluates with (abits must be < 16)
 * @param tokens the token stream
 * @param opts window length, limit, progress, label
 * @returns the same record as eval/perplexity.ts's `perplexity`
 * @example
 * ```ts
 * const act = { abits: 8, kvBits: 8, bitBalance: false };
 * const lin = WaLinears.create(gpu, linears, asymMaxq(8, false));
 * const r = await waPerplexity(weights, lin, act, set.tokens, { seqlen: 128, limit: 2 });
 * lin.release();
 * ```
 */
export async function waPerplexity(
  weights: LlamaWeights,
  lin: WaLinears,
  act: ActQuantConfig,
  tokens: Int32Array,
  opts: WaPerplexityOptions = {},
): Promise<PerplexityResult> {
  if (!(act.abits < ACT_OFF_BITS)) {
    throw new RangeError(`waPerplexity(): the W×A kernels need quantized activations (abits < 16)`);
  }
  if (lin.maxq !== asymMaxq(act.abits, act.bitBalance)) {
    throw new RangeError(
      `waPerplexity(): the linears were uploaded for codes up to ${lin.maxq}, abits ${act.abits} ` +
        `(bit balance ${act.bitBalance}) needs ${asymMaxq(act.abits, act.bitBalance)}`,
    );
  }
  for (let l = 0; l < weights.config.nLayers; l++) {
    for (const name of LINEAR_NAMES) {
      if (!lin.weights.has(linearKey(l, name))) {
        throw new RangeError(`waPerplexity(): ${linearKey(l, name)} is not among the linears`);
      }
    }
  }
  const { maxSeqLen, vocabSize } = weights.config;
  const seqlen = opts.seqlen ?? protocolSeqlen(weights.config);
  const { windows, available } = windowPlan(tokens.length, seqlen, opts.limit, maxSeqLen);
  const t0 = performance.now();
  const s = new RunState(weights.config, seqlen);
  const nll = new Float64Array(windows); // [windows]
  for (let i = 0; i < windows; i++) {
    const win = tokens.subarray(i * seqlen, (i + 1) * seqlen);
    const logits = await waForward(weights, lin, act, win, s);
    nll[i] = checkWindowLoss(windowLoss(logits, win, vocabSize), i, seqlen, opts.label, "kernels") *
      seqlen;
    opts.onProgress?.(i + 1, windows);
  }
  return perplexityResult(nll, seqlen, available, (performance.now() - t0) / 1000, opts.label);
}
