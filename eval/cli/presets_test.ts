import assert from "node:assert/strict";
import { loadCheckpoint } from "../../model/checkpoint.ts";
import { sharedData } from "../../datasets/testing.ts";
import { applyOverrides, loadPreset, parseSetting, PresetError, presetNames } from "./presets.ts";
import { expandVariants, kernelFormat, layerCounts, modelShapes } from "./plan.ts";

const config = (await loadCheckpoint(sharedData("stories260K/stories260K.bin"))).config;

Deno.test("every preset file loads and validates; table1 is SqueezeLLM Table 1's rows at 3 and 4 bits", async () => {
  assert.deepEqual(presetNames(), ["abq", "abq-quick", "bits", "kernels", "quick", "table1"]);
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
  await assert.rejects(
    loadPreset("nope"),
    /unknown preset "nope"; the presets are abq, abq-quick, bits, kernels/,
  );
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

Deno.test("parseSetting() reads ABQ-LLM's W×A labels and says what is wrong with others", () => {
  assert.deepEqual(parseSetting("W2*A8"), { label: "W2*A8", bits: 2, abits: 8, bitBalance: true });
  assert.deepEqual(parseSetting("W4A16"), {
    label: "W4A16",
    bits: 4,
    abits: 16,
    bitBalance: false,
  });
  assert.match(parseSetting("W4") as string, /must be W<bits>\[\*\]A<abits>/);
  assert.match(parseSetting("W9A8") as string, /9-bit weights; weight bits are 2\.\.8/);
  assert.match(
    parseSetting("W4A12") as string,
    /12-bit activations; activation bits are 2\.\.8, or 16/,
  );
  assert.match(parseSetting("W3*A8") as string, /bit balance\) on 3-bit weights/);
});

Deno.test("the abq preset: ABQ-LLM's two tables, each row at its tables' settings, bit balance noted where it changes nothing", async () => {
  const p = await loadPreset("abq");
  assert.deepEqual(p.tables?.map((t) => t.settings.map((s) => s.label)), [
    ["W4A16", "W3A16", "W2A16", "W2*A16"],
    ["W8A8", "W6A6", "W4A8", "W4A4", "W2A8", "W2*A8"],
  ]);
  const { variants, notes } = expandVariants(p, config);
  const of = (row: string) => variants.filter((v) => v.row === row).map((v) => v.variant);
  assert.deepEqual(of("FP32"), ["fp32"]);
  assert.deepEqual(of("ABQ-LLM"), [
    "abq.w4",
    "abq.w3",
    "abq.w2",
    "abq.w2*",
    "abq.w8a8",
    "abq.w6a6",
    "abq.w4a8",
    "abq.w4a4",
    "abq.w2a8",
    "abq.w2*a8",
  ]);
  assert.deepEqual(of("SmoothQuant").length, 6);
  assert.deepEqual(of("SqueezeLLM"), ["squeezellm.w4", "squeezellm.w3", "squeezellm.w2"]);
  assert.deepEqual(variants.find((v) => v.variant === "gptq.w2*a8")?.setting, "W2*A8");
  assert.deepEqual(notes, [
    'row "SqueezeLLM" at W2*A16: bit balance changes nothing for squeezellm (squeezellm.w2)',
  ]);
  assert.equal(variants.length, 1 + 10 + 10 + 4 + 3 + 6 + 10);
  // --bits keeps the settings at those bits; --methods the rows (a new one joins every table)
  const o = applyOverrides(p, { bits: [2], methods: ["abq", "rtn"] });
  assert.deepEqual(o.tables?.map((t) => [t.rows, t.settings.map((s) => s.label)]), [
    [["RTN", "ABQ-LLM"], ["W2A16", "W2*A16"]],
    [["RTN", "ABQ-LLM"], ["W2A8", "W2*A8"]],
  ]);
  assert.deepEqual(expandVariants(o, config).variants.map((v) => v.variant), [
    "abq.w2",
    "abq.w2*",
    "abq.w2a8",
    "abq.w2*a8",
    "rtn.w2",
    "rtn.w2*",
    "rtn.w2a8",
    "rtn.w2*a8",
  ]);
});

Deno.test("loadPreset() names the file and the key of a bad table", async () => {
  const dir = await Deno.makeTempDir();
  const good = JSON.parse(
    await Deno.readTextFile(new URL("../presets/abq.json", import.meta.url)),
  );
  const table = good.tables[0];
  const cases: [string, unknown, RegExp][] = [
    ["both", { ...good, bits: [3] }, /both\.json: "bits" or "tables": give exactly one/],
    ["empty", { ...good, tables: [] }, /empty\.json: "tables" must be a non-empty list/],
    [
      "label",
      { ...good, tables: [{ ...table, settings: ["W4A16", "W4-A8"] }] },
      /label\.json: "tables\[0\]\.settings\[1\]" must be W<bits>\[\*\]A<abits>/,
    ],
    [
      "row",
      { ...good, tables: [{ ...table, rows: ["RTN", "HQQ"] }] },
      /row\.json: "tables\[0\]\.rows\[1\]" names no row; the rows are FP32, RTN/,
    ],
    [
      "unused",
      { ...good, tables: [{ ...table, rows: ["RTN"] }] },
      /unused\.json: "rows" has "FP32", which no table names/,
    ],
    [
      "key",
      { ...good, tables: [{ ...table, colour: 1 }] },
      /key\.json: "tables\[0\]\.colour" is not a table key/,
    ],
    [
      "spec",
      {
        ...good,
        rows: [{ name: "G", method: "gptq", options: { blocksize: 0 } }],
        tables: [{ ...table, rows: ["G"] }],
      },
      /spec\.json: "tables\[0\]\.settings\[0\]" for row "G": /,
    ],
  ];
  for (const [name, json, re] of cases) {
    await Deno.writeTextFile(`${dir}/${name}.json`, JSON.stringify(json));
    await assert.rejects(
      loadPreset(name, dir),
      (e) => e instanceof PresetError && re.test(e.message),
      name,
    );
  }
  await Deno.remove(dir, { recursive: true });
});
