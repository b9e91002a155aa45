import { request as httpRequest } from 'node:http';
import t from 'tap';
import { CACHED_PUBLISHES } from '../../api/fast-publish.js';
import { renderPidf } from '../../core/render-pidf.js';
import { addRule, addWatcher, ownerToken, provision, startTestService, testConfig } from '../helpers/service.js';

/**
 * The cached publish path (api/fast-publish.ts) answers PIDF publications
 * of owners whose token was verified before, without Fastify. It must be
 * the same publication: the same status, headers (in the same order) and
 * body shape as the route for the same request (the first request with a
 * token goes through the route, the next ones through the cached path),
 * the same errors in the catalog's shape, the change visible to watchers,
 * and every request it does not handle handed to the route unchanged. On
 * the embedded defaults (PGlite, aedes).
 */
const service = await startTestService(t, await testConfig(t));
const { owner } = await provision(service, 'alice');
const { owner: bob } = await provision(service, 'bob');
const watcher = await addWatcher(service, 'Carol');
await addRule(service, 'alice', watcher.id, 'allow', { availability: true, activities: true, note: true });

const cachedPublishes = () => service.metrics.value(CACHED_PUBLISHES);
const pidf = (activity: 'meeting' | 'on-the-phone', note: string, entity = owner.entity) => renderPidf({ entity, basic: 'open', availability: 'busy', activities: [activity], note });
const publish = (token: string, body: string | undefined, headers: Record<string, string> = {}, handle = 'alice') =>
  service.api('POST', `/v1/presence/${handle}`, { token, ...(body === undefined ? {} : { body }), headers: { ...(body === undefined ? {} : { 'content-type': 'application/pidf+xml' }), ...headers } });

