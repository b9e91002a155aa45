import { connectAsync, type MqttClient } from 'mqtt';
import pg from 'pg';
import t from 'tap';

const root = t;
import { INGEST_ACCEPTED, INGEST_IGNORED, INGEST_REJECTED } from '../../ingest/ingest-pipeline.js';
import { ingestRejections } from '../../core/errors.js';
import { badPayloads } from '../helpers/bad-payloads.js';
import { MQTT_TEST_URL, createTestDatabase, uniqueName, waitFor } from '../helpers/env.js';
import { validatePidf } from '../helpers/pidf-validator.js';
import { addRule, addWatcher, ownerToken, provision, startTestService, testConfig, type TestService } from '../helpers/service.js';

/**
 * The thin slice on the real components this machine and CI run: Mosquitto
 * on 127.0.0.1:1883 and PostgreSQL on 127.0.0.1:5432, a private database and
 * a private topic root for this file.
 */
const databaseUrl = await createTestDatabase(t);
const topicRoot = uniqueName('t');
const ownTracksRoot = uniqueName('ot');
let offsetMs = 0;
const clock = () => Date.now() + offsetMs;
const deadLetterRoot = uniqueName('dl');
const config = await testConfig(t, {
  DATABASE_URL: databaseUrl,
  MQTT_URL: MQTT_TEST_URL,
  MQTT_TOPIC_ROOT: topicRoot,
  OWNTRACKS_TOPIC_ROOT: ownTracksRoot,
  MQTT_DEAD_LETTER_TOPIC: deadLetterRoot,
  OFFLINE_AFTER_SECONDS: '600',
});
let service: TestService = await startTestService(t, config, { clock });

const alice = await provision(service, 'alice');
const bob = await addWatcher(service, 'Bob'); // allowed
const eve = await addWatcher(service, 'Eve', 'app'); // no rule at all
const mallory = await addWatcher(service, 'Mallory'); // blocked
const polly = await addWatcher(service, 'Polly'); // polite-blocked
await addRule(service, 'alice', bob.id, 'allow');
await addRule(service, 'alice', mallory.id, 'block');
await addRule(service, 'alice', polly.id, 'polite-block');

// Mosquitto here has no authentication: the publisher stands in for the device.
const device: MqttClient = await connectAsync(MQTT_TEST_URL, { clientId: uniqueName('dev'), clean: true });
t.teardown(() => device.endAsync());
const publish = (payload: unknown) =>
  device.publishAsync(alice.device.topic, typeof payload === 'string' || Buffer.isBuffer(payload) ? payload : JSON.stringify(payload), { qos: 1 });
const accepted = () => service.metrics.value(INGEST_ACCEPTED);
const read = (token: string, accept = 'application/json', extra: Record<string, string> = {}) =>
  service.api('GET', '/v1/presence/alice', { token, headers: { accept, ...extra } });

async function snapshot(response: Response) {
  const headers = Object.fromEntries([...response.headers].filter(([name]) => !['date', 'keep-alive', 'connection'].includes(name)));
  return { status: response.status, headers, body: await response.text() };
}

t.test('an event published on MQTT becomes presence a consented watcher reads', async (t) => {
  t.equal(alice.device.topic, `${topicRoot}/${alice.device.id}/events`);
  const before = accepted();
  await publish({ kind: 'call', at: new Date(clock()).toISOString(), state: 'in-call' });
  await waitFor(() => accepted() > before, 'the event to be applied');

  const json = await read(bob.token);
  t.equal(json.status, 200);
  t.same(await json.json(), { entity: 'pres:alice@presence.local', basic: 'open', availability: 'busy', activities: ['on-the-phone'] });

  const pidf = await read(bob.token, 'application/pidf+xml');
  t.equal(pidf.headers.get('content-type'), 'application/pidf+xml; charset=utf-8');
  const xml = await pidf.text();
  t.match(xml, /<rpid:on-the-phone\/>/);
  const validation = await validatePidf({ 'on-the-phone': xml });
  t.ok(validation.ok, validation.output);

  const etag = pidf.headers.get('etag') ?? '';
  const notModified = await read(bob.token, 'application/pidf+xml', { 'if-none-match': etag });
  t.equal(notModified.status, 304);
  t.equal(notModified.headers.get('etag'), etag);
});

