/**
 * `--device gpu` on the CLI: `ppl` and `eval` run the GPU prefill, say so,
 * agree with `--device cpu` within 1e-4, and store GPU results under their
 * own keys (ResultIdentity.evaluator), so a CPU result is never skipped as
 * "already stored" because of a GPU one. `quantize --device gpu` accumulates
 * GPTQ's Hessians on the GPU, says so, names the device in the calibration
 * identity, and gives the CPU's codes up to rounding ties.
 */
import assert from "node:assert/strict";
import { SHARED_DATA } from "../../datasets/testing.ts";
import { gpuTest } from "../../kernels/_testing.ts";
import { loadQuantized } from "../../quant/methods.ts";
import { cli, lastJson } from "./_testing.ts";

const DATA = ["--data-dir", SHARED_DATA, "--json"];

gpuTest(
  "ppl --device gpu equals --device cpu (1e-4) and names the device; bad --device and --abits / --kv-bits on the GPU are refused",
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
    // activation fake-quant runs only in the CPU forward: refused before any work, naming the options
    for (const act of [["--abits", "8"], ["--kv-bits", "4"]]) {
      const r = await cli(
        "ppl",
        "--device",
        "gpu",
        "--method",
        "rtn",
        "--bits",
        "8",
        ...act,
        ...DATA,
      );
      assert.equal(r.code, 2, r.err);
      assert.match(r.err, /--device gpu: rtn\.w8.* quantizes activations \(--abits \/ --kv-bits\)/);
    }
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

gpuTest(
  "quantize --device gpu: GPTQ's Hessians on the GPU, named in the output and the calibration " +
    "identity; the codes equal the CPU run's up to rounding ties; RTN's identity is unchanged",
  async () => {
    const dir = await Deno.makeTempDir();
    const gptq = ["quantize", "--method", "gptq", "--bits", "3", "--act-order", "--calib"];
    const calib = ["tinystories", "--nsamples", "4", "--calib-seqlen", "128", ...DATA];
    const gpu = await cli(...gptq, ...calib, "--device", "gpu", "--out", `${dir}/gpu.sqbq`);
    assert.equal(gpu.code, 0, gpu.err);
    assert.match(gpu.err, /device: gpu \(GPTQ Hessians on /);
    assert.match(gpu.err, /Hessians on the gpu/);
    const cpu = await cli(...gptq, ...calib, "--out", `${dir}/cpu.sqbq`);
    assert.equal(cpu.code, 0, cpu.err);
    const [g, c] = [lastJson(gpu.out), lastJson(cpu.out)];
    assert.equal(g.device, "gpu");
    assert.equal(c.device, "cpu");
    assert.deepEqual(g.calibration, { ...c.calibration, device: "gpu" });
    // The GPU's H equals the CPU's within 1e-5: the solver may round a weight at a tie the
    // other way, nothing more (measured: every code equal).
    const [qg, qc] = await Promise.all([g.out, c.out].map((f) => loadQuantized(f)));
    assert.deepEqual(qg.calibration, g.calibration, "the file keeps the device");
    let same = 0, total = 0;
    for (const [key, q] of qc.linears) {
      const a = q.dense!.codes, b = qg.linears.get(key)!.dense!.codes;
      for (let i = 0; i < a.length; i++, total++) if (a[i] === b[i]) same++;
    }
    assert.equal(total, 21_520);
    assert.ok(same / total >= 0.99, `only ${same} of ${total} codes equal`);
    // RTN has no calibration statistics: --device gpu changes nothing in its identity.
    const rtn = await cli(
      "quantize",
      "--method",
      "rtn",
      "--bits",
      "3",
      ...DATA,
      "--device",
      "gpu",
      "--out",
      `${dir}/rtn.sqbq`,
    );
    assert.equal(rtn.code, 0, rtn.err);
    assert.equal(lastJson(rtn.out).calibration ?? null, null);
    await Deno.remove(dir, { recursive: true });
  },
);
