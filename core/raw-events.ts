import type { SensorEvent } from './events.js';

/**
 * Sensor events of owners who turned retention on (settings
 * keepRawEventsDays), in memory until the write-behind stores them. The
 * events are the validated, sanitized ones (a Wi-Fi name is a digest by
 * now): "raw" means each event as it came, not the payload bytes, which
 * are never kept (privacy invariant 4). Bounded: past maxEvents, events are
 * counted as dropped rather than growing memory without limit; presence
 * itself never depends on them.
 */
export interface RawEvent {
  readonly ownerId: string;
  readonly deviceId: string;
  /** ms since the epoch, when the service applied it. */
  readonly receivedAt: number;
  readonly event: SensorEvent;
}

export class RawEventBuffer {
  private pending: RawEvent[] = [];
  private droppedTotal = 0;

  constructor(private readonly maxEvents = 100_000) {}

  record(ownerId: string, deviceId: string, events: readonly SensorEvent[], receivedAt: number): void {
    for (const event of events) {
      if (this.pending.length >= this.maxEvents) {
        this.droppedTotal += 1;
        continue;
      }
      this.pending.push({ ownerId, deviceId, receivedAt, event });
    }
  }

  take(): RawEvent[] {
    const out = this.pending;
    this.pending = [];
    return out;
  }

  /** After a failed write: back at the front, as far as there is room. */
  putBack(events: readonly RawEvent[]): void {
    const room = Math.max(0, this.maxEvents - this.pending.length);
    this.droppedTotal += Math.max(0, events.length - room);
    this.pending = [...events.slice(0, room), ...this.pending];
  }

  /** Forgets what is pending for an owner (their data was erased, or retention turned off). */
  forget(ownerId: string): void {
    this.pending = this.pending.filter((e) => e.ownerId !== ownerId);
  }

  get size(): number {
    return this.pending.length;
  }

  get dropped(): number {
    return this.droppedTotal;
  }
}
