/**
 * Hugging Face `tokenizer.json` files of the LLaMA / Mistral kind: a BPE
 * model (vocab + ranked merges, byte fallback, `<unk>`) behind a
 * "▁"-escaping normalizer (`Prepend("▁")` + `Replace(" ", "▁")`, as
 * transformers' LlamaConverter writes) or a `Metaspace` pre-tokenizer.
 *
 * Why not `npm:@huggingface/tokenizers`: it installs and runs in Deno, but
 * it cannot provide {@linkcode Tokenizer.decodeToken} (llama2.c's streaming
 * rules need the raw pieces), it throws its own error types on malformed
 * files (the fuzzers require one error class), and this file is small: the
 * pipeline below is the subset of tokenizers' components these files use.
 *
 * Encoding follows the tokenizers crate:
 *
 * 1. Normalizers, in order: `Sequence`, `Prepend` (not on empty text),
 *    `Replace` (a literal `{"String": s}` or `{"Regex": r}`, the regex run as
 *    a JavaScript RegExp with flags "gmu", which agrees with Oniguruma for the
 *    patterns converters write), `Strip`, `NFC`/`NFD`/`NFKC`/`NFKD`.
 * 2. Pre-tokenizer: none (the whole text is one word) or `Metaspace`
 *    (spaces → replacement; prepended unless the text already starts with it,
 *    for prepend_scheme "always"/"first"; `split` cuts before every
 *    replacement character).
 * 3. BPE per word (tokenizers' `Word::merge_all`): characters → ids, a
 *    character outside the vocabulary → its UTF-8 byte tokens `<0xNN>` (byte
 *    fallback) or `<unk>` (consecutive ones fused with `fuse_unk`); then the
 *    adjacent pair with the lowest merge rank is merged, leftmost first, until
 *    no adjacent pair is a merge.
 *
 * Added tokens are not split out of the text (sentencepiece does not either:
 * "<s>" in the text is three characters), so for a tokenizer.json converted
 * from a SentencePiece BPE model the ids equal sentencepiece's.
 *
 * @module
 */
import type { Tokenizer } from "./tokenizer.ts";
import {
  checkTokenId,
  decodeUtf8Lenient,
  printableByte,
  printablePiece,
  TokenizerError,
  withBos,
} from "./sentencepiece.ts";

/** One normalizing step on the whole text. */
type Normalize = (s: string) => string;

/** How Metaspace pre-tokenizes, when present. */
interface Metaspace {
  replacement: string;
  prepend: boolean;
  split: boolean;
}

const UTF8 = new TextEncoder();

/**
 * A tokenizer read from a Hugging Face `tokenizer.json` (BPE model).
 *
 * @example
 * ```ts
 * const tok = await loadTokenizerJson("/models/Llama-2-7b-hf/tokenizer.json");
 * tok.encodeWithBos("Hello world"); // Int32Array [1, 15043, 3186]
 * ```
 */
export class TokenizerJson implements Tokenizer {
  /** Number of ids (vocab and added tokens). */
  readonly vocabSize: number;
  /** Id of the BOS token ("<s>" or the post-processor's first special token); -1 when none. */
  readonly bosId: number;
  /** Id of the EOS token ("</s>"); -1 when none. */
  readonly eosId: number;
  /** Id of `model.unk_token`; -1 when none. */
  readonly unkId: number;
  /** File it was read from. */
  readonly source: string;

  readonly #pieces: string[]; // [vocabSize] token text
  readonly #vocab = new Map<string, number>(); // model vocab: piece → id
  readonly #merges = new Map<number, number>(); // left · vocabSize + right → rank
  readonly #mergedId: Int32Array; // [nMerges] id of the merged piece, by rank
  readonly #byteIds = new Int32Array(256).fill(-1); // [256] byte → "<0xNN>" id
  readonly #byteOf: Int16Array; // [vocabSize] id → byte, -1 when not a byte token
  readonly #special: Uint8Array; // [vocabSize] 1 = special added token (decoded as nothing)
  readonly #normalizers: Normalize[];
  readonly #metaspace: Metaspace | undefined;
  readonly #byteFallback: boolean;
  readonly #fuseUnk: boolean;
  readonly #ignoreMerges: boolean;
  readonly #stripLeadingSpace: boolean;
  readonly #space: string; // the space symbol of the pieces ("▁")
  readonly #cache = new Map<string, Int32Array>();

