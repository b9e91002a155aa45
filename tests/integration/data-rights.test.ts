import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connectAsync, type MqttClient } from 'mqtt';
import pg from 'pg';
import t from 'tap';
import { INGEST_ACCEPTED, INGEST_REJECTED } from '../../ingest/ingest-pipeline.js';
import { MQTT_TEST_URL, createTestDatabase, uniqueName, waitFor } from '../helpers/env.js';
import { openStream } from '../helpers/sse.js';
import { addRule, addWatcher, ownerToken, provision, startTestService, testConfig } from '../helpers/service.js';

/**
 * Data rights and revocation on the real components: an owner exports
 * everything the service holds about them (every kind of record, retained
 * sensor events only once they turned retention on), revokes a lost device,
 * and erases it all; afterwards no table of the schema holds a row that
 * names them, memory has forgotten them, their streams have ended and a
 * read of their handle is the offline view of an owner who never existed.
 * Another owner is untouched throughout.
 */
const databaseUrl = await createTestDatabase(t);
const config = await testConfig(t, { DATABASE_URL: databaseUrl, MQTT_URL: MQTT_TEST_URL, MQTT_TOPIC_ROOT: uniqueName('dr'), OWNTRACKS_TOPIC_ROOT: uniqueName('drot') });
const service = await startTestService(t, config);
const alice = await provision(service, 'alice');
const bob = await provision(service, 'bob');
const walt = await addWatcher(service, 'Walt');
await addRule(service, 'alice', walt.id, 'allow');
await addRule(service, 'bob', walt.id, 'allow');
const aliceToken = await ownerToken(service, 'alice');
const bobToken = await ownerToken(service, 'bob');

const db = new pg.Client({ connectionString: databaseUrl });
await db.connect();
t.teardown(() => db.end());

// Mosquitto here has no authentication: the publisher stands in for the devices.
const devices: MqttClient = await connectAsync(MQTT_TEST_URL, { clientId: uniqueName('dev'), clean: true });
t.teardown(() => devices.endAsync());
const report = async (topic: string, state: 'in-call' | 'idle') => {
  const before = service.metrics.value(INGEST_ACCEPTED) + service.metrics.value(INGEST_REJECTED, { reason: 'unknown_device' });
  await devices.publishAsync(topic, JSON.stringify({ kind: 'call', at: new Date().toISOString(), state }), { qos: 1 });
  await waitFor(() => service.metrics.value(INGEST_ACCEPTED) + service.metrics.value(INGEST_REJECTED, { reason: 'unknown_device' }) > before, 'the event to be handled');
};

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const nested = await Promise.all(entries.map((e) => (e.isDirectory() ? filesUnder(join(dir, e.name)) : Promise.resolve(e.isFile() ? [join(dir, e.name)] : []))));
  return nested.flat();
}

const exportOf = async (token: string) => {
  const response = await service.api('GET', '/v1/me/export', { token });
  return { response, records: (await response.text()).trim().split('\n').map((line) => JSON.parse(line) as { type: string } & Record<string, unknown>) };
};

t.test('sensor events are kept only once the owner turns retention on', async (t) => {
  await report(alice.device.topic, 'idle');
  await service.flush();
  t.equal((await db.query('select count(*)::int as n from raw_events')).rows[0].n, 0, 'retention off: nothing kept');

  const on = await service.api('PUT', '/v1/me/settings', { token: aliceToken, body: { keepRawEventsDays: 7 } });
  t.equal(on.status, 200);
  await report(alice.device.topic, 'in-call');
  await report(bob.device.topic, 'in-call');
  await service.flush();
  const kept = await db.query('select owner_id, device_id, event from raw_events');
  t.equal(kept.rows.length, 1, "only alice's, and only since she turned it on");
  t.match(kept.rows[0], { owner_id: alice.owner.id, device_id: alice.device.id, event: { kind: 'call', state: 'in-call' } });
});

