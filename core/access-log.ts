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

/** Same action, outcome and field list: records that coalesce (owner, watcher and second are matched by the index). */
function sameKind(entry: AccessEntry, record: AccessRecord): boolean {
  if (entry.action !== record.action || entry.outcome !== record.outcome) return false;
  const a = entry.fields;
  const b = record.fields;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Entries indexed by second, owner and watcher, then a short list (one per
 * action, outcome and field set). A change fanned out to thousands of open
 * streams records one event per stream: nested lookups by the ids the caller
 * already holds cost far less than building and hashing a long string key
 * per record, and keying by the second first keeps each list short even when
 * failed writes pile entries up.
 */
type Index = Map<number, Map<string, Map<string, AccessEntry[]>>>;

export class AccessLogBuffer {
  /** Every entry, oldest first: what take() hands over. */
  private order: AccessEntry[] = [];
  private index: Index = new Map();
  private droppedTotal = 0;

  constructor(private readonly maxEntries = 100_000) {}

  record(record: AccessRecord, now: number): void {
    const at = now - (now % 1000);
    const existing = this.index.get(at)?.get(record.ownerId)?.get(record.watcherId)?.find((e) => sameKind(e, record));
    if (existing) {
      existing.count += 1;
      return;
    }
    if (this.order.length >= this.maxEntries) {
      this.droppedTotal += 1;
      return;
    }
    // A frozen list (api/watcher-views.ts shares one per view) cannot change under the entry: no copy needed.
    const fields = Object.isFrozen(record.fields) ? record.fields : [...record.fields];
    this.add({ ownerId: record.ownerId, watcherId: record.watcherId, action: record.action, outcome: record.outcome, fields, at, count: 1 });
  }

  take(): AccessEntry[] {
    const out = this.order;
    this.order = [];
    this.index = new Map();
    return out;
  }

  /** After a failed write: back in, as far as there is room. */
  putBack(entries: readonly AccessEntry[]): void {
    for (const entry of entries) {
      const existing = this.index.get(entry.at)?.get(entry.ownerId)?.get(entry.watcherId)?.find((e) => sameKind(e, entry));
      if (existing) existing.count += entry.count;
      else if (this.order.length < this.maxEntries) this.add(entry);
      else this.droppedTotal += entry.count;
    }
  }

  private add(entry: AccessEntry): void {
    let byOwner = this.index.get(entry.at);
    if (!byOwner) {
      byOwner = new Map();
      this.index.set(entry.at, byOwner);
    }
    let byWatcher = byOwner.get(entry.ownerId);
    if (!byWatcher) {
      byWatcher = new Map();
      byOwner.set(entry.ownerId, byWatcher);
    }
    const list = byWatcher.get(entry.watcherId);
    if (list) list.push(entry);
    else byWatcher.set(entry.watcherId, [entry]);
    this.order.push(entry);
  }

  get size(): number {
    return this.order.length;
  }

  get dropped(): number {
    return this.droppedTotal;
  }
}
