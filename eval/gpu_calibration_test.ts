/**
 * Where the calibration statistics run is part of a result's identity only
 * for the methods that compute them on the device
 * (`Quantizer.deviceCalibration`): `drawCalibration` with a device marks
 * GPTQ's (Hessians) and AWQ's (features) calibration identity (the config
 * key changes), and leaves SqueezeLLM's (its Fisher pass stays on the CPU)
 * as the CPU's.
 */
import assert from "node:assert/strict";
import { defaultSpec, type QuantSpec, resolveSpec } from "../quant/methods.ts";
import { CODE_VERSION, resultKeys } from "../reports/identity.ts";
import { SHARED_DATA } from "../datasets/testing.ts";
import { tokenizer, weights } from "./_ppl_testing.ts";
import { drawCalibration } from "./pipeline.ts";

const data = { tokenizer, dataDir: SHARED_DATA, offline: true };

/** The config key (model + spec + calibration) of `method` at 3 bits, statistics on `device`. */
async function configKey(method: "gptq" | "awq" | "squeezellm", device?: "gpu") {
  const spec = resolveSpec(
    {
      ...defaultSpec(method, 3),
      // AWQ concatenates whole texts of ≤ seqlen tokens into blocks: 4 stories of ≤ 256 make some.
      ...(method === "squeezellm"
        ? { fisherSamples: 4, calib: { source: "tinystories", seqlen: 256, seed: 0 } }
        : { calib: { source: "tinystories", nsamples: 4, seqlen: 256, seed: 0 } }),
    } as QuantSpec,
    weights.config,
  );
  const drawn = await drawCalibration(weights.config, spec, { ...data, hessianDevice: device });
  const dataset = {
    name: "x",
    fileSha256: "",
    protocol: "",
    seqlen: 64,
    windows: 1,
    tokensSha256: "",
  };
  const keys = await resultKeys({
    codeVersion: CODE_VERSION,
    model: { sha256: "m" },
    quant: spec,
    calibration: drawn!.identity,
    dataset,
  });
  return { identity: drawn!.identity, text: drawn!.text, configKey: keys.configKey };
}

Deno.test("drawCalibration() names the device in GPTQ's and AWQ's identity, not in SqueezeLLM's", async () => {
  const [gCpu, gGpu, aCpu, aGpu, sCpu, sGpu] = await Promise.all([
    configKey("gptq"),
    configKey("gptq", "gpu"),
    configKey("awq"),
    configKey("awq", "gpu"),
    configKey("squeezellm"),
    configKey("squeezellm", "gpu"),
  ]);
  assert.equal(gCpu.identity.device, undefined);
  assert.deepEqual(gGpu.identity, { ...gCpu.identity, device: "gpu" });
  assert.notEqual(gGpu.configKey, gCpu.configKey);
  assert.match(gGpu.text, /Hessians on the gpu$/);
  assert.equal(aCpu.identity.device, undefined);
  assert.deepEqual(aGpu.identity, { ...aCpu.identity, device: "gpu" });
  assert.notEqual(aGpu.configKey, aCpu.configKey);
  assert.match(aGpu.text, /features on the gpu$/);
  assert.deepEqual(sGpu, sCpu);
});
