import t, { type Test } from 'tap';
import { Accounts } from '../../api/accounts.js';
import { RepresentationCache } from '../../api/representations.js';
import { FAILURE_LOG_INTERVAL_MS, SipGateway, type SipGatewayDeps } from '../../api/sip-gateway.js';
import type { SipPublisherPool } from '../../api/sip/index.js';
import { AccessLogBuffer } from '../../core/access-log.js';
import { AccessRequestBuffer, type AccessRequestIntent } from '../../core/access-requests.js';
import { Directory } from '../../core/directory.js';
import { sensorEventSchema } from '../../core/events.js';
import { Metrics } from '../../core/metrics.js';
import { PresenceHub } from '../../core/presence-hub.js';
import { RuleBook } from '../../policy/rule-book.js';
import { ruleBodySchema } from '../../policy/rule.js';
import { testDeviceRefs } from '../helpers/device-refs.js';

/**
 * A gateway over the real directory, hub, rule book and views, with a
 * recording pool standing in for the SIP server (the Kamailio tests run the
 * real exchange): what it sent, as `update {handle} on-the-phone|closed|other`
 * and `remove {handle}`.
 */
function recordingGateway(
  t: Test,
  deps: { readonly directory: Directory; readonly ruleBook: RuleBook; readonly hub: PresenceHub; readonly audience: string; readonly now: () => number },
): { sent: string[]; gateway: SipGateway } {
  const sent: string[] = [];
  const pool = {
    presentityUri: (handle: string) => `sip:${handle}@example.com`,
    update: async (handle: string, body: string) => void sent.push(`update ${handle} ${/<rpid:on-the-phone\/>/.test(body) ? 'on-the-phone' : /<basic>closed<\/basic>/.test(body) ? 'closed' : 'other'}`),
    remove: async (handle: string) => void sent.push(`remove ${handle}`),
  } as unknown as SipPublisherPool;
  const gateway = new SipGateway({
    directory: deps.directory,
    ruleBook: deps.ruleBook,
    hub: deps.hub,
    entityOf: (handle) => `sip:${handle}@example.com`,
    deviceRefs: testDeviceRefs(),
    pool,
    audience: deps.audience,
    enabled: () => true,
    representations: new RepresentationCache(),
    accessLog: new AccessLogBuffer(),
    clock: deps.now,
    metrics: new Metrics(),
    onError: (error) => t.fail(String(error)),
  });
  return { sent, gateway };
}

const [OWNER, DEVICE, AUDIENCE] = ['00000000-0000-4000-8000-0000000000a1', '11111111-1111-4111-8111-111111111111', '21111111-1111-4111-8111-111111111111'];

/** Alice with a phone, the SIP audience watcher, and one rule letting it see availability and activities (under `conditions` too). */
function aliceAndAudience(conditions: Record<string, unknown> = {}) {
  const directory = new Directory();
  directory.putOwner({ id: OWNER, handle: 'alice' });
  directory.putDevice({ id: DEVICE, ownerId: OWNER, deviceClass: 'phone', revoked: false });
  directory.putWatcher({ id: AUDIENCE, kind: 'app', name: 'SIP', domain: undefined, revoked: false });
  const hub = new PresenceHub({ offlineAfterMs: 3_600_000 });
  const ruleBook = new RuleBook();
  ruleBook.replace(OWNER, [
    { ...ruleBodySchema.parse({ conditions: { identity: { watchers: [AUDIENCE] }, ...conditions }, actions: { subHandling: 'allow' }, transformations: { availability: true, activities: true } }), id: 'r1' },
  ]);
  return { directory, hub, ruleBook };
}

/**
 * A SIP server the gateway cannot reach (refused TLS handshake, timeout)
 * is counted on every attempt and logged once a minute per reason: a
 * broken certificate must be visible without flooding the log with one
 * line per presentity and retry.
 */
