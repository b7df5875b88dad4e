import assert from "node:assert/strict";
import { LINEAR_NAMES, linearShape } from "../model/config.ts";
import { randn, randomWeights, tinyConfig } from "../model/random.ts";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { sharedData } from "../datasets/testing.ts";
import { tempDir } from "../datasets/_testing.ts";
import {
  type CsrMatrix,
  type DenseTensor,
  dequantize,
  layoutOf,
  type LutTensor,
  packCodes,
  type QuantizedLinear,
  toF16,
} from "./format.ts";
import { Gptq } from "./gptq.ts";
import { createHash } from "node:crypto";
import {
  dequantizedLayer,
  dequantizedWeights,
  loadQuantizedModel,
  openQuantizedModel,
  parseQuantizedModel,
  QMODEL_MAGIC,
  QMODEL_VERSION,
  QModelError,
  QModelWriter,
  saveQuantizedModel,
  type SaveQuantizedModelInput,
  serializeQuantizedModel,
} from "./qmodel.ts";
import { rtn } from "./rtn.ts";

const CONFIG = tinyConfig({ hiddenDim: 40, vocabSize: 13, maxSeqLen: 32, sharedClassifier: false });

/** A small model whose linears use every part of the format: uniform (with and without gIdx), lut, sparse. */
function tinyModel(): SaveQuantizedModelInput {
  const weights = randomWeights(CONFIG, 3);
  const linears = new Map<string, QuantizedLinear>();
  for (let l = 0; l < CONFIG.nLayers; l++) {
    for (const name of LINEAR_NAMES) {
      const [rows, cols] = linearShape(CONFIG, name);
      const W = weights.layers[l][name];
      let q: QuantizedLinear;
      if (name === "wq") {
        const g = new Gptq(rows, cols);
        g.addBatch(randn(20 * cols, l + 1), 20);
        q = { dense: g.fasterquant(W, { bits: 3, groupSize: 4, actOrder: true }).q };
        assert.ok((q.dense as { gIdx?: Int32Array }).gIdx, "act-order gives gIdx");
      } else if (name === "w1") {
        const codes = Uint8Array.from({ length: rows * cols }, (_, i) => (i * 7) % 16);
        const lut: LutTensor = {
          kind: "lut",
          bits: 4,
          rows,
          cols,
          codes: packCodes(codes, rows, cols, 4),
          lut: toF16(randn(rows * 16, 9, 0.1)),
        };
        const nnzRow = (r: number) => r % 3;
        const rowPtr = new Int32Array(rows + 1);
        for (let r = 0; r < rows; r++) rowPtr[r + 1] = rowPtr[r] + nnzRow(r);
        const nnz = rowPtr[rows];
        const sparse: CsrMatrix = {
          rows,
          cols,
          rowPtr,
          colIdx: Int32Array.from({ length: nnz }, (_, k) => (k * 5) % cols),
          values: l === 0 ? toF16(randn(nnz, 4)) : randn(nnz, 5),
          dtype: l === 0 ? "f16" : "f32",
        };
        q = { dense: lut, sparse };
      } else {
        q = {
          dense: rtn(W, rows, cols, {
            bits: 2 + (l + name.length) % 7,
            groupSize: name === "w2" ? 8 : undefined,
          }),
        };
      }
      linears.set(`layers.${l}.${name}`, q);
    }
  }
  return {
    config: CONFIG,
    method: "mixed",
    options: { note: "test" },
    provenance: { seed: 3 },
    base: { path: "random", sha256: "0".repeat(64) },
    linears,
    weights,
  };
}

