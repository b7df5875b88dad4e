/**
 * The layer shared by the GPTQ tests (quant/gptq_test.ts, the reference, and
 * quant/gptq_fast_test.ts, held to it): its size, a dead input column and
 * seeded calibration windows.
 *
 * @module
 */
import { gaussian } from "../model/random.ts";
import type { GptqOptions } from "./gptq.ts";

/** Output features of the test layer. */
export const ROWS = 24;
/** Input features of the test layer. */
export const COLS = 70;
/** A column whose inputs are all zero. */
export const DEAD = 5;

/**
 * Three calibration windows of 40 rows each: correlated features
 * (x = z·(I + 0.5·R)) with per-column scales spread over e^±1, and column
 * DEAD always zero.
 *
 * @param seed seed @default 2
 * @param cols features per row @default COLS
 * @returns 3 windows, each [40, cols]
 */
export function calibration(seed = 2, cols = COLS): Float32Array[] {
  const g = gaussian(seed);
  const mix = Float64Array.from(
    { length: cols * cols },
    (_, i) => (i % (cols + 1) === 0 ? 1 : 0) + (0.5 * g()) / Math.sqrt(cols),
  );
  const colScale = Float64Array.from({ length: cols }, () => Math.exp(g()));
  return [0, 1, 2].map(() => {
    const z = Float64Array.from({ length: 40 * cols }, () => g());
    const x = new Float32Array(40 * cols);
    for (let t = 0; t < 40; t++) {
      for (let j = 0; j < cols; j++) {
        let s = 0;
        for (let k = 0; k < cols; k++) s += z[t * cols + k] * mix[k * cols + j];
        x[t * cols + j] = j === DEAD ? 0 : s * colScale[j];
      }
    }
    return x;
  });
}

/** The solver configurations the GPTQ tests run: groups inside blocks, act-order, static groups, sym, damping. */
export const GPTQ_TEST_CONFIGS: readonly GptqOptions[] = [
  { bits: 3 },
  { bits: 4, groupSize: 10, blocksize: 16 }, // groups start inside blocks
  { bits: 3, groupSize: 14, actOrder: true, blocksize: 16 },
  { bits: 2, groupSize: 35, actOrder: true, staticGroups: true, blocksize: 32 },
  { bits: 4, sym: true, actOrder: true, blocksize: 8 },
  { bits: 8, groupSize: 7, percdamp: 0.1 },
  { bits: 3, groupSize: 10, staticGroups: true, blocksize: 16 },
  { bits: 2, groupSize: 14, sym: true },
];
