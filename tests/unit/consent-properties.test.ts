import fc from 'fast-check';
import t from 'tap';
import { isDeepStrictEqual } from 'node:util';
import { placeTypeSchema, sphereSchema, type PlaceType, type Sphere } from '../../core/owner-settings.js';
import { activitySchema, availabilitySchema, OFFLINE_STATE, type Activity, type Availability, type PresenceState, type TraceEntry } from '../../core/presence.js';
import { renderPidf } from '../../core/render-pidf.js';
import {
  combineTransformations,
  evaluateConsent,
  identityMatches,
  ruleMatches,
  type Decision,
  type OwnerPolicy,
  type PolicyContext,
  type WatcherIdentity,
} from '../../policy/evaluate-consent.js';
import { NOTHING, ruleBodySchema, transformationsSchema, type Group, type Identity, type Rule, type RuleBodyInput, type SubHandling, type Transformations } from '../../policy/rule.js';
import { RuleBook } from '../../policy/rule-book.js';
import { gridCell, snapLocation } from '../../policy/snap-location.js';
import { buildWatcherView, offlineView, watcherViewSchema, type ViewContext, type WatcherView } from '../../policy/watcher-view.js';
import { testDeviceRefs } from '../helpers/device-refs.js';

/**
 * Property tests of the consent engine (RFC 4745 §10 combination, RFC 5025
 * permissions, RFC 6772 snapping) and the watcher view cut from it: a view
 * never holds a field or precision the merged rules do not grant, adding a
 * rule never shows less and removing one never shows more, snapping is
 * deterministic, the polite-block view equals the offline view, the owner's
 * trace and raw device ids never reach a watcher, and rule order does not
 * matter; also that a decision's `validUntil` is never later than the next
 * instant its matching rules change. The expected grant is computed here
 * from first principles; only the per-rule condition check (`ruleMatches`)
 * is reused. Each property throws inside fast-check, so a failure is
 * reported with its shrunk counterexample and seed.
 */

// --- pools and fixed instants ------------------------------------------------

const WATCHERS = ['11111111-1111-4111-8111-111111111111', '22222222-2222-4222-8222-222222222222', '33333333-3333-4333-8333-333333333333', '44444444-4444-4444-8444-444444444444'];
const GROUP_IDS = ['9a9a9a9a-0000-4000-8000-000000000001', '9a9a9a9a-0000-4000-8000-000000000002'];
const DOMAINS = ['a.example', 'b.example'];
const ZONES = ['Home', 'Office'];
const DEVICE_IDS = ['d7c1e0a2-5b3f-4e61-9a0d-c0ffee000001', 'd7c1e0a2-5b3f-4e61-9a0d-c0ffee000002', 'd7c1e0a2-5b3f-4e61-9a0d-c0ffee000003', 'd7c1e0a2-5b3f-4e61-9a0d-c0ffee000004', 'd7c1e0a2-5b3f-4e61-9a0d-c0ffee000005'];
const CLASSES = ['phone', 'watch', 'sensor'];
const WEEKDAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] as const;
const ENTITY = 'pres:alice@example.com';
/** Written into every trace entry of every state: it must never reach a watcher. */
const MARKER = 'OWNER-ONLY-TRACE-3f9b27';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
/** A Saturday evening, three hours before Europe/Berlin springs forward (2025-03-30 01:00 UTC). */
const BASE_NOW = Date.parse('2025-03-29T22:00:00Z');
const SPRING_FORWARD = Date.parse('2025-03-30T01:00:00Z');
const FALL_BACK = Date.parse('2025-10-26T01:00:00Z');

const SUB_ORDER: readonly SubHandling[] = ['block', 'confirm', 'polite-block', 'allow'];
const PLACE_ORDER = ['none', 'type', 'zone'] as const;
const LOCATION_ORDER = ['none', 'city', 'km', '100m', 'exact'] as const;
const USER_INPUT_ORDER = ['false', 'bare', 'thresholds', 'full'] as const;
const rank = <T>(order: readonly T[], value: T) => order.indexOf(value);

const iso = (ms: number) => new Date(ms).toISOString();
const hhmm = (minutes: number) => `${String(Math.floor(minutes / 60)).padStart(2, '0')}:${String(minutes % 60).padStart(2, '0')}`;
const ruleId = (i: number) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;

/** Absent (undefined) or a value, with weights. */
const maybe = <T>(arb: fc.Arbitrary<T>, absent = 1, present = 1): fc.Arbitrary<T | undefined> =>
  fc.oneof({ arbitrary: fc.constant(undefined), weight: absent }, { arbitrary: arb, weight: present });

const withoutUndefined = <T extends object>(o: T): T => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;

// --- rules -------------------------------------------------------------------

const identityArb: fc.Arbitrary<Identity> = fc
  .record({
    watchers: fc.subarray(WATCHERS),
    groups: fc.subarray(GROUP_IDS),
    domains: fc.subarray(DOMAINS),
    anyAuthenticated: fc.boolean(),
    except: maybe(fc.record({ watchers: fc.subarray(WATCHERS), domains: fc.subarray(DOMAINS) })),
    fallback: fc.constantFrom(...WATCHERS),
  })
  .map(({ fallback, ...identity }) => {
    const named = identity.watchers.length + identity.groups.length + identity.domains.length > 0 || identity.anyAuthenticated;
    return withoutUndefined({ ...identity, watchers: named ? identity.watchers : [fallback] }) as Identity;
  });

const validityArb = fc
  .array(fc.tuple(fc.integer({ min: -36 * 60, max: 36 * 60 }), fc.integer({ min: 1, max: 36 * 60 })), { minLength: 1, maxLength: 3 })
  .map((list) => list.map(([start, length]) => ({ from: iso(BASE_NOW + start * MINUTE), until: iso(BASE_NOW + (start + length) * MINUTE) })));

/** Any minute of the day, or (half the time) a quarter hour between 01:00 and 07:00, where the daylight-saving changes are. */
const minuteOfDayArb = fc.oneof(fc.integer({ min: 0, max: 1439 }), fc.integer({ min: 0, max: 24 }).map((i) => 60 + i * 15));
const windowArb = fc
  .record({ days: fc.subarray([...WEEKDAYS], { minLength: 1 }), from: minuteOfDayArb, to: minuteOfDayArb, timeZone: fc.constantFrom('UTC', 'Europe/Berlin') })
  .filter((w) => w.from !== w.to)
  .map((w) => ({ ...w, from: hhmm(w.from), to: hhmm(w.to) }));

const classSetArb = fc.oneof(fc.constant('all' as const), fc.array(fc.constantFrom(...CLASSES), { maxLength: 4 }));

