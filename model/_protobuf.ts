/**
 * A minimal protobuf wire-format reader: just enough to walk the fields of a
 * SentencePiece `ModelProto` without a schema compiler.
 *
 * Wire types (protobuf encoding spec): 0 varint, 1 fixed64, 2 length-delimited,
 * 5 fixed32; 3 and 4 (groups) are deprecated and rejected.
 *
 * @module
 */

/** Wire type of a varint field (int32, int64, uint64, bool, enum). */
export const WIRE_VARINT = 0;
/** Wire type of a fixed 8-byte field (double, fixed64). */
export const WIRE_FIXED64 = 1;
/** Wire type of a length-delimited field (string, bytes, embedded message). */
export const WIRE_LEN = 2;
/** Wire type of a fixed 4-byte field (float, fixed32). */
export const WIRE_FIXED32 = 5;

/** One field header: its number and wire type. */
export interface ProtoTag {
  /** Field number as declared in the .proto file. */
  field: number;
  /** Wire type (0, 1, 2 or 5). */
  wire: number;
}

/**
 * Sequential reader over one protobuf message (or a sub-range of it).
 * Every read checks bounds; `fail` builds the error thrown on malformed input,
 * so the caller's message names the file.
 */
export class ProtoReader {
  /** Next byte to read. */
  pos: number;
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  readonly #end: number;
  readonly #fail: (msg: string) => never;

  /**
   * @param bytes the whole buffer
   * @param fail throws the caller's error with a message about the malformed input
   * @param start first byte of the message @default 0
   * @param end one past the last byte of the message @default bytes.length
   */
  constructor(
    bytes: Uint8Array,
    fail: (msg: string) => never,
    start = 0,
    end: number = bytes.length,
  ) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = start;
    this.#end = end;
    this.#fail = fail;
  }

  /** Whether the whole message has been consumed. */
  get done(): boolean {
    return this.pos >= this.#end;
  }

  /** Reads a field header. */
  tag(): ProtoTag {
    const at = this.pos;
    const { lo, hi } = this.#varint();
    const key = lo >>> 0;
    const field = (key >>> 3) + hi * 2 ** 29;
    const wire = key & 7;
    if (field === 0) this.#fail(`field number 0 at byte ${at}`);
    if (
      wire !== WIRE_VARINT && wire !== WIRE_FIXED64 && wire !== WIRE_LEN && wire !== WIRE_FIXED32
    ) {
      this.#fail(`unsupported wire type ${wire} for field ${field} at byte ${at}`);
    }
    return { field, wire };
  }

  /** Reads a varint as protobuf's int32 does: the low 32 bits, two's complement. */
  int32(): number {
    return this.#varint().lo | 0;
  }

  /** Reads a varint bool (any non-zero value is true). */
  bool(): boolean {
    const { lo, hi } = this.#varint();
    return lo !== 0 || hi !== 0;
  }

  /** Reads a little-endian float32 (wire type 5). */
  float32(): number {
    this.#need(4);
    const v = this.#view.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }

  /** Reads a length-delimited field and returns its byte range `[start, end)`. */
  lenRange(): [number, number] {
    const at = this.pos;
    const { lo, hi } = this.#varint();
    if (hi !== 0 || lo > 0x7fffffff) this.#fail(`length-delimited field too long at byte ${at}`);
    const len = lo >>> 0;
    this.#need(len);
    const start = this.pos;
    this.pos += len;
    return [start, start + len];
  }

  /** Reads a length-delimited field as raw bytes (a view, not a copy). */
  bytes(): Uint8Array {
    const [s, e] = this.lenRange();
    return this.#bytes.subarray(s, e);
  }

  /** Reads a length-delimited field as strict UTF-8 text. */
  string(): string {
    const at = this.pos;
    const b = this.bytes();
    try {
      return UTF8_STRICT.decode(b);
    } catch {
      return this.#fail(`string field at byte ${at} is not valid UTF-8`);
    }
  }

  /** Skips a field of the given wire type. */
  skip(wire: number): void {
    if (wire === WIRE_VARINT) this.#varint();
    else if (wire === WIRE_FIXED64) this.#skipBytes(8);
    else if (wire === WIRE_LEN) this.lenRange();
    else if (wire === WIRE_FIXED32) this.#skipBytes(4);
    else this.#fail(`cannot skip wire type ${wire}`);
  }

  /** Checks that `tag` has the wire type the schema declares for it. */
  expect(tag: ProtoTag, wire: number, what: string): void {
    if (tag.wire !== wire) {
      this.#fail(`${what} (field ${tag.field}) has wire type ${tag.wire}, expected ${wire}`);
    }
  }

  #skipBytes(n: number): void {
    this.#need(n);
    this.pos += n;
  }

  #need(n: number): void {
    if (this.pos + n > this.#end) {
      this.#fail(`truncated: need ${n} bytes at byte ${this.pos}, message ends at ${this.#end}`);
    }
  }

  /** Varint as two 32-bit halves (at most 10 bytes). */
  #varint(): { lo: number; hi: number } {
    let lo = 0, hi = 0;
    const start = this.pos;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.#end) this.#fail(`truncated varint at byte ${start}`);
      const b = this.#bytes[this.pos++];
      if (i < 4) lo |= (b & 0x7f) << (7 * i);
      else if (i === 4) {
        lo |= (b & 0x0f) << 28;
        hi |= (b & 0x7f) >> 4;
      } else hi |= (b & 0x7f) << (7 * i - 32);
      if (b < 0x80) return { lo: lo >>> 0, hi: hi >>> 0 };
    }
    return this.#fail(`varint longer than 10 bytes at byte ${start}`);
  }
}

const UTF8_STRICT = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
