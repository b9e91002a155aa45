import { connectAsync } from 'mqtt';
import t from 'tap';
import { MQTT_TEST_URL, createTestDatabase, uniqueName, waitFor } from '../helpers/env.js';
import { validatePidf } from '../helpers/pidf-validator.js';
import { addRule, addWatcher, ownerToken, provision, startTestService, testConfig } from '../helpers/service.js';
import { openStream } from '../helpers/sse.js';

/**
 * The consent engine wired into the API, on Mosquitto and PostgreSQL: the
 * access-request flow and watcher information (RFC 3857/3858), groups and
 * domains, pres-rules import and export (RFC 5025), preview as contact,
 * rule changes narrowing open streams, "until I arrive", and location at a
 * granted precision.
 */
const config = await testConfig(t, { DATABASE_URL: await createTestDatabase(t), MQTT_URL: MQTT_TEST_URL, MQTT_TOPIC_ROOT: uniqueName('c'), OWNTRACKS_TOPIC_ROOT: uniqueName('cot') });
const service = await startTestService(t, config);
const alice = await provision(service, 'alice');
const aliceToken = await ownerToken(service, 'alice');
const device = await connectAsync(MQTT_TEST_URL, { clientId: uniqueName('dev'), clean: true });
t.teardown(() => device.endAsync());
const publish = (event: Record<string, unknown>) => device.publishAsync(alice.device.topic, JSON.stringify({ ...event, at: new Date().toISOString() }), { qos: 1 });
const me = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => service.api(method, path, { token: aliceToken, body, headers });
const read = (token: string, accept = 'application/json') => service.api('GET', '/v1/presence/alice', { token, headers: { accept } });
const json = async (response: Response) => (await response.json()) as Record<string, unknown>;

t.test('access requests: pending until approved; a denied watcher cannot tell; a block refuses the request itself', async (t) => {
  const carol = await addWatcher(service, 'Carol');
  const dave = await addWatcher(service, 'Dave');
  const eve = await addWatcher(service, 'Eve');
  const ask = (token: string, body: unknown = { message: 'It is me' }) => service.api('POST', '/v1/presence/alice/access-requests', { token, body });

  const asked = await ask(carol.token);
  t.equal(asked.status, 202);
  const unknown = await service.api('POST', '/v1/presence/nobody-here/access-requests', { token: carol.token, body: { message: 'It is me' } });
  t.equal(unknown.status, 202, 'an unknown owner answers as one who has not answered');
  const headerNames = (response: Response) => [...response.headers.keys()].sort();
  t.same(headerNames(unknown), headerNames(asked));
  t.same(await asked.json(), { status: 'pending' });
  t.same(await unknown.json(), { status: 'pending' });
  t.equal((await ask(dave.token)).status, 202);
  await addRule(service, 'alice', eve.id, 'block');
  const refused = await ask(eve.token);
  t.equal(refused.status, 403);
  t.equal((await json(refused)).code, 'request_refused');

  const listed = (await json(await me('GET', '/v1/me/watchers'))).watchers as { watcherId: string; status: string; event: string; message: string | null }[];
  t.match(listed.find((w) => w.watcherId === carol.id), { status: 'pending', event: 'subscribe', message: 'It is me' });
  t.match(listed.find((w) => w.watcherId === eve.id), { status: 'terminated', event: 'rejected' });

  const approved = await me('POST', `/v1/me/watchers/${carol.id}/approve`, { transformations: { availability: true, activities: true } });
  t.equal(approved.status, 201);
  t.match(await approved.json(), { conditions: { identity: { watchers: [carol.id] } }, actions: { subHandling: 'allow' } });
  t.equal((await me('POST', `/v1/me/watchers/${carol.id}/approve`)).status, 409, 'approving twice adds no second rule');
  const again = await ask(carol.token);
  t.equal(again.status, 200);
  t.same(await again.json(), { status: 'active' });

  t.equal((await me('POST', `/v1/me/watchers/${dave.id}/deny`)).status, 204);
  const daveAgain = await ask(dave.token);
  t.equal(daveAgain.status, 202, 'a denied watcher sees the same answer as a pending one');
  t.same(await daveAgain.json(), { status: 'pending' });
  t.equal((await me('POST', `/v1/me/watchers/${carol.id}/deny`)).status, 409, 'a watcher a rule allows is not denied behind its back');

  const xmlResponse = await me('GET', '/v1/me/watchers', undefined, { accept: 'application/watcherinfo+xml' });
  t.equal(xmlResponse.headers.get('content-type'), 'application/watcherinfo+xml; charset=utf-8');
  const xml = await xmlResponse.text();
  t.match(xml, new RegExp(`status="active" event="approved"[^>]*>urn:uuid:${carol.id}<`));
  t.match(xml, new RegExp(`status="terminated" event="rejected"[^>]*>urn:uuid:${dave.id}<`));
  const valid = await validatePidf({ watcherinfo: xml }, true);
  t.ok(valid.ok, valid.output);

  t.equal((await ask(carol.token, { message: 'x'.repeat(201) })).status, 400, 'a message is bounded');
  t.equal((await me('POST', `/v1/me/watchers/${(await addWatcher(service, 'Nobody')).id}/approve`)).status, 404, 'nothing to approve without a request');
});

