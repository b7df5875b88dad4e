/**
 * Tests of `.ci/test.sh` (the `deno task test` runner): which files run as
 * WebGPU tests, and when the WebGPU run is retried. The script runs in a
 * scratch copy of the repo layout with a fake `deno` first on PATH that
 * replays a plan (an exit status and the output of each `deno test` call).
 *
 * @module
 */
import assert from "node:assert/strict";
import { tempDir } from "../datasets/_testing.ts";

const SCRIPT = new URL("./test.sh", import.meta.url).pathname;

/** One `deno test` call of the fake: what it prints, then its exit status. */
interface FakeRun {
  output: string;
  status: number;
}

const OK = "ok | 3 passed | 0 failed (1s)";
const FAILED = "FAILED | 2 passed | 1 failed (1s)";

/**
 * Runs test.sh `which` against the fake `deno`, which answers its calls with
 * `plan` in order; returns the script's status, output and the argument
 * lists the fake saw.
 */
async function runScript(plan: FakeRun[], which = "all") {
  await using tmp = await tempDir("sqb-test-sh-");
  const root = tmp.path;
  for (const d of [".ci", "bin", "kernels", "eval/bench", "node_modules/x"]) {
    await Deno.mkdir(`${root}/${d}`, { recursive: true });
  }
  await Deno.copyFile(SCRIPT, `${root}/.ci/test.sh`);
  for (
    const f of [
      "a_test.ts",
      "kernels/matvec_test.ts",
      "eval/gpu_perplexity_test.ts",
      "eval/bench/decode_gpu_test.ts",
      "eval/perplexity_test.ts",
      "node_modules/x/gpu_test.ts",
    ]
  ) await Deno.writeTextFile(`${root}/${f}`, "");
  for (const [i, run] of plan.entries()) {
    await Deno.writeTextFile(`${root}/bin/out${i}`, run.output + "\n");
    await Deno.writeTextFile(`${root}/bin/status${i}`, String(run.status));
  }
  await Deno.writeTextFile(
    `${root}/bin/deno`,
    `#!/usr/bin/env bash
bin=$(dirname "$0")
n=$(cat "$bin/calls" 2>/dev/null | wc -l)
echo "$*" >>"$bin/calls"
[ -f "$bin/out$n" ] || { echo "fake deno: unplanned call $n: $*"; exit 99; }
cat "$bin/out$n"
exit "$(cat "$bin/status$n")"
`,
  );
  await Deno.chmod(`${root}/bin/deno`, 0o755);
  const r = await new Deno.Command("bash", {
    args: [`${root}/.ci/test.sh`, which],
    env: { PATH: `${root}/bin:${Deno.env.get("PATH")}`, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  let calls: string[] = [];
  try {
    calls = (await Deno.readTextFile(`${root}/bin/calls`)).trim().split("\n");
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr), calls };
}

const GPU_FILES =
  "eval/bench/decode_gpu_test.ts eval/gpu_perplexity_test.ts kernels/matvec_test.ts";

Deno.test("test.sh runs kernels/ and *gpu*_test.ts as the WebGPU process, everything else first", async () => {
  const r = await runScript([{ output: OK, status: 0 }, { output: OK, status: 0 }]);
  assert.equal(r.code, 0, r.out);
  assert.deepEqual(r.calls, [
    `test -A --parallel --ignore=${GPU_FILES.replaceAll(" ", ",")}`,
    `test -A --parallel ${GPU_FILES}`,
  ]);
  assert.match(r.out, /^counted: cpu ok \| 3 passed \| 0 failed/m);
  assert.match(r.out, /^counted: gpu ok \| 3 passed \| 0 failed/m);
});

Deno.test("test.sh reruns the WebGPU tests once after a teardown abort that followed a clean summary", async () => {
  const r = await runScript(
    [
      { output: `${OK}\ndouble free or corruption (out)`, status: 134 },
      { output: "ok | 3 passed | 0 failed (2s)", status: 0 },
    ],
    "gpu",
  );
  assert.equal(r.code, 0, r.out);
  assert.equal(r.calls.length, 2);
  assert.match(r.out, /died by signal 6 \(exit status 134\)/);
  assert.deepEqual(r.out.match(/^counted: .*$/gm), ["counted: gpu ok | 3 passed | 0 failed (2s)"]);
});

Deno.test("test.sh never reruns after a failing WebGPU test, even when the process then aborts", async () => {
  for (const status of [1, 134]) {
    const r = await runScript(
      [{ output: FAILED, status }, { output: OK, status: 0 }],
      "gpu",
    );
    assert.equal(r.code, status, r.out);
    assert.equal(r.calls.length, 1, `status ${status}: ${r.calls.join(" / ")}`);
    assert.match(r.out, /^counted: gpu FAILED \| 2 passed \| 1 failed/m);
  }
});

Deno.test("test.sh never reruns after a crash before the summary, nor a plain exit status", async () => {
  const cases: FakeRun[] = [
    { output: "running 3 tests from ./kernels/matvec_test.ts", status: 139 },
    { output: OK, status: 1 },
  ];
  for (const first of cases) {
    const r = await runScript([first, { output: OK, status: 0 }], "gpu");
    assert.equal(r.code, first.status, r.out);
    assert.equal(r.calls.length, 1);
  }
});

Deno.test("test.sh fails when the rerun aborts too, and runs the WebGPU tests after failing CPU tests", async () => {
  const again = await runScript(
    [{ output: OK, status: 134 }, { output: OK, status: 134 }],
    "gpu",
  );
  assert.equal(again.code, 134, again.out);
  assert.equal(again.calls.length, 2);
  const cpuFails = await runScript([{ output: FAILED, status: 1 }, { output: OK, status: 0 }]);
  assert.equal(cpuFails.code, 1, cpuFails.out);
  assert.equal(cpuFails.calls.length, 2);
  assert.match(cpuFails.out, /^counted: cpu FAILED/m);
  assert.match(cpuFails.out, /^counted: gpu ok/m);
});
