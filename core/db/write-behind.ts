import type { Log } from '../log.js';

/**
 * Runs a write every interval, never two at once: each flush() queues one
 * run after the current one, so when flush() resolves, everything pending
 * at the time of the call was written (or the returned promise rejects).
 * A slow database does not pile up queued rounds; the next tick catches up.
 */
export class WriteBehind {
  private timer: NodeJS.Timeout | undefined;
  private tail: Promise<void> = Promise.resolve();
  private writing = false;

  constructor(
    private readonly name: string,
    private readonly intervalMs: number,
    private readonly write: () => Promise<void>,
    private readonly log: Log,
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      if (!this.writing) void this.flush().catch((err: unknown) => this.log.error({ err, writer: this.name }, 'write-behind failed; will retry'));
    }, this.intervalMs);
    this.timer.unref();
  }

  flush(): Promise<void> {
    const next = this.tail
      .catch(() => undefined)
      .then(async () => {
        this.writing = true;
        try {
          await this.write();
        } finally {
          this.writing = false;
        }
      });
    this.tail = next;
    return next;
  }

  /** Stops the timer and writes what is left; rejects if that last write fails. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.flush();
  }
}
