import t from 'tap';
import { AccessLogBuffer } from '../../core/access-log.js';
import { Directory } from '../../core/directory.js';
import { generateSigningKeyPem, signingKeyFromPem } from '../../core/identity/signing-key.js';
import { Metrics } from '../../core/metrics.js';
import { PresenceHub } from '../../core/presence-hub.js';
import type { Availability } from '../../core/presence.js';
import { RuleBook } from '../../policy/rule-book.js';
import { ruleBodySchema } from '../../policy/rule.js';
import { RepresentationCache } from '../../api/representations.js';
import { WebhookDispatcher } from '../../api/webhook-dispatcher.js';
import { REFUSED_ADDRESS, type WebhookPost } from '../../api/webhook-transport.js';
import { testDeviceRefs } from '../helpers/device-refs.js';

/**
 * The dispatcher's delivery loop with a scripted receiver: the receiver
 * always ends with the newest view, whatever the order of changes, slow
 * answers and failures; nothing stalls; every POST is audited.
 */
const OWNER = '00000000-0000-4000-8000-000000000001';
const WATCHER = '00000000-0000-4000-8000-000000000002';
const signingKey = await signingKeyFromPem(await generateSigningKeyPem());

interface Call {
  readonly availability: string;
  readonly view: Record<string, unknown>;
  answer(status: number): void;
}

function setup(clock: () => number = Date.now) {
  const directory = new Directory();
  directory.putOwner({ id: OWNER, handle: 'alice' });
  directory.putWatcher({ id: WATCHER, kind: 'app', name: 'App', domain: undefined, revoked: false });
  const ruleBook = new RuleBook();
  ruleBook.replace(OWNER, [{ ...ruleBodySchema.parse({ conditions: { identity: { watchers: [WATCHER] } }, actions: { subHandling: 'allow' }, transformations: { availability: true } }), id: '00000000-0000-4000-8000-000000000003' }]);
  const hub = new PresenceHub({ offlineAfterMs: 900_000 });
  const accessLog = new AccessLogBuffer();
  const calls: Call[] = [];
  const waiting: (() => void)[] = [];
  const metrics = new Metrics();
  const post: WebhookPost = async (_url, body) => {
    const payload = JSON.parse(Buffer.from(body.split('.')[1] ?? '', 'base64url').toString()) as { view: { availability: string } };
    return new Promise<number>((resolve) => {
      calls.push({ availability: payload.view.availability, view: payload.view, answer: resolve });
      for (const w of waiting.splice(0)) w();
    });
  };
  const dispatcher = new WebhookDispatcher({
    directory,
    ruleBook,
    hub,
    entityOf: (h) => `pres:${h}@test`,
    deviceRefs: testDeviceRefs(),
    representations: new RepresentationCache(),
    accessLog,
    clock,
    signingKey,
    issuer: 'test',
    retry: { baseMs: 20, maxAttempts: 3, timeoutMs: 1000 },
    post,
    metrics,
  });
  const set = (availability: Availability) => hub.setOverride(OWNER, { source: 'manual', availability, activities: [], expiresAt: Date.now() + 3_600_000 }, Date.now());
  const nextCall = async (n: number) => {
    while (calls.length < n) await new Promise<void>((resolve) => waiting.push(resolve));
    return calls[n - 1] as Call;
  };
  const audited = () => accessLog.take().reduce((sum, e) => sum + (e.action === 'publish' ? e.count : 0), 0);
  return { dispatcher, set, calls, nextCall, audited, metrics, directory, ruleBook, hub };
}

t.test('a view that flips back while a delivery fails: the receiver keeps the right view, later changes still go out', async (t) => {
  const { dispatcher, set, calls, nextCall, audited } = setup();
  t.teardown(() => dispatcher.close());
  set('available');
  dispatcher.add({ id: 'h1', watcherId: WATCHER, ownerId: OWNER, handle: 'alice', url: 'http://x' });
  (await nextCall(1)).answer(204); // available delivered
  await new Promise((r) => setTimeout(r, 10));
  set('busy');
  const busy = await nextCall(2);
  set('available'); // back to what the receiver has, while busy is in flight
  busy.answer(503);
  await new Promise((r) => setTimeout(r, 100));
  t.equal(calls.length, 2, 'nothing more to send: the receiver already has "available"');
  set('away');
  const away = await nextCall(3);
  t.equal(away.availability, 'away', 'a later change still goes out (no stall)');
  away.answer(204);
  // Recorded once the POST is answered (a POST refused before connecting sends nothing, and is not recorded).
  await new Promise((r) => setTimeout(r, 10));
  t.equal(audited(), 3, 'every POST is in the access log, failed ones included');
});

