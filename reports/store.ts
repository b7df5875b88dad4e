/**
 * The results store: one DuckDB file holding every measured number with its
 * full provenance. Each result is inserted (and committed) the moment it is
 * computed, so an interrupted run loses nothing already recorded.
 *
 * Tables:
 * - `runs`: one row per invocation (command line, code version, machine).
 * - `ppl_results`: one row per (quantized model, dataset) perplexity.
 * - `kernel_results`: one row per timed kernel configuration.
 *
 * @module
 */
import { type DuckDBConnection, DuckDBInstance } from "@duckdb/node-api";

/** Provenance of one invocation. */
export interface RunInfo {
  runId: string;
  command: string;
  gitCommit: string;
  denoVersion: string;
  host: string;
  startedAt: string;
}

/** One perplexity measurement. */
export interface PplRecord {
  runId: string;
  model: string;
  modelSha256: string;
  /** Artifact name carrying the config, e.g. "gptq.w3.g128.act". */
  variant: string;
  method: string;
  bits: number | null;
  groupSize: number | null;
  avgBits: number;
  quantConfig: object;
  calibration: string | null;
  quantSeconds: number;
  dataset: string;
  protocol: string;
  dataFile: string;
  seqlen: number;
  windows: number;
  windowsAvailable: number;
  tokens: number;
  ppl: number;
  evalSeconds: number;
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
  avgBits: number;
}

const SCHEMA = `
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

/** An open results store. Close it with {@linkcode ResultsStore.close}. */
export class ResultsStore {
  private constructor(
    readonly path: string,
    private instance: DuckDBInstance,
    private con: DuckDBConnection,
  ) {}

  /** Opens (creating if needed) the DuckDB file at `path`. */
  static async open(path: string): Promise<ResultsStore> {
    let instance: DuckDBInstance;
    try {
      instance = await DuckDBInstance.create(path);
    } catch (e) {
      throw new Error(`Cannot open results store ${path}: ${(e as Error).message}`);
    }
    const con = await instance.connect();
    await con.run(SCHEMA);
    return new ResultsStore(path, instance, con);
  }

  /** Records an invocation. */
  async addRun(r: RunInfo): Promise<void> {
    await this.con.run(
      "insert or replace into runs values ($1, $2, $3, $4, $5, $6::timestamp)",
      [r.runId, r.command, r.gitCommit, r.denoVersion, r.host, r.startedAt],
    );
  }

  /** Records one perplexity result (committed immediately). */
  async addPpl(r: PplRecord): Promise<void> {
    await this.con.run(
      `insert into ppl_results (run_id, model, model_sha256, variant, method, bits, group_size, avg_bits,
        quant_config, calibration, quant_seconds, dataset, protocol, data_file, seqlen, windows,
        windows_available, tokens, ppl, eval_seconds)
       values ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20)`,
      [
        r.runId,
        r.model,
        r.modelSha256,
        r.variant,
        r.method,
        r.bits,
        r.groupSize,
        r.avgBits,
        JSON.stringify(r.quantConfig),
        r.calibration,
        r.quantSeconds,
        r.dataset,
        r.protocol,
        r.dataFile,
        r.seqlen,
        r.windows,
        r.windowsAvailable,
        r.tokens,
        r.ppl,
        r.evalSeconds,
      ],
    );
  }

  /** Records one kernel timing (committed immediately). */
  async addKernel(r: KernelRecord): Promise<void> {
    await this.con.run(
      `insert into kernel_results (run_id, adapter, format, bits, rows, cols, batch, median_us, min_us, gbps,
        fraction_of_copy, speedup_vs_f16, avg_bits) values ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)`,
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
        r.avgBits,
      ],
    );
  }

  /** True when (model sha, variant, dataset, seqlen, windows) already has a result: resume support. */
  async hasPpl(
    modelSha256: string,
    variant: string,
    dataset: string,
    seqlen: number,
    windows: number | null,
  ) {
    const r = await this.con.runAndReadAll(
      `select count(*)::integer n from ppl_results where model_sha256 = $1 and variant = $2 and dataset = $3
        and seqlen = $4 and ($5::integer is null or windows = $5::integer)`,
      [modelSha256, variant, dataset, seqlen, windows],
    );
    return Number(r.getRows()[0][0]) > 0;
  }

  /** Rows of a query as JSON-safe objects. */
  async query(
    sql: string,
    params: (string | number | null)[] = [],
  ): Promise<Record<string, unknown>[]> {
    const r = await this.con.runAndReadAll(sql, params);
    return r.getRowObjectsJson() as Record<string, unknown>[];
  }

  /** Closes the connection; the file stays. */
  close(): void {
    this.con.closeSync();
    this.instance.closeSync();
  }
}

/** Provenance of the current process: git commit, Deno version, host. */
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
    denoVersion: Deno.version.deno,
    host:
      `${Deno.hostname()} ${Deno.build.os}/${Deno.build.arch} ${navigator.hardwareConcurrency} cores`,
    startedAt,
  };
}