/** Transformations as a client writes them: any subset of the fields, every value possible. */
const transformationsInputArb = fc.record(
  {
    availability: fc.boolean(),
    activities: fc.boolean(),
    place: fc.constantFrom(...PLACE_ORDER),
    sphere: fc.boolean(),
    location: fc.constantFrom(...LOCATION_ORDER),
    locationRetransmission: fc.boolean(),
    locationRetentionDays: fc.integer({ min: 0, max: 365 }),
    userInput: fc.constantFrom(...USER_INPUT_ORDER),
    devices: classSetArb,
    services: classSetArb,
    note: fc.boolean(),
    timeOffset: fc.boolean(),
  },
  { requiredKeys: [] },
);
const transformationsArb: fc.Arbitrary<Transformations> = transformationsInputArb.map((input) => transformationsSchema.parse(input));

/** Allow half the time: the other three all end in the offline view. */
const subHandlingArb: fc.Arbitrary<SubHandling> = fc.oneof({ arbitrary: fc.constant('allow' as const), weight: 3 }, { arbitrary: fc.constantFrom('block' as const, 'confirm' as const, 'polite-block' as const), weight: 3 });

interface RuleSpec {
  readonly body: RuleBodyInput;
  /** Minutes before BASE_NOW when the "until I arrive" arrival was recorded. */
  readonly arrivedMinutesAgo: number | undefined;
}

const ruleSpecArb = (subHandling: fc.Arbitrary<SubHandling> = subHandlingArb): fc.Arbitrary<RuleSpec> =>
  fc.record({
    body: fc
      .record({
        identity: identityArb,
        sphere: maybe(fc.constantFrom(...sphereSchema.options), 3),
        validity: maybe(validityArb, 3),
        recurring: maybe(fc.array(windowArb, { minLength: 1, maxLength: 2 }), 3),
        untilArrivalAt: maybe(fc.constantFrom(...ZONES), 3),
        subHandling,
        transformations: maybe(transformationsInputArb, 1, 6),
      })
      .map(({ subHandling, transformations, ...conditions }) =>
        withoutUndefined({ conditions: withoutUndefined(conditions), actions: { subHandling }, transformations }) as RuleBodyInput,
      ),
    arrivedMinutesAgo: maybe(fc.integer({ min: 0, max: 3 * 24 * 60 }), 3),
  });

/** A stored rule: the body validated by the schema, as the service keeps it. */
function toRule(spec: RuleSpec, index: number): Rule {
  const rule: Rule = { ...ruleBodySchema.parse(spec.body), id: ruleId(index) };
  if (spec.arrivedMinutesAgo !== undefined) rule.arrivedAt = iso(BASE_NOW - spec.arrivedMinutesAgo * MINUTE);
  return rule;
}
const toRules = (specs: readonly RuleSpec[]) => specs.map((spec, i) => toRule(spec, i + 1));

const groupsArb: fc.Arbitrary<Group[]> = fc
  .tuple(fc.subarray(WATCHERS), fc.subarray(WATCHERS))
  .map(([family, colleagues]) => [
    { id: GROUP_IDS[0] as string, name: 'family', members: family },
    { id: GROUP_IDS[1] as string, name: 'colleagues', members: colleagues },
  ]);

// --- presence states -----------------------------------------------------------

const latitudeArb = fc.double({ min: -90, max: 90, noNaN: true });
const longitudeArb = fc.double({ min: -180, max: 180, noNaN: true });
const accuracyArb = fc.double({ min: 0, max: 5000, noNaN: true });

const traceArb: fc.Arbitrary<Record<string, TraceEntry>> = fc
  .array(
    fc.tuple(
      fc.constantFrom('availability', 'activities', 'place', 'userInput', 'location', 'note'),
      fc.string({ maxLength: 12 }),
      fc.subarray(DEVICE_IDS.flatMap((id) => [`${id}/motion`, `${id}/call`, id])),
    ),
    { maxLength: 4 },
  )
  .map((entries) => Object.fromEntries(entries.map(([field, text, signals]) => [field, { rule: `${MARKER}: ${text}`, signals }])));

const stateArb: fc.Arbitrary<PresenceState> = fc.record({
  availability: fc.oneof(
    { arbitrary: fc.constant('offline' as const), weight: 1 },
    { arbitrary: fc.constantFrom(...(availabilitySchema.options as readonly Availability[]).filter((a) => a !== 'offline')), weight: 6 },
  ),
  activities: fc.uniqueArray(fc.constantFrom(...(activitySchema.options as readonly Activity[])), { maxLength: 4 }),
  userInput: maybe(fc.record({ state: fc.constantFrom('active' as const, 'idle' as const), lastInput: maybe(fc.integer({ min: BASE_NOW - DAY, max: BASE_NOW })) })),
  place: maybe(
    fc.record({
      zone: fc.constantFrom(...ZONES, 'Gym'),
      placeType: maybe(fc.constantFrom(...(placeTypeSchema.options as readonly PlaceType[]))),
      sphere: maybe(fc.constantFrom(...(sphereSchema.options as readonly Sphere[]))),
    }),
    1,
    3,
  ),
  location: maybe(fc.record({ latitude: latitudeArb, longitude: longitudeArb, accuracy: accuracyArb, deviceId: maybe(fc.constantFrom(...DEVICE_IDS)) }), 1, 2),
  note: maybe(fc.string({ maxLength: 24 })),
  timeOffsetMinutes: maybe(fc.integer({ min: -720, max: 840 })),
  lastSeen: maybe(fc.integer({ min: BASE_NOW - DAY, max: BASE_NOW })),
  devices: fc.uniqueArray(fc.record({ id: fc.constantFrom(...DEVICE_IDS), lastSeen: fc.integer({ min: BASE_NOW - DAY, max: BASE_NOW }), live: fc.boolean() }), {
    selector: (d) => d.id,
    maxLength: DEVICE_IDS.length,
  }),
  trace: traceArb,
});

// --- watchers, contexts, scenarios --------------------------------------------

const watcherArb: fc.Arbitrary<WatcherIdentity> = fc.record({ id: fc.constantFrom(...WATCHERS), domain: maybe(fc.constantFrom(...DOMAINS), 1, 3) });

const around = (instant: number, span: number) => fc.integer({ min: instant - span, max: instant + span });
const nowArb = fc.oneof(
  { arbitrary: around(BASE_NOW, DAY), weight: 4 },
  { arbitrary: around(SPRING_FORWARD, 2 * HOUR), weight: 1 },
  { arbitrary: around(FALL_BACK, 2 * HOUR), weight: 1 },
);

/** The owner's registration: each pool device's class (or none), and their idle threshold. */
interface Registration {
  readonly classes: readonly (string | undefined)[];
  readonly idleThresholdSeconds: number;
}
const registrationArb: fc.Arbitrary<Registration> = fc.record({
  classes: fc.tuple(...DEVICE_IDS.map(() => fc.constantFrom<string | undefined>(...CLASSES, undefined))),
  idleThresholdSeconds: fc.constantFrom(0, 300, 900),
});
const classOf = (registration: Registration, deviceId: string) => registration.classes[DEVICE_IDS.indexOf(deviceId)];
/**
 * With classes shown, so that the properties can check the selection of
 * devices and services by class; a watcher's real views show none (RFC
 * 5025 provide-class is never granted), which property 5 checks.
 */