t.test('a slow success of a stale view is followed by the newest one', async (t) => {
  const { dispatcher, set, nextCall } = setup();
  t.teardown(() => dispatcher.close());
  set('available');
  dispatcher.add({ id: 'h2', watcherId: WATCHER, ownerId: OWNER, handle: 'alice', url: 'http://x' });
  (await nextCall(1)).answer(204);
  await new Promise((r) => setTimeout(r, 10));
  set('busy');
  const busy = await nextCall(2);
  set('available');
  busy.answer(204); // the receiver now shows busy
  const fix = await nextCall(3);
  t.equal(fix.availability, 'available', 'the newest view is sent after the stale one landed');
  fix.answer(204);
});

t.test('retries with backoff, then gives up; the next change tries again; removal stops a sleeping retry', async (t) => {
  const { dispatcher, set, calls, nextCall } = setup();
  t.teardown(() => dispatcher.close());
  set('busy');
  dispatcher.add({ id: 'h3', watcherId: WATCHER, ownerId: OWNER, handle: 'alice', url: 'http://x' });
  (await nextCall(1)).answer(500);
  (await nextCall(2)).answer(500);
  (await nextCall(3)).answer(500);
  await new Promise((r) => setTimeout(r, 150));
  t.equal(calls.length, 3, 'gave up after maxAttempts');
  set('away');
  (await nextCall(4)).answer(400);
  await new Promise((r) => setTimeout(r, 100));
  t.equal(calls.length, 4, 'a 4xx is not retried');
  set('available');
  (await nextCall(5)).answer(503);
  dispatcher.remove('h3');
  await new Promise((r) => setTimeout(r, 150));
  t.equal(calls.length, 5, 'no retry after removal');
});

t.test('the watcher revoked while a delivery is retried: no further POST, and the webhook is gone', async (t) => {
  const { dispatcher, set, calls, nextCall, directory } = setup();
  t.teardown(() => dispatcher.close());
  set('busy');
  dispatcher.add({ id: 'h-revoked', watcherId: WATCHER, ownerId: OWNER, handle: 'alice', url: 'http://x' });
  (await nextCall(1)).answer(503);
  // Revoked (Accounts.revokeWatcher, or the control channel on another process) during the backoff.
  directory.putWatcher({ id: WATCHER, kind: 'app', name: 'App', domain: undefined, revoked: true });
  await new Promise((r) => setTimeout(r, 200));
  t.equal(calls.length, 1, 'the view granted before the revocation is not POSTed again');
  t.same(dispatcher.registered(OWNER), [], 'removed at once, not at the owner\'s next change');
  set('away');
  await new Promise((r) => setTimeout(r, 50));
  t.equal(calls.length, 1, 'nor anything later');
});

t.test('a receiver whose name resolves to an internal address: not retried, counted, and the next change tries again', async (t) => {
  const { dispatcher, set, calls, nextCall, metrics, audited } = setup();
  t.teardown(() => dispatcher.close());
  set('busy');
  dispatcher.add({ id: 'h4', watcherId: WATCHER, ownerId: OWNER, handle: 'alice', url: 'https://rebinds.example' });
  (await nextCall(1)).answer(REFUSED_ADDRESS);
  await new Promise((r) => setTimeout(r, 100));
  t.equal(calls.length, 1, 'no retry: the address will not change within the backoff');
  t.match(metrics.render(), /presence_webhook_deliveries_total\{outcome="refused_address"\} 1/);
  t.equal(audited(), 0, 'nothing left the service: not in the access log');
  set('away');
  (await nextCall(2)).answer(204);
  await new Promise((r) => setTimeout(r, 10));
  t.match(metrics.render(), /presence_webhook_deliveries_total\{outcome="delivered"\} 1/, 'the name may point elsewhere by the next change');
  t.equal(audited(), 1, 'the delivered view is');
});

