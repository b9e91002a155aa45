import { connect } from 'node:net';
import t from 'tap';
import { CACHED_READS } from '../../api/fast-read.js';
import { HTTP_DURATION } from '../../api/server.js';
import { addRule, addWatcher, ownerToken, provision, startTestService, testConfig } from '../helpers/service.js';

/**
 * The cached read path (api/fast-read.ts) answers GET /v1/presence/{handle}
 * for tokens verified before, without Fastify. It must be the same read:
 * the same status, headers and bytes as the route (the first read with a
 * token goes through the route, the next ones through the cached path), the
 * same consent, the same access log, and every case it does not handle
 * handed to the route unchanged. On the embedded defaults (PGlite, aedes).
 */
const service = await startTestService(t, await testConfig(t));
await provision(service, 'alice');
await provision(service, 'bob');
const aliceToken = await ownerToken(service, 'alice');
const status = await service.api('PUT', '/v1/me/status', { token: aliceToken, body: { availability: 'busy', activities: ['meeting'], note: 'Standup', expiresInSeconds: 3600 } });
// No assertion at the top level: tap would end the root test before the subtests below.
if (status.status !== 200) throw new Error(`manual status not set: ${status.status} ${await status.text()}`);
const carol = await addWatcher(service, 'Carol');
const carolRule = await addRule(service, 'alice', carol.id, 'allow', { availability: true, activities: true });

const cachedReads = () => service.metrics.value(CACHED_READS);
/** Another token for the same watcher: not in the verified cache yet, so its first read takes the route. */
const freshWatcherToken = async (watcherId: string) =>
  ((await (await service.api('POST', '/v1/admin/tokens', { token: service.adminToken, body: { kind: 'watcher', subject: watcherId } })).json()) as { token: string }).token;

interface Seen {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
}
async function seen(response: Response): Promise<Seen> {
  const headers: Record<string, string> = {};
  response.headers.forEach((value, name) => {
    if (name !== 'date') headers[name] = value;
  });
  return { status: response.status, headers, body: await response.text() };
}
/** The route's answer (a token's first read), then the cached path's (its second), and how many reads the cached path answered. */
async function bothPaths(path: string, headers: Record<string, string> = {}) {
  const token = await freshWatcherToken(carol.id);
  const before = cachedReads();
  const route = await seen(await service.api('GET', path, { token, headers }));
  const afterRoute = cachedReads();
  const cached = await seen(await service.api('GET', path, { token, headers }));
  return { route, cached, routeCounted: afterRoute - before, cachedCounted: cachedReads() - afterRoute };
}

t.test('a read: the same status, headers and bytes on both paths, PIDF and JSON', async (t) => {
  const pidf = await bothPaths('/v1/presence/alice');
  t.equal(pidf.routeCounted, 0, 'the first read with a token takes the route');
  t.equal(pidf.cachedCounted, 1, 'the next one the cached path');
  t.equal(pidf.route.status, 200);
  t.match(pidf.route.body, /<rpid:meeting\/>/);
  t.same(pidf.cached, pidf.route);
  t.same(Object.keys(pidf.cached.headers), Object.keys(pidf.route.headers), 'headers in the same order');

  const json = await bothPaths('/v1/presence/alice', { accept: 'application/json' });
  t.equal(json.cachedCounted, 1);
  t.match(JSON.parse(json.route.body), { availability: 'busy' });
  t.same(json.cached, json.route);
});

t.test('a revalidation: the same 304 on both paths', async (t) => {
  const { route } = await bothPaths('/v1/presence/alice');
  const etag = route.headers.etag ?? '';
  const revalidated = await bothPaths('/v1/presence/alice', { 'if-none-match': `W/"other", ${etag}` });
  t.equal(revalidated.route.status, 304);
  t.equal(revalidated.route.body, '');
  t.equal(revalidated.cachedCounted, 1);
  t.same(revalidated.cached, revalidated.route);
});

t.test('an unknown owner and a blocking one: the same offline bytes on the cached path too (privacy invariant 1)', async (t) => {
  const unknown = await bothPaths('/v1/presence/nobody');
  t.equal(unknown.cachedCounted, 1);
  t.same(unknown.cached, unknown.route);
  // Bob has no rule for Carol: the cached path gives the offline view an unknown owner gets (bar the entity, which names the handle asked for).
  const bob = await bothPaths('/v1/presence/bob');
  t.equal(bob.cachedCounted, 1);
  t.same(bob.cached, bob.route);
  t.equal(bob.cached.body, unknown.route.body.replace('pres:nobody@', 'pres:bob@'), 'no consent reads exactly like no owner');
});

