/**
 * Access requests (RFC 3857 "subscribe" events, as the owner's watcher
 * information shows them) waiting for the write-behind.
 *
 * Why buffered: an answer that waited for the database would take a commit
 * for a known owner and nothing for an unknown one, so its timing would
 * tell a watcher whether a handle exists. The answer is decided in memory
 * (the rules), the row written on the next round (core/db/write-behind.ts),
 * and the owner's own reads of watcher information flush first, so the
 * owner always sees what was answered.
 */
export interface AccessRequestIntent {
  readonly ownerId: string;
  readonly watcherId: string;
  /**
   * `allowed`: a rule already lets the watcher in (active, approved).
   * `ask`: pending (subscribe), unless the owner denied an earlier request,
   * which stays denied: the watcher is not told, and asking again changes
   * nothing the owner sees but the message.
   */
  readonly intent: 'allowed' | 'ask';
  /** What the watcher said; absent keeps what an earlier request said. */
  readonly message?: string | undefined;
  /** When the service answered (ms since the epoch). */
  readonly at: number;
}

const keyOf = (r: AccessRequestIntent) => `${r.ownerId} ${r.watcherId}`;

/** The later request wins; it keeps the earlier message when it carries none. */
function merged(earlier: AccessRequestIntent, later: AccessRequestIntent): AccessRequestIntent {
  return later.message === undefined && earlier.message !== undefined ? { ...later, message: earlier.message } : later;
}

export class AccessRequestBuffer {
  /** One entry per (owner, watcher): repeated requests coalesce, so the buffer is bounded by pairs, not by calls. */
  private pending = new Map<string, AccessRequestIntent>();

  constructor(private readonly maxEntries = 100_000) {}

  /** Whether a new pair would not fit: the caller refuses the request (for any handle alike). */
  get full(): boolean {
    return this.pending.size >= this.maxEntries;
  }

  get size(): number {
    return this.pending.size;
  }

  /** False (nothing kept) when a new pair does not fit. */
  submit(request: AccessRequestIntent): boolean {
    const key = keyOf(request);
    const earlier = this.pending.get(key);
    if (!earlier && this.full) return false;
    this.pending.set(key, earlier ? merged(earlier, request) : request);
    return true;
  }

  take(): AccessRequestIntent[] {
    const out = [...this.pending.values()];
    this.pending = new Map();
    return out;
  }

  /**
   * After a failed write: back in, under whatever arrived since (which is
   * newer). Nothing is dropped: every entry was answered already. The two
   * together are at most twice the bound, and `full` refuses new pairs
   * until a write succeeds.
   */
  putBack(requests: readonly AccessRequestIntent[]): void {
    const newer = this.pending;
    this.pending = new Map();
    for (const request of requests) this.pending.set(keyOf(request), request);
    for (const [key, request] of newer) {
      const earlier = this.pending.get(key);
      this.pending.set(key, earlier ? merged(earlier, request) : request);
    }
  }
}

/** What the API needs: hand a request over, and wait until everything handed over is stored. */
export interface AccessRequestQueue {
  readonly full: boolean;
  submit(request: AccessRequestIntent): boolean;
  flush(): Promise<void>;
}