t.test('groups and domains: rules name them; a group in use cannot be deleted', async (t) => {
  const fred = await addWatcher(service, 'Fred');
  const gina = await addWatcher(service, 'Gina', 'person', 'example.org');
  const hank = await addWatcher(service, 'Hank', 'person', 'example.org');
  const group = await json(await me('POST', '/v1/me/groups', { name: 'family', members: [fred.id] }));
  t.equal((await me('POST', '/v1/me/groups', { name: 'x', members: ['00000000-0000-4000-8000-000000000000'] })).status, 400, 'unknown members refused');
  const groupRule = await json(await me('POST', '/v1/me/rules', { conditions: { identity: { groups: [group.id] } }, actions: { subHandling: 'allow' }, transformations: { availability: true } }));
  await me('POST', '/v1/me/rules', { conditions: { identity: { domains: ['example.org'], except: { watchers: [hank.id] } } }, actions: { subHandling: 'allow' }, transformations: { availability: true } });
  await publish({ kind: 'call', state: 'in-call' });
  await waitFor(async () => (await json(await read(fred.token))).availability === 'busy', 'the group member sees the call');
  t.equal((await json(await read(gina.token))).availability, 'busy', 'the domain matches');
  t.equal((await json(await read(hank.token))).availability, 'offline', 'the exception does not');
  const conflict = await me('DELETE', `/v1/me/groups/${String(group.id)}`);
  t.equal(conflict.status, 409);
  t.same((await json(conflict)).details, [groupRule.id]);
  t.equal((await me('PUT', `/v1/me/groups/${String(group.id)}`, { name: 'family', members: [] })).status, 200);
  t.equal((await json(await read(fred.token))).availability, 'offline', 'removed from the group: nothing on the next read');
  t.equal((await me('PUT', '/v1/me/rules/00000000-0000-4000-8000-000000000000', { conditions: { identity: { anyAuthenticated: true } }, actions: { subHandling: 'allow' } })).status, 404);
});

t.test('pres-rules export validates and imports back; a refused document changes nothing', async (t) => {
  const before = await (await me('GET', '/v1/me/rules')).text();
  const exported = await me('GET', '/v1/me/rules', undefined, { accept: 'application/auth-policy+xml' });
  t.equal(exported.headers.get('content-type'), 'application/auth-policy+xml; charset=utf-8');
  const xml = await exported.text();
  const valid = await validatePidf({ rules: xml }, false);
  t.ok(valid.ok, valid.output);
  const reimported = await me('PUT', '/v1/me/rules', xml, { 'content-type': 'application/auth-policy+xml' });
  t.equal(reimported.status, 200);
  t.same(JSON.parse(await (await me('GET', '/v1/me/rules')).text()), JSON.parse(before), 'the same rules, ids and all');

  const hostile = '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy">&x;</cr:ruleset>';
  const unsupported = xml.replace('<cr:conditions>', '<cr:conditions><cr:sphere value="work"/><foo:bar xmlns:foo="urn:x-foo"/>');
  for (const [name, body] of [
    ['XXE', hostile],
    ['an unsupported condition', unsupported],
    ['not XML', 'hello'],
  ] as const) {
    const response = await me('PUT', '/v1/me/rules', body, { 'content-type': 'application/auth-policy+xml' });
    t.equal(response.status, 400, name);
    t.equal((await json(response)).code, 'invalid_document', name);
  }
  t.equal((await me('PUT', '/v1/me/rules', 'x', { 'content-type': 'text/plain' })).status, 415);
  t.same(JSON.parse(await (await me('GET', '/v1/me/rules')).text()), JSON.parse(before), 'nothing changed');
});

t.test('preview as contact: the very bytes the watcher gets, and the rules behind each field', async (t) => {
  const ivy = await addWatcher(service, 'Ivy');
  const first = await addRule(service, 'alice', ivy.id, 'allow', { availability: true, activities: false });
  const second = await addRule(service, 'alice', ivy.id, 'allow', { availability: false, activities: true });
  await publish({ kind: 'call', state: 'in-call' });
  await waitFor(async () => (await json(await read(ivy.token))).availability === 'busy', 'busy');
  const asWatcher = await read(ivy.token, 'application/pidf+xml');
  const preview = await me('GET', `/v1/me/preview/${ivy.id}`, undefined, { accept: 'application/pidf+xml' });
  t.equal(await preview.text(), await asWatcher.text());
  t.equal(preview.headers.get('etag'), asWatcher.headers.get('etag'));
  const explained = await json(await me('GET', `/v1/me/preview/${ivy.id}`));
  t.match(explained, { decision: 'allow', view: { availability: 'busy', activities: ['on-the-phone'] }, fields: { availability: [first.id], activities: [second.id] } });
  t.equal((await me('GET', '/v1/me/preview/00000000-0000-4000-8000-000000000000')).status, 404);
});

