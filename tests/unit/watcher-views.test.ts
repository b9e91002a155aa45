import t from 'tap';
import { AccessLogBuffer } from '../../core/access-log.js';
import { Directory } from '../../core/directory.js';
import { sensorEventSchema } from '../../core/events.js';
import { PresenceHub } from '../../core/presence-hub.js';
import { PIDF_MEDIA_TYPE } from '../../core/render-pidf.js';
import { evaluateConsent } from '../../policy/evaluate-consent.js';
import { RuleBook } from '../../policy/rule-book.js';
import { ruleBodySchema, type RuleBodyInput } from '../../policy/rule.js';
import { buildWatcherView, offlineView, type WatcherView } from '../../policy/watcher-view.js';
import { JSON_MEDIA_TYPE, RepresentationCache } from '../../api/representations.js';
import { computeView, recordAccess, type WatcherViewDeps } from '../../api/watcher-views.js';
import { testDeviceRefs } from '../helpers/device-refs.js';

/**
 * Views are memoized per grant and state (api/watcher-views.ts) and their
 * representations found by view identity (api/representations.ts): the
 * shortcuts must give exactly what building afresh gives, and must notice
 * what the memo does not key on (device classes, entity, idle threshold).
 */
const NOW = Date.parse('2026-05-04T10:00:00Z');
const OWNER = '00000000-0000-4000-8000-0000000000a1';
const DEVICE = '11111111-1111-4111-8111-111111111111';
const [W1, W2, W3, W4] = ['21111111-1111-4111-8111-111111111111', '22222222-2222-4222-8222-222222222222', '23333333-3333-4333-8333-333333333333', '24444444-4444-4444-8444-444444444444'];

function setup() {
  const directory = new Directory();
  directory.putOwner({ id: OWNER, handle: 'alice' });
  directory.putDevice({ id: DEVICE, ownerId: OWNER, deviceClass: 'phone', revoked: false });
  for (const id of [W1, W2, W3, W4]) directory.putWatcher({ id, kind: 'person', name: id, domain: undefined, revoked: false });
  const hub = new PresenceHub({ offlineAfterMs: 3_600_000 });
  const ruleBook = new RuleBook();
  const rule = (id: string, body: RuleBodyInput) => ({ ...ruleBodySchema.parse(body), id });
  ruleBook.replace(OWNER, [
    rule('r1', { conditions: { identity: { watchers: [W1, W2] } }, actions: { subHandling: 'allow' }, transformations: { availability: true, activities: true, devices: 'all' } }),
    rule('r2', { conditions: { identity: { watchers: [W3] } }, actions: { subHandling: 'polite-block' } }),
    // W4 is matched by two allow rules: a combined grant.
    rule('r3', { conditions: { identity: { watchers: [W4] } }, actions: { subHandling: 'allow' }, transformations: { availability: true } }),
    rule('r4', { conditions: { identity: { watchers: [W4] } }, actions: { subHandling: 'allow' }, transformations: { activities: true, devices: ['phone'] } }),
  ]);
  const deps: WatcherViewDeps = { directory, ruleBook, hub, entityOf: (handle) => `pres:${handle}@example.com`, deviceRefs: testDeviceRefs() };
  const call = (state: string, at = NOW) => hub.apply(OWNER, DEVICE, [sensorEventSchema.parse({ kind: 'call', at: new Date(at).toISOString(), state })], at);
  return { directory, hub, ruleBook, deps, call };
}

/** The view built afresh, as before memoization. */
function fresh(deps: WatcherViewDeps, watcherId: string, now: number): WatcherView {
  const owner = deps.directory.ownerByHandle('alice');
  if (!owner) throw new Error('no owner');
  const state = deps.hub.current(owner.id, now);
  const decision = evaluateConsent(deps.ruleBook.policy(owner.id), { id: watcherId, domain: undefined }, { now, sphere: state.place?.sphere, zone: state.place?.zone });
  return buildWatcherView(state, decision, {
    entity: deps.entityOf('alice'),
    deviceClass: (id) => deps.directory.device(id)?.deviceClass,
    idleThresholdSeconds: deps.directory.settings(owner.id).idleAfterSeconds,
    showsClass: false,
    deviceRefs: deps.deviceRefs,
  });
}

