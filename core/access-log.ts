/**
 * The owner's access log in memory, before the write-behind stores it
 * (privacy invariant 6: every watcher read is recorded). Reads of the same
 * view by the same watcher within one second coalesce into one entry with a
 * count, so a polling app costs one row a second, not one per request.
 * Bounded: past maxEntries, records are counted as dropped (and alerted on)
 * rather than growing memory without limit.
 */
export interface AccessRecord {
  readonly ownerId: string;
  readonly watcherId: string;
  /** A single read; a live stream opened, an event sent on it, or its closing; a view published outward (webhook, SIP). */
  readonly action: 'read' | 'stream-open' | 'stream-event' | 'stream-close' | 'publish';
  /** `shown`: the view rules granted; `withheld`: the offline view of a blocked or unknown watcher. */
  readonly outcome: 'shown' | 'withheld';
  readonly fields: readonly string[];
}

export interface AccessEntry extends AccessRecord {
  /** Start of the second, ms since the epoch. */
  readonly at: number;
  count: number;
}

const keyOf = (r: AccessRecord, at: number) => `${r.ownerId}|${r.watcherId}|${r.action}|${r.outcome}|${r.fields.join(',')}|${at}`;

export class AccessLogBuffer {
  private entries = new Map<string, AccessEntry>();
  private droppedTotal = 0;

  constructor(private readonly maxEntries = 100_000) {}

  record(record: AccessRecord, now: number): void {
    const at = now - (now % 1000);
    const key = keyOf(record, at);
    const entry = this.entries.get(key);
    if (entry) {
      entry.count += 1;
      return;
    }
    if (this.entries.size >= this.maxEntries) {
      this.droppedTotal += 1;
      return;
    }
    this.entries.set(key, { ...record, fields: [...record.fields], at, count: 1 });
  }

  take(): AccessEntry[] {
    const out = [...this.entries.values()];
    this.entries = new Map();
    return out;
  }

  /** After a failed write: back in, as far as there is room. */
  putBack(entries: readonly AccessEntry[]): void {
    for (const entry of entries) {
      const key = keyOf(entry, entry.at);
      const existing = this.entries.get(key);
      if (existing) existing.count += entry.count;
      else if (this.entries.size < this.maxEntries) this.entries.set(key, entry);
      else this.droppedTotal += entry.count;
    }
  }

  get size(): number {
    return this.entries.size;
  }

  get dropped(): number {
    return this.droppedTotal;
  }
}
