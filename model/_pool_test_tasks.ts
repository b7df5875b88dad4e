/**
 * A task handler for model/pool_test.ts: task k → k² after k·`spin` busy
 * iterations (so later tasks may finish first), k ticks each, and a
 * RangeError on task `failAt`.
 *
 * @module
 */
import type { TaskHandler } from "./pool.ts";

/** The test handler's init message. */
export interface SquareInit {
  /** Busy-loop iterations per unit of k (makes tasks finish out of order). */
  spin: number;
  /** The task that throws, if any. */
  failAt?: number;
  /** Throw in setup instead. */
  failSetup?: boolean;
}

/** task k → k², with k ticks; throws on `failAt`. */
export const squareTasks: TaskHandler<SquareInit, number, Float64Array<ArrayBuffer>> = {
  setup(init) {
    if (init.failSetup) throw new TypeError("setup refused");
    return (k, tick) => {
      if (k === init.failAt) throw new RangeError(`task ${k} refused`);
      let x = 0;
      for (let i = 0; i < k * init.spin; i++) x += Math.sqrt(i);
      for (let i = 0; i < k; i++) tick();
      return Float64Array.of(k * k, x >= 0 ? 1 : 0);
    };
  },
  transfer: (r) => [r.buffer],
};
