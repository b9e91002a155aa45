import fc from 'fast-check';
import t from 'tap';
import type { Activity, Availability, PresenceState } from '../../core/presence.js';
import { OFFLINE_STATE } from '../../core/presence.js';
import { evaluateConsent } from '../../policy/evaluate-consent.js';
import { ruleBodySchema, type Rule } from '../../policy/rule.js';
import { buildWatcherView, offlineView, type WatcherView } from '../../policy/watcher-view.js';

const W1 = 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa';
const W2 = 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb';
const ENTITY = 'pres:alice@example.com';
let n = 0;
const rule = (watchers: string[], subHandling: Rule['actions']['subHandling'], availability = true, activities = true): Rule => ({
  id: `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}`,
  conditions: { identity: { watchers } },
  actions: { subHandling },
  transformations: { availability, activities },
});
const busy: PresenceState = {
  availability: 'busy',
  activities: ['on-the-phone'],
  userInput: undefined,
  place: { zone: 'Office', placeType: 'office', sphere: 'work' },
  timeOffsetMinutes: 60,
  lastSeen: 1,
  devices: [{ id: 'd', lastSeen: 1, live: true }],
  trace: { availability: { rule: 'in a call', signals: ['d/call'] } },
};

t.test('RFC 4745 §10: no matching rule -> no-match, shown as offline', async (t) => {
  t.same(evaluateConsent([rule([W2], 'allow')], W1), { kind: 'no-match' });
  t.same(buildWatcherView(ENTITY, busy, { kind: 'no-match' }), offlineView(ENTITY));
});

t.test('RFC 5025 §3.1: sub-handling combines to the highest value', async (t) => {
  t.equal(evaluateConsent([rule([W1], 'block')], W1).kind, 'block');
  t.equal(evaluateConsent([rule([W1], 'block'), rule([W1], 'polite-block')], W1).kind, 'polite-block');
  t.equal(evaluateConsent([rule([W1], 'polite-block'), rule([W1], 'allow')], W1).kind, 'allow');
  t.equal(evaluateConsent([rule([W1], 'allow'), rule([W1], 'block')], W1).kind, 'allow');
});

t.test('RFC 4745 §10.2: boolean transformations combine to true', async (t) => {
  const d = evaluateConsent([rule([W1], 'allow', true, false), rule([W1, W2], 'allow', false, true)], W1);
  t.same(d.kind === 'allow' && d.grant, { availability: true, activities: true });
  const d2 = evaluateConsent([rule([W1], 'allow', true, false)], W1);
  t.same(d2.kind === 'allow' && d2.grant, { availability: true, activities: false });
});

t.test('blocked, polite-blocked and unmatched watchers all see the offline view', async (t) => {
  for (const kind of ['block', 'polite-block', 'no-match'] as const) {
    t.same(buildWatcherView(ENTITY, busy, { kind }), offlineView(ENTITY), kind);
  }
});

t.test('an allowed watcher of an offline owner sees exactly the offline view', async (t) => {
  t.same(buildWatcherView(ENTITY, OFFLINE_STATE, { kind: 'allow', grant: { availability: true, activities: true }, ruleIds: [] }), offlineView(ENTITY));
});

t.test('a block rule never widens what an allow rule shows', async (t) => {
  const d = evaluateConsent([rule([W1], 'allow', true, false), rule([W1], 'block')], W1);
  t.same(d.kind === 'allow' && d.grant, { availability: true, activities: false });
  t.same(buildWatcherView(ENTITY, busy, d), { entity: ENTITY, basic: 'open', availability: 'busy' });
});

t.test('omitted transformations grant nothing (RFC 5025: a missing permission is its lowest value)', async (t) => {
  const parsed = ruleBodySchema.parse({ conditions: { identity: { watchers: [W1] } }, actions: { subHandling: 'allow' } });
  t.same(parsed.transformations, { availability: false, activities: false });
  const d = evaluateConsent([{ ...parsed, id: rule([W1], 'allow').id }], W1);
  t.same(buildWatcherView(ENTITY, busy, d), offlineView(ENTITY));
});