  /**
   * @param json the parsed file
   * @param source file name for messages @default "<memory>"
   * @throws {TokenizerError} for anything outside the supported subset or inconsistent
   */
  constructor(json: unknown, source = "<memory>") {
    const fail = (msg: string): never => {
      throw new TokenizerError(`Cannot parse tokenizer.json ${source}: ${msg}`);
    };
    this.source = source;
    if (!isObject(json)) fail("not a JSON object");
    const root = json as Record<string, unknown>;
    const model = root.model;
    if (!isObject(model)) fail(`no "model" object`);
    const m = model as Record<string, unknown>;
    if (m.type !== undefined && m.type !== "BPE") {
      fail(`model type ${JSON.stringify(m.type)} is not supported (only BPE)`);
    }
    if (m.dropout !== undefined && m.dropout !== null && m.dropout !== 0) {
      fail(`BPE dropout ${JSON.stringify(m.dropout)} is not supported (encoding must be exact)`);
    }
    for (const k of ["continuing_subword_prefix", "end_of_word_suffix"]) {
      if (m[k] !== undefined && m[k] !== null && m[k] !== "") {
        fail(`BPE ${k} ${JSON.stringify(m[k])} is not supported`);
      }
    }
    if (!isObject(m.vocab)) fail(`model.vocab is not an object`);
    // Ids: the vocab's and the added tokens', dense from 0.
    const byId = new Map<number, string>();
    const addId = (piece: string, id: unknown, what: string) => {
      if (!Number.isSafeInteger(id) || (id as number) < 0) {
        fail(`${what} "${piece}" has id ${JSON.stringify(id)}, expected a non-negative integer`);
      }
      const prev = byId.get(id as number);
      if (prev !== undefined && prev !== piece) {
        fail(`id ${id} is both "${prev}" and "${piece}"`);
      }
      byId.set(id as number, piece);
    };
    for (const [piece, id] of Object.entries(m.vocab as Record<string, unknown>)) {
      addId(piece, id, "vocab piece");
      this.#vocab.set(piece, id as number);
    }
    const special = new Set<number>();
    const added = root.added_tokens ?? [];
    if (!Array.isArray(added)) fail("added_tokens is not an array");
    for (const t of added as unknown[]) {
      if (!isObject(t)) fail("an added_tokens entry is not an object");
      const { id, content, special: sp } = t as Record<string, unknown>;
      if (typeof content !== "string" || content === "") {
        fail(`added token ${JSON.stringify(id)} has no content`);
      }
      addId(content as string, id, "added token");
      if (sp === true) special.add(id as number);
    }
    const n = byId.size;
    if (n === 0) fail("the vocabulary is empty");
    for (const id of byId.keys()) {
      if (id >= n) fail(`ids are not dense: id ${id} with only ${n} tokens`);
    }
    this.vocabSize = n;
    this.#pieces = Array.from({ length: n }, (_, id) => byId.get(id)!);
    this.#special = new Uint8Array(n);
    for (const id of special) this.#special[id] = 1;
    this.#byteOf = new Int16Array(n).fill(-1);
    for (const [piece, id] of this.#vocab) {
      const b = /^<0x([0-9A-F]{2})>$/.exec(piece);
      if (b) {
        this.#byteIds[parseInt(b[1], 16)] = id;
        this.#byteOf[id] = parseInt(b[1], 16);
      }
    }
    // Merges: "a b" strings (old format) or ["a", "b"] pairs; rank = position.
    const merges = m.merges ?? [];
    if (!Array.isArray(merges)) fail("model.merges is not an array");
    const mergedId: number[] = [];
    (merges as unknown[]).forEach((mg, rank) => {
      let pair: unknown[] | undefined;
      if (typeof mg === "string") {
        const sp = mg.indexOf(" ");
        if (sp > 0 && mg.indexOf(" ", sp + 1) < 0) pair = [mg.slice(0, sp), mg.slice(sp + 1)];
      } else if (Array.isArray(mg) && mg.length === 2) pair = mg;
      if (!pair || typeof pair[0] !== "string" || typeof pair[1] !== "string") {
        fail(`merge ${rank} is ${JSON.stringify(mg)}, expected "a b" or ["a", "b"]`);
      }
      const [a, b] = pair as string[];
      const l = this.#vocab.get(a), r = this.#vocab.get(b), id = this.#vocab.get(a + b);
      if (l === undefined || r === undefined || id === undefined) {
        const missing = l === undefined ? a : r === undefined ? b : a + b;
        fail(
          `merge ${rank} (${JSON.stringify(a)}, ${
            JSON.stringify(b)
          }): "${missing}" is not in the vocab`,
        );
      }
      const key = l! * n + r!;
      if (!this.#merges.has(key)) this.#merges.set(key, rank);
      mergedId.push(id!);
    });
    this.#mergedId = Int32Array.from(mergedId);
    const unk = m.unk_token;
    if (unk !== undefined && unk !== null && typeof unk !== "string") {
      fail(`model.unk_token is ${JSON.stringify(unk)}`);
    }
    this.unkId = typeof unk === "string" ? (this.#vocab.get(unk) ?? -1) : -1;
    if (typeof unk === "string" && this.unkId < 0) fail(`unk_token "${unk}" is not in the vocab`);
    this.#byteFallback = m.byte_fallback === true;
    this.#fuseUnk = m.fuse_unk === true;
    this.#ignoreMerges = m.ignore_merges === true;
    this.#normalizers = parseNormalizer(root.normalizer, fail);
    this.#metaspace = parsePreTokenizer(root.pre_tokenizer, fail);
    this.#space = this.#metaspace?.replacement ?? "\u2581";
    this.#stripLeadingSpace = this.#metaspace?.prepend ??
      JSON.stringify(root.normalizer ?? null).includes(`"type":"Prepend"`);
    const idOf = (piece: string) => {
      for (let id = 0; id < n; id++) if (this.#pieces[id] === piece) return id;
      return -1;
    };
    this.bosId = templateBos(root.post_processor) ?? idOf("<s>");
    this.eosId = idOf("</s>");
    if (this.bosId >= n) fail(`post_processor BOS id ${this.bosId} is not a token`);
  }

  /**
   * Ids of `text` (no BOS), as tokenizers' `encode(text, add_special_tokens=False)`.
   *
   * @param text raw input
   * @returns token ids `[nTokens]`
   * @throws {TokenizerError} for a character with no token, no byte token and no unk
   */
  encode(text: string): Int32Array {
    let s = text.toWellFormed();
    for (const f of this.#normalizers) s = f(s);
    const ms = this.#metaspace;
    if (ms) {
      s = s.replaceAll(" ", ms.replacement);
      if (ms.prepend && s !== "" && !s.startsWith(ms.replacement)) s = ms.replacement + s;
    }
    if (s === "") return new Int32Array(0);
    if (!ms?.split) return this.#bpe(s);
    const out: number[] = [];
    const r = ms.replacement;
    let start = 0;
    for (let i = s.indexOf(r, 1); start < s.length; i = s.indexOf(r, i + r.length)) {
      const end = i < 0 ? s.length : i;
      if (end > start) {
        const word = s.slice(start, end);
        let ids = this.#cache.get(word);
        if (!ids) {
          ids = this.#bpe(word);
          if (this.#cache.size >= 100_000) this.#cache.clear();
          this.#cache.set(word, ids);
        }
        for (let k = 0; k < ids.length; k++) out.push(ids[k]);
      }
      start = end;
      if (i < 0) break;
    }
    return Int32Array.from(out);
  }

  /**
   * BOS once, then {@linkcode encode}.
   *
   * @param text raw input
   * @returns `[bosId, ...encode(text)]`
   * @throws {TokenizerError} when there is no BOS token
   */
  encodeWithBos(text: string): Int32Array {
    if (this.bosId < 0) throw new TokenizerError(`Tokenizer ${this.source} has no BOS token`);
    return withBos(this.bosId, this.encode(text));
  }

  /**
   * Text of `ids`: special tokens vanish, runs of `<0xNN>` tokens are decoded
   * as UTF-8 (U+FFFD per invalid byte), "▁" becomes a space, and the
   * prepended space of the first piece is dropped.
   *
   * @param ids token ids
   * @returns the text
   * @throws {RangeError} for an id outside `0 .. vocabSize-1`
   */
  decode(ids: ArrayLike<number>): string {
    const bytes: number[] = [];
    let first = true;
    for (let k = 0; k < ids.length; k++) {
      const id = checkTokenId(ids[k], this.vocabSize, this.source);
      if (this.#special[id]) continue;
      const b = this.#byteOf[id];
      if (b >= 0) {
        bytes.push(b);
        first = false;
        continue;
      }
      let piece = this.#pieces[id].replaceAll(this.#space, " ");
      if (first && this.#stripLeadingSpace && piece.startsWith(" ")) piece = piece.slice(1);
      first = false;
      for (const x of UTF8.encode(piece)) bytes.push(x);
    }
    return decodeUtf8Lenient(bytes);
  }

  /**
   * Text of one token printed after `prev`, with llama2.c's rules (see
   * SentencePieceTokenizer.decodeToken).
   *
   * @param prev previous token id
   * @param id token to print
   * @returns the printable text
   */
  decodeToken(prev: number, id: number): string {
    checkTokenId(id, this.vocabSize, this.source);
    if (this.#special[id]) return "";
    const b = this.#byteOf[id];
    if (b >= 0) return printableByte(b);
    return printablePiece(this.#pieces[id].replaceAll(this.#space, " "), prev, this.bosId);
  }

  /** The token text of `id` as stored ("▁" included). */
  idToPiece(id: number): string {
    return this.#pieces[checkTokenId(id, this.vocabSize, this.source)];
  }

  /** BPE of one word (tokenizers' `Word::merge_all`), ids out. */
  #bpe(word: string): Int32Array {
    if (this.#ignoreMerges) {
      const id = this.#vocab.get(word);
      if (id !== undefined) return Int32Array.of(id);
    }
    const sym: number[] = [];
    for (const ch of word) {
      const id = this.#vocab.get(ch);
      if (id !== undefined) {
        sym.push(id);
        continue;
      }
      if (this.#byteFallback) {
        const bs = UTF8.encode(ch);
        if (bs.every((x) => this.#byteIds[x] >= 0)) {
          for (const x of bs) sym.push(this.#byteIds[x]);
          continue;
        }
      }
      if (this.unkId < 0) {
        throw new TokenizerError(
          `Cannot encode with ${this.source}: ${JSON.stringify(ch)} is not in the vocabulary ` +
            `and there is no unk_token`,
        );
      }
      if (this.#fuseUnk && sym.length > 0 && sym[sym.length - 1] === this.unkId) continue;
      sym.push(this.unkId);
    }
    return Int32Array.from(mergeByRank(sym, this.#merges, this.#mergedId, this.vocabSize));
  }
}

/**
 * Merges adjacent symbols by merge rank: repeatedly the pair with the lowest
 * rank, leftmost on ties, until no adjacent pair is a merge. A min-heap of
 * candidate pairs with lazy deletion keeps it O(n log n).
 *
 * @param sym `[n]` initial symbol ids (not modified)
 * @param merges left · vocabSize + right → rank
 * @param mergedId `[nMerges]` the id each rank produces
 * @param vocabSize the key multiplier
 * @returns the final ids
 */
export function mergeByRank(
  sym: readonly number[],
  merges: Map<number, number>,
  mergedId: Int32Array,
  vocabSize: number,
): number[] {
  const n = sym.length;
  if (n < 2) return sym.slice();
  const id = Int32Array.from(sym); // [n] current id of each live symbol
  const prev = new Int32Array(n), next = new Int32Array(n); // [n] -1 at the ends
  for (let i = 0; i < n; i++) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  const alive = new Uint8Array(n).fill(1);
  const cap = 3 * n; // n-1 initial pairs + at most 2 per merge
  const eRank = new Int32Array(cap), eLeft = new Int32Array(cap), eRight = new Int32Array(cap);
  const heap = new Int32Array(cap);
  let nEntries = 0, size = 0;
  const before = (a: number, b: number) =>
    eRank[a] < eRank[b] || (eRank[a] === eRank[b] && eLeft[a] < eLeft[b]);
  const push = (l: number, r: number) => {
    if (l < 0 || r < 0) return;
    const rank = merges.get(id[l] * vocabSize + id[r]);
    if (rank === undefined) return;
    const e = nEntries++;
    eRank[e] = rank, eLeft[e] = l, eRight[e] = r;
    let i = size++;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(e, heap[p])) break;
      heap[i] = heap[p];
      i = p;
    }
    heap[i] = e;
  };
  for (let i = 1; i < n; i++) push(i - 1, i);
  while (size > 0) {
    const top = heap[0];
    const last = heap[--size];
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= size) break;
      if (c + 1 < size && before(heap[c + 1], heap[c])) c++;
      if (!before(heap[c], last)) break;
      heap[i] = heap[c];
      i = c;
    }
    heap[i] = last;
    const l = eLeft[top], r = eRight[top];
    // Stale: a side merged away, or the pair at l is no longer this merge.
    if (!alive[l] || !alive[r] || next[l] !== r) continue;
    if (merges.get(id[l] * vocabSize + id[r]) !== eRank[top]) continue;
    id[l] = mergedId[eRank[top]];
    alive[r] = 0;
    next[l] = next[r];
    if (next[r] >= 0) prev[next[r]] = l;
    push(prev[l], l);
    push(l, next[l]);
  }
  const out: number[] = [];
  for (let i = 0; i >= 0; i = next[i]) out.push(id[i]);
  return out;
}

function parseNormalizer(spec: unknown, fail: (msg: string) => never): Normalize[] {
  if (spec === undefined || spec === null) return [];
  if (!isObject(spec)) fail(`normalizer is ${JSON.stringify(spec)}`);
  const s = spec as Record<string, unknown>;
  switch (s.type) {
    case "Sequence": {
      if (!Array.isArray(s.normalizers)) fail("normalizer Sequence has no normalizers array");
      return (s.normalizers as unknown[]).flatMap((x) => parseNormalizer(x, fail));
    }
    case "Prepend": {
      const p = s.prepend;
      if (typeof p !== "string") fail("Prepend normalizer has no prepend string");
      return [(t) => (t === "" ? t : p + t)];
    }
    case "Replace": {
      const { pattern, content } = s;
      if (typeof content !== "string") fail("Replace normalizer has no content string");
      return [replacer(pattern, content as string, fail)];
    }
    case "Strip": {
      const left = s.left !== false, right = s.right !== false;
      return [(t) => {
        if (left) t = t.replace(/^\p{White_Space}+/u, "");
        if (right) t = t.replace(/\p{White_Space}+$/u, "");
        return t;
      }];
    }
    case "NFC":
    case "NFD":
    case "NFKC":
    case "NFKD": {
      const form = s.type;
      return [(t) => t.normalize(form)];
    }
    default:
      return fail(`normalizer type ${JSON.stringify(s.type)} is not supported`);
  }
}

/** A `Replace` normalizer/pattern: `{"String": s}` or `{"Regex": r}`. */
function replacer(pattern: unknown, content: string, fail: (msg: string) => never): Normalize {
  if (!isObject(pattern)) fail(`Replace pattern is ${JSON.stringify(pattern)}`);
  const p = pattern as Record<string, unknown>;
  if (typeof p.String === "string") {
    const lit = p.String;
    if (lit === "") fail("Replace pattern is the empty string");
    return (t) => t.replaceAll(lit, () => content);
  }
  if (typeof p.Regex === "string") {
    let re: RegExp;
    try {
      re = new RegExp(p.Regex, "gmu");
    } catch (e) {
      return fail(`Replace regex ${JSON.stringify(p.Regex)} is invalid (${(e as Error).message})`);
    }
    if (re.test("")) fail(`Replace regex ${JSON.stringify(p.Regex)} matches the empty string`);
    return (t) => t.replace(re, () => content);
  }
  return fail(`Replace pattern ${JSON.stringify(pattern)} is neither {"String"} nor {"Regex"}`);
}

function parsePreTokenizer(spec: unknown, fail: (msg: string) => never): Metaspace | undefined {
  if (spec === undefined || spec === null) return undefined;
  if (!isObject(spec)) fail(`pre_tokenizer is ${JSON.stringify(spec)}`);
  const s = spec as Record<string, unknown>;
  if (s.type === "Sequence" && Array.isArray(s.pretokenizers) && s.pretokenizers.length === 1) {
    return parsePreTokenizer(s.pretokenizers[0], fail);
  }
  if (s.type !== "Metaspace") {
    fail(`pre_tokenizer type ${JSON.stringify(s.type)} is not supported (only Metaspace)`);
  }
  const replacement = s.replacement ?? "\u2581";
  if (typeof replacement !== "string" || [...replacement].length !== 1) {
    fail(`Metaspace replacement ${JSON.stringify(replacement)} is not one character`);
  }
  const scheme = s.prepend_scheme ?? (s.add_prefix_space === false ? "never" : "always");
  if (scheme !== "always" && scheme !== "first" && scheme !== "never") {
    fail(`Metaspace prepend_scheme ${JSON.stringify(scheme)} is unknown`);
  }
  return {
    replacement: replacement as string,
    prepend: scheme !== "never",
    split: s.split !== false,
  };
}

/** The id of the special token before "$A" in a TemplateProcessing post-processor. */
function templateBos(pp: unknown): number | undefined {
  if (!isObject(pp)) return undefined;
  const p = pp as Record<string, unknown>;
  if (p.type !== "TemplateProcessing" || !Array.isArray(p.single) || !isObject(p.special_tokens)) {
    return undefined;
  }
  const first = p.single[0] as Record<string, Record<string, unknown>> | undefined;
  const name = first && isObject(first) && isObject(first.SpecialToken)
    ? first.SpecialToken.id
    : undefined;
  if (typeof name !== "string") return undefined;
  const entry = (p.special_tokens as Record<string, unknown>)[name];
  if (!isObject(entry)) return undefined;
  const ids = (entry as Record<string, unknown>).ids;
  return Array.isArray(ids) && ids.length === 1 && Number.isSafeInteger(ids[0]) && ids[0] >= 0
    ? ids[0]
    : undefined;
}

/**
 * Parses the text of a `tokenizer.json`.
 *
 * @param text the file content
 * @param path its name, for messages @default "<memory>"
 * @returns the tokenizer
 * @throws {TokenizerError} for invalid JSON or an unsupported / inconsistent file
 */
export function parseTokenizerJson(text: string, path = "<memory>"): TokenizerJson {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new TokenizerError(
      `Cannot parse tokenizer.json ${path}: not valid JSON (${(e as Error).message})`,
    );
  }
  return new TokenizerJson(json, path);
}

/**
 * Reads a `tokenizer.json`.
 *
 * @param path the file
 * @returns the tokenizer
 * @throws {TokenizerError} naming the file when missing, malformed or unsupported
 */
export async function loadTokenizerJson(path: string): Promise<TokenizerJson> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "file not found" : (e as Error).message;
    throw new TokenizerError(`Cannot read tokenizer ${path}: ${why}`);
  }
  return parseTokenizerJson(text, path);
}

function isObject(v: unknown): boolean {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
