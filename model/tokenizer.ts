/**
 * Tokenizers behind one interface: SentencePiece `.model` files
 * ({@linkcode SentencePieceTokenizer}) and llama2.c `tokenizer.bin` files
 * ({@linkcode Llama2cTokenizer}).
 *
 * llama2.c tokenizer.bin layout (karpathy/llama2.c tokenizer.py `export`,
 * run.c `build_tokenizer`): int32 max_token_length, then for every token in
 * id order: float32 score, int32 byte length, the UTF-8 bytes. Pieces use " "
 * where SentencePiece uses "▁"; BOS/EOS are stored as "\n<s>\n" and
 * "\n</s>\n"; byte-fallback tokens keep their "<0xNN>" text. The file does not
 * record the vocabulary size: it is the number of records up to the end.
 *
 * @module
 */
import {
  bpeMerge,
  checkTokenId,
  decodeUtf8Lenient,
  parseModelProto,
  printableByte,
  printablePiece,
  SentencePieceTokenizer,
  TokenizerError,
  withBos,
} from "./sentencepiece.ts";

export { SentencePieceTokenizer, TokenizerError };

/** One tokenizer, whatever file it came from. */
export interface Tokenizer {
  /** Number of tokens; ids are `0 .. vocabSize-1`. */
  readonly vocabSize: number;
  /** Id of the BOS token (1 for LLaMA-family vocabularies). */
  readonly bosId: number;
  /** Id of the EOS token (2 for LLaMA-family vocabularies). */
  readonly eosId: number;
  /** Ids of `text` exactly as sentencepiece `encode()` (no BOS). */
  encode(text: string): Int32Array;
  /** GPTQ protocol: BOS (id 1) once, then encode(text). Explicit, never implicit. */
  encodeWithBos(text: string): Int32Array;
  /** Text of a sequence of ids (BOS/EOS invisible, byte tokens reassembled as UTF-8). */
  decode(ids: ArrayLike<number>): string;
  /** Text of one token as it should be printed after `prev` (streaming generation, llama2.c style). */
  decodeToken(prev: number, id: number): string;
  /** File path it was loaded from. */
  readonly source: string;
}

/** llama2.c's fixed ids (run.c): BOS = 1, EOS = 2, byte b = token b + 3. */
export const LLAMA2C_BOS = 1;
/** llama2.c's EOS id. */
export const LLAMA2C_EOS = 2;
const LLAMA2C_BYTE_OFFSET = 3;
/** run.c's merge search starts at this score: pairs scoring at or below it never merge. */
const LLAMA2C_MIN_SCORE = -1e10;

/**
 * The llama2.c `tokenizer.bin` tokenizer, with run.c's `encode` and `decode`.
 *
 * @example
 * ```ts
 * const tok = parseLlama2cTokenizer(await Deno.readFile("tok512.bin"), "tok512.bin");
 * tok.encode("Hello world"); // same ids as the tok512.model encoder
 * ```
 */
export class Llama2cTokenizer implements Tokenizer {
  /** Number of tokens in the file. */
  readonly vocabSize: number;
  /** Always 1 (run.c hard-codes it). */
  readonly bosId: number = LLAMA2C_BOS;
  /** Always 2 (run.c hard-codes it). */
  readonly eosId: number = LLAMA2C_EOS;
  /** File the tokenizer was loaded from. */
  readonly source: string;
  /** The longest token in bytes, as the header states. */
  readonly maxTokenLength: number;
  /** `[vocabSize]` token text (" " for SentencePiece's "▁"). */
  readonly vocab: readonly string[];
  /** `[vocabSize]` merge score of each token. */
  readonly scores: Float32Array;

  readonly #lookup = new Map<string, number>(); // text → first id with that text
  readonly #byteOf: Int16Array; // [vocabSize] "<0xNN>" → NN, else -1

