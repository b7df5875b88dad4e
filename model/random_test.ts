/** The seeded generators. */
import assert from "node:assert/strict";
import { mulberry32, mulberry32Fill } from "./random.ts";

Deno.test("mulberry32Fill() gives mulberry32's numbers as 32-bit words", () => {
  for (const seed of [0, 11, -5, 2 ** 31 + 7]) {
    const u = mulberry32(seed);
    const words = mulberry32Fill(new Uint32Array(1000), seed);
    assert.deepEqual([...words].map((w) => w / 2 ** 32), Array.from({ length: 1000 }, u));
  }
});
