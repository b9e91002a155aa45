import { sql } from 'drizzle-orm';
import { connectAsync } from 'mqtt';
import pg from 'pg';
import t from 'tap';
import { openDatabase } from '../../core/db/connect.js';
import { isDatabaseUnavailable, isQueryReadTimeout, loggableDbError } from '../../core/db/db-error.js';
import { CLIENT_MARGIN_MS } from '../../core/db/statement-timeout.js';
import { INGEST_ACCEPTED } from '../../ingest/ingest-pipeline.js';
import { createTestDatabase, waitFor } from '../helpers/env.js';
import { startFreezingProxy } from '../helpers/freezing-proxy.js';
import { addWatcher, provision, startTestService, testConfig } from '../helpers/service.js';

/**
 * DATABASE_STATEMENT_TIMEOUT_MS (core/db/statement-timeout.ts): a
 * PostgreSQL that accepts connections but stalls makes statements fail
 * after the limit instead of waiting for ever, the write-behind holds what
 * it could not write and stores it once the stall ends, HTTP answers 503
 * `unavailable`, and the pool is never left without clients.
 *
 * The stall is real: a second session takes ACCESS EXCLUSIVE locks, as an
 * operator's forgotten transaction would, and holds them while the
 * service works. A server that answers nothing at all is a proxy that
 * stops forwarding (tests/helpers/freezing-proxy.ts).
 */
const LIMIT_MS = 300;
const WRITE_FAILURES = 'presence_write_behind_failures_total';

/** A second session holding ACCESS EXCLUSIVE locks on `tables` until release(). */
async function lockTables(url: string, tables: readonly string[]) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query('begin');
  await client.query(`lock table ${tables.join(', ')} in access exclusive mode`);
  return {
    /** Reads inside the locking transaction (nobody else can now). */
    query: (text: string, values: unknown[]) => client.query(text, values),
    release: async () => {
      await client.query('rollback');
      await client.end();
    },
  };
}

