/**
 * The CLI's one progress bar, on stderr: done/total, rate and ETA. Library
 * code never draws: it reports through callbacks (model/pool.ts
 * `ProgressCallback`: `onProgress(done, total, what)`, datasets/hub.ts
 * `DownloadProgress` for bytes), and the CLI turns them into bars with
 * {@linkcode progressBars} and {@linkcode downloadBars}.
 *
 * On a terminal a bar redraws one line at most every 100 ms; otherwise (CI
 * logs) it prints at most every 10% and at the end.
 *
 * @module
 */
import type { ProgressCallback } from "../../model/pool.ts";
import type { DownloadProgress } from "../../datasets/hub.ts";

/** A progress bar for `total` units named `unit`. */
export class Progress {
  #t0 = performance.now();
  #lastPrint = 0;
  #lastDecile = -1;
  #last = 0;
  #start = -1; // the count the rate and ETA start from
  #fromFirst = false;
  readonly #tty = Deno.stderr.isTerminal();
  readonly #enc = new TextEncoder();

  /**
   * @param label shown before the bar
   * @param total units to do; null when unknown (bytes of a download without a length)
   * @param unit what one step is, e.g. "windows"
   * @param unitsPerStep units counted per step for the rate (e.g. tokens per window) @default 1
   * @param unitName the rate's unit @default unit
   * @param bytes steps are bytes: counts and rate in MB @default false
   */
  constructor(
    readonly label: string,
    readonly total: number | null,
    readonly unit = "it",
    readonly unitsPerStep = 1,
    readonly unitName = unit,
    readonly bytes = false,
  ) {}

  /**
   * Measures rate and ETA from the first update on (its count and time)
   * rather than from zero at construction: for a bar made when the first
   * report arrives, or a resumed download. Returns this.
   */
  fromFirstUpdate(): this {
    this.#fromFirst = true;
    return this;
  }

  /** The last `done` reported. */
  get done(): number {
    return this.#last;
  }

  /** Reports that `done` of `total` steps are finished; `what` is shown after the figures. */
  update(done: number, what = ""): void {
    this.#last = done;
    const now = performance.now();
    if (this.#start < 0) {
      this.#start = this.#fromFirst ? done : 0;
      if (this.#fromFirst) this.#t0 = now;
    }
    const total = this.total;
    const frac = total ? Math.min(done / total, 1) : total === 0 ? 1 : 0;
    const decile = Math.floor(frac * 10);
    const final = total !== null && done >= total;
    if (
      this.#tty ? (now - this.#lastPrint < 100 && !final) : (decile === this.#lastDecile && !final)
    ) {
      return;
    }
    this.#lastPrint = now;
    this.#lastDecile = decile;
    const sec = (now - this.#t0) / 1000;
    const rate = ((done - this.#start) * this.unitsPerStep) / Math.max(sec, 1e-9);
    const count = (n: number) => (this.bytes ? (n / 1e6).toFixed(1) : `${n}`);
    const unit = this.bytes ? "MB" : this.unit;
    const rateText = this.bytes
      ? `${(rate / 1e6).toFixed(1)} MB/s`
      : `${fmtRate(rate)} ${this.unitName}/s`;
    let line: string;
    if (total === null) {
      line = `${this.label} ${count(done)} ${unit} ${rateText}`;
    } else {
      const eta = done > this.#start ? (sec / (done - this.#start)) * (total - done) : NaN;
      const width = 24, fill = Math.round(frac * width);
      const bar = "█".repeat(fill) + "░".repeat(width - fill);
      line = `${this.label} ${bar} ${count(done)}/${count(total)} ${unit} ${rateText} ` +
        (final ? `${sec.toFixed(1)}s` : `ETA ${fmtSec(eta)}`);
    }
    if (what) line += `  ${what}`;
    Deno.stderr.writeSync(
      this.#enc.encode(this.#tty ? `\r\x1b[2K${line}${final ? "\n" : ""}` : `${line}\n`),
    );
  }
}

/**
 * A {@linkcode ProgressCallback} that draws one bar per pass: a new bar
 * starts whenever the total changes or the count goes back. The bar is
 * labelled `label`, or the first word of the pass's `what` ("awq",
 * "fisher"); the whole `what` (e.g. "awq layers.3 scale w1,w3") is shown
 * beside the figures.
 *
 * @param label shown before every bar @default the first word of `what`
 * @returns the callback to hand to library code (`onProgress`)
 * @example
 * ```ts
 * await fisherInformation(weights, windows, { onProgress: progressBars() });
 * ```
 */
export function progressBars(label?: string): ProgressCallback {
  let bar: Progress | undefined;
  return (done, total, what) => {
    if (!bar || bar.total !== total || done < bar.done) {
      bar = new Progress(label ?? what.split(" ")[0], total, "steps").fromFirstUpdate();
    }
    bar.update(done, what === bar.label ? "" : what);
  };
}

/**
 * A {@linkcode DownloadProgress} that draws one bar per file (bytes, %, MB/s),
 * labelled with the file's name.
 *
 * @returns the callback to hand to datasets/ (`progress`)
 */
export function downloadBars(): DownloadProgress {
  let bar: Progress | undefined, file = "";
  return (done, total, what) => {
    if (!bar || what !== file || bar.total !== total || done < bar.done) {
      bar = new Progress(what, total, "B", 1, "B", true).fromFirstUpdate();
      file = what;
    }
    bar.update(done);
  };
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
