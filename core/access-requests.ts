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
  /** Taken by the write running now: they count against the bound until written or put back. */
  private inFlight = 0;

  constructor(private readonly maxEntries = 100_000) {}

  /** Whether a new pair would not fit: the caller refuses the request (for any handle alike). */
  get full(): boolean {
    return this.pending.size + this.inFlight >= this.maxEntries;
  }

  /** Waiting and being written. */
  get size(): number {
    return this.pending.size + this.inFlight;
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
    this.inFlight = out.length;
    return out;
  }

  /** The write that took them ended: what it did not write was put back. */
  settled(): void {
    this.inFlight = 0;
  }

  /** An erased owner's requests (the watchers' messages with them) are not kept for a write that would skip them. */
  forgetOwner(ownerId: string): void {
    for (const [key, request] of this.pending) if (request.ownerId === ownerId) this.pending.delete(key);
  }

  /**
   * After a failed write: back in, under whatever arrived since (which is
   * newer). Nothing is dropped: every entry was answered already. What was
   * taken counted against the bound while it was written, so the two
   * together stay within it.
   */
  putBack(requests: readonly AccessRequestIntent[]): void {
    this.inFlight = 0;
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
  /** An erased owner: drop what waits for them. */
  forgetOwner(ownerId: string): void;
}
