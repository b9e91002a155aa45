/**
 * Counters, gauges and histograms in the Prometheus text exposition format
 * (version 0.0.4). Small on purpose: the hot path does a Map lookup and an
 * addition; a histogram observation also walks its few bucket bounds.
 */
type Labels = Readonly<Record<string, string>>;

interface Family {
  readonly type: 'counter' | 'gauge';
  readonly help: string;
  readonly values: Map<string, number>;
  readonly read?: () => number;
}

interface Histogram {
  readonly help: string;
  /** Upper bounds, ascending; +Inf is implicit. */
  readonly bounds: readonly number[];
  /** Per label set: a count per bucket (not cumulative), the sum and the count. */
  readonly series: Map<string, { readonly labels: Labels | undefined; readonly counts: number[]; sum: number; count: number }>;
}

/** Seconds, for request and write durations: 0.5 ms to 10 s. */
export const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10] as const;

function labelKey(labels: Labels | undefined): string {
  if (!labels) return '';
  const parts = Object.keys(labels)
    .sort()
    .map((k) => `${k}="${String(labels[k]).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

export class Metrics {
  private readonly families = new Map<string, Family>();
  private readonly histograms = new Map<string, Histogram>();

  histogram(name: string, help: string, bounds: readonly number[]): void {
    if (!this.histograms.has(name)) this.histograms.set(name, { help, bounds: [...bounds].sort((a, b) => a - b), series: new Map() });
  }

  observe(name: string, value: number, labels?: Labels): void {
    this.series(name, labels)(value);
  }

  /** An observer bound to one label set: for hot paths, which keep it (no label key per observation). */
  series(name: string, labels?: Labels): (value: number) => void {
    const histogram = this.histograms.get(name);
    if (!histogram) throw new Error(`metric ${name} is not declared`);
    const key = labelKey(labels);
    let series = histogram.series.get(key);
    if (!series) {
      series = { labels, counts: new Array<number>(histogram.bounds.length + 1).fill(0), sum: 0, count: 0 };
      histogram.series.set(key, series);
    }
    const bound = series;
    return (value) => record(histogram.bounds, bound, value);
  }


  /** Observations of a histogram (all label sets, or one): count and sum. */
  observed(name: string, labels?: Labels): { count: number; sum: number } {
    const histogram = this.histograms.get(name);
    if (!histogram) return { count: 0, sum: 0 };
    const all = labels ? [histogram.series.get(labelKey(labels))] : [...histogram.series.values()];
    return all.reduce((acc, s) => (s ? { count: acc.count + s.count, sum: acc.sum + s.sum } : acc), { count: 0, sum: 0 });
  }

  counter(name: string, help: string): void {
    if (!this.families.has(name)) this.families.set(name, { type: 'counter', help, values: new Map() });
  }

  /** A gauge read when the metrics are scraped. */
  gauge(name: string, help: string, read: () => number): void {
    this.families.set(name, { type: 'gauge', help, values: new Map(), read });
  }

  inc(name: string, labels?: Labels, by = 1): void {
    const family = this.families.get(name);
    if (!family) throw new Error(`metric ${name} is not declared`);
    const key = labelKey(labels);
    family.values.set(key, (family.values.get(key) ?? 0) + by);
  }

  value(name: string, labels?: Labels): number {
    const family = this.families.get(name);
    if (family?.read) return family.read();
    return family?.values.get(labelKey(labels)) ?? 0;
  }

  render(): string {
    const lines: string[] = [];
    for (const [name, family] of this.families) {
      lines.push(`# HELP ${name} ${family.help}`, `# TYPE ${name} ${family.type}`);
      if (family.read) lines.push(`${name} ${family.read()}`);
      else if (family.values.size === 0) lines.push(`${name} 0`);
      else for (const [key, value] of family.values) lines.push(`${name}${key} ${value}`);
    }
    for (const [name, histogram] of this.histograms) {
      lines.push(`# HELP ${name} ${histogram.help}`, `# TYPE ${name} histogram`);
      for (const [key, series] of histogram.series) {
        let cumulative = 0;
        histogram.bounds.forEach((bound, i) => {
          cumulative += series.counts[i] ?? 0;
          lines.push(`${name}_bucket${labelKey({ ...series.labels, le: String(bound) })} ${cumulative}`);
        });
        lines.push(`${name}_bucket${labelKey({ ...series.labels, le: '+Inf' })} ${series.count}`, `${name}_sum${key} ${series.sum}`, `${name}_count${key} ${series.count}`);
      }
    }
    return `${lines.join('\n')}\n`;
  }
}

function record(bounds: readonly number[], series: { readonly counts: number[]; sum: number; count: number }, value: number): void {
  let i = 0;
  while (i < bounds.length && value > (bounds[i] ?? Infinity)) i += 1;
  series.counts[i] = (series.counts[i] ?? 0) + 1;
  series.sum += value;
  series.count += 1;
}