Deno.test("serializeQuantizedModel() round-trips uniform (with gIdx), lut and sparse parts", () => {
  const m = tinyModel();
  const bytes = serializeQuantizedModel(m);
  assert.equal(new TextDecoder().decode(bytes.subarray(0, 4)), QMODEL_MAGIC);
  const back = parseQuantizedModel(bytes);
  assert.deepEqual(back.config, m.config);
  assert.equal(back.method, "mixed");
  assert.deepEqual(back.options, { note: "test" });
  assert.deepEqual(back.provenance, { seed: 3 });
  assert.deepEqual(back.base, m.base);
  assert.deepEqual([...back.linears.keys()], [...m.linears.keys()]);
  for (const [key, q] of m.linears) {
    const b = back.linears.get(key)!;
    assert.deepEqual({ ...b.dense }, { ...q.dense }, key);
    assert.deepEqual(b.sparse, q.sparse, key);
    assert.deepEqual(dequantize(b), dequantize(q), key);
  }
  const w = m.weights as ReturnType<typeof randomWeights>;
  assert.deepEqual(back.rest.tokenEmbedding, w.tokenEmbedding);
  assert.deepEqual(back.rest.classifier, w.classifier);
  assert.deepEqual(back.rest.finalNorm, w.finalNorm);
  assert.deepEqual(back.rest.ffnNorm[1], w.layers[1].ffnNorm);
  const fake = dequantizedWeights(back);
  assert.deepEqual(fake.layers[1].w1, dequantize(m.linears.get("layers.1.w1")!));
  assert.deepEqual(fake.layers[0].attnNorm, w.layers[0].attnNorm);
  assert.equal(fake.classifier, back.rest.classifier);
});

Deno.test("saveQuantizedModel()/loadQuantizedModel() round-trip stories260K quantized with RTN through a file", async () => {
  const path = sharedData("stories260K/stories260K.bin");
  const weights = await loadCheckpoint(path);
  const { config } = weights;
  const linears = new Map<string, QuantizedLinear>();
  weights.layers.forEach((lw, l) => {
    for (const name of LINEAR_NAMES) {
      const [rows, cols] = linearShape(config, name);
      linears.set(`layers.${l}.${name}`, {
        dense: rtn(lw[name], rows, cols, { bits: 3, groupSize: cols % 32 === 0 ? 32 : undefined }),
      });
    }
  });
  const sha256 = createHash("sha256").update(await Deno.readFile(path)).digest("hex");
  assert.equal(sha256, "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696");
  const file = await Deno.makeTempFile({ suffix: ".sqbq" });
  try {
    const n = await saveQuantizedModel(file, {
      config,
      method: "rtn",
      options: { bits: 3 }, // groups of 32, one group per row for the 172-wide w2
      provenance: {},
      base: { path, sha256 },
      linears,
      weights,
    });
    assert.equal((await Deno.stat(file)).size, n);
    const back = await loadQuantizedModel(file);
    assert.equal(back.rest.classifier, undefined, "tied classifier not stored twice");
    const fake = dequantizedWeights(back);
    assert.equal(fake.classifier, fake.tokenEmbedding);
    assert.deepEqual(fake.tokenEmbedding, weights.tokenEmbedding);
    for (let l = 0; l < config.nLayers; l++) {
      for (const name of LINEAR_NAMES) {
        assert.deepEqual(fake.layers[l][name], dequantize(linears.get(`layers.${l}.${name}`)!));
      }
    }
  } finally {
    await Deno.remove(file);
  }
});

/** A file taken apart along the documented layout: header JSON text, index, data section. */
type ArrayRefLike = { offset: number };

interface Parts {
  header: string;
  // deno-lint-ignore no-explicit-any
  index: any;
  data: Uint8Array;
}

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest();

/** Splits a version-2 file as the module doc lays it out (no checks: that is the reader's job). */
function split(bytes: Uint8Array): Parts {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = view.getUint32(8, true);
  const dataStart = Math.ceil((44 + headerLength) / 8) * 8;
  const end = bytes.length - 48;
  const indexOffset = Number(view.getBigUint64(end + 32, true));
  const dec = new TextDecoder();
  return {
    header: dec.decode(bytes.subarray(44, 44 + headerLength)),
    index: JSON.parse(dec.decode(bytes.subarray(indexOffset, end))),
    data: bytes.slice(dataStart, indexOffset),
  };
}

/**
 * Writes parts back with valid checksums everywhere (every array's sha256
 * recomputed from the data): a file as a buggy writer could make it, to reach
 * the checks that lie behind the checksums.
 */
