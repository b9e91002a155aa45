import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { compactVerify, createLocalJWKSet } from 'jose';
import { connectAsync } from 'mqtt';
import t from 'tap';
import { MQTT_TEST_URL, createTestDatabase, uniqueName, waitFor } from '../helpers/env.js';
import { addRule, addWatcher, ownerToken, provision, startTestService, testConfig } from '../helpers/service.js';

/**
 * Webhooks on Mosquitto and PostgreSQL: signed (JWS, verified against the
 * service's JWKS), sent only when the watcher's view changes, retried after
 * failures, audited as outbound publications, stopped when deleted.
 */
const received: { body: string; at: number }[] = [];
let failNext = 0;
const receiver = createServer((request: IncomingMessage, response) => {
  let body = '';
  request.on('data', (chunk: Buffer) => (body += chunk.toString()));
  request.on('end', () => {
    if (failNext > 0) {
      failNext -= 1;
      response.writeHead(503).end();
      return;
    }
    received.push({ body, at: Date.now() });
    response.writeHead(204).end();
  });
});
await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
t.teardown(() => new Promise<void>((resolve) => receiver.close(() => resolve())));
const hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;

const config = await testConfig(t, {
  DATABASE_URL: await createTestDatabase(t),
  MQTT_URL: MQTT_TEST_URL,
  MQTT_TOPIC_ROOT: uniqueName('w'),
  OWNTRACKS_TOPIC_ROOT: uniqueName('wot'),
  // The operator's own public addresses (documentation ranges here), refused even with WEBHOOK_ALLOW_HTTP on.
  WEBHOOK_REFUSE_NETWORKS: '203.0.113.0/24,2001:db8::/32',
});
const service = await startTestService(t, config, { webhookRetry: { baseMs: 50, maxAttempts: 4, timeoutMs: 2000 } });
const alice = await provision(service, 'alice');
const app = await addWatcher(service, 'Calendar app', 'app');
await addRule(service, 'alice', app.id, 'allow', { availability: true, activities: false });
const device = await connectAsync(MQTT_TEST_URL, { clientId: uniqueName('dev'), clean: true });
t.teardown(() => device.endAsync());
const publish = (event: Record<string, unknown>) => device.publishAsync(alice.device.topic, JSON.stringify({ ...event, at: new Date().toISOString() }), { qos: 1 });
const jwks = createLocalJWKSet((await (await service.api('GET', '/.well-known/jwks.json')).json()) as { keys: [] });
const verified = async (i: number) => {
  const { payload, protectedHeader } = await compactVerify(received[i]?.body ?? '', jwks);
  t.equal(protectedHeader.alg, 'ES256');
  return JSON.parse(new TextDecoder().decode(payload)) as { view: Record<string, unknown>; sub: string; etag: string; webhook: string };
};

t.test('signed deliveries of visible changes only, retried after failures, audited', async (t) => {
  const created = await service.api('POST', '/v1/webhooks', { token: app.token, body: { handle: 'alice', url: hookUrl } });
  t.equal(created.status, 201);
  const hook = (await created.json()) as { id: string };
  await waitFor(() => received.length >= 1, 'the current view at once');
  const first = await verified(0);
  t.same(first.view, { entity: 'pres:alice@presence.local', basic: 'closed', availability: 'offline' });
  t.equal(first.webhook, hook.id);

  failNext = 2;
  await publish({ kind: 'call', state: 'in-call' });
  await waitFor(() => received.length >= 2, 'delivered after two 503s');
  t.match((await verified(1)).view, { availability: 'busy' });
  t.notOk('activities' in (await verified(1)).view, 'only what the rule grants');

  // A meeting starting while on the phone changes nothing the app can see.
  const now = Date.now();
  await publish({ kind: 'calendar', state: 'busy', start: new Date(now - 60_000).toISOString(), end: new Date(now + 3_600_000).toISOString() });
  await publish({ kind: 'call', state: 'idle' });
  await publish({ kind: 'calendar', state: 'free', start: new Date(now - 60_000).toISOString(), end: new Date(now + 3_600_000).toISOString() });
  await waitFor(() => received.length >= 3, 'the change to available');
  t.match((await verified(2)).view, { availability: 'available' });
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.equal(received.length, 3, 'no delivery for the invisible changes');

  const log = (await (await service.api('GET', '/v1/me/access-log', { token: await ownerToken(service, 'alice') })).json()) as { entries: { action: string; outcome: string; fields: string[]; count: number }[] };
  const published = log.entries.filter((e) => e.action === 'publish');
  t.equal(published.reduce((sum, e) => sum + e.count, 0), 5, 'every POST that carried a view (the two answered 503 too) is an outbound publication in the access log');
  t.ok(published.some((e) => e.outcome === 'shown' && e.fields.includes('availability')));

  const listed = (await (await service.api('GET', '/v1/webhooks', { token: app.token })).json()) as { webhooks: { id: string; handle: string }[] };
  t.same(listed.webhooks.map((w) => [w.id, w.handle]), [[hook.id, 'alice']]);
  t.equal((await service.api('DELETE', `/v1/webhooks/${hook.id}`, { token: app.token })).status, 204);
  await publish({ kind: 'call', state: 'in-call' });
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.equal(received.length, 3, 'nothing after deletion');
});

