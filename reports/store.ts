/**
 * The results store: one DuckDB file holding every measured number with its
 * full provenance, keyed by the hash of its full identity (reports/identity.ts).
 *
 * Readable while a sweep runs. No connection is held between operations:
 * every write opens the file, writes in one transaction, commits and closes,
 * so readers (`deno task report`, any DuckDB client) get in between writes;
 * every read opens the file read-only (a shared lock) and closes it. An
 * operation that finds the file locked by another process waits and retries
 * (writers up to {@linkcode StoreOptions.lockTimeoutMs}). A store opened with
 * `readOnly` never writes and works on a read-only file or mount.
 *
 * Kill-safety: a result is committed before its write returns, so killing
 * the process (even with SIGKILL) loses nothing already recorded.
 *
 * Tables (schema {@linkcode SCHEMA_VERSION}):
 * - `meta`: `store` = "squeezebench-results", `schema_version`; a DuckDB file
 *   without it is not a squeezebench store and is never written to (except a
 *   store of schema 1, written before `meta` existed, which is migrated).
 * - `runs`: one row per invocation (command line, code version, git commit, machine).
 * - `ppl_results`: one row per perplexity, with `result_key` (sha256 of the
 *   identity JSON, also stored in `identity`), `config_key` and `dataset_key`,
 *   `info_bits` (information bits per weight, the papers' "Avg. Bits") and
 *   `stored_bits` (bytes as laid out, padding included, × 8 per weight).
 * - `kernel_results`: one row per timed kernel, with the same two bit columns.
 *
 * Migration 1 → 2: rows keep their numbers; `avg_bits` becomes `info_bits` in
 * `ppl_results` and `stored_bits` in `kernel_results` (what each meant); every
 * old result gets `result_key` = "legacy:" + sha256 of what it has and
 * `identity_complete = false`, so no new run's key ever matches it.
 *
 * @module
 */
import { type DuckDBConnection, DuckDBInstance } from "@duckdb/node-api";
import { CODE_VERSION, LEGACY_KEY_PREFIX, type ResultIdentity, resultKeys } from "./identity.ts";

/** Version of the store's tables; see the module doc for the migrations. */
export const SCHEMA_VERSION = 2;
/** Value of `meta.store` in every squeezebench store. */
export const STORE_MARK = "squeezebench-results";

/** Provenance of one invocation. */
export interface RunInfo {
  runId: string;
  /** The command line, e.g. "eval --sweep quick --limit 4". */
  command: string;
  /** `git rev-parse --short HEAD` (+ "-dirty"), "unknown" outside a checkout. */
  gitCommit: string;
  /** {@linkcode CODE_VERSION} of the code. */
  codeVersion: number;
  denoVersion: string;
  host: string;
  startedAt: string;
}

/** One perplexity measurement; its keys are computed from `identity`. */
export interface PplRecord {
  runId: string;
  /** Model name for display, e.g. "stories260K". */
  model: string;
  /** Artifact name carrying the config, e.g. "gptq.w3.g128.act": for people, never a key. */
  variant: string;
  method: string;
  bits: number | null;
  groupSize: number | null;
  /** Information bits per weight (codes at b bits + fp16 metadata + sparse), 32 for fp32. */
  infoBits: number;
  /** Stored bits per weight as laid out (codes padded to 32-bit words), 32 for fp32. */
  storedBits: number;
  /** Resolved spec plus method-specific details. */
  quantConfig: object;
  /** Human-readable description of the calibration data, or null. */
  calibration: string | null;
  quantSeconds: number;
  /** Path of the evaluation data file (provenance). */
  dataFile: string;
  windowsAvailable: number;
  tokens: number;
  ppl: number;
  evalSeconds: number;
  /** The git commit that computed it (provenance, not in the key). */
  gitCommit: string;
  /** Everything that determines the number; `result_key` is its hash. */
  identity: ResultIdentity;
  /** False when part of the identity is unknown (e.g. a model file without its calibration). @default {true} */
  identityComplete?: boolean;
}

