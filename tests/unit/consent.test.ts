import t from 'tap';
import type { PresenceState } from '../../core/presence.js';
import { OFFLINE_STATE } from '../../core/presence.js';
import { evaluateConsent, recurringWindowState, type PolicyContext, type WatcherIdentity } from '../../policy/evaluate-consent.js';
import { ruleBodySchema, ruleSchema, type Group, type Rule, type RuleBodyInput } from '../../policy/rule.js';
import { buildWatcherView, offlineView, viewFields, type ViewContext } from '../../policy/watcher-view.js';
import { renderPidf } from '../../core/render-pidf.js';
import { testDeviceRefs } from '../helpers/device-refs.js';

/**
 * Table-driven tests of the consent engine, one block per RFC 4745 / RFC
 * 5025 / RFC 6772 clause (the random-input properties are in
 * consent-properties.test.ts).
 */
const W1 = 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa';
const W2 = 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb';
const W3 = 'cccccccc-cccc-4ccc-8ccc-cccccccccccc';
const G1 = '11111111-1111-4111-8111-111111111111';
const ENTITY = 'pres:alice@example.com';
const NOW = Date.parse('2026-11-25T10:30:00Z'); // a Wednesday

let n = 0;
const rule = (body: RuleBodyInput, extra: Partial<Rule> = {}): Rule =>
  ruleSchema.parse({ ...ruleBodySchema.parse(body), id: `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}`, ...extra });
const allow = (watchers: string[], transformations: RuleBodyInput['transformations'] = { availability: true, activities: true }, conditions: Partial<RuleBodyInput['conditions']> = {}) =>
  rule({ conditions: { identity: { watchers }, ...conditions }, actions: { subHandling: 'allow' }, transformations });
const handling = (watchers: string[], subHandling: 'block' | 'confirm' | 'polite-block' | 'allow') => rule({ conditions: { identity: { watchers } }, actions: { subHandling }, transformations: { availability: true } });

const w = (id: string, domain?: string): WatcherIdentity => ({ id, domain });
const ctx = (over: Partial<PolicyContext> = {}): PolicyContext => ({ now: NOW, sphere: 'work', zone: 'Office', ...over });
const policy = (rules: Rule[], groups: Group[] = []) => ({ rules, groups });
const classes: Readonly<Record<string, string>> = { 'dev-phone': 'phone', 'dev-watch': 'watch' };
const view: ViewContext = { entity: ENTITY, deviceClass: (id) => classes[id], idleThresholdSeconds: 300, showsClass: false, deviceRefs: testDeviceRefs() };

const busy: PresenceState = {
  availability: 'busy',
  activities: ['on-the-phone', 'working'],
  userInput: { state: 'active', lastInput: Date.parse('2026-11-25T10:29:00Z') },
  place: { zone: 'Office', placeType: 'office', sphere: 'work' },
  location: { latitude: 48.208176, longitude: 16.373819, accuracy: 12, deviceId: 'dev-phone' },
  note: 'back at 3',
  timeOffsetMinutes: 60,
  lastSeen: NOW,
  devices: [
    { id: 'dev-phone', lastSeen: NOW, live: true },
    { id: 'dev-watch', lastSeen: NOW - 3_600_000, live: false },
  ],
  trace: { availability: { rule: 'in a call', signals: ['dev-phone/call'] } },
};

const decide = (rules: Rule[], watcher = w(W1), context = ctx(), groups: Group[] = []) => evaluateConsent(policy(rules, groups), watcher, context);
const shown = (rules: Rule[], state = busy, watcher = w(W1), context = ctx(), groups: Group[] = []) => buildWatcherView(state, decide(rules, watcher, context, groups), view);

t.test('RFC 4745 §10: no matching rule -> nothing shown (the offline view)', async (t) => {
  t.equal(decide([allow([W2])]).kind, 'no-match');
  t.equal(decide([]).kind, 'no-match');
  t.same(shown([allow([W2])]), offlineView(ENTITY));
});

