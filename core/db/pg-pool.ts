import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import pg, { type PoolClient, type PoolConfig } from 'pg';
import type { Database } from './connect.js';
import { isQueryReadTimeout } from './db-error.js';
import { registerNamedStatements } from './named-statements.js';
import * as schema from './schema.js';

/**
 * A node-postgres pool behind drizzle, made safe for the failures seen in
 * tests/integration/faults.test.ts and tests/integration/statement-timeout.test.ts:
 * connections that end (a PostgreSQL restart) and servers that stop
 * answering (core/db/statement-timeout.ts). Loaded only with DATABASE_URL.
 */
export interface PgPool {
  readonly db: Database;
  /** Whether a PostgreSQL backend (by process id) is one of this pool's connections now. */
  ownsBackend(processId: number): boolean;
  end(): Promise<void>;
}

export function openPool(config: PoolConfig, onIdleError: ((error: Error) => void) | undefined): PgPool {
  const pool = new pg.Pool(config);
  // An idle client losing its connection (a PostgreSQL restart) emits
  // 'error' on the pool; unhandled, that would kill the process. The next
  // query gets a fresh connection, and the write-behind retries.
  pool.on('error', (error) => onIdleError?.(error));
  // A client checked out of the pool (drizzle's transactions hold one for
  // several statements) has no 'error' listener of the pool's: if its
  // connection ends meanwhile (a PostgreSQL restart), pg emits 'error' on
  // it, and unhandled that kills the process (seen in
  // tests/integration/faults.test.ts). The statement in flight, or the
  // next one, rejects anyway, and the caller (the write-behind) retries;
  // the broken client is dropped from the pool when released. Nothing more
  // to do here, but the event must have a listener.
  //
  // It also notes the backend each connection talks to, by process id: a
  // control-channel notification from one of them announces a change this
  // process made and has applied already (core/db/control-channel.ts).
  const backends = new Set<number>();
  const processIdOf = (client: PoolClient) => (client as unknown as { processID?: number | null }).processID ?? undefined;
  pool.on('connect', (client) => {
    client.on('error', () => undefined);
    const processId = processIdOf(client);
    if (processId !== undefined) backends.add(processId);
  });
  pool.on('remove', (client) => {
    const processId = processIdOf(client);
    if (processId !== undefined) backends.delete(processId);
  });
  // Single statements go through pool.query, which releases the client with
  // the statement's error: a client whose statement got no answer in time
  // is then closed, not reused.
  const db = drizzle({ client: pool, schema });
  // drizzle's transaction() on a pool sends BEGIN before the try/finally
  // that releases the client it checked out: when BEGIN fails because the
  // connection died (a PostgreSQL restart), that client is never released.
  // After `max` such failures the pool has no client left and every query
  // waits for ever (seen in tests/integration/faults.test.ts: pool.end()
  // then hangs too). So transactions check the client out here and always
  // release it; pg-pool discards a client whose connection broke.
  const onClient = new WeakMap<PoolClient, NodePgDatabase<typeof schema>>();
  const transaction: typeof db.transaction = async (run, txConfig) => {
    const client = await pool.connect();
    // A statement that got no answer within query_timeout is still in
    // flight on this connection: released as it is, the next transaction
    // would queue behind it. Closed instead, which also fails drizzle's
    // ROLLBACK at once rather than after a second query_timeout.
    let unanswered: Error | undefined;
    const abandonIfUnanswered = (error: unknown) => {
      if (unanswered !== undefined || !isQueryReadTimeout(error)) return;
      unanswered = error instanceof Error ? error : new Error(String(error));
      void client.end();
    };
    try {
      const single = onClient.get(client) ?? drizzle({ client, schema });
      onClient.set(client, single);
      return await single.transaction(async (tx) => {
        try {
          return await run(tx);
        } catch (error) {
          abandonIfUnanswered(error);
          throw error;
        }
      }, txConfig);
    } catch (error) {
      // BEGIN unanswered (drizzle sends no ROLLBACK then). A COMMIT that got
      // no answer is worse: drizzle has already sent ROLLBACK on this
      // connection and waited for it (a second limit), and the COMMIT may
      // have been applied all the same; the caller sees a failure either
      // way, so memory may lag storage until the next reload or restart.
      abandonIfUnanswered(error);
      throw error;
    } finally {
      // With an error, pg-pool closes the client and forgets it.
      client.release(unanswered);
    }
  };
  Object.assign(db, { transaction });
  // Through pool.query like every single statement, so a statement that got no answer in time closes its client here too.
  registerNamedStatements(db as unknown as Database, async (name, text, values) => (await pool.query({ name, text, values })).rows);
  return { db: db as unknown as Database, ownsBackend: (processId) => backends.has(processId), end: () => pool.end() };
}