t.test('a reload that read before a webhook was removed here does not register it again (until its id is long forgotten)', async (t) => {
  let now = Date.now();
  const { dispatcher, set, calls, nextCall } = setup(() => now);
  const hook = { id: '00000000-0000-4000-8000-000000000004', watcherId: WATCHER, ownerId: OWNER, handle: 'alice', url: 'https://receiver.example/hook' };
  dispatcher.setDelivering(false);
  dispatcher.add(hook);
  dispatcher.remove(hook.id);
  dispatcher.replaceOwner(OWNER, [hook], dispatcher.registrationMark);
  dispatcher.setDelivering(true);
  set('busy');
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.equal(calls.length, 0, 'the removed webhook stays removed: nothing is delivered');
  now += 3 * 3_600_000 + 1;
  dispatcher.replaceOwner(OWNER, [hook], dispatcher.registrationMark);
  // (Alice's status, set for an hour, has expired by then.)
  t.equal((await nextCall(1)).availability, 'offline', 'storage still holding it hours later is the truth again: registered and delivered');
  (await nextCall(1)).answer(200);
  dispatcher.close();
});

t.test('a reload that began reading before a registration here keeps the webhook; one that began after drops it (deleted elsewhere); removals and erasures here are remembered', async (t) => {
  const { dispatcher } = setup();
  t.teardown(() => dispatcher.close());
  dispatcher.setDelivering(false);
  const hook = { id: '00000000-0000-4000-8000-000000000005', watcherId: WATCHER, ownerId: OWNER, handle: 'alice', url: 'https://receiver.example/new' };
  const other = { id: '00000000-0000-4000-8000-000000000006', watcherId: WATCHER, ownerId: OWNER, handle: 'alice', url: 'https://receiver.example/other' };
  const known = () => dispatcher.registered(OWNER).map((h) => h.id).sort();
  // A reload takes its mark and reads; the registration here commits and is added meanwhile; the reload's list lacks it.
  const before = dispatcher.registrationMark;
  dispatcher.add(hook);
  t.equal(dispatcher.replaceOwner(OWNER, [], before), true, 'kept on the strength of the mark: the caller reads the owner again');
  t.same(known(), [hook.id], 'the older list does not drop it');
  t.equal(dispatcher.replaceOwner(OWNER, [hook, other], dispatcher.registrationMark), false, 'nothing kept unread');
  t.same(known(), [hook.id, other.id].sort(), 'the next reload adds what another process registered');
  // A reload that began after the registration and does not list it: deleted through another process.
  t.equal(dispatcher.replaceOwner(OWNER, [other], dispatcher.registrationMark), false);
  t.same(known(), [other.id], 'a list read after the registration is the truth');
  dispatcher.add(hook);
  dispatcher.removeOwner(OWNER);
  t.same(known(), []);
  dispatcher.replaceOwner(OWNER, [hook, other], before);
  t.same(known(), [], 'after an erasure here, an older list does not bring them back');
});

t.test('webhooks loaded at start are not registrations here: a reload that began before anything was registered drops one missing from its list', async (t) => {
  const { dispatcher } = setup();
  t.teardown(() => dispatcher.close());
  dispatcher.setDelivering(false);
  const mark = dispatcher.registrationMark;
  dispatcher.restore({ id: '00000000-0000-4000-8000-000000000007', watcherId: WATCHER, ownerId: OWNER, handle: 'alice', url: 'https://receiver.example/stored' });
  dispatcher.replaceOwner(OWNER, [], mark);
  t.same(dispatcher.registered(OWNER), []);
});

const CAROL = '00000000-0000-4000-8000-0000000000c1';
const BOB = '00000000-0000-4000-8000-0000000000b1';
const settle = () => new Promise((resolve) => setTimeout(resolve, 30));