const viewContext = (registration: Registration, showsClass = true): ViewContext => ({
  entity: ENTITY,
  deviceClass: (deviceId) => classOf(registration, deviceId),
  idleThresholdSeconds: registration.idleThresholdSeconds,
  showsClass,
  deviceRefs,
});
const deviceRefs = testDeviceRefs();

interface Scenario {
  readonly rules: Rule[];
  readonly groups: Group[];
  readonly state: PresenceState;
  readonly watcher: WatcherIdentity;
  readonly now: number;
  readonly registration: Registration;
}
const scenarioArb = (rules: fc.Arbitrary<RuleSpec[]> = fc.array(ruleSpecArb(), { maxLength: 6 }), now: fc.Arbitrary<number> = nowArb): fc.Arbitrary<Scenario> =>
  fc.record({
    rules: rules.map(toRules),
    groups: groupsArb,
    state: stateArb,
    watcher: watcherArb,
    now,
    registration: registrationArb,
  });

/** The state conditions of RFC 4745 §7.2 come from the owner's current place. */
const policyContext = (state: PresenceState, now: number): PolicyContext => ({ now, sphere: state.place?.sphere, zone: state.place?.zone });
const decide = (s: Scenario, rules: readonly Rule[] = s.rules): Decision => evaluateConsent({ rules, groups: s.groups }, s.watcher, policyContext(s.state, s.now));
const viewOf = (s: Scenario, rules: readonly Rule[] = s.rules): WatcherView => buildWatcherView(s.state, decide(s, rules), viewContext(s.registration));

// --- the expected grant, from first principles (RFC 4745 §10, RFC 5025 §3) -----

interface Grant {
  readonly availability: boolean;
  readonly activities: boolean;
  readonly place: (typeof PLACE_ORDER)[number];
  readonly sphere: boolean;
  readonly location: (typeof LOCATION_ORDER)[number];
  readonly locationRetransmission: boolean;
  readonly locationRetentionDays: number;
  readonly userInput: (typeof USER_INPUT_ORDER)[number];
  readonly devices: 'all' | ReadonlySet<string>;
  readonly services: 'all' | ReadonlySet<string>;
  readonly note: boolean;
  readonly timeOffset: boolean;
}
const NO_GRANT: Grant = { availability: false, activities: false, place: 'none', sphere: false, location: 'none', locationRetransmission: false, locationRetentionDays: 0, userInput: 'false', devices: new Set(), services: new Set(), note: false, timeOffset: false };

const maxOf = <T>(order: readonly T[], a: T, b: T): T => (rank(order, b) > rank(order, a) ? b : a);
const unionOf = (a: 'all' | ReadonlySet<string>, b: 'all' | readonly string[]): 'all' | ReadonlySet<string> => (a === 'all' || b === 'all' ? 'all' : new Set([...a, ...b]));
const asGrant = (t: Transformations): Grant => mergeGrant(NO_GRANT, t);
function mergeGrant(g: Grant, t: Transformations): Grant {
  return {
    availability: g.availability || t.availability,
    activities: g.activities || t.activities,
    place: maxOf(PLACE_ORDER, g.place, t.place),
    sphere: g.sphere || t.sphere,
    location: maxOf(LOCATION_ORDER, g.location, t.location),
    locationRetransmission: g.locationRetransmission || t.locationRetransmission,
    locationRetentionDays: Math.max(g.locationRetentionDays, t.locationRetentionDays),
    userInput: maxOf(USER_INPUT_ORDER, g.userInput, t.userInput),
    devices: unionOf(g.devices, t.devices),
    services: unionOf(g.services, t.services),
    note: g.note || t.note,
    timeOffset: g.timeOffset || t.timeOffset,
  };
}
const classSetEqual = (a: 'all' | ReadonlySet<string>, b: 'all' | ReadonlySet<string>) => (a === 'all' || b === 'all' ? a === b : a.size === b.size && [...a].every((c) => b.has(c)));
const grantsEqual = (a: Grant, b: Grant) =>
  (Object.keys(NO_GRANT) as (keyof Grant)[]).every((k) => (k === 'devices' || k === 'services' ? classSetEqual(a[k], b[k]) : a[k] === b[k]));
const classAllowed = (set: 'all' | ReadonlySet<string>, deviceClass: string | undefined) => set === 'all' || (deviceClass !== undefined && set.has(deviceClass));

interface Expected {
  readonly kind: Decision['kind'];
  readonly matching: readonly Rule[];
  /** Present for `allow` only: the union of the matching allow rules' transformations. */
  readonly grant: Grant | undefined;
}
function expectedDecision(s: Scenario, rules: readonly Rule[] = s.rules): Expected {
  const context = policyContext(s.state, s.now);
  const matching = rules.filter((rule) => ruleMatches(rule, s.watcher, s.groups, context).matches);
  if (matching.length === 0) return { kind: 'no-match', matching, grant: undefined };
  const kind = matching.map((r) => r.actions.subHandling).reduce((a, b) => maxOf(SUB_ORDER, a, b), 'block' as SubHandling);
  if (kind !== 'allow') return { kind, matching, grant: undefined };
  const grant = matching.filter((r) => r.actions.subHandling === 'allow').reduce((g, r) => mergeGrant(g, r.transformations), NO_GRANT);
  return { kind, matching, grant };
}

/** Throws (so fast-check shrinks and reports) with a readable reason. */
function ensure(condition: unknown, message: string | (() => string)): asserts condition {
  if (!condition) throw new Error(typeof message === 'string' ? message : message());
}
const show = (value: unknown) => JSON.stringify(value, (_k, v: unknown) => (v instanceof Set ? [...(v as Set<string>)] : v));
function ensureEqual(actual: unknown, expected: unknown, what: string): void {
  ensure(isDeepStrictEqual(actual, expected), () => `${what}\n  actual:   ${show(actual)}\n  expected: ${show(expected)}`);
}

const OFFLINE = offlineView(ENTITY);
const isOffline = (view: WatcherView) => isDeepStrictEqual(view, OFFLINE);

/** Counts by class (undefined counted as its own class). */
function countBy<T>(items: readonly T[], key: (item: T) => string | undefined): Map<string | undefined, number> {
  const out = new Map<string | undefined, number>();
  for (const item of items) out.set(key(item), (out.get(key(item)) ?? 0) + 1);
  return out;
}

/**
 * Property 1: every field of the view is granted by the combination of the
 * matching allow rules, at no more than the granted precision; anything
 * other than an allow decision for an online owner is the offline view.
 */
