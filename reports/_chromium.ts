/**
 * Headless Chromium driven over the DevTools protocol (CDP) through one
 * WebSocket, for the report's browser test: open a page, collect console
 * errors, uncaught exceptions and failed loads, evaluate scripts, take a
 * full-page screenshot.
 *
 * @module
 */

/** Where Debian's `chromium` package installs the browser, then other usual names. */
const CANDIDATES = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"];

/**
 * The Chromium executable on PATH (or `$CHROMIUM`), or null when there is none.
 */
export async function findChromium(): Promise<string | null> {
  const env = Deno.env.get("CHROMIUM");
  if (env) return env;
  for (const name of CANDIDATES) {
    for (const dir of (Deno.env.get("PATH") ?? "").split(":").filter(Boolean)) {
      try {
        if ((await Deno.stat(`${dir}/${name}`)).isFile) return `${dir}/${name}`;
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
    }
  }
  return null;
}

/** Something the page reported as an error. */
export interface PageError {
  source: "console" | "exception" | "log" | "network";
  text: string;
}

/** One browser with one page. */
export class Chromium {
  private nextId = 1;
  private pending = new Map<
    number,
    { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }
  >();
  private listeners: ((method: string, params: Record<string, unknown>) => void)[] = [];
  /** Errors seen so far: console.error, uncaught exceptions, error log entries, failed requests. */
  readonly errors: PageError[] = [];

  private constructor(
    private proc: Deno.ChildProcess,
    private ws: WebSocket,
    private sessionId: string,
    private profile: string,
  ) {}

  /**
   * Starts headless Chromium with a fresh profile and opens a blank page.
   *
   * @param exe the executable ({@linkcode findChromium})
   * @param options `width` × `height` of the window @default {1280 × 900}
   */
  static async launch(
    exe: string,
    options: { width?: number; height?: number } = {},
  ): Promise<Chromium> {
    const profile = await Deno.makeTempDir({ prefix: "sqb-chromium-" });
    const proc = new Deno.Command(exe, {
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        `--user-data-dir=${profile}`,
        "--remote-debugging-port=0",
        `--window-size=${options.width ?? 1280},${options.height ?? 900}`,
        "about:blank",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    // Chromium prints "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID" on stderr.
    const reader = proc.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let seen = "";
    let wsUrl: string | null = null;
    const deadline = Date.now() + 30_000;
    while (!wsUrl) {
      const timer = new Promise<{ done: true; value: undefined }>((r) =>
        setTimeout(() => r({ done: true, value: undefined }), Math.max(0, deadline - Date.now()))
      );
      const { done, value } = await Promise.race([reader.read(), timer]);
      if (done) {
        proc.kill("SIGKILL");
        await proc.status;
        await Deno.remove(profile, { recursive: true });
        throw new Error(`${exe} did not start its DevTools endpoint: ${seen.slice(-1500)}`);
      }
      seen += value;
      wsUrl = seen.match(/DevTools listening on (ws:\/\/\S+)/)?.[1] ?? null;
    }
    // Drain the rest of stderr so the browser never blocks on a full pipe.
    (async () => {
      while (!(await reader.read()).done) { /* Chromium's own log lines */ }
    })();
    const ws = new WebSocket(wsUrl);
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error(`cannot connect to ${wsUrl}`));
    });
    const browser = new Chromium(proc, ws, "", profile);
    ws.onmessage = (e) => browser.onMessage(JSON.parse(String(e.data)));
    const { targetId } = await browser.send("Target.createTarget", { url: "about:blank" }, "");
    const { sessionId } = await browser.send(
      "Target.attachToTarget",
      { targetId, flatten: true },
      "",
    );
    browser.sessionId = String(sessionId);
    browser.listeners.push((method, p) => browser.collect(method, p));
    for (const domain of ["Runtime", "Log", "Page", "Network"]) {
      await browser.send(`${domain}.enable`);
    }
    return browser;
  }

  private onMessage(m: Record<string, unknown>): void {
    if (typeof m.id === "number") {
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      const err = m.error as { message: string } | undefined;
      if (err) p?.reject(new Error(`CDP: ${err.message}`));
      else p?.resolve((m.result ?? {}) as Record<string, unknown>);
    } else if (typeof m.method === "string") {
      for (const l of this.listeners) l(m.method, (m.params ?? {}) as Record<string, unknown>);
    }
  }

  private collect(method: string, p: Record<string, unknown>): void {
    if (method === "Runtime.consoleAPICalled" && (p.type === "error" || p.type === "assert")) {
      const args = p.args as { value?: unknown; description?: string }[];
      this.errors.push({
        source: "console",
        text: args.map((a) => a.description ?? String(a.value)).join(" "),
      });
    } else if (method === "Runtime.exceptionThrown") {
      const d = p.exceptionDetails as { text: string; exception?: { description?: string } };
      this.errors.push({ source: "exception", text: d.exception?.description ?? d.text });
    } else if (method === "Log.entryAdded") {
      const e = p.entry as { level: string; text: string; url?: string };
      if (e.level === "error") {
        this.errors.push({ source: "log", text: `${e.text}${e.url ? ` (${e.url})` : ""}` });
      }
    } else if (method === "Network.loadingFailed") {
      this.errors.push({ source: "network", text: String(p.errorText) });
    }
  }

  /** Sends a CDP command to the page (or, with sessionId "", to the browser). */
  send(
    method: string,
    params: Record<string, unknown> = {},
    sessionId: string = this.sessionId,
  ): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    });
  }

  /** Waits for the next event `method` (e.g. "Page.loadEventFired"), at most `timeoutMs`. */
  waitFor(method: string, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no ${method} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const l = (m: string, p: Record<string, unknown>) => {
        if (m !== method) return;
        clearTimeout(timer);
        this.listeners = this.listeners.filter((x) => x !== l);
        resolve(p);
      };
      this.listeners.push(l);
    });
  }

  /** Opens `url` and waits for its load event. */
  async goto(url: string): Promise<void> {
    const loaded = this.waitFor("Page.loadEventFired");
    const r = await this.send("Page.navigate", { url });
    if (r.errorText) throw new Error(`cannot open ${url}: ${r.errorText}`);
    await loaded;
  }

  /**
   * Evaluates an expression in the page (awaiting a promise) and returns its
   * value (JSON-able values only).
   */
  async eval<T>(expression: string): Promise<T> {
    const r = await this.send("Runtime.evaluate", {
      expression,
      awaitPromise: true,
      returnByValue: true,
    });
    const ex = r.exceptionDetails as
      | { text: string; exception?: { description?: string } }
      | undefined;
    if (ex) throw new Error(`in the page: ${ex.exception?.description ?? ex.text}`);
    return (r.result as { value: T }).value;
  }

  /** Polls `expression` until it is truthy (at most `timeoutMs`); returns its value. */
  async until<T>(expression: string, timeoutMs = 60_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await this.eval<T>(expression);
      if (v) return v;
      if (Date.now() > deadline) {
        throw new Error(`still false after ${timeoutMs} ms: ${expression}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** A PNG of the whole page (beyond the window). */
  async screenshot(): Promise<Uint8Array> {
    const r = await this.send("Page.captureScreenshot", {
      format: "png",
      captureBeyondViewport: true,
      fromSurface: true,
    });
    return Uint8Array.from(atob(String(r.data)), (c) => c.charCodeAt(0));
  }

  /** Closes the browser (killing it if it does not exit within 3 s) and removes its profile. */
  async close(): Promise<void> {
    // Chromium may close the socket without answering Browser.close: wait for the exit instead.
    this.send("Browser.close", {}, "");
    const exited = await Promise.race([
      this.proc.status.then(() => true),
      new Promise<false>((r) => setTimeout(() => r(false), 3000)),
    ]);
    if (!exited) this.proc.kill("SIGKILL");
    await this.proc.status;
    this.ws.close();
    await Deno.remove(this.profile, { recursive: true });
  }
}