t.test('RFC 5025 §3.2.1: sub-handling combines to the highest value (block < confirm < polite-block < allow)', async (t) => {
  const table: [string[], string][] = [
    [['block'], 'block'],
    [['block', 'confirm'], 'confirm'],
    [['confirm', 'polite-block'], 'polite-block'],
    [['block', 'polite-block'], 'polite-block'],
    [['polite-block', 'allow'], 'allow'],
    [['allow', 'block'], 'allow'],
  ];
  for (const [handlings, expected] of table) {
    t.equal(decide(handlings.map((h) => handling([W1], h as 'block'))).kind, expected, handlings.join('+'));
  }
});

t.test('privacy invariant 1: block, confirm, polite-block and no match all show exactly the offline view', async (t) => {
  for (const h of ['block', 'confirm', 'polite-block'] as const) t.same(shown([handling([W1], h)]), offlineView(ENTITY), h);
  t.same(shown([]), offlineView(ENTITY), 'no rule');
  t.same(shown([allow([W1])], OFFLINE_STATE), offlineView(ENTITY), 'an allowed watcher of an offline owner');
});

t.test('RFC 4745 §10.2: a rule that does not allow never widens what an allow rule shows', async (t) => {
  const d = decide([allow([W1], { availability: true }), rule({ conditions: { identity: { watchers: [W1] } }, actions: { subHandling: 'block' }, transformations: { activities: true, location: 'exact' } })]);
  t.equal(d.kind, 'allow');
  t.same(shown([allow([W1], { availability: true }), rule({ conditions: { identity: { watchers: [W1] } }, actions: { subHandling: 'polite-block' }, transformations: { note: true } })]), {
    entity: ENTITY,
    basic: 'open',
    availability: 'busy',
  });
});

t.test('RFC 4745 §10.2: per field, the most permissive value among matching rules', async (t) => {
  const d = decide([
    allow([W1], { availability: true, location: 'city', userInput: 'bare', devices: ['phone'] }),
    allow([W1, W2], { activities: true, location: 'km', userInput: 'full', devices: ['watch'], place: 'type' }),
    allow([W2], { location: 'exact', note: true }),
  ]);
  t.equal(d.kind, 'allow');
  if (d.kind !== 'allow') return;
  t.same(
    { ...d.grant },
    { availability: true, activities: true, place: 'type', sphere: false, location: 'km', locationRetransmission: false, locationRetentionDays: 0, userInput: 'full', devices: ['phone', 'watch'], services: [], note: false, timeOffset: false },
  );
  t.same(d.provenance.location, [d.ruleIds[1]], 'the rule holding the winning precision');
  t.same(d.provenance.devices, d.ruleIds, 'both rules add a class');
  t.notOk('note' in d.provenance, 'a field not shown has no provenance');
  t.same(decide([allow([W1], { devices: ['phone'] }), allow([W1], { devices: 'all' })]).kind === 'allow' && (decide([allow([W1], { devices: ['phone'] }), allow([W1], { devices: 'all' })]) as { grant: { devices: unknown } }).grant.devices, 'all');
});

t.test('RFC 5025 §3.3: an omitted permission is its lowest value; old stored rule bodies keep their meaning', async (t) => {
  const parsed = ruleBodySchema.parse({ conditions: { identity: { watchers: [W1] } }, actions: { subHandling: 'allow' } });
  t.same(parsed.transformations, {
    availability: false,
    activities: false,
    place: 'none',
    sphere: false,
    location: 'none',
    locationRetransmission: false,
    locationRetentionDays: 0,
    userInput: 'false',
    devices: [],
    services: [],
    note: false,
    timeOffset: false,
  });
  t.same(shown([rule({ conditions: { identity: { watchers: [W1] } }, actions: { subHandling: 'allow' } })]), offlineView(ENTITY));
  const stored = ruleBodySchema.safeParse({ conditions: { identity: { watchers: [W1] } }, actions: { subHandling: 'allow' }, transformations: { availability: true, activities: false } });
  t.ok(stored.success, 'a body stored before the richer model parses');
});