t.test('a stalled PostgreSQL: writes fail after the limit, are held, and land once the stall ends', async (t) => {
  const databaseUrl = await createTestDatabase(t);
  const service = await startTestService(t, await testConfig(t, { DATABASE_URL: databaseUrl, DATABASE_STATEMENT_TIMEOUT_MS: String(LIMIT_MS) }));
  const { owner, device, deviceToken } = await provision(service, 'alice');
  const bob = await addWatcher(service, 'Bob');
  // Consent changes are serialized per owner: a burst across owners is what
  // asks the pool for more clients than it has.
  const others = Array.from({ length: 15 }, (_, i) => `owner${i}`);
  for (const handle of others) await service.api('POST', '/v1/admin/owners', { token: service.adminToken, body: { handle } });
  const mqtt = await connectAsync(service.mqttUrl, { username: device.id, password: deviceToken, clientId: device.id });
  t.teardown(() => mqtt.endAsync());

  const lock = await lockTables(databaseUrl, ['presence_state', 'consent_rules']);
  let locked = true;
  t.teardown(() => (locked ? lock.release() : undefined));

  // Applied in memory at once; its write waits behind the lock.
  const accepted = service.metrics.value(INGEST_ACCEPTED);
  await mqtt.publishAsync(device.topic, JSON.stringify({ kind: 'call', at: new Date().toISOString(), state: 'in-call' }), { qos: 1 });
  await waitFor(() => service.metrics.value(INGEST_ACCEPTED) > accepted, 'the event to be applied');

  // The write-behind, through its real path (the state writer's statement on the pool).
  const failures = service.metrics.value(WRITE_FAILURES, { writer: 'presence_state' });
  const started = Date.now();
  const error: unknown = await service.flush().then(
    () => undefined,
    (e: unknown) => e,
  );
  const elapsed = Date.now() - started;
  t.ok(error, 'the flush failed rather than waiting for the lock');
  t.equal(loggableDbError(error).code, '57014', "cancelled by the server's statement_timeout (query_canceled)");
  t.ok(isDatabaseUnavailable(error), 'classified as an unavailable database');
  t.ok(elapsed < 5000, `within a few limits, not for ever (${elapsed} ms)`);
  t.ok(service.metrics.value(WRITE_FAILURES, { writer: 'presence_state' }) > failures, 'counted as a failed write-behind round');
  t.ok(service.metrics.value('presence_write_behind_failing') >= 1, 'the state writer reports itself failing');
  const stored = await lock.query('select signals from presence_state where owner_id = $1', [owner.id]);
  t.equal(stored.rowCount, 0, 'nothing of alice stored yet');

  // HTTP: a consent change answers 503 `unavailable`, as for a database that is down.
  const rule = (handle = 'alice') =>
    service.api('POST', `/v1/admin/owners/${handle}/rules`, {
      token: service.adminToken,
      body: { conditions: { identity: { watchers: [bob.id] } }, actions: { subHandling: 'allow' }, transformations: { availability: true } },
    });
  const answer = await rule();
  t.equal(answer.status, 503);
  t.equal(answer.headers.get('retry-after'), '2');
  t.match(await answer.json(), { code: 'unavailable' });

  // Three times the pool's clients, half of them at once, while the
  // write-behind keeps retrying beside them: every one fails in bounded
  // time (without the limit, they would hold all ten clients for as long
  // as the lock is held)...
  const burstStarted = Date.now();
  const burst = await Promise.all([...others, ...others].map((handle) => rule(handle).then((r) => r.status)));
  const burstMs = Date.now() - burstStarted;
  t.same(new Set(burst), new Set([503]), `all ${burst.length} requests of the burst answered 503`);
  t.ok(burstMs < 5000, `the burst drained (${burstMs} ms)`);
  // ...and the pool is not left exhausted: a statement on an unlocked table
  // still gets a client at once, while the lock is still held.
  const watcher = await service.api('POST', '/v1/admin/watchers', { token: service.adminToken, body: { kind: 'person', name: 'Vera' } });
  t.equal(watcher.status, 201, 'other statements still run');

  await lock.release();
  locked = false;
  // No flush() here: the write-behind's own retries store what it held.
  const row = await waitFor(
    async () => {
      const client = new pg.Client({ connectionString: databaseUrl });
      await client.connect();
      try {
        const result = await client.query<{ signals: { deviceId: string }[] }>('select signals from presence_state where owner_id = $1', [owner.id]);
        return result.rows[0]?.signals.some((s) => s.deviceId === device.id) ? result.rows[0] : undefined;
      } finally {
        await client.end();
      }
    },
    "alice's held signal to be stored",
  );
  t.ok(row, 'the held write landed after the stall');
  await waitFor(() => service.metrics.value('presence_write_behind_failing') === 0, 'the writer to recover');
  t.equal((await rule()).status, 201, 'consent changes work again');
});

t.test('erasure is exempt: it may wait past the limit (an owner with a long history takes long to erase)', async (t) => {
  const databaseUrl = await createTestDatabase(t);
  const service = await startTestService(t, await testConfig(t, { DATABASE_URL: databaseUrl, DATABASE_STATEMENT_TIMEOUT_MS: String(LIMIT_MS) }));
  await provision(service, 'carol');
  // The cascade reaches access_log: the erasure waits there.
  const lock = await lockTables(databaseUrl, ['access_log']);
  const HOLD_MS = 4 * LIMIT_MS;
  const started = Date.now();
  const erased = service.api('DELETE', '/v1/admin/owners/carol?confirm=carol', { token: service.adminToken });
  await new Promise((resolve) => setTimeout(resolve, HOLD_MS));
  await lock.release();
  const answer = await erased;
  const elapsed = Date.now() - started;
  t.equal(answer.status, 204, 'erased');
  t.ok(elapsed >= HOLD_MS, `it waited for the lock, past the ${LIMIT_MS} ms limit (${elapsed} ms)`);
});

