import assert from "node:assert/strict";
import { sharedData } from "./testing.ts";
import { loadTokenizer } from "../model/tokenizer.ts";
import { openC4Documents, sampleDocumentWindows, sampleStreamWindows } from "./c4.ts";
import { PyRandom } from "./pyrandom.ts";

/**
 * (document, offset) of GPTQ's 256 C4 evaluation windows (seqlen 512) over
 * documents 0..1099 of c4/c4-validation-2k.json.gz, produced by
 * /usr/bin/python3 with sentencepiece (tok512.model) and GPTQ's loop:
 *   docs = [json.loads(l)['text'] for l in gzip.open(path, 'rt', encoding='utf-8')]
 *   random.seed(0)
 *   for _ in range(256):
 *     while True:
 *       i = random.randint(0, 1100 - 1); t = [1] + sp.encode(docs[i])
 *       if len(t) >= 512: break
 *     j = random.randint(0, len(t) - 512 - 1); pairs.append((i, j)); total += sum(t[j:j+512])
 * total = 47878540; no drawn document had exactly 512 tokens.
 */
// deno-fmt-ignore
const C4_EVAL_PAIRS: [number, number][] = [
  [788, 215], [82, 530], [829, 200], [621, 488], [447, 516], [577, 143], [513, 931], [1090, 2012],
  [151, 28], [676, 483], [206, 362], [906, 2135], [127, 140], [816, 1368], [2, 313], [499, 10],
  [128, 48], [454, 1954], [291, 822], [917, 93], [164, 1310], [1040, 250], [223, 77], [596, 255],
  [681, 138], [911, 375], [788, 162], [594, 376], [387, 382], [67, 627], [183, 66], [306, 236],
  [79, 328], [801, 268], [1008, 1463], [664, 156], [236, 249], [686, 865], [389, 497], [33, 69],
  [451, 380], [349, 21], [872, 2037], [206, 801], [1094, 151], [54, 15], [801, 46], [758, 7],
  [44, 199], [378, 507], [431, 125], [871, 635], [207, 266], [143, 56], [147, 331], [616, 89],
  [125, 1031], [956, 80], [206, 716], [801, 102], [734, 120], [324, 54], [701, 2168], [513, 120],
  [905, 1432], [27, 120], [839, 230], [1041, 159], [731, 49], [513, 157], [937, 80], [687, 93],
  [575, 138], [721, 624], [271, 1270], [848, 82], [3, 152], [684, 327], [490, 228], [917, 387],
  [848, 32], [823, 145], [856, 1356], [95, 1357], [912, 65], [530, 80], [1080, 56], [0, 318],
  [1012, 333], [639, 478], [850, 96], [170, 66], [822, 1389], [855, 323], [6, 54], [4, 100],
  [390, 243], [406, 1238], [573, 705], [373, 205], [974, 1624], [166, 44], [562, 115], [237, 4],
  [273, 1338], [1066, 1332], [710, 3], [316, 570], [38, 21], [83, 210], [531, 2287], [644, 1502],
  [86, 1733], [1012, 659], [939, 222], [425, 1538], [596, 18], [283, 77], [555, 341], [752, 1471],
  [73, 21], [335, 306], [592, 1478], [265, 600], [979, 122], [98, 315], [1071, 746], [619, 51],
  [672, 38], [203, 4], [970, 86], [703, 2036], [237, 7], [873, 38], [618, 42], [318, 2728],
  [769, 89], [134, 21], [405, 191], [125, 788], [200, 1613], [1062, 74], [918, 1000], [444, 866],
  [754, 450], [534, 149], [883, 98], [734, 29], [130, 3366], [56, 538], [413, 7], [815, 262],
  [424, 328], [86, 1941], [442, 299], [214, 6], [214, 19], [303, 577], [1067, 3], [413, 34],
  [19, 2787], [651, 329], [72, 151], [319, 388], [135, 86], [1057, 40], [135, 230], [83, 307],
  [31, 57], [943, 190], [1028, 34], [1060, 1552], [873, 211], [593, 548], [855, 845], [987, 795],
  [41, 0], [619, 64], [681, 16], [536, 844], [620, 835], [786, 12], [127, 41], [587, 1493],
  [684, 113], [73, 246], [855, 144], [1007, 308], [167, 155], [842, 288], [954, 791], [939, 24],
  [207, 482], [310, 5], [66, 67], [215, 2867], [785, 251], [956, 1258], [254, 698], [606, 65],
  [793, 409], [248, 132], [387, 78], [910, 190], [390, 932], [91, 81], [54, 66], [442, 470],
  [1028, 715], [860, 32], [625, 232], [298, 1744], [864, 86], [214, 13], [128, 25], [850, 79],
  [62, 1620], [882, 1405], [1017, 332], [721, 72], [248, 91], [60, 353], [712, 45], [472, 93],
  [144, 610], [293, 851], [6, 52], [252, 3], [600, 5], [50, 619], [476, 18], [929, 1841],
  [705, 528], [57, 852], [741, 171], [969, 37], [606, 167], [165, 210], [771, 75], [1041, 124],
  [484, 188], [596, 762], [859, 1358], [94, 2166], [159, 1438], [270, 430], [613, 563], [291, 605],
  [864, 305], [173, 1016], [910, 323], [756, 326], [656, 451], [600, 7], [186, 1519], [567, 7],
];

