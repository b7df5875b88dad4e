/**
 * One worker pool for every parallel pass (perplexity windows, Fisher
 * chunks, k-means rows): N module workers, tasks handed out one at a time
 * to whichever worker is free, results delivered in task order.
 *
 * A pass is a {@linkcode TaskHandler}: `setup(init)` builds a thread's state
 * (weights, buffers) once and returns the function that runs one task. The
 * same handler runs on this thread when `workers` is 0, so the two paths
 * cannot drift apart. A worker module is two lines:
 *
 * ```ts
 * import { serveTasks } from "../model/pool.ts";
 * serveTasks(perplexityTasks);
 * ```
 *
 * Protocol (structured clone; buffers listed by `transferTask` /
 * `handler.transfer` are moved, not copied):
 *
 *   caller → worker  { type: "init", init }            once, first
 *                    { type: "task", k, task }         one outstanding per worker
 *   worker → caller  { type: "tick", k }               one unit of progress inside task k
 *                    { type: "result", k, result }
 *                    { type: "error", k, name, message, stack }
 *
 * Results reach `onResult` strictly in task order (0, 1, 2, …) whatever
 * order the workers finish in, so a caller that folds them (sums, merges)
 * gets the same numbers for any number of workers. The first error rejects
 * the pass with the error's class (RangeError stays RangeError) and a
 * message naming the pool; every worker is terminated when the pass ends,
 * also on failure.
 *
 * @module
 */

/** Called as work advances: `done` of `total` units of `what` (e.g. "windows"). */
export type ProgressCallback = (done: number, total: number, what: string) => void;

/**
 * One kind of parallel task: what a worker module serves and what runs
 * inline when there are no workers.
 */
export interface TaskHandler<Init, Task, Result> {
  /**
   * Builds one thread's state from `init` and returns the task function;
   * `tick()` reports one unit of progress from inside a task.
   */
  setup(init: Init): (task: Task, tick: () => void) => Result;
  /** Buffers of a result to move back rather than copy. */
  transfer?(result: Result): Transferable[];
}

/** Options of {@linkcode runTasks}. */
export interface RunTasksOptions<Init, Task, Result> {
  /** Names the pool in error messages ("Fisher", "perplexity"). */
  name: string;
  /** The worker module: it calls {@linkcode serveTasks} with `handler`. */
  worker: URL;
  /** The handler `worker` serves, run on this thread when `workers` is 0. */
  handler: TaskHandler<Init, Task, Result>;
  /** Worker threads (0 = this thread); never more than the tasks. */
  workers: number;
  /** Sent once to every worker (structured clone) and passed to `handler.setup`. */
  init: Init;
  /** Number of tasks. */
  tasks: number;
  /** Builds task k, when it is handed out. */
  task(k: number): Task;
  /** Buffers of a task to move to the worker rather than copy. */
  transferTask?(task: Task): Transferable[];
  /** Receives every result, in task order. */
  onResult(k: number, result: Result): void;
  /** Called for every `tick()` of any task. */
  onTick?(): void;
}

type ToWorker<Init, Task> = { type: "init"; init: Init } | { type: "task"; k: number; task: Task };

type FromWorker<Result> =
  | { type: "tick"; k: number }
  | { type: "result"; k: number; result: Result }
  | { type: "error"; k: number | null; name: string; message: string; stack?: string };

/** The error classes that survive the trip back from a worker under their own class. */
const ERROR_CLASSES: Record<string, new (message: string) => Error> = {
  Error,
  RangeError,
  TypeError,
};

/**
 * Runs `tasks` tasks of `handler` on `workers` module workers (or on this
 * thread when `workers` is 0) and hands each result to `onResult` in task
 * order.
 *
 * @param opts worker module, handler, init message, tasks and sinks
 * @returns when every result has been delivered
 * @throws the first task's error (its class kept, the message prefixed with
 *   "{name} worker: " when it came from a worker), or an Error when a worker
 *   failed to load or crashed
 *
 * @example
 * ```ts
 * const nll = new Float64Array(windows);
 * await runTasks({
 *   name: "perplexity",
 *   worker: new URL("../eval/perplexity_worker.ts", import.meta.url),
 *   handler: perplexityTasks,
 *   workers: 2,
 *   init: { weights, tokens, seqlen },
 *   tasks: windows,
 *   task: (k) => k,
 *   onResult: (k, r) => (nll[k] = r),
 * });
 * ```
 */