/** One kernel timing. */
export interface KernelRecord {
  runId: string;
  adapter: object;
  format: string;
  bits: number | null;
  rows: number;
  cols: number;
  batch: number;
  medianUs: number;
  minUs: number;
  gbps: number;
  fractionOfCopy: number;
  speedupVsF16: number | null;
  /** Information bits per weight (null where not known). */
  infoBits: number | null;
  /** Stored bits per weight, every part and padding included. */
  storedBits: number;
}

/** Options of {@linkcode ResultsStore.open}. */
export interface StoreOptions {
  /** Never write; the file must exist and be a current store. @default {false} */
  readOnly?: boolean;
  /** How long an operation waits for another process's lock. @default {120000} (read-only: 30000) */
  lockTimeoutMs?: number;
}

/** The store file is not a squeezebench store, or of a schema this code cannot use. */
export class StoreSchemaError extends Error {
  override name = "StoreSchemaError";
}

const RUNS = `create table runs (
  run_id varchar primary key, command varchar, git_commit varchar, code_version integer,
  deno_version varchar, host varchar, started_at timestamp)`;
const PPL = `create table ppl_results (
  result_key varchar not null, config_key varchar not null, dataset_key varchar not null,
  identity json, identity_complete boolean not null,
  run_id varchar, model varchar, model_sha256 varchar, variant varchar, method varchar,
  bits integer, group_size integer, info_bits double, stored_bits double, quant_config json,
  calibration varchar, calib_source varchar, calib_file varchar, calib_sha256 varchar,
  calib_nsamples integer, calib_seqlen integer, calib_seed integer, calib_tokens_sha256 varchar,
  quant_seconds double, dataset varchar, protocol varchar, data_file varchar, data_sha256 varchar,
  tokens_sha256 varchar, seqlen integer, windows integer, windows_available integer, tokens bigint,
  ppl double, eval_seconds double, code_version integer, git_commit varchar,
  recorded_at timestamp default current_timestamp)`;
const KERNELS = `create table kernel_results (
  run_id varchar, adapter json, format varchar, bits integer, rows integer, cols integer,
  batch integer, median_us double, min_us double, gbps double, fraction_of_copy double,
  speedup_vs_f16 double, info_bits double, stored_bits double,
  recorded_at timestamp default current_timestamp)`;
const META = `create table meta (key varchar primary key, value varchar)`;
/**
 * Jobs of a run plan whose rows are stored (eval/cli/plan.ts: kernel timings, which have no
 * result key); added to schema 2 without a version change (created when missing).
 */
const JOBS = `create table if not exists jobs (
  job_key varchar primary key, kind varchar, label varchar, run_id varchar,
  recorded_at timestamp default current_timestamp)`;

/**
 * The CREATE statements of schema 1 (squeezebench before `meta`), kept to
 * recognise and migrate such stores and to build test fixtures of them.
 */
export const SCHEMA_V1 = `
create table if not exists runs (
  run_id varchar primary key, command varchar, git_commit varchar, deno_version varchar,
  host varchar, started_at timestamp);
create table if not exists ppl_results (
  run_id varchar, model varchar, model_sha256 varchar, variant varchar, method varchar,
  bits integer, group_size integer, avg_bits double, quant_config json, calibration varchar,
  quant_seconds double, dataset varchar, protocol varchar, data_file varchar, seqlen integer,
  windows integer, windows_available integer, tokens bigint, ppl double, eval_seconds double,
  recorded_at timestamp default current_timestamp);
create table if not exists kernel_results (
  run_id varchar, adapter json, format varchar, bits integer, rows integer, cols integer,
  batch integer, median_us double, min_us double, gbps double, fraction_of_copy double,
  speedup_vs_f16 double, avg_bits double, recorded_at timestamp default current_timestamp);
`;

