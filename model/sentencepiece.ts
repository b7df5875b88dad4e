/**
 * SentencePiece `.model` files: a schema-free protobuf parser for
 * `ModelProto` and an encoder/decoder that reproduces Google's sentencepiece
 * `SentencePieceProcessor.encode(text)` / `decode(ids)` for BPE models,
 * with or without byte fallback.
 *
 * Encoding follows sentencepiece's own pipeline:
 *
 * 1. `Normalizer::Normalize` (normalizer.cc): user-defined pieces are copied
 *    as-is; other characters pass through the identity normalizer; with
 *    `remove_extra_whitespaces`, leading and trailing spaces are dropped and
 *    runs of U+0020 collapse to one; with `escape_whitespaces`, U+0020 becomes
 *    U+2581 "▁"; with `add_dummy_prefix`, one "▁" is prepended (appended when
 *    `treat_whitespace_as_suffix`).
 * 2. `bpe::Model::Encode` (bpe_model.cc): the normalized text is split into
 *    characters (user-defined pieces first, longest match, never merged), then
 *    the adjacent pair whose concatenation is a NORMAL / USER_DEFINED / UNUSED
 *    piece with the highest score is merged, leftmost on ties, until no pair
 *    is in the vocabulary. UNUSED pieces are split back into the pair that
 *    made them.
 * 3. `PopulateSentencePieceText`: a piece outside the vocabulary becomes the
 *    byte pieces `<0xNN>` of its UTF-8 bytes (byte fallback), or one `<unk>`
 *    for a whole run of unknown pieces (no byte fallback).
 *
 * Only models whose normalizer is the identity (empty `precompiled_charsmap`,
 * e.g. "identity" as in llama2.c's tok512 and LLaMA's tokenizer.model) are
 * supported; NFKC-style charsmaps are rejected with a {@linkcode TokenizerError}.
 *
 * @module
 */
import type { Tokenizer } from "./tokenizer.ts";
import { ProtoReader, WIRE_FIXED32, WIRE_LEN, WIRE_VARINT } from "./_protobuf.ts";

/** A tokenizer file that cannot be read or is not supported; the message names the file. */
export class TokenizerError extends Error {
  override name = "TokenizerError";
}