export async function runTasks<Init, Task, Result>(
  opts: RunTasksOptions<Init, Task, Result>,
): Promise<void> {
  const { name, tasks } = opts;
  if (!Number.isInteger(opts.workers) || opts.workers < 0) {
    throw new RangeError(`${name}: workers must be an integer ≥ 0, got ${opts.workers}`);
  }
  const nWorkers = Math.min(opts.workers, tasks);
  if (nWorkers === 0) {
    const run = opts.handler.setup(opts.init);
    const tick = () => opts.onTick?.();
    for (let k = 0; k < tasks; k++) opts.onResult(k, run(opts.task(k), tick));
    return;
  }
  const pool: Worker[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      const pending = new Map<number, Result>();
      let next = 0, delivered = 0, settled = false;
      const fail = (e: Error) => {
        if (!settled) reject(e);
        settled = true;
      };
      const send = (worker: Worker) => {
        if (next >= tasks) return;
        const k = next++;
        try { // a task that cannot be built (or sent) fails the pass, not the event loop
          const task = opts.task(k);
          const msg: ToWorker<Init, Task> = { type: "task", k, task };
          worker.postMessage(msg, opts.transferTask?.(task) ?? []);
        } catch (e) {
          fail(e as Error);
        }
      };
      const onMessage = (worker: Worker, m: FromWorker<Result>) => {
        if (settled) return;
        if (m.type === "tick") return opts.onTick?.();
        if (m.type === "error") {
          const Class = ERROR_CLASSES[m.name] ?? Error;
          const e = new Class(`${name} worker: ${m.message}`);
          if (m.stack) e.stack = `${e.name}: ${e.message}\n(in the worker) ${m.stack}`;
          return fail(e);
        }
        pending.set(m.k, m.result);
        try {
          while (pending.has(delivered)) {
            const r = pending.get(delivered) as Result;
            pending.delete(delivered);
            opts.onResult(delivered++, r);
          }
        } catch (e) {
          return fail(e as Error);
        }
        if (delivered === tasks) {
          settled = true;
          return resolve();
        }
        send(worker);
      };
      for (let i = 0; i < nWorkers; i++) {
        const worker = new Worker(opts.worker, { type: "module" });
        pool.push(worker);
        worker.onmessage = (e: MessageEvent<FromWorker<Result>>) => onMessage(worker, e.data);
        worker.onerror = (e: ErrorEvent) => {
          e.preventDefault();
          fail(new Error(`${name} worker failed (${opts.worker.pathname}): ${e.message}`));
        };
        worker.onmessageerror = () =>
          fail(new Error(`${name} worker: a message could not be read`));
        const init: ToWorker<Init, Task> = { type: "init", init: opts.init };
        worker.postMessage(init);
        send(worker);
      }
    });
  } finally {
    for (const worker of pool) worker.terminate();
  }
}

/** The part of a worker's global scope {@linkcode serveTasks} uses. */
interface WorkerScope {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(message: unknown, transfer?: Transferable[]): void;
}

/**
 * The worker side of {@linkcode runTasks}: answers the init message by
 * calling `handler.setup` and every task with its result (or its error).
 * Call it once, at the top level of a worker module.
 *
 * @param handler the task handler this worker serves
 */
export function serveTasks<Init, Task, Result>(handler: TaskHandler<Init, Task, Result>): void {
  const scope = globalThis as unknown as WorkerScope;
  let run: ((task: Task, tick: () => void) => Result) | undefined;
  const post = (m: FromWorker<Result>, transfer: Transferable[] = []) =>
    scope.postMessage(m, transfer);
  scope.onmessage = (e: MessageEvent<ToWorker<Init, Task>>) => {
    const m = e.data;
    const k = m.type === "task" ? m.k : null;
    try {
      if (m.type === "init") {
        run = handler.setup(m.init);
        return;
      }
      if (!run) throw new Error("task before a successful init");
      const result = run(m.task, () => post({ type: "tick", k: m.k }));
      post({ type: "result", k: m.k, result }, handler.transfer?.(result) ?? []);
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      post({ type: "error", k, name: e.name, message: e.message, stack: e.stack });
    }
  };
}
