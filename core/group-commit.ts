import { AppError } from './errors.js';

/**
 * Group commit: requests that must be durable before they are answered
 * (an RFC 3903 PUBLISH is acknowledged only once stored) are queued and
 * written together, one batch in flight at a time. While a batch is being
 * written, the next one fills up; it is written as soon as the previous one
 * ends. One request alone waits for one round trip, as before; many at once
 * share one statement and one commit (measured: a single-row transaction
 * costs about as much as 500 rows in one statement).
 *
 * The write gets a batch and returns one result per item, in order. If it
 * throws, every item of that batch is rejected with the error and nothing
 * else is affected: the next batch is written as usual.
 *
 * Bounded: more than `maxQueued` items waiting is refused at once with
 * `unavailable` (503), so a slow database turns into fast refusals (back
 * pressure), not into an unbounded queue of pending requests.
 *
 * Items with the same key never share a batch: the later one waits for the
 * next, so a batch never touches one row twice.
 */
export interface GroupCommitOptions {
  readonly maxBatch: number;
  readonly maxQueued: number;
}

interface Pending<T, R> {
  readonly item: T;
  readonly key: string;
  readonly resolve: (result: R) => void;
  readonly reject: (error: unknown) => void;
}

export class GroupCommit<T, R> {
  private queue: Pending<T, R>[] = [];
  private writing = false;
  private scheduled = false;
  private batches = 0;
  private items = 0;

  constructor(
    private readonly write: (batch: readonly T[]) => Promise<readonly R[]>,
    private readonly keyOf: (item: T) => string,
    private readonly options: GroupCommitOptions,
    private readonly onBatch: (size: number) => void = () => undefined,
  ) {}

  submit(item: T): Promise<R> {
    if (this.queue.length >= this.options.maxQueued) {
      return Promise.reject(new AppError('unavailable', 'Too many writes are waiting for the database; retry shortly.'));
    }
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, key: this.keyOf(item), resolve, reject });
      this.schedule();
    });
  }

  /** Items waiting, not counting the batch being written. */
  get depth(): number {
    return this.queue.length;
  }

  /** Batches written and items in them, since start. */
  get stats(): { batches: number; items: number } {
    return { batches: this.batches, items: this.items };
  }

  /**
   * setImmediate, not a microtask: every request whose bytes arrived in the
   * same event-loop turn gets to join the batch first.
   */
  private schedule(): void {
    if (this.writing || this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.drain();
    });
  }

  private async drain(): Promise<void> {
    if (this.writing) return;
    this.writing = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.takeBatch();
        await this.writeBatch(batch);
      }
    } finally {
      this.writing = false;
    }
  }

  private takeBatch(): Pending<T, R>[] {
    const batch: Pending<T, R>[] = [];
    const keys = new Set<string>();
    const rest: Pending<T, R>[] = [];
    for (const pending of this.queue) {
      if (batch.length < this.options.maxBatch && !keys.has(pending.key)) {
        keys.add(pending.key);
        batch.push(pending);
      } else {
        rest.push(pending);
      }
    }
    this.queue = rest;
    return batch;
  }

  private async writeBatch(batch: readonly Pending<T, R>[]): Promise<void> {
    let results: readonly R[];
    try {
      results = await this.write(batch.map((p) => p.item));
      if (results.length !== batch.length) throw new Error(`group commit: ${results.length} results for ${batch.length} items`);
    } catch (error) {
      for (const pending of batch) pending.reject(error);
      return;
    }
    this.batches += 1;
    this.items += batch.length;
    this.onBatch(batch.length);
    batch.forEach((pending, i) => pending.resolve(results[i] as R));
  }
}