t.test('consent is evaluated on every cached read: a changed rule shows at once', async (t) => {
  const token = await freshWatcherToken(carol.id);
  t.match(await (await service.api('GET', '/v1/presence/alice', { token })).text(), /<rpid:meeting\/>/);
  const narrowed = await service.api('PUT', `/v1/admin/owners/alice/rules/${carolRule.id}`, {
    token: service.adminToken,
    body: { conditions: { identity: { watchers: [carol.id] } }, actions: { subHandling: 'allow' }, transformations: { availability: true } },
  });
  t.equal(narrowed.status, 200);
  const before = cachedReads();
  const body = await (await service.api('GET', '/v1/presence/alice', { token })).text();
  t.equal(cachedReads() - before, 1, 'answered on the cached path');
  t.match(body, /<rpid:busy\/>/, 'availability still shown');
  t.notMatch(body, /meeting/, 'the activity is withheld from the next read');
  await service.api('PUT', `/v1/admin/owners/alice/rules/${carolRule.id}`, {
    token: service.adminToken,
    body: { conditions: { identity: { watchers: [carol.id] } }, actions: { subHandling: 'allow' }, transformations: { availability: true, activities: true } },
  });
});

t.test('every cached read is in the owner access log', async (t) => {
  const dave = await addWatcher(service, 'Dave');
  await addRule(service, 'alice', dave.id, 'allow');
  for (let i = 0; i < 5; i++) t.equal((await service.api('GET', '/v1/presence/alice', { token: dave.token })).status, 200);
  const log = (await (await service.api('GET', '/v1/me/access-log?limit=100', { token: aliceToken })).json()) as { entries: { watcherId: string; action: string; outcome: string; count: number }[] };
  const daves = log.entries.filter((e) => e.watcherId === dave.id);
  t.equal(daves.reduce((n, e) => n + e.count, 0), 5, 'one read by the route and four by the cached path, all five recorded');
  t.ok(daves.every((e) => e.action === 'read' && e.outcome === 'shown'));
});

t.test('reads the cached path does not answer get the route’s answer', async (t) => {
  const token = await freshWatcherToken(carol.id);
  t.equal((await service.api('GET', '/v1/presence/alice', { token })).status, 200, 'token now verified');
  const before = cachedReads();
  const notAcceptable = await service.api('GET', '/v1/presence/alice', { token, headers: { accept: 'text/html' } });
  t.equal(notAcceptable.status, 406);
  t.match(await notAcceptable.json(), { code: 'not_acceptable' });
  const invalid = await service.api('GET', '/v1/presence/Alice', { token });
  t.equal(invalid.status, 400, 'a handle the schema refuses');
  t.match(await invalid.json(), { code: 'invalid_request' });
  t.equal((await service.api('GET', '/v1/presence/%61lice', { token })).status, 200, 'percent-encoded: decoded by the router');
  t.equal((await service.api('GET', '/v1/presence/alice?x=1', { token })).status, 200, 'a query string: the route');
  const head = await service.api('HEAD', '/v1/presence/alice', { token });
  t.equal(head.status, 200, 'HEAD: the route');
  t.equal((await service.api('GET', '/v1/presence/alice', { token: aliceToken })).status, 200, 'an owner reads their own (token verified when the status was set: cached)');
  const other = await service.api('GET', '/v1/presence/bob', { token: aliceToken });
  t.equal(other.status, 403, 'an owner reading someone else');
  t.match(await other.json(), { code: 'forbidden' });
  t.equal(cachedReads() - before, 1, 'only the owner’s read of their own presence was cached');

  // RFC 9112 §3.2: HTTP/1.1 without Host is the route's 400, whatever the token.
  const port = new URL(service.httpUrl).port;
  const raw = await new Promise<string>((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1', () => socket.write(`GET /v1/presence/alice HTTP/1.1\r\nauthorization: Bearer ${token}\r\nconnection: close\r\n\r\n`));
    let text = '';
    socket.on('data', (chunk) => (text += chunk.toString('latin1')));
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
  });
  t.match(raw, /^HTTP\/1\.1 400 /);
  t.match(raw, /invalid_request/);
});

t.test('a revoked watcher: the cached token stops working at once', async (t) => {
  const erin = await addWatcher(service, 'Erin');
  await addRule(service, 'alice', erin.id, 'allow');
  t.equal((await service.api('GET', '/v1/presence/alice', { token: erin.token })).status, 200);
  t.equal((await service.api('GET', '/v1/presence/alice', { token: erin.token })).status, 200);
  t.equal((await service.api('DELETE', `/v1/admin/watchers/${erin.id}`, { token: service.adminToken })).status, 204);
  const refused = await service.api('GET', '/v1/presence/alice', { token: erin.token });
  t.equal(refused.status, 401);
  t.match(await refused.json(), { code: 'unauthorized' });
});

t.test('cached reads are timed in the request duration histogram under their route', async (t) => {
  const metrics = await (await service.api('GET', '/metrics')).text();
  const count = metrics.match(/presence_http_request_duration_seconds_count\{method="GET",route="\/v1\/presence\/:handle",status="2xx"\} (\d+)/);
  t.ok(count, HTTP_DURATION);
  t.ok(Number(count?.[1]) >= cachedReads(), 'at least every cached 200 counted (the route adds its own)');
  t.match(metrics, /presence_http_cached_reads_total [1-9]/);
});