t.test('transport failures: counted each time, logged once per reason a minute', async (t) => {
  let now = 1_000_000;
  const logged: string[] = [];
  const metrics = new Metrics();
  const deps = { metrics, directory: new Directory(), audience: 'sip-audience', clock: () => now, onError: (error: unknown) => logged.push(error instanceof Error ? error.message : String(error)) } as unknown as SipGatewayDeps;
  const gateway = new SipGateway(deps);
  const tls = 'tls: TLS handshake with 127.0.0.1:5061 failed: self-signed certificate (check SIP_CA_FILE)';
  for (const presentity of ['sip:a@x', 'sip:b@x', 'sip:c@x']) gateway.onOutcome({ presentity, kind: 'initial', status: 0, error: tls });
  gateway.onOutcome({ presentity: 'sip:a@x', kind: 'initial', status: 0, error: 'timeout: no final response within 32000 ms (Timer F)' });
  gateway.onOutcome({ presentity: 'sip:a@x', kind: 'remove', status: 0, error: 'closed: transport closed' });
  t.equal(metrics.value('presence_sip_publish_total', { kind: 'initial', status: '0' }), 4, 'every failure counted');
  t.same(logged, [`no response from the SIP server: ${tls}`, 'no response from the SIP server: timeout: no final response within 32000 ms (Timer F)'], 'one line per reason; a shutdown is not a failure');
  now += FAILURE_LOG_INTERVAL_MS;
  gateway.onOutcome({ presentity: 'sip:a@x', kind: 'initial', status: 0, error: tls });
  t.equal(logged.length, 3, 'logged again a minute later');
  gateway.onOutcome({ presentity: 'sip:a@x', kind: 'initial', status: 503, error: '503 Service Unavailable' });
  t.equal(logged.length, 3, 'a response is not a transport failure');
});

/**
 * Erasure (Accounts.forgetOwner) tells its listeners (the gateway, as
 * bin/service.ts wires it) before forgetting the owner's state and rules,
 * which wakes every watcher of them: the gateway must not render and send
 * the offline view of an owner who no longer exists, only remove the
 * publication. The real Accounts, directory, hub, rule book and views; a
 * recording pool stands in for the SIP server (the Kamailio tests run the
 * real exchange).
 */
t.test('an erased owner: the publication is removed, with no document sent first', async (t) => {
  const now = Date.parse('2026-05-04T10:00:00Z');
  const { directory, hub, ruleBook } = aliceAndAudience();
  const { sent, gateway } = recordingGateway(t, { directory, ruleBook, hub, audience: AUDIENCE, now: () => now });
  gateway.sync(OWNER);
  hub.apply(OWNER, DEVICE, [sensorEventSchema.parse({ kind: 'call', at: new Date(now).toISOString(), state: 'in-call' })], now);
  t.same(sent, ['update alice closed', 'update alice on-the-phone'], 'published while she exists');

  // Storage is not touched by forgetOwner (eraseOwner deletes first, then calls it): none of the storage or token dependencies is used.
  const unused = undefined as never;
  // The access requests waiting in memory are dropped with the owner: a real buffer, no writer.
  const requests = new AccessRequestBuffer();
  const accessRequests = { full: false, submit: (r: AccessRequestIntent) => requests.submit(r), flush: async () => undefined, forgetOwner: (id: string) => requests.forgetOwner(id) };
  requests.submit({ ownerId: OWNER, watcherId: AUDIENCE, intent: 'ask', at: now });
  const accounts = new Accounts(unused, directory, ruleBook, unused, 'issuer', 'example.com', () => now, hub, () => 'digest', accessRequests, async () => undefined);
  accounts.onOwnerErased((ownerId) => gateway.sync(ownerId));
  accounts.forgetOwner(OWNER);
  t.same(sent.slice(2), ['remove alice'], 'removed (Expires: 0), and nothing sent before');
  t.equal(requests.size, 0, 'her waiting access requests went with her');
});

