/**
 * The results a report shows, read from one or more stores into one
 * in-memory DuckDB database: the shards of a sweep (`--shard i/n`, one store
 * each) become one set of tables, as if one process had written them all.
 *
 * Each store is opened with `openForReport` (checked to be a squeezebench
 * store, a schema-1 store migrated once), then ATTACHed read-only just long
 * enough to copy its `runs`, `ppl_results` and `kernel_results` into memory,
 * so a sweep still writing to it waits at most for that copy. Every copied
 * row carries `store_file`, the store it came from. The same run or result
 * found in two stores (a store given twice, a copy of a shard) is kept once:
 * reports take the latest row of each `result_key` (reports/report.ts).
 *
 * The merged tables are exported as Parquet files for the report's in-page
 * SQL panel ({@linkcode MergedResults.exportParquet}).
 *
 * @module
 */
import { type DuckDBConnection, DuckDBInstance } from "@duckdb/node-api";
import { openForReport } from "./store.ts";

/** What a report reads from: the store API's read side. */
export interface ResultsReader {
  /** The store file, or the files merged (comma-separated), for display. */
  readonly path: string;
  /** Rows of a read-only query as JSON-safe objects. */
  query(
    sql: string,
    params?: (string | number | boolean | null)[],
  ): Promise<Record<string, unknown>[]>;
}

/** The tables every store holds and the report reads. */
export const RESULT_TABLES = ["runs", "ppl_results", "kernel_results"] as const;

const isLockError = (e: unknown) => /Could not set lock|Conflicting lock/i.test(String(e));
const quote = (s: string) => `'${s.replaceAll("'", "''")}'`;

/**
 * Expands `--store` arguments: a path is kept as is (it must exist); a
 * pattern with `*` or `?` in its last component matches the files of its
 * folder, sorted. Duplicates (the same file twice) are dropped.
 *
 * @param patterns paths or patterns, e.g. ["out/shard-*.duckdb"]
 * @returns existing files, in the order given
 * @throws {Deno.errors.NotFound} naming a path that does not exist or a pattern that matches nothing
 * @example
 * ```ts
 * await expandStorePaths(["out/shard-*.duckdb"]); // ["out/shard-0.duckdb", "out/shard-1.duckdb"]
 * ```
 */
export async function expandStorePaths(patterns: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  const seen = new Set<string>();
  const add = async (p: string) => {
    const real = await Deno.realPath(p);
    if (!seen.has(real)) {
      seen.add(real);
      out.push(p);
    }
  };
  for (const p of patterns) {
    const slash = p.lastIndexOf("/");
    const dir = slash < 0 ? "." : p.slice(0, slash) || "/";
    const base = p.slice(slash + 1);
    if (!/[*?]/.test(base)) {
      try {
        await Deno.stat(p);
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) {
          throw new Deno.errors.NotFound(`--store ${p} does not exist`);
        }
        throw e;
      }
      await add(p);
      continue;
    }
    const re = new RegExp(
      `^${base.replace(/[.+^${}()|[\]\\]/g, "\\$&").replaceAll("*", ".*").replaceAll("?", ".")}$`,
    );
    const names: string[] = [];
    try {
      for await (const e of Deno.readDir(dir)) if (e.isFile && re.test(e.name)) names.push(e.name);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    if (names.length === 0) {
      throw new Deno.errors.NotFound(`--store ${p}: the pattern matches no file in ${dir}`);
    }
    for (const n of names.sort()) await add(slash < 0 ? n : `${dir === "/" ? "" : dir}/${n}`);
  }
  return out;
}

/**
 * The merged results of several stores, held in memory. Queries never touch
 * the store files again.
 */
export class MergedResults implements ResultsReader {
  private constructor(
    /** The store files merged, in the order given. */
    readonly stores: string[],
    private instance: DuckDBInstance,
    private con: DuckDBConnection,
  ) {}

  /** The merged files, comma-separated. */
  get path(): string {
    return this.stores.join(", ");
  }

