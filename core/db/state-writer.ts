import type { AccessLogBuffer } from '../access-log.js';
import type { PresenceHub } from '../presence-hub.js';
import type { Repository } from './repository.js';

/**
 * What the write-behind writes (see WriteBehind for the scheduling).
 *
 * Signals: the owners whose signals changed, in one statement per chunk.
 * Coalesced by construction (an owner changed a thousand times is written
 * once) and bounded by the number of owners. A failed write puts the owners
 * back so the next round retries them; nothing is dropped.
 */
export function writeStates(hub: PresenceHub, repository: Repository, onBatch: (rows: number) => void, chunkSize = 500): () => Promise<void> {
  return async () => {
    const dirty = hub.takeDirty();
    for (let i = 0; i < dirty.length; i += chunkSize) {
      const chunk = dirty.slice(i, i + chunkSize);
      try {
        await repository.upsertStates(chunk);
        onBatch(chunk.length);
      } catch (error) {
        hub.markDirty(dirty.slice(i).map((d) => d.ownerId));
        throw error;
      }
    }
  };
}

/** Access-log entries, in chunks; a failed write puts them back. */
export function writeAccessLog(buffer: AccessLogBuffer, repository: Repository, onBatch: (rows: number) => void, chunkSize = 1000): () => Promise<void> {
  return async () => {
    const entries = buffer.take();
    for (let i = 0; i < entries.length; i += chunkSize) {
      const chunk = entries.slice(i, i + chunkSize);
      try {
        await repository.insertAccessLog(chunk);
        onBatch(chunk.length);
      } catch (error) {
        buffer.putBack(entries.slice(i));
        throw error;
      }
    }
  };
}
