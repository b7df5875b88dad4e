import assert from "node:assert/strict";
import { loadCheckpoint } from "../../model/checkpoint.ts";
import { sharedData } from "../../datasets/testing.ts";
import { applyOverrides, loadPreset, PresetError, presetNames } from "./presets.ts";
import { expandVariants, kernelFormat, layerCounts, modelShapes } from "./plan.ts";

const config = (await loadCheckpoint(sharedData("stories260K/stories260K.bin"))).config;

Deno.test("every preset file loads and validates; table1 is SqueezeLLM Table 1's rows at 3 and 4 bits", async () => {
  assert.deepEqual(presetNames(), ["bits", "kernels", "quick", "table1"]);
  for (const name of presetNames()) await loadPreset(name);
  const t = await loadPreset("table1");
  assert.deepEqual(t.rows.map((r) => r.name), [
    "FP32",
    "RTN",
    "GPTQ",
    "GPTQ g128",
    "AWQ g128",
    "SqueezeLLM",
    "SqueezeLLM 0.05%",
    "SqueezeLLM 0.45%",
  ]);
  assert.deepEqual(t.bits, [3, 4]);
  assert.deepEqual(t.datasets, ["wikitext2", "c4", "c4-new", "tinystories"]);
  assert.deepEqual(t.kernels?.shapes, ["model", "llama7b"]);
  assert.deepEqual((await loadPreset("bits")).bits, [2, 3, 4, 5, 6, 7, 8]);
});

Deno.test("loadPreset() names the file and the key of what is wrong, and the known presets", async () => {
  await assert.rejects(loadPreset("nope"), /unknown preset "nope"; the presets are bits, kernels/);
  const dir = await Deno.makeTempDir();
  const good = JSON.parse(
    await Deno.readTextFile(new URL("../presets/quick.json", import.meta.url)),
  );
  const cases: [string, unknown, RegExp][] = [
    ["extra", { ...good, colour: 1 }, /extra\.json: "colour" is not a preset key/],
    ["bits", { ...good, bits: [3, 9] }, /bits\.json: "bits\[1\]" must be an integer in 2\.\.8/],
    ["data", { ...good, datasets: ["c5"] }, /"datasets\[0\]" must be one of wikitext2/],
    [
      "opt",
      { ...good, rows: [{ name: "X", method: "rtn", options: { nGrid: 3 } }] },
      /opt\.json: "rows\[0\]\.options" at 3 bits: /,
    ],
    ["meth", { ...good, rows: [{ name: "X", method: "hqq" }] }, /"rows\[0\]\.method" must be fp32/],
  ];
  for (const [name, json, re] of cases) {
    await Deno.writeTextFile(`${dir}/${name}.json`, JSON.stringify(json));
    await assert.rejects(
      loadPreset(name, dir),
      (e) => e instanceof PresetError && re.test(e.message),
    );
  }
  await Deno.writeTextFile(`${dir}/broken.json`, "{");
  await assert.rejects(loadPreset("broken", dir), /broken\.json: not valid JSON/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("expandVariants() on stories260K: g128 rows dropped or per-row as the preset says, and the plan says so", async () => {
  const { variants, notes } = expandVariants(await loadPreset("table1"), config);
  assert.deepEqual(
    variants.map((v) => v.variant),
    [
      "fp32",
      "rtn.w3",
      "rtn.w4",
      "gptq.w3",
      "gptq.w4",
      "awq.w3",
      "awq.w4",
      "squeezellm.w3",
      "squeezellm.w4",
      "squeezellm.w3.s0.05",
      "squeezellm.w4.s0.05",
      "squeezellm.w3.s0.45",
      "squeezellm.w4.s0.45",
    ],
  );
  assert.deepEqual(notes, [
    'row "GPTQ g128" left out: 128 does not divide every input width (64, 172)',
    'row "AWQ g128" runs with one group per row: 128 does not divide every input width (64, 172)',
  ]);
  assert.deepEqual(
    variants.flatMap((v) => v.spec ? [kernelFormat(v.spec).label] : []).filter((l, i, a) =>
      a.indexOf(l) === i
    ),
    ["uniform", "lut", "lut+sparse.s0.05", "lut+sparse"],
  );
});

Deno.test("applyOverrides(): --methods, --bits, --group, --limit all; a --group that does not divide is an error", async () => {
  const t = await loadPreset("table1");
  const o = applyOverrides(t, { methods: ["fp32", "gptq"], bits: [2], group: 4, limit: null });
  assert.deepEqual(o.rows.map((r) => r.name), ["FP32", "GPTQ g4"]);
  assert.equal(o.limit, null);
  assert.deepEqual(expandVariants(o, config).variants.map((v) => v.variant), [
    "fp32",
    "gptq.w2.g4",
  ]);
  assert.throws(
    () => expandVariants(applyOverrides(t, { methods: ["rtn"], group: 128 }), config),
    /--group 128 does not divide every layer's input width of this model \(64, 172\)/,
  );
  assert.throws(() => applyOverrides(t, { methods: ["hqq"] }), /--methods: unknown method "hqq"/);
  const k = applyOverrides(t, { kernelShapes: [] });
  assert.equal(k.kernels, null);
});

Deno.test("modelShapes() and layerCounts() list a decoder layer's linears", () => {
  assert.equal(modelShapes(config), "64x64,32x64,172x64,64x172,512x64");
  assert.deepEqual(layerCounts("model", config), {
    "64x64": 2,
    "32x64": 2,
    "172x64": 2,
    "64x172": 1,
  });
  assert.deepEqual(layerCounts("llama7b", config), {
    "4096x4096": 4,
    "11008x4096": 2,
    "4096x11008": 1,
  });
});