t.test('RFC 4745 §7.1: identity by watcher, group, domain, any authenticated, with exceptions', async (t) => {
  const group: Group = { id: G1, name: 'family', members: [W2] };
  const table: { name: string; identity: RuleBodyInput['conditions']['identity']; watcher: WatcherIdentity; matches: boolean }[] = [
    { name: '<one> names the watcher', identity: { watchers: [W1] }, watcher: w(W1), matches: true },
    { name: '<one> names another', identity: { watchers: [W2] }, watcher: w(W1), matches: false },
    { name: 'a group the watcher is in', identity: { groups: [G1] }, watcher: w(W2), matches: true },
    { name: 'a group the watcher is not in', identity: { groups: [G1] }, watcher: w(W1), matches: false },
    { name: '<many domain> of the watcher', identity: { domains: ['example.com'] }, watcher: w(W1, 'example.com'), matches: true },
    { name: '<many domain> of another domain', identity: { domains: ['example.com'] }, watcher: w(W1, 'example.org'), matches: false },
    { name: '<many domain> and a watcher of no domain', identity: { domains: ['example.com'] }, watcher: w(W1), matches: false },
    { name: '<many> any authenticated watcher', identity: { anyAuthenticated: true }, watcher: w(W3), matches: true },
    { name: '<many><except id> excludes that watcher', identity: { anyAuthenticated: true, except: { watchers: [W3] } }, watcher: w(W3), matches: false },
    { name: '<many><except domain> excludes that domain', identity: { anyAuthenticated: true, except: { domains: ['evil.example'] } }, watcher: w(W3, 'evil.example'), matches: false },
    { name: '<many domain><except id>', identity: { domains: ['example.com'], except: { watchers: [W1] } }, watcher: w(W1, 'example.com'), matches: false },
    { name: '§7.1.3: <except> applies to <many> only, not to <one>', identity: { watchers: [W1], anyAuthenticated: true, except: { watchers: [W1] } }, watcher: w(W1), matches: true },
  ];
  for (const row of table) {
    const d = decide([rule({ conditions: { identity: row.identity }, actions: { subHandling: 'allow' }, transformations: { availability: true } })], row.watcher, ctx(), [group]);
    t.equal(d.kind, row.matches ? 'allow' : 'no-match', row.name);
  }
  t.notOk(ruleBodySchema.safeParse({ conditions: { identity: {} }, actions: { subHandling: 'allow' } }).success, 'an identity naming nobody is refused');
  t.notOk(ruleBodySchema.safeParse({ conditions: { identity: { domains: ['Example.COM'] } }, actions: { subHandling: 'allow' } }).success, 'domains are lower case');
  t.notOk(ruleBodySchema.safeParse({ conditions: { identity: { watchers: [W1.toUpperCase()] } }, actions: { subHandling: 'allow' } }).success, 'ids are lower-case UUIDs');
});

t.test('RFC 4745 §7.3: sphere holds only while the owner is in it', async (t) => {
  const r = allow([W1], { availability: true }, { sphere: 'work' });
  t.equal(decide([r], w(W1), ctx({ sphere: 'work' })).kind, 'allow');
  t.equal(decide([r], w(W1), ctx({ sphere: 'home' })).kind, 'no-match');
  t.equal(decide([r], w(W1), ctx({ sphere: undefined })).kind, 'no-match');
});