function ensureSound(s: Scenario, view: WatcherView, expected: Expected): void {
  const { state, registration } = s;
  ensure(watcherViewSchema.safeParse(view).success, () => `the view does not parse: ${show(view)}`);
  ensure(view.entity === ENTITY, 'entity');
  const grant = expected.grant;
  if (expected.kind !== 'allow' || grant === undefined || state.availability === 'offline') {
    ensureEqual(view, OFFLINE, `decision ${expected.kind} / owner ${state.availability}: the offline view`);
    return;
  }
  if (isOffline(view)) {
    ensure(!grant.availability, 'availability is granted and the owner is online, yet the view is the offline view');
    return;
  }
  ensure(view.basic === 'open', 'a view showing anything shows the owner open');
  const shown = Object.keys(view).filter((k) => k !== 'entity' && k !== 'basic');
  ensure(shown.length > 0, () => `an open view with nothing in it: ${show(view)}`);
  if (grant.availability) ensure(view.availability === state.availability, () => `availability granted: ${show(view.availability)} for ${state.availability}`);
  else ensure(view.availability === undefined, 'availability shown without the grant');

  if (view.activities !== undefined) {
    ensure(grant.activities, 'activities shown without the grant');
    ensure(view.activities.length > 0, 'an empty activities list');
    for (const activity of view.activities) {
      ensure(state.activities.includes(activity), `activity ${activity} is not the owner's`);
      if (activity === 'travel' || activity === 'meal') ensure(rank(PLACE_ORDER, grant.place) >= rank(PLACE_ORDER, 'type'), `${activity} shown without place type`);
      if (activity === 'working') ensure(grant.sphere, 'working shown without sphere');
    }
  }
  if (view.placeType !== undefined) {
    ensure(rank(PLACE_ORDER, grant.place) >= rank(PLACE_ORDER, 'type'), `place type shown with place ${grant.place}`);
    ensure(view.placeType === state.place?.placeType, 'a place type not the owner’s');
  }
  if (view.zone !== undefined) {
    ensure(grant.place === 'zone', `zone shown with place ${grant.place}`);
    ensure(view.zone === state.place?.zone, 'a zone not the owner’s');
  }
  if (view.sphere !== undefined) {
    ensure(grant.sphere, 'sphere shown without the grant');
    ensure(view.sphere === state.place?.sphere, 'a sphere not the owner’s');
  }
  if (view.location !== undefined) {
    ensure(grant.location !== 'none', 'location shown without the grant');
    ensure(view.location.precision === grant.location, `location at ${view.location.precision}, granted ${grant.location}`);
    ensure(state.location !== undefined, 'a location the owner does not have');
    const { latitude, longitude, accuracy } = state.location;
    ensureEqual(
      view.location,
      {
        ...snapLocation(latitude, longitude, accuracy, grant.location),
        precision: grant.location,
        retransmissionAllowed: grant.locationRetransmission,
        retentionDays: grant.locationRetentionDays,
        ...(view.location.device ? { device: view.location.device } : {}),
      },
      'the location snapped to the granted grid, with the granted usage rules',
    );
    // RFC 5491 §3.4 names the measuring device only when the devices grant covers it (invariant 2).
    const measuredBy = state.location.deviceId;
    ensure(
      (view.location.device !== undefined) === (measuredBy !== undefined && classAllowed(grant.devices, classOf(registration, measuredBy))),
      'the location names its device exactly when that device is granted',
    );
  }
  if (view.userInput !== undefined) {
    ensure(grant.userInput !== 'false', 'user input shown without the grant');
    ensure(view.userInput.state === state.userInput?.state, 'user input state not the owner’s');
    if (view.userInput.idleThresholdSeconds !== undefined) ensure(grant.userInput === 'thresholds' || grant.userInput === 'full', `idle threshold shown with user input ${grant.userInput}`);
    if (view.userInput.lastInput !== undefined) ensure(grant.userInput === 'full', `last input shown with user input ${grant.userInput}`);
  }
  if (view.timeOffsetMinutes !== undefined) {
    ensure(grant.timeOffset, 'time offset shown without the grant');
    ensure(view.timeOffsetMinutes === state.timeOffsetMinutes, 'a time offset not the owner’s');
  }
  if (view.note !== undefined) {
    ensure(grant.note, 'note shown without the grant');
    ensure(view.note === state.note, 'a note not the owner’s');
  }
  const owned = countBy(state.devices, (d) => classOf(registration, d.id));
  const ownedLive = countBy(
    state.devices.filter((d) => d.live),
    (d) => classOf(registration, d.id),
  );
  if (view.devices !== undefined) {
    ensure(view.devices.length > 0, 'an empty device list');
    ensure(new Set(view.devices.map((d) => d.id)).size === view.devices.length, 'device ids repeat');
    for (const device of view.devices) ensure(classAllowed(grant.devices, device.class), () => `a ${device.class ?? 'class-less'} device shown with devices ${show(grant.devices)}`);
    for (const [c, n] of countBy(view.devices, (d) => d.class)) ensure(n <= (owned.get(c) ?? 0), `more ${c} devices than the owner has`);
  }
  if (view.services !== undefined) {
    ensure(view.services.length > 0, 'an empty service list');
    ensure(new Set(view.services.map((d) => d.id)).size === view.services.length, 'service ids repeat');
    for (const service of view.services) ensure(classAllowed(grant.services, service.class), () => `a ${service.class ?? 'class-less'} service shown with services ${show(grant.services)}`);
    for (const [c, n] of countBy(view.services, (d) => d.class)) ensure(n <= (owned.get(c) ?? 0), `more ${c} services than the owner has devices`);
    for (const [c, n] of countBy(
      view.services.filter((d) => d.basic === 'open'),
      (d) => d.class,
    )) {
      ensure(n <= (ownedLive.get(c) ?? 0), `more open ${c} services than live devices`);
    }
  }
}

/**
 * Property 2's order on views: `a` shows at most what `b` shows. The offline
 * view is below everything; otherwise field-wise: absent below present,
 * location by precision, user input by detail, devices and services by
 * subset. Returns why not, or undefined.
 */