/**
 * The SIP server sees what its audience watcher is granted; revoking that
 * watcher must replace every document at once with the offline view, not
 * leave the granted one on the server (refreshed every few minutes) until
 * each owner's next change of state or rules.
 */
t.test("the audience watcher revoked: every served owner's document becomes the offline view at once", async (t) => {
  const now = Date.parse('2026-05-04T10:00:00Z');
  const [ALICE, BOB, DEVICE_A, DEVICE_B, AUDIENCE] = [
    '00000000-0000-4000-8000-0000000000a1',
    '00000000-0000-4000-8000-0000000000b1',
    '11111111-1111-4111-8111-111111111111',
    '11111111-1111-4111-8111-111111111112',
    '21111111-1111-4111-8111-111111111111',
  ];
  const directory = new Directory();
  const hub = new PresenceHub({ offlineAfterMs: 3_600_000 });
  const ruleBook = new RuleBook();
  for (const [owner, handle, device] of [
    [ALICE, 'alice', DEVICE_A],
    [BOB, 'bob', DEVICE_B],
  ] as const) {
    directory.putOwner({ id: owner, handle });
    directory.putDevice({ id: device, ownerId: owner, deviceClass: 'phone', revoked: false });
    ruleBook.replace(owner, [{ ...ruleBodySchema.parse({ conditions: { identity: { watchers: [AUDIENCE] } }, actions: { subHandling: 'allow' }, transformations: { availability: true, activities: true } }), id: `r-${handle}` }]);
    hub.apply(owner, device, [sensorEventSchema.parse({ kind: 'call', at: new Date(now).toISOString(), state: 'in-call' })], now);
  }
  directory.putWatcher({ id: AUDIENCE, kind: 'app', name: 'SIP', domain: undefined, revoked: false });
  const { sent, gateway } = recordingGateway(t, { directory, ruleBook, hub, audience: AUDIENCE, now: () => now });
  gateway.sync(ALICE);
  gateway.sync(BOB);
  t.same(sent, ['update alice on-the-phone', 'update bob on-the-phone'], 'published as granted');
  directory.putWatcher({ id: AUDIENCE, kind: 'app', name: 'SIP', domain: undefined, revoked: true });
  t.same(sent.slice(2), ['update alice closed', 'update bob closed'], 'the offline view, for every owner, at once');
  gateway.close();
  directory.putWatcher({ id: AUDIENCE, kind: 'app', name: 'SIP', domain: undefined, revoked: true });
  t.equal(sent.length, 4, 'a closed gateway no longer listens');
});

/**
 * A document the server refused for good is sent again 30 s later; a view
 * that lapses sooner (a grant with an end) must still be computed when it
 * lapses, not when the retry comes. Real timers, a grant ending 200 ms on.
 */
t.test("a refused document's retry does not postpone the view's own expiry", async (t) => {
  const start = Date.now();
  const { directory, hub, ruleBook } = aliceAndAudience({ validity: [{ from: new Date(start - 60_000).toISOString(), until: new Date(start + 200).toISOString() }] });
  hub.apply(OWNER, DEVICE, [sensorEventSchema.parse({ kind: 'call', at: new Date(start).toISOString(), state: 'in-call' })], start);
  const { sent, gateway } = recordingGateway(t, { directory, ruleBook, hub, audience: AUDIENCE, now: () => Date.now() });
  t.teardown(() => gateway.close());
  gateway.sync(OWNER);
  t.same(sent, ['update alice on-the-phone'], 'published as granted, until the grant ends');
  gateway.onOutcome({ presentity: 'sip:alice@example.com', kind: 'initial', status: 403, error: '403 Forbidden' });
  await new Promise((resolve) => setTimeout(resolve, start + 200 - Date.now() + 300));
  t.same(sent.slice(1), ['update alice closed'], 'the lapsed grant is computed at its end: the offline view goes out');
});