// Schema 1 → 2, in one transaction: new tables beside the old, rows copied, old dropped.
const MIGRATE_1_TO_2 = `
${RUNS.replace("table runs", "table runs_v2")};
insert into runs_v2 select run_id, command, git_commit, null, deno_version, host, started_at from runs;
${PPL.replace("table ppl_results", "table ppl_results_v2")};
insert into ppl_results_v2 select
  '${LEGACY_KEY_PREFIX}' || sha256(concat_ws('|', model_sha256, variant, quant_config, calibration,
    dataset, data_file, protocol, seqlen, windows)),
  '${LEGACY_KEY_PREFIX}' || sha256(concat_ws('|', model_sha256, variant, quant_config, calibration)),
  '${LEGACY_KEY_PREFIX}' || sha256(concat_ws('|', dataset, data_file, protocol, seqlen, windows)),
  null, false, run_id, model, model_sha256, variant, method, bits, group_size, avg_bits, null,
  quant_config, calibration, null, null, null, null, null, null, null, quant_seconds, dataset,
  protocol, data_file, null, null, seqlen, windows, windows_available, tokens, ppl, eval_seconds,
  null, null, recorded_at
from ppl_results;
${KERNELS.replace("table kernel_results", "table kernel_results_v2")};
insert into kernel_results_v2 select run_id, adapter, format, bits, rows, cols, batch, median_us,
  min_us, gbps, fraction_of_copy, speedup_vs_f16, null, avg_bits, recorded_at from kernel_results;
drop table runs; drop table ppl_results; drop table kernel_results;
alter table runs_v2 rename to runs;
alter table ppl_results_v2 rename to ppl_results;
alter table kernel_results_v2 rename to kernel_results;
`;

type Session = { instance: DuckDBInstance; con: DuckDBConnection };

const isLockError = (e: unknown) => /Could not set lock|Conflicting lock/i.test(String(e));

/**
 * A results store on disk. No connection is held between calls (see the
 * module doc); {@linkcode ResultsStore.close} only marks the handle closed.
 */
export class ResultsStore {
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  private constructor(
    readonly path: string,
    readonly readOnly: boolean,
    private lockTimeoutMs: number,
  ) {}

