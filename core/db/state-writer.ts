import type { Log } from '../log.js';
import type { PresenceHub } from '../presence-hub.js';
import type { Repository } from './repository.js';

/**
 * Write-behind persistence of signals: every interval, the owners whose
 * signals changed are written in one statement per chunk. Coalesced by
 * construction (an owner changed a thousand times is written once) and
 * bounded by the number of owners. A failed write puts the owners back so the
 * next round retries them; nothing is dropped.
 */
export class StateWriter {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly hub: PresenceHub,
    private readonly repository: Repository,
    private readonly intervalMs: number,
    private readonly log: Log,
    private readonly chunkSize = 500,
    private readonly onBatch: (rows: number) => void = () => undefined,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.flush().catch(() => undefined), this.intervalMs);
    this.timer.unref();
  }

  /** Writes everything dirty now; concurrent calls share one run. */
  flush(): Promise<void> {
    if (!this.running) {
      this.running = this.writeOnce().finally(() => {
        this.running = undefined;
      });
    }
    return this.running;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running;
    await this.flush();
  }

  private async writeOnce(): Promise<void> {
    const dirty = this.hub.takeDirty();
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
  }
}