function whyShowsMore(a: WatcherView, b: WatcherView): string | undefined {
  if (isOffline(a)) return undefined;
  if (isOffline(b)) return 'the first view shows something, the second is the offline view';
  if (a.basic === 'open' && b.basic !== 'open') return 'basic';
  for (const key of Object.keys(a) as (keyof WatcherView)[]) if (key !== 'entity' && key !== 'basic' && b[key] === undefined) return `${key} only in the first view`;
  if (a.availability !== undefined && a.availability !== b.availability) return 'availability differs';
  if (a.activities && !a.activities.every((x) => b.activities?.includes(x))) return 'an activity only in the first view';
  for (const key of ['placeType', 'zone', 'sphere', 'timeOffsetMinutes', 'note'] as const) if (a[key] !== undefined && a[key] !== b[key]) return `${key} differs`;
  if (a.location && b.location && rank(LOCATION_ORDER, a.location.precision) > rank(LOCATION_ORDER, b.location.precision)) return `location ${a.location.precision} > ${b.location.precision}`;
  if (a.location && b.location && a.location.retransmissionAllowed && !b.location.retransmissionAllowed) return 'retransmission only in the first view';
  if (a.location && b.location && a.location.retentionDays > b.location.retentionDays) return 'longer retention in the first view';
  if (a.userInput && b.userInput) {
    if (a.userInput.state !== b.userInput.state) return 'user input state differs';
    if (a.userInput.idleThresholdSeconds !== undefined && b.userInput.idleThresholdSeconds === undefined) return 'idle threshold only in the first view';
    if (a.userInput.lastInput !== undefined && b.userInput.lastInput === undefined) return 'last input only in the first view';
  }
  // Devices by how many of each class (and services of each class and
  // status): their ids are keyed by the device grant (policy/device-refs.ts),
  // so views under different grants name the same device differently.
  if (a.devices && !countsAtMost(a.devices, b.devices, (d) => d.class)) return 'more devices of a class in the first view';
  if (a.services && !countsAtMost(a.services, b.services, (d) => `${d.class ?? ''} ${d.basic}`)) return 'more services of a class in the first view';
  return undefined;
}
function countsAtMost<T>(a: readonly T[], b: readonly T[] | undefined, key: (item: T) => string | undefined): boolean {
  const inB = countBy(b ?? [], key);
  return [...countBy(a, key)].every(([k, n]) => n <= (inB.get(k) ?? 0));
}
function ensureShowsAtMost(a: WatcherView, b: WatcherView, what: string): void {
  const why = whyShowsMore(a, b);
  ensure(why === undefined, () => `${what}: ${why}\n  fewer rules: ${show(a)}\n  more rules:  ${show(b)}`);
}
/** The grant order: booleans false < true, ordered values by rank, class sets by subset. */
function grantAtMost(a: Grant, b: Grant): boolean {
  const sub = (x: 'all' | ReadonlySet<string>, y: 'all' | ReadonlySet<string>) => y === 'all' || (x !== 'all' && [...x].every((c) => y.has(c)));
  return (
    (!a.availability || b.availability) &&
    (!a.activities || b.activities) &&
    rank(PLACE_ORDER, a.place) <= rank(PLACE_ORDER, b.place) &&
    (!a.sphere || b.sphere) &&
    rank(LOCATION_ORDER, a.location) <= rank(LOCATION_ORDER, b.location) &&
    (!a.locationRetransmission || b.locationRetransmission) &&
    a.locationRetentionDays <= b.locationRetentionDays &&
    rank(USER_INPUT_ORDER, a.userInput) <= rank(USER_INPUT_ORDER, b.userInput) &&
    sub(a.devices, b.devices) &&
    sub(a.services, b.services) &&
    (!a.note || b.note) &&
    (!a.timeOffset || b.timeOffset)
  );
}

/** Runs a property, reporting fast-check's counterexample (with its seed) as the failure message. */
function holds(test: { pass(message: string): unknown; fail(message: string): unknown }, name: string, run: () => void): void {
  try {
    run();
    test.pass(name);
  } catch (error) {
    test.fail(`${name}\n${error instanceof Error ? error.message : String(error)}`);
  }
}

// --- the properties ------------------------------------------------------------

t.test('1. soundness: a view never holds a field or precision the merged rules do not grant', async (t) => {
  holds(t, 'evaluateConsent combines as RFC 4745 §10 says, and the view stays within the grant', () =>
    fc.assert(
      fc.property(scenarioArb(), (s) => {
        const decision = decide(s);
        const expected = expectedDecision(s);
        ensure(decision.kind === expected.kind, `decision ${decision.kind}, expected ${expected.kind}`);
        ensureEqual(decision.ruleIds, expected.matching.map((r) => r.id), 'matching rules, in rule order');
        if (decision.kind === 'allow' && expected.grant) ensure(grantsEqual(asGrant(decision.grant), expected.grant), () => `grant ${show(decision.grant)}, expected ${show(expected.grant)}`);
        ensureSound(s, buildWatcherView(s.state, decision, viewContext(s.registration)), expected);
      }),
      { numRuns: 2000 },
    ),
  );

  holds(t, 'a single allow rule granting everything for the watcher: the view is still within that grant', () =>
    fc.assert(
      fc.property(scenarioArb(), transformationsInputArb, (s, transformations) => {
        const rules = [...s.rules, toRule({ body: { conditions: { identity: { watchers: [s.watcher.id] } }, actions: { subHandling: 'allow' }, transformations }, arrivedMinutesAgo: undefined }, 99)];
        const expected = expectedDecision(s, rules);
        ensure(expected.kind === 'allow', 'the added rule matches and allows');
        ensureSound(s, viewOf(s, rules), expected);
      }),
      { numRuns: 1000 },
    ),
  );

  holds(t, 'identity matching follows RFC 4745 §5.1 (<one> outright, <many>/<many domain> minus <except>)', () =>
    fc.assert(
      fc.property(identityArb, watcherArb, groupsArb, (raw, watcher, groups) => {
        const identity = ruleBodySchema.parse({ conditions: { identity: raw }, actions: { subHandling: 'allow' } }).conditions.identity;
        const one = identity.watchers.includes(watcher.id) || identity.groups.some((g) => groups.find((x) => x.id === g)?.members.includes(watcher.id));
        const excepted = identity.except.watchers.includes(watcher.id) || (watcher.domain !== undefined && identity.except.domains.includes(watcher.domain));
        const many = identity.anyAuthenticated || (watcher.domain !== undefined && identity.domains.includes(watcher.domain));
        ensure(identityMatches(identity, watcher, groups) === (one || (many && !excepted)), 'identity match');
      }),
      { numRuns: 1000 },
    ),
  );
});