  /**
   * Opens the store at `path`: creates it (writable only) when the file does
   * not exist, migrates a schema-1 store (writable only), checks it is a
   * squeezebench store of this schema otherwise.
   *
   * @param path the DuckDB file
   * @param options read-only, lock timeout
   * @throws {StoreSchemaError} for a DuckDB file that is not a squeezebench store, a store of a
   *   newer schema, or (read-only) a schema-1 store that needs migrating
   * @example
   * ```ts
   * const store = await ResultsStore.open("out/results.duckdb", { readOnly: true });
   * const rows = await store.query("select variant, ppl from ppl_results");
   * ```
   */
  static async open(path: string, options: StoreOptions = {}): Promise<ResultsStore> {
    const readOnly = options.readOnly ?? false;
    const store = new ResultsStore(
      path,
      readOnly,
      options.lockTimeoutMs ?? (readOnly ? 30_000 : 120_000),
    );
    if (readOnly) {
      try {
        await Deno.stat(path);
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) {
          throw new Deno.errors.NotFound(`results store ${path} does not exist`);
        }
        throw e;
      }
      await store.session(true, async (con) => {
        const v = await schemaVersion(con, path);
        if (v === 1) {
          throw new StoreSchemaError(
            `${path} is a results store of schema 1 (before identities); open it once writable ` +
              `to migrate it (deno task report does so when the file is writable)`,
          );
        }
        if (v === null) throw notAStore(path, "it has no tables");
      });
    } else {
      await store.session(false, async (con) => {
        const v = await schemaVersion(con, path);
        if (v === SCHEMA_VERSION) {
          await con.run(JOBS);
          return;
        }
        await con.run("begin transaction");
        try {
          if (v === null) await con.run([META, RUNS, PPL, KERNELS, JOBS].join(";\n"));
          else await con.run(`${MIGRATE_1_TO_2}${META};\n${JOBS}`);
          await con.run(
            `insert into meta values ('store', '${STORE_MARK}'), ('schema_version', '${SCHEMA_VERSION}')` +
              (v === 1
                ? `, ('migrated_from', '1'), ('migrated_at', current_timestamp::varchar)`
                : ""),
          );
          await con.run("commit");
        } catch (e) {
          await con.run("rollback");
          throw e;
        }
      });
    }
    return store;
  }

  /** True when the file is a squeezebench store of schema 1 (written before `meta`). */
  static async needsMigration(path: string): Promise<boolean> {
    const store = new ResultsStore(path, true, 30_000);
    return await store.session(true, async (con) => (await schemaVersion(con, path)) === 1);
  }

  /** Records an invocation (committed before it returns). */
  async addRun(r: RunInfo): Promise<void> {
    await this.write(async (con) => {
      await con.run(
        "insert or replace into runs values ($1, $2, $3, $4, $5, $6, $7::timestamp)",
        [r.runId, r.command, r.gitCommit, r.codeVersion, r.denoVersion, r.host, r.startedAt],
      );
    });
  }

  /** Records one perplexity result under the keys of its identity (committed before it returns). */
  async addPpl(r: PplRecord): Promise<void> {
    const id = r.identity;
    const keys = await resultKeys(id);
    const c = id.calibration;
    const d = id.dataset;
    const row: Record<string, string | number | boolean | null> = {
      result_key: keys.resultKey,
      config_key: keys.configKey,
      dataset_key: keys.datasetKey,
      identity: JSON.stringify(id),
      identity_complete: r.identityComplete ?? true,
      run_id: r.runId,
      model: r.model,
      model_sha256: id.model.sha256,
      variant: r.variant,
      method: r.method,
      bits: r.bits,
      group_size: r.groupSize,
      info_bits: r.infoBits,
      stored_bits: r.storedBits,
      quant_config: JSON.stringify(r.quantConfig),
      calibration: r.calibration,
      calib_source: c?.source ?? null,
      calib_file: c?.file ?? null,
      calib_sha256: c?.fileSha256 ?? null,
      calib_nsamples: c?.nsamples ?? null,
      calib_seqlen: c?.seqlen ?? null,
      calib_seed: c?.seed ?? null,
      calib_tokens_sha256: c?.tokensSha256 ?? null,
      quant_seconds: r.quantSeconds,
      dataset: d.name,
      protocol: d.protocol,
      data_file: r.dataFile,
      data_sha256: d.fileSha256,
      tokens_sha256: d.tokensSha256,
      seqlen: d.seqlen,
      windows: d.windows,
      windows_available: r.windowsAvailable,
      tokens: r.tokens,
      ppl: r.ppl,
      eval_seconds: r.evalSeconds,
      code_version: id.codeVersion,
      git_commit: r.gitCommit,
    };
    const cols = Object.keys(row);
    await this.write(async (con) => {
      await con.run(
        `insert into ppl_results (${cols.join(", ")}) values (${
          cols.map((_, i) => `$${i + 1}`).join(", ")
        })`,
        Object.values(row),
      );
    });
  }

  /**
   * Records kernel timings, all in one transaction (committed before it returns). With `job`,
   * the job's key is recorded in the same transaction ({@linkcode ResultsStore.doneJobs}): the
   * rows and the mark are stored together or not at all.
   */
  async addKernels(
    rs: KernelRecord[],
    job?: { key: string; kind: string; label: string },
  ): Promise<void> {
    await this.write(async (con) => {
      if (job) {
        await con.run("insert into jobs (job_key, kind, label, run_id) values ($1, $2, $3, $4)", [
          job.key,
          job.kind,
          job.label,
          rs[0]?.runId ?? null,
        ]);
      }
      for (const r of rs) {
        await con.run(
          `insert into kernel_results (run_id, adapter, format, bits, rows, cols, batch, median_us,
            min_us, gbps, fraction_of_copy, speedup_vs_f16, info_bits, stored_bits)
           values ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)`,
          [
            r.runId,
            JSON.stringify(r.adapter),
            r.format,
            r.bits,
            r.rows,
            r.cols,
            r.batch,
            r.medianUs,
            r.minUs,
            r.gbps,
            r.fractionOfCopy,
            r.speedupVsF16,
            r.infoBits,
            r.storedBits,
          ],
        );
      }
    });
  }

  /** Records one kernel timing (committed before it returns). */
  async addKernel(r: KernelRecord): Promise<void> {
    await this.addKernels([r]);
  }

  /** True when a result with this `result_key` is stored: resume support. */
  async hasResult(resultKey: string): Promise<boolean> {
    const rows = await this.query(
      "select count(*)::integer n from ppl_results where result_key = $1",
      [resultKey],
    );
    return Number(rows[0].n) > 0;
  }

  /** Every stored `result_key`: a run plan's status in one query. */
  async storedResultKeys(): Promise<Set<string>> {
    const rows = await this.query("select distinct result_key from ppl_results");
    return new Set(rows.map((r) => String(r.result_key)));
  }

  /** The keys of the plan jobs recorded with {@linkcode ResultsStore.addKernels} (empty before the table exists). */
  async doneJobs(): Promise<Set<string>> {
    return await this.session(true, async (con) => {
      const has = (await con.runAndReadAll(
        "select 1 from duckdb_tables() where database_name = current_database() and table_name = 'jobs'",
      )).getRows().length > 0;
      if (!has) return new Set<string>();
      const rows = (await con.runAndReadAll("select job_key from jobs")).getRows();
      return new Set(rows.map((r) => String(r[0])));
    });
  }

  /** Rows of a read-only query as JSON-safe objects. */
  async query(
    sql: string,
    params: (string | number | boolean | null)[] = [],
  ): Promise<Record<string, unknown>[]> {
    return await this.session(true, async (con) => {
      const r = await con.runAndReadAll(sql, params);
      return r.getRowObjectsJson() as Record<string, unknown>[];
    });
  }

  /** Marks the handle closed; no connection is held between calls, so the file is free already. */
  close(): void {
    this.closed = true;
  }

  private async write(f: (con: DuckDBConnection) => Promise<void>): Promise<void> {
    if (this.readOnly) throw new Error(`results store ${this.path} was opened read-only`);
    await this.session(false, async (con) => {
      await con.run("begin transaction");
      try {
        await f(con);
        await con.run("commit");
      } catch (e) {
        await con.run("rollback");
        throw e;
      }
    });
  }

  /** Opens the file, runs `f`, closes it; calls on one handle run one at a time. */
  private session<T>(readOnly: boolean, f: (con: DuckDBConnection) => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new Error(`results store ${this.path} is closed`));
    const next = this.queue.then(async () => {
      const s = await this.connect(readOnly || this.readOnly);
      try {
        return await f(s.con);
      } finally {
        s.con.closeSync();
        s.instance.closeSync();
      }
    });
    this.queue = next.catch(() => {});
    return next;
  }

  private async connect(readOnly: boolean): Promise<Session> {
    const deadline = Date.now() + this.lockTimeoutMs;
    for (let wait = 10;; wait = Math.min(2 * wait, 500)) {
      try {
        const instance = await DuckDBInstance.create(
          this.path,
          readOnly ? { access_mode: "READ_ONLY" } : {},
        );
        return { instance, con: await instance.connect() };
      } catch (e) {
        if (isLockError(e) && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, wait));
          continue;
        }
        const why = isLockError(e)
          ? `still locked by another process after ${this.lockTimeoutMs / 1000} s: `
          : "";
        throw new Error(`Cannot open results store ${this.path}: ${why}${(e as Error).message}`);
      }
    }
  }
}