const viewer = (id: string) => ({ kind: 'watcher', id }) as const;

t.test('watchers with the same grant share one frozen view, equal to one built afresh', async (t) => {
  const { deps, call } = setup();
  call('in-call');
  const a = computeView(deps, viewer(W1), 'alice', NOW);
  const b = computeView(deps, viewer(W2), 'alice', NOW + 1);
  t.equal(a.view, b.view, 'the same object');
  t.ok(Object.isFrozen(a.view) && Object.isFrozen(a.view.devices) && Object.isFrozen(a.view.devices?.[0]), 'deeply frozen');
  t.same(a.view, fresh(deps, W1, NOW));
  t.match(a.view, { availability: 'busy', activities: ['on-the-phone'], devices: [{ id: String }] });
  t.equal(a.view.devices?.[0]?.class, undefined, 'no class for a watcher: RFC 5025 provide-class is never granted');

  const combined = computeView(deps, viewer(W4), 'alice', NOW);
  t.equal(computeView(deps, viewer(W4), 'alice', NOW + 1).view, combined.view, 'a combined grant is reused too');
  t.same(combined.view, fresh(deps, W4, NOW));
});

t.test('a change of state, of a device class, or of the entity gives a new view', async (t) => {
  const { deps, directory, call } = setup();
  call('in-call');
  const before = computeView(deps, viewer(W1), 'alice', NOW).view;
  const ownBefore = computeView(deps, { kind: 'owner' }, 'alice', NOW).view;
  t.match(ownBefore, { devices: [{ class: 'phone' }] }, "the owner's own view shows device classes");
  directory.putDevice({ id: DEVICE, ownerId: OWNER, deviceClass: 'tablet', revoked: false });
  const reclassed = computeView(deps, viewer(W1), 'alice', NOW).view;
  t.not(reclassed, before, 'a grant of devices selects by class: built again');
  t.same(reclassed, fresh(deps, W1, NOW));
  const ownAfter = computeView(deps, { kind: 'owner' }, 'alice', NOW).view;
  t.not(ownAfter, ownBefore);
  t.match(ownAfter, { devices: [{ class: 'tablet' }] }, 'the device class the directory has now');
  t.equal(computeView(deps, viewer(W1), 'alice', NOW).view.devices?.[0]?.class, undefined, 'and still none for the watcher');

  call('idle', NOW + 1000);
  const after = computeView(deps, viewer(W1), 'alice', NOW + 1000).view;
  t.match(after, { availability: 'available' });
  t.same(after, fresh(deps, W1, NOW + 1000));

  const renamed = computeView({ ...deps, entityOf: (handle) => `pres:${handle}@elsewhere.example` }, viewer(W1), 'alice', NOW + 1000).view;
  t.equal(renamed.entity, 'pres:alice@elsewhere.example');
});

t.test('refused and unknown alike get the offline view; revocation is seen at once', async (t) => {
  const { deps, ruleBook, call } = setup();
  call('in-call');
  t.same(computeView(deps, viewer(W3), 'alice', NOW).view, offlineView('pres:alice@example.com'), 'polite-block');
  t.same(computeView(deps, viewer(W1), 'bob', NOW).view, offlineView('pres:bob@example.com'), 'unknown owner');
  const shown = computeView(deps, viewer(W1), 'alice', NOW).view;
  t.match(shown, { availability: 'busy' });
  ruleBook.replace(OWNER, ruleBook.rules(OWNER).filter((r) => r.id !== 'r1'));
  t.same(computeView(deps, viewer(W1), 'alice', NOW).view, offlineView('pres:alice@example.com'), 'rule removed: offline at once');
});