interface Seen {
  readonly status: number;
  /** Every header but Date, as sent: names and values in order (fetch() would sort them). */
  readonly headers: readonly string[];
  readonly body: string;
}
/** A publication over node:http, which keeps the response's headers in the order they were written. */
function send(token: string, body: string | undefined, headers: Record<string, string> = {}, handle = 'alice'): Promise<Seen> {
  return new Promise((resolve, reject) => {
    const all: Record<string, string> = { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/pidf+xml', 'content-length': String(Buffer.byteLength(body)) }), ...headers };
    const req = httpRequest(new URL(`/v1/presence/${handle}`, service.httpUrl), { method: 'POST', headers: all }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        const raw: string[] = [];
        for (let i = 0; i < res.rawHeaders.length; i += 2) if (res.rawHeaders[i]?.toLowerCase() !== 'date') raw.push(`${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}`);
        resolve({ status: res.statusCode ?? 0, headers: raw, body: text });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}
const header = (s: Seen, name: string) => s.headers.find((h) => h.toLowerCase().startsWith(`${name}: `))?.slice(name.length + 2);
/** The tag-free shape of a success: the entity tag is new on every answer. */
const shape = (s: Seen) => ({ ...s, headers: s.headers.map((h) => h.replace(/^(etag): "[A-Za-z0-9_-]+"$/i, '$1: a tag')), body: s.body.replace(/"etag":"[A-Za-z0-9_-]+"/, '"etag":"a tag"') });

/** The same request, through the route (a fresh token's first use) and then through the cached path (its second). */
async function bothPaths(request: (token: string) => Promise<Seen>) {
  const token = await ownerToken(service, 'alice');
  const before = cachedPublishes();
  const route = await request(token);
  const afterRoute = cachedPublishes();
  const cached = await request(token);
  return { route, cached, routeCounted: afterRoute - before, cachedCounted: cachedPublishes() - afterRoute };
}

t.test('an initial publication and a modification: the same status, headers and body shape on both paths', async (t) => {
  const initial = await bothPaths((token) => send(token, pidf('meeting', 'Standup'), { expires: '600', event: 'presence' }));
  t.equal(initial.routeCounted, 0, 'a token’s first publication takes the route');
  t.equal(initial.cachedCounted, 1, 'its next one the cached path');
  t.equal(initial.route.status, 201);
  t.equal(header(initial.route, 'expires'), '600');
  t.match(initial.route.body, /^\{"etag":"[A-Za-z0-9_-]+","expires":600\}$/);
  t.same(shape(initial.cached), shape(initial.route), 'the same status, headers in the same order, and body');
  t.equal(header(initial.cached, 'etag'), `"${(JSON.parse(initial.cached.body) as { etag: string }).etag}"`, 'the ETag header and the body agree');

  // Modify each of the two publications, one through each path.
  const tags = [header(initial.route, 'etag') ?? '', header(initial.cached, 'etag') ?? ''];
  const modified = await bothPaths((token) => send(token, pidf('on-the-phone', 'Call later'), { 'if-match': tags.shift() ?? '' }));
  t.equal(modified.cachedCounted, 1);
  t.equal(modified.route.status, 200);
  t.same(shape(modified.cached), shape(modified.route));

  const view = (await (await service.api('GET', '/v1/presence/alice', { token: watcher.token, headers: { accept: 'application/json' } })).json()) as { activities: string[]; note?: string };
  t.same(view.activities, ['on-the-phone'], 'the modifications reach the watcher');
  t.equal(view.note, 'Call later');

  // The tag the cached path answered with works on the route, and the other way round.
  const token = await ownerToken(service, 'alice');
  const onRoute = await publish(token, pidf('meeting', 'Back'), { 'if-match': header(modified.cached, 'etag') ?? '' });
  t.equal(onRoute.status, 200, 'a cached answer’s tag, spent on the route');
  const onCached = await publish(token, pidf('meeting', 'Back again'), { 'if-match': header(modified.route, 'etag') ?? '' });
  t.equal(onCached.status, 200, 'a route answer’s tag, spent on the cached path');
});

t.test('errors found in the body: the same answer, byte for byte, on both paths', async (t) => {
  const cases: [string, (token: string) => Promise<Seen>, number, string][] = [
    ['not XML', (token) => send(token, 'not a document'), 400, 'invalid_document'],
    ['another entity (RFC 3903 §6 step 4)', (token) => send(token, pidf('meeting', 'x', 'pres:mallory@example.com')), 400, 'invalid_document'],
    ['an external entity (XXE)', (token) => send(token, `<?xml version="1.0"?><!DOCTYPE p [<!ENTITY e SYSTEM "file:///etc/passwd">]><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="${owner.entity}">&e;</presence>`), 400, 'invalid_document'],
    ['a spent or unknown tag (412)', (token) => send(token, pidf('meeting', 'x'), { 'if-match': '"spent-tag"' }), 412, 'precondition_failed'],
  ];
  for (const [name, send, status, code] of cases) {
    const both = await bothPaths(send);
    t.equal(both.route.status, status, name);
    t.match(JSON.parse(both.route.body), { code }, name);
    t.equal(both.cachedCounted, 1, `${name}: answered on the cached path`);
    t.same(both.cached, both.route, `${name}: the same answer, headers in the same order`);
  }
});

t.test('requests the cached path does not answer get the route’s answer', async (t) => {
  const token = await ownerToken(service, 'alice');
  const initial = await publish(token, pidf('meeting', 'x'));
  t.equal(initial.status, 201, 'token now verified');
  const tag = initial.headers.get('etag') ?? '';
  const before = cachedPublishes();
  const charset = await publish(token, pidf('meeting', 'y'), { 'content-type': 'application/pidf+xml; charset=utf-8', 'if-match': tag });
  t.equal(charset.status, 200, 'a media type parameter: the route');
  const next = charset.headers.get('etag') ?? '';
  const json = await service.api('POST', '/v1/presence/alice', { token, body: { availability: 'away' }, headers: { 'if-match': next } });
  t.equal(json.status, 200, 'JSON: the route');
  const afterJson = json.headers.get('etag') ?? '';
  const tooBrief = await publish(token, pidf('meeting', 'z'), { 'if-match': afterJson, expires: '30' });
  t.equal(tooBrief.status, 423, 'an expiry too brief: the route’s 423');
  t.equal(tooBrief.headers.get('min-expires'), '60', 'with its Min-Expires');
  const removalWithBody = await publish(token, pidf('meeting', 'z'), { 'if-match': afterJson, expires: '0' });
  t.equal(removalWithBody.status, 400, 'a removal with a body: the route’s 400');
  const badEvent = await publish(token, pidf('meeting', 'z'), { 'if-match': afterJson, event: 'dialog' });
  t.equal(badEvent.status, 400);
  t.match(await badEvent.json(), { code: 'bad_event' });
  const other = await publish(token, pidf('meeting', 'z'), {}, 'bob');
  t.equal(other.status, 403, 'another owner’s handle');
  const watcherToken = await publish(watcher.token, pidf('meeting', 'z'));
  t.equal(watcherToken.status, 403, 'a watcher’s token');
  const oversized = await publish(token, pidf('meeting', 'x').replace('</presence>', `<!-- ${'x'.repeat(70_000)} --></presence>`));
  t.equal(oversized.status, 413, 'a body over the limit');
  const refresh = await publish(token, undefined, { 'if-match': afterJson });
  t.equal(refresh.status, 200, 'a refresh without a body: the route');
  t.equal(cachedPublishes() - before, 0, 'none of these took the cached path');

  // Chunked transfer coding (no Content-Length): the route reads it.
  const chunked = await new Promise<number>((resolve, reject) => {
    const url = new URL('/v1/presence/alice', service.httpUrl);
    const req = httpRequest(url, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/pidf+xml', 'if-match': refresh.headers.get('etag') ?? '' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.write(pidf('meeting', 'chunk').slice(0, 50));
    req.end(pidf('meeting', 'chunk').slice(50));
  });
  t.equal(chunked, 200, 'chunked: the route');
  t.equal(cachedPublishes() - before, 0);
});

t.test('a revoked owner token stops working on the cached path at once', async (t) => {
  const token = await ownerToken(service, 'alice');
  const first = await publish(token, pidf('meeting', 'x'));
  t.equal(first.status, 201);
  const second = await publish(token, pidf('meeting', 'y'), { 'if-match': first.headers.get('etag') ?? '' });
  t.equal(second.status, 200);
  const revoked = await service.api('POST', '/v1/admin/tokens/revoke', { token: service.adminToken, body: { kind: 'owner', subject: 'alice' } });
  t.ok(revoked.status === 200 || revoked.status === 204, `every token of alice's revoked (${revoked.status})`);
  const before = cachedPublishes();
  const refused = await publish(token, pidf('meeting', 'z'), { 'if-match': second.headers.get('etag') ?? '' });
  t.equal(refused.status, 401);
  t.equal(cachedPublishes() - before, 0);
});

t.test('cached publications are timed in the request duration histogram under their route', async (t) => {
  const count = async () => {
    const metrics = await (await service.api('GET', '/metrics')).text();
    const found = /presence_http_request_duration_seconds_count\{method="POST",route="\/v1\/presence\/:handle",status="2xx"\} (\d+)/.exec(metrics);
    return Number(found?.[1] ?? NaN);
  };
  const dave = (await (await service.api('POST', '/v1/admin/owners', { token: service.adminToken, body: { handle: 'dave' } })).json()) as { entity: string };
  const daveToken = await ownerToken(service, 'dave');
  let tag = header(await send(daveToken, pidf('meeting', 'x', dave.entity), {}, 'dave'), 'etag') ?? '';
  t.not(tag, '', 'published through the route');
  const before = await count();
  const cachedBefore = cachedPublishes();
  for (let i = 0; i < 3; i++) {
    const modified = await send(daveToken, pidf('meeting', `n${i}`, dave.entity), { 'if-match': tag }, 'dave');
    t.equal(modified.status, 200);
    tag = header(modified, 'etag') ?? '';
  }
  t.equal(cachedPublishes() - cachedBefore, 3, 'all three on the cached path');
  t.equal((await count()) - before, 3, 'and all three timed under the route pattern');
});

t.test('a token without presence:write gets the route’s 403, not the cached path', async (t) => {
  const issued = await service.api('POST', '/v1/admin/tokens', { token: service.adminToken, body: { kind: 'owner', subject: 'bob', scopes: ['presence:read'] } });
  t.equal(issued.status, 201);
  const readOnly = ((await issued.json()) as { token: string }).token;
  t.equal((await service.api('GET', '/v1/presence/bob', { token: readOnly })).status, 200, 'the token verified (and cached) by a read');
  const before = cachedPublishes();
  const refused = await send(readOnly, pidf('meeting', 'x', bob.entity), {}, 'bob');
  t.equal(refused.status, 403);
  t.match(JSON.parse(refused.body), { code: 'forbidden' });
  t.equal(cachedPublishes() - before, 0);
});

t.test('a token revoked while the body uploads: 401, as the route checks it after the body', async (t) => {
  const token = await ownerToken(service, 'bob');
  const first = await send(token, pidf('meeting', 'x', bob.entity), {}, 'bob');
  t.equal(first.status, 201, 'token verified');
  const body = pidf('meeting', 'y', bob.entity);
  const before = cachedPublishes();
  const answered = new Promise<Seen>((resolve, reject) => {
    const req = httpRequest(
      new URL('/v1/presence/bob', service.httpUrl),
      { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/pidf+xml', 'content-length': String(Buffer.byteLength(body)), 'if-match': header(first, 'etag') ?? '' } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: [], body: text }));
      },
    );
    req.on('error', reject);
    req.flushHeaders();
    req.write(body.slice(0, 20), () => {
      // Half the body is in: the owner's tokens are revoked, then the rest follows.
      void service.api('POST', '/v1/admin/tokens/revoke', { token: service.adminToken, body: { kind: 'owner', subject: 'bob' } }).then((revoked) => {
        t.equal(revoked.status, 204, 'revoked');
        req.end(body.slice(20));
      }, reject);
    });
  });
  const refused = await answered;
  t.equal(refused.status, 401);
  t.match(JSON.parse(refused.body), { code: 'unauthorized' });
  t.equal(cachedPublishes() - before, 1, 'refused by the cached path, which had taken the request');
});

t.test('rate limits: the cached path takes from the same bucket, and a refusal is the route’s 429, counted once', async (t) => {
  const limited = await startTestService(t, await testConfig(t, { RATE_LIMIT_HTTP_TOKEN: '5/5' }));
  const { owner: erin } = await provision(limited, 'erin');
  const token = ((await (await limited.api('POST', '/v1/admin/tokens', { token: limited.adminToken, body: { kind: 'owner', subject: 'erin' } })).json()) as { token: string }).token;
  const post = (body: string, ifMatch?: string) =>
    limited.api('POST', '/v1/presence/erin', { token, body, headers: { 'content-type': 'application/pidf+xml', ...(ifMatch ? { 'if-match': ifMatch } : {}) } });
  const started = Date.now();
  let response = await post(pidf('meeting', 'x', erin.entity));
  let served = 0;
  const cachedBefore = limited.metrics.value(CACHED_PUBLISHES);
  while (response.status !== 429 && served < 100) {
    t.ok(response.status === 200 || response.status === 201, `served: ${response.status}`);
    served += 1;
    response = await post(pidf('meeting', `n${served}`, erin.entity), response.headers.get('etag') ?? undefined);
  }
  const refilled = Math.ceil(((Date.now() - started) / 1000) * 5);
  t.ok(served >= 5 && served <= 5 + refilled, `the burst of 5 (and at most ${refilled} refilled) served: ${served}`);
  t.equal(response.status, 429);
  t.match(response.headers.get('retry-after'), /^[1-9]\d*$/);
  t.match(await response.json(), { code: 'too_many_requests' });
  t.equal(limited.metrics.value('presence_limit_refusals_total', { limit: 'http_token' }), 1, 'the refusal counted once');
  t.equal(limited.metrics.value(CACHED_PUBLISHES) - cachedBefore, served - 1, 'every publication after the first took the cached path');
});