t.test('the export holds every kind of record, with a header and a counted trailer', async (t) => {
  t.equal((await service.api('GET', '/v1/presence/alice', { token: walt.token })).status, 200, 'a read, for the access log');
  t.equal((await service.api('PUT', '/v1/me/status', { token: aliceToken, body: { availability: 'busy', activities: [], note: 'Call later', expiresInSeconds: 600 } })).status, 200);
  t.equal((await service.api('POST', '/v1/webhooks', { token: walt.token, body: { handle: 'alice', url: 'http://127.0.0.1:9/hook?secret=s3cr3t' } })).status, 201);
  const request = await service.api('POST', '/v1/presence/alice/access-requests', { token: (await addWatcher(service, 'Quinn')).token, body: { message: 'hi' } });
  t.ok(request.status < 300, 'an access request');
  t.equal((await service.api('POST', '/v1/me/groups', { token: aliceToken, body: { name: 'family', members: [walt.id] } })).status, 201, 'a group');
  const link = await service.api('POST', '/v1/admin/identities', { token: service.adminToken, body: { issuer: 'https://id.example', subject: 'alice-at-idp', owner: 'alice' } });
  t.equal(link.status, 201, 'a linked external account (and an admin action concerning her)');
  await service.flush();

  const { response, records } = await exportOf(aliceToken);
  t.equal(response.status, 200);
  t.match(response.headers.get('content-type'), /application\/x-ndjson/);
  t.match(response.headers.get('content-disposition'), /presence-export-alice\.ndjson/);
  t.match(records[0], { type: 'export', format: 'presence-export/1', ownerId: alice.owner.id });
  t.match(records.at(-1), { type: 'end', records: records.length }, 'the trailer counts every record');
  const types = new Set(records.map((r) => r.type));
  for (const type of ['owner', 'device', 'rule', 'group', 'access-request', 'webhook', 'external-identity', 'stored-signals', 'status', 'access-log', 'admin-action', 'raw-event', 'presence']) t.ok(types.has(type), `has ${type}`);
  // Against the schema, not a list kept by hand: every table with an
  // owner_id column has a record type in the export, and the export holds
  // one record per row of the owner's. A table added later without its
  // export fails here until both know it.
  const exportedAs: Record<string, string> = {
    devices: 'device',
    consent_rules: 'rule',
    watcher_groups: 'group',
    access_requests: 'access-request',
    webhooks: 'webhook',
    presence_state: 'stored-signals',
    presence_overrides: 'status',
    access_log: 'access-log',
    raw_events: 'raw-event',
    external_identities: 'external-identity',
    admin_actions: 'admin-action',
  };
  const ownerTables = (await db.query("select table_name from information_schema.columns where table_schema = 'public' and column_name = 'owner_id' order by table_name")).rows.map((r: { table_name: string }) => r.table_name);
  t.same([...ownerTables].sort(), Object.keys(exportedAs).sort(), 'every table that holds owner data is exported');
  for (const table of ownerTables) {
    const rows = (await db.query(`select count(*)::int as n from ${table} where owner_id = $1`, [alice.owner.id])).rows[0].n as number;
    const type = exportedAs[table] ?? '?';
    t.ok(rows > 0, `alice has rows in ${table}`);
    t.equal(records.filter((r) => r.type === type).length, rows, `${table}: one ${type} record per row`);
  }
  t.match(
    records.find((r) => r.type === 'presence'),
    { availability: 'busy', trace: { availability: { rule: String } } },
    'the derived presence with its reasons',
  );
  const hook = records.find((r) => r.type === 'webhook');
  t.equal(hook?.host, '127.0.0.1:9', "where the presence goes, not the watcher's secret");
  t.notOk(JSON.stringify(records).includes('s3cr3t'));
  t.notOk(JSON.stringify(records).includes(bob.owner.id), "nothing of bob's");

  const admin = await service.api('GET', '/v1/admin/owners/alice/export', { token: service.adminToken });
  t.equal(admin.status, 200, 'an operator can export too');
  t.equal((await service.api('GET', '/v1/admin/owners/nobody/export', { token: service.adminToken })).status, 404);
  t.equal((await service.api('GET', '/v1/me/export', { token: walt.token })).status, 403, 'not for watchers');
});

