import pg from 'pg';
import t from 'tap';
import { waitFor } from '../helpers/env.js';
import { startGroup, type GroupMember } from '../helpers/service-process.js';

/**
 * A group member reloads an owner from storage when another member changed
 * it. If this member changes the same owner while the reload reads (here:
 * deletes a consent rule), the reload's snapshot may be older than that
 * change, and must not be put in memory: the deleted rule would grant
 * again until the next reload, and for good if that reload failed.
 *
 * The interleaving is forced with table locks, on the real service and the
 * real database: the test holds watcher_groups locked, so the reload's
 * queries (run in parallel) read the rules and then wait on the groups.
 * The rule is deleted meanwhile (rules are not locked). A second lock,
 * queued behind the reload, holds the reload that follows it, so what the
 * first reload left in memory can be looked at before anything heals it.
 */
t.test('a reload that read before a local rule deletion does not bring the rule back', async (t) => {
  const { databaseUrl, adminToken, members } = await startGroup(t, 1);
  const [{ call }] = members as [GroupMember];

  t.equal((await call('POST', '/v1/admin/owners', adminToken, { handle: 'alice' })).status, 201);
  const ownerToken = (await call('POST', '/v1/admin/tokens', adminToken, { kind: 'owner', subject: 'alice' })).body.token as string;
  const watcher = await call('POST', '/v1/admin/watchers', adminToken, { kind: 'person', name: 'Bob' });
  const watcherId = watcher.body.id as string;
  const watcherToken = (await call('POST', '/v1/admin/tokens', adminToken, { kind: 'watcher', subject: watcherId })).body.token as string;
  const rule = await call('POST', '/v1/me/rules', ownerToken, {
    conditions: { identity: { watchers: [watcherId] } },
    actions: { subHandling: 'allow' },
    transformations: { availability: true },
  });
  t.equal(rule.status, 201);
  t.equal((await call('PUT', '/v1/me/status', ownerToken, { availability: 'busy', expiresInSeconds: 3600 })).status, 200);
  const watcherSees = async () => (await call('GET', '/v1/presence/alice', watcherToken)).body.availability;
  const rulesInMemory = async () => ((await call('GET', '/v1/me/rules', ownerToken)).body.rules as unknown[]).length;
  t.equal(await watcherSees(), 'busy', 'the rule lets Bob see Alice');

  const clients: pg.Client[] = [];
  const connect = async () => {
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    clients.push(client);
    return client;
  };
  t.teardown(async () => {
    for (const client of clients) await client.end().catch(() => undefined);
  });
  const [first, second, other] = [await connect(), await connect(), await connect()];
  /** The service's backends waiting for a lock on watcher_groups: a reload's groups query. */
  const reloadWaiting = async () =>
    (
      await other.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query ILIKE '%watcher_groups%' AND query NOT ILIKE '%lock table%' AND pid <> pg_backend_pid()`,
      )
    ).rows[0]?.n ?? 0;

  await first.query('BEGIN');
  await first.query('LOCK TABLE watcher_groups IN ACCESS EXCLUSIVE MODE');
  // Another member's change to Alice (her settings, through its own connection): this member reloads her.
  await other.query(`UPDATE owners SET settings = settings WHERE handle = 'alice'`);
  await waitFor(async () => (await reloadWaiting()) > 0, 'the reload to wait on the groups');

  // The owner deletes the rule through this member while the reload waits, with the rules already read.
  t.equal((await call('DELETE', `/v1/me/rules/${rule.body.id as string}`, ownerToken)).status, 204);
  t.equal(await rulesInMemory(), 0, 'deleted in memory');

  // A second lock, queued behind the waiting reload: it is granted when that reload has read, and holds the next one.
  await second.query('BEGIN');
  const secondLocked = second.query('LOCK TABLE watcher_groups IN ACCESS EXCLUSIVE MODE');
  await waitFor(async () => (await other.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE 'lock table%'`)).rows[0]?.n === 1, 'the second lock to queue');
  await first.query('COMMIT');
  await secondLocked;
  // The first reload has its snapshot; the next one (asked for by the deletion's own notification, or by the guard) waits on the second lock.
  await waitFor(async () => (await reloadWaiting()) > 0, 'the next reload to wait on the groups');

  t.equal(await rulesInMemory(), 0, 'the older snapshot did not bring the deleted rule back');
  t.not(await watcherSees(), 'busy', 'Bob sees nothing of Alice');

  await second.query('COMMIT');
  await waitFor(async () => (await reloadWaiting()) === 0, 'the reloads to end');
  t.equal(await rulesInMemory(), 0, 'and none after the reloads');
  t.not(await watcherSees(), 'busy');
});