t.test('the pool and the long pool, directly', async (t) => {
  const url = await createTestDatabase(t);
  const database = await openDatabase({ kind: 'postgres', url, statementTimeoutMs: LIMIT_MS }, () => undefined);
  let closed = false;
  t.teardown(() => (closed ? undefined : database.close()));
  const sleep = sql`select pg_sleep(${(3 * LIMIT_MS) / 1000})`;

  const single = await database.db.execute(sleep).then(() => undefined, (e: unknown) => e);
  t.equal(loggableDbError(single).code, '57014', 'a statement past the limit is cancelled');
  const inTransaction = await database.db
    .transaction(async (tx) => {
      await tx.execute(sql`select 1`);
      await tx.execute(sleep);
    })
    .then(() => undefined, (e: unknown) => e);
  t.equal(loggableDbError(inTransaction).code, '57014', 'in a transaction too');
  await database.long.execute(sleep);
  t.pass('the long pool lets the same statement finish');

  // A cancelled statement leaves its connection usable: more transactions
  // than the pool has clients all commit.
  const results = await Promise.all(Array.from({ length: 25 }, () => database.db.transaction(async (tx) => tx.execute(sql`select 1 as one`))));
  t.equal(results.length, 25);
  // pool.end() waits for every client checked out: a leaked one never comes back.
  const ended = await Promise.race([database.close().then(() => true), new Promise<false>((resolve) => setTimeout(() => resolve(false), 5000))]);
  closed = true;
  t.ok(ended, 'every client went back to the pools');
});

t.test('a server that answers nothing: the client gives up, and closes that connection instead of reusing it', async (t) => {
  const url = new URL(await createTestDatabase(t));
  const proxy = await startFreezingProxy({ host: url.hostname, port: Number(url.port || 5432) });
  t.teardown(() => proxy.close());
  url.host = `127.0.0.1:${proxy.port}`;
  const database = await openDatabase({ kind: 'postgres', url: url.toString(), statementTimeoutMs: LIMIT_MS }, () => undefined);
  let closed = false;
  t.teardown(() => (closed ? undefined : database.close()));
  const clientLimitMs = LIMIT_MS + CLIENT_MARGIN_MS;

  // One client in the pool, idle; then the server goes silent on it.
  await database.db.execute(sql`select 1`);
  proxy.freeze();
  const opened = proxy.opened;
  let started = Date.now();
  const single = await database.db.execute(sql`select 1`).then(() => undefined, (e: unknown) => e);
  let elapsed = Date.now() - started;
  t.ok(isQueryReadTimeout(single), 'the statement failed with a read timeout');
  t.ok(isDatabaseUnavailable(single), 'classified as an unavailable database');
  t.ok(elapsed >= clientLimitMs - 50 && elapsed < clientLimitMs + 2000, `after the client-side limit (${elapsed} ms)`);
  // Reused, the silent client (the only idle one) would take this statement and time out again.
  started = Date.now();
  await database.db.execute(sql`select 1`);
  t.ok(Date.now() - started < 2000, 'the next statement runs at once');
  t.ok(proxy.opened > opened, 'on a new connection: the silent one was closed');

  // In a transaction: the statement that gets no answer closes the
  // connection, so drizzle's ROLLBACK fails at once instead of waiting out
  // a second limit behind it, and the client is not put back.
  started = Date.now();
  const inTransaction = await database.db
    .transaction(async (tx) => {
      await tx.execute(sql`select 1`);
      proxy.freeze();
      await tx.execute(sql`select 2`);
    })
    .then(() => undefined, (e: unknown) => e);
  elapsed = Date.now() - started;
  t.ok(inTransaction && isDatabaseUnavailable(inTransaction), 'the transaction failed as with an unavailable database');
  t.ok(elapsed >= clientLimitMs - 50 && elapsed < 2 * clientLimitMs - 1000, `after one client-side limit, not two (${elapsed} ms)`);
  const before = proxy.opened;
  started = Date.now();
  await database.db.transaction(async (tx) => tx.execute(sql`select 1`));
  t.ok(Date.now() - started < 2000, 'the next transaction runs at once');
  t.ok(proxy.opened > before, 'on a new connection');

  const ended = await Promise.race([database.close().then(() => true), new Promise<false>((resolve) => setTimeout(() => resolve(false), 5000))]);
  closed = true;
  t.ok(ended, 'the pools close: no client was leaked');
});
