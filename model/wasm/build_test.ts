import assert from "node:assert/strict";
import { compileKernels, KERNELS_MODULE_URL, renderKernelsModule } from "./build.ts";
import { KERNELS_WASM_BYTES } from "./kernels.ts";

Deno.test("compileKernels() reproduces the committed _kernels_wasm.ts byte for byte", async () => {
  const bytes = await compileKernels();
  assert.deepEqual(bytes, KERNELS_WASM_BYTES, "rebuild with `deno run -A model/wasm/build.ts`");
  assert.equal(renderKernelsModule(bytes), await Deno.readTextFile(KERNELS_MODULE_URL));
});

Deno.test("compileKernels() rejects malformed WebAssembly text with wabt's message", async () => {
  await assert.rejects(
    () => compileKernels("(module (func (result i32) (f32.const 1)))"),
    /type mismatch/,
  );
});

Deno.test("renderKernelsModule() round-trips bytes through base64", () => {
  const bytes = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 255);
  const text = renderKernelsModule(bytes);
  const b64 = [...text.matchAll(/^ {2}"([A-Za-z0-9+/=]+)",$/gm)].map((m) => m[1]).join("");
  assert.deepEqual(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)), bytes);
});
