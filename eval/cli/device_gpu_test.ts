/**
 * `--device gpu` on the CLI: `ppl` and `eval` run the GPU prefill, say so,
 * agree with `--device cpu` within 1e-4, and store GPU results under their
 * own keys (ResultIdentity.evaluator), so a CPU result is never skipped as
 * "already stored" because of a GPU one.
 */
import assert from "node:assert/strict";
import { SHARED_DATA } from "../../datasets/testing.ts";
import { gpuTest } from "../../kernels/_testing.ts";
import { cli, lastJson } from "./_testing.ts";

const DATA = ["--data-dir", SHARED_DATA, "--json"];

gpuTest(
  "ppl --device gpu equals --device cpu (1e-4) and names the device; bad --device is refused",
  async () => {
    const args = ["ppl", "--dataset", "tinystories", "--seqlen", "256", "--limit", "2", ...DATA];
    const gpu = await cli(...args, "--device", "gpu");
    assert.equal(gpu.code, 0, gpu.err);
    assert.match(gpu.out, /device: gpu \(WebGPU prefill on /);
    const cpu = await cli(...args);
    assert.equal(cpu.code, 0, cpu.err);
    assert.match(cpu.out, /device: cpu/);
    const [g, c] = [lastJson(gpu.out), lastJson(cpu.out)];
    assert.equal(g.device, "gpu");
    assert.equal(c.device, "cpu");
    assert.ok(Math.abs(g.ppl - c.ppl) / c.ppl < 1e-4, `${g.ppl} vs ${c.ppl}`);
    const bad = await cli("ppl", "--device", "tpu", ...DATA);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /--device must be one of cpu, gpu; got "tpu"/);
  },
);

gpuTest(
  "eval --device gpu stores under keys of its own: a CPU run afterwards is not skipped",
  async () => {
    const dir = await Deno.makeTempDir();
    const common = [
      "eval",
      "--methods",
      "fp32",
      "--datasets",
      "tinystories",
      "--limit",
      "1",
      "--kernels",
      "none",
      "--store",
      `${dir}/r.duckdb`,
      "--out",
      `${dir}/report`,
      ...DATA,
    ];
    const gpu = await cli(...common, "--device", "gpu");
    assert.equal(gpu.code, 0, gpu.err);
    assert.match(gpu.err, /device: gpu/);
    const cpu = await cli(...common);
    assert.equal(cpu.code, 0, cpu.err);
    assert.doesNotMatch(cpu.err, /already in/, "the GPU result must not stand in for the CPU one");
    const again = await cli(...common, "--device", "gpu");
    assert.match(again.err, /already in/, "a second GPU run finds its own result");
    await Deno.remove(dir, { recursive: true });
  },
);
