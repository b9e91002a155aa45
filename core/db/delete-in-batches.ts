import type { SQL } from 'drizzle-orm';
import type { Database } from './connect.js';

/**
 * Runs `remove(batch)` (a statement deleting at most `batch` rows and
 * selecting how many as `n`) until it deletes fewer than `batch`: a purge
 * of a large backlog (a lowered retention) never becomes one huge
 * transaction. Returns how many rows went.
 */
export async function deleteInBatches(db: Database, remove: (batch: number) => SQL, batch = 10_000): Promise<number> {
  let total = 0;
  for (;;) {
    const result = await db.execute(remove(batch));
    const n = (result as unknown as { rows: { n: number }[] }).rows[0]?.n ?? 0;
    total += n;
    if (n < batch) return total;
  }
}