t.test('a handle no owner holds: the offline view, the same as an owner who shows this watcher nothing (but the entity)', async (t) => {
  const { dispatcher, calls, nextCall, audited, directory } = setup();
  t.teardown(() => dispatcher.close());
  directory.putOwner({ id: BOB, handle: 'bob' }); // no rule: withheld
  dispatcher.add({ id: 'h-bob', watcherId: WATCHER, ownerId: BOB, handle: 'bob', url: 'http://x' });
  const withheld = await nextCall(1);
  withheld.answer(204);
  dispatcher.add({ id: 'h-nobody', watcherId: WATCHER, ownerId: null, handle: 'nobody', url: 'http://x' });
  const unheld = await nextCall(2);
  unheld.answer(204);
  const { entity: withheldEntity, ...withheldRest } = withheld.view;
  const { entity: unheldEntity, ...unheldRest } = unheld.view;
  t.same([withheldEntity, unheldEntity], ['pres:bob@test', 'pres:nobody@test']);
  t.same(unheldRest, withheldRest, 'nothing but the entity tells them apart');
  t.equal(unheld.availability, 'offline');
  await settle();
  t.equal(calls.length, 2);
  t.equal(audited(), 1, "the known owner's access log records the withheld delivery; nobody has no log");
});

t.test('an owner takes a waiting handle: the webhook is theirs, nothing is sent again until their view for the watcher changes', async (t) => {
  const { dispatcher, calls, nextCall, directory, ruleBook, hub } = setup();
  t.teardown(() => dispatcher.close());
  dispatcher.add({ id: 'h-carol', watcherId: WATCHER, ownerId: null, handle: 'carol', url: 'http://x' });
  (await nextCall(1)).answer(204);
  await settle();
  directory.putOwner({ id: CAROL, handle: 'carol' });
  dispatcher.ownerCreated(CAROL, 'carol');
  t.same(dispatcher.registered(CAROL).map((h) => h.id), ['h-carol']);
  t.same(dispatcher.waiting('carol'), []);
  await settle();
  t.equal(calls.length, 1, 'still the offline view: not POSTed twice');
  ruleBook.replace(CAROL, [{ ...ruleBodySchema.parse({ conditions: { identity: { watchers: [WATCHER] } }, actions: { subHandling: 'allow' }, transformations: { availability: true } }), id: '00000000-0000-4000-8000-0000000000c2' }]);
  hub.setOverride(CAROL, { source: 'manual', availability: 'busy', activities: [], expiresAt: Date.now() + 3_600_000 }, Date.now());
  const granted = await nextCall(2);
  t.equal(granted.availability, 'busy', "the owner's changes and rules drive it now");
  granted.answer(204);
});

t.test('a receiver that refused the offline view is not sent it again when an owner takes the handle (that would tell it so)', async (t) => {
  const { dispatcher, calls, nextCall, directory } = setup();
  t.teardown(() => dispatcher.close());
  dispatcher.add({ id: 'h-refusing', watcherId: WATCHER, ownerId: null, handle: 'fay', url: 'http://x' });
  (await nextCall(1)).answer(400);
  await settle();
  const FAY = '00000000-0000-4000-8000-0000000000f1';
  directory.putOwner({ id: FAY, handle: 'fay' });
  dispatcher.ownerCreated(FAY, 'fay');
  await settle();
  t.equal(calls.length, 1, 'given up on, and still given up on: the view did not change');
});

t.test('an owner takes the handle while the offline view is in flight: not POSTed twice; a retry after it is in the owner\'s access log', async (t) => {
  const { dispatcher, calls, nextCall, directory, audited } = setup();
  t.teardown(() => dispatcher.close());
  dispatcher.add({ id: 'h-inflight', watcherId: WATCHER, ownerId: null, handle: 'hal', url: 'http://x' });
  const inFlight = await nextCall(1);
  const HAL = '00000000-0000-4000-8000-0000000000f3';
  directory.putOwner({ id: HAL, handle: 'hal' });
  dispatcher.ownerCreated(HAL, 'hal');
  inFlight.answer(204);
  await settle();
  t.equal(calls.length, 1, 'the POST in flight counts for the bound webhook');
  t.equal(audited(), 0, 'sent while no owner held the handle: no access log to record it in');

  dispatcher.add({ id: 'h-retry', watcherId: WATCHER, ownerId: null, handle: 'ida', url: 'http://x' });
  (await nextCall(2)).answer(503);
  const IDA = '00000000-0000-4000-8000-0000000000f4';
  directory.putOwner({ id: IDA, handle: 'ida' });
  dispatcher.ownerCreated(IDA, 'ida');
  (await nextCall(3)).answer(204);
  await settle();
  t.equal(calls.length, 3, 'retried once, not started again');
  t.equal(audited(), 1, "the retry, sent once the owner held the handle, is in the owner's access log");
});

