/**
 * A one-line progress bar on stderr: done/total, rate and ETA. Silent when
 * stderr is not a terminal unless `always` is set (CI logs stay readable:
 * then it prints at most every 10% and at the end).
 *
 * @module
 */

/** A progress bar for `total` units named `unit`. */
export class Progress {
  #t0 = performance.now();
  #lastPrint = 0;
  #lastDecile = -1;
  readonly #tty = Deno.stderr.isTerminal();
  readonly #enc = new TextEncoder();

  constructor(
    readonly label: string,
    readonly total: number,
    readonly unit = "it",
    /** Units reported per step for the rate (e.g. tokens per window). */
    readonly unitsPerStep = 1,
    readonly unitName = unit,
  ) {}

  /** Reports that `done` of `total` steps are finished. */
  update(done: number): void {
    const now = performance.now();
    const frac = this.total ? done / this.total : 1;
    const decile = Math.floor(frac * 10);
    const final = done >= this.total;
    if (
      this.#tty ? (now - this.#lastPrint < 100 && !final) : (decile === this.#lastDecile && !final)
    ) {
      return;
    }
    this.#lastPrint = now;
    this.#lastDecile = decile;
    const sec = (now - this.#t0) / 1000;
    const rate = (done * this.unitsPerStep) / Math.max(sec, 1e-9);
    const eta = done > 0 ? (sec / done) * (this.total - done) : NaN;
    const width = 24, fill = Math.round(frac * width);
    const bar = "█".repeat(fill) + "░".repeat(width - fill);
    const line = `${this.label} ${bar} ${done}/${this.total} ${this.unit} ` +
      `${fmtRate(rate)} ${this.unitName}/s ${final ? `${sec.toFixed(1)}s` : `ETA ${fmtSec(eta)}`}`;
    Deno.stderr.writeSync(
      this.#enc.encode(this.#tty ? `\r\x1b[2K${line}${final ? "\n" : ""}` : `${line}\n`),
    );
  }
}

function fmtRate(r: number): string {
  return r >= 1e6
    ? `${(r / 1e6).toFixed(2)}M`
    : r >= 1e3
    ? `${(r / 1e3).toFixed(1)}k`
    : r.toFixed(1);
}

function fmtSec(s: number): string {
  if (!Number.isFinite(s)) return "?";
  return s >= 60 ? `${Math.floor(s / 60)}m${Math.round(s % 60)}s` : `${s.toFixed(0)}s`;
}