function notAStore(path: string, why: string): StoreSchemaError {
  return new StoreSchemaError(
    `${path} is a DuckDB file but not a squeezebench results store (${why}); ` +
      `pass another --store, or remove the file if it is yours to replace`,
  );
}

/**
 * The store schema of an open file: null when it has no tables at all, 1 for
 * a pre-`meta` squeezebench store, else `meta.schema_version`.
 */
async function schemaVersion(con: DuckDBConnection, path: string): Promise<number | null> {
  const tables = (await con.runAndReadAll(
    "select table_name from duckdb_tables() where database_name = current_database() and schema_name = 'main'",
  )).getRows().map((r) => String(r[0]));
  if (tables.length === 0) return null;
  if (!tables.includes("meta")) {
    const v1 = ["runs", "ppl_results", "kernel_results"];
    if (tables.length === v1.length && v1.every((t) => tables.includes(t))) {
      const cols = (await con.runAndReadAll(
        "select column_name from duckdb_columns() where database_name = current_database() and table_name = 'ppl_results'",
      )).getRows().map((r) => String(r[0]));
      if (cols.includes("avg_bits") && cols.includes("model_sha256")) return 1;
    }
    throw notAStore(path, `no meta table; tables: ${tables.join(", ")}`);
  }
  const meta = new Map(
    (await con.runAndReadAll("select key, value from meta")).getRows().map((
      r,
    ) => [String(r[0]), String(r[1])]),
  );
  if (meta.get("store") !== STORE_MARK) {
    throw notAStore(path, `meta.store is ${JSON.stringify(meta.get("store") ?? null)}`);
  }
  const v = Number(meta.get("schema_version"));
  if (v > SCHEMA_VERSION) {
    throw new StoreSchemaError(
      `${path} has store schema ${v}, newer than this code's ${SCHEMA_VERSION}; update squeezebench`,
    );
  }
  if (v !== SCHEMA_VERSION) {
    throw new StoreSchemaError(`${path} has unknown store schema ${meta.get("schema_version")}`);
  }
  return v;
}

