/**
 * Shards of a run plan for a cluster's scheduler: `--shard i/n` runs the
 * i-th (0-based) of n disjoint parts of the plan, balanced by each unit's
 * estimated cost; `--shard auto` reads a Slurm job array's task id and
 * count from the environment. Every process computes the same split from
 * the same plan, so n processes together run each unit exactly once.
 *
 * @module
 */
import type { Unit } from "./plan.ts";

/** The i-th of n parts. */
export interface Shard {
  /** 0-based. */
  index: number;
  count: number;
}

/** A `--shard` value that cannot be used; the message says what is expected. */
export class ShardError extends Error {
  override name = "ShardError";
}

/**
 * Parses `--shard`: "i/n" with 0 ≤ i < n, or "auto" for a Slurm job array
 * (SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT, or the id's offset from
 * SLURM_ARRAY_TASK_MIN over MAX − MIN + 1 tasks).
 *
 * @param value the option's value
 * @param env environment lookup @default {Deno.env.get}
 * @returns the shard
 * @throws {ShardError} naming --shard and what was found
 * @example
 * ```ts
 * parseShard("1/4"); // { index: 1, count: 4 }
 * parseShard("auto", (k) => ({ SLURM_ARRAY_TASK_ID: "3", SLURM_ARRAY_TASK_MIN: "2",
 *   SLURM_ARRAY_TASK_MAX: "5" })[k]); // { index: 1, count: 4 }
 * ```
 */
export function parseShard(
  value: string,
  env: (name: string) => string | undefined = (k) => Deno.env.get(k),
): Shard {
  if (value === "auto") {
    const id = env("SLURM_ARRAY_TASK_ID");
    if (id === undefined) {
      throw new ShardError(
        `--shard auto: SLURM_ARRAY_TASK_ID is not set; run it as a Slurm job array ` +
          `(sbatch --array=0-N) or give --shard i/n`,
      );
    }
    const count = env("SLURM_ARRAY_TASK_COUNT");
    const min = env("SLURM_ARRAY_TASK_MIN");
    const max = env("SLURM_ARRAY_TASK_MAX");
    const lo = min === undefined ? 0 : intOf(min, "SLURM_ARRAY_TASK_MIN");
    const n = count !== undefined
      ? intOf(count, "SLURM_ARRAY_TASK_COUNT")
      : max !== undefined
      ? intOf(max, "SLURM_ARRAY_TASK_MAX") - lo + 1
      : NaN;
    if (!Number.isFinite(n)) {
      throw new ShardError(
        `--shard auto: neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX is set`,
      );
    }
    return check(intOf(id, "SLURM_ARRAY_TASK_ID") - lo, n, `--shard auto (task ${id})`);
  }
  const m = /^(\d+)\/(\d+)$/.exec(value.trim());
  if (!m) throw new ShardError(`--shard must be "i/n" (0 ≤ i < n) or "auto"; got "${value}"`);
  return check(Number(m[1]), Number(m[2]), `--shard ${value}`);
}

function intOf(v: string, name: string): number {
  if (!/^\d+$/.test(v.trim())) {
    throw new ShardError(`--shard auto: ${name}="${v}" is not an integer`);
  }
  return Number(v);
}

function check(index: number, count: number, what: string): Shard {
  if (count < 1 || index < 0 || index >= count) {
    throw new ShardError(`${what}: expected 0 ≤ i < n, got i = ${index}, n = ${count}`);
  }
  return { index, count };
}

/**
 * The units of shard `s`: units are dealt, most expensive first, to the
 * shard with the least estimated work so far (ties: the lowest index), and
 * each shard runs its own in plan order. Deterministic: the same units give
 * the same split in every process.
 *
 * @param units the plan's units
 * @param s the shard
 * @returns the shard's units, in plan order
 * @example
 * ```ts
 * const mine = shardUnits(plan.units, { index: 0, count: 2 });
 * ```
 */
export function shardUnits(units: readonly Unit[], s: Shard): Unit[] {
  const order = units.map((u, i) => ({ u, i })).sort((a, b) => b.u.cost - a.u.cost || a.i - b.i);
  const load = new Array(s.count).fill(0);
  const owner = new Array(units.length).fill(0);
  for (const { u, i } of order) {
    let best = 0;
    for (let k = 1; k < s.count; k++) if (load[k] < load[best]) best = k;
    load[best] += u.cost;
    owner[i] = best;
  }
  return units.filter((_, i) => owner[i] === s.index);
}
