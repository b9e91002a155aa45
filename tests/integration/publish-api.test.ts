import t from 'tap';
import { createTestDatabase, uniqueName, waitFor } from '../helpers/env.js';
import { addRule, addWatcher, ownerToken, provision, startTestService, testConfig } from '../helpers/service.js';
import { MQTT_TEST_URL } from '../helpers/env.js';
import { renderPidf } from '../../core/render-pidf.js';

/**
 * RFC 3903 PUBLISH semantics over HTTP (POST /v1/presence/{handle}), the
 * composition of publications with the derived state, and batch reads.
 */
const config = await testConfig(t, { DATABASE_URL: await createTestDatabase(t), MQTT_URL: MQTT_TEST_URL, MQTT_TOPIC_ROOT: uniqueName('p'), OWNTRACKS_TOPIC_ROOT: uniqueName('pot') });
const service = await startTestService(t, config);
await provision(service, 'alice');
await provision(service, 'bob');
const aliceToken = await ownerToken(service, 'alice');
const watcher = await addWatcher(service, 'Walt');
await addRule(service, 'alice', watcher.id, 'allow', { availability: true, activities: true });
const entity = 'pres:alice@presence.local';
const pidf = (activities: ('meeting' | 'on-the-phone')[], note?: string) => renderPidf({ entity, basic: 'open', availability: 'busy', activities, ...(note ? { note } : {}) });
const publish = (body: string | undefined, headers: Record<string, string> = {}) =>
  service.api('POST', '/v1/presence/alice', { token: aliceToken, ...(body === undefined ? {} : { body }), headers: { ...(body === undefined ? {} : { 'content-type': 'application/pidf+xml' }), ...headers } });
const view = async () => (await (await service.api('GET', '/v1/presence/alice', { token: watcher.token, headers: { accept: 'application/json' } })).json()) as Record<string, unknown>;
const code = async (r: Response) => ((await r.json()) as { code: string }).code;

t.test('initial, refresh, modify and remove, each with a new entity tag', async (t) => {
  const initial = await publish(pidf(['meeting']), { expires: '600', event: 'presence' });
  t.equal(initial.status, 201);
  t.equal(initial.headers.get('expires'), '600');
  const tag1 = initial.headers.get('etag');
  t.match(tag1, /^"[A-Za-z0-9_-]+"$/);
  t.match(await view(), { availability: 'busy', activities: ['meeting'] }, 'composed into the watcher view');

  const refreshed = await publish(undefined, { 'if-match': tag1 ?? '', expires: '600' });
  t.equal(refreshed.status, 200);
  const tag2 = refreshed.headers.get('etag');
  t.not(tag2, tag1, 'a refresh issues a new tag');
  t.equal((await publish(undefined, { 'if-match': tag1 ?? '' })).status, 412, 'the old tag is gone');

  const modified = await publish(pidf(['on-the-phone'], 'Call later'), { 'if-match': tag2 ?? '' });
  t.equal(modified.status, 200);
  const tag3 = modified.headers.get('etag');
  t.match(await view(), { availability: 'busy', activities: ['on-the-phone'] });

  const removed = await publish(undefined, { 'if-match': tag3 ?? '', expires: '0' });
  t.equal(removed.status, 200);
  t.equal(removed.headers.get('etag'), null);
  t.equal(removed.headers.get('expires'), '0');
  t.match(await view(), { availability: 'offline' }, 'nothing left: the sensorless owner is offline again');

  // Each stored change went through the group commit, whose batch sizes are a metric.
  const metrics = await (await service.api('GET', '/metrics')).text();
  const batches = /^presence_write_behind_batch_rows_count\{writer="publications"\} (\d+)$/m.exec(metrics);
  t.ok(Number(batches?.[1]) >= 4, `publication batches counted: ${batches?.[1]}`);
});

t.test('JSON form, expiry bounds, and the expiry taking effect', async (t) => {
  const tooBrief = await publish(pidf(['meeting']), { expires: '30' });
  t.equal(tooBrief.status, 423);
  t.equal(tooBrief.headers.get('min-expires'), '60');
  t.equal(await code(tooBrief), 'interval_too_brief');
  const long = await service.api('POST', '/v1/presence/alice', { token: aliceToken, body: { availability: 'away', activities: [] }, headers: { expires: '999999' } });
  t.equal(long.status, 201);
  t.equal(long.headers.get('expires'), '86400', 'a long expiry is shortened (RFC 3903 §6)');
  t.match(await view(), { availability: 'away' });
  await publish(undefined, { 'if-match': long.headers.get('etag') ?? '', expires: '0' });
});

