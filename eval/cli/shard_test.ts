import assert from "node:assert/strict";
import { parseShard, ShardError, shardUnits } from "./shard.ts";
import type { Unit } from "./plan.ts";

Deno.test("parseShard() reads i/n and a Slurm job array's task id and count", () => {
  assert.deepEqual(parseShard("1/4"), { index: 1, count: 4 });
  const env = (vars: Record<string, string>) => (k: string) => vars[k];
  assert.deepEqual(
    parseShard("auto", env({ SLURM_ARRAY_TASK_ID: "1", SLURM_ARRAY_TASK_COUNT: "2" })),
    { index: 1, count: 2 },
  );
  assert.deepEqual(
    parseShard(
      "auto",
      env({ SLURM_ARRAY_TASK_ID: "7", SLURM_ARRAY_TASK_MIN: "5", SLURM_ARRAY_TASK_MAX: "8" }),
    ),
    { index: 2, count: 4 },
  );
  for (const [v, re] of [["4/4", /0 ≤ i < n, got i = 4, n = 4/], ["1-2", /"i\/n"/]] as const) {
    assert.throws(() => parseShard(v), (e) => e instanceof ShardError && re.test(e.message));
  }
  assert.throws(() => parseShard("auto", env({})), /SLURM_ARRAY_TASK_ID is not set/);
  assert.throws(
    () => parseShard("auto", env({ SLURM_ARRAY_TASK_ID: "0" })),
    /neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX/,
  );
});

Deno.test("shardUnits() deals disjoint parts covering the plan, balanced, the same in every process", () => {
  const costs = [37, 37, 43, 43, 70, 70, 60, 60, 61, 61, 62, 62, 2, 90, 12];
  const units: Unit[] = costs.map((cost, i) => ({ id: `u${i}`, jobs: [], cost }));
  for (const n of [1, 2, 3, 5]) {
    const parts = Array.from({ length: n }, (_, i) => shardUnits(units, { index: i, count: n }));
    const ids = parts.flatMap((p) => p.map((u) => u.id)).sort();
    assert.deepEqual(ids, units.map((u) => u.id).sort());
    assert.equal(new Set(ids).size, units.length);
    const loads = parts.map((p) => p.reduce((s, u) => s + u.cost, 0));
    assert.ok(Math.max(...loads) - Math.min(...loads) <= Math.max(...costs), `${loads}`);
    for (const p of parts) {
      assert.deepEqual(p, [...p].sort((a, b) => units.indexOf(a) - units.indexOf(b)));
    }
    assert.deepEqual(parts[0], shardUnits(units, { index: 0, count: n }));
  }
});
