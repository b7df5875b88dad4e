/**
 * A port of CPython's `random.Random` (Modules/_randommodule.c and
 * Lib/random.py): the MT19937 generator seeded exactly as `random.seed(int)`,
 * with `getrandbits`, `random` and `randint`. GPTQ's data loaders draw their
 * windows with `random.seed(seed)` + `random.randint`, so reproducing its
 * evaluation and calibration sets needs bit-identical draws.
 *
 * @example
 * ```ts
 * const rng = new PyRandom(0);
 * rng.randint(0, 999); // 864, as Python's random.seed(0); random.randint(0, 999)
 * ```
 *
 * @module
 */

const N = 624;
const M = 397;
const MATRIX_A = 0x9908b0df;
const UPPER_MASK = 0x80000000;
const LOWER_MASK = 0x7fffffff;

/**
 * CPython's `random.Random` for integer seeds: MT19937 (Matsumoto &
 * Nishimura 1998) with `init_by_array` seeding.
 *
 * @example
 * ```ts
 * const rng = new PyRandom(12345);
 * rng.random(); // 0.41661987254534116
 * ```
 */
export class PyRandom {
  readonly #mt = new Uint32Array(N); // [624] generator state
  #mti = N + 1;

  /**
   * @param seed any integer; like CPython, its absolute value is used
   */
  constructor(seed: number | bigint) {
    this.seed(seed);
  }

  /**
   * Re-seeds exactly as CPython's `random.seed(n)` for an int `n`: the key of
   * `init_by_array` is |n| split into 32-bit words, least significant first
   * (`seed(0)` → key `[0]`).
   *
   * @param seed an integer (number or bigint)
   * @throws {RangeError} when `seed` is a non-integer number
   */
  seed(seed: number | bigint): void {
    if (typeof seed === "number" && !Number.isSafeInteger(seed)) {
      throw new RangeError(`PyRandom.seed: expected a safe integer, found ${seed}`);
    }
    let n = BigInt(seed);
    if (n < 0n) n = -n;
    const key: number[] = [];
    while (n > 0n) {
      key.push(Number(n & 0xffffffffn));
      n >>= 32n;
    }
    if (key.length === 0) key.push(0);
    this.#initByArray(key);
  }

