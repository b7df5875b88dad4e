/**
 * What the model-file readers (safetensors, GGUF, Hugging Face directories)
 * share: their one error class, random-access byte sources that read only the
 * bytes asked for, and the 16-bit float conversions.
 *
 * A {@linkcode ByteSource} is a file opened once and read by offset
 * (`seek` + `read`), never read whole, so a 13 GB checkpoint costs only the
 * tensors actually requested. Reads are synchronous: the loaders are called
 * from the CLI, one tensor at a time.
 *
 * @module
 */

/**
 * A model file that cannot be read: malformed, truncated, or of a kind not
 * supported. The message names the file and what is wrong.
 */
export class ModelFormatError extends Error {
  override name = "ModelFormatError";
}

/** Random access to the bytes of one file (or of an in-memory copy, for tests). */
export interface ByteSource extends Disposable {
  /** The file name, used in error messages. */
  readonly path: string;
  /** Size in bytes. */
  readonly size: number;
  /**
   * `length` bytes from `offset`, in a fresh buffer (offset 0, so typed-array
   * views of it are aligned).
   *
   * @throws {ModelFormatError} when the range is outside the file
   */
  read(offset: number, length: number): Uint8Array<ArrayBuffer>;
}

/**
 * Opens `path` for reads by offset.
 *
 * @param path the file
 * @returns a source to be disposed (`using src = openByteSource(p)`)
 * @throws {ModelFormatError} when the file is missing or not a regular file
 * @example
 * ```ts
 * using src = openByteSource("model.safetensors");
 * const head = src.read(0, 8);
 * ```
 */
export function openByteSource(path: string): ByteSource {
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { read: true });
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "file not found" : (e as Error).message;
    throw new ModelFormatError(`Cannot open ${path}: ${why}`);
  }
  const info = file.statSync();
  if (!info.isFile) {
    file.close();
    throw new ModelFormatError(`Cannot read ${path}: not a regular file`);
  }
  const size = info.size;
  return {
    path,
    size,
    read(offset, length) {
      checkRange(path, size, offset, length);
      const out = new Uint8Array(length);
      file.seekSync(offset, Deno.SeekMode.Start);
      let got = 0;
      while (got < length) {
        const n = file.readSync(out.subarray(got));
        if (n === null || n === 0) {
          throw new ModelFormatError(
            `Cannot read ${path}: file ended at byte ${offset + got}, expected ${offset + length}`,
          );
        }
        got += n;
      }
      return out;
    },
    [Symbol.dispose]() {
      file.close();
    },
  };
}

/**
 * Opens `path` and hands the source to `reader` (which parses the header and
 * owns the source from then on); the source is closed if `reader` throws.
 *
 * @param path the file
 * @param reader builds the reader over the open source
 * @returns what `reader` returns (dispose it)
 * @throws {ModelFormatError} when the file is missing, or what `reader` throws
 * @example
 * ```ts
 * import { SafetensorsFile } from "./safetensors.ts";
 * using st = openReader("model.safetensors", (src) => new SafetensorsFile(src));
 * ```
 */
export function openReader<T>(path: string, reader: (src: ByteSource) => T): T {
  const src = openByteSource(path);
  try {
    return reader(src);
  } catch (e) {
    src[Symbol.dispose]();
    throw e;
  }
}

/**
 * A source over bytes already in memory (tests and fuzzers).
 *
 * @param bytes the content
 * @param path name used in error messages @default "<memory>"
 * @returns a source whose reads copy from `bytes`
 */
export function memoryByteSource(bytes: Uint8Array, path = "<memory>"): ByteSource {
  return {
    path,
    size: bytes.length,
    read(offset, length) {
      checkRange(path, bytes.length, offset, length);
      return bytes.slice(offset, offset + length);
    },
    [Symbol.dispose]() {},
  };
}

function checkRange(path: string, size: number, offset: number, length: number): void {
  if (
    !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
    offset + length > size
  ) {
    throw new ModelFormatError(
      `Cannot read ${path}: bytes ${offset}..${offset + length} are outside the ${size}-byte file`,
    );
  }
}

/** float16 bit pattern → value, all 65,536 of them (built on first use). */
let f16Table: Float32Array | undefined;

function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f, m = h & 0x3ff;
    t[h] = e === 0
      ? sign * m * 2 ** -24 // subnormal
      : e === 31
      ? (m ? NaN : sign * Infinity)
      : sign * (1 + m / 1024) * 2 ** (e - 15);
  }
  return (f16Table = t);
}

/**
 * IEEE float16 → float32 (exact).
 *
 * @param src `[n]` bit patterns
 * @returns `[n]` values
 */
export function f16ToF32(src: Uint16Array): Float32Array<ArrayBuffer> {
  const t = halfTable();
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = t[src[i]];
  return out;
}

/**
 * float32 → IEEE float16 bit pattern, round to nearest even (test converters).
 *
 * @param x a value
 * @returns the nearest float16's bits
 */
export function f32ToF16Bits(x: number): number {
  const f = SCRATCH_F32;
  f[0] = x;
  const u = SCRATCH_U32[0];
  const sign = (u >>> 16) & 0x8000;
  const e = (u >>> 23) & 0xff, m = u & 0x7fffff;
  if (e === 0xff) return sign | 0x7c00 | (m ? 0x200 : 0);
  const a = Math.abs(f[0]);
  if (a >= 65520) return sign | 0x7c00; // rounds to infinity
  if (a < 2 ** -14) { // subnormal half: value = k · 2^-24
    return sign | roundEven(a * 2 ** 24);
  }
  // normal: 10 mantissa bits out of 23, round to nearest even
  let h = ((e - 112) << 10) | (m >> 13);
  const rest = m & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++;
  return sign | h;
}

/** One float32 and its bits (the conversions above are synchronous, so sharing is safe). */
const SCRATCH_F32 = new Float32Array(1);
const SCRATCH_U32 = new Uint32Array(SCRATCH_F32.buffer);

function roundEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v - Math.trunc(v)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * bfloat16 → float32 (exact: the upper half of a float32).
 *
 * @param src `[n]` bit patterns
 * @returns `[n]` values
 */
export function bf16ToF32(src: Uint16Array): Float32Array<ArrayBuffer> {
  const bits = new Uint32Array(src.length);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return new Float32Array(bits.buffer);
}

/**
 * float32 → bfloat16 bit pattern, round to nearest even (test converters).
 *
 * @param x a value
 * @returns the nearest bfloat16's bits
 */
export function f32ToBf16Bits(x: number): number {
  SCRATCH_F32[0] = x;
  const u = SCRATCH_U32[0];
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x7fffff)) return (u >>> 16) | 0x40; // NaN
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * Throws when `x` holds a NaN or an infinity (as the llama2.c loader does).
 *
 * @param x tensor values
 * @param what tensor name and file, for the message
 * @throws {ModelFormatError} naming the tensor, the index and the value
 */
export function checkFinite(x: Float32Array, what: string): void {
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i])) {
      throw new ModelFormatError(`${what} has a non-finite value (${x[i]}) at index ${i}`);
    }
  }
}

/**
 * Whether `path` names a regular file; a missing path is `false`, any other
 * stat failure (permission, I/O) is thrown.
 *
 * @param path the file
 * @returns `true` for an existing regular file
 * @example
 * ```ts
 * import { isFile } from "./tensor_file.ts";
 * console.log(await isFile("config.json"));
 * ```
 */
export async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
