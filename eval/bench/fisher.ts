/**
 * The Fisher pass benchmark (`deno task bench squeezellm`): forward +
 * backward windows per second of quant/fisher.ts's
 * {@linkcode fisherInformation} on stories260K, on this thread and on worker
 * threads.
 *
 * @module
 */
import { DEFAULT_WORKERS } from "../../quant/spec.ts";
import { join } from "node:path";
import { loadCheckpoint } from "../../model/checkpoint.ts";
import { loadTokenizer } from "../../model/tokenizer.ts";
import { fisherInformation } from "../../quant/fisher.ts";

/** Options of {@linkcode benchFisher}. */
export interface BenchFisherOptions {
  /** Fewer windows (CI). */
  small?: boolean;
  /** Data dir with stories260K/ and tinystories/ (the CLI resolves it before the work). */
  dataDir: string;
  /** Worker threads of the parallel measurement. @default DEFAULT_WORKERS (the machine's cores) */
  workers?: number;
}

/**
 * Windows per second of the Fisher pass on stories260K, 512-token windows of
 * TinyStories text, on this thread and on `workers` threads.
 */
export async function benchFisher(opts: BenchFisherOptions): Promise<{
  model: string;
  seqlen: number;
  windows1Thread: number;
  windowsPerSecond1Thread: number;
  workers: number;
  windowsWorkers: number;
  windowsPerSecondWorkers: number;
}> {
  const dir = opts.dataDir;
  const weights = await loadCheckpoint(join(dir, "stories260K/stories260K.bin"));
  const tok = await loadTokenizer(join(dir, "stories260K/tok512.model"), {
    vocabSize: weights.config.vocabSize,
  });
  const seqlen = weights.config.maxSeqLen;
  const n1 = opts.small ? 2 : 8, nW = opts.small ? 4 : 24;
  const textPath = join(dir, "tinystories/tinystories-valid-head.txt");
  const text = (await Deno.readTextFile(textPath)).slice(0, (n1 + nW + 1) * seqlen * 4);
  const tokens = tok.encodeWithBos(text);
  const count = Math.floor(tokens.length / seqlen);
  if (count < n1 + nW) {
    throw new RangeError(
      `benchFisher: ${textPath} gave ${count} windows of ${seqlen}, need ${n1 + nW}`,
    );
  }
  const windows = Array.from(
    { length: count },
    (_, i) => tokens.slice(i * seqlen, (i + 1) * seqlen),
  );
  await fisherInformation(weights, windows.slice(0, 1), { workers: 0 }); // warm-up
  const one = await fisherInformation(weights, windows.slice(0, n1), { workers: 0 });
  const workers = opts.workers ?? DEFAULT_WORKERS;
  const par = await fisherInformation(weights, windows.slice(n1, n1 + nW), { workers });
  const r = {
    model: "stories260K",
    seqlen,
    windows1Thread: n1,
    windowsPerSecond1Thread: n1 / one.seconds,
    workers,
    windowsWorkers: nW,
    windowsPerSecondWorkers: nW / par.seconds,
  };
  console.log(`Fisher pass (forward + backward), stories260K, ${seqlen}-token TinyStories windows`);
  console.log(
    `  1 thread:          ${r.windowsPerSecond1Thread.toFixed(2)} windows/s (${n1} windows)`,
  );
  console.log(
    `  ${workers} worker threads:  ${r.windowsPerSecondWorkers.toFixed(2)} windows/s ` +
      `(${nW} windows, incl. start-up)`,
  );
  return r;
}
