import pg from 'pg';
import t from 'tap';
import { waitFor } from '../helpers/env.js';
import { startGroup, type GroupMember } from '../helpers/service-process.js';

/**
 * A group member's control channel (PostgreSQL LISTEN) drops: changes
 * committed meanwhile by others are announced to nobody. When the channel
 * comes back, the member reads every owner and every watcher again
 * (Repository.ownerIdsAndWatchers, then one reload per owner, at most
 * MAX_OWNER_RELOADS at a time): a rule deleted and a watcher revoked while
 * it was down are in force on the member afterwards.
 */
t.test('after the control channel comes back, what changed while it was down is in force', async (t) => {
  const { databaseUrl, adminToken, members } = await startGroup(t, 1);
  const [{ service: member, call }] = members as [GroupMember];
  const watcher = async (name: string) => {
    const id = (await call('POST', '/v1/admin/watchers', adminToken, { kind: 'person', name })).body.id as string;
    return { id, token: (await call('POST', '/v1/admin/tokens', adminToken, { kind: 'watcher', subject: id })).body.token as string };
  };
  t.equal((await call('POST', '/v1/admin/owners', adminToken, { handle: 'alice' })).status, 201);
  const owner = (await call('POST', '/v1/admin/tokens', adminToken, { kind: 'owner', subject: 'alice' })).body.token as string;
  const [bob, carol] = [await watcher('Bob'), await watcher('Carol')];
  const rule = await call('POST', '/v1/me/rules', owner, { conditions: { identity: { watchers: [bob.id, carol.id] } }, actions: { subHandling: 'allow' }, transformations: { availability: true } });
  t.equal(rule.status, 201);
  t.equal((await call('PUT', '/v1/me/status', owner, { availability: 'busy', expiresInSeconds: 3600 })).status, 200);
  t.equal((await call('GET', '/v1/presence/alice', bob.token)).body.availability, 'busy', 'Bob sees Alice');
  t.equal((await call('GET', '/v1/presence/alice', carol.token)).status, 200, 'Carol may read');

  const sql = new pg.Client({ connectionString: databaseUrl });
  await sql.connect();
  t.teardown(() => sql.end());
  // The member's listening connection goes, and the changes are made while it is gone.
  const killed = await sql.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN %'`);
  t.equal(killed.rowCount, 1, 'the listening connection was found and ended');
  await sql.query('DELETE FROM consent_rules WHERE id = $1', [rule.body.id]);
  await sql.query('UPDATE watchers SET revoked_at = now() WHERE id = $1', [carol.id]);

  await waitFor(async () => (await call('GET', '/v1/presence/alice', bob.token)).body.availability !== 'busy', 'Bob to see nothing of Alice', 15_000);
  await waitFor(async () => (await call('GET', '/v1/presence/alice', carol.token)).status === 401, "Carol's token to be refused", 15_000);
  t.match(member.output(), /control channel lost; reconnecting/, 'the member noticed');
  t.same((await call('GET', '/v1/me/rules', owner)).body.rules, [], 'no rule left in memory');
});
