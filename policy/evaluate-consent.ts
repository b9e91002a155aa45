import { localTime, minutesOf } from '../core/derive-presence.js';
import type { Sphere } from '../core/owner-settings.js';
import {
  locationPrecisionSchema,
  NOTHING,
  placePermissionSchema,
  userInputPermissionSchema,
  type ClassSet,
  type Group,
  type Identity,
  type RecurringWindow,
  type Rule,
  type SubHandling,
  type Transformations,
  type Weekday,
} from './rule.js';

/**
 * What one watcher may see of one owner, per RFC 4745 §10: collect the rules
 * whose conditions all match (§7), then combine them. Sub-handling takes the
 * highest value (RFC 5025 §3.2.1: block < confirm < polite-block < allow). Each
 * transformation takes the most permissive value among the matching allow
 * rules (RFC 4745 §10.2: booleans OR, ordered values max, sets union): a
 * rule that does not allow shows nothing, so it must never widen what an
 * allow rule shows. No matching rule means nothing is shown (RFC 4745 §10:
 * "the empty set"). A denial is a result, not an exception.
 *
 * Pure: the caller passes the time and the owner's current sphere and zone
 * (the state conditions of RFC 4745 §7.2 and the "until I arrive" extension).
 */
export interface WatcherIdentity {
  readonly id: string;
  /** The watcher's domain, for `<many domain>` (RFC 4745 §7.1.3); none matches no domain. */
  readonly domain: string | undefined;
}

export interface OwnerPolicy {
  readonly rules: readonly Rule[];
  readonly groups: readonly Group[];
}

export interface PolicyContext {
  readonly now: number;
  readonly sphere: Sphere | undefined;
  readonly zone: string | undefined;
}

export type Field = keyof Transformations;
/** For each field shown, the rules that granted the value shown (owner's eyes only: preview). */
export type Provenance = Partial<Record<Field, readonly string[]>>;

interface DecisionBase {
  /** The matching rules, in rule order. */
  readonly ruleIds: readonly string[];
  /** When a time condition (validity, recurring window) next flips for this watcher; Infinity if never. */
  readonly validUntil: number;
}
export type Decision =
  | (DecisionBase & { readonly kind: 'allow'; readonly grant: Transformations; readonly provenance: Provenance })
  | (DecisionBase & { readonly kind: 'confirm' | 'polite-block' | 'block' | 'no-match' });

const subHandlingRank: Record<SubHandling, number> = { block: 0, confirm: 1, 'polite-block': 2, allow: 3 };

/** The higher of two sub-handlings (RFC 5025 §3.2.1 order); `none` is below every value. */
export function strongerSubHandling(a: SubHandling | 'none', b: SubHandling): SubHandling {
  return a === 'none' || subHandlingRank[b] > subHandlingRank[a] ? b : a;
}

export function identityMatches(identity: Identity, watcher: WatcherIdentity, groups: readonly Group[]): boolean {
  // RFC 4745 §7.1.2 <one>: named watchers (and members of named groups) match outright.
  if (identity.watchers.includes(watcher.id)) return true;
  for (const groupId of identity.groups) {
    if (groups.find((g) => g.id === groupId)?.members.includes(watcher.id)) return true;
  }
  // RFC 4745 §7.1.3 <many> with <except>.
  if (identity.except.watchers.includes(watcher.id)) return false;
  if (watcher.domain !== undefined && identity.except.domains.includes(watcher.domain)) return false;
  if (identity.anyAuthenticated) return true;
  return watcher.domain !== undefined && identity.domains.includes(watcher.domain);
}

const WEEKDAYS: readonly Weekday[] = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
const DAY_MINUTES = 1440;


