/**
 * Builds ABQ-LLM's attention kernels: compiles `abq_kernels.wat` with
 * model/wasm/build.ts's `compileKernels` and writes the bytes, base64, into
 * `_abq_kernels_wasm.ts` (loaded synchronously by quant/abq_attention.ts).
 * abq_attention_test.ts checks that the committed bytes are what the source
 * compiles to.
 *
 * Run after editing `abq_kernels.wat`:
 *
 * ```sh
 * deno run -A quant/abq_kernels_build.ts
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
export const ABQ_KERNELS_WAT_URL: URL = new URL("./abq_kernels.wat", import.meta.url);
/** The generated module holding the compiled bytes. */
export const ABQ_KERNELS_MODULE_URL: URL = new URL("./_abq_kernels_wasm.ts", import.meta.url);
/** The generated module's header. */
export const ABQ_KERNELS_ORIGIN: KernelsModuleOrigin = {
  source: "quant/abq_kernels.wat",
  build: "quant/abq_kernels_build.ts",
  test: "abq_attention_test.ts",
  name: "ABQ_KERNELS_WASM_BASE64",
};

/** The compiled `abq_kernels.wat`. */
export async function compileAbqKernels(): Promise<Uint8Array<ArrayBuffer>> {
  return compileKernels(await Deno.readTextFile(ABQ_KERNELS_WAT_URL));
}

if (import.meta.main) {
  const bytes = await compileAbqKernels();
  await Deno.writeTextFile(ABQ_KERNELS_MODULE_URL, renderKernelsModule(bytes, ABQ_KERNELS_ORIGIN));
  console.log(`wrote ${ABQ_KERNELS_MODULE_URL.pathname} (${bytes.length} bytes of wasm)`);
}