t.test('a calendar meeting makes the owner busy in a meeting', async (t) => {
  const before = accepted();
  const now = clock();
  await publish({
    events: [
      { kind: 'call', at: new Date(now).toISOString(), state: 'idle' },
      { kind: 'calendar', at: new Date(now).toISOString(), state: 'busy', start: new Date(now - 60_000).toISOString(), end: new Date(now + 1_800_000).toISOString() },
    ],
  });
  await waitFor(() => accepted() > before, 'the batch to be applied');
  t.same(await (await read(bob.token)).json(), { entity: 'pres:alice@presence.local', basic: 'open', availability: 'busy', activities: ['meeting'] });
});

t.test('bad MQTT input is counted, never applied, never fatal', async (t) => {
  const letters: { topic: string; body: { reason: string; topic: string; bytes: number; fields?: string[] } }[] = [];
  const operator = await connectAsync(MQTT_TEST_URL, { clientId: uniqueName('ops'), clean: true });
  t.teardown(() => operator.endAsync());
  operator.on('message', (topic, payload) => letters.push({ topic, body: JSON.parse(payload.toString()) }));
  await operator.subscribeAsync(`${deadLetterRoot}/#`, { qos: 0 });
  const rejected = (reason: string) => service.metrics.value(INGEST_REJECTED, { reason });
  const start = { malformed: rejected('malformed_json'), invalid: rejected('invalid_event'), large: rejected('payload_too_large'), unknown: rejected('unknown_device') };
  const stateBefore = await (await read(bob.token)).text();
  const before = accepted();
  await publish('{"kind": "call", ');
  await publish({ kind: 'call', at: new Date(clock()).toISOString(), state: 42 });
  await publish({ kind: 'teleport', at: new Date(clock()).toISOString() });
  await publish(Buffer.alloc(config.maxEventBytes + 1, 0x20));
  await publish({ events: [{ kind: 'call', at: new Date(clock()).toISOString(), state: 'in-call' }, { kind: 'call', at: 'yesterday', state: 'idle' }] });
  await device.publishAsync(`${topicRoot}/${crypto.randomUUID()}/events`, JSON.stringify({ kind: 'call', at: new Date(clock()).toISOString(), state: 'in-call' }), { qos: 1 });
  await waitFor(() => rejected('unknown_device') > start.unknown && rejected('invalid_event') >= start.invalid + 3, 'the refusals to be counted');
  t.equal(rejected('malformed_json'), start.malformed + 1);
  t.equal(rejected('invalid_event'), start.invalid + 3);
  t.equal(rejected('payload_too_large'), start.large + 1);
  t.equal(accepted(), before, 'nothing accepted');
  t.equal(await (await read(bob.token)).text(), stateBefore, 'state unchanged (the half-good batch was not half-applied)');
  await waitFor(() => letters.length >= 5, 'the dead letters');
  t.same(letters.map((l) => l.topic.slice(deadLetterRoot.length + 1)).sort(), ['invalid_event', 'invalid_event', 'invalid_event', 'malformed_json', 'payload_too_large'].sort(), 'none for an unregistered device');
  t.match(letters.find((l) => l.body.reason === 'malformed_json')?.body, { topic: alice.device.topic, bytes: 17 });
  t.same(letters.find((l) => l.body.reason === 'invalid_event')?.body.fields, ['kind', 'at', 'state'], 'field names, never the payload');
  t.notMatch(JSON.stringify(letters), /in-call|yesterday|teleport/, 'no values');
});

t.test('a generated corpus of 1,000 hostile payloads over Mosquitto: all refused and counted, state untouched', async (t) => {
  const totalRejected = () => ingestRejections.reduce((sum, reason) => sum + service.metrics.value(INGEST_REJECTED, { reason }), 0);
  const stateBefore = await (await read(bob.token)).text();
  const before = { rejected: totalRejected(), accepted: accepted() };
  const corpus = badPayloads(1000, clock(), config.maxEventBytes, 7);
  const ownTracksTopic = `${ownTracksRoot}/${alice.device.id}/phone`;
  await Promise.all(corpus.map((payload, i) => device.publishAsync(i % 2 ? alice.device.topic : ownTracksTopic, payload, { qos: 1 })));
  await waitFor(() => totalRejected() >= before.rejected + corpus.length, 'every payload to be refused', 30_000);
  t.equal(totalRejected(), before.rejected + corpus.length);
  t.equal(accepted(), before.accepted, 'none accepted');
  t.equal(await (await read(bob.token)).text(), stateBefore, 'state unchanged');
  t.equal((await service.api('GET', '/readyz')).status, 200, 'the service is still ready');
});

