import type { Log } from '../log.js';
import { loggableDbError } from './db-error.js';
import { LogWindow } from '../log-window.js';

export interface WriteBehindOptions {
  /** While writes keep failing, how often to say so again (the first failure and the recovery are always logged). */
  readonly repeatLogMs?: number;
  readonly now?: () => number;
}

/**
 * Runs a write every interval, never two at once: each flush() queues one
 * run after the current one, so when flush() resolves, everything pending
 * at the time of the call was written (or the returned promise rejects).
 * A slow database does not pile up queued rounds; the next tick catches up.
 *
 * A failed write leaves its items where they were (see state-writer.ts),
 * so while the database is unreachable the writes are held, in memory and
 * coalesced, and every tick retries them. Such an outage is logged when it
 * starts, again every `repeatLogMs` while it lasts, and when it ends: not
 * on every tick (4 per second by default, per writer).
 */
export class WriteBehind {
  private timer: NodeJS.Timeout | undefined;
  private tail: Promise<void> = Promise.resolve();
  private writing = false;
  private failures = 0;
  private failingSince = 0;
  /** The first failure is logged at once, the next at most every repeatLogMs (30 s). */
  private readonly failureLog: LogWindow;
  private readonly now: () => number;

  constructor(
    private readonly name: string,
    private readonly intervalMs: number,
    private readonly write: () => Promise<void>,
    private readonly log: Log,
    options: WriteBehindOptions = {},
  ) {
    this.failureLog = new LogWindow(options.repeatLogMs ?? 30_000);
    this.now = options.now ?? Date.now;
  }

  start(): void {
    this.timer = setInterval(() => {
      // Failures are logged by flush() itself.
      if (!this.writing) void this.flush().catch(() => undefined);
    }, this.intervalMs);
    this.timer.unref();
  }

  /** Whether the last write failed (the database is unreachable or refuses): what it held is still held. */
  get failing(): boolean {
    return this.failures > 0;
  }

  flush(): Promise<void> {
    const next = this.tail
      .catch(() => undefined)
      .then(async () => {
        this.writing = true;
        try {
          await this.write();
          this.succeeded();
        } catch (error) {
          this.failed(error);
          throw error;
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

  private failed(error: unknown): void {
    const now = this.now();
    this.failures += 1;
    if (this.failures === 1) this.failingSince = now;
    if (this.failureLog.take(now) === undefined) return;
    if (this.failures === 1) this.log.error({ writer: this.name, error: loggableDbError(error) }, 'write-behind failed; holding the writes and retrying');
    else this.log.error({ writer: this.name, failures: this.failures, failingMs: now - this.failingSince, error: loggableDbError(error) }, 'write-behind still failing; holding the writes and retrying');
  }

  private succeeded(): void {
    if (this.failures === 0) return;
    this.log.info({ writer: this.name, failures: this.failures, failingMs: this.now() - this.failingSince }, 'write-behind recovered; held writes stored');
    this.failures = 0;
    this.failureLog.reset();
  }
}
