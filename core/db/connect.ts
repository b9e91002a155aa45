import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import { tlsErrorText, tlsFailureHint } from '../tls/errors.js';
import { pgClientConfig, type PostgresTarget } from './pg-tls.js';
import { DEFAULT_DATABASE_STATEMENT_TIMEOUT_MS } from '../config.js';
import { LONG_STATEMENT_TIMEOUT_MS, timeoutSettings } from './statement-timeout.js';
import * as schema from './schema.js';

/**
 * Opens the database the configuration names and applies the committed
 * drizzle-kit migrations. The same SQL files serve PGlite and PostgreSQL;
 * drizzle records applied ones, so a second start applies nothing.
 */
export type Database = PgDatabase<PgQueryResultHKT, typeof schema>;

export interface DatabaseHandle {
  readonly db: Database;
  /**
   * The same database, for statements whose running time grows with what
   * is stored rather than with one request: PostgreSQL runs them under
   * LONG_STATEMENT_TIMEOUT_MS instead of DATABASE_STATEMENT_TIMEOUT_MS
   * (core/db/statement-timeout.ts). Embedded: `db`.
   */
  readonly long: Database;
  readonly kind: 'embedded' | 'postgres';
  /** PostgreSQL: whether a backend (by process id) is one of this handle's connections now. Embedded: never. */
  ownsBackend(processId: number): boolean;
  close(): Promise<void>;
}

export type DatabaseTarget =
  | { readonly kind: 'embedded'; readonly dataDir: string }
  | ({
      readonly kind: 'postgres';
      /** DATABASE_STATEMENT_TIMEOUT_MS; unset (tests, benchmarks): DEFAULT_DATABASE_STATEMENT_TIMEOUT_MS. */
      readonly statementTimeoutMs?: number;
    } & PostgresTarget);

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
  // PGlite runs one statement at a time inside this process: nothing else can hold its locks, and no timeout applies.
  return { db: db as unknown as Database, long: db as unknown as Database, kind: 'embedded', ownsBackend: () => false, close: () => client.close() };
}

async function openPostgres(target: PostgresTarget & { readonly statementTimeoutMs?: number }, onIdleError: ((error: Error) => void) | undefined): Promise<DatabaseHandle> {
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
  // waiting on the kernel's TCP timeout; so does waiting for a free client.
  // Statements are bounded too (core/db/statement-timeout.ts). The service's
  // own statements are small: batches, single rows, pages of 1000. The
  // owner's export runs long as a whole, but as one page of at most 1000
  // rows per statement, holding no connection between pages, so it stays
  // here. So does the start-up snapshot (one statement per table): a
  // deployment too large for the limit fails to start, loudly, and the
  // operator raises DATABASE_STATEMENT_TIMEOUT_MS. The migrations above are
  // exempt by construction (their own client, no limit): they wait on the
  // advisory lock while another process migrates and may rewrite whole
  // tables.
  const { openPool } = await import('./pg-pool.js');
  const connection = { ...pgClientConfig(target), connectionTimeoutMillis: 10_000 };
  const main = openPool({ ...connection, ...timeoutSettings(target.statementTimeoutMs ?? DEFAULT_DATABASE_STATEMENT_TIMEOUT_MS), max: 10 }, onIdleError);
  // Statements whose running time grows with what is stored (erasure, the
  // retention purges: core/db/repository.ts) get a pool of their own with
  // a far longer limit: cut at the ordinary one, they would fail on every
  // retry; and however long they run, the main pool keeps its ten clients.
  const long = openPool({ ...connection, ...timeoutSettings(LONG_STATEMENT_TIMEOUT_MS), max: 3 }, onIdleError);
  return {
    db: main.db,
    long: long.db,
    kind: 'postgres',
    ownsBackend: (processId) => main.ownsBackend(processId) || long.ownsBackend(processId),
    close: async () => {
      await Promise.all([main.end(), long.end()]);
    },
  };
}
