/**
 * ABQ-LLM's training step on two threads: the windows are batch 1 and every
 * step depends on the last, so the threads split each step rather than the
 * windows. quant/abq_grad.ts cuts a step into {@linkcode PARTS} parts (half
 * the token rows, half the KV heads, half of each weight gradient's rows);
 * this thread runs part 0 and a worker of model/pool.ts part 1, on one
 * shared {@linkcode StepMemory}, meeting at a barrier (Atomics on a shared
 * Int32Array) seven times a step: at its start, around the attention,
 * between the loss's two passes, between the backward's three stages and at
 * its end. Every value is computed as one thread computes it, so the result
 * does not depend on the number of workers (tested).
 *
 * The worker runs one long task of the pool: a loop that waits at the
 * barrier for the next command (a step, a forward only, or exit) written
 * by this thread into the control words.
 *
 * @module
 */
import type { LayerWeights, LlamaConfig } from "../model/config.ts";
import { runTasks, type TaskHandler } from "../model/pool.ts";
import type { ActQuantConfig } from "./act_quant.ts";
import { AbqBlockState, type Lane, SOLO, type StepMemory, stepMemory } from "./abq_grad.ts";
import { type AbqLoss, lossTotal, type TeacherMap } from "./abq_loss.ts";

/** The control words (Int32Array on a SharedArrayBuffer). */
const ARRIVED = 0, GENERATION = 1, COMMAND = 2, LENGTH = 3, FAILED = 4, READY = 5, WORDS = 6;
/** Commands. */
const STEP = 1, FORWARD = 2, EXIT = 3;
/** Polls of the barrier before sleeping on it. */
const SPIN = 4000;

/**
 * A barrier of `lanes` threads on the control words: returns once all have
 * called it. Throws when another thread has failed (FAILED set).
 */
function barrier(ctrl: Int32Array, lanes: number): () => void {
  return () => {
    const gen = Atomics.load(ctrl, GENERATION);
    if (Atomics.add(ctrl, ARRIVED, 1) === lanes - 1) {
      Atomics.store(ctrl, ARRIVED, 0);
      Atomics.add(ctrl, GENERATION, 1);
      Atomics.notify(ctrl, GENERATION);
      return;
    }
    for (let i = 0; i < SPIN; i++) if (Atomics.load(ctrl, GENERATION) !== gen) return;
    while (Atomics.load(ctrl, GENERATION) === gen) {
      Atomics.wait(ctrl, GENERATION, gen, 1000);
      if (Atomics.load(ctrl, FAILED)) throw new Error("abq: the other thread of the step failed");
    }
  };
}

/** What the worker receives once. */
export interface AbqLaneInit {
  config: LlamaConfig;
  maxT: number;
  act: ActQuantConfig | null;
  memory: StepMemory;
  ctrl: SharedArrayBuffer;
}

/** The worker's task: part 1 of every step until the exit command. */
export const abqLaneTasks: TaskHandler<AbqLaneInit, null, number> = {
  setup(init) {
    const ctrl = new Int32Array(init.ctrl);
    const st = new AbqBlockState(init.config, init.maxT, init.act, undefined, init.memory);
    const lane: Lane = { parts: [1], sync: barrier(ctrl, 2) };
    return () => {
      Atomics.store(ctrl, READY, 1);
      try {
        for (let steps = 0;; steps++) {
          lane.sync();
          const cmd = Atomics.load(ctrl, COMMAND), T = Atomics.load(ctrl, LENGTH);
          if (cmd === EXIT) return steps;
          st.laneForward(lane, T);
          if (cmd === FORWARD) {
            lane.sync();
            continue;
          }
          st.laneLoss(lane, T);
          st.laneBackward(lane, T);
        }
      } catch (e) {
        Atomics.store(ctrl, FAILED, 1);
        Atomics.notify(ctrl, GENERATION);
        throw e;
      }
    };
  },
};

/**
 * The training steps of one model's ABQ run on this thread and at most one
 * worker ({@linkcode AbqSteps.start}); {@linkcode AbqSteps.close} ends the
 * worker.
 */
export class AbqSteps {
  private constructor(
    /** This thread's state; its `grads` hold the last step's gradients. */
    readonly st: AbqBlockState,
    private readonly lane: Lane,
    private readonly ctrl: Int32Array | null,
    private readonly done: Promise<void> | null,
  ) {}

  /**
   * Starts the steps of windows up to maxT tokens.
   *
   * @param config the model
   * @param maxT the longest window
   * @param act the quantized path's activation quantization
   * @param workers 0: every part on this thread; ≥ 1: part 1 on one worker
   */
  static async start(
    config: LlamaConfig,
    maxT: number,
    act: ActQuantConfig | null,
    workers: number,
  ): Promise<AbqSteps> {
    const memory = stepMemory(config, maxT, act);
    const st = new AbqBlockState(config, maxT, act, undefined, memory);
    if (workers < 1) return new AbqSteps(st, SOLO, null, null);
    const sab = new SharedArrayBuffer(WORDS * 4), ctrl = new Int32Array(sab);
    const done = runTasks<AbqLaneInit, null, number>({
      name: "abq",
      worker: new URL("./abq_worker.ts", import.meta.url),
      handler: abqLaneTasks,
      workers: 1,
      init: { config, maxT, act, memory, ctrl: sab },
      tasks: 1,
      task: () => null,
      onResult: () => {},
    });
    done.catch(() => {}); // awaited in close(); not unhandled meanwhile
    while (!Atomics.load(ctrl, READY)) {
      await Promise.race([done, new Promise((r) => setTimeout(r, 1))]);
    }
    return new AbqSteps(st, { parts: [0], sync: barrier(ctrl, 2) }, ctrl, done);
  }

  /** Writes the command and meets the worker at the start of a step. */
  private begin(cmd: number, T: number): void {
    if (!this.ctrl) return;
    Atomics.store(this.ctrl, COMMAND, cmd);
    Atomics.store(this.ctrl, LENGTH, T);
    this.lane.sync();
  }

  /**
   * One training step: the block with weights lw on x, the loss against T1,
   * T2 and the teacher, the gradients (in `st.grads`).
   */
  step(
    lw: LayerWeights,
    x: Float32Array,
    T1: Float32Array,
    T2: Float32Array,
    teacher: TeacherMap,
    T: number,
  ): AbqLoss {
    const { st, lane } = this;
    st.load(lw);
    st.setInput(x, T);
    st.setTargets(T1, T2, teacher, T);
    this.begin(STEP, T);
    st.laneForward(lane, T);
    st.laneLoss(lane, T);
    st.laneBackward(lane, T);
    return lossTotal(st.stats, T, st.c.dim);
  }

  /** The block with weights lw on x [T, dim]: its output [T, dim] (a view, valid until the next call). */
  forward(lw: LayerWeights, x: Float32Array, T: number): Float32Array {
    const { st, lane } = this;
    st.load(lw);
    st.setInput(x, T);
    this.begin(FORWARD, T);
    st.laneForward(lane, T);
    lane.sync();
    return st.output(T);
  }

  /** Ends the worker after a failure on this thread (its own error, if any, is dropped). */
  async abort(): Promise<void> {
    if (!this.ctrl || !this.done) return;
    Atomics.store(this.ctrl, FAILED, 1);
    Atomics.notify(this.ctrl, GENERATION);
    await this.done.catch(() => {});
  }

  /** Ends the worker; rethrows its error if it failed. */
  async close(): Promise<void> {
    if (!this.ctrl || !this.done) return;
    if (!Atomics.load(this.ctrl, FAILED)) this.begin(EXIT, 0);
    await this.done;
  }
}