/** `ModelProto.SentencePiece.Type` values (sentencepiece_model.proto). */
export const PieceType = {
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

/** `TrainerSpec.ModelType` values (sentencepiece_model.proto). */
export const ModelType = { UNIGRAM: 1, BPE: 2, WORD: 3, CHAR: 4 } as const;

/** The fields of `TrainerSpec` that encoding and decoding depend on (defaults as in the .proto). */
export interface TrainerSpec {
  /** `model_type` (field 3) @default ModelType.UNIGRAM */
  modelType: number;
  /** `vocab_size` (field 4) @default 8000 */
  vocabSize: number;
  /** `treat_whitespace_as_suffix` (field 24) @default false */
  treatWhitespaceAsSuffix: boolean;
  /** `byte_fallback` (field 35) @default false */
  byteFallback: boolean;
  /** `unk_id` (field 40) @default 0 */
  unkId: number;
  /** `bos_id` (field 41) @default 1 */
  bosId: number;
  /** `eos_id` (field 42) @default 2 */
  eosId: number;
  /** `pad_id` (field 43) @default -1 */
  padId: number;
  /** `unk_surface` (field 44): what decode prints for `<unk>`; undefined when absent (then " ⁇ "). */
  unkSurface: string | undefined;
  /** `unk_piece` (field 45) @default "<unk>" */
  unkPiece: string;
  /** `bos_piece` (field 46) @default "<s>" */
  bosPiece: string;
  /** `eos_piece` (field 47) @default "</s>" */
  eosPiece: string;
  /** `pad_piece` (field 48) @default "<pad>" */
  padPiece: string;
}

/** `NormalizerSpec` (defaults as in the .proto). */
export interface NormalizerSpec {
  /** `name` (field 1), e.g. "identity" or "nmt_nfkc" @default "" */
  name: string;
  /** `precompiled_charsmap` (field 2): a Darts trie of rewrite rules; empty = identity. */
  precompiledCharsmap: Uint8Array;
  /** `add_dummy_prefix` (field 3) @default true */
  addDummyPrefix: boolean;
  /** `remove_extra_whitespaces` (field 4) @default true */
  removeExtraWhitespaces: boolean;
  /** `escape_whitespaces` (field 5) @default true */
  escapeWhitespaces: boolean;
}

/** A parsed SentencePiece `ModelProto` (only the fields this module uses). */
export interface ModelProto {
  /** `pieces` (field 1): the vocabulary, id = index. */
  pieces: { piece: string; score: number; type: number }[];
  /** `trainer_spec` (field 2). */
  trainerSpec: TrainerSpec;
  /** `normalizer_spec` (field 3). */
  normalizerSpec: NormalizerSpec;
  /** `denormalizer_spec` (field 5), when present. */
  denormalizerSpec: NormalizerSpec | undefined;
}

/** U+2581 LOWER ONE EIGHTH BLOCK: sentencepiece's visible space. */
export const SPACE_SYMBOL = "\u2581";
const DEFAULT_UNK_SURFACE = " \u2047 ";

/**
 * Parses the bytes of a SentencePiece `.model` file (a serialized `ModelProto`).
 *
 * @param bytes the file content
 * @param path file name used in error messages @default "<memory>"
 * @returns the pieces and the trainer / normalizer specs
 * @throws {TokenizerError} on malformed protobuf or a missing vocabulary
 * @example
 * ```ts
 * const proto = parseModelProto(await Deno.readFile("tok512.model"), "tok512.model");
 * proto.pieces.length; // 512
 * ```
 */
export function parseModelProto(bytes: Uint8Array, path = "<memory>"): ModelProto {
  const fail = (msg: string): never => {
    throw new TokenizerError(`Cannot parse SentencePiece model ${path}: ${msg}`);
  };
  if (bytes.length === 0) fail("file is empty");
  const r = new ProtoReader(bytes, fail);
  const pieces: ModelProto["pieces"] = [];
  let trainerSpec: TrainerSpec = parseTrainerSpec(new ProtoReader(bytes, fail, 0, 0));
  let normalizerSpec: NormalizerSpec = parseNormalizerSpec(new ProtoReader(bytes, fail, 0, 0));
  let denormalizerSpec: NormalizerSpec | undefined;
  while (!r.done) {
    const tag = r.tag();
    const sub = (what: string): ProtoReader => {
      r.expect(tag, WIRE_LEN, what);
      const [s, e] = r.lenRange();
      return new ProtoReader(bytes, fail, s, e);
    };
    if (tag.field === 1) pieces.push(parsePiece(sub("pieces"), pieces.length));
    else if (tag.field === 2) trainerSpec = parseTrainerSpec(sub("trainer_spec"));
    else if (tag.field === 3) normalizerSpec = parseNormalizerSpec(sub("normalizer_spec"));
    else if (tag.field === 5) denormalizerSpec = parseNormalizerSpec(sub("denormalizer_spec"));
    else r.skip(tag.wire);
  }
  if (pieces.length === 0) fail("no pieces (field 1): not a SentencePiece model");
  return { pieces, trainerSpec, normalizerSpec, denormalizerSpec };
}

function parsePiece(r: ProtoReader, index: number): ModelProto["pieces"][number] {
  let piece = "", score = 0, type: number = PieceType.NORMAL;
  while (!r.done) {
    const tag = r.tag();
    if (tag.field === 1) {
      r.expect(tag, WIRE_LEN, `pieces[${index}].piece`);
      piece = r.string();
    } else if (tag.field === 2) {
      r.expect(tag, WIRE_FIXED32, `pieces[${index}].score`);
      score = r.float32();
    } else if (tag.field === 3) {
      r.expect(tag, WIRE_VARINT, `pieces[${index}].type`);
      type = r.int32();
    } else r.skip(tag.wire);
  }
  return { piece, score, type };
}

function parseTrainerSpec(r: ProtoReader): TrainerSpec {
  const t: TrainerSpec = {
    modelType: ModelType.UNIGRAM,
    vocabSize: 8000,
    treatWhitespaceAsSuffix: false,
    byteFallback: false,
    unkId: 0,
    bosId: 1,
    eosId: 2,
    padId: -1,
    unkSurface: undefined,
    unkPiece: "<unk>",
    bosPiece: "<s>",
    eosPiece: "</s>",
    padPiece: "<pad>",
  };
  const ints: Record<number, "modelType" | "vocabSize" | "unkId" | "bosId" | "eosId" | "padId"> = {
    3: "modelType",
    4: "vocabSize",
    40: "unkId",
    41: "bosId",
    42: "eosId",
    43: "padId",
  };
  const bools: Record<number, "treatWhitespaceAsSuffix" | "byteFallback"> = {
    24: "treatWhitespaceAsSuffix",
    35: "byteFallback",
  };
  const strings: Record<number, "unkSurface" | "unkPiece" | "bosPiece" | "eosPiece" | "padPiece"> =
    { 44: "unkSurface", 45: "unkPiece", 46: "bosPiece", 47: "eosPiece", 48: "padPiece" };
  while (!r.done) {
    const tag = r.tag();
    if (tag.field in ints) {
      r.expect(tag, WIRE_VARINT, `trainer_spec.${ints[tag.field]}`);
      t[ints[tag.field]] = r.int32();
    } else if (tag.field in bools) {
      r.expect(tag, WIRE_VARINT, `trainer_spec.${bools[tag.field]}`);
      t[bools[tag.field]] = r.bool();
    } else if (tag.field in strings) {
      r.expect(tag, WIRE_LEN, `trainer_spec.${strings[tag.field]}`);
      t[strings[tag.field]] = r.string();
    } else r.skip(tag.wire);
  }
  return t;
}

function parseNormalizerSpec(r: ProtoReader): NormalizerSpec {
  const n: NormalizerSpec = {
    name: "",
    precompiledCharsmap: new Uint8Array(0),
    addDummyPrefix: true,
    removeExtraWhitespaces: true,
    escapeWhitespaces: true,
  };
  while (!r.done) {
    const tag = r.tag();
    if (tag.field === 1) {
      r.expect(tag, WIRE_LEN, "normalizer_spec.name");
      n.name = r.string();
    } else if (tag.field === 2) {
      r.expect(tag, WIRE_LEN, "normalizer_spec.precompiled_charsmap");
      n.precompiledCharsmap = r.bytes();
    } else if (tag.field >= 3 && tag.field <= 5) {
      r.expect(tag, WIRE_VARINT, `normalizer_spec field ${tag.field}`);
      const v = r.bool();
      if (tag.field === 3) n.addDummyPrefix = v;
      else if (tag.field === 4) n.removeExtraWhitespaces = v;
      else n.escapeWhitespaces = v;
    } else r.skip(tag.wire);
  }
  return n;
}

/** Options of {@linkcode SentencePieceTokenizer}. */
export interface SentencePieceOptions {
  /** File the model was read from (error messages, `Tokenizer.source`). @default "<memory>" */
  source?: string;
  /**
   * Memoize the BPE result of each whitespace-delimited chunk ("▁word"). Used
   * only when provably exact for the vocabulary (no mergeable piece contains a
   * non-space character followed by "▁", whitespace as prefix); otherwise
   * the whole normalized text is merged at once. @default true
   */
  chunkCache?: boolean;
}

/** Entries kept in the chunk memo before it is cleared (bounds memory on huge corpora). */
const CHUNK_CACHE_LIMIT = 200_000;

/**
 * A SentencePiece BPE tokenizer that reproduces sentencepiece's `encode` and
 * `decode` exactly for identity-normalized models.
 *
 * @example
 * ```ts
 * const proto = parseModelProto(await Deno.readFile("tok512.model"));
 * const tok = new SentencePieceTokenizer(proto, { source: "tok512.model" });
 * tok.encode("Hello world"); // Int32Array [346, 306, 414, 263, 304, 341]
 * ```
 */
export class SentencePieceTokenizer implements Tokenizer {
  /** Number of pieces; ids are `0 .. vocabSize-1`. */
  readonly vocabSize: number;
  /** Id of the BOS control piece (`trainer_spec.bos_piece`), -1 when the model has none. */
  readonly bosId: number;
  /** Id of the EOS control piece (`trainer_spec.eos_piece`), -1 when the model has none. */
  readonly eosId: number;
  /** Id of the `<unk>` piece. */
  readonly unkId: number;
  /** File the model was loaded from. */
  readonly source: string;
  /** The parsed model. */
  readonly proto: ModelProto;

  readonly #pieces: string[]; // [vocabSize]
  readonly #scores: Float32Array; // [vocabSize]
  readonly #types: Uint8Array; // [vocabSize]
  /** NORMAL, USER_DEFINED and UNUSED pieces → id: the pieces BPE may produce. */
  readonly #mergeable = new Map<string, number>();
  readonly #byteIds = new Int32Array(256).fill(-1); // [256] byte → id of "<0xNN>"
  readonly #byteOf: Int16Array; // [vocabSize] id → byte value, -1 if not a byte piece
  /** User-defined pieces grouped by first UTF-16 unit, longest first. */
  readonly #userDefined = new Map<number, string[]>();
  readonly #ws: string; // "▁" or " "
  readonly #unkSurface: string;
  readonly #hasUnused: boolean;
  readonly #chunked: boolean;
  readonly #cache = new Map<string, Int32Array>();

  /**
   * @param proto a parsed model ({@linkcode parseModelProto})
   * @param options source name and chunk memoization
   * @throws {TokenizerError} for a non-BPE model, a non-identity normalizer,
   *   duplicate pieces, a missing `<unk>`, or incomplete byte pieces
   */
  constructor(proto: ModelProto, options: SentencePieceOptions = {}) {
    const source = options.source ?? "<memory>";
    const fail = (msg: string): never => {
      throw new TokenizerError(`Cannot use SentencePiece model ${source}: ${msg}`);
    };
    const { trainerSpec: ts, normalizerSpec: ns } = proto;
    if (ts.modelType !== ModelType.BPE) {
      const name = Object.entries(ModelType).find(([, v]) => v === ts.modelType)?.[0];
      fail(`trainer_spec.model_type is ${name ?? ts.modelType}, only BPE (2) is supported`);
    }
    if (ns.precompiledCharsmap.length > 0) {
      fail(
        `normalizer "${ns.name}" has a ${ns.precompiledCharsmap.length}-byte precompiled_charsmap; ` +
          `only identity normalization (empty charsmap) is supported`,
      );
    }
    if (proto.denormalizerSpec && proto.denormalizerSpec.precompiledCharsmap.length > 0) {
      fail("denormalizer_spec has a precompiled_charsmap; only identity is supported");
    }
    this.proto = proto;
    this.source = source;
    const n = proto.pieces.length;
    this.vocabSize = n;
    this.#pieces = proto.pieces.map((p) => p.piece);
    this.#scores = Float32Array.from(proto.pieces, (p) => p.score);
    this.#types = Uint8Array.from(proto.pieces, (p) => p.type);
    this.#byteOf = new Int16Array(n).fill(-1);
    const reserved = new Map<string, number>();
    let unkId = -1, hasUnused = false;
    for (let id = 0; id < n; id++) {
      const { piece, type } = proto.pieces[id];
      if (piece === "") fail(`piece ${id} is empty`);
      if (type < PieceType.NORMAL || type > PieceType.BYTE) fail(`piece ${id} has type ${type}`);
      const normal = type === PieceType.NORMAL || type === PieceType.USER_DEFINED ||
        type === PieceType.UNUSED;
      const map = normal ? this.#mergeable : reserved;
      if (map.has(piece)) fail(`piece "${piece}" (id ${id}) is already defined`);
      map.set(piece, id);
      if (type === PieceType.UNUSED) hasUnused = true;
      if (type === PieceType.USER_DEFINED) {
        const key = piece.charCodeAt(0);
        const list = this.#userDefined.get(key) ?? [];
        list.push(piece);
        list.sort((a, b) => b.length - a.length);
        this.#userDefined.set(key, list);
      }
      if (type === PieceType.UNKNOWN) {
        if (unkId >= 0) fail(`unk is already defined (ids ${unkId} and ${id})`);
        unkId = id;
      }
      if (type === PieceType.BYTE) {
        if (!ts.byteFallback) fail(`byte piece ${piece} found although byte_fallback is false`);
        const m = /^<0x([0-9A-F]{2})>$/.exec(piece);
        if (!m) fail(`byte piece "${piece}" (id ${id}) is not of the form <0xNN>`);
        const b = parseInt(m![1], 16);
        this.#byteIds[b] = id;
        this.#byteOf[id] = b;
      }
    }
    if (unkId < 0) fail("no UNKNOWN piece (unk is not defined)");
    if (ts.byteFallback && this.#byteIds.includes(-1)) {
      fail(
        `byte_fallback is true but byte piece <0x${hex2(this.#byteIds.indexOf(-1))}> is missing`,
      );
    }
    this.unkId = unkId;
    const control = (piece: string): number => {
      const id = reserved.get(piece);
      return id !== undefined && this.#types[id] === PieceType.CONTROL ? id : -1;
    };
    this.bosId = control(ts.bosPiece);
    this.eosId = control(ts.eosPiece);
    this.#ws = ns.escapeWhitespaces ? SPACE_SYMBOL : " ";
    this.#unkSurface = ts.unkSurface ?? DEFAULT_UNK_SURFACE;
    this.#hasUnused = hasUnused;
    this.#chunked = (options.chunkCache ?? true) && !ts.treatWhitespaceAsSuffix &&
      ![...this.#mergeable.keys()].some((p) => crossesChunk(p, this.#ws));
  }

  /**
   * Normalizes `text` as sentencepiece's `Normalizer::Normalize` does with an
   * identity charsmap. Lone UTF-16 surrogates become U+FFFD first (what their
   * UTF-8 encoding would be).
   *
   * @param text raw input
   * @returns the normalized text (with "▁" for spaces when escaping)
   */
  normalize(text: string): string {
    if (text === "") return "";
    text = text.toWellFormed();
    const { addDummyPrefix, removeExtraWhitespaces: removeExtra, escapeWhitespaces } =
      this.proto.normalizerSpec;
    const suffix = this.proto.trainerSpec.treatWhitespaceAsSuffix;
    const ws = this.#ws;
    const n = text.length;
    let i = 0;
    if (removeExtra) {
      while (i < n) {
        const len = this.#prefixLength(text, i);
        if (len !== 1 || text.charCodeAt(i) !== 0x20) break;
        i += len;
      }
    }
    if (i === n) return "";
    const parts: string[] = [];
    if (!suffix && addDummyPrefix) parts.push(ws);
    let isPrevSpace = removeExtra;
    let runStart = i; // start of a run of characters copied unchanged
    while (i < n) {
      const c = text.charCodeAt(i);
      if (!this.#userDefined.has(c)) {
        // Identity: one character; only U+0020 is rewritten or dropped.
        if (c === 0x20) {
          if (runStart < i) parts.push(text.slice(runStart, i));
          if (!isPrevSpace) parts.push(ws);
          isPrevSpace = removeExtra;
          runStart = ++i;
        } else {
          isPrevSpace = false;
          i++;
        }
        continue;
      }
      if (runStart < i) parts.push(text.slice(runStart, i));
      const len = this.#prefixLength(text, i);
      let sp = text.slice(i, i + len);
      if (isPrevSpace) sp = sp.replace(/^ +/, "");
      if (sp !== "") {
        parts.push(escapeWhitespaces ? sp.replaceAll(" ", SPACE_SYMBOL) : sp);
        isPrevSpace = removeExtra && sp.endsWith(" ");
      }
      runStart = i += len;
    }
    if (runStart < n) parts.push(text.slice(runStart));
    let out = parts.join("");
    if (removeExtra) {
      let end = out.length;
      while (end >= ws.length && out.endsWith(ws, end)) end -= ws.length;
      out = out.slice(0, end);
    }
    if (suffix && addDummyPrefix) out += ws;
    return out;
  }

  /**
   * Ids of `text` exactly as sentencepiece's `encode(text)` (no BOS, no EOS).
   *
   * @param text raw input
   * @returns token ids `[nTokens]`
   */
  encode(text: string): Int32Array {
    const normalized = this.normalize(text);
    const out: number[] = [];
    if (!this.#chunked) this.#encodeNormalized(normalized, out);
    else {
      const ws = this.#ws.charCodeAt(0);
      let start = 0;
      for (let i = 1; i <= normalized.length; i++) {
        if (
          i < normalized.length &&
          !(normalized.charCodeAt(i) === ws && normalized.charCodeAt(i - 1) !== ws)
        ) continue;
        const chunk = normalized.slice(start, i);
        start = i;
        let ids = this.#cache.get(chunk);
        if (ids === undefined) {
          const tmp: number[] = [];
          this.#encodeNormalized(chunk, tmp);
          ids = Int32Array.from(tmp);
          if (this.#cache.size >= CHUNK_CACHE_LIMIT) this.#cache.clear();
          this.#cache.set(chunk, ids);
        }
        for (let k = 0; k < ids.length; k++) out.push(ids[k]);
      }
    }
    if (!this.proto.trainerSpec.byteFallback) {
      // A run of unknown pieces is reported as a single <unk> (PopulateSentencePieceText).
      let w = 0;
      for (let r = 0; r < out.length; r++) {
        if (out[r] === this.unkId && w > 0 && out[w - 1] === this.unkId) continue;
        out[w++] = out[r];
      }
      out.length = w;
    }
    return Int32Array.from(out);
  }

  /**
   * GPTQ protocol: BOS once, then {@linkcode encode}.
   *
   * @param text raw input
   * @returns `[bosId, ...encode(text)]`
   * @throws {TokenizerError} when the model has no BOS piece
   */
  encodeWithBos(text: string): Int32Array {
    if (this.bosId < 0) {
      throw new TokenizerError(`SentencePiece model ${this.source} has no BOS control piece`);
    }
    return withBos(this.bosId, this.encode(text));
  }

  /**
   * Text of `ids` as sentencepiece's `decode(ids)`: control pieces vanish,
   * runs of byte pieces are decoded as UTF-8 (U+FFFD per invalid byte),
   * "▁" becomes a space, and the dummy-prefix space at the start is removed.
   *
   * @param ids token ids
   * @returns decoded text
   * @throws {RangeError} for an id outside `0 .. vocabSize-1`
   */
  decode(ids: ArrayLike<number>): string {
    const { addDummyPrefix, removeExtraWhitespaces } = this.proto.normalizerSpec;
    let text = "";
    const run: number[] = [];
    let isBosWs = true, bosWsSeen = false;
    for (let k = 0; k < ids.length; k++) {
      const id = this.#checkId(ids[k]);
      const b = this.#byteOf[id];
      if (b >= 0) {
        run.push(b);
        continue;
      }
      if (run.length > 0) {
        text += decodeUtf8Lenient(run);
        run.length = 0;
      }
      if (bosWsSeen || text !== "") isBosWs = false;
      bosWsSeen = false;
      const type = this.#types[id];
      if (type === PieceType.CONTROL) continue;
      if (type === PieceType.UNKNOWN) {
        text += this.#unkSurface;
        continue;
      }
      let piece = this.#pieces[id];
      if (isBosWs && (addDummyPrefix || removeExtraWhitespaces) && piece.startsWith(SPACE_SYMBOL)) {
        piece = piece.slice(SPACE_SYMBOL.length);
        // With remove_extra_whitespaces every leading "▁" goes, not just the first.
        bosWsSeen = !removeExtraWhitespaces;
      }
      text += piece.replaceAll(SPACE_SYMBOL, " ");
    }
    if (run.length > 0) text += decodeUtf8Lenient(run);
    return text;
  }

  /**
   * Text of one token as llama2.c's `decode` + `safe_printf` print it after
   * `prev`: a leading space is dropped after BOS, byte pieces give their byte,
   * and a single byte that is neither printable ASCII nor whitespace prints
   * nothing (so bytes of multi-byte characters are dropped; use
   * {@linkcode decode} for exact text). Control pieces print nothing.
   *
   * @param prev the previous token id
   * @param id the token to print
   * @returns the printable text
   */
  decodeToken(prev: number, id: number): string {
    this.#checkId(id);
    const type = this.#types[id];
    if (type === PieceType.CONTROL) return "";
    if (type === PieceType.UNKNOWN) return this.#unkSurface;
    const b = this.#byteOf[id];
    if (b >= 0) return printableByte(b);
    return printablePiece(this.#pieces[id].replaceAll(SPACE_SYMBOL, " "), prev, this.bosId);
  }

  /** The piece string of `id` (as stored in the model, "▁" included). */
  idToPiece(id: number): string {
    return this.#pieces[this.#checkId(id)];
  }

  #checkId(id: number): number {
    return checkTokenId(id, this.vocabSize, this.source);
  }

  /** Length (UTF-16 units) of the user-defined piece or character at `i`. */
  #prefixLength(s: string, i: number): number {
    const user = this.#userMatch(s, i);
    return user > 0 ? user : charLength(s, i);
  }

  /** Length of the longest user-defined piece starting at `i`, 0 when none does. */
  #userMatch(s: string, i: number): number {
    const cands = this.#userDefined.get(s.charCodeAt(i));
    if (cands) {
      for (const p of cands) if (s.startsWith(p, i)) return p.length;
    }
    return 0;
  }

  /** BPE over one normalized string, appending ids to `out`. */
  #encodeNormalized(normalized: string, out: number[]): void {
    if (normalized === "") return;
    const strs: string[] = [];
    const frozen: number[] = [];
    for (let i = 0; i < normalized.length;) {
      // PrefixMatcher: the longest user-defined piece is one frozen symbol, else one character.
      const user = this.#userMatch(normalized, i);
      const len = user > 0 ? user : charLength(normalized, i);
      strs.push(normalized.slice(i, i + len));
      frozen.push(user > 0 ? 1 : 0);
      i += len;
    }
    const ids = Int32Array.from(strs, (s) => this.#mergeable.get(s) ?? -1);
    const revMerge = new Map<string, [string, string]>();
    const n = bpeMerge(strs, ids, this.#mergeable, this.#scores, {
      frozen: Uint8Array.from(frozen),
      onPair: this.#hasUnused
        ? (merged, left, right, id) => {
          if (this.#types[id] === PieceType.UNUSED) revMerge.set(merged, [left, right]);
        }
        : undefined,
    });
    for (let k = 0; k < n; k++) this.#emit(strs[k], ids[k], revMerge, out);
  }

  /** Appends the id(s) of one BPE output piece: UNUSED resegmented, unknown → bytes or unk. */
  #emit(piece: string, id: number, revMerge: Map<string, [string, string]>, out: number[]): void {
    if (id >= 0 && this.#types[id] === PieceType.UNUSED) {
      const pair = revMerge.get(piece);
      if (pair) {
        for (const p of pair) this.#emit(p, this.#mergeable.get(p) ?? -1, revMerge, out);
        return;
      }
    }
    if (id >= 0) out.push(id);
    else if (this.proto.trainerSpec.byteFallback) {
      for (const b of UTF8.encode(piece)) out.push(this.#byteIds[b]);
    } else out.push(this.unkId);
  }
}

const UTF8 = new TextEncoder();

/** Options of {@linkcode bpeMerge}. */
export interface BpeMergeOptions {
  /** `[nSymbols]` 1 = this symbol never merges (user-defined piece). */
  frozen?: Uint8Array;
  /** Pairs scoring at or below this never merge (llama2.c starts its search at -1e10). @default -Infinity */
  minScore?: number;
  /** Called for every candidate pair put on the agenda, with the id of the merged piece. */
  onPair?: (merged: string, left: string, right: string, id: number) => void;
}

/**
 * Byte-pair merging by piece score (sentencepiece bpe_model.cc): repeatedly
 * merge the adjacent pair whose concatenation is in `vocab` with the highest
 * score, leftmost on ties, until no adjacent pair is in `vocab`. A max-heap of
 * candidate pairs with lazy deletion keeps this O(n log n).
 *
 * Works in place: on return `strs[0..k)` and `ids[0..k)` hold the final
 * symbols and their ids (merged symbols get their vocab id; unmerged ones keep
 * the id passed in, -1 for unknown).
 *
 * @param strs `[nSymbols]` initial symbol strings, overwritten
 * @param ids `[nSymbols]` initial symbol ids, overwritten
 * @param vocab piece → id of every piece a merge may produce
 * @param scores `[vocabSize]` score of each id
 * @param options frozen symbols, score floor, pair hook
 * @returns k, the number of final symbols
 * @example
 * ```ts
 * const strs = ["a", "b", "c"], ids = new Int32Array([-1, -1, -1]);
 * const k = bpeMerge(strs, ids, new Map([["ab", 0]]), [0]); // 2: ["ab", "c"]
 * ```
 */
export function bpeMerge(
  strs: string[],
  ids: Int32Array,
  vocab: Map<string, number>,
  scores: ArrayLike<number>,
  options: BpeMergeOptions = {},
): number {
  const n = strs.length;
  if (n < 2) return n;
  const { frozen, onPair } = options;
  const minScore = options.minScore ?? -Infinity;
  const len = new Int32Array(n); // [n] UTF-16 length of each live symbol
  const prev = new Int32Array(n); // [n] -1 at the start
  const next = new Int32Array(n); // [n] -1 at the end
  const alive = new Uint8Array(n).fill(1); // [n]
  for (let i = 0; i < n; i++) {
    len[i] = strs[i].length;
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  // Agenda entries (at most n-1 initial pairs + 2 per merge < 3n).
  const cap = 3 * n;
  const eLeft = new Int32Array(cap), eRight = new Int32Array(cap);
  const eSize = new Int32Array(cap), eId = new Int32Array(cap);
  const eScore = new Float64Array(cap);
  const heap = new Int32Array(cap); // entry indices, max-heap by (score desc, left asc)
  let nEntries = 0, heapSize = 0;
  const better = (a: number, b: number): boolean =>
    eScore[a] > eScore[b] || (eScore[a] === eScore[b] && eLeft[a] < eLeft[b]);
  const addPair = (l: number, r: number): void => {
    if (l < 0 || r < 0 || (frozen && (frozen[l] || frozen[r]))) return;
    const merged = strs[l] + strs[r];
    const id = vocab.get(merged);
    if (id === undefined || !(scores[id] > minScore)) return;
    const e = nEntries++;
    eLeft[e] = l, eRight[e] = r, eSize[e] = merged.length, eId[e] = id, eScore[e] = scores[id];
    onPair?.(merged, strs[l], strs[r], id);
    let i = heapSize++;
    while (i > 0) { // sift up
      const parent = (i - 1) >> 1;
      if (!better(e, heap[parent])) break;
      heap[i] = heap[parent];
      i = parent;
    }
    heap[i] = e;
  };
  for (let i = 1; i < n; i++) addPair(i - 1, i);
  while (heapSize > 0) {
    const top = heap[0];
    const last = heap[--heapSize];
    let i = 0;
    for (;;) { // sift down `last` from the root
      let c = 2 * i + 1;
      if (c >= heapSize) break;
      if (c + 1 < heapSize && better(heap[c + 1], heap[c])) c++;
      if (!better(heap[c], last)) break;
      heap[i] = heap[c];
      i = c;
    }
    heap[i] = last;
    const l = eLeft[top], r = eRight[top];
    // Stale entry: a side was merged away or changed since the pair was queued.
    if (!alive[l] || !alive[r] || next[l] !== r || len[l] + len[r] !== eSize[top]) continue;
    strs[l] = strs[l] + strs[r];
    len[l] = eSize[top];
    ids[l] = eId[top];
    alive[r] = 0;
    next[l] = next[r];
    if (next[r] >= 0) prev[next[r]] = l;
    addPair(prev[l], l);
    addPair(l, next[l]);
  }
  let k = 0;
  for (let i = 0; i >= 0; i = next[i]) {
    strs[k] = strs[i];
    ids[k] = ids[i];
    k++;
  }
  strs.length = k;
  return k;
}

/**
 * Decodes UTF-8 like sentencepiece's `DecodeUTF8`: every byte that does not
 * start a valid, shortest-form sequence becomes one U+FFFD (WHATWG's decoder
 * would sometimes give one U+FFFD for several bytes).
 *
 * @param bytes UTF-8 bytes
 * @returns the decoded text
 */
export function decodeUtf8Lenient(bytes: ArrayLike<number>): string {
  let out = "";
  const n = bytes.length;
  const trail = (i: number) => i < n && (bytes[i] & 0xc0) === 0x80;
  for (let i = 0; i < n;) {
    const b0 = bytes[i];
    let cp = -1, len = 1;
    if (b0 < 0x80) cp = b0;
    else if ((b0 & 0xe0) === 0xc0 && trail(i + 1)) {
      const c = ((b0 & 0x1f) << 6) | (bytes[i + 1] & 0x3f);
      if (c >= 0x80) cp = c, len = 2;
    } else if ((b0 & 0xf0) === 0xe0 && trail(i + 1) && trail(i + 2)) {
      const c = ((b0 & 0x0f) << 12) | ((bytes[i + 1] & 0x3f) << 6) | (bytes[i + 2] & 0x3f);
      if (c >= 0x800 && (c < 0xd800 || c > 0xdfff)) cp = c, len = 3;
    } else if ((b0 & 0xf8) === 0xf0 && trail(i + 1) && trail(i + 2) && trail(i + 3)) {
      const c = ((b0 & 0x07) << 18) | ((bytes[i + 1] & 0x3f) << 12) |
        ((bytes[i + 2] & 0x3f) << 6) | (bytes[i + 3] & 0x3f);
      if (c >= 0x10000 && c <= 0x10ffff) cp = c, len = 4;
    }
    out += cp < 0 ? "\ufffd" : String.fromCodePoint(cp);
    i += len;
  }
  return out;
}

/** What llama2.c's `safe_printf` prints for a one-byte piece: printable ASCII or whitespace. */
export function printableByte(b: number): string {
  const printable = (b >= 0x20 && b <= 0x7e) || (b >= 0x09 && b <= 0x0d);
  return printable ? String.fromCharCode(b) : "";
}

/**
 * What llama2.c's `decode` + `safe_printf` print for a text piece (spaces as
 * " ") after token `prev`: the leading space dropped right after BOS, a
 * one-character ASCII piece only when printable. Shared by both tokenizers'
 * `decodeToken`.
 */
export function printablePiece(piece: string, prev: number, bosId: number): string {
  if (prev === bosId && piece.startsWith(" ")) piece = piece.slice(1);
  return piece.length === 1 && piece.charCodeAt(0) < 0x80
    ? printableByte(piece.charCodeAt(0))
    : piece;
}

/**
 * `[bosId, ...ids]`: GPTQ's protocol, BOS once before the text (both
 * tokenizers' `encodeWithBos`).
 */
export function withBos(bosId: number, ids: Int32Array): Int32Array {
  const out = new Int32Array(ids.length + 1);
  out[0] = bosId;
  out.set(ids, 1);
  return out;
}

/**
 * Returns `id` when it is a token id of a `vocabSize`-token vocabulary,
 * else throws a RangeError naming the tokenizer file `source`.
 */
export function checkTokenId(id: number, vocabSize: number, source: string): number {
  if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
    throw new RangeError(`Invalid token id ${id} for ${source}: expected 0..${vocabSize - 1}`);
  }
  return id;
}

/** UTF-16 length of the code point at `i` (2 for a surrogate pair). */
function charLength(s: string, i: number): number {
  const c = s.charCodeAt(i);
  if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
    const d = s.charCodeAt(i + 1);
    if (d >= 0xdc00 && d <= 0xdfff) return 2;
  }
  return 1;
}

/** Whether `piece` contains a non-whitespace character directly followed by `ws`. */
function crossesChunk(piece: string, ws: string): boolean {
  for (let i = piece.indexOf(ws, 1); i > 0; i = piece.indexOf(ws, i + 1)) {
    if (!piece.startsWith(ws, i - ws.length)) return true;
  }
  return false;
}

function hex2(b: number): string {
  return b.toString(16).toUpperCase().padStart(2, "0");
}