/** Whether a recurring window holds at `now`, and when it may next flip. */
export function recurringWindowState(window: RecurringWindow, now: number): { open: boolean; nextEdge: number } {
  const local = localTime(window.timeZone, now);
  const weekday = new Date(now + local.offsetMinutes * 60_000).getUTCDay();
  const today = WEEKDAYS[weekday] as Weekday;
  const yesterday = WEEKDAYS[(weekday + 6) % 7] as Weekday;
  const from = minutesOf(window.from);
  const to = minutesOf(window.to);
  const m = local.minutes;
  const open = from < to ? window.days.includes(today) && m >= from && m < to : (window.days.includes(today) && m >= from) || (window.days.includes(yesterday) && m < to);
  const untilEdge = (edge: number) => (edge - m + DAY_MINUTES) % DAY_MINUTES || DAY_MINUTES;
  const minuteStart = now - (now % 60_000);
  const wallClockEdge = minuteStart + Math.min(untilEdge(from), untilEdge(to)) * 60_000;
  return { open, nextEdge: Math.min(wallClockEdge, offsetChange(window.timeZone, now, local.offsetMinutes, wallClockEdge)) };
}

/**
 * The wall-clock arithmetic above holds only while the zone's offset stays
 * the same: a daylight-saving change skips or repeats local times (a window
 * opening at 02:15 on the night the clock jumps from 02:00 to 03:00 opens
 * at 03:00). So the first instant in (now, until] with another offset, to
 * the minute, is also an edge: the caller re-evaluates there.
 */
function offsetChange(timeZone: string, now: number, offsetNow: number, until: number): number {
  if (localTime(timeZone, until).offsetMinutes === offsetNow) return Infinity;
  // Offsets change on whole minutes: search the minutes after now's.
  let lo = Math.floor(now / 60_000);
  let hi = Math.ceil(until / 60_000);
  while (hi - lo > 1) {
    const mid = lo + Math.floor((hi - lo) / 2);
    if (localTime(timeZone, mid * 60_000).offsetMinutes === offsetNow) lo = mid;
    else hi = mid;
  }
  return hi * 60_000;
}

/**
 * Whether the rule's conditions hold for this watcher in this context, and
 * the next instant a time condition may change that.
 */
export function ruleMatches(rule: Rule, watcher: WatcherIdentity, groups: readonly Group[], context: PolicyContext): { matches: boolean; nextEdge: number } {
  const c = rule.conditions;
  if (!identityMatches(c.identity, watcher, groups)) return { matches: false, nextEdge: Infinity };
  let nextEdge = Infinity;
  let matches = true;
  // RFC 4745 §7.3: sphere.
  if (c.sphere !== undefined && c.sphere !== context.sphere) matches = false;
  // "Share until I arrive": spent once the arrival is recorded, and never shown while there.
  if (c.untilArrivalAt !== undefined && (rule.arrivedAt !== undefined || context.zone === c.untilArrivalAt)) matches = false;
  // RFC 4745 §7.4: validity, a union of intervals [from, until).
  if (c.validity) {
    let inside = false;
    for (const interval of c.validity) {
      const from = Date.parse(interval.from);
      const until = Date.parse(interval.until);
      if (context.now >= from && context.now < until) inside = true;
      if (from > context.now) nextEdge = Math.min(nextEdge, from);
      if (until > context.now) nextEdge = Math.min(nextEdge, until);
    }
    if (!inside) matches = false;
  }
  if (c.recurring) {
    let inside = false;
    for (const window of c.recurring) {
      const state = recurringWindowState(window, context.now);
      if (state.open) inside = true;
      nextEdge = Math.min(nextEdge, state.nextEdge);
    }
    if (!inside) matches = false;
  }
  return { matches, nextEdge };
}

const placeRank = placePermissionSchema.options;
const locationRank = locationPrecisionSchema.options;
const userInputRank = userInputPermissionSchema.options;

const higher = <T extends string>(order: readonly T[], a: T, b: T): T => (order.indexOf(b) > order.indexOf(a) ? b : a);

function unionClasses(a: ClassSet, b: ClassSet): ClassSet {
  if (a === 'all' || b === 'all') return 'all';
  if (b.length === 0) return a;
  if (a.length === 0) return [...new Set(b)].sort();
  return [...new Set([...a, ...b])].sort();
}