  /**
   * Reads every store into one in-memory database.
   *
   * @param paths store files (see {@linkcode expandStorePaths} for patterns)
   * @param options `log` says when a schema-1 store is migrated; `lockTimeoutMs` bounds the wait
   *   for a writer's lock @default {30000}
   * @throws {StoreSchemaError} naming a file that is not a squeezebench store
   * @example
   * ```ts
   * const r = await MergedResults.open(["out/shard-0.duckdb", "out/shard-1.duckdb"]);
   * await r.query("select count(*) n from ppl_results");
   * r.close();
   * ```
   */
  static async open(
    paths: readonly string[],
    options: { log?: (line: string) => void; lockTimeoutMs?: number } = {},
  ): Promise<MergedResults> {
    if (paths.length === 0) throw new Error("MergedResults.open(): no store given");
    for (const p of paths) (await openForReport(p, options.log)).close(); // checked, migrated
    const instance = await DuckDBInstance.create(":memory:");
    const con = await instance.connect();
    try {
      const parts: Record<string, string[]> = { runs: [], ppl_results: [], kernel_results: [] };
      for (const [i, p] of paths.entries()) {
        const db = `s${i}`;
        await attachWaiting(con, p, db, options.lockTimeoutMs ?? 30_000);
        try {
          for (const t of RESULT_TABLES) {
            await con.run(
              `create temp table ${db}_${t} as select *, ${quote(p)} store_file from ${db}.${t}`,
            );
            parts[t].push(`select * from ${db}_${t}`);
          }
        } finally {
          await con.run(`detach ${db}`);
        }
      }
      // Rows found in two stores are kept once; store_file says where each came from.
      await con.run(`
        create table runs as select * exclude (rn) from (
          select *, row_number() over (partition by run_id order by store_file) rn
          from (${parts.runs.join(" union all by name ")})) where rn = 1;
        create table ppl_results as select * exclude (rn) from (
          select *, row_number() over (partition by result_key, recorded_at, run_id
            order by store_file) rn
          from (${parts.ppl_results.join(" union all by name ")})) where rn = 1;
        create table kernel_results as select * exclude (rn) from (
          select *, row_number() over (partition by run_id, format, bits, rows, cols, batch,
            recorded_at order by store_file) rn
          from (${parts.kernel_results.join(" union all by name ")})) where rn = 1;`);
      for (const [i] of paths.entries()) {
        for (const t of RESULT_TABLES) await con.run(`drop table s${i}_${t}`);
      }
    } catch (e) {
      con.closeSync();
      instance.closeSync();
      throw e;
    }
    return new MergedResults([...paths], instance, con);
  }

  /** Rows of a query as JSON-safe objects. */
  async query(
    sql: string,
    params: (string | number | boolean | null)[] = [],
  ): Promise<Record<string, unknown>[]> {
    const r = await this.con.runAndReadAll(sql, params);
    return r.getRowObjectsJson() as Record<string, unknown>[];
  }

  /**
   * Writes each merged table as `<dir>/<table>.parquet` (JSON columns as text).
   *
   * @param dir an existing folder
   * @returns the file names written, by table
   */
  async exportParquet(dir: string): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const t of RESULT_TABLES) {
      const file = `${t}.parquet`;
      await this.con.run(
        `copy (select * from ${t}) to ${
          quote(`${dir}/${file}`)
        } (format parquet, compression zstd)`,
      );
      out[t] = file;
    }
    return out;
  }

  /**
   * Writes the merged tables into a new DuckDB file that older DuckDB
   * releases read too (storage version 1.0, as duckdb-wasm in the report page
   * needs), JSON columns as text (the JSON type is an extension the page does
   * not load).
   *
   * @param path the file to write (replaced if it exists)
   */
  async exportDuckDb(path: string): Promise<void> {
    await Deno.remove(path).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
    await this.con.run(`attach ${quote(path)} as export_db (storage_version 'v1.0.0')`);
    try {
      for (const t of RESULT_TABLES) {
        const cols = (await this.query(
          `select column_name, data_type from duckdb_columns()
           where database_name = 'memory' and table_name = $1 order by column_index`,
          [t],
        )).map((c) =>
          c.data_type === "JSON"
            ? `"${c.column_name}"::varchar "${c.column_name}"`
            : `"${c.column_name}"`
        );
        await this.con.run(`create table export_db.${t} as select ${cols.join(", ")} from ${t}`);
      }
    } finally {
      await this.con.run("detach export_db");
    }
  }

  /** Frees the in-memory database. */
  close(): void {
    this.con.closeSync();
    this.instance.closeSync();
  }
}

/** ATTACH a store read-only, waiting while another process holds its write lock. */
async function attachWaiting(
  con: DuckDBConnection,
  path: string,
  name: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let wait = 10;; wait = Math.min(2 * wait, 500)) {
    try {
      await con.run(`attach ${quote(path)} as ${name} (read_only)`);
      return;
    } catch (e) {
      if (isLockError(e) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, wait));
        continue;
      }
      throw new Error(
        `Cannot read results store ${path}${
          isLockError(e) ? ` (still locked after ${timeoutMs / 1000} s)` : ""
        }: ${(e as Error).message}`,
      );
    }
  }
}