t.test('no consent, block and polite-block cannot be told apart from a real offline owner', async (t) => {
  const online = { eve: await read(eve.token, 'application/pidf+xml'), mallory: await read(mallory.token, 'application/pidf+xml'), polly: await read(polly.token, 'application/pidf+xml') };
  const onlineBob = await snapshot(await read(bob.token, 'application/pidf+xml'));
  t.match(onlineBob.body, /<basic>open<\/basic>/, 'the owner is online for the consented watcher');

  offsetMs = config.offlineAfterMs + 1000; // the owner goes silent
  const offline = await snapshot(await read(bob.token, 'application/pidf+xml'));
  t.match(offline.body, /<basic>closed<\/basic>/);
  for (const [name, response] of Object.entries(online)) t.same(await snapshot(response), offline, `${name} sees exactly the offline response`);
  for (const accept of ['application/json', '*/*']) {
    t.same(await snapshot(await read(eve.token, accept)), await snapshot(await read(bob.token, accept)), `same for Accept: ${accept}`);
  }

  // The owner's device speaks again: the consented watcher sees them return.
  offsetMs = 0;
  const before = accepted();
  await publish({ kind: 'user-input', at: new Date(clock()).toISOString(), state: 'active' });
  await waitFor(() => accepted() > before, 'the event to be applied');
  t.match(await (await read(bob.token)).json(), { basic: 'open', availability: 'busy', activities: ['meeting'] });
});

t.test('state is written behind and restored after a restart', async (t) => {
  await service.flush();
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  const rows = await db.query('select owner_id, version from presence_state where owner_id = $1', [alice.owner.id]);
  await db.end();
  t.equal(rows.rowCount, 1);
  const before = await (await read(bob.token)).json();
  await service.close();
  service = await startTestService(root, config, { clock });
  t.same(await (await read(bob.token)).json(), before, 'same view after restart (the allow rule was restored)');
  t.match(before, { basic: 'open' });
  t.same(await (await read(mallory.token)).json(), await (await read(eve.token)).json(), 'the block rule too: Mallory sees what Eve sees');
});

