import type { AccessLogBuffer } from '../access-log.js';
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
 * owners.
 */
export function writeStates(hub: PresenceHub, repository: Repository, onBatch: (rows: number) => void, chunkSize = 500): () => Promise<void> {
  return chunked(
    () => hub.takeDirty(),
    (chunk) => repository.upsertStates(chunk),
    (rest) => hub.markDirty(rest.map((d) => d.ownerId)),
    onBatch,
    chunkSize,
  );
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
