import assert from "node:assert/strict";

/** stderr of a Deno process that runs `code` with eval/cli/progress.ts imported as `p` (not a terminal). */
async function stderrOf(code: string): Promise<string> {
  const url = new URL("./progress.ts", import.meta.url).href;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", `import * as p from "${url}";\n${code}`],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stderr);
}

Deno.test("progressBars() draws one bar per pass, labelled by the first word of `what`, every 10% off a terminal", async () => {
  const err = await stderrOf(`
    const on = p.progressBars();
    for (let i = 1; i <= 20; i++) on(i, 20, "awq layers." + (i > 10 ? 1 : 0) + " scale");
    for (let i = 1; i <= 3; i++) on(i, 3, "fisher windows");
  `);
  const lines = err.trim().split("\n");
  const awq = lines.filter((l) => l.startsWith("awq "));
  const fisher = lines.filter((l) => l.startsWith("fisher "));
  assert.equal(awq.length + fisher.length, lines.length, err);
  // The first step, then one line per 10% (steps 2, 4, …, 20).
  assert.equal(awq.length, 11, err);
  assert.match(awq.at(-1)!, /^awq █{24} 20\/20 steps .* steps\/s \d+\.\ds {2}awq layers\.1 scale$/);
  // The rate and ETA count from the first report (the bar is made then).
  assert.match(awq[0], /^awq █░{23} 1\/20 steps 0\.0 steps\/s ETA \? {2}awq layers\.0 scale$/);
  assert.match(awq[1], /^awq ██░{22} 2\/20 steps .* ETA \d+s {2}awq layers\.0 scale$/);
  assert.equal(fisher.length, 3, err);
  assert.match(fisher.at(-1)!, /^fisher █{24} 3\/3 steps .* {2}fisher windows$/);
});

Deno.test("downloadBars() shows megabytes per file, and only the figures when the size is unknown", async () => {
  const err = await stderrOf(`
    const on = p.downloadBars();
    on(0, 2e6, "a.bin"); on(1e6, 2e6, "a.bin"); on(2e6, 2e6, "a.bin");
    on(5e5, null, "b.bin");
  `);
  const lines = err.trim().split("\n");
  assert.match(lines[0], /^a\.bin ░{24} 0\.0\/2\.0 MB /);
  assert.match(lines[2], /^a\.bin █{24} 2\.0\/2\.0 MB [\d.]+ MB\/s \d+\.\ds$/);
  assert.match(lines[3], /^b\.bin 0\.5 MB [\d.]+ MB\/s$/);
  assert.equal(lines.length, 4, err);
});
