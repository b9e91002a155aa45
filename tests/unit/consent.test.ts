import fc from 'fast-check';
import t from 'tap';
import type { Activity, Availability, PresenceState } from '../../core/presence.js';
import { OFFLINE_STATE } from '../../core/presence.js';
import { evaluateConsent } from '../../policy/evaluate-consent.js';
import type { Rule } from '../../policy/rule.js';
import { buildWatcherView, offlineView } from '../../policy/watcher-view.js';

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
const busy: PresenceState = { availability: 'busy', activities: ['on-the-phone'], userInput: undefined, lastSeen: 1, devices: [{ id: 'd', lastSeen: 1 }] };

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

t.test('property: a view never carries a field the merged rules do not grant', async (t) => {
  const availabilityArb = fc.constantFrom<Availability>('available', 'busy', 'away', 'offline');
  const activitiesArb = fc.subarray<Activity>(['on-the-phone', 'meeting', 'away']);
  const stateArb = fc.record({ availability: availabilityArb, activities: activitiesArb }).map(
    (s): PresenceState => ({ ...s, userInput: undefined, lastSeen: s.availability === 'offline' ? undefined : 5, devices: [] }),
  );
  const ruleArb = fc
    .tuple(fc.subarray([W1, W2], { minLength: 1 }), fc.constantFrom('block' as const, 'polite-block' as const, 'allow' as const), fc.boolean(), fc.boolean())
    .map(([ws, sh, a, b]) => rule(ws, sh, a, b));
  fc.assert(
    fc.property(fc.array(ruleArb, { maxLength: 5 }), stateArb, fc.constantFrom(W1, W2), (rules, state, watcher) => {
      const decision = evaluateConsent(rules, watcher);
      const view = buildWatcherView(ENTITY, state, decision);
      const matching = rules.filter((r) => r.conditions.identity.watchers.includes(watcher));
      const allowed = matching.some((r) => r.actions.subHandling === 'allow');
      const grantsAvailability = allowed && matching.some((r) => r.transformations.availability);
      const grantsActivities = allowed && matching.some((r) => r.transformations.activities);
      if (!allowed || state.availability === 'offline' || (!grantsAvailability && !grantsActivities)) {
        return JSON.stringify(view) === JSON.stringify(offlineView(ENTITY));
      }
      const keys = Object.keys(view).sort();
      const expected = ['basic', 'entity', ...(grantsAvailability ? ['availability'] : []), ...(grantsActivities ? ['activities'] : [])].sort();
      return JSON.stringify(keys) === JSON.stringify(expected);
    }),
    { numRuns: 2000 },
  );
  t.pass('no run leaked a field');
});