t.test('an activities-only grant does not reveal that an idle owner is online', async (t) => {
  const d = evaluateConsent([rule([W1], 'allow', false, true)], W1);
  const idle: PresenceState = { ...busy, availability: 'available', activities: [] };
  t.same(buildWatcherView(ENTITY, idle, d), offlineView(ENTITY));
  t.same(buildWatcherView(ENTITY, busy, d), { entity: ENTITY, basic: 'open', activities: ['on-the-phone'] });
});

t.test('activities implied by the place never reach a watcher (no rule can grant the place yet)', async (t) => {
  const atWork: PresenceState = { ...busy, availability: 'available', activities: ['working'] };
  t.same(buildWatcherView(ENTITY, atWork, evaluateConsent([rule([W1], 'allow', false, true)], W1)), offlineView(ENTITY), 'activities-only: nothing to show');
  t.same(buildWatcherView(ENTITY, { ...atWork, activities: ['meeting', 'travel'] }, evaluateConsent([rule([W1], 'allow')], W1)), {
    entity: ENTITY,
    basic: 'open',
    availability: 'available',
    activities: ['meeting'],
  });
});

t.test('ids are lower-case UUIDs only', async (t) => {
  t.notOk(ruleBodySchema.safeParse({ conditions: { identity: { watchers: [W1.toUpperCase()] } }, actions: { subHandling: 'allow' } }).success);
});

/**
 * The expected view, written from the rules of RFC 4745 §10 / RFC 5025
 * directly rather than through the engine: the allow rules among those
 * matching decide; each field is shown if any of them grants it.
 */
function expectedView(rules: readonly Rule[], watcher: string, state: PresenceState): WatcherView {
  const allowing = rules.filter((r) => r.conditions.identity.watchers.includes(watcher) && r.actions.subHandling === 'allow');
  const showAvailability = allowing.some((r) => r.transformations.availability);
  const showActivities = allowing.some((r) => r.transformations.activities);
  const offline = { entity: ENTITY, basic: 'closed', availability: 'offline' } as const;
  // Place-implied activities need a place permission, which rules cannot give yet.
  const sensed = state.activities.filter((a) => a !== 'travel' && a !== 'meal' && a !== 'working');
  if (state.availability === 'offline') return offline;
  if (showAvailability) return { entity: ENTITY, basic: 'open', availability: state.availability, ...(showActivities ? { activities: sensed } : {}) };
  if (showActivities && sensed.length > 0) return { entity: ENTITY, basic: 'open', activities: sensed };
  return offline;
}

t.test('property: the view is exactly what the merged rules grant, no field more', async (t) => {
  const availabilityArb = fc.constantFrom<Availability>('available', 'busy', 'do-not-disturb', 'away', 'unknown', 'offline');
  const activitiesArb = fc.subarray<Activity>(['sleeping', 'on-the-phone', 'meeting', 'steering', 'travel', 'meal', 'working', 'away']);
  const stateArb = fc.record({ availability: availabilityArb, activities: activitiesArb }).map(
    (s): PresenceState => ({ ...busy, ...s, lastSeen: s.availability === 'offline' ? undefined : 5 }),
  );
  const ruleArb = fc
    .tuple(fc.subarray([W1, W2], { minLength: 1 }), fc.constantFrom('block' as const, 'polite-block' as const, 'allow' as const), fc.boolean(), fc.boolean())
    .map(([ws, sh, a, b]) => rule(ws, sh, a, b));
  fc.assert(
    fc.property(fc.array(ruleArb, { maxLength: 5 }), stateArb, fc.constantFrom(W1, W2), (rules, state, watcher) => {
      const view = buildWatcherView(ENTITY, state, evaluateConsent(rules, watcher));
      return JSON.stringify(view) === JSON.stringify(expectedView(rules, watcher, state));
    }),
    { numRuns: 3000 },
  );
  t.pass('every run matched');
});
