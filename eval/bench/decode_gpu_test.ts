/** benchDecodeFormats() on stories260K with the real RTN quantizer (a short run). */
import assert from "node:assert/strict";
import { SHARED_DATA } from "../../datasets/testing.ts";
import { gpuTest } from "../../kernels/_testing.ts";
import { benchDecodeFormats, DECODE_FORMATS, decodeFormatSpec } from "./decode.ts";
import type { DecodeFormat } from "./decode.ts";
import { variantName } from "../../quant/methods.ts";

Deno.test("decodeFormatSpec() gives every quantized format the spec whose variant name it is", () => {
  for (const f of DECODE_FORMATS) {
    const spec = decodeFormatSpec(f, 4, "tinystories");
    if (f === "f32" || f === "f16") assert.equal(spec, null);
    else assert.equal(variantName(spec!), f);
  }
});

gpuTest(
  "benchDecodeFormats() decodes f32 and rtn.w4 with figures and the documented text",
  async (gpu) => {
    const lines: string[] = [];
    const r = await benchDecodeFormats({
      dataDir: SHARED_DATA,
      formats: ["f32", "rtn.w4"],
      tokens: 16,
      runs: 1,
      pplWindows: 1,
      seqlen: 64,
      offline: true,
      gpu,
      log: (s) => lines.push(s),
    });
    assert.deepEqual(r.rows.map((row) => row.format), ["f32", "rtn.w4"]);
    const [f32, w4] = r.rows;
    // data/README.md: greedy decoding from BOS begins with this text.
    assert.ok(f32.text.startsWith("Once upon a time, there was a little girl"), f32.text);
    assert.equal(f32.avgInfoBits, 32);
    assert.ok(
      w4.avgInfoBits > 4 && w4.avgInfoBits < 4.5 && w4.avgStoredBits >= w4.avgInfoBits,
      `${w4.avgInfoBits}`,
    );
    for (const row of r.rows) {
      assert.ok(row.tokensPerSecond > 0 && row.tokens === 16);
      assert.ok(row.ppl! > 1 && Number.isFinite(row.ppl));
    }
    assert.ok(w4.ppl! > f32.ppl!, `4-bit RTN ${w4.ppl} vs fp32 ${f32.ppl}`);
    assert.ok(lines.at(-1)!.startsWith("| format"), "prints the table last");
    await assert.rejects(
      () => benchDecodeFormats({ dataDir: SHARED_DATA, formats: ["int4" as DecodeFormat], gpu }),
      /--formats: expected some of f32, f16, rtn.w4.*; found "int4"/,
    );
  },
);