t.test('bad input is refused with clear codes and stores nothing', async (t) => {
  const cases: [string, () => Promise<Response>, number, string][] = [
    ['unknown event package (SIP 489)', () => publish(pidf(['meeting']), { event: 'dialog' }), 400, 'bad_event'],
    ['unknown tag', () => publish(undefined, { 'if-match': '"nope"' }), 412, 'precondition_failed'],
    ['malformed tag', () => publish(undefined, { 'if-match': 'nope' }), 400, 'invalid_request'],
    ['a weak tag', () => publish(undefined, { 'if-match': 'W/"abc"' }), 400, 'invalid_request'],
    ['initial without a body', () => publish(undefined), 400, 'invalid_request'],
    ['non-numeric expiry', () => publish(pidf(['meeting']), { expires: 'soon' }), 400, 'invalid_request'],
    ['another entity', () => publish(renderPidf({ entity: 'pres:bob@presence.local', basic: 'open' })), 400, 'invalid_document'],
    ['XXE', () => publish(`<?xml version="1.0"?><!DOCTYPE p [<!ENTITY e SYSTEM "file:///etc/passwd">]><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="${entity}">&e;</presence>`), 400, 'invalid_document'],
    ['malformed XML', () => publish('<presence'), 400, 'invalid_document'],
    ['wrong media type', () => service.api('POST', '/v1/presence/alice', { token: aliceToken, body: 'x', headers: { 'content-type': 'text/plain' } }), 415, 'unsupported_media_type'],
    ['JSON with an unknown field', () => service.api('POST', '/v1/presence/alice', { token: aliceToken, body: { availability: 'busy', mood: 'x' } }), 400, 'invalid_request'],
    ['oversized', () => publish(pidf(['meeting'], 'x').replace('</presence>', `<!-- ${'x'.repeat(70_000)} --></presence>`)), 413, 'payload_too_large'],
    ['another owner', () => service.api('POST', '/v1/presence/bob', { token: aliceToken, body: { availability: 'busy' } }), 403, 'forbidden'],
    ['a handle no owner holds (the same answer: it does not tell whether a handle exists)', () => service.api('POST', '/v1/presence/nobody-at-all', { token: aliceToken, body: { availability: 'busy' } }), 403, 'forbidden'],
    ['a watcher token', () => service.api('POST', '/v1/presence/alice', { token: watcher.token, body: { availability: 'busy' } }), 403, 'forbidden'],
  ];
  for (const [name, send, status, expected] of cases) {
    const response = await send();
    t.equal(response.status, status, name);
    t.equal(await code(response), expected, name);
  }
  t.match(await view(), { availability: 'offline' }, 'nothing was stored');
});

t.test('publications survive a restart (stored before applied)', async (t) => {
  const created = await publish(pidf(['meeting']), { expires: '600' });
  t.equal(created.status, 201);
  await service.close();
  const again = await (await import('../helpers/service.js')).startTestService(t, config);
  const token = await ownerToken(again, 'alice');
  const refreshed = await again.api('POST', '/v1/presence/alice', { token, headers: { 'if-match': created.headers.get('etag') ?? '' } });
  t.equal(refreshed.status, 200, 'the tag is still known');
  await waitFor(async () => {
    const v = (await (await again.api('GET', '/v1/presence/alice', { token: watcher.token, headers: { accept: 'application/json' } })).json()) as { availability: string };
    return v.availability === 'busy';
  }, 'the publication composed after restart');

  const batch = await again.api('GET', '/v1/presence?handle=alice&handle=bob&handle=nobody', { token: watcher.token, headers: { accept: 'application/json' } });
  t.equal(batch.status, 200);
  const { results } = (await batch.json()) as { results: { handle: string; etag: string; view: Record<string, unknown> }[] };
  t.same(results.map((r) => r.handle), ['alice', 'bob', 'nobody']);
  t.match(results[0]?.view, { availability: 'busy', activities: ['meeting'] });
  const { entity: _bob, ...noRule } = results[1]?.view ?? {};
  const { entity: _nobody, ...noOwner } = results[2]?.view ?? {};
  t.same(noRule, noOwner, 'no rule and no such owner look the same');
  const single = await again.api('GET', '/v1/presence/alice', { token: watcher.token, headers: { accept: 'application/json' } });
  t.equal(results[0]?.etag, single.headers.get('etag'), 'the same entity tag as a single read');
  const tooMany = await again.api('GET', `/v1/presence?${Array.from({ length: 101 }, (_, i) => `handle=h${i}`).join('&')}`, { token: watcher.token });
  t.equal(tooMany.status, 400);
});
