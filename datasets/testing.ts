/**
 * Test helpers shared by every `*_test.ts`.
 *
 * @module
 */
import { fileURLToPath } from "node:url";

/** Absolute path of the shared real data (`../shared/data` beside the repo). */
export const SHARED_DATA: string = fileURLToPath(new URL("../../shared/data/", import.meta.url));

/** Absolute path of a file under {@linkcode SHARED_DATA}. */
export function sharedData(rel: string): string {
  return SHARED_DATA + rel;
}

/** Maximum elementwise relative error max|a−b| / max(max|b|, tiny). */
export function maxRelError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`length ${a.length} vs ${b.length}`);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / Math.max(den, 1e-30);
}