t.test('2. monotonicity: adding a rule never shows less, removing one never shows more', async (t) => {
  holds(t, 'adding any rule (at any position) never shows less', () =>
    fc.assert(
      fc.property(scenarioArb(), ruleSpecArb(), fc.nat(), (s, spec, at) => {
        const added = toRule(spec, 99);
        const more = [...s.rules];
        more.splice(at % (s.rules.length + 1), 0, added);
        const before = viewOf(s);
        const after = viewOf(s, more);
        ensureShowsAtMost(before, after, 'adding a rule');
        const d0 = decide(s);
        const d1 = decide(s, more);
        if (d0.kind === 'allow') {
          ensure(d1.kind === 'allow', 'adding a rule to an allow decision made it no longer allow');
          ensure(grantAtMost(asGrant(d0.grant), asGrant(d1.grant)), 'adding a rule narrowed the grant');
          // RFC 5025 §3.1: allow is the highest sub-handling, so a non-allow rule changes nothing.
          if (added.actions.subHandling !== 'allow') {
            ensureEqual(d1.grant, d0.grant, 'a non-allow rule added to an allow decision');
            ensureEqual(after, before, 'a non-allow rule added to an allow decision');
          }
        }
      }),
      { numRuns: 1500 },
    ),
  );

  holds(t, 'removing any rule never shows more', () =>
    fc.assert(
      fc.property(scenarioArb(fc.array(ruleSpecArb(), { minLength: 1, maxLength: 6 })), fc.nat(), (s, at) => {
        const fewer = s.rules.filter((_, i) => i !== at % s.rules.length);
        ensureShowsAtMost(viewOf(s, fewer), viewOf(s), 'removing a rule');
      }),
      { numRuns: 1500 },
    ),
  );

  holds(t, 'adding an allow rule for this watcher never shows less', () =>
    fc.assert(
      fc.property(scenarioArb(), ruleSpecArb(fc.constant('allow')), (s, spec) => {
        const rule = toRule(spec, 99);
        const forWatcher: Rule = { ...rule, conditions: { ...rule.conditions, identity: { ...rule.conditions.identity, watchers: [s.watcher.id] } } };
        ensureShowsAtMost(viewOf(s), viewOf(s, [...s.rules, forWatcher]), 'adding an allow rule');
      }),
      { numRuns: 800 },
    ),
  );

  holds(t, 'combineTransformations: commutative, associative, idempotent, NOTHING the identity', () =>
    fc.assert(
      fc.property(transformationsArb, transformationsArb, transformationsArb, (a, b, c) => {
        const ab = combineTransformations([a, b]);
        ensureEqual(ab, combineTransformations([b, a]), 'commutative');
        ensureEqual(combineTransformations([ab, c]), combineTransformations([a, combineTransformations([b, c])]), 'associative');
        ensureEqual(combineTransformations([ab, c]), combineTransformations([a, b, c]), 'a fold');
        ensureEqual(combineTransformations([a, a]), combineTransformations([a]), 'idempotent');
        ensureEqual(combineTransformations([a, NOTHING]), combineTransformations([a]), 'NOTHING on the right');
        ensureEqual(combineTransformations([NOTHING, a]), combineTransformations([a]), 'NOTHING on the left');
        ensure(grantsEqual(asGrant(combineTransformations([a])), asGrant(a)), 'combining one grant keeps its meaning');
        ensure(grantsEqual(asGrant(ab), mergeGrant(asGrant(a), b)), () => `the RFC 4745 §10.2 union: ${show(ab)}`);
        ensure(grantAtMost(asGrant(a), asGrant(ab)) && grantAtMost(asGrant(b), asGrant(ab)), 'an upper bound');
      }),
      { numRuns: 1000 },
    ),
  );
  t.same(combineTransformations([]), NOTHING, 'no grant is NOTHING');
});

t.test('3. snapping is deterministic', async (t) => {
  holds(t, 'the same state and decision give deep-equal views and identical PIDF bytes', () =>
    fc.assert(
      fc.property(scenarioArb(), (s) => {
        const decision = decide(s);
        ensureEqual(decide(s), decision, 'the same decision twice');
        const view = buildWatcherView(s.state, decision, viewContext(s.registration));
        const again = buildWatcherView(structuredClone(s.state), structuredClone(decision), viewContext(structuredClone(s.registration)));
        ensureEqual(again, view, 'the same view twice');
        ensure(renderPidf(again) === renderPidf(view), 'the same PIDF bytes twice');
      }),
      { numRuns: 1000 },
    ),
  );

  const inside = fc.double({ min: 0.001, max: 0.999, noNaN: true });
  let skipped = 0;
  holds(t, 'two fixes in one grid cell, with different accuracies, give the same view and PIDF bytes', () =>
    fc.assert(
      fc.property(
        scenarioArb(),
        transformationsInputArb,
        fc.constantFrom('city' as const, 'km' as const, '100m' as const),
        latitudeArb,
        longitudeArb,
        inside,
        inside,
        accuracyArb,
        accuracyArb,
        (s, transformations, precision, latitude, longitude, fy, fx, accuracy1, accuracy2) => {
          const cell = gridCell(latitude, longitude, precision);
          const otherLatitude = cell.south + fy * (cell.north - cell.south);
          const east = cell.west + fx * (cell.east - cell.west);
          const otherLongitude = east > 180 ? east - 360 : east;
          const other = gridCell(otherLatitude, otherLongitude, precision);
          if (other.band !== cell.band || other.column !== cell.column) {
            skipped++; // floating point put the second point on the far side of an edge: not the same cell
            return;
          }
          const rule = toRule(
            { body: { conditions: { identity: { anyAuthenticated: true } }, actions: { subHandling: 'allow' }, transformations: { ...transformations, location: precision } }, arrivedMinutesAgo: undefined },
            99,
          );
          const state1: PresenceState = { ...s.state, availability: 'available', location: { latitude, longitude, accuracy: accuracy1 } };
          const state2: PresenceState = { ...s.state, availability: 'available', location: { latitude: otherLatitude, longitude: otherLongitude, accuracy: accuracy2 } };
          const decision = evaluateConsent({ rules: [rule], groups: s.groups }, s.watcher, policyContext(s.state, s.now));
          ensure(decision.kind === 'allow' && decision.grant.location === precision, 'the rule grants the precision');
          const view1 = buildWatcherView(state1, decision, viewContext(s.registration));
          const view2 = buildWatcherView(state2, decision, viewContext(s.registration));
          ensure(view1.location?.precision === precision, 'the location is shown at the granted precision');
          ensureEqual(view2, view1, `two fixes in one ${precision} cell`);
          ensure(renderPidf(view2) === renderPidf(view1), 'the same PIDF bytes');
        },
      ),
      { numRuns: 1500 },
    ),
  );
  t.ok(skipped < 10, `few pairs fell off the cell (${skipped})`);
});

