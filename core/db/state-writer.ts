import type { Log } from '../log.js';
import type { PresenceHub } from '../presence-hub.js';
import type { Repository } from './repository.js';

/**
 * Write-behind persistence of signals: every interval, the owners whose
 * signals changed are written in one statement per chunk. Coalesced by
 * construction (an owner changed a thousand times is written once) and
 * bounded by the number of owners. A failed write puts the owners back so the
 * next round retries them; nothing is dropped.
 *
 * Writes never overlap: each flush() queues one write after the current one,
 * so when flush() resolves, everything dirty at the time of the call is
 * written (or the returned promise rejects).
 */
export class StateWriter {
  private timer: NodeJS.Timeout | undefined;
  private tail: Promise<void> = Promise.resolve();
  private writing = false;

  constructor(
    private readonly hub: PresenceHub,
    private readonly repository: Repository,
    private readonly intervalMs: number,
    private readonly log: Log,
    private readonly chunkSize = 500,
    private readonly onBatch: (rows: number) => void = () => undefined,
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      // A slow database must not pile up queued rounds; the next tick catches up.
      if (!this.writing) void this.flush().catch(() => undefined);
    }, this.intervalMs);
    this.timer.unref();
  }

  flush(): Promise<void> {
    const next = this.tail.catch(() => undefined).then(() => this.writeOnce());
    this.tail = next;
    return next;
  }

  /** Stops the timer and writes what is left; rejects if that last write fails. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.flush();
  }

  private async writeOnce(): Promise<void> {
    this.writing = true;
    const dirty = this.hub.takeDirty();
    try {
      for (let i = 0; i < dirty.length; i += this.chunkSize) {
        const chunk = dirty.slice(i, i + this.chunkSize);
        try {
          await this.repository.upsertStates(chunk);
          this.onBatch(chunk.length);
        } catch (error) {
          this.hub.markDirty(dirty.slice(i).map((d) => d.ownerId));
          this.log.error({ err: error, owners: dirty.length - i }, 'presence state write failed; will retry');
          throw error;
        }
      }
    } finally {
      this.writing = false;
    }
  }
}