t.test('narrowing a rule narrows an open stream within a second', async (t) => {
  const jack = await addWatcher(service, 'Jack');
  const rule = await addRule(service, 'alice', jack.id, 'allow');
  await publish({ kind: 'call', state: 'in-call' });
  const stream = await openStream(`${service.httpUrl}/v1/presence/alice/stream`, jack.token);
  t.teardown(() => stream.close());
  t.match(JSON.parse((await stream.nth(1)).data), { availability: 'busy', activities: ['on-the-phone'] });
  const started = Date.now();
  const narrowed = await me('PUT', `/v1/me/rules/${rule.id}`, { conditions: { identity: { watchers: [jack.id] } }, actions: { subHandling: 'allow' }, transformations: { availability: true } });
  t.equal(narrowed.status, 200);
  t.same(JSON.parse((await stream.nth(2)).data), { entity: 'pres:alice@presence.local', basic: 'open', availability: 'busy' });
  t.ok(Date.now() - started < 1000, 'within a second');
});

t.test('share until I arrive, and location at the granted precision', async (t) => {
  const kate = await addWatcher(service, 'Kate');
  const settings = await me('PUT', '/v1/me/settings', { zones: [{ name: 'Home', sphere: 'home', placeType: 'residence', geofences: ['home'] }] });
  t.equal(settings.status, 200, await settings.clone().text());
  t.equal((await me('POST', '/v1/me/rules', { conditions: { identity: { watchers: [kate.id] }, untilArrivalAt: 'Nowhere' }, actions: { subHandling: 'allow' } })).status, 400, 'an unknown zone is refused');
  await me('POST', '/v1/me/rules', { conditions: { identity: { watchers: [kate.id] }, untilArrivalAt: 'Home' }, actions: { subHandling: 'allow' }, transformations: { availability: true, location: 'km' } });
  await publish({ kind: 'location', latitude: 48.208176, longitude: 16.373819, accuracy: 10 });
  const onTheWay = await waitFor(async () => {
    const v = await json(await read(kate.token));
    return v.location ? v : undefined;
  }, 'the location on the way');
  t.match(onTheWay.location, { precision: 'km' });
  t.not((onTheWay.location as { latitude: number }).latitude, 48.208176, 'snapped, not the fix');
  await publish({ kind: 'geofence', zone: 'home', transition: 'enter' });
  await waitFor(async () => (await json(await read(kate.token))).availability === 'offline', 'arrived: nothing shown');
  await waitFor(async () => ((await json(await me('GET', '/v1/me/rules'))).rules as { arrivedAt?: string }[]).some((r) => r.arrivedAt), 'the arrival is recorded');
  await publish({ kind: 'geofence', zone: 'home', transition: 'leave' });
  await publish({ kind: 'location', latitude: 48.3, longitude: 16.4, accuracy: 10 });
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.equal((await json(await read(kate.token))).availability, 'offline', 'left again: the rule is spent');

  // Writing the rules back without the arrival (a client that drops the field) does not revive the rule.
  const listed = (await json(await me('GET', '/v1/me/rules'))).rules as { id: string; arrivedAt?: string }[];
  const stripped = listed.map(({ arrivedAt: _arrivedAt, ...rule }) => rule);
  t.equal((await me('PUT', '/v1/me/rules', { rules: stripped })).status, 200);
  t.ok(((await json(await me('GET', '/v1/me/rules'))).rules as { arrivedAt?: string }[]).some((r) => r.arrivedAt), 'still spent');
  t.equal((await me('PUT', '/v1/me/rules', { rules: listed })).status, 200, 'and the JSON the service gives is accepted back as it is');
  t.equal((await json(await read(kate.token))).availability, 'offline');

  // A zone an unspent "until I arrive" rule needs cannot be removed from the settings.
  await me('PUT', '/v1/me/settings', { zones: [{ name: 'Home', sphere: 'home', placeType: 'residence', geofences: ['home'] }, { name: 'Office', geofences: ['office'] }] });
  const pending = await json(await me('POST', '/v1/me/rules', { conditions: { identity: { watchers: [kate.id] }, untilArrivalAt: 'Office' }, actions: { subHandling: 'allow' } }));
  const orphaning = await me('PUT', '/v1/me/settings', { zones: [{ name: 'Home', geofences: ['home'] }] });
  t.equal(orphaning.status, 409);
  t.same((await json(orphaning)).details, [pending.id]);
});