/** The same loop with random.seed(3), 32 windows of 256 over documents 1100 + randint(0, 899); total 2988420. */
// deno-fmt-ignore
const C4_CALIB_SEED3_PAIRS: [number, number][] = [
  [1343, 1213], [1657, 1068], [1478, 485], [1740, 4758], [1167, 26], [1957, 960], [1664, 239], [1296, 481],
  [1653, 4502], [1506, 327], [1981, 308], [1337, 325], [1255, 1071], [1499, 15], [1787, 65], [1263, 151],
  [1408, 254], [1943, 551], [1999, 198], [1831, 1748], [1504, 56], [1237, 374], [1199, 18], [1239, 506],
  [1322, 1056], [1788, 1786], [1897, 154], [1531, 129], [1953, 3161], [1687, 359], [1646, 1198], [1337, 172],
];

const tok = await loadTokenizer(sharedData("stories260K/tok512.model"));

const sum = (ws: Int32Array[]) => ws.reduce((s, w) => s + w.reduce((a, b) => a + b, 0), 0);

Deno.test("sampleDocumentWindows() reproduces GPTQ's 256 C4 evaluation windows exactly", async () => {
  using docs = await openC4Documents(sharedData("c4/c4-validation-2k.json.gz"), tok);
  const { windows, picks } = await sampleDocumentWindows(new PyRandom(0), {
    count: 256,
    seqlen: 512,
    poolSize: 1100,
    tokens: docs.tokens,
  });
  assert.deepEqual(picks.map((p) => [p.doc, p.start]), C4_EVAL_PAIRS);
  assert.ok(windows.every((w) => w.length === 512));
  assert.equal(sum(windows), 47878540);
});

Deno.test("sampleDocumentWindows() draws from an offset pool (calibration documents 1100..1999)", async () => {
  using docs = await openC4Documents(sharedData("c4/c4-validation-2k.json.gz"), tok);
  const { windows, picks } = await sampleDocumentWindows(new PyRandom(3), {
    count: 32,
    seqlen: 256,
    poolStart: 1100,
    poolSize: 900,
    tokens: docs.tokens,
  });
  assert.deepEqual(picks.map((p) => [p.doc, p.start]), C4_CALIB_SEED3_PAIRS);
  assert.equal(sum(windows), 2988420);
});

Deno.test("sampleDocumentWindows() skips documents of exactly seqlen tokens, where GPTQ would crash", async () => {
  // document d has d + 3 tokens; seqlen 5: docs 0..1 are short, doc 2 has exactly 5
  const tokens = (d: number) => Int32Array.from({ length: d + 3 }, (_, k) => 100 * d + k);
  const rng = new PyRandom(0), ref = new PyRandom(0);
  const { picks, windows } = await sampleDocumentWindows(rng, {
    count: 20,
    seqlen: 5,
    poolSize: 6,
    tokens,
  });
  for (let n = 0; n < 20; n++) {
    let d: number;
    do d = ref.randint(0, 5); while (d + 3 <= 5);
    const start = ref.randint(0, d + 3 - 5 - 1);
    assert.deepEqual(picks[n], { doc: d, start });
    assert.deepEqual([...windows[n]], [0, 1, 2, 3, 4].map((k) => 100 * d + start + k));
  }
  assert.ok(picks.every((p) => p.doc >= 3));
});

Deno.test("sampleDocumentWindows() fails clearly when no document is long enough", async () => {
  await assert.rejects(
    sampleDocumentWindows(new PyRandom(0), {
      count: 1,
      seqlen: 8,
      poolSize: 4,
      tokens: () => new Int32Array(8),
    }),
    /No document among 4 .* more than seqlen = 8 tokens/,
  );
});

Deno.test("sampleStreamWindows() follows randint(0, numel - seqlen - 1)", () => {
  const stream = Int32Array.from({ length: 1000 }, (_, i) => i);
  const { windows, starts } = sampleStreamWindows(new PyRandom(0), stream, 10, 100);
  // /usr/bin/python3 -c "import random; random.seed(0); print([random.randint(0, 899) for _ in range(10)])"
  assert.deepEqual(starts, [864, 394, 776, 430, 41, 265, 523, 497, 414, 802]);
  windows.forEach((w, i) =>
    assert.deepEqual([...w], Array.from({ length: 100 }, (_, k) => starts[i] + k))
  );
  assert.throws(() => sampleStreamWindows(new PyRandom(0), stream, 1, 1000), /need more than 1000/);
});