t.test('4. the polite-block (block, confirm, no-match) view equals the offline view', async (t) => {
  holds(t, 'a watcher with no matching allow rule sees, byte for byte, what an allowed watcher of an offline owner sees', () =>
    fc.assert(
      fc.property(
        scenarioArb(fc.array(ruleSpecArb(fc.constantFrom('block', 'confirm', 'polite-block')), { maxLength: 6 })),
        transformationsInputArb,
        (s, transformations) => {
          const decision = decide(s);
          ensure(decision.kind !== 'allow', 'no allow rule, no allow');
          const view = buildWatcherView(s.state, decision, viewContext(s.registration));
          ensureEqual(view, offlineView(ENTITY), `a ${decision.kind} watcher`);
          const allowAll = toRule({ body: { conditions: { identity: { anyAuthenticated: true } }, actions: { subHandling: 'allow' }, transformations }, arrivedMinutesAgo: undefined }, 99);
          const allowed = evaluateConsent({ rules: [allowAll], groups: s.groups }, s.watcher, policyContext(OFFLINE_STATE, s.now));
          ensure(allowed.kind === 'allow', 'the allowed watcher is allowed');
          const ofOffline = buildWatcherView(OFFLINE_STATE, allowed, viewContext(s.registration));
          ensureEqual(view, ofOffline, 'the offline owner’s view');
          ensure(renderPidf(view) === renderPidf(ofOffline), 'identical PIDF bytes');
        },
      ),
      { numRuns: 1000 },
    ),
  );

  holds(t, 'any rules: a matching polite-block, block or confirm without a matching allow gives the offline view', () =>
    fc.assert(
      fc.property(scenarioArb(), (s) => {
        const expected = expectedDecision(s);
        if (expected.kind === 'allow') return;
        const view = viewOf(s);
        ensureEqual(view, OFFLINE, `a ${expected.kind} watcher`);
        ensure(renderPidf(view) === renderPidf(offlineView(ENTITY)), 'identical PIDF bytes');
      }),
      { numRuns: 1000 },
    ),
  );

  holds(t, 'an allowed watcher of an owner whose availability is offline sees the offline view, whatever else the state holds', () =>
    fc.assert(
      fc.property(scenarioArb(), transformationsInputArb, (s, transformations) => {
        const allowAll = toRule({ body: { conditions: { identity: { anyAuthenticated: true } }, actions: { subHandling: 'allow' }, transformations }, arrivedMinutesAgo: undefined }, 99);
        const state: PresenceState = { ...s.state, availability: 'offline' };
        const decision = evaluateConsent({ rules: [allowAll], groups: s.groups }, s.watcher, policyContext(state, s.now));
        ensureEqual(buildWatcherView(state, decision, viewContext(s.registration)), OFFLINE, 'an offline owner');
      }),
      { numRuns: 600 },
    ),
  );
});

/** A rule for any authenticated watcher granting these transformations and every device and service. */
const showingDevices = (transformations: RuleBodyInput['transformations']) =>
  toRule({ body: { conditions: { identity: { anyAuthenticated: true } }, actions: { subHandling: 'allow' }, transformations: { ...transformations, devices: 'all', services: 'all' } }, arrivedMinutesAgo: undefined }, 99);

t.test('5. the owner-only trace, raw device ids and device classes never reach a watcher', async (t) => {
  holds(t, 'neither the view nor its PIDF holds trace text or a device id', () =>
    fc.assert(
      fc.property(scenarioArb(), transformationsInputArb, (s, transformations) => {
        // Half the time with a rule showing everything, so devices and services are shown.
        const everything = showingDevices(transformations);
        for (const rules of [s.rules, [...s.rules, everything]]) {
          const view = viewOf(s, rules);
          for (const text of [JSON.stringify(view), renderPidf(view)]) {
            ensure(!text.includes(MARKER), () => `trace text in ${text}`);
            for (const id of DEVICE_IDS) ensure(!text.toLowerCase().includes(id), () => `device id ${id} in ${text}`);
            for (const entry of Object.values(s.state.trace)) for (const signal of entry.signals) ensure(!text.includes(signal), () => `trace signal ${signal} in ${text}`);
          }
        }
      }),
      { numRuns: 1000 },
    ),
  );
  holds(t, "a watcher's view is the same view without device and service classes (RFC 5025 provide-class is never granted)", () =>
    fc.assert(
      fc.property(scenarioArb(), transformationsInputArb, (s, transformations) => {
        const everything = showingDevices(transformations);
        for (const rules of [s.rules, [...s.rules, everything]]) {
          const decision = decide(s, rules);
          const withClasses = buildWatcherView(s.state, decision, viewContext(s.registration, true));
          const watchers = buildWatcherView(s.state, decision, viewContext(s.registration, false));
          const stripped = {
            ...withClasses,
            ...(withClasses.devices ? { devices: withClasses.devices.map((d) => ({ id: d.id, deviceId: d.deviceId })) } : {}),
            ...(withClasses.services ? { services: withClasses.services.map((d) => ({ id: d.id, basic: d.basic })) } : {}),
          };
          ensureEqual(watchers, stripped, 'the view without classes');
          ensure(!renderPidf(watchers).includes('rpid:class'), () => `a class in ${renderPidf(watchers)}`);
        }
      }),
      { numRuns: 1000 },
    ),
  );
});

t.test('6. order independence: permuting the rules changes nothing a watcher sees', async (t) => {
  holds(t, 'same decision kind, grant, view and PIDF under any permutation', () =>
    fc.assert(
      fc.property(scenarioArb(), fc.array(fc.integer(), { minLength: 6, maxLength: 6 }), (s, keys) => {
        const order = s.rules.map((_, i) => i).sort((a, b) => (keys[a] ?? 0) - (keys[b] ?? 0) || a - b);
        const permuted = order.map((i) => s.rules[i] as Rule);
        const d0 = decide(s);
        const d1 = decide(s, permuted);
        ensure(d0.kind === d1.kind, `kind ${d0.kind} vs ${d1.kind}`);
        ensure(d0.validUntil === d1.validUntil, 'validUntil');
        ensureEqual([...d1.ruleIds].sort(), [...d0.ruleIds].sort(), 'the same matching rules');
        if (d0.kind === 'allow' && d1.kind === 'allow') {
          ensureEqual(d1.grant, d0.grant, 'the same grant');
          const provenance = (d: typeof d0) => Object.fromEntries(Object.entries(d.provenance).map(([field, ids]) => [field, [...(ids ?? [])].sort()]));
          ensureEqual(provenance(d1), provenance(d0), 'the same provenance');
        }
        const v0 = buildWatcherView(s.state, d0, viewContext(s.registration));
        const v1 = buildWatcherView(s.state, d1, viewContext(s.registration));
        ensureEqual(v1, v0, 'the same view');
        ensure(renderPidf(v1) === renderPidf(v0), 'the same PIDF bytes');
      }),
      { numRuns: 1000 },
    ),
  );
});

