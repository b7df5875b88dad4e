/**
 * The results store (DuckDB), result identities and keys, merged stores, the
 * report (tables, charts, report folder) and its loopback server.
 *
 * @module
 */
export * from "./identity.ts";
export * from "./store.ts";
export * from "./results.ts";
export * from "./report.ts";
export * from "./charts.ts";
export * from "./serve.ts";
export * from "./markdown.ts";
