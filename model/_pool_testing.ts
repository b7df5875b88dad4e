/**
 * Test helpers of the worker pool's users: count the workers a run starts and
 * the ones it leaves alive.
 *
 * @module
 */

/** Runs f with globalThis.Worker replaced by a subclass that counts live workers. */
export async function withTrackedWorkers(
  f: () => Promise<void>,
): Promise<{ created: number; live: number }> {
  const Original = globalThis.Worker;
  const live = new Set<Worker>();
  let created = 0;
  globalThis.Worker = class extends Original {
    constructor(...args: ConstructorParameters<typeof Worker>) {
      super(...args);
      live.add(this);
      created++;
    }
    override terminate() {
      live.delete(this);
      super.terminate();
    }
  };
  try {
    await f();
  } finally {
    globalThis.Worker = Original;
  }
  return { created, live: live.size };
}