t.test('RFC 4745 §7.4: validity is a union of [from, until) intervals, and the decision says when it next flips', async (t) => {
  const r = allow([W1], { availability: true }, {
    validity: [
      { from: '2026-11-25T09:00:00Z', until: '2026-11-25T11:00:00Z' },
      { from: '2026-11-26T09:00:00Z', until: '2026-11-26T11:00:00Z' },
    ],
  });
  const inside = decide([r]);
  t.equal(inside.kind, 'allow');
  t.equal(inside.validUntil, Date.parse('2026-11-25T11:00:00Z'));
  t.equal(decide([r], w(W1), ctx({ now: Date.parse('2026-11-25T11:00:00Z') })).kind, 'no-match', 'until is exclusive');
  const between = decide([r], w(W1), ctx({ now: Date.parse('2026-11-25T20:00:00Z') }));
  t.equal(between.kind, 'no-match');
  t.equal(between.validUntil, Date.parse('2026-11-26T09:00:00Z'), 'a stream wakes when the next interval opens');
  t.notOk(ruleBodySchema.safeParse({ conditions: { identity: { watchers: [W1] }, validity: [{ from: '2026-11-26T00:00:00Z', until: '2026-11-25T00:00:00Z' }] }, actions: { subHandling: 'allow' } }).success);
});

t.test('recurring windows: weekdays 9-17 in the window\'s own time zone, midnight-spanning windows, next edge', async (t) => {
  const weekdays = { days: ['mon', 'tue', 'wed', 'thu', 'fri'] as const, from: '09:00', to: '17:00', timeZone: 'Europe/Berlin' };
  const at = (iso: string) => recurringWindowState({ ...weekdays, days: [...weekdays.days] }, Date.parse(iso));
  t.same(at('2026-11-25T15:30:00Z'), { open: true, nextEdge: Date.parse('2026-11-25T16:00:00Z') }, 'Wednesday 16:30 in Berlin: open until 17:00 local');
  t.same(at('2026-11-25T10:30:00Z'), { open: true, nextEdge: Date.parse('2026-11-25T16:00:00Z') });
  t.equal(at('2026-11-25T16:00:00Z').open, false, '17:00 local: closed');
  t.equal(at('2026-11-28T10:00:00Z').open, false, 'Saturday');
  t.equal(at('2026-11-25T07:59:00Z').open, false, '08:59 local');
  t.equal(at('2026-11-25T08:00:00Z').open, true, '09:00 local');
  const night = { days: ['fri' as const], from: '22:00', to: '06:00', timeZone: 'UTC' };
  t.equal(recurringWindowState(night, Date.parse('2026-11-27T23:00:00Z')).open, true, 'Friday 23:00');
  t.equal(recurringWindowState(night, Date.parse('2026-11-28T05:59:00Z')).open, true, 'Saturday 05:59 belongs to Friday\'s window');
  t.equal(recurringWindowState(night, Date.parse('2026-11-28T06:00:00Z')).open, false);
  t.equal(recurringWindowState(night, Date.parse('2026-11-28T23:00:00Z')).open, false, 'Saturday night is not Friday\'s');
  // 2026-03-29: Berlin's clocks jump from 02:00 to 03:00; a window opening at 02:15 opens at the jump.
  const spring = { days: ['sun' as const], from: '02:15', to: '05:00', timeZone: 'Europe/Berlin' };
  const beforeJump = recurringWindowState(spring, Date.parse('2026-03-29T00:50:00Z'));
  t.same(beforeJump, { open: false, nextEdge: Date.parse('2026-03-29T01:00:00Z') }, 'the daylight-saving change is an edge');
  t.equal(recurringWindowState(spring, Date.parse('2026-03-29T01:00:00Z')).open, true, '03:00 CEST: open');
  const r = allow([W1], { availability: true }, { recurring: [{ ...weekdays, days: [...weekdays.days] }] });
  t.equal(decide([r]).kind, 'allow');
  t.equal(decide([r], w(W1), ctx({ now: Date.parse('2026-11-28T10:00:00Z') })).kind, 'no-match');
});

t.test('"share until I arrive": holds on the way, not once there, and never again once the arrival is recorded', async (t) => {
  const r = allow([W1], { availability: true, location: 'exact' }, { untilArrivalAt: 'Home' });
  t.equal(decide([r], w(W1), ctx({ zone: undefined })).kind, 'allow', 'on the way');
  t.equal(decide([r], w(W1), ctx({ zone: 'Home' })).kind, 'no-match', 'arrived (not yet recorded)');
  const spent = { ...r, arrivedAt: '2026-11-25T10:00:00Z' };
  t.equal(decide([spent], w(W1), ctx({ zone: undefined })).kind, 'no-match', 'left again after the arrival');
});

