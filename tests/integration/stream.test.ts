import { connectAsync } from 'mqtt';
import t from 'tap';
import { MQTT_TEST_URL, createTestDatabase, uniqueName, waitFor } from '../helpers/env.js';
import { addRule, addWatcher, ownerToken, provision, startTestService, testConfig } from '../helpers/service.js';
import { openStream } from '../helpers/sse.js';
import { issueToken } from '../../core/identity/tokens.js';
import { MAX_STREAMS_PER_CALLER } from '../../api/routes/stream.js';

/**
 * Live updates over Server-Sent Events, on Mosquitto and PostgreSQL: only
 * changes a watcher can see reach them, revocation narrows the stream at
 * once, Last-Event-ID resumes without a repeat, and shutdown ends streams.
 */
const config = await testConfig(t, { DATABASE_URL: await createTestDatabase(t), MQTT_URL: MQTT_TEST_URL, MQTT_TOPIC_ROOT: uniqueName('s'), OWNTRACKS_TOPIC_ROOT: uniqueName('sot') });
const service = await startTestService(t, config);
const alice = await provision(service, 'alice');
const bob = await addWatcher(service, 'Bob'); // sees availability and activities
const vera = await addWatcher(service, 'Vera'); // sees availability only
const bobRule = await addRule(service, 'alice', bob.id, 'allow');
await addRule(service, 'alice', vera.id, 'allow', { availability: true, activities: false });
const device = await connectAsync(MQTT_TEST_URL, { clientId: uniqueName('dev'), clean: true });
t.teardown(() => device.endAsync());
const publish = (event: Record<string, unknown>) => device.publishAsync(alice.device.topic, JSON.stringify({ ...event, at: new Date().toISOString() }), { qos: 1 });
const url = `${service.httpUrl}/v1/presence/alice/stream`;
const data = (e: { data: string }) => JSON.parse(e.data) as Record<string, unknown>;

t.test('only changes a watcher can see reach their stream', async (t) => {
  const bobStream = await openStream(url, bob.token);
  const veraStream = await openStream(url, vera.token);
  t.teardown(() => {
    bobStream.close();
    veraStream.close();
  });
  t.equal(bobStream.response.headers.get('content-type'), 'text/event-stream; charset=utf-8');
  t.same(data(await bobStream.nth(1)), { entity: 'pres:alice@presence.local', basic: 'closed', availability: 'offline' }, 'the current view first');
  await veraStream.nth(1);

  const now = Date.now();
  await publish({ kind: 'call', state: 'in-call' });
  t.match(data(await bobStream.nth(2)), { availability: 'busy', activities: ['on-the-phone'] });
  t.same(data(await veraStream.nth(2)), { entity: 'pres:alice@presence.local', basic: 'open', availability: 'busy' });
  // Invisible to Vera: a meeting begins, the call ends (busy throughout).
  await publish({ kind: 'calendar', state: 'busy', start: new Date(now - 60_000).toISOString(), end: new Date(now + 3_600_000).toISOString() });
  await publish({ kind: 'call', state: 'idle' });
  await publish({ kind: 'calendar', state: 'free', start: new Date(now - 60_000).toISOString(), end: new Date(now + 3_600_000).toISOString() });
  t.match(data(await bobStream.nth(5)), { availability: 'available' }, 'Bob saw meeting, call end and free');
  t.same(data(await veraStream.nth(3)), { entity: 'pres:alice@presence.local', basic: 'open', availability: 'available' }, 'Vera only the change to available');
  t.equal(veraStream.events.length, 3, 'no trace of the changes she cannot see');
  t.equal(new Set(bobStream.events.map((e) => e.id)).size, 5, 'each event has its own id');

  // A repeated report and a heartbeat change nothing anyone sees: no event.
  // Proof by order: the next event on each stream is the visible change that follows them.
  await publish({ kind: 'call', state: 'idle' });
  await publish({ kind: 'user-input', state: 'active' });
  await publish({ kind: 'call', state: 'in-call' });
  t.match(data(await bobStream.nth(6)), { availability: 'busy', activities: ['on-the-phone'] });
  t.same(data(await veraStream.nth(4)), { entity: 'pres:alice@presence.local', basic: 'open', availability: 'busy' });
});

t.test('Last-Event-ID resumes without repeating the current view', async (t) => {
  const first = await openStream(url, vera.token);
  const current = await first.nth(1);
  first.close();
  const resumed = await openStream(url, vera.token, current.id);
  t.teardown(() => resumed.close());
  await publish({ kind: 'call', state: 'idle' }); // alice was left on the phone
  t.same(data(await resumed.nth(1)), { entity: 'pres:alice@presence.local', basic: 'open', availability: 'available' }, 'the first event is the change, not a repeat');
});

t.test('revoking a rule narrows an open stream at once; streams are in the access log', async (t) => {
  const stream = await openStream(url, bob.token);
  t.teardown(() => stream.close());
  t.match(data(await stream.nth(1)), { basic: 'open' });
  const revoked = await service.api('DELETE', `/v1/admin/owners/alice/rules/${bobRule.id}`, { token: service.adminToken });
  t.equal(revoked.status, 204);
  t.same(data(await stream.nth(2, 1000)), { entity: 'pres:alice@presence.local', basic: 'closed', availability: 'offline' }, 'within a second: the offline view');
  stream.close();

  const token = await ownerToken(service, 'alice');
  await waitFor(async () => {
    const log = (await (await service.api('GET', '/v1/me/access-log?limit=100', { token })).json()) as { entries: { watcherId: string; action: string }[] };
    const bobs = log.entries.filter((e) => e.watcherId === bob.id).map((e) => e.action);
    return bobs.includes('stream-open') && bobs.includes('stream-event') && bobs.includes('stream-close') && bobs;
  }, 'stream-open, each stream-event and stream-close in the access log');
  t.pass('recorded');
});

t.test('a stream ends when its token expires; streams per caller are limited', async (t) => {
  const { token } = await issueToken(service.signingKey, config.tokenIssuer, { kind: 'watcher', subject: vera.id, scopes: ['presence:read'], ttlSeconds: 2 }, Date.now());
  const shortLived = await openStream(url, token);
  await shortLived.nth(1);
  await waitFor(() => shortLived.ended(), 'the stream to end with its token', 5000);
  t.pass('ended at expiry');

  const streams = await Promise.all(Array.from({ length: MAX_STREAMS_PER_CALLER }, () => openStream(url, vera.token)));
  t.teardown(() => streams.forEach((s) => s.close()));
  await Promise.all(streams.map((s) => s.nth(1)));
  const refused = await fetch(url, { headers: { authorization: `Bearer ${vera.token}`, accept: 'text/event-stream' } });
  t.equal(refused.status, 429);
  t.match(await refused.json(), { code: 'too_many_requests' });
});

t.test('shutdown ends open streams', async (t) => {
  const stream = await openStream(url, vera.token);
  await stream.nth(1);
  await service.close();
  await waitFor(() => stream.ended(), 'the stream to end');
  t.pass('closed without waiting for the client');
});