t.test('7. validUntil: no rule starts or stops matching before the decision says it may', async (t) => {
  // Mostly the two hours around Europe/Berlin's daylight-saving changes, where wall-clock edges move.
  const nearDst = fc.oneof(
    { arbitrary: around(BASE_NOW, 3 * DAY), weight: 1 },
    { arbitrary: around(SPRING_FORWARD, 2 * HOUR), weight: 3 },
    { arbitrary: around(FALL_BACK, 2 * HOUR), weight: 3 },
  );
  holds(t, 'the matching rules are the same at every instant in [now, validUntil)', () =>
    fc.assert(
      fc.property(scenarioArb(fc.array(ruleSpecArb(), { maxLength: 6 }), nearDst), (s) => {
        const policy: OwnerPolicy = { rules: s.rules, groups: s.groups };
        const at = (now: number) => evaluateConsent(policy, s.watcher, policyContext(s.state, now));
        const d0 = at(s.now);
        ensure(d0.validUntil > s.now, 'validUntil is in the future');
        // Conditions flip only on minute boundaries (windows are HH:MM, intervals here are whole minutes).
        const horizon = Math.min(d0.validUntil, s.now + 2 * HOUR);
        const samples = [s.now + 1];
        for (let m = s.now - (s.now % MINUTE) + MINUTE; m < horizon; m += MINUTE) samples.push(m);
        if (Number.isFinite(d0.validUntil)) samples.push(d0.validUntil - 1);
        for (const instant of samples) {
          if (instant >= d0.validUntil) continue;
          const d = at(instant);
          ensure(isDeepStrictEqual(d.ruleIds, d0.ruleIds), () => `at ${iso(s.now)} validUntil is ${iso(d0.validUntil)}, but at ${iso(instant)} the matching rules are ${show(d.ruleIds)}, not ${show(d0.ruleIds)}`);
        }
      }),
      { numRuns: 3000 },
    ),
  );
});

t.test('7b. validUntil example: a window that closes in the hour Europe/Berlin skips (2025-03-30)', async (t) => {
  // Shared on Sundays 00:00-02:30 Berlin time. At 01:50 CET the window is open; the wall clock jumps
  // from 02:00 CET to 03:00 CEST at 01:00 UTC, so the window closes then, not 40 wall-clock minutes later.
  const rule = toRule(
    {
      body: {
        conditions: { identity: { anyAuthenticated: true }, recurring: [{ days: ['sun'], from: '00:00', to: '02:30', timeZone: 'Europe/Berlin' }] },
        actions: { subHandling: 'allow' },
        transformations: { availability: true },
      },
      arrivedMinutesAgo: undefined,
    },
    1,
  );
  const watcher: WatcherIdentity = { id: WATCHERS[0] as string, domain: undefined };
  const at = (instant: string) => evaluateConsent({ rules: [rule], groups: [] }, watcher, { now: Date.parse(instant), sphere: undefined, zone: undefined });
  const before = at('2025-03-30T00:50:00Z');
  t.equal(before.kind, 'allow', 'open at 01:50 CET');
  t.equal(at('2025-03-30T01:00:00Z').kind, 'no-match', 'closed at 03:00 CEST (01:00 UTC)');
  t.ok(before.validUntil <= SPRING_FORWARD, `the decision at 01:50 CET must not outlive the window: validUntil ${iso(before.validUntil)}, the window closed at ${iso(SPRING_FORWARD)}`);
});

t.test('8. a policy held by the rule book (frozen, indexed, grants reused) decides exactly as the same policy passed bare', async (t) => {
  holds(t, 'identity matching through the Set index equals the linear scan', () =>
    fc.assert(
      fc.property(identityArb, watcherArb, groupsArb, (raw, watcher, groups) => {
        const identity = ruleBodySchema.parse({ conditions: { identity: raw }, actions: { subHandling: 'allow' } }).conditions.identity;
        const bare = identityMatches(structuredClone(identity), watcher, structuredClone(groups));
        const book = new RuleBook();
        book.replaceGroups('o', structuredClone(groups));
        book.replace('o', [{ ...ruleBodySchema.parse({ conditions: { identity: structuredClone(identity) }, actions: { subHandling: 'allow' } }), id: 'r' }]);
        const held = book.policy('o');
        const heldIdentity = (held.rules[0] as Rule).conditions.identity;
        ensure(Object.isFrozen(heldIdentity) && Object.isFrozen(heldIdentity.except.watchers) && Object.isFrozen(held.groups[0]?.members ?? []), 'the rule book freezes what it holds');
        // Twice: the first call builds the index, the second uses it.
        ensure(identityMatches(heldIdentity, watcher, held.groups) === bare, 'indexed match (first call)');
        ensure(identityMatches(heldIdentity, watcher, held.groups) === bare, 'indexed match (cached)');
      }),
      { numRuns: 1000 },
    ),
  );

  holds(t, 'evaluateConsent on the rule book policy: same kind, rules, validUntil and grant; a repeated evaluation gives the very same grant object', () =>
    fc.assert(
      fc.property(scenarioArb(), (s) => {
        const bare = evaluateConsent({ rules: structuredClone(s.rules), groups: structuredClone(s.groups) }, s.watcher, policyContext(s.state, s.now));
        const book = new RuleBook();
        book.replaceGroups('o', structuredClone(s.groups));
        book.replace('o', structuredClone(s.rules));
        const first = evaluateConsent(book.policy('o'), s.watcher, policyContext(s.state, s.now));
        const again = evaluateConsent(book.policy('o'), s.watcher, policyContext(s.state, s.now));
        for (const held of [first, again]) {
          ensure(held.kind === bare.kind, `decision ${held.kind}, bare ${bare.kind}`);
          ensureEqual(held.ruleIds, bare.ruleIds, 'matching rules');
          ensureEqual(held.validUntil, bare.validUntil, 'validUntil');
          if (held.kind === 'allow' && bare.kind === 'allow') {
            ensureEqual({ ...held.grant }, { ...bare.grant }, 'grant');
            ensureEqual(held.provenance, bare.provenance, 'provenance');
          }
        }
        if (first.kind === 'allow' && again.kind === 'allow') ensure(first.grant === again.grant, 'the same grant object for the same matching rules');
      }),
      { numRuns: 2000 },
    ),
  );
});

t.test('8b. groups sharing an id: the first one counts, indexed or not', async (t) => {
  const [a, b] = WATCHERS as [string, string];
  const groups: Group[] = [
    { id: GROUP_IDS[0] as string, name: 'first', members: [a] },
    { id: GROUP_IDS[0] as string, name: 'second', members: [b] },
  ];
  const identity = ruleBodySchema.parse({ conditions: { identity: { groups: [GROUP_IDS[0]] } }, actions: { subHandling: 'allow' } }).conditions.identity;
  const book = new RuleBook();
  book.replaceGroups('o', groups);
  book.replace('o', [{ ...ruleBodySchema.parse({ conditions: { identity }, actions: { subHandling: 'allow' } }), id: 'r' }]);
  const held = book.policy('o');
  const heldIdentity = (held.rules[0] as Rule).conditions.identity;
  for (const [watcher, expected] of [
    [a, true],
    [b, false],
  ] as const) {
    t.equal(identityMatches(heldIdentity, { id: watcher, domain: undefined }, held.groups), expected, `${watcher} (indexed)`);
    t.equal(identityMatches(structuredClone(heldIdentity), { id: watcher, domain: undefined }, structuredClone(groups)), expected, `${watcher} (bare)`);
  }
});