  #initGenrand(s: number): void {
    const mt = this.#mt;
    mt[0] = s >>> 0;
    for (let i = 1; i < N; i++) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      // 1812433253 * prev + i (mod 2^32), split to stay exact in doubles
      mt[i] = ((((prev & 0xffff0000) >>> 16) * 1812433253) << 16) +
        (prev & 0x0000ffff) * 1812433253 + i;
    }
    this.#mti = N;
  }

  #initByArray(key: number[]): void {
    const mt = this.#mt;
    this.#initGenrand(19650218);
    let i = 1, j = 0;
    for (let k = Math.max(N, key.length); k > 0; k--) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      // (mt[i] ^ (prev * 1664525)) + key[j] + j  (mod 2^32)
      const mul = ((((prev & 0xffff0000) >>> 16) * 1664525) << 16) + (prev & 0x0000ffff) * 1664525;
      mt[i] = (mt[i] ^ mul) + key[j] + j;
      i++;
      j++;
      if (i >= N) {
        mt[0] = mt[N - 1];
        i = 1;
      }
      if (j >= key.length) j = 0;
    }
    for (let k = N - 1; k > 0; k--) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      // (mt[i] ^ (prev * 1566083941)) - i  (mod 2^32)
      const mul = ((((prev & 0xffff0000) >>> 16) * 1566083941) << 16) +
        (prev & 0x0000ffff) * 1566083941;
      mt[i] = (mt[i] ^ mul) - i;
      i++;
      if (i >= N) {
        mt[0] = mt[N - 1];
        i = 1;
      }
    }
    mt[0] = 0x80000000; // MSB is 1, assuring a non-zero initial array
    this.#mti = N;
  }

  /**
   * The next raw 32-bit output of MT19937 (CPython `genrand_uint32`).
   *
   * @returns an integer in `[0, 2^32)`
   */
  nextUint32(): number {
    const mt = this.#mt;
    if (this.#mti >= N) {
      let kk = 0;
      for (; kk < N - M; kk++) {
        const y = (mt[kk] & UPPER_MASK) | (mt[kk + 1] & LOWER_MASK);
        mt[kk] = mt[kk + M] ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
      }
      for (; kk < N - 1; kk++) {
        const y = (mt[kk] & UPPER_MASK) | (mt[kk + 1] & LOWER_MASK);
        mt[kk] = mt[kk + (M - N)] ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
      }
      const y = (mt[N - 1] & UPPER_MASK) | (mt[0] & LOWER_MASK);
      mt[N - 1] = mt[M - 1] ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
      this.#mti = 0;
    }
    let y = mt[this.#mti++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /**
   * `random.getrandbits(k)`: a k-bit integer. For k > 32 the 32-bit words
   * fill the result from the least significant end, and the last word keeps
   * only its top `k mod 32` bits, as CPython does.
   *
   * @param k number of bits, ≥ 0
   * @returns an integer in `[0, 2^k)`
   * @throws {RangeError} when k is negative or not an integer
   */
  getrandbits(k: number): bigint {
    if (!Number.isInteger(k) || k < 0) {
      throw new RangeError(`getrandbits: expected a non-negative integer k, found ${k}`);
    }
    if (k === 0) return 0n;
    if (k <= 32) return BigInt(this.nextUint32() >>> (32 - k));
    let result = 0n;
    for (let shift = 0n, left = k; left > 0; shift += 32n, left -= 32) {
      let r = this.nextUint32();
      if (left < 32) r >>>= 32 - left;
      result |= BigInt(r) << shift;
    }
    return result;
  }

  /**
   * `random.random()`: a float in [0, 1) with 53 random bits
   * (`(a*2^26 + b) / 2^53`, a = 27 bits, b = 26 bits).
   *
   * @returns a float in `[0, 1)`
   */
  random(): number {
    const a = this.nextUint32() >>> 5;
    const b = this.nextUint32() >>> 6;
    return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
  }

  /**
   * `random._randbelow_with_getrandbits(n)`: k = n.bit_length(); draw
   * getrandbits(k) until it is below n.
   *
   * @param n exclusive upper bound, `1 ≤ n ≤ 2^53`
   * @returns an integer in `[0, n)`
   * @throws {RangeError} when n is not an integer in `[1, 2^53]`
   */
  randbelow(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > 2 ** 53) {
      throw new RangeError(`randbelow: expected an integer n in [1, 2^53], found ${n}`);
    }
    const k = bitLength(n);
    if (k <= 32) {
      let r = this.nextUint32() >>> (32 - k);
      while (r >= n) r = this.nextUint32() >>> (32 - k);
      return r;
    }
    const big = BigInt(n);
    let r = this.getrandbits(k);
    while (r >= big) r = this.getrandbits(k);
    return Number(r);
  }

  /**
   * `random.randint(a, b)`: an integer in [a, b], both ends included
   * (`a + randbelow(b - a + 1)`).
   *
   * @param a lower end (safe integer)
   * @param b upper end (safe integer, `b ≥ a`, `b - a < 2^53`)
   * @returns an integer in `[a, b]`
   * @throws {RangeError} for an empty range, like Python's `ValueError`
   */
  randint(a: number, b: number): number {
    if (!Number.isSafeInteger(a) || !Number.isSafeInteger(b)) {
      throw new RangeError(`randint: expected safe integers, found (${a}, ${b})`);
    }
    if (b < a) throw new RangeError(`randint: empty range (${a}, ${b})`);
    return a + this.randbelow(b - a + 1);
  }
}

/** Python's `int.bit_length()` for 1 ≤ n ≤ 2^53. */
function bitLength(n: number): number {
  if (n < 2 ** 32) return 32 - Math.clz32(n);
  return 32 + (32 - Math.clz32(Math.floor(n / 2 ** 32)));
}
