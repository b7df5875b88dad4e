/**
 * The results store (DuckDB), result identities and keys, and the report.
 *
 * @module
 */
export * from "./identity.ts";
export * from "./store.ts";
export * from "./report.ts";
export * from "./markdown.ts";
