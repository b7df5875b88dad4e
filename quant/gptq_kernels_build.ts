/**
 * Builds GPTQ's fast-solver kernel: compiles `gptq_kernels.wat` with
 * model/wasm/build.ts's `compileKernels` and writes the bytes, base64, into
 * `_gptq_kernels_wasm.ts` (loaded synchronously by quant/gptq_fast.ts).
 * gptq_kernels_build_test.ts checks that the committed bytes are what the
 * source compiles to.
 *
 * Run after editing `gptq_kernels.wat`:
 *
 * ```sh
 * deno run -A quant/gptq_kernels_build.ts
 * ```
 *
 * @module
 */
import {
  compileKernels,
  type KernelsModuleOrigin,
  renderKernelsModule,
} from "../model/wasm/build.ts";

/** The WebAssembly text source. */
export const GPTQ_KERNELS_WAT_URL: URL = new URL("./gptq_kernels.wat", import.meta.url);
/** The generated module holding the compiled bytes. */
export const GPTQ_KERNELS_MODULE_URL: URL = new URL("./_gptq_kernels_wasm.ts", import.meta.url);
/** The generated module's header. */
export const GPTQ_KERNELS_ORIGIN: KernelsModuleOrigin = {
  source: "quant/gptq_kernels.wat",
  build: "quant/gptq_kernels_build.ts",
  test: "gptq_kernels_build_test.ts",
  name: "GPTQ_KERNELS_WASM_BASE64",
};

/** The compiled `gptq_kernels.wat`. */
export async function compileGptqKernels(): Promise<Uint8Array<ArrayBuffer>> {
  return compileKernels(await Deno.readTextFile(GPTQ_KERNELS_WAT_URL));
}

if (import.meta.main) {
  const bytes = await compileGptqKernels();
  await Deno.writeTextFile(
    GPTQ_KERNELS_MODULE_URL,
    renderKernelsModule(bytes, GPTQ_KERNELS_ORIGIN),
  );
  console.log(`wrote ${GPTQ_KERNELS_MODULE_URL.pathname} (${bytes.length} bytes of wasm)`);
}