t.test('RFC 5025 §3.3 transformations, field by field', async (t) => {
  const table: { name: string; grant: RuleBodyInput['transformations']; expected: object }[] = [
    { name: 'availability only', grant: { availability: true }, expected: { basic: 'open', availability: 'busy' } },
    { name: 'activities without place or sphere: working (implied by the work sphere) is withheld', grant: { availability: true, activities: true }, expected: { basic: 'open', availability: 'busy', activities: ['on-the-phone'] } },
    { name: 'activities with sphere: working shows', grant: { availability: true, activities: true, sphere: true }, expected: { basic: 'open', availability: 'busy', activities: ['on-the-phone', 'working'], sphere: 'work' } },
    { name: 'place type', grant: { availability: true, place: 'type' }, expected: { basic: 'open', availability: 'busy', placeType: 'office' } },
    { name: 'place zone', grant: { availability: true, place: 'zone' }, expected: { basic: 'open', availability: 'busy', placeType: 'office', zone: 'Office' } },
    { name: 'user input bare', grant: { availability: true, userInput: 'bare' }, expected: { basic: 'open', availability: 'busy', userInput: { state: 'active' } } },
    { name: 'user input thresholds', grant: { availability: true, userInput: 'thresholds' }, expected: { basic: 'open', availability: 'busy', userInput: { state: 'active', idleThresholdSeconds: 300 } } },
    {
      name: 'user input full',
      grant: { availability: true, userInput: 'full' },
      expected: { basic: 'open', availability: 'busy', userInput: { state: 'active', idleThresholdSeconds: 300, lastInput: '2026-11-25T10:29:00.000Z' } },
    },
    { name: 'note', grant: { availability: true, note: true }, expected: { basic: 'open', availability: 'busy', note: 'back at 3' } },
    { name: 'time offset', grant: { availability: true, timeOffset: true }, expected: { basic: 'open', availability: 'busy', timeOffsetMinutes: 60 } },
    { name: 'location at 1 km, without availability: the owner shows as open with the location only', grant: { location: 'km' }, expected: { basic: 'open' } },
  ];
  for (const row of table) {
    const v = shown([allow([W1], row.grant)]);
    const { entity, location, ...rest } = v;
    t.equal(entity, ENTITY);
    t.same(rest, row.expected, row.name);
    if (row.name.startsWith('location')) t.equal(location?.precision, 'km');
    else t.notOk(location, `${row.name}: no location`);
  }
});

t.test('RFC 6772 §6.5.2: location is snapped to the granted grid; exact is the fix itself', async (t) => {
  const at = (precision: 'city' | 'km' | '100m' | 'exact') => shown([allow([W1], { availability: true, location: precision })]).location;
  t.same(at('exact'), { latitude: 48.208176, longitude: 16.373819, radiusMeters: 12, precision: 'exact', retransmissionAllowed: false, retentionDays: 0 }, 'no device named without a devices grant');
  t.match(shown([allow([W1], { location: 'exact', devices: ['phone'] })]).location, { device: { id: /^d[0-9a-f]{12}$/ } }, 'the measuring phone is named when phones are granted');
  t.notOk(shown([allow([W1], { location: 'exact', devices: ['watch'] })]).location?.device, 'not when only watches are');
  const usage = shown([allow([W1], { location: 'km', locationRetentionDays: 7 }), allow([W1], { location: 'city', locationRetransmission: true })]).location;
  t.match(usage, { precision: 'km', retransmissionAllowed: true, retentionDays: 7 }, 'RFC 4119 usage rules combine to the most permissive too');
  for (const p of ['city', 'km', '100m'] as const) {
    const loc = at(p);
    t.ok(loc && (loc.latitude !== 48.208176 || loc.longitude !== 16.373819), `${p}: not the true point`);
  }
  const nearby: PresenceState = { ...busy, location: { latitude: 48.208177, longitude: 16.37382, accuracy: 3, deviceId: 'dev-phone' } };
  t.same(shown([allow([W1], { location: 'km' })], nearby).location, at('km'), 'a jittered fix in the same cell reads the same');
  const radii = (['city', 'km', '100m'] as const).map((p) => at(p)?.radiusMeters ?? 0);
  t.ok((radii[0] ?? 0) > (radii[1] ?? 0) && (radii[1] ?? 0) > (radii[2] ?? 0), 'coarser grids, larger radii');
});