function seal(p: Parts): Uint8Array {
  const enc = new TextEncoder();
  const rehash = (o: unknown) => {
    if (!o || typeof o !== "object") return;
    const r = o as { sha256?: string; offset: number; byteLength: number };
    if (typeof r.sha256 === "string") {
      r.sha256 = sha256(p.data.subarray(r.offset, r.offset + r.byteLength)).toString("hex");
    } else Object.values(o).forEach(rehash);
  };
  rehash(p.index);
  const header = enc.encode(p.header), index = enc.encode(JSON.stringify(p.index));
  const dataStart = Math.ceil((44 + header.length) / 8) * 8;
  const out = new Uint8Array(dataStart + p.data.length + index.length + 48);
  const view = new DataView(out.buffer);
  out.set(enc.encode("SQBQ"), 0);
  view.setUint32(4, QMODEL_VERSION, true);
  view.setUint32(8, header.length, true);
  out.set(sha256(header), 12);
  out.set(header, 44);
  out.set(p.data, dataStart);
  const x = dataStart + p.data.length;
  out.set(index, x);
  out.set(sha256(index), x + index.length);
  view.setBigUint64(x + index.length + 32, BigInt(x), true);
  view.setUint32(x + index.length + 40, index.length, true);
  out.set(enc.encode("SQBQ"), x + index.length + 44);
  return out;
}

/** `bytes` after `edit` changed its parts, resealed. */
function resealed(bytes: Uint8Array, edit: (p: Parts) => void): Uint8Array {
  const p = split(bytes);
  edit(p);
  return seal(p);
}

/** Position of an array's first byte in the file. */
function arrayStart(
  bytes: Uint8Array,
  array: (index: Parts["index"]) => { offset: number },
): number {
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset).getUint32(8, true);
  return Math.ceil((44 + headerLength) / 8) * 8 + array(split(bytes).index).offset;
}

Deno.test("the file layout is the documented one: split and sealed again, a file is the same bytes", () => {
  const bytes = serializeQuantizedModel(tinyModel());
  assert.deepEqual(seal(split(bytes)), bytes);
  assert.equal(new TextDecoder().decode(bytes.subarray(bytes.length - 4)), QMODEL_MAGIC);
});

Deno.test("loadQuantizedModel() rejects truncated files, wrong magic and version, and arrays beyond the file", async () => {
  const bytes = serializeQuantizedModel(tinyModel());
  const parse = (b: Uint8Array) => () => parseQuantizedModel(b, "m.sqbq");
  assert.throws(
    parse(bytes.slice(0, 7)),
    /Cannot read quantized model m\.sqbq: file has 7 bytes, too short/,
  );
  const magic = bytes.slice();
  magic.set([0x47, 0x47, 0x55, 0x46]); // "GGUF"
  assert.throws(parse(magic), /magic is "GGUF", expected "SQBQ"/);
  const version = bytes.slice();
  new DataView(version.buffer).setUint32(4, 3, true);
  assert.throws(parse(version), /version 3 is not supported \(this reader knows 2\)/);
  const headerLength = new DataView(bytes.buffer).getUint32(8, true);
  assert.throws(
    parse(bytes.slice(0, 12 + headerLength - 1)),
    /header claims \d+ bytes, file has \d+/,
  );
  assert.throws(
    parse(bytes.slice(0, bytes.length - 100)),
    /file has \d+ bytes and does not end with the end marker "SQBQ": it was truncated/,
  );
  assert.throws(parse(bytes.slice(0, bytes.length - 100)), QModelError);
  // an index pointing outside the data section (checksums valid)
  const edited = resealed(bytes, (p) => {
    p.index.linears["layers.0.wk"].dense.arrays.codes.offset = 1e9;
  });
  assert.ok(parseQuantizedModel(bytes), "the unedited file parses");
  assert.throws(
    parse(edited),
    /layers\.0\.wk\.codes lies at bytes \d+\.\.\d+, beyond the end of the file's data section/,
  );
  const garbage = resealed(bytes, (p) => {
    p.header = "|" + p.header.slice(1);
  });
  assert.throws(parse(garbage), /header is not valid JSON/);
  await assert.rejects(
    loadQuantizedModel("/nonexistent/m.sqbq"),
    /Cannot read quantized model \/nonexistent\/m\.sqbq: file not found/,
  );
});

