import type { AccessLogBuffer } from '../access-log.js';
import type { AccessRequestBuffer } from '../access-requests.js';
import type { RawEventBuffer } from '../raw-events.js';
import type { PresenceHub } from '../presence-hub.js';
import type { Repository } from './repository.js';

/**
 * What the write-behind writes (see WriteBehind for the scheduling): items
 * taken from memory, written in chunks; if a chunk fails, it and everything
 * after it go back, so the next round retries them and nothing is dropped.
 */
function chunked<T>(take: () => T[], write: (chunk: T[]) => Promise<void>, putBack: (rest: T[]) => void, onBatch: (rows: number) => void, chunkSize: number) {
  return async () => {
    const items = take();
    for (let i = 0; i < items.length; i += chunkSize) {
      const chunk = items.slice(i, i + chunkSize);
      try {
        await write(chunk);
        onBatch(chunk.length);
      } catch (error) {
        putBack(items.slice(i));
        throw error;
      }
    }
  };
}

/**
 * Signals of the owners whose signals changed: coalesced by construction (an
 * owner changed a thousand times is written once), bounded by the number of
 * owners. What storage held beyond the batch (written by another process)
 * is merged back into memory.
 *
 * `progress` is told what was durable: `mark()` before the
 * owners are taken names everything applied so far, and `persisted(mark)`
 * after every chunk was written says all of it is stored.
 */
export interface PersistProgress {
  mark(): number;
  persisted(mark: number): void;
}

/**
 * In a scale-out group (`shared`) several processes write the same owners:
 * each write is then merged with what storage holds. A single process is
 * the only writer and replaces what it wrote before. `progress` is told
 * what became durable: the group's sync protocol, or a single process's
 * ingest journal (ingest/ingest-journal.ts).
 */
export function writeStates(
  hub: PresenceHub,
  repository: Repository,
  onBatch: (rows: number) => void,
  clock: () => number,
  options: {
    readonly progress?: PersistProgress;
    readonly shared: boolean;
    readonly chunkSize?: number;
    /** Devices silent since before this instant are not kept in a merged row (PresenceHub.forgetSilent). */
    readonly forgetBefore?: () => number;
  },
): () => Promise<void> {
  const { progress, shared } = options;
  const write = chunked(
    () => hub.takeDirty(),
    async (chunk) => {
      if (!shared) return repository.replaceStates(chunk);
      const learned = await repository.upsertStates(chunk, options.forgetBefore?.());
      const now = clock();
      for (const state of learned) hub.merge(state.ownerId, state.signals, now);
    },
    (rest) => hub.markDirty(rest.map((d) => d.ownerId)),
    onBatch,
    options.chunkSize ?? 500,
  );
  return async () => {
    const mark = progress?.mark();
    await write();
    if (progress && mark !== undefined) progress.persisted(mark);
  };
}

/** Access-log entries (already coalesced per second by the buffer). */
export function writeAccessLog(buffer: AccessLogBuffer, repository: Repository, onBatch: (rows: number) => void, chunkSize = 1000): () => Promise<void> {
  return chunked(
    () => buffer.take(),
    (chunk) => repository.insertAccessLog(chunk),
    (rest) => buffer.putBack(rest),
    onBatch,
    chunkSize,
  );
}

/** Retained sensor events (only owners who keep them; see core/raw-events.ts). */
export function writeRawEvents(buffer: RawEventBuffer, repository: Repository, onBatch: (rows: number) => void, chunkSize = 1000): () => Promise<void> {
  return chunked(
    () => buffer.take(),
    (chunk) => repository.insertRawEvents(chunk),
    (rest) => buffer.putBack(rest),
    onBatch,
    chunkSize,
  );
}

/** Access requests answered from memory (core/access-requests.ts). */
export function writeAccessRequests(buffer: AccessRequestBuffer, repository: Repository, onBatch: (rows: number) => void, chunkSize = 1000): () => Promise<void> {
  const write = chunked(
    () => buffer.take(),
    (chunk) => repository.recordAccessRequests(chunk),
    (rest) => buffer.putBack(rest),
    onBatch,
    chunkSize,
  );
  return async () => {
    try {
      await write();
    } finally {
      // Written, or what was not is back in the buffer: none in flight now.
      buffer.settled();
    }
  };
}