t.test('bad registrations are refused', async (t) => {
  const cases: [unknown, number][] = [
    [{ handle: 'alice', url: 'not a url' }, 400],
    [{ handle: 'alice', url: 'ftp://example.com/x' }, 400],
    [{ handle: 'alice', url: 'https://user:pw@example.com/x' }, 400],
    [{ handle: 'alice', url: 'https://example.com/x#frag' }, 400],
    [{ handle: 'alice', url: hookUrl, extra: 1 }, 400],
    [{ handle: 'alice', url: 'https://203.0.113.8/hook' }, 400],
    [{ handle: 'alice', url: 'http://[2001:db8::8]:8080/hook' }, 400],
  ];
  for (const [body, status] of cases) t.equal((await service.api('POST', '/v1/webhooks', { token: app.token, body })).status, status, JSON.stringify(body));
  t.equal((await service.api('POST', '/v1/webhooks', { token: await ownerToken(service, 'alice'), body: { handle: 'alice', url: hookUrl } })).status, 403, 'watchers only');
});

t.test("an erased owner's webhooks stop: nothing is sent after the erasure, not even the owner going offline", async (t) => {
  const erin = await provision(service, 'erin');
  await addRule(service, 'erin', app.id, 'allow', { availability: true, activities: false });
  const created = await service.api('POST', '/v1/webhooks', { token: app.token, body: { handle: 'erin', url: hookUrl } });
  t.equal(created.status, 201);
  const hook = (await created.json()) as { id: string };
  const forErin = async () => {
    const out = [];
    for (let i = 0; i < received.length; i++) if ((await verified(i)).webhook === hook.id) out.push(await verified(i));
    return out;
  };
  await waitFor(async () => (await forErin()).length >= 1 || undefined, "erin's current view");
  await device.publishAsync(erin.device.topic, JSON.stringify({ kind: 'call', state: 'in-call', at: new Date().toISOString() }), { qos: 1 });
  await waitFor(async () => (await forErin()).length >= 2 || undefined, 'erin busy');
  t.match((await forErin())[1]?.view, { availability: 'busy' });

  t.equal((await service.api('DELETE', '/v1/me?confirm=erin', { token: await ownerToken(service, 'erin') })).status, 204);
  await device.publishAsync(erin.device.topic, JSON.stringify({ kind: 'call', state: 'idle', at: new Date().toISOString() }), { qos: 1 });
  await new Promise((resolve) => setTimeout(resolve, 500));
  t.same((await forErin()).slice(2).map((d) => d.view), [], 'no delivery after the erasure');
  const listed = (await (await service.api('GET', '/v1/webhooks', { token: app.token })).json()) as { webhooks: { id: string }[] };
  t.notOk(listed.webhooks.some((w) => w.id === hook.id), "the watcher's list no longer has it");
});

t.test('a handle no owner holds: registered and sent the offline view like any withheld one; the owner who takes the handle later gets the webhook', async (t) => {
  const deliveriesOf = async (id: string) => {
    const out = [];
    for (let i = 0; i < received.length; i++) if ((await verified(i)).webhook === id) out.push(await verified(i));
    return out;
  };
  await provision(service, 'gina'); // no rule for the app: withheld
  const register = (handle: string) => service.api('POST', '/v1/webhooks', { token: app.token, body: { handle, url: hookUrl } });
  const known = await register('gina');
  const unheld = await register('frank');
  t.equal(unheld.status, 201, 'no 404: registering does not tell whether a handle exists');
  t.same([...unheld.headers.keys()].sort(), [...known.headers.keys()].sort());
  const [knownHook, unheldHook] = [(await known.json()) as { id: string }, (await unheld.json()) as { id: string; handle: string }];
  t.equal(unheldHook.handle, 'frank');
  const listed = (await (await service.api('GET', '/v1/webhooks', { token: app.token })).json()) as { webhooks: { id: string; handle: string }[] };
  t.match(listed.webhooks.find((w) => w.id === unheldHook.id), { handle: 'frank' });
  await waitFor(async () => ((await deliveriesOf(knownHook.id)).length >= 1 && (await deliveriesOf(unheldHook.id)).length >= 1) || undefined, 'both sent at once');
  const [withheldView, unheldView] = [(await deliveriesOf(knownHook.id))[0]?.view ?? {}, (await deliveriesOf(unheldHook.id))[0]?.view ?? {}];
  t.match(unheldView, { availability: 'offline', entity: /frank/ });
  const { entity: _a, ...withheldRest } = withheldView;
  const { entity: _b, ...unheldRest } = unheldView;
  t.same(unheldRest, withheldRest, 'the same view but for the entity');

  const frank = await provision(service, 'frank');
  await addRule(service, 'frank', app.id, 'allow', { availability: true, activities: false });
  await device.publishAsync(frank.device.topic, JSON.stringify({ kind: 'call', state: 'in-call', at: new Date().toISOString() }), { qos: 1 });
  await waitFor(async () => (await deliveriesOf(unheldHook.id)).some((d) => d.view.availability === 'busy') || undefined, "frank's view once frank exists and allows it");
  const exported = await (await service.api('GET', '/v1/me/export', { token: await ownerToken(service, 'frank') })).text();
  t.match(exported, unheldHook.id, "the webhook is in frank's data now");
});
