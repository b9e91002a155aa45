/**
 * Counters and gauges in the Prometheus text exposition format. Small on
 * purpose: the hot path does a Map lookup and an addition.
 */
type Labels = Readonly<Record<string, string>>;

interface Family {
  readonly type: 'counter' | 'gauge';
  readonly help: string;
  readonly values: Map<string, number>;
  readonly read?: () => number;
}

function labelKey(labels: Labels | undefined): string {
  if (!labels) return '';
  const parts = Object.keys(labels)
    .sort()
    .map((k) => `${k}="${String(labels[k]).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

export class Metrics {
  private readonly families = new Map<string, Family>();

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
    return `${lines.join('\n')}\n`;
  }
}