Deno.test("parseQuantizedModel() rejects a file cut anywhere, naming truncation", () => {
  const bytes = serializeQuantizedModel(tinyModel());
  const dataStart = arrayStart(bytes, () => ({ offset: 0 }));
  for (const n of [12, 44, 50, dataStart, dataStart + 9, bytes.length - 200, bytes.length - 1]) {
    assert.throws(
      () => parseQuantizedModel(bytes.slice(0, n), "cut.sqbq"),
      (e: Error) =>
        e instanceof QModelError && /^Cannot read quantized model cut\.sqbq: /.test(e.message) &&
        /truncated/.test(e.message),
      `cut at ${n} of ${bytes.length}`,
    );
  }
  const longer = new Uint8Array(bytes.length + 8);
  longer.set(bytes);
  assert.throws(() => parseQuantizedModel(longer), /does not end with the end marker/);
});

Deno.test("parseQuantizedModel() refuses a version-1 file: written without checksums, re-quantize", () => {
  const v1 = serializeQuantizedModel(tinyModel());
  new DataView(v1.buffer).setUint32(4, 1, true);
  assert.throws(
    () => parseQuantizedModel(v1, "old.sqbq"),
    /old\.sqbq: it was written by an older squeezebench \(format version 1, without checksums\).*re-quantize/,
  );
});

/** stories260K, every linear RTN 3-bit per row, as a file's bytes. */
async function stories260KRtn3(): Promise<Uint8Array> {
  const path = sharedData("stories260K/stories260K.bin");
  const weights = await loadCheckpoint(path);
  const linears = new Map<string, QuantizedLinear>();
  weights.layers.forEach((lw, l) => {
    for (const name of LINEAR_NAMES) {
      const [rows, cols] = linearShape(weights.config, name);
      linears.set(`layers.${l}.${name}`, { dense: rtn(lw[name], rows, cols, { bits: 3 }) });
    }
  });
  return serializeQuantizedModel({
    config: weights.config,
    method: "rtn",
    options: { method: "rtn", bits: 3, groupSize: null, sym: false },
    provenance: {},
    base: { path, sha256: "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696" },
    linears,
    weights,
  });
}

