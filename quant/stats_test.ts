import assert from "node:assert/strict";
import { f32Residual, kthLargest, quantileLinear, selectInPlace } from "./stats.ts";

Deno.test("quantileLinear() matches numpy", () => {
  // /usr/bin/python3, numpy 1.24.2: a = np.array([0.3,-1.2,2.5,0.7,-0.1,1.9,-2.2,0.05], np.float32)
  // np.quantile(a, 0.25) -> -0.3750000074505806, np.quantile(a, 0.75) -> 1.0
  const a = Float32Array.of(0.3, -1.2, 2.5, 0.7, -0.1, 1.9, -2.2, 0.05);
  assert.equal(quantileLinear(a, 0.25), -0.3750000074505806);
  assert.equal(quantileLinear(a, 0.75), 1.0);
  assert.equal(quantileLinear(a, 0), -2.2000000476837158);
  assert.equal(quantileLinear(a, 1), 2.5);
  assert.throws(() => quantileLinear(a, 1.5), /p must be in \[0, 1\], got 1.5/);
  assert.throws(() => quantileLinear(new Float32Array(0), 0.5), /no values/);
});

Deno.test("kthLargest() is torch's topk(k).values[-1]; selectInPlace() partitions around rank kth", () => {
  const a = Float32Array.of(0.3, -1.2, 2.5, 0.7, -0.1, 1.9, -2.2, 0.05);
  assert.equal(kthLargest(a, 3), Math.fround(0.7));
  assert.equal(kthLargest(Float32Array.of(5, 1, 4, 4), 2), 4);
  assert.throws(() => kthLargest(a, 0), /k must be in 1\.\.8, got 0/);
  const b = Float32Array.of(3, 3, 1, 9, 3, 0, 7);
  const sorted = Float32Array.from(b).sort();
  for (let kth = 0; kth < b.length; kth++) {
    const c = Float32Array.from(b);
    assert.equal(selectInPlace(c, kth), sorted[kth]);
    for (let i = 0; i < kth; i++) assert.ok(c[i] <= c[kth]);
    for (let i = kth + 1; i < c.length; i++) assert.ok(c[i] >= c[kth]);
  }
});

/** The fp32 values one ulp below and above x. */
function neighbours(x: number): number[] {
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  return [1, -1].map((d) => {
    f[0] = x;
    if (x === 0) u[0] = d > 0 ? 1 : 0x80000001;
    else u[0] += d;
    return f[0];
  });
}

Deno.test("f32Residual(w, l) is the nearest fp32 v with fround(l + v) = w when one of w − l's neighbours has it", () => {
  for (let i = 0; i < 20000; i++) {
    const w = Math.fround(Math.sin(i) * 3), l = Math.fround(Math.cos(i * 7) * 2 ** (i % 20 - 10));
    const naive = Math.fround(w - l), v = f32Residual(w, l);
    if (Math.fround(l + naive) === w) assert.equal(v, naive);
    else if (neighbours(naive).some((n) => Math.fround(l + n) === w)) {
      assert.equal(Math.fround(l + v), w, `w ${w}, l ${l}`);
    } else assert.equal(v, naive);
  }
});