t.test('a revoked device is refused, listed as revoked, and a second revocation is no error', async (t) => {
  const listed = (await (await service.api('GET', '/v1/me/devices', { token: aliceToken })).json()) as { devices: { id: string; revokedAt: string | null }[] };
  t.match(listed.devices, [{ id: alice.device.id, revokedAt: null }]);
  t.equal((await service.api('DELETE', `/v1/me/devices/${bob.device.id}`, { token: aliceToken })).status, 404, "bob's device is not alice's to revoke");
  t.equal((await service.api('DELETE', `/v1/me/devices/${alice.device.id}`, { token: aliceToken })).status, 204);
  t.equal((await service.api('DELETE', `/v1/me/devices/${alice.device.id}`, { token: aliceToken })).status, 204);
  const after = (await (await service.api('GET', '/v1/me/devices', { token: aliceToken })).json()) as { devices: { revokedAt: string | null }[] };
  t.match(after.devices, [{ revokedAt: String }]);
  const refusedBefore = service.metrics.value(INGEST_REJECTED, { reason: 'unknown_device' });
  await report(alice.device.topic, 'idle');
  t.equal(service.metrics.value(INGEST_REJECTED, { reason: 'unknown_device' }), refusedBefore + 1, 'its events are refused');
  const token = await service.api('POST', '/v1/admin/tokens', { token: service.adminToken, body: { kind: 'device', subject: alice.device.id } });
  t.equal(token.status, 404, 'no new token for it');
});

t.test('erasure: confirmed by handle, then nothing of the owner remains anywhere', async (t) => {
  const stream = await openStream(`${service.httpUrl}/v1/presence/alice/stream`, walt.token);
  t.teardown(() => stream.close());
  await stream.nth(1);

  t.equal((await service.api('DELETE', '/v1/me?confirm=bob', { token: aliceToken })).status, 400, 'the wrong handle erases nothing');
  t.equal((await service.api('DELETE', '/v1/me', { token: aliceToken })).status, 400, 'no confirmation, no erasure');
  t.equal((await service.api('DELETE', '/v1/me?confirm=alice', { token: aliceToken })).status, 204);

  await waitFor(() => stream.ended(), 'the open stream to end');
  const tables = (await db.query("select table_name from information_schema.columns where table_schema = 'public' and column_name = 'owner_id' order by table_name")).rows.map((r: { table_name: string }) => r.table_name);
  t.ok(tables.length >= 9, `every table with an owner_id column is checked (${tables.join(', ')})`);
  for (const table of tables) {
    const left = await db.query(`select count(*)::int as n from ${table} where owner_id = $1`, [alice.owner.id]);
    t.equal(left.rows[0].n, 0, `nothing left in ${table}`);
  }
  t.equal((await db.query('select count(*)::int as n from owners where id = $1 or handle = $2', [alice.owner.id, 'alice'])).rows[0].n, 0);
  t.equal((await db.query('select count(*)::int as n from devices where id = $1', [alice.device.id])).rows[0].n, 0);
  // Every text and JSON column of every table, for the ids and the handle.
  const columns = (await db.query("select table_name, column_name from information_schema.columns where table_schema = 'public' and data_type in ('text', 'jsonb', 'uuid')")).rows as {
    table_name: string;
    column_name: string;
  }[];
  for (const { table_name, column_name } of columns) {
    const hits = await db.query(`select count(*)::int as n from ${table_name} where ${column_name}::text like any($1)`, [[`%${alice.owner.id}%`, `%${alice.device.id}%`, '%alice%']]);
    t.equal(hits.rows[0].n, 0, `no trace in ${table_name}.${column_name}`);
  }

  const read = await service.api('GET', '/v1/presence/alice', { token: walt.token, headers: { accept: 'application/json' } });
  t.same(await read.json(), { entity: 'pres:alice@presence.local', basic: 'closed', availability: 'offline' }, 'the handle reads as an unknown owner');
  t.equal((await service.api('GET', '/v1/me/export', { token: aliceToken })).status, 401, "the erased owner's tokens no longer work");
  t.same(service.hub.signalsOf(alice.owner.id), [], 'memory forgot the signals');

  // A write the write-behind still held, and retention, do not bring anything back.
  await report(alice.device.topic, 'in-call');
  await service.flush();
  t.equal((await db.query('select count(*)::int as n from raw_events where owner_id = $1', [alice.owner.id])).rows[0].n, 0);
  // Nor in the service's own files: the ingest journal holds applied events until they are stored.
  const files = await filesUnder(config.dataDir);
  t.ok(files.some((f) => f.includes('ingest-journal')), `the journal's files are among those read (${files.length} files)`);
  for (const file of files) {
    const text = await readFile(file, 'latin1');
    t.notOk(text.includes(alice.owner.id) || text.includes(alice.device.id), `no trace in ${file.slice(config.dataDir.length)}`);
  }

  const bobView = await service.api('GET', '/v1/presence/bob', { token: walt.token, headers: { accept: 'application/json' } });
  t.match(await bobView.json(), { availability: 'busy', activities: ['on-the-phone'] }, 'bob is untouched');
  t.equal((await exportOf(bobToken)).response.status, 200);
});

