/// <reference lib="deno.worker" />
/**
 * Worker side of {@linkcode squeezellmQuantize}: answers each block of rows
 * (dense weights [nRows, cols] and Fisher [nRows, cols], transferred) with its
 * fp16 LUTs [nRows, 2^bits] and packed codes [nRows, wordsPerRow], computed by
 * {@linkcode quantizeLutRows}; errors come back as `{ error, name }`.
 *
 * @module
 */
import { type LutRowOptions, quantizeLutRows } from "./squeezellm.ts";

/** One block of rows to quantize. */
interface RowTask {
  firstRow: number;
  nRows: number;
  cols: number;
  wd: Float32Array; // [nRows, cols]
  f: Float32Array; // [nRows, cols]
  opts: LutRowOptions;
}

self.onmessage = (e: MessageEvent<RowTask>) => {
  const { firstRow, nRows, cols, wd, f, opts } = e.data;
  try {
    const { lut, codes, iterations } = quantizeLutRows(wd, f, nRows, cols, firstRow, opts);
    self.postMessage({ firstRow, lut, codes, iterations }, [
      lut.buffer as ArrayBuffer,
      codes.buffer as ArrayBuffer,
    ]);
  } catch (err) {
    self.postMessage({ error: (err as Error).message, name: (err as Error).name });
  }
};
