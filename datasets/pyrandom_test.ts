// Expected values are literal outputs of Debian's CPython 3.11.2, e.g.
//   /usr/bin/python3 -c "import random; random.seed(0); print([random.randint(0,999) for _ in range(10)])"
import assert from "node:assert/strict";
import { PyRandom } from "./pyrandom.ts";

const draws = (rng: PyRandom, n: number, f: (r: PyRandom) => number) =>
  Array.from({ length: n }, () => f(rng));

Deno.test("PyRandom.randint() matches CPython for seed(0), randint(0, 999)", () => {
  assert.deepEqual(
    draws(new PyRandom(0), 10, (r) => r.randint(0, 999)),
    [864, 394, 776, 911, 430, 41, 265, 988, 523, 497],
  );
});

Deno.test("PyRandom.randint() matches CPython for small ranges and other seeds", () => {
  assert.deepEqual(
    draws(new PyRandom(1), 12, (r) => r.randint(1, 6)),
    [2, 5, 1, 3, 1, 4, 4, 4, 6, 4, 2, 1],
  );
  // negative seeds use |n|
  assert.deepEqual(draws(new PyRandom(-5), 5, (r) => r.randint(0, 99)), [79, 32, 94, 45, 88]);
  // randint(5, 5) still consumes one word (getrandbits(1)), as in CPython
  const rng = new PyRandom(0);
  assert.deepEqual([rng.randint(5, 5), rng.randint(0, 1099), rng.randint(3, 2 ** 32 + 2)], [
    5,
    861,
    173879095,
  ]);
});

Deno.test("PyRandom.randint() matches CPython for ranges beyond 32 bits (up to 2^53)", () => {
  // multi-word seed: init_by_array key is [7, 256]
  assert.deepEqual(
    draws(new PyRandom(2 ** 40 + 7), 5, (r) => r.randint(0, 2 ** 40)),
    [551799892330, 797660323531, 972351302369, 819896354548, 978798470615],
  );
  assert.deepEqual(
    draws(new PyRandom(0), 4, (r) => r.randint(0, 2 ** 53 - 1)),
    [6939962107496397, 729300138103893, 8753695300970082, 6450042198180356],
  );
  // a seed beyond 2^53 given as a bigint: random.seed(2**100 + 3)
  assert.deepEqual(
    draws(new PyRandom(2n ** 100n + 3n), 4, (r) => r.randint(0, 10 ** 9)),
    [383069889, 320977617, 953298202, 440731189],
  );
});

Deno.test("PyRandom.random() matches CPython", () => {
  assert.deepEqual(draws(new PyRandom(12345), 4, (r) => r.random()), [
    0.41661987254534116,
    0.010169169457068361,
    0.8252065092537432,
    0.2986398551995928,
  ]);
});

Deno.test("PyRandom.getrandbits() matches CPython for 1..100 bits", () => {
  const rng = new PyRandom(7);
  assert.deepEqual([1, 8, 31, 32, 33, 53, 64, 100].map((k) => rng.getrandbits(k)), [
    0n,
    242n,
    323946139n,
    1695753998n,
    2795742288n,
    7397381398802227n,
    1736392818365009963n,
    1113789423298541461217551960568n,
  ]);
});

Deno.test("PyRandom rejects empty ranges and non-integer seeds", () => {
  const rng = new PyRandom(0);
  assert.throws(() => rng.randint(0, -1), /empty range/);
  assert.throws(() => rng.randbelow(2 ** 53 + 2), /\[1, 2\^53\]/);
  assert.throws(() => new PyRandom(0.5), /safe integer/);
  // re-seeding restarts the stream
  rng.seed(0);
  assert.equal(rng.randint(0, 999), 864);
});