  /**
   * @param vocab `[vocabSize]` token texts
   * @param scores `[vocabSize]` scores
   * @param maxTokenLength the header value
   * @param source file name
   */
  constructor(vocab: string[], scores: Float32Array, maxTokenLength: number, source = "<memory>") {
    if (vocab.length !== scores.length) {
      throw new RangeError(`vocab has ${vocab.length} tokens but scores has ${scores.length}`);
    }
    this.vocab = vocab;
    this.scores = scores;
    this.vocabSize = vocab.length;
    this.maxTokenLength = maxTokenLength;
    this.source = source;
    this.#byteOf = new Int16Array(vocab.length).fill(-1);
    for (let id = 0; id < vocab.length; id++) {
      if (!this.#lookup.has(vocab[id])) this.#lookup.set(vocab[id], id);
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(vocab[id]);
      if (m) this.#byteOf[id] = parseInt(m[1], 16);
    }
  }

  /**
   * run.c `encode(text, bos=0, eos=0)`: a dummy-prefix " " token (for
   * non-empty text), each code point looked up whole or as its UTF-8 bytes + 3,
   * then repeated merging of the best-scoring adjacent pair, leftmost on ties.
   * Unlike sentencepiece, spaces are not collapsed or trimmed.
   *
   * @param text raw input
   * @returns token ids `[nTokens]`
   * @throws {TokenizerError} when the vocabulary lacks " " or a byte token needed
   */
  encode(text: string): Int32Array {
    if (text === "") return new Int32Array(0);
    text = text.toWellFormed();
    const space = this.#lookup.get(" ");
    if (space === undefined) {
      throw new TokenizerError(
        `Cannot encode with ${this.source}: no " " token for the dummy prefix`,
      );
    }
    const ids: number[] = [space];
    const enc = new TextEncoder();
    for (const ch of text) {
      const id = this.#lookup.get(ch);
      if (id !== undefined) ids.push(id);
      else {
        for (const b of enc.encode(ch)) {
          const byteId = b + LLAMA2C_BYTE_OFFSET;
          if (byteId >= this.vocabSize) {
            throw new TokenizerError(
              `Cannot encode with ${this.source}: byte token ${byteId} for 0x${
                b.toString(16)
              } is outside the ${this.vocabSize}-token vocabulary`,
            );
          }
          ids.push(byteId);
        }
      }
    }
    const strs = ids.map((id) => this.vocab[id]);
    const arr = Int32Array.from(ids);
    const n = bpeMerge(strs, arr, this.#lookup, this.scores, { minScore: LLAMA2C_MIN_SCORE });
    return arr.slice(0, n);
  }

  /**
   * BOS (1) once, then {@linkcode encode}.
   *
   * @param text raw input
   * @returns `[1, ...encode(text)]`
   */
  encodeWithBos(text: string): Int32Array {
    return withBos(this.bosId, this.encode(text));
  }

  /**
   * Text of `ids`: BOS and EOS vanish, "<0xNN>" tokens are raw bytes, the
   * result is decoded as UTF-8 (U+FFFD per invalid byte), and the dummy-prefix
   * space of the first visible token is dropped.
   *
   * @param ids token ids
   * @returns decoded text
   * @throws {RangeError} for an id outside `0 .. vocabSize-1`
   */
  decode(ids: ArrayLike<number>): string {
    const bytes: number[] = [];
    const enc = new TextEncoder();
    for (let k = 0; k < ids.length; k++) {
      const id = this.#checkId(ids[k]);
      if (id === this.bosId || id === this.eosId) continue;
      const b = this.#byteOf[id];
      if (b >= 0) {
        bytes.push(b);
        continue;
      }
      let piece = this.vocab[id];
      if (bytes.length === 0 && piece.startsWith(" ")) piece = piece.slice(1);
      for (const x of enc.encode(piece)) bytes.push(x);
    }
    return decodeUtf8Lenient(bytes);
  }

  /**
   * run.c `decode(prev, id)` + `safe_printf`: the leading space is dropped
   * after BOS, "<0xNN>" gives byte NN, and a one-byte result that is neither
   * printable ASCII nor whitespace prints nothing. BOS and EOS print nothing.
   *
   * @param prev previous token id
   * @param id token to print
   * @returns the printable text
   */
  decodeToken(prev: number, id: number): string {
    this.#checkId(id);
    if (id === this.bosId || id === this.eosId) return "";
    const b = this.#byteOf[id];
    if (b >= 0) return printableByte(b);
    return printablePiece(this.vocab[id], prev, this.bosId);
  }

  #checkId(id: number): number {
    return checkTokenId(id, this.vocabSize, this.source);
  }
}

/**
 * Parses a llama2.c `tokenizer.bin`.
 *
 * @param bytes the file content
 * @param path file name for error messages @default "<memory>"
 * @param vocabSize expected token count (e.g. the checkpoint's); checked when given
 * @returns the tokenizer
 * @throws {TokenizerError} for an empty, truncated or inconsistent file
 */
export function parseLlama2cTokenizer(
  bytes: Uint8Array,
  path = "<memory>",
  vocabSize?: number,
): Llama2cTokenizer {
  const fail = (msg: string): never => {
    throw new TokenizerError(`Cannot parse llama2.c tokenizer ${path}: ${msg}`);
  };
  if (bytes.length === 0) fail("file is empty");
  if (bytes.length < 4) fail(`file has ${bytes.length} bytes, too short for the 4-byte header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const maxTokenLength = view.getInt32(0, true);
  if (maxTokenLength <= 0 || maxTokenLength > 1 << 16) {
    fail(`max_token_length is ${maxTokenLength}, expected 1..65536`);
  }
  const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  const vocab: string[] = [];
  const scores: number[] = [];
  let pos = 4;
  while (pos < bytes.length) {
    const id = vocab.length;
    if (pos + 8 > bytes.length) {
      fail(`truncated: token ${id} header at byte ${pos} needs 8 bytes, file has ${bytes.length}`);
    }
    const score = view.getFloat32(pos, true);
    const len = view.getInt32(pos + 4, true);
    pos += 8;
    if (Number.isNaN(score)) fail(`token ${id} has a NaN score`);
    if (len < 0 || len > maxTokenLength) {
      fail(`token ${id} has length ${len}, expected 0..${maxTokenLength} (max_token_length)`);
    }
    if (pos + len > bytes.length) {
      fail(`truncated: token ${id} needs ${len} bytes at byte ${pos}, file has ${bytes.length}`);
    }
    try {
      vocab.push(utf8.decode(bytes.subarray(pos, pos + len)));
    } catch {
      fail(`token ${id} at byte ${pos} is not valid UTF-8`);
    }
    scores.push(score);
    pos += len;
  }
  if (vocab.length < 3) fail(`only ${vocab.length} tokens; expected <unk>, BOS, EOS at least`);
  if (vocabSize !== undefined && vocab.length !== vocabSize) {
    fail(`has ${vocab.length} tokens, expected ${vocabSize}`);
  }
  return new Llama2cTokenizer(vocab, Float32Array.from(scores), maxTokenLength, path);
}

/** Options of {@linkcode loadTokenizer}. */
export interface LoadTokenizerOptions {
  /** Expected vocabulary size (e.g. the checkpoint's); a mismatch is an error. */
  vocabSize?: number;
}

/**
 * Loads a tokenizer, choosing the format by extension (`.model` =
 * SentencePiece, `.bin` = llama2.c) or, for other names, by content.
 *
 * @param path file to read
 * @param options expected vocabulary size
 * @returns the tokenizer
 * @throws {TokenizerError} naming the file when it is missing, empty, corrupt or unsupported
 * @example
 * ```ts
 * const tok = await loadTokenizer("../shared/data/stories260K/tok512.model");
 * tok.encodeWithBos("Once upon a time"); // Int32Array [1, ...]
 * ```
 */
export async function loadTokenizer(
  path: string,
  options: LoadTokenizerOptions = {},
): Promise<Tokenizer> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new TokenizerError(`Cannot read tokenizer ${path}: file not found`);
    }
    throw new TokenizerError(`Cannot read tokenizer ${path}: ${(e as Error).message}`);
  }
  if (bytes.length === 0) throw new TokenizerError(`Cannot read tokenizer ${path}: file is empty`);
  const lower = path.toLowerCase();
  let tok: Tokenizer;
  if (lower.endsWith(".model")) tok = loadSentencePiece(bytes, path);
  else if (lower.endsWith(".bin")) tok = parseLlama2cTokenizer(bytes, path);
  else if (looksLikeLlama2cTokenizer(bytes)) tok = parseLlama2cTokenizer(bytes, path);
  else tok = loadSentencePiece(bytes, path);
  if (options.vocabSize !== undefined && tok.vocabSize !== options.vocabSize) {
    throw new TokenizerError(
      `Tokenizer ${path} has ${tok.vocabSize} tokens, expected ${options.vocabSize}`,
    );
  }
  return tok;
}

/**
 * Whether `bytes` has the structure of a llama2.c tokenizer.bin: a plausible
 * max_token_length, then records whose lengths fit it and end exactly at EOF.
 */
function looksLikeLlama2cTokenizer(bytes: Uint8Array): boolean {
  if (bytes.length < 4) return false;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const max = view.getInt32(0, true);
  if (max <= 0 || max > 1 << 16) return false;
  let pos = 4;
  while (pos + 8 <= bytes.length) {
    const len = view.getInt32(pos + 4, true);
    if (len < 0 || len > max) return false;
    pos += 8 + len;
  }
  return pos === bytes.length;
}

function loadSentencePiece(bytes: Uint8Array, path: string): SentencePieceTokenizer {
  return new SentencePieceTokenizer(parseModelProto(bytes, path), { source: path });
}