t.test('representations: found by view identity, the same bytes and entity tag as for an equal view built afresh', async (t) => {
  const { deps, call } = setup();
  call('in-call');
  const cache = new RepresentationCache();
  const view = computeView(deps, viewer(W1), 'alice', NOW).view;
  for (const mediaType of [JSON_MEDIA_TYPE, PIDF_MEDIA_TYPE] as const) {
    const first = cache.get(view, mediaType, NOW);
    t.equal(cache.get(view, mediaType, NOW), first, `${mediaType}: the same representation again`);
    const copy = structuredClone(view) as WatcherView;
    t.equal(cache.get(copy, mediaType, NOW), first, `${mediaType}: an equal, unfrozen view shares it`);
    t.same(new RepresentationCache().get(copy, mediaType, NOW), first, `${mediaType}: what a fresh cache renders`);
  }
  t.equal(cache.get(view, JSON_MEDIA_TYPE).body, `${JSON.stringify(view)}\n`);
});

t.test('the representation cache is bounded by size as well as by count, oldest out first', async (t) => {
  const withNote = (note: string): WatcherView => ({ ...offlineView('pres:alice@example.com'), note }) as WatcherView;
  const one = new RepresentationCache(1000, 0).get(withNote('x'), JSON_MEDIA_TYPE);
  const cache = new RepresentationCache(1000, 10 * (2 * one.body.length + JSON_MEDIA_TYPE.length + 4));
  const views = Array.from({ length: 30 }, (_, i) => withNote(`note ${String(i).padStart(3, '0')}`));
  const first = views.map((view) => cache.get(view, JSON_MEDIA_TYPE));
  t.ok(cache.size.entries <= 10 && cache.size.entries >= 9, `about ten entries fit (${cache.size.entries})`);
  t.ok(cache.size.chars <= 10 * (2 * one.body.length + JSON_MEDIA_TYPE.length + 4), 'within the size');
  t.equal(cache.get(views[29] as WatcherView, JSON_MEDIA_TYPE), first[29], 'the newest is still held');
  t.not(cache.get(views[0] as WatcherView, JSON_MEDIA_TYPE), first[0], 'the oldest was let go (rendered again, equal)');
  t.same(cache.get(views[0] as WatcherView, JSON_MEDIA_TYPE), first[0]);
  const huge = withNote('y'.repeat(100_000));
  t.equal(cache.get(huge, JSON_MEDIA_TYPE).body, `${JSON.stringify(huge)}\n`, 'one larger than the whole bound is answered');
  t.ok(cache.size.chars <= 10 * (2 * one.body.length + JSON_MEDIA_TYPE.length + 4), 'and not kept');
});

t.test('a PIDF with a location is rendered again on another day', async (t) => {
  const cache = new RepresentationCache();
  const view: WatcherView = Object.freeze({
    entity: 'pres:alice@example.com',
    basic: 'open',
    location: Object.freeze({ latitude: 48.1, longitude: 11.5, radiusMeters: 1000, precision: 'km', retransmissionAllowed: false, retentionDays: 1 }),
  });
  const today = cache.get(view, PIDF_MEDIA_TYPE, NOW);
  const tomorrow = cache.get(view, PIDF_MEDIA_TYPE, NOW + 86_400_000);
  t.not(tomorrow.body, today.body, 'the retention-expiry moves with the day');
  t.equal(cache.get(view, PIDF_MEDIA_TYPE, NOW + 86_400_000 + 1), tomorrow);
  t.same(cache.get(view, PIDF_MEDIA_TYPE, NOW), today, 'and back');
});

t.test('access records carry the view fields; withheld reads none', async (t) => {
  const { deps, call } = setup();
  call('in-call');
  const log = new AccessLogBuffer();
  recordAccess(log, W1, computeView(deps, viewer(W1), 'alice', NOW), 'read', NOW);
  recordAccess(log, W1, computeView(deps, viewer(W1), 'alice', NOW + 10), 'read', NOW + 10);
  recordAccess(log, W3, computeView(deps, viewer(W3), 'alice', NOW), 'read', NOW);
  t.same(
    log.take().map((e) => [e.watcherId, e.outcome, [...e.fields], e.count]),
    [
      [W1, 'shown', ['basic', 'availability', 'activities', 'devices'], 2],
      [W3, 'withheld', [], 1],
    ],
  );
});