/** Class lists sorted and without repeats: the form the combination produces, so one grant can stand for itself. */
const canonicalClasses = (set: ClassSet) => set === 'all' || set.every((c, i) => i === 0 || (set[i - 1] as string) < c);
const isCanonical = (t: Transformations) => canonicalClasses(t.devices) && canonicalClasses(t.services);

const isNothing = (value: Transformations[Field]) => value === false || value === 0 || value === 'none' || value === 'false' || (Array.isArray(value) && value.length === 0);

/** RFC 4745 §10.2, field by field. Exported for the property tests and the preview. */
export function combineTransformations(grants: readonly Transformations[]): Transformations {
  // The common case, one allow rule, costs nothing (reads must not be slower when granted: invariant 1).
  if (grants.length === 1 && isCanonical(grants[0] as Transformations)) return grants[0] as Transformations;
  let out: Transformations = NOTHING;
  for (const g of grants) {
    out = {
      availability: out.availability || g.availability,
      activities: out.activities || g.activities,
      place: higher(placeRank, out.place, g.place),
      sphere: out.sphere || g.sphere,
      location: higher(locationRank, out.location, g.location),
      locationRetransmission: out.locationRetransmission || g.locationRetransmission,
      locationRetentionDays: Math.max(out.locationRetentionDays, g.locationRetentionDays),
      userInput: higher(userInputRank, out.userInput, g.userInput),
      devices: unionClasses(out.devices, g.devices),
      services: unionClasses(out.services, g.services),
      note: out.note || g.note,
      timeOffset: out.timeOffset || g.timeOffset,
    };
  }
  return out;
}

/** Which rules contributed to each field shown: those whose value for it is not "nothing" and is part of the combined value. */
function provenanceOf(allowRules: readonly Rule[], grant: Transformations): Provenance {
  const out: Provenance = {};
  for (const field of Object.keys(grant) as Field[]) {
    const value = grant[field];
    if (isNothing(value)) continue;
    const contributing = allowRules.filter((rule) => {
      const own = rule.transformations[field];
      if (isNothing(own)) return false;
      // Ordered and boolean fields: the rules holding the winning value; class sets: every rule adding a class.
      return Array.isArray(own) || own === 'all' ? true : own === value;
    });
    out[field] = contributing.map((r) => r.id);
  }
  return out;
}

/**
 * Only the owner's preview asks which rule granted what: worked out on
 * demand, so a granted read costs about what a refused one does (privacy
 * invariant 1: timing must not tell a refusal from an offline owner).
 */
class AllowDecision {
  readonly kind = 'allow' as const;
  private explained: Provenance | undefined;

  constructor(
    readonly grant: Transformations,
    readonly ruleIds: readonly string[],
    readonly validUntil: number,
    private readonly allowRules: readonly Rule[],
  ) {}

  get provenance(): Provenance {
    this.explained ??= provenanceOf(this.allowRules, this.grant);
    return this.explained;
  }
}

export function evaluateConsent(policy: OwnerPolicy, watcher: WatcherIdentity, context: PolicyContext): Decision {
  const matching: Rule[] = [];
  let validUntil = Infinity;
  for (const rule of policy.rules) {
    const result = ruleMatches(rule, watcher, policy.groups, context);
    validUntil = Math.min(validUntil, result.nextEdge);
    if (result.matches) matching.push(rule);
  }
  const ruleIds = matching.map((r) => r.id);
  if (matching.length === 0) return { kind: 'no-match', ruleIds, validUntil };

  let subHandling: SubHandling = 'block';
  for (const rule of matching) subHandling = strongerSubHandling(subHandling, rule.actions.subHandling);
  if (subHandling !== 'allow') return { kind: subHandling, ruleIds, validUntil };

  const allowRules = matching.filter((r) => r.actions.subHandling === 'allow');
  const grant = combineTransformations(allowRules.map((r) => r.transformations));
  return new AllowDecision(grant, ruleIds, validUntil, allowRules);
}
