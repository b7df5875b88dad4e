/**
 * Test helper: the perplexity rows a results store holds, their identities
 * parsed (DuckDB returns the JSON column as text or as an object).
 *
 * @module
 */
import { ResultsStore } from "../reports/store.ts";

/** One stored perplexity result as the tests look at it. */
export interface StoredPplRow {
  resultKey: string;
  identity: Record<string, unknown>;
  identityComplete: boolean;
}

/** Every row of `ppl_results` in the store at `path`. */
export async function storedPplRows(path: string): Promise<StoredPplRow[]> {
  const s = await ResultsStore.open(path);
  try {
    const rows = await s.query("select result_key, identity, identity_complete from ppl_results");
    return rows.map((r) => ({
      resultKey: r.result_key as string,
      identity: typeof r.identity === "string"
        ? JSON.parse(r.identity)
        : r.identity as Record<string, unknown>,
      identityComplete: r.identity_complete as boolean,
    }));
  } finally {
    s.close();
  }
}