t.test('operators erase by handle, with the same confirmation', async (t) => {
  t.equal((await service.api('DELETE', '/v1/admin/owners/bob?confirm=alice', { token: service.adminToken })).status, 400);
  t.equal((await service.api('DELETE', '/v1/admin/owners/bob?confirm=bob', { token: service.adminToken })).status, 204);
  t.equal((await service.api('DELETE', '/v1/admin/owners/bob?confirm=bob', { token: service.adminToken })).status, 404, 'gone');
  t.equal((await db.query('select count(*)::int as n from owners')).rows[0].n, 0);
});

t.test('turning retention off deletes what was kept at once; the purge enforces the windows', async (t) => {
  const carol = await provision(service, 'carol');
  const carolToken = await ownerToken(service, 'carol');
  await service.api('PUT', '/v1/me/settings', { token: carolToken, body: { keepRawEventsDays: 3 } });
  await report(carol.device.topic, 'in-call');
  await service.flush();
  t.equal((await db.query('select count(*)::int as n from raw_events where owner_id = $1', [carol.owner.id])).rows[0].n, 1);
  // Backdate it past her window: the purge job's statement removes it.
  await db.query("update raw_events set received_at = now() - interval '4 days' where owner_id = $1", [carol.owner.id]);
  await report(carol.device.topic, 'idle');
  await service.flush();
  const { Repository } = await import('../../core/db/repository.js');
  const { openDatabase } = await import('../../core/db/connect.js');
  const handle = await openDatabase({ kind: 'postgres', url: databaseUrl });
  t.teardown(() => handle.close());
  t.equal(await new Repository(handle.db).purgeRawEvents(30), 1, 'past her 3 days, within the 30-day cap');
  t.equal(await new Repository(handle.db).purgeRawEvents(0), 1, 'a cap of 0 keeps nothing for anyone');
  await report(carol.device.topic, 'in-call');
  await service.flush();
  t.equal((await db.query('select count(*)::int as n from raw_events where owner_id = $1', [carol.owner.id])).rows[0].n, 1);
  await service.api('PUT', '/v1/me/settings', { token: carolToken, body: { keepRawEventsDays: 0 } });
  t.equal((await db.query('select count(*)::int as n from raw_events where owner_id = $1', [carol.owner.id])).rows[0].n, 0, 'turned off: deleted at once');
});

t.test('the purge job runs at start (then hourly) and RAW_EVENTS_MAX_DAYS caps what an owner keeps', async (t) => {
  const dora = await provision(service, 'dora');
  const doraToken = await ownerToken(service, 'dora');
  t.equal((await service.api('PUT', '/v1/me/settings', { token: doraToken, body: { keepRawEventsDays: 3 } })).status, 200);
  await report(dora.device.topic, 'in-call');
  await service.flush();
  // Within her 3 days, past a cap of 2.
  await db.query("update raw_events set received_at = now() - interval '60 hours' where owner_id = $1", [dora.owner.id]);
  await report(dora.device.topic, 'idle');
  await service.flush();
  const kept = async () => (await db.query("select event->>'state' as state from raw_events where owner_id = $1 order by received_at", [dora.owner.id])).rows.map((r: { state: string }) => r.state);
  t.same(await kept(), ['in-call', 'idle']);

  // Another process on the same database, with a 2-day cap (its own topics: it ingests nothing of these owners).
  const capped = await startTestService(t, await testConfig(t, { DATABASE_URL: databaseUrl, MQTT_URL: MQTT_TEST_URL, MQTT_TOPIC_ROOT: uniqueName('cap'), OWNTRACKS_TOPIC_ROOT: uniqueName('capot'), RAW_EVENTS_MAX_DAYS: '2' }));
  await waitFor(async () => (await kept()).length === 1 || undefined, "the job's first run at start");
  t.same(await kept(), ['idle'], 'the event past the cap is gone, the recent one stays');
  await capped.close();
});
