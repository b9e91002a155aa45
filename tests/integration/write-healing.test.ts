import pg from 'pg';
import t from 'tap';
import { createTestDatabase, MQTT_TEST_URL, uniqueName, waitFor } from '../helpers/env.js';
import { startFreezingProxy } from '../helpers/freezing-proxy.js';
import { addRule, addWatcher, ownerToken, provision, startTestService, testConfig } from '../helpers/service.js';

/**
 * A PUBLISH whose write committed but whose answer was lost (a dropped
 * connection, a timeout after the commit): the caller gets 503, storage
 * holds the new publication, and memory, which applies a write only once
 * it is known stored, still holds the old one. Every read would show the
 * old publication until it expired, and a restart the new one. The
 * service reads the owner back from storage after such a failure
 * (OwnerReloads.heal), so memory and storage agree again.
 *
 * The same for the owner's own status, and for a consent rule deleted
 * whose answer was lost: memory kept granting what storage no longer
 * held, until a restart. The lost answer is real: a proxy between the service and PostgreSQL
 * forwards the publication statement, which runs and commits, and drops
 * every answer on that connection from then on.
 */
const LIMIT_MS = 300;

t.test('writes stored whose answers were lost (a publication, a status, a rule deletion): memory catches up with storage', async (t) => {
  const url = new URL(await createTestDatabase(t));
  const databaseUrl = url.toString();
  const proxy = await startFreezingProxy({ host: url.hostname, port: Number(url.port || 5432) });
  t.teardown(() => proxy.close());
  url.host = `127.0.0.1:${proxy.port}`;
  const service = await startTestService(
    t,
    await testConfig(t, { DATABASE_URL: url.toString(), DATABASE_STATEMENT_TIMEOUT_MS: String(LIMIT_MS), MQTT_URL: MQTT_TEST_URL, MQTT_TOPIC_ROOT: uniqueName('heal') }),
  );
  await provision(service, 'alice');
  const token = await ownerToken(service, 'alice');
  const publish = (body: unknown, headers: Record<string, string> = {}) => service.api('POST', '/v1/presence/alice', { token, body, headers });
  const note = async () => ((await (await service.api('GET', '/v1/me/presence', { token })).json()) as { note: string | null }).note;

  const first = await publish({ availability: 'busy', note: 'first' });
  t.equal(first.status, 201);
  const etag = first.headers.get('etag') ?? '';

  proxy.loseAnswersAfter('write_publications');
  const modified = await publish({ availability: 'away', note: 'second' }, { 'if-match': etag });
  t.equal(modified.status, 503, 'the caller is told the database did not answer');

  const direct = new pg.Client({ connectionString: databaseUrl });
  await direct.connect();
  t.teardown(() => direct.end());
  const stored = await direct.query<{ note: string }>(`SELECT o.note FROM presence_overrides o JOIN owners w ON w.id = o.owner_id WHERE w.handle = 'alice'`);
  t.same(stored.rows, [{ note: 'second' }], 'the modification was committed all the same');

  await waitFor(async () => (await note()) === 'second', 'memory to hold what storage holds');
  t.pass('memory caught up');
  await waitFor(() => service.metrics.value('presence_owners_healing') === 0, 'the owner to be healed');
  // And the publication goes on from there: the stored entity tag is the one memory now holds.
  const refused = await publish({ availability: 'busy', note: 'third' }, { 'if-match': etag });
  t.equal(refused.status, 412, 'the tag the caller last saw is spent, in memory as in storage');

  // The same for the owner's own status (its own statement, not the group commit).
  const setStatus = (availability: string) => service.api('PUT', '/v1/me/status', { token, body: { availability, expiresInSeconds: 3600 } });
  // A manual status replaces the availability (core/presence-overrides.ts).
  const availability = async () => ((await (await service.api('GET', '/v1/me/presence', { token })).json()) as { availability: string }).availability;
  t.equal((await setStatus('busy')).status, 200);
  t.equal(await availability(), 'busy');
  proxy.loseAnswersAfter('insert into "presence_overrides"');
  t.equal((await setStatus('do-not-disturb')).status, 503, 'a status whose answer was lost: 503');
  const manual = await direct.query<{ availability: string }>(`SELECT o.availability FROM presence_overrides o JOIN owners w ON w.id = o.owner_id WHERE w.handle = 'alice' AND o.source = 'manual'`);
  t.same(manual.rows, [{ availability: 'do-not-disturb' }], 'stored all the same');
  await waitFor(async () => (await availability()) === 'do-not-disturb', 'memory to hold the stored status');
  t.pass('memory caught up');

  // A consent rule deleted: the watcher must stop seeing Alice.
  const bob = await addWatcher(service, 'Bob');
  const rule = await addRule(service, 'alice', bob.id, 'allow', { availability: true, activities: false });
  const bobSees = async () => ((await (await service.api('GET', '/v1/presence/alice', { token: bob.token, headers: { accept: 'application/json' } })).json()) as { availability: string }).availability;
  t.equal(await bobSees(), 'do-not-disturb', 'the rule lets Bob see Alice');
  proxy.loseAnswersAfter('delete from "consent_rules"');
  t.equal((await service.api('DELETE', `/v1/me/rules/${rule.id}`, { token })).status, 503, 'a rule deletion whose answer was lost: 503');
  t.equal((await direct.query(`SELECT 1 FROM consent_rules WHERE id = $1`, [rule.id])).rowCount, 0, 'deleted all the same');
  await waitFor(async () => (await bobSees()) !== 'do-not-disturb', 'Bob to see nothing of Alice');
  const rules = (await (await service.api('GET', '/v1/me/rules', { token })).json()) as { rules: unknown[] };
  t.same(rules.rules, [], 'memory holds no rule, as storage');
});