t.test('RFC 5025 §3.3: devices and services, all or by class, never by their service-internal ids', async (t) => {
  const all = shown([allow([W1], { devices: 'all', services: 'all' })]);
  t.equal(all.devices?.length, 2);
  t.same(
    all.services?.map((s) => s.basic),
    ['open', 'closed'],
  );
  t.notMatch(JSON.stringify(all), /dev-phone|dev-watch/, 'raw device ids never leave');
  t.match(all.devices?.[0]?.deviceId ?? '', /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  // RFC 5025 §3.3.2: the class is provide-class's, a permission no rule grants here.
  t.notMatch(JSON.stringify(all), /"class"/, 'no class is shown to a watcher');
  t.notMatch(renderPidf(all), /rpid:class/);
  const phones = shown([allow([W1], { devices: ['phone'] })]);
  t.equal(phones.devices?.length, 1, 'selected by class (provide-devices, RFC 5025 §3.3.1)');
  t.same(Object.keys(phones.devices?.[0] ?? {}), ['id', 'deviceId'], 'without saying which');
  // Ids are keyed by the device grant: comparing views shown different
  // devices does not tell which of them is the phone (its class).
  const phone = phones.devices?.[0];
  t.notOk(
    all.devices?.some((d) => d.id === phone?.id || d.deviceId === phone?.deviceId),
    'a watcher shown other devices knows the phone by other ids',
  );
  t.same(shown([allow([W1], { devices: ['phone'], location: 'exact', note: true })]).devices, phones.devices, 'the same ids under the same device grant, whatever else it shows');
  t.same(shown([allow([W1], { devices: ['phone', 'phone'] })]).devices, phones.devices, 'a class set is a set');
  t.equal(shown([allow([W1], { location: 'exact', devices: ['phone'] })]).location?.device?.deviceId, phone?.deviceId, "the location names its device by the view's id for it");
  t.same(shown([allow([W1], { devices: ['sensor'] })]), offlineView(ENTITY), 'no device of the class: nothing to show');
  const owners = buildWatcherView(busy, decide([allow([W1], { devices: 'all', services: 'all' })], w(W1), ctx()), { ...view, showsClass: true });
  t.same(
    owners.services?.map((s) => [s.class, s.basic]),
    [
      ['phone', 'open'],
      ['watch', 'closed'],
    ],
    "the owner's own view shows them",
  );
});

t.test('the owner-only trace never reaches a watcher, whatever is granted', async (t) => {
  const everything = shown([allow([W1], { availability: true, activities: true, place: 'zone', sphere: true, location: 'exact', userInput: 'full', devices: 'all', services: 'all', note: true, timeOffset: true })]);
  t.notMatch(JSON.stringify(everything), /in a call|dev-phone|trace/);
  t.equal(everything.location?.device?.id, everything.devices?.[0]?.id, 'the location names its device by the same derived id');
});

t.test('access-log fields name the precision shown', async (t) => {
  const v = shown([allow([W1], { availability: true, location: '100m', userInput: 'thresholds' })]);
  t.same(viewFields(v), ['basic', 'availability', 'location:100m', 'userInput:thresholds']);
  t.same(viewFields(offlineView(ENTITY)), ['basic', 'availability']);
});
