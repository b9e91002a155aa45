import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import { tlsErrorText, tlsFailureHint } from '../tls/errors.js';
import { pgClientConfig, type PostgresTarget } from './pg-tls.js';
import type { NodePgDatabase } from 'drizzle-orm/node-postgres';
import type { PoolClient } from 'pg';
import * as schema from './schema.js';

/**
 * Opens the database the configuration names and applies the committed
 * drizzle-kit migrations. The same SQL files serve PGlite and PostgreSQL;
 * drizzle records applied ones, so a second start applies nothing.
 */
export type Database = PgDatabase<PgQueryResultHKT, typeof schema>;

export interface DatabaseHandle {
  readonly db: Database;
  readonly kind: 'embedded' | 'postgres';
  close(): Promise<void>;
}

export type DatabaseTarget = { readonly kind: 'embedded'; readonly dataDir: string } | ({ readonly kind: 'postgres' } & PostgresTarget);

/** `migrations/` at the project root, from both `core/db` and `dist/core/db`. */
export function migrationsFolder(): string {
  const here = fileURLToPath(new URL('.', import.meta.url));
  return here.includes(`${join('dist', 'core', 'db')}`) ? join(here, '..', '..', '..', 'migrations') : join(here, '..', '..', 'migrations');
}

// Any constant works; it only has to be the same in every process.
const MIGRATION_LOCK_ID = 0x70726573; // "pres"

export async function openDatabase(target: DatabaseTarget, onIdleError?: (error: Error) => void): Promise<DatabaseHandle> {
  return target.kind === 'embedded' ? openEmbedded(target.dataDir) : openPostgres(target, onIdleError);
}

async function openEmbedded(dataDir: string): Promise<DatabaseHandle> {
  // Loaded on demand: the wasm build costs ~0.5 s and ~700 MB only when used.
  const { PGlite } = await import('@electric-sql/pglite');
  const { drizzle } = await import('drizzle-orm/pglite');
  const { migrate } = await import('drizzle-orm/pglite/migrator');
  const dir = join(dataDir, 'pgdata');
  await mkdir(dir, { recursive: true });
  const client = await PGlite.create(dir);
  const db = drizzle({ client, schema });
  try {
    await migrate(db, { migrationsFolder: migrationsFolder() });
  } catch (error) {
    await client.close();
    throw error;
  }
  return { db: db as unknown as Database, kind: 'embedded', close: () => client.close() };
}

async function openPostgres(target: PostgresTarget, onIdleError: ((error: Error) => void) | undefined): Promise<DatabaseHandle> {
  const pg = await import('pg');
  const { drizzle } = await import('drizzle-orm/node-postgres');
  const { migrate } = await import('drizzle-orm/node-postgres/migrator');

  // Several service processes may start at once: one migrates, the others
  // wait on a session-level advisory lock and then find nothing to do.
  const migrator = new pg.default.Client(pgClientConfig(target));
  await migrator.connect().catch((error: unknown) => {
    // The first connection of a start: say which setting to check when TLS is what failed.
    const hint = tlsFailureHint(error, { ca: 'DATABASE_CA_FILE', cert: 'DATABASE_CERT_FILE/DATABASE_KEY_FILE', host: 'DATABASE_URL' });
    throw hint ? new Error(`cannot connect to PostgreSQL: ${tlsErrorText(error)} (${hint})`, { cause: error }) : error;
  });
  try {
    await migrator.query('select pg_advisory_lock($1)', [MIGRATION_LOCK_ID]);
    await migrate(drizzle({ client: migrator, schema }), { migrationsFolder: migrationsFolder() });
  } finally {
    await migrator.end().catch(() => undefined);
  }

  // A connection attempt that gets no answer (a dropped route, not a
  // refusal) fails after 10 s, so the write-behind retries instead of
  // waiting on the kernel's TCP timeout. Queries have no timeout: an export
  // may rightly run long.
  const pool = new pg.default.Pool({ ...pgClientConfig(target), max: 10, connectionTimeoutMillis: 10_000 });
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
  pool.on('connect', (client) => client.on('error', () => undefined));
  const db = drizzle({ client: pool, schema });
  // drizzle's transaction() on a pool sends BEGIN before the try/finally
  // that releases the client it checked out: when BEGIN fails because the
  // connection died (a PostgreSQL restart), that client is never released.
  // After `max` such failures the pool has no client left and every query
  // waits for ever (seen in tests/integration/faults.test.ts: pool.end()
  // then hangs too). So transactions check the client out here and always
  // release it; pg-pool discards a client whose connection broke.
  const onClient = new WeakMap<PoolClient, NodePgDatabase<typeof schema>>();
  const transaction: typeof db.transaction = async (run, config) => {
    const client = await pool.connect();
    try {
      const single = onClient.get(client) ?? drizzle({ client, schema });
      onClient.set(client, single);
      return await single.transaction(run, config);
    } finally {
      client.release();
    }
  };
  Object.assign(db, { transaction });
  return { db: db as unknown as Database, kind: 'postgres', close: () => pool.end() };
}