/**
 * Provenance of the current process: the command line, git commit, code
 * version, Deno version, host.
 *
 * @param command the command line as the user typed it after `deno task`, e.g. "eval --limit 4"
 */
export async function currentRun(command: string): Promise<RunInfo> {
  let gitCommit = "unknown";
  try {
    const out = await new Deno.Command("git", {
      args: ["rev-parse", "--short", "HEAD"],
      stderr: "null",
    }).output();
    if (out.success) gitCommit = new TextDecoder().decode(out.stdout).trim();
    const dirty = await new Deno.Command("git", { args: ["status", "--porcelain"], stderr: "null" })
      .output();
    if (dirty.success && dirty.stdout.length > 0) gitCommit += "-dirty";
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e; // no git binary: stays "unknown"
  }
  const startedAt = new Date().toISOString();
  return {
    runId: `${startedAt.replace(/[-:.TZ]/g, "").slice(0, 14)}-${crypto.randomUUID().slice(0, 8)}`,
    command,
    gitCommit,
    codeVersion: CODE_VERSION,
    denoVersion: Deno.version.deno,
    host:
      `${Deno.hostname()} ${Deno.build.os}/${Deno.build.arch} ${navigator.hardwareConcurrency} cores`,
    startedAt,
  };
}

/**
 * Opens a store to report from: read-only, so it works on a read-only file or
 * mount and while a sweep writes to it. A store of schema 1 is migrated first
 * when the file is writable (the one write a report makes); when it is not,
 * the error says how to proceed.
 *
 * @param path the DuckDB file
 * @param log where to say that the store is being migrated
 * @throws {StoreSchemaError} for a file that is not a squeezebench store, or an unwritable schema-1 store
 */