Deno.test("loadQuantizedModel() names the damaged array when a byte of a scale or a code of layers.2.w1 flips", async () => {
  const bytes = await stories260KRtn3();
  const dir = await Deno.makeTempDir();
  try {
    const w1 = (index: Parts["index"]) => index.linears["layers.2.w1"].dense.arrays;
    for (const array of ["scales", "codes"]) {
      const damaged = bytes.slice();
      damaged[arrayStart(bytes, (i) => w1(i)[array]) + 5] ^= 0x10;
      const file = `${dir}/${array}.sqbq`;
      await Deno.writeFile(file, damaged);
      await assert.rejects(
        loadQuantizedModel(file),
        new RegExp(
          `Cannot read quantized model ${file}: data checksum mismatch in layers\\.2\\.w1\\.${array} ` +
            `\\(sha256 stored [0-9a-f]{12}…, computed [0-9a-f]{12}…\\): the file was damaged`,
        ),
      );
    }
    const file = `${dir}/intact.sqbq`;
    await Deno.writeFile(file, bytes);
    assert.equal((await loadQuantizedModel(file)).linears.size, 5 * 7, "the intact file loads");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseQuantizedModel() rejects a header whose bits, normEps or ropeTheta were edited, and a damaged index", async () => {
  const bytes = await stories260KRtn3();
  const text = new TextDecoder().decode(bytes);
  // same-length edits: every offset stays valid, only the header checksum can tell
  const edits: [string, string][] = [
    ['"bits":3', '"bits":4'],
    ['"normEps":0.00001', '"normEps":0.00002'],
    ['"ropeTheta":10000', '"ropeTheta":20000'],
  ];
  for (const [from, to] of edits) {
    const at = text.indexOf(from);
    assert.ok(at > 0 && at < 2000, `${from} is in the header`);
    const edited = bytes.slice();
    edited.set(new TextEncoder().encode(to), at);
    assert.throws(
      () => parseQuantizedModel(edited, "e.sqbq"),
      /e\.sqbq: header checksum mismatch \(sha256 stored [0-9a-f]{12}…, computed [0-9a-f]{12}…\)/,
      from,
    );
  }
  const at = text.lastIndexOf('"bits":3'); // in the index
  const edited = bytes.slice();
  edited.set(new TextEncoder().encode('"bits":4'), at);
  assert.throws(() => parseQuantizedModel(edited, "e.sqbq"), /e\.sqbq: index checksum mismatch/);
  const trailer = bytes.slice();
  trailer[trailer.length - 10] ^= 1; // the index offset
  assert.throws(() => parseQuantizedModel(trailer), /the trailer is damaged/);
});

Deno.test("parseQuantizedModel() checks every header field against the data it describes", () => {
  const m = tinyModel();
  const uniform = { ...m, method: "rtn", options: { bits: 3, groupSize: 4, sym: false } };
  uniform.linears = new Map([...m.linears].filter(([k]) => k.endsWith(".wq")));
  const bytes = serializeQuantizedModel(uniform);
  assert.equal(parseQuantizedModel(bytes).linears.size, 2);
  const cases: [(p: Parts) => void, RegExp][] = [
    [
      (p) => p.header = p.header.replace('"bits":3', '"bits":4'),
      /options\.bits is 4, but layers\.0\.wq holds 3-bit codes/,
    ],
    [
      (p) => p.header = p.header.replace('"groupSize":4', '"groupSize":null'),
      /options\.groupSize is null \(one group per row\), but layers\.0\.wq has groups of 4 of its 16 columns/,
    ],
    [
      (p) => p.header = p.header.replace('"sym":false', '"sym":true'),
      /options\.sym is true, but layers\.0\.wq has sym false/,
    ],
    [
      (p) => p.header = p.header.replace('"method":"rtn"', '"method":"squeezellm"'),
      /method "squeezellm" stores lut tensors, but layers\.0\.wq is uniform/,
    ],
    [
      (p) => p.header = p.header.replace('"normEps":0.00001', '"normEps":-1'),
      /config\.normEps is -1, expected a number in \(0, 1\)/,
    ],
    [
      (p) => p.header = p.header.replace('"ropeTheta":10000', '"ropeTheta":"x"'),
      /config\.ropeTheta is "x"/,
    ],
    [
      (p) => p.header = p.header.replace('"nHeads":4', '"nHeads":3'),
      /dim must be a multiple of nHeads/,
    ],
    [
      (p) => p.index.linears["layers.1.wq"].dense.bits = 5,
      /layers\.1\.wq\.codes has 128 bytes, expected 192 \(48 × u32 = 16 rows of 16 5-bit codes\)/,
    ],
    [
      (p) => p.index.linears["layers.1.wq"].dense.arrays.scales.shape = [4, 16],
      /layers\.1\.wq\.scales has 128 bytes, expected 512 \(256 × f16\)/,
    ],
    [
      (p) => p.index.linears["layers.1.wq"].dense.arrays.codes.shape = [32, 1],
      /layers\.1\.wq\.codes has shape \[32,1\], expected \[16,2\]/,
    ],
    [
      (p) => p.index.tensors.finalNorm.offset += 4,
      /finalNorm has offset \d+, expected a multiple of 8/,
    ],
    [
      (p) => p.index.linears["layers.0.wq"].dense.groupSize = 8,
      /options\.groupSize is 4, but layers\.0\.wq has groups of 8 of its 16 columns/,
    ],
  ];
  for (const [edit, re] of cases) {
    assert.throws(() => parseQuantizedModel(resealed(bytes, edit), "h.sqbq"), re, String(re));
  }
});

Deno.test("serializeQuantizedModel() and parseQuantizedModel() reject NaN/Infinity in fp16 scales, LUTs, sparse values and fp32 tensors", () => {
  const m = tinyModel();
  const bytes = serializeQuantizedModel(m);
  const NAN16 = 0x7e00, INF16 = 0x7c00;
  // the writer refuses them
  const wq = m.linears.get("layers.0.wq")!.dense as { scales: Uint16Array };
  const scales = wq.scales.slice();
  scales[3] = INF16;
  const bad = new Map(m.linears);
  bad.set("layers.0.wq", {
    dense: { ...m.linears.get("layers.0.wq")!.dense, scales } as DenseTensor,
  });
  assert.throws(
    () => serializeQuantizedModel({ ...m, linears: bad }, "w.sqbq"),
    /Cannot write quantized model w\.sqbq: layers\.0\.wq\.scales has a non-finite value \(Infinity\) at index 3/,
  );
  // the reader refuses a file that holds them with valid checksums
  const cases: [string, (i: Parts["index"]) => ArrayRefLike, number, RegExp][] = [
    [
      "scales",
      (i) => i.linears["layers.1.wk"].dense.arrays.scales,
      NAN16,
      /layers\.1\.wk\.scales has a non-finite value \(NaN\) at index 0/,
    ],
    [
      "zeros",
      (i) => i.linears["layers.1.wk"].dense.arrays.zeros,
      INF16,
      /layers\.1\.wk\.zeros has a non-finite value \(Infinity\)/,
    ],
    [
      "lut",
      (i) => i.linears["layers.0.w1"].dense.arrays.lut,
      NAN16,
      /layers\.0\.w1\.lut has a non-finite value \(NaN\)/,
    ],
    [
      "f16 sparse",
      (i) => i.linears["layers.0.w1"].sparse.arrays.values,
      INF16 | 0x8000,
      /layers\.0\.w1\.values has a non-finite value \(-Infinity\)/,
    ],
  ];
  for (const [what, array, bits, re] of cases) {
    const edited = resealed(bytes, (p) => {
      new DataView(p.data.buffer).setUint16(array(p.index).offset, bits, true);
    });
    assert.throws(() => parseQuantizedModel(edited), re, what);
  }
  const f32 = resealed(bytes, (p) => {
    new DataView(p.data.buffer).setFloat32(
      p.index.linears["layers.1.w1"].sparse.arrays.values.offset + 4,
      NaN,
      true,
    );
    new DataView(p.data.buffer).setFloat32(p.index.tensors["layers.1.ffnNorm"].offset, NaN, true);
  });
  assert.throws(
    () => parseQuantizedModel(f32),
    /layers\.1\.ffnNorm has a non-finite value \(NaN\) at index 0/,
  );
});

Deno.test("saveQuantizedModel() rejects linears that do not fit the config", async () => {
  const m = tinyModel();
  const bad = new Map(m.linears);
  bad.set("layers.2.wq", m.linears.get("layers.0.wq")!);
  assert.throws(
    () => serializeQuantizedModel({ ...m, linears: bad }, "x.sqbq"),
    /linear "layers\.2\.wq" is not "layers\.\{0\.\.1\}/,
  );
  const wrong = new Map([["layers.0.wk", m.linears.get("layers.0.wq")!]]);
  assert.throws(
    () => serializeQuantizedModel({ ...m, linears: wrong }),
    /layers\.0\.wk is 16×16, the config says 8×16/,
  );
  await assert.rejects(
    saveQuantizedModel("/nonexistent/dir/x.sqbq", m),
    /Cannot write quantized model \/nonexistent\/dir\/x\.sqbq/,
  );
  const partial = parseQuantizedModel(serializeQuantizedModel({ ...m, linears: new Map() }));
  assert.throws(() => dequantizedWeights(partial), /quantized model has no linear layers\.0\.wq/);
});

Deno.test("QModelWriter writes block by block, in any order, a file that reads back as the serialized one", async () => {
  const m = tinyModel();
  const w = m.weights as ReturnType<typeof randomWeights>;
  await using tmp = await tempDir("sqb-qmodel-writer-");
  const path = `${tmp.path}/m.sqbq`;
  const writer = QModelWriter.create(path, m);
  for (let l = CONFIG.nLayers - 1; l >= 0; l--) { // last block first: offsets are the index's
    for (const name of LINEAR_NAMES) {
      writer.linear(`layers.${l}.${name}`, m.linears.get(`layers.${l}.${name}`)!);
    }
    writer.tensor(`layers.${l}.ffnNorm`, w.layers[l].ffnNorm);
    writer.tensor(`layers.${l}.attnNorm`, w.layers[l].attnNorm);
  }
  writer.tensor("classifier", w.classifier);
  writer.tensor("finalNorm", w.finalNorm);
  writer.tensor("tokenEmbedding", w.tokenEmbedding);
  const bytes = writer.finish(m.provenance);
  assert.equal(bytes, (await Deno.stat(path)).size);
  const streamed = await loadQuantizedModel(path);
  const whole = parseQuantizedModel(serializeQuantizedModel(m));
  assert.deepEqual(streamed.rest, whole.rest);
  assert.deepEqual(streamed.linears, whole.linears);
  assert.deepEqual(streamed.provenance, whole.provenance);
});

Deno.test("QModelWriter refuses a repeated or unknown tensor or linear, and a file missing a tensor", async () => {
  const m = tinyModel();
  const w = m.weights as ReturnType<typeof randomWeights>;
  await using tmp = await tempDir("sqb-qmodel-writer-");
  const writer = QModelWriter.create(`${tmp.path}/m.sqbq`, m);
  writer.tensor("finalNorm", w.finalNorm);
  assert.throws(() => writer.tensor("finalNorm", w.finalNorm), /finalNorm was already written/);
  assert.throws(
    () => writer.tensor("layers.9.ffnNorm", w.finalNorm),
    /no tensor layers\.9\.ffnNorm/,
  );
  assert.throws(
    () => writer.tensor("tokenEmbedding", w.finalNorm),
    /tokenEmbedding has 16 values, which does not match shape \[13,16\]/,
  );
  const q = m.linears.get("layers.0.wv")!;
  writer.linear("layers.0.wv", q);
  assert.throws(() => writer.linear("layers.0.wv", q), /layers\.0\.wv was already written/);
  assert.throws(
    () => writer.linear("layers.0.wk", m.linears.get("layers.0.w2")!),
    /layers\.0\.wk is/,
  );
  assert.throws(() => writer.finish({}), /tokenEmbedding was not written/);
  assert.throws(() => writer.tensor("classifier", w.classifier), /already finished/);
});

Deno.test("openQuantizedModel() reads block by block what loadQuantizedModel() reads whole, layouts included; a damaged array fails when its block is read", async () => {
  await using tmp = await tempDir("sqb-qmodel-open-");
  const file = `${tmp.path}/m.sqbq`;
  await saveQuantizedModel(file, tinyModel());
  const whole = await loadQuantizedModel(file);
  {
    using m = openQuantizedModel(file);
    assert.deepEqual([m.method, m.options, m.provenance, m.base], [
      whole.method,
      whole.options,
      whole.provenance,
      whole.base,
    ]);
    assert.deepEqual(m.config, whole.config);
    for (let l = 0; l < CONFIG.nLayers; l++) {
      assert.deepEqual(m.layer(l), dequantizedLayer(whole, l));
    }
    assert.deepEqual(m.tokenEmbedding(), whole.rest.tokenEmbedding);
    assert.deepEqual(m.finalNorm(), whole.rest.finalNorm);
    assert.deepEqual(m.classifier(), whole.rest.classifier);
    assert.deepEqual(m.layouts, new Map([...whole.linears].map(([k, q]) => [k, layoutOf(q)])));
    assert.deepEqual(m.linear("layers.1.w1"), whole.linears.get("layers.1.w1"));
    assert.throws(() => m.linear("layers.9.wq"), /has no linear layers\.9\.wq/);
  }
  const bytes = await Deno.readFile(file);
  const damaged = bytes.slice();
  damaged[arrayStart(bytes, (i) => i.linears["layers.1.w2"].dense.arrays.codes) + 3] ^= 0x10;
  await Deno.writeFile(file, damaged);
  using m = openQuantizedModel(file);
  m.layer(0);
  assert.throws(() => m.layer(1), /data checksum mismatch in layers\.1\.w2\.codes/);
  assert.throws(() => openQuantizedModel(`${tmp.path}/none.sqbq`), /file not found/);
});
