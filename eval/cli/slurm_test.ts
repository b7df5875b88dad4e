/**
 * `--shard auto` on a real Slurm: a one-node cluster (munged, slurmctld,
 * slurmd from Debian's slurm-wlm and munge) started by this test as root, an
 * `sbatch --array=0-1` of a small plan, and the merged shard stores checked
 * against an unsharded run. Skipped, with the reason printed, where Slurm
 * cannot start (not root, packages missing); never under CI=true, where
 * .ci/run installs them.
 */
import assert from "node:assert/strict";
import { SHARED_DATA } from "../../datasets/testing.ts";
import { mergeStores, ResultsStore } from "../../reports/store.ts";

const CLI = new URL("./main.ts", import.meta.url).pathname;
const dec = new TextDecoder();

async function sh(cmd: string, args: string[], env: Record<string, string> = {}) {
  const r = await new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" }).output();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

async function has(bin: string): Promise<boolean> {
  return (await sh("sh", ["-c", `command -v ${bin}`])).code === 0;
}

/** Why Slurm cannot start here, or null. */
async function cannotStart(): Promise<string | null> {
  if (Deno.uid() !== 0) return "not root (slurmd and munged are started as root)";
  for (const bin of ["munged", "slurmctld", "slurmd", "sbatch", "sinfo"]) {
    if (!(await has(bin))) return `${bin} is not installed (apt-get install -y slurm-wlm munge)`;
  }
  return null;
}

/** A one-node Slurm cluster in `dir`; stop() ends the daemons it started. */
async function startCluster(dir: string) {
  const host = Deno.hostname();
  const started: string[] = [];
  // munged: one per machine; started only when none answers.
  if ((await sh("sh", ["-c", "munge -n | unmunge"])).code !== 0) {
    await Deno.mkdir("/run/munge", { recursive: true });
    await sh("chown", ["munge:munge", "/run/munge"]);
    const m = await sh("munged", ["--force"]);
    assert.equal(m.code, 0, `munged: ${m.err}`);
    started.push("/run/munge/munged.pid");
  }
  await Deno.mkdir(`${dir}/state`, { recursive: true });
  await Deno.mkdir(`${dir}/spool`, { recursive: true });
  // Ports of their own, so a cluster already on this machine is left alone.
  const port = 17000 + (Deno.pid % 1000) * 2;
  const conf = `${dir}/slurm.conf`;
  await Deno.writeTextFile(
    conf,
    `ClusterName=sqbtest
SlurmctldHost=${host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
StateSaveLocation=${dir}/state
SlurmdSpoolDir=${dir}/spool
SlurmctldPidFile=${dir}/slurmctld.pid
SlurmdPidFile=${dir}/slurmd.pid
SlurmctldLogFile=${dir}/slurmctld.log
SlurmdLogFile=${dir}/slurmd.log
SlurmctldPort=${port}
SlurmdPort=${port + 1}
ReturnToService=2
MpiDefault=none
NodeName=${host} CPUs=${navigator.hardwareConcurrency} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
`,
  );
  const env = { SLURM_CONF: conf };
  for (const d of ["slurmctld", "slurmd"]) {
    const r = await sh(d, ["-f", conf], env);
    assert.equal(r.code, 0, `${d}: ${r.err}`);
    started.push(`${dir}/${d}.pid`);
  }
  for (let i = 0; i < 100; i++) {
    const r = await sh("sinfo", ["-h", "-o", "%t"], env);
    if (/idle/.test(r.out)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    env,
    async stop() {
      for (const pidFile of started.reverse()) {
        const pid = Number((await Deno.readTextFile(pidFile).catch(() => "")).trim());
        if (pid > 0) {
          try {
            Deno.kill(pid, "SIGTERM");
          } catch (e) {
            if (!(e instanceof Deno.errors.NotFound)) throw e;
          }
        }
      }
    },
  };
}

Deno.test("sbatch --array=0-1 of eval --shard auto: the merged shard stores equal an unsharded run", async (t) => {
  const why = await cannotStart();
  if (why) {
    if (Deno.env.get("CI") === "true") throw new Error(`Slurm cannot start under CI: ${why}`);
    console.log(`skipped: Slurm cannot start here: ${why}`);
    return;
  }
  const dir = await Deno.makeTempDir({ prefix: "sqb-slurm-" });
  const cluster = await startCluster(dir);
  try {
    const plan = [
      ...["eval", "--preset", "quick", "--data-dir", SHARED_DATA, "--kernels", "none"],
      ...["--datasets", "c4,tinystories", "--seqlen", "64", "--limit", "4"],
      ...["--methods", "fp32,rtn"],
    ];
    const env = { SQB_CACHE_DIR: `${dir}/cache`, HF_HUB_OFFLINE: "1", NO_COLOR: "1" };
    // The README's job script, with this plan.
    const script = `${dir}/eval.sbatch`;
    await Deno.writeTextFile(
      script,
      `#!/bin/bash
#SBATCH --job-name=sqb-eval
#SBATCH --output=${dir}/shard-%a.log
set -euo pipefail
cd ${Deno.cwd()}
"${Deno.execPath()}" run -A ${CLI} ${plan.join(" ")} --shard auto \\
  --store ${dir}/shard-$SLURM_ARRAY_TASK_ID.duckdb --out ${dir}/report-$SLURM_ARRAY_TASK_ID
`,
    );
    const sb = await sh("sbatch", ["--array=0-1", "--wait", script], { ...cluster.env, ...env });
    const logs = await Promise.all([0, 1].map((i) => Deno.readTextFile(`${dir}/shard-${i}.log`)));
    assert.equal(sb.code, 0, `sbatch: ${sb.out}${sb.err}\n${logs.join("\n")}`);
    assert.match(logs[0], /shard 0\/2/);
    assert.match(logs[1], /shard 1\/2/);

    const all = await sh(
      Deno.execPath(),
      ["run", "-A", CLI, ...plan, "--store", `${dir}/all.duckdb`, "--out", `${dir}/report`],
      env,
    );
    assert.equal(all.code, 0, all.err);
    const rows = async (path: string) => {
      const s = await ResultsStore.open(path, { readOnly: true });
      const r = await s.query(
        "select result_key, variant, dataset, ppl from ppl_results order by result_key",
      );
      s.close();
      return r;
    };
    const [a, b] = [await rows(`${dir}/shard-0.duckdb`), await rows(`${dir}/shard-1.duckdb`)];
    assert.ok(a.length > 0 && b.length > 0, "both shards ran something");
    assert.equal(
      a.filter((x) => b.some((y) => y.result_key === x.result_key)).length,
      0,
      "disjoint",
    );
    await t.step("merged stores equal the unsharded run", async () => {
      const merged = `${dir}/merged.duckdb`;
      await mergeStores([`${dir}/shard-0.duckdb`, `${dir}/shard-1.duckdb`], merged);
      assert.deepEqual(await rows(merged), await rows(`${dir}/all.duckdb`));
      assert.equal((await rows(merged)).length, 2 * 2);
    });
    await t.step("deno task report reads both shard stores", async () => {
      const r = await sh(Deno.execPath(), [
        ...["run", "-A", CLI, "report", "--store", `${dir}/shard-0.duckdb`],
        ...["--store", `${dir}/shard-1.duckdb`, "--out", `${dir}/merged-report`],
      ], env);
      assert.equal(r.code, 0, r.err);
    });
  } finally {
    await cluster.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
