/**
 * Reading dataset files through DuckDB: Parquet (`read_parquet`) and JSON
 * lines, plain or gzip (`read_json`). No hand-written parsers.
 *
 * Row order is the file's: Parquet rows are ordered by `file_row_number`,
 * JSON rows by the table function's `WITH ORDINALITY` position (DuckDB's JSON
 * reader has no `file_row_number`); `datasets/duckdb_test.ts` checks both
 * against Python's own reading of the files.
 *
 * @module
 */
import { type DuckDBConnection, DuckDBInstance } from "@duckdb/node-api";

/** A dataset file that DuckDB cannot read or whose content is not what was expected. */
export class DatasetFormatError extends Error {
  override name = "DatasetFormatError";
}

/** SQL string literal. */
function lit(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}

/** SQL identifier. */
function ident(s: string): string {
  return `"${s.replaceAll('"', '""')}"`;
}

async function withConnection<T>(fn: (con: DuckDBConnection) => Promise<T>): Promise<T> {
  const instance = await DuckDBInstance.create(":memory:");
  const con = await instance.connect();
  try {
    return await fn(con);
  } finally {
    con.closeSync();
    instance.closeSync();
  }
}

async function readStrings(
  con: DuckDBConnection,
  sql: string,
  path: string,
  column: string,
): Promise<string[]> {
  let rows: unknown[][];
  try {
    rows = (await con.runAndReadAll(sql)).getRows();
  } catch (e) {
    throw new DatasetFormatError(
      `Cannot read column "${column}" of ${path}: ${(e as Error).message.split("\n")[0]}`,
    );
  }
  const out = new Array<string>(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const v = rows[i][0];
    if (typeof v !== "string") {
      throw new DatasetFormatError(
        `${path}: row ${i} has ${v === null ? "no" : `a non-string (${typeof v})`} "${column}" ` +
          `value; expected text in every row`,
      );
    }
    out[i] = v;
  }
  return out;
}

/**
 * One string column of a Parquet file, every row, in file order.
 *
 * @param path Parquet file
 * @param column column name, e.g. `"text"`
 * @returns `[rows]` the values
 * @throws {DatasetFormatError} naming the file when it is unreadable, lacks the column, or has nulls
 * @example
 * ```ts
 * const rows = await readParquetColumn("wikitext-2-raw-v1/test-00000-of-00001.parquet", "text");
 * rows.length; // 4358
 * ```
 */
export async function readParquetColumn(path: string, column: string): Promise<string[]> {
  return await withConnection((con) =>
    readStrings(
      con,
      `select ${ident(column)}::varchar from read_parquet(${lit(path)}, file_row_number = true) ` +
        `order by file_row_number`,
      path,
      column,
    )
  );
}

/**
 * A JSON-lines file (`.json`, `.json.gz`; C4's format) loaded into an
 * in-memory DuckDB table, one row per line in file order, for counting and
 * random access by row index. Close it with {@linkcode JsonLinesTable.close}.
 *
 * @example
 * ```ts
 * const docs = await JsonLinesTable.open("c4/c4-validation-2k.json.gz", "text");
 * docs.length; // 2000
 * await docs.get(0); // the first document's text
 * docs.close();
 * ```
 */
export class JsonLinesTable {
  private constructor(
    /** File it was read from. */
    readonly path: string,
    /** Column it holds. */
    readonly column: string,
    /** Number of rows (lines). */
    readonly length: number,
    private instance: DuckDBInstance,
    private con: DuckDBConnection,
  ) {}

  /**
   * Reads one string column of a JSON-lines file.
   *
   * @param path `.json` or `.json.gz` file, one JSON object per line
   * @param column field to keep, e.g. `"text"`
   * @returns the open table
   * @throws {DatasetFormatError} naming the file when it is unreadable or a row lacks the field
   */
  static async open(path: string, column: string): Promise<JsonLinesTable> {
    const instance = await DuckDBInstance.create(":memory:");
    const con = await instance.connect();
    try {
      try {
        await con.run(
          `create table rows as select ordinality - 1 as i, ${ident(column)} as v from ` +
            `read_json(${lit(path)}, format = 'newline_delimited', ` +
            `columns = {${lit(column)}: 'VARCHAR'}) with ordinality`,
        );
      } catch (e) {
        throw new DatasetFormatError(
          `Cannot read ${path} as JSON lines with a "${column}" field: ` +
            (e as Error).message.split("\n")[0],
        );
      }
      const [[n, nonNull, maxI]] = (await con.runAndReadAll(
        "select count(*), count(v), max(i) from rows",
      )).getRows() as [bigint, bigint, bigint | null][];
      if (n !== nonNull) {
        throw new DatasetFormatError(
          `${path}: ${
            n - nonNull
          } of ${n} rows have no string "${column}" field; expected one in every row`,
        );
      }
      if (n > 0n && maxI !== n - 1n) {
        throw new DatasetFormatError(`${path}: row positions are not 0..${n - 1n} (max ${maxI})`);
      }
      return new JsonLinesTable(path, column, Number(n), instance, con);
    } catch (e) {
      con.closeSync();
      instance.closeSync();
      throw e;
    }
  }

  /**
   * The value of row `i`.
   *
   * @param i row index, `0 ≤ i < length`
   * @returns the string
   * @throws {RangeError} when `i` is out of range
   */
  async get(i: number): Promise<string> {
    if (!Number.isInteger(i) || i < 0 || i >= this.length) {
      throw new RangeError(`${this.path}: row ${i} out of range [0, ${this.length})`);
    }
    const rows = await readStrings(
      this.con,
      `select v from rows where i = ${i}`,
      this.path,
      this.column,
    );
    return rows[0];
  }

  /**
   * Rows `start .. end-1` in file order.
   *
   * @param start first row @default {0}
   * @param end one past the last row, clamped to `length` @default {length}
   * @returns `[end - start]` the values
   */
  async slice(start = 0, end: number = this.length): Promise<string[]> {
    const lo = Math.max(0, Math.floor(start)), hi = Math.min(this.length, Math.floor(end));
    if (hi <= lo) return [];
    return await readStrings(
      this.con,
      `select v from rows where i >= ${lo} and i < ${hi} order by i`,
      this.path,
      this.column,
    );
  }

  #closed = false;

  /** Releases the DuckDB instance (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.con.closeSync();
    this.instance.closeSync();
  }

  /** Same as {@linkcode JsonLinesTable.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
