import assert from "node:assert/strict";
import { parseError } from "./_testing.ts";
import { QUANT_HELP, QUANT_OPTIONS, specFromOptions } from "./quant_options.ts";
import { defaultSpec, resolveSpec, variantName } from "../../quant/spec.ts";
import { tinyConfig } from "../../model/random.ts";

Deno.test("--abits and --kv-bits: 2..8 or 16, for every method, into the spec and the variant name", () => {
  assert.deepEqual(specFromOptions({ method: "gptq", bits: "4", abits: "8" }), {
    ...defaultSpec("gptq", 4),
    abits: 8,
  });
  for (const m of ["rtn", "gptq", "awq", "squeezellm", "smoothquant"]) {
    const s = specFromOptions({ method: m, bits: "4", abits: "6", "kv-bits": "4" })!;
    assert.equal(s.abits, 6, m);
    assert.equal(s.kvBits, 4, m);
    assert.equal(variantName(s), `${m}.w4a6kv4${m === "awq" ? ".g128" : ""}`);
  }
  assert.equal(
    variantName(specFromOptions({ method: "gptq", bits: "4", abits: "8" })!),
    "gptq.w4a8",
  );
  // 16 is "off": the spec is the weight-only one (its identity unchanged)
  assert.deepEqual(
    specFromOptions({ method: "rtn", bits: "4", abits: "16", "kv-bits": "16" }),
    defaultSpec("rtn", 4),
  );
  // --kv-bits equal to --abits is the default (null = as --abits): one identity
  assert.deepEqual(
    specFromOptions({ method: "rtn", bits: "4", abits: "8", "kv-bits": "8" }),
    specFromOptions({ method: "rtn", bits: "4", abits: "8" }),
  );
  assert.equal(
    variantName(specFromOptions({ method: "rtn", bits: "4", abits: "8", "kv-bits": "16" })!),
    "rtn.w4a8kv16",
  );
  for (const v of ["1", "9", "12", "17", "x", "4.5"]) {
    assert.match(
      parseError({ method: "rtn", bits: "4", abits: v }),
      /^--abits must be an integer in 2\.\.8 or 16 \(off\), got/,
    );
    assert.match(
      parseError({ method: "rtn", bits: "4", "kv-bits": v }),
      /^--kv-bits must be an integer in 2\.\.8 or 16 \(off\), got/,
    );
  }
  assert.match(parseError({ abits: "8" }), /--abits needs --method/);
});

Deno.test("--bit-balance / --no-bit-balance: five levels at 2 bits, shown as w2*, checked at parse time", () => {
  const s = specFromOptions({ method: "rtn", bits: "2", "bit-balance": true })!;
  assert.equal(s.bitBalance, true);
  assert.equal(variantName(s), "rtn.w2*");
  assert.equal(
    variantName(specFromOptions({ method: "gptq", bits: "2", abits: "8", "bit-balance": true })!),
    "gptq.w2*a8",
  );
  assert.equal(
    variantName(specFromOptions({ method: "rtn", bits: "4", abits: "2", "bit-balance": true })!),
    "rtn.w4a2*",
  );
  // off by default for these methods; --no-bit-balance is the default spec
  assert.equal(defaultSpec("rtn", 2).bitBalance, undefined);
  assert.deepEqual(
    specFromOptions({ method: "rtn", bits: "2", "no-bit-balance": true }),
    defaultSpec("rtn", 2),
  );
  assert.match(
    parseError({ method: "rtn", bits: "2", "bit-balance": true, "no-bit-balance": true }),
    /give --bit-balance or --no-bit-balance, not both/,
  );
  assert.match(
    parseError({ method: "rtn", bits: "3", "bit-balance": true }),
    /--bit-balance changes nothing here/,
  );
  assert.match(
    parseError({ method: "rtn", bits: "2", sym: true, "bit-balance": true }),
    /--bit-balance changes nothing here/,
  );
  assert.match(parseError({ "no-bit-balance": true }), /--no-bit-balance needs --method/);
  // resolveSpec keeps the fields (the results store hashes them)
  const r = resolveSpec(
    specFromOptions({ method: "rtn", bits: "2", abits: "8", "bit-balance": true })!,
    tinyConfig(),
  );
  assert.equal(r.abits, 8);
  assert.equal(r.bitBalance, true);
});

Deno.test("the help lists --abits, --kv-bits and --bit-balance / --no-bit-balance from the table", () => {
  const flat = QUANT_HELP.replace(/\s+/g, " ");
  assert.match(flat, /--abits A .* in 2\.\.8 or 16 \(off\) \[.*default 16\]/);
  assert.match(flat, /--kv-bits K .*default as --abits/);
  assert.match(flat, /--bit-balance \/ --no-bit-balance/);
  assert.match(flat, /--method M rtn \| gptq \| awq \| squeezellm \| smoothquant/);
  assert.match(flat, /--alpha F .*\[smoothquant: default 0\.5\]/);
  assert.ok("no-bit-balance" in QUANT_OPTIONS);
});