t.test('HTTP errors are JSON with stable codes', async (t) => {
  const expectError = async (response: Response, status: number, code: string) => {
    t.equal(response.status, status, code);
    t.match(response.headers.get('content-type'), /^application\/json/);
    const body = (await response.json()) as { code: string; message: string };
    t.equal(body.code, code);
    t.type(body.message, 'string');
  };
  await expectError(await service.api('GET', '/v1/presence/alice'), 401, 'unauthorized');
  await expectError(await service.api('GET', '/v1/presence/alice', { token: 'x.y.z' }), 401, 'unauthorized');
  await expectError(await service.api('GET', '/v1/presence/alice', { token: alice.deviceToken }), 401, 'unauthorized');
  await expectError(await service.api('GET', '/v1/presence/Not_Valid!', { token: bob.token }), 400, 'invalid_request');
  await expectError(await read(bob.token, 'text/html'), 406, 'not_acceptable');
  await expectError(await service.api('POST', '/v1/admin/owners', { token: bob.token, body: { handle: 'x' } }), 403, 'forbidden');
  await expectError(await service.api('POST', '/v1/admin/owners', { token: service.adminToken, body: '{"handle":' }), 400, 'invalid_request');
  await expectError(await service.api('POST', '/v1/admin/owners', { token: service.adminToken, body: { handle: 'UPPER' } }), 400, 'invalid_request');
  await expectError(await service.api('POST', '/v1/admin/owners', { token: service.adminToken, body: { handle: 'alice' } }), 409, 'conflict');
  await expectError(
    await service.api('POST', '/v1/admin/owners', { token: service.adminToken, body: 'handle=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } }),
    415,
    'unsupported_media_type',
  );
  await expectError(await service.api('POST', '/v1/admin/owners', { token: service.adminToken, body: { handle: 'x'.repeat(70_000) } }), 413, 'payload_too_large');
  await expectError(await service.api('GET', '/v1/nothing-here'), 404, 'not_found');
  await expectError(await service.api('POST', '/v1/admin/tokens', { token: service.adminToken, body: { kind: 'watcher', subject: bob.id, scopes: ['admin'] } }), 400, 'invalid_request');
  await expectError(await service.api('POST', '/v1/admin/tokens', { token: service.adminToken, body: { kind: 'device', subject: crypto.randomUUID() } }), 404, 'not_found');

  const rulesBefore = await (await service.api('GET', '/v1/admin/owners/alice/rules', { token: service.adminToken })).json();
  const badRule = await service.api('POST', '/v1/admin/owners/alice/rules', {
    token: service.adminToken,
    body: { conditions: { identity: { watchers: [bob.id, crypto.randomUUID()] } }, actions: { subHandling: 'allow' } },
  });
  await expectError(badRule, 400, 'invalid_request');
  t.same(await (await service.api('GET', '/v1/admin/owners/alice/rules', { token: service.adminToken })).json(), rulesBefore, 'nothing half-applied');
});

t.test('the owner manages their own rules and reads their own presence', async (t) => {
  const aliceToken = await ownerToken(service, 'alice');
  const created = await service.api('POST', '/v1/me/rules', {
    token: aliceToken,
    body: { conditions: { identity: { watchers: [eve.id] } }, actions: { subHandling: 'allow' }, transformations: { availability: true, activities: false } },
  });
  t.equal(created.status, 201);
  const rule = (await created.json()) as { id: string };
  t.same(await (await read(eve.token)).json(), { entity: 'pres:alice@presence.local', basic: 'open', availability: 'busy' }, 'availability only');
  const upper = await service.api('DELETE', `/v1/me/rules/${rule.id.toUpperCase()}`, { token: aliceToken });
  t.equal(upper.status, 400, 'ids are lower case: an upper-case id is refused, not half-deleted');
  t.match(await (await read(eve.token)).json(), { basic: 'open' }, 'the rule still holds');
  t.equal((await service.api('DELETE', `/v1/me/rules/${rule.id}`, { token: aliceToken })).status, 204);
  t.same(await (await read(eve.token)).json(), { entity: 'pres:alice@presence.local', basic: 'closed', availability: 'offline' }, 'revoked on the next read');
  const self = await service.api('GET', '/v1/presence/alice', { token: aliceToken, headers: { accept: 'application/json' } });
  const own = (await self.json()) as Record<string, unknown>;
  t.match(own, { entity: 'pres:alice@presence.local', basic: 'open', availability: 'busy', activities: ['meeting'] }, 'the owner sees everything');
  t.match(own.services, [{ class: 'phone', basic: 'open' }], 'their own devices too');
});

t.test('an unmodified OwnTracks app feeds the same signals; Wi-Fi names are never stored', async (t) => {
  const topic = `${ownTracksRoot}/${alice.device.id}/iphone`;
  const tst = Math.floor(clock() / 1000);
  const before = accepted();
  // As the booklet documents them: locations with extended data, then a transition.
  // Three minutes of automotive reports: longer than the driving dwell.
  await device.publishAsync(topic, JSON.stringify({ _type: 'location', acc: 15, lat: 48.14, lon: 11.57, motionactivities: ['automotive'], t: 't', tid: 'AL', tst: tst - 180 }), { qos: 1 });
  await device.publishAsync(
    topic,
    JSON.stringify({ _type: 'location', acc: 12, batt: 64, bs: 1, conn: 'w', SSID: 'CorpWiFi-5G', lat: 48.1372, lon: 11.5756, inregions: ['Office'], motionactivities: ['automotive'], t: 'p', tid: 'AL', tst }),
    { qos: 1, retain: false },
  );
  await device.publishAsync(`${topic}/event`, JSON.stringify({ _type: 'transition', event: 'leave', desc: 'Office', lat: 48.1372, lon: 11.5756, acc: 12, tid: 'AL', t: 'c', tst: tst + 1, wtst: tst - 86400 }), { qos: 1 });
  await waitFor(() => accepted() >= before + 3, 'the OwnTracks messages');
  t.match(await (await read(bob.token)).json(), { availability: 'busy', activities: ['meeting', 'steering'] }, 'automotive counts as driving');

  const ignoredBefore = service.metrics.value(INGEST_IGNORED);
  await device.publishAsync(topic, JSON.stringify({ _type: 'lwt', tst }), { qos: 1 });
  await waitFor(() => service.metrics.value(INGEST_IGNORED) > ignoredBefore, 'the lwt to be ignored');

  await service.flush();
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  const row = await db.query('select signals::text as s from presence_state where owner_id = $1', [alice.owner.id]);
  await db.end();
  const stored = String(row.rows[0]?.s);
  t.notMatch(stored, /CorpWiFi/, 'the Wi-Fi name is not stored');
  t.match(stored, /"network": "[A-Za-z0-9_-]{22}"/, 'its keyed digest is');
  t.match(stored, /"zone": "Office", "transition": "leave"/, 'the transition replaced the region entry');
});

t.test('the owner sets zones and reads everything derived, with the trace', async (t) => {
  const aliceToken = await ownerToken(service, 'alice');
  const put = (body: unknown) => service.api('PUT', '/v1/me/settings', { token: aliceToken, body });
  const settings = {
    timeZone: 'Europe/Berlin',
    zones: [{ name: 'Office', sphere: 'work', placeType: 'office', wifi: ['CorpWiFi-5G'] }],
    dwell: { drivingSeconds: 60, leaveSeconds: 120 },
  };
  const saved = await put(settings);
  t.equal(saved.status, 200);
  const body = (await saved.json()) as { zones: { networks?: string[] }[] };
  t.notMatch(JSON.stringify(body), /CorpWiFi/, 'the Wi-Fi name is not kept');
  t.match(body.zones[0]?.networks?.[0], /^[A-Za-z0-9_-]{22}$/);

  const bad = await put({ ...settings, quietHours: { from: '22:00', to: '7am' } });
  t.equal(bad.status, 400);
  t.match(await bad.json(), { code: 'invalid_request' });
  t.same(await (await service.api('GET', '/v1/me/settings', { token: aliceToken })).json(), body, 'a refused update changes nothing');

  // The phone joins the office Wi-Fi: the owner is placed there, and sees why.
  const before = accepted();
  // Dated just after the OwnTracks transition, so it is the newest evidence.
  await publish({ kind: 'network', at: new Date(clock() + 1500).toISOString(), connection: 'wifi', ssid: 'CorpWiFi-5G' });
  await waitFor(() => accepted() > before, 'the network event');
  const view = (await (await service.api('GET', '/v1/me/presence', { token: aliceToken })).json()) as Record<string, unknown>;
  t.match(view, {
    entity: 'pres:alice@presence.local',
    place: { zone: 'Office', placeType: 'office', sphere: 'work' },
    timeOffsetMinutes: Number,
    devices: [{ id: alice.device.id, class: 'phone', basic: 'open' }],
    trace: { place: { rule: 'on a Wi-Fi network tagged for the zone', signals: [`${alice.device.id}/network`] } },
  });
  t.notMatch(JSON.stringify(await (await read(bob.token)).json()), /Office|trace/, 'watchers see none of it');
  t.equal((await service.api('GET', '/v1/me/presence', { token: bob.token })).status, 403, 'not for watchers');
});

t.test('a manual status and app sessions, with expiry, stored and restored', async (t) => {
  const aliceToken = await ownerToken(service, 'alice');
  const put = await service.api('PUT', '/v1/me/status', { token: aliceToken, body: { availability: 'do-not-disturb', expiresInSeconds: 600 } });
  t.equal(put.status, 200);
  t.match(await put.json(), { source: 'manual', availability: 'do-not-disturb' });
  t.match(await (await read(bob.token)).json(), { availability: 'do-not-disturb' }, 'watchers see it at once');
  const session = await service.api('PUT', '/v1/me/sessions/softphone', { token: aliceToken, body: { availability: 'busy', activities: ['on-the-phone'], expiresInSeconds: 1200 } });
  t.equal(session.status, 200);
  t.match(await (await read(bob.token)).json(), { availability: 'do-not-disturb' }, 'the manual status beats the session');
  t.equal((await service.api('PUT', '/v1/me/status', { token: aliceToken, body: { availability: 'busy', expiresInSeconds: 5 } })).status, 400, 'too brief');
  t.equal((await service.api('PUT', '/v1/me/status', { token: bob.token, body: { availability: 'busy', expiresInSeconds: 600 } })).status, 403, 'not for watchers');

  await service.close();
  service = await startTestService(root, config, { clock });
  t.match(await (await read(bob.token)).json(), { availability: 'do-not-disturb' }, 'restored after a restart');

  offsetMs = 601_000; // the manual status expires; the session still runs
  const now = clock();
  const before = accepted();
  await publish({ kind: 'user-input', at: new Date(now).toISOString(), state: 'active' });
  await waitFor(() => accepted() > before, 'a heartbeat');
  t.match(await (await read(bob.token)).json(), { availability: 'busy', activities: ['on-the-phone'] }, 'the session shows once the status expired');
  t.equal((await service.api('DELETE', '/v1/me/sessions/softphone', { token: aliceToken })).status, 204);
  t.equal((await service.api('DELETE', '/v1/me/sessions/softphone', { token: aliceToken })).status, 404);
  const after = (await (await read(bob.token)).json()) as { availability: string; activities?: string[] };
  t.not(after.availability, 'do-not-disturb', 'the manual status is gone');
  t.notOk(after.activities?.includes('on-the-phone'), 'and the session with its call');
  offsetMs = 0;
});

t.test('every watcher read is in the owner access log, granted or withheld', async (t) => {
  const aliceToken = await ownerToken(service, 'alice');
  const carol = await addWatcher(service, 'Carol');
  const dave = await addWatcher(service, 'Dave'); // no rule: withheld
  await addRule(service, 'alice', carol.id, 'allow');
  const since = clock();
  await read(carol.token);
  await read(carol.token);
  await read(dave.token, 'application/pidf+xml');
  const response = await service.api('GET', '/v1/me/access-log?limit=50', { token: aliceToken });
  t.equal(response.status, 200);
  const { entries } = (await response.json()) as { entries: { watcherId: string; watcherName: string; at: string; outcome: string; fields: string[]; count: number }[] };
  const recent = entries.filter((e) => Date.parse(e.at) >= since - (since % 1000));
  const carols = recent.filter((e) => e.watcherId === carol.id);
  t.equal(carols.reduce((n, e) => n + e.count, 0), 2, "both of Carol's reads (coalesced per second)");
  t.match(carols[0], { watcherName: 'Carol', outcome: 'shown', fields: ['basic', 'availability', 'activities'] });
  t.match(entries.find((e) => e.watcherId === dave.id), { watcherName: 'Dave', outcome: 'withheld', fields: [], count: 1 }, 'a watcher with no consent is logged too');
  t.equal((await service.api('GET', '/v1/me/access-log', { token: bob.token })).status, 403, 'not for watchers');
  t.equal((await service.api('GET', '/v1/me/access-log?limit=5000', { token: aliceToken })).status, 400);

  // Pages of one follow the cursor through entries of the same second without a gap or a repeat.
  const all = (await (await service.api('GET', '/v1/me/access-log?limit=1000', { token: aliceToken })).json()) as { entries: unknown[] };
  const paged: unknown[] = [];
  let cursor: string | undefined;
  do {
    const page = (await (await service.api('GET', `/v1/me/access-log?limit=1${cursor ? `&cursor=${cursor}` : ''}`, { token: aliceToken })).json()) as { entries: unknown[]; next?: string };
    paged.push(...page.entries);
    cursor = page.next;
  } while (cursor);
  t.same(paged, all.entries, 'paging by cursor yields exactly the full list');
  const exported = await service.api('GET', '/v1/me/access-log/export', { token: aliceToken });
  t.equal(exported.headers.get('content-type'), 'application/x-ndjson; charset=utf-8');
  t.same(
    (await exported.text())
      .trimEnd()
      .split('\n')
      .map((line) => JSON.parse(line) as unknown),
    all.entries,
    'the NDJSON export holds the same entries',
  );
  t.equal((await service.api('GET', '/v1/me/access-log/export', { token: bob.token })).status, 403);
  t.equal((await service.api('GET', '/v1/me/access-log?cursor=bm90LWEtY3Vyc29y', { token: aliceToken })).status, 400, 'a forged cursor is refused');
});

t.test('access-log entries past AUDIT_RETENTION_DAYS are purged', async (t) => {
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  t.teardown(() => db.end());
  await db.query(`insert into access_log (owner_id, watcher_id, at, action, outcome, fields, count) values ($1, $2, now() - interval '91 days', 'read', 'shown', '[]', 1)`, [alice.owner.id, bob.id]);
  const old = async () => (await db.query(`select count(*)::int as n from access_log where at < now() - interval '90 days'`)).rows[0].n as number;
  t.equal(await old(), 1);
  await service.close();
  service = await startTestService(root, config, { clock }); // the purge runs at start (in the background), then hourly
  await waitFor(async () => (await old()) === 0, 'the 91-day-old entry to be purged (default retention 90 days)');
  t.pass('purged');
});
