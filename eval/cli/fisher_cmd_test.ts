import assert from "node:assert/strict";
import { sharedData } from "../../datasets/testing.ts";
import { tempDir } from "../../datasets/_testing.ts";
import { loadQuantizedModel } from "../../quant/qmodel.ts";
import { hfFolderSha256 } from "../model_source.ts";
import { cliWith, lastJson } from "./_testing.ts";

Deno.test("fisher --out DIR writes the Fisher that quantize computes itself: quantize --fisher DIR gives the same codes", async () => {
  await using tmp = await tempDir("sqb-fisher-cmd-");
  const env = { SQB_CACHE_DIR: `${tmp.path}/cache` };
  const data = ["--data-dir", sharedData(""), "--workers", "0"];
  const calib = ["--fisher-samples", "3", "--calib-seqlen", "64"];
  const dir = `${tmp.path}/fisher`;
  const f = await cliWith(env, "fisher", ...data, ...calib, "--out", dir, "--json");
  assert.equal(f.code, 0, f.err);
  const j = lastJson(f.out);
  assert.equal(j.windows, 3);
  assert.equal(j.sha256, await hfFolderSha256(dir));
  const quantize = ["quantize", ...data, "--method", "squeezellm", "--bits", "3"];
  const fromDir = await cliWith(env, ...quantize, "--fisher", dir, "--out", `${tmp.path}/a.sqbq`);
  assert.equal(fromDir.code, 0, fromDir.err);
  const own = await cliWith(env, ...quantize, ...calib, "--out", `${tmp.path}/b.sqbq`);
  assert.equal(own.code, 0, own.err);
  const a = await loadQuantizedModel(`${tmp.path}/a.sqbq`);
  const b = await loadQuantizedModel(`${tmp.path}/b.sqbq`);
  assert.deepEqual(a.linears, b.linears);

  const again = await cliWith(env, "fisher", ...data, "--out", dir);
  assert.equal(again.code, 2);
  assert.match(again.err, /--out .*fisher is not empty/);
});