export async function openForReport(
  path: string,
  log: (line: string) => void = () => {},
): Promise<ResultsStore> {
  try {
    return await ResultsStore.open(path, { readOnly: true });
  } catch (e) {
    if (!(e instanceof StoreSchemaError) || !(await ResultsStore.needsMigration(path))) throw e;
  }
  log(
    `${path}: store schema 1, migrating it to schema ${SCHEMA_VERSION} (rows kept, marked legacy)`,
  );
  try {
    await ResultsStore.open(path);
  } catch (e) {
    throw new StoreSchemaError(
      `${path} is a results store of schema 1 and must be migrated once before it can be ` +
        `read, but it cannot be written (${(e as Error).message}); copy it to a writable place ` +
        `and run deno task report --store COPY`,
    );
  }
  return await ResultsStore.open(path, { readOnly: true });
}

/**
 * Merges results stores (e.g. the shards of a Slurm job array) into one new
 * store `dest`: every run, every perplexity result once per `result_key`
 * (the first source's row wins), the kernel timings of every plan job once
 * per job key (a job's rows share its mark's run_id and recorded_at; rows of
 * no job are all kept), every job mark once. Sources
 * are only read. `dest` is written to a temporary file beside it and renamed
 * into place, so it never exists half-written.
 *
 * @param sources the store files, in order of precedence
 * @param dest the merged store; must not exist
 * @returns the number of perplexity rows and kernel rows in `dest`
 * @throws {StoreSchemaError} for a source that is not a current squeezebench store
 * @example
 * ```ts
 * await mergeStores(["out/shard-0.duckdb", "out/shard-1.duckdb"], "out/merged.duckdb");
 * ```
 */
export async function mergeStores(
  sources: readonly string[],
  dest: string,
): Promise<{ ppl: number; kernels: number }> {
  for (const s of sources) (await ResultsStore.open(s, { readOnly: true })).close();
  const tmp = `${dest}.merging-${Deno.pid}`;
  await Deno.remove(tmp).catch(() => {});
  (await ResultsStore.open(tmp)).close();
  const instance = await DuckDBInstance.create(tmp);
  const con = await instance.connect();
  try {
    for (const [i, s] of sources.entries()) {
      const db = `src${i}`;
      await con.run(`attach '${s.replaceAll("'", "''")}' as ${db} (read_only)`);
      const hasJobs = (await con.runAndReadAll(
        `select 1 from duckdb_tables() where database_name = '${db}' and table_name = 'jobs'`,
      )).getRows().length > 0;
      await con.run("begin transaction");
      await con.run(
        `insert into runs select * from ${db}.runs where run_id not in (select run_id from runs)`,
      );
      await con.run(
        `insert into ppl_results select * from ${db}.ppl_results s
         where s.result_key not in (select result_key from ppl_results)
         qualify row_number() over (partition by s.result_key order by s.recorded_at) = 1`,
      );
      // A job's kernel rows were written in the job mark's transaction: same run_id and
      // recorded_at (DuckDB's current_timestamp is the transaction's start).
      await con.run(
        hasJobs
          ? `insert into kernel_results select k.* from ${db}.kernel_results k
             where not exists (select 1 from ${db}.jobs j where j.run_id = k.run_id
               and j.recorded_at = k.recorded_at and j.job_key in (select job_key from jobs))`
          : `insert into kernel_results select * from ${db}.kernel_results`,
      );
      if (hasJobs) {
        await con.run(
          `insert into jobs select * from ${db}.jobs where job_key not in (select job_key from jobs)`,
        );
      }
      await con.run("commit");
      await con.run(`detach ${db}`);
    }
    const count = async (t: string) =>
      Number((await con.runAndReadAll(`select count(*)::integer from ${t}`)).getRows()[0][0]);
    const out = { ppl: await count("ppl_results"), kernels: await count("kernel_results") };
    con.closeSync();
    instance.closeSync();
    await Deno.rename(tmp, dest);
    return out;
  } catch (e) {
    con.closeSync();
    instance.closeSync();
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}
