import { sql } from 'drizzle-orm';
import pg from 'pg';
import t from 'tap';
import { openDatabase } from '../../core/db/connect.js';
import { openPool } from '../../core/db/pg-pool.js';
import { Repository } from '../../core/db/repository.js';
import { createTestDatabase, PG_ADMIN_URL, tempDir } from '../helpers/env.js';

/**
 * The hot batch writes run as named prepared statements on node-postgres
 * (core/db/named-statements.ts): checked on PostgreSQL's own list of the
 * session's prepared statements, on a pool of one connection so the check
 * sees the connection the writes used. A connection that dies (a restart,
 * an operator's pg_terminate_backend) takes its prepared statements with
 * it; the next write must prepare again on the new connection, not fail.
 */
const url = await createTestDatabase(t);
// Migrations, through the service's own path.
await (await openDatabase({ kind: 'postgres', url })).close();

const pool = openPool({ connectionString: url, max: 1 }, () => undefined);
t.teardown(() => pool.end());
const repository = new Repository(pool.db);
const prepared = async () =>
  ((await pool.db.execute(sql`select name from pg_prepared_statements order by name`)) as unknown as { rows: { name: string }[] }).rows.map((r) => r.name);
const owner = crypto.randomUUID();
await repository.insertOwner({ id: owner, handle: 'named', displayName: undefined });
const publication = (etag: string) => ({ source: 'publication:1', availability: 'busy' as const, activities: ['meeting' as const], etag, expiresAt: Date.now() + 600_000 });

t.test('publication, state and access-log batches are prepared once per connection', async (t) => {
  t.same(await prepared(), [], 'nothing prepared yet');
  t.same(await repository.writePublications([{ op: 'create', ownerId: owner, source: 'publication:1', publication: publication('t1') }]), [true]);
  t.same(await repository.writePublications([{ op: 'update', ownerId: owner, source: 'publication:1', expectEtag: 't1', publication: publication('t2') }]), [true], 'the same statement, reused');
  t.same(await repository.writePublications([{ op: 'update', ownerId: owner, source: 'publication:1', expectEtag: 't1', publication: publication('t3') }]), [false], 'a spent tag is still refused');
  await repository.replaceStates([{ ownerId: owner, version: 1, signals: [] }]);
  await repository.insertAccessLog([{ ownerId: owner, watcherId: crypto.randomUUID(), at: Date.now(), action: 'read', outcome: 'withheld', fields: [], count: 1 }]);
  t.same(await prepared(), ['insert_access_log', 'replace_states', 'write_publications']);
  const snapshot = await repository.loadSnapshot(owner);
  t.equal(snapshot.overrides[0]?.override.etag, 't2', 'what the prepared statement wrote is stored');
  const states = ((await pool.db.execute(sql`select version from presence_state where owner_id = ${owner}::uuid`)) as unknown as { rows: unknown[] }).rows;
  t.same(states, [{ version: 1 }], 'the state row too');
});

t.test('a connection killed under the pool: the next write prepares again on the new one', async (t) => {
  const [pid] = ((await pool.db.execute(sql`select pg_backend_pid() as pid`)) as unknown as { rows: { pid: number }[] }).rows.map((r) => r.pid);
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  t.teardown(() => admin.end());
  await admin.query('select pg_terminate_backend($1)', [pid]);
  // The pool notices the dead connection on its next use; the write-behind would retry a failed batch, so allow one failure.
  const write = () => repository.writePublications([{ op: 'update', ownerId: owner, source: 'publication:1', expectEtag: 't2', publication: publication('t4') }]);
  const result = await write().catch(() => write());
  t.same(result, [true], 'written on the new connection');
  const [newPid] = ((await pool.db.execute(sql`select pg_backend_pid() as pid`)) as unknown as { rows: { pid: number }[] }).rows.map((r) => r.pid);
  t.not(newPid, pid, 'a new connection');
  t.same(await prepared(), ['write_publications'], 'prepared again there');
});

t.test('the overrides of several owners, as a group member reloads them: the same on PostgreSQL (prepared) and PGlite', async (t) => {
  const other = crypto.randomUUID();
  await repository.insertOwner({ id: other, handle: 'named2', displayName: undefined });
  const expiresAt = Date.now() + 600_000;
  await repository.upsertOverride(other, { source: 'manual', availability: 'away', activities: ['travel'], note: 'Back soon', expiresAt });
  await repository.upsertOverride(other, { source: 'session:old', availability: 'busy', activities: [], expiresAt: Date.now() - 1000 });
  const found = await repository.overridesOfOwners([owner, other, crypto.randomUUID()]);
  const bySource = Object.fromEntries(found.map((f) => [`${f.ownerId === owner ? 'owner' : 'other'} ${f.override.source}`, f.override]));
  t.same(Object.keys(bySource).sort(), ['other manual', 'owner publication:1'], 'live overrides only, of the owners asked for');
  t.match(bySource['other manual'], { availability: 'away', activities: ['travel'], note: 'Back soon', expiresAt: new Date(expiresAt).getTime() });
  t.match(bySource['owner publication:1'], { availability: 'busy', activities: ['meeting'] });
  t.ok((await prepared()).includes('overrides_of_owners'), 'prepared on the connection');

  const embedded = await openDatabase({ kind: 'embedded', dataDir: await tempDir(t) });
  t.teardown(() => embedded.close());
  const local = new Repository(embedded.db);
  await local.insertOwner({ id: other, handle: 'named2', displayName: undefined });
  await local.upsertOverride(other, { source: 'manual', availability: 'away', activities: ['travel'], note: 'Back soon', expiresAt });
  const embeddedFound = await local.overridesOfOwners([other]);
  t.same(
    embeddedFound.map((f) => f.override),
    found.filter((f) => f.ownerId === other).map((f) => f.override),
    'PGlite answers the same rows through drizzle',
  );
});
