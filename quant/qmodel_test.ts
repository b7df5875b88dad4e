import assert from "node:assert/strict";
import { LINEAR_NAMES, linearShape } from "../model/config.ts";
import { randn, randomWeights, tinyConfig } from "../model/random.ts";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { sharedData } from "../datasets/testing.ts";
import {
  type CsrMatrix,
  dequantize,
  type LutTensor,
  packCodes,
  type QuantizedLinear,
  toF16,
} from "./format.ts";
import { Gptq } from "./gptq.ts";
import {
  dequantizedWeights,
  loadQuantizedModel,
  parseQuantizedModel,
  QMODEL_MAGIC,
  QModelError,
  saveQuantizedModel,
  type SaveQuantizedModelInput,
  serializeQuantizedModel,
  sha256Hex,
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
  const sha256 = await sha256Hex(await Deno.readFile(path));
  assert.equal(sha256, "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696");
  const file = await Deno.makeTempFile({ suffix: ".sqbq" });
  try {
    const n = await saveQuantizedModel(file, {
      config,
      method: "rtn",
      options: { bits: 3, groupSize: 32 }, // one group per row for the 172-wide w2
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
  new DataView(version.buffer).setUint32(4, 2, true);
  assert.throws(parse(version), /version 2 is not supported \(this reader knows 1\)/);
  const headerLength = new DataView(bytes.buffer).getUint32(8, true);
  assert.throws(
    parse(bytes.slice(0, 12 + headerLength - 1)),
    /header claims \d+ bytes, file has \d+/,
  );
  assert.throws(
    parse(bytes.slice(0, bytes.length - 100)),
    /beyond the end of the file \(\d+ bytes; truncated\?\)/,
  );
  assert.throws(parse(bytes.slice(0, bytes.length - 100)), QModelError);
  // a header pointing outside the file
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + headerLength)));
  header.linears["layers.0.wk"].dense.arrays.codes.offset = 1e9;
  const json = new TextEncoder().encode(JSON.stringify(header));
  const oldData = Math.ceil((12 + headerLength) / 8) * 8,
    newData = Math.ceil((12 + json.length) / 8) * 8;
  const edited = new Uint8Array(newData + bytes.length - oldData);
  edited.set(bytes.subarray(0, 12));
  new DataView(edited.buffer).setUint32(8, json.length, true);
  edited.set(json, 12);
  edited.set(bytes.subarray(oldData), newData);
  assert.ok(parseQuantizedModel(bytes), "the unedited file parses");
  assert.throws(
    parse(edited),
    /layers\.0\.wk\.codes lies at bytes \d+\.\.\d+, beyond the end of the file/,
  );
  const garbage = bytes.slice(0, 12 + headerLength);
  garbage[12] = 0x7b + 1;
  assert.throws(parse(garbage), /header is not valid JSON/);
  await assert.rejects(
    loadQuantizedModel("/nonexistent/m.sqbq"),
    /Cannot read quantized model \/nonexistent\/m\.sqbq: file not found/,
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
