/**
 * Markdown tables: the one helper for the report, the sweep and every benchmark.
 *
 * @module
 */

/**
 * A markdown table with columns padded to their widest cell.
 * @param head column titles
 * @param lines cells of each row, one per column
 * @returns the table, one line per row
 */
export function markdownTable(head: string[], lines: string[][]): string {
  const width = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const fmt = (l: string[]) => `| ${l.map((s, i) => s.padEnd(width[i])).join(" | ")} |`;
  return [fmt(head), `|${width.map((w) => "-".repeat(w + 2)).join("|")}|`, ...lines.map(fmt)].join(
    "\n",
  );
}
