import { appendFileSync } from 'node:fs';

/**
 * One figure of the benchmark suite, next to the baseline measured in the
 * same run. Every benchmark prints its own detailed table; when it runs
 * under `npm run bench` (bench/suite.ts), it also appends its headline
 * figures here, as JSON lines to BENCH_SUITE_OUT, and the suite prints them
 * all in one table.
 */
export interface SuiteRow {
  /** Which part: ingest, reads, latency, memory, publish, fan-out, write-behind. */
  readonly part: string;
  /** What was measured, e.g. "QoS 1 events/s end to end". */
  readonly figure: string;
  readonly value: number;
  readonly unit: string;
  /** The same-run baseline's name and value (absent where the figure is absolute, e.g. a p99 against a target). */
  readonly baseline?: { readonly name: string; readonly value: number };
  /** value / baseline.value, or the figure that the target is stated in. */
  readonly ratio?: number;
  /** The target in words, e.g. ">= 0.8 of bare" or "p99 <= 15 ms". */
  readonly target?: string;
  readonly met?: boolean;
}

export function reportToSuite(row: SuiteRow): void {
  const out = process.env.BENCH_SUITE_OUT;
  if (out) appendFileSync(out, `${JSON.stringify(row)}\n`);
}