t.test('registered here for an owner the database knew before this process did: served once the owner is created here', async (t) => {
  const { dispatcher, nextCall, directory } = setup();
  t.teardown(() => dispatcher.close());
  const GUS = '00000000-0000-4000-8000-0000000000f2';
  dispatcher.add({ id: 'h-early', watcherId: WATCHER, ownerId: GUS, handle: 'gus', url: 'http://x' });
  directory.putOwner({ id: GUS, handle: 'gus' });
  dispatcher.ownerCreated(GUS, 'gus');
  const first = await nextCall(1);
  t.equal(first.availability, 'offline');
  first.answer(204);
});

t.test("an owner erased elsewhere: a handle's list read before the erasure does not bring their webhook back, and one of an owner not loaded here waits", async (t) => {
  const { dispatcher, calls } = setup();
  t.teardown(() => dispatcher.close());
  const GONE = '00000000-0000-4000-8000-0000000000e1';
  // The reload of the erased owner found them gone (never loaded here): their webhooks are removed and they are remembered.
  dispatcher.removeOwner(GONE);
  dispatcher.replaceHandle('gone', [{ id: crypto.randomUUID(), watcherId: WATCHER, ownerId: GONE, handle: 'gone', url: 'http://x' }], dispatcher.registrationMark);
  t.same(dispatcher.registered(GONE), [], 'not registered again');
  const LATER = '00000000-0000-4000-8000-0000000000e2';
  dispatcher.add({ id: 'h-not-loaded', watcherId: WATCHER, ownerId: LATER, handle: 'later', url: 'http://x' });
  await settle();
  t.equal(calls.length, 0, 'bound to an owner not loaded here: nothing sent (no false offline view) until the owner is');
});

t.test('a group member: waiting webhooks by handle, bound by a later reload in either order, deleted elsewhere', async (t) => {
  const { dispatcher, calls, nextCall, directory } = setup();
  t.teardown(() => dispatcher.close());
  for (const [handle, handleFirst] of [
    ['dana', false],
    ['dora', true],
  ] as const) {
    const hook = { id: crypto.randomUUID(), watcherId: WATCHER, ownerId: null, handle, url: 'http://x' };
    const before = calls.length;
    t.equal(dispatcher.replaceHandle(handle, [hook], dispatcher.registrationMark), false);
    (await nextCall(before + 1)).answer(204);
    await settle();
    t.ok(dispatcher.waitingHandles().has(handle));
    // The owner was created elsewhere; the trigger bound the webhook.
    const ownerId = crypto.randomUUID();
    const bound = { ...hook, ownerId };
    if (handleFirst) {
      // The handle's notification is read first, before this process has loaded the owner.
      dispatcher.replaceHandle(handle, [bound], dispatcher.registrationMark);
      t.same(dispatcher.registered(ownerId).map((h) => h.id), [hook.id], 'rebound, not dropped');
    }
    directory.putOwner({ id: ownerId, handle });
    dispatcher.replaceOwner(ownerId, [bound], dispatcher.registrationMark);
    if (!handleFirst) dispatcher.replaceHandle(handle, [bound], dispatcher.registrationMark);
    t.same(dispatcher.registered(ownerId).map((h) => h.id), [hook.id]);
    t.notOk(dispatcher.waitingHandles().has(handle));
    await settle();
    t.equal(calls.length, before + 1, `${handle}: the same offline view is not POSTed again`);
  }
  const other = { id: crypto.randomUUID(), watcherId: WATCHER, ownerId: null, handle: 'erin', url: 'http://x' };
  dispatcher.replaceHandle('erin', [other], dispatcher.registrationMark);
  (await nextCall(calls.length + 1)).answer(204);
  dispatcher.replaceHandle('erin', [], dispatcher.registrationMark);
  t.same(dispatcher.waiting('erin'), [], 'deleted elsewhere: forgotten');
});
