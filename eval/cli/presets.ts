/**
 * Sweep presets: the lists of quantization specs `deno task eval --sweep NAME`
 * runs. Configs are data; eval/cli/sweep.ts runs any list.
 *
 * @module
 */
import type { LlamaConfig } from "../../model/config.ts";
import { defaultSpec, inputWidths, type Method, type QuantSpec } from "../../quant/methods.ts";

/** A sweep entry; null stands for the unquantized fp32 model. */
export type SweepEntry = QuantSpec | null;

/** The default spec of `method` at `bits` with `over` replaced (checked when it is resolved). */
const spec = (method: Method, bits: number, over: Record<string, unknown> = {}): QuantSpec =>
  ({ ...defaultSpec(method, bits), ...over }) as QuantSpec;

/**
 * SqueezeLLM's Table 1 rows at 3 and 4 bits: per-row RTN, GPTQ (with and
 * without act-order), AWQ, SqueezeLLM dense-only, 0.05% and 0.45% sparse;
 * plus the g128 baselines where 128 divides every layer width (LLaMA shapes).
 */
function paper(c: LlamaConfig): SweepEntry[] {
  const g128 = inputWidths(c).every((w) => w % 128 === 0);
  const out: SweepEntry[] = [null];
  for (const bits of [3, 4]) {
    out.push(
      spec("rtn", bits),
      spec("gptq", bits),
      spec("gptq", bits, { actOrder: true }),
      spec("awq", bits, { groupSize: g128 ? 128 : null }),
      spec("squeezellm", bits),
      spec("squeezellm", bits, { sensitivePct: 0.05 }),
      spec("squeezellm", bits, { sensitivePct: 0.05, outlierPct: 0.4 }),
    );
    if (g128) {
      out.push(spec("rtn", bits, { groupSize: 128 }), spec("gptq", bits, { groupSize: 128 }));
    }
  }
  return out;
}

/** Every method at every bit width 2..8 (dense-only SqueezeLLM). */
function bits(c: LlamaConfig): SweepEntry[] {
  const out: SweepEntry[] = [null];
  const g = inputWidths(c).every((w) => w % 128 === 0) ? 128 : null;
  for (let b = 2; b <= 8; b++) {
    out.push(
      spec("rtn", b),
      spec("gptq", b),
      spec("awq", b, { groupSize: g }),
      spec("squeezellm", b),
    );
  }
  return out;
}

/** A few minutes' smoke run: fp32, RTN and SqueezeLLM at 3 bits. */
function quick(_c: LlamaConfig): SweepEntry[] {
  return [null, spec("rtn", 3), spec("squeezellm", 3, { fisherSamples: 16 })];
}

/** Sweep presets by name. */
export const SWEEPS = { paper, bits, quick } as const;
