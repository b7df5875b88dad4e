import assert from "node:assert/strict";
import { type SquareInit, squareTasks } from "./_pool_test_tasks.ts";
import { runTasks } from "./pool.ts";
import { withTrackedWorkers } from "./_pool_testing.ts";

const WORKER = new URL("./_pool_test_worker.ts", import.meta.url);

/** Runs `tasks` squares on `workers` workers; returns the results in delivery order and the ticks. */
async function squares(workers: number, tasks: number, init: SquareInit) {
  const delivered: [number, number][] = [];
  let ticks = 0;
  await runTasks({
    name: "squares",
    worker: WORKER,
    handler: squareTasks,
    workers,
    init,
    tasks,
    task: (k) => tasks - 1 - k, // the first tasks are the slowest
    onResult: (k, r) => delivered.push([k, r[0]]),
    onTick: () => ticks++,
  });
  return { delivered, ticks };
}

Deno.test("runTasks() delivers results in task order on 0, 1 and 3 workers", async () => {
  const n = 9;
  const want = Array.from({ length: n }, (_, k) => [k, (n - 1 - k) ** 2]);
  const ticks = (n * (n - 1)) / 2;
  for (const workers of [0, 1, 3]) {
    const r = await squares(workers, n, { spin: 20000 });
    assert.deepEqual(r.delivered, want, `${workers} workers`);
    assert.equal(r.ticks, ticks, `${workers} workers`);
  }
});

Deno.test("runTasks() starts no more workers than tasks and terminates them all", async () => {
  const ok = await withTrackedWorkers(async () => {
    const r = await squares(4, 2, { spin: 0 });
    assert.deepEqual(r.delivered, [[0, 1], [1, 0]]);
  });
  assert.deepEqual(ok, { created: 2, live: 0 });
  const none = await withTrackedWorkers(async () => {
    assert.deepEqual((await squares(3, 0, { spin: 0 })).delivered, []);
  });
  assert.deepEqual(none, { created: 0, live: 0 });
});

Deno.test("runTasks() rejects with the task's error class, named by the pool, and terminates every worker", async () => {
  const failed = await withTrackedWorkers(async () => {
    await assert.rejects(
      () => squares(2, 6, { spin: 0, failAt: 3 }),
      (e: Error) => e instanceof RangeError && e.message === "squares worker: task 3 refused",
    );
  });
  assert.deepEqual(failed, { created: 2, live: 0 });
  await assert.rejects(
    () => squares(2, 6, { spin: 0, failSetup: true }),
    (e: Error) => e instanceof TypeError && e.message === "squares worker: setup refused",
  );
  // Inline, the error is the task's own.
  await assert.rejects(() => squares(0, 6, { spin: 0, failAt: 3 }), /^RangeError: task 3 refused$/);
});

Deno.test("runTasks() rejects with the error of a task that cannot be built, its class kept, and terminates every worker", async () => {
  class BuildError extends Error {}
  for (const workers of [0, 2]) {
    const r = await withTrackedWorkers(async () => {
      await assert.rejects(
        () =>
          runTasks({
            name: "squares",
            worker: WORKER,
            handler: squareTasks,
            workers,
            init: { spin: 0 },
            tasks: 6,
            task: (k) => {
              if (k === 3) throw new BuildError("task 3 cannot be built");
              return k;
            },
            onResult: () => {},
          }),
        (e: Error) => e instanceof BuildError && e.message === "task 3 cannot be built",
      );
    });
    assert.deepEqual(r, { created: workers, live: 0 }, `${workers} workers`);
  }
});

Deno.test("runTasks() reports a worker module that fails to load", async () => {
  const broken = new URL("./_pool_test_broken_worker.ts", import.meta.url);
  const r = await withTrackedWorkers(async () => {
    await assert.rejects(
      () =>
        runTasks({
          name: "squares",
          worker: broken,
          handler: squareTasks,
          workers: 1,
          init: { spin: 0 },
          tasks: 1,
          task: (k) => k,
          onResult: () => {},
        }),
      /squares worker failed \(.*_pool_test_broken_worker\.ts\): .*fails to load on purpose/,
    );
  });
  assert.deepEqual(r, { created: 1, live: 0 });
});

Deno.test("runTasks() rejects a negative or fractional worker count", async () => {
  await assert.rejects(
    () => squares(-1, 1, { spin: 0 }),
    /squares: workers must be an integer ≥ 0, got -1/,
  );
  await assert.rejects(() => squares(1.5, 1, { spin: 0 }), /got 1\.5/);
});
