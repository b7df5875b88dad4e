/**
 * Shared set-up of the WebGPU tests: one adapter probe per process, one
 * device per test file, and `gpuTest()`, which registers a Deno test that is
 * ignored (with the reason printed) when there is no adapter and CI is unset.
 * With CI=true the tests always run, so a missing llvmpipe fails loudly.
 *
 * @module
 */
import type { Gpu } from "./device.ts";
import { getGpu, gpuSkipReason } from "./device.ts";

/** Why this process cannot run GPU tests, or undefined. */
export const GPU_SKIP: string | undefined = await gpuSkipReason();
if (GPU_SKIP) console.warn(`WebGPU tests are skipped: ${GPU_SKIP}`);

let shared: Promise<Gpu> | undefined;

/** The device shared by the tests of this file. */
export function testGpu(): Promise<Gpu> {
  if (!shared) {
    let gpu: Gpu | undefined;
    shared = getGpu().then((g) => (gpu = g));
    // Release the device before the test runtime exits, so no wgpu or Vulkan
    // driver thread is still working while native state is torn down.
    globalThis.addEventListener("unload", () => {
      gpu?.pool.trim();
      gpu?.device.destroy();
    });
  }
  return shared;
}

/**
 * Registers a test that needs the GPU. Sanitizers are off because the device
 * outlives each test; buffer accounting is checked through the pool instead.
 * @param name test name
 * @param fn the test body
 */
export function gpuTest(name: string, fn: (gpu: Gpu) => Promise<void> | void): void {
  Deno.test({
    name: GPU_SKIP ? `${name} (skipped: ${GPU_SKIP})` : name,
    ignore: GPU_SKIP !== undefined,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => fn(await testGpu()),
  });
}
