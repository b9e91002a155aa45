import { closeSync, createReadStream, fdatasyncSync, fsyncSync, mkdirSync, openSync, readdirSync, unlinkSync, writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import type { SensorEvent } from '../core/events.js';
import type { Log } from '../core/log.js';
import type { PersistedSignal } from '../core/presence-hub.js';
import { syncSignalsSchema } from '../core/replication.js';
import type { PersistProgress } from '../core/db/state-writer.js';

/**
 * A single process's answer to "acknowledged but not yet written": the
 * write-behind stores an owner's signals up to a second after the broker
 * was told (PUBACK, MQTT 3.1.1 §4.3.2) that the device's message is safe,
 * so a SIGKILL in between would lose it, and the broker would not send it
 * again. Every applied event that will be acknowledged (delivered at QoS 1
 * or 2; QoS 0 is at most once) is therefore appended here, and the file is
 * written before any acknowledgement leaves the process (`sync`, called by
 * the ingest connection before it sends bytes). At start, what the journal
 * holds is applied again; signals merge idempotently, so events that were
 * also stored, or that the broker delivers again, change nothing.
 *
 * The journal holds what the state rows hold (validated events, Wi-Fi names
 * already digested), never raw payloads, and only until the next state
 * write: each write-behind round starts a new segment (`mark`) and deletes
 * the segments it stored (`persisted`).
 *
 * By default written with write(2) only: it survives the process (SIGKILL,
 * a crash, an OOM kill), not the machine losing power, since the kernel
 * may still hold the bytes. With `fsync` (INGEST_JOURNAL_FSYNC=true) every
 * sync also waits for fdatasync(2), and a segment's directory entry is
 * flushed with fsync(2) on the directory before its first line counts as
 * written (a new file's data on disk is of no use if its name is lost):
 * an acknowledgement then means the device's message is on the disk, at
 * the price of one flush per event-loop turn that acknowledges anything,
 * taken on the event loop itself, as Redis's `appendfsync always` does
 * (measured: README, "Ingest journal"). A scale-out group does not use the
 * journal: the other processes hold what a dead one had not stored
 * (core/replication.ts).
 */
const recordSchema = syncSignalsSchema.pick({ owner: true, signals: true }).extend({ v: z.literal(1) });

export interface JournalRecord {
  readonly owner: string;
  readonly signals: readonly PersistedSignal[];
}

const SEGMENT = /^(\d{1,15})\.ndjson$/;

export interface JournalOptions {
  /** Flush every sync to the disk (fdatasync), not only to the kernel: INGEST_JOURNAL_FSYNC. */
  readonly fsync?: boolean;
}

export class IngestJournal implements PersistProgress {
  private pending: string[] = [];
  private fd: number;
  private segment: number;
  /** Writes to the open segment since it was opened. */
  private appended = 0;
  private failures = 0;
  private lastFailureLog = -Infinity;
  private readonly fsync: boolean;
  /** With fsync: the open segment's directory entry is on disk (flushed once, after its first write). */
  private nameOnDisk = false;

  private constructor(
    private readonly dir: string,
    private readonly log: Log,
    segment: number,
    options: JournalOptions,
    /** What earlier runs left, until it has been read through. */
    readonly leftover: Leftover,
  ) {
    this.fsync = options.fsync ?? false;
    this.segment = segment;
    this.fd = this.openSegment(segment);
  }

  /**
   * Opens the journal in `dir`, with what earlier runs left in it: the
   * caller applies that and then writes (which deletes it). The new
   * segment is numbered after the old ones, which are read only when the
   * caller asks, one line at a time: after a long database outage they may
   * hold more than fits in memory at once.
   */
  static open(dir: string, log: Log, options: JournalOptions = {}): { journal: IngestJournal; leftover: Leftover } {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    // With fsync, the journal's own directory entry too (once a start: it
    // may have been made by a run that died before flushing it): a segment
    // flushed into a directory whose name is lost is lost. A failing disk
    // does not stop the start, as it does not stop ingest.
    if (options.fsync) {
      try {
        syncDirectory(dirname(dir));
      } catch (error) {
        log.error({ err: error instanceof Error ? error.message : String(error) }, "could not flush the ingest journal directory's entry");
      }
    }
    const segments = existingSegments(dir);
    const next = segments.length > 0 ? (segments.at(-1) ?? 0) + 1 : 1;
    const leftover = new Leftover(segments.map((segment) => ({ segment, file: join(dir, `${segment}.ndjson`) })));
    return { journal: new IngestJournal(dir, log, next, options, leftover), leftover };
  }

  /**
   * Called synchronously for each applied device message. The line is
   * JSON.stringify of `{v: 1, owner, signals: [{deviceId, event}]}`, put
   * together from its parts rather than from wrapper objects built first:
   * 0.52-0.57 against 0.65-0.71 µs per one-event message (alternated runs),
   * about 1% of what a message costs the service end to end.
   */
  append(ownerId: string, deviceId: string, events: readonly SensorEvent[]): void {
    const signal = `{"deviceId":${JSON.stringify(deviceId)},"event":`;
    let line = `{"v":1,"owner":${JSON.stringify(ownerId)},"signals":[`;
    for (let i = 0; i < events.length; i++) line += `${i === 0 ? '' : ','}${signal}${JSON.stringify(events[i])}}`;
    this.pending.push(`${line}]}`);
  }

  /**
   * Writes what was appended; called before an acknowledgement leaves. One
   * write(2) for everything one read from the broker brought, and with
   * `fsync` one fdatasync(2) after it (and, for a segment's first write,
   * one fsync(2) of the directory that holds its name).
   */
  sync(): void {
    if (this.pending.length === 0) return;
    const text = this.pending.join('\n') + '\n';
    this.pending = [];
    const bytes = Buffer.from(text, 'utf8');
    this.appended += 1;
    try {
      let offset = 0;
      while (offset < bytes.length) offset += writeSync(this.fd, bytes, offset);
      if (this.fsync) {
        fdatasyncSync(this.fd);
        if (!this.nameOnDisk) {
          syncDirectory(this.dir);
          this.nameOnDisk = true;
        }
      }
    } catch (error) {
      // A full or failing disk must not stop ingest: the events are applied
      // in memory and the write-behind stores them as usual; only their
      // protection against a SIGKILL before that write is lost. Counted and
      // logged (at most once a minute) for the operator.
      this.failures += 1;
      const now = Date.now();
      if (now - this.lastFailureLog > 60_000) {
        this.lastFailureLog = now;
        this.log.error({ err: error instanceof Error ? error.message : String(error), failures: this.failures }, 'ingest journal write failed; acknowledged events are protected only by the next state write');
      }
    }
  }

  /** Journal writes that failed since start (a metric). */
  get failureCount(): number {
    return this.failures;
  }

  /** PersistProgress: everything applied so far is in segments up to the returned one. */
  mark(): number {
    this.sync();
    if (this.appended === 0) return this.segment - 1;
    const closed = this.segment;
    closeSync(this.fd);
    this.segment += 1;
    this.appended = 0;
    this.fd = this.openSegment(this.segment);
    return closed;
  }

  /** PersistProgress: segments up to `mark` are stored in the database. */
  persisted(mark: number): void {
    for (const segment of existingSegments(this.dir)) {
      if (segment > mark || segment === this.segment) continue;
      // Never one the replay has not read through: a state write that ran
      // meanwhile stored nothing of it (bin/service.ts starts the writer
      // after the replay; this holds even if something flushes earlier).
      if (this.leftover.holds(segment)) continue;
      try {
        unlinkSync(join(this.dir, `${segment}.ndjson`));
      } catch (error) {
        this.log.warn({ err: error instanceof Error ? error.message : String(error), segment }, 'could not delete a stored journal segment');
      }
    }
  }

  close(): void {
    this.sync();
    closeSync(this.fd);
  }

  private openSegment(segment: number): number {
    this.nameOnDisk = false;
    return openSync(join(this.dir, `${segment}.ndjson`), 'a', 0o600);
  }
}

/**
 * What earlier runs left in the journal: the records of its segments,
 * oldest first, each line read and validated as it is reached. A torn last
 * line (the process died mid-write) or any line that does not validate is
 * skipped and counted.
 */
export class Leftover {
  private skippedLines = 0;
  /** Segments up to this one are still to be read (0: none). */
  private unreadThrough: number;

  constructor(private readonly files: readonly { readonly segment: number; readonly file: string }[]) {
    this.unreadThrough = files.at(-1)?.segment ?? 0;
  }

  /** Whether a segment is one of these and records() has not read through all of them yet. */
  holds(segment: number): boolean {
    return segment <= this.unreadThrough;
  }

  /** Segments left by earlier runs. */
  get segments(): number {
    return this.files.length;
  }

  /** Lines skipped so far by records(). */
  get skipped(): number {
    return this.skippedLines;
  }

  async *records(): AsyncGenerator<JournalRecord> {
    for (const { file } of this.files) {
      const lines = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
      for await (const line of lines) {
        if (line.length === 0) continue;
        const record = parseRecord(line);
        if (record) yield record;
        else this.skippedLines += 1;
      }
    }
    // Read through: a state write from now on may store what was applied, and delete them.
    this.unreadThrough = 0;
  }
}

/** fsync(2) on a directory: the names created in it survive a power loss (POSIX leaves that to the directory, not the file). */
function syncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function existingSegments(dir: string): number[] {
  return readdirSync(dir)
    .map((name) => SEGMENT.exec(name)?.[1])
    .filter((n): n is string => n !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
}

function parseRecord(line: string): JournalRecord | undefined {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return undefined;
  }
  const parsed = recordSchema.safeParse(json);
  return parsed.success ? parsed.data : undefined;
}
