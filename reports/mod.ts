/**
 * The results store (DuckDB) and the HTML report.
 *
 * @module
 */
export * from "./store.ts";
export * from "./report.ts";
