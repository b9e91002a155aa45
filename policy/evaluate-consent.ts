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

/**
 * Who a rule is for, as Sets, built once per identity and group list rather
 * than scanned for every rule for every watcher: a change fanned out to
 * thousands of open streams evaluates every rule for each of them. `one`
 * holds the named watchers and the members of the named groups, so a rule
 * costs one lookup unless it also has a `<many>` part. Policies are frozen
 * and replaced whole (policy/rule-book.ts), so a frozen identity or group
 * list can never change under its index; the WeakMaps let an index go with
 * the policy it belongs to. Anything not (deeply) frozen takes the linear
 * path, which gives the same answer: the index is only ever a faster way
 * to the same result (tests/unit/consent-properties.test.ts checks both).
 */
interface IdentityIndex {
  /** The group list `one` was built with: a rule outlives a change of groups. */
  readonly groups: readonly Group[];
  readonly one: ReadonlySet<string>;
  /** Whether there is a `<many>` part at all (any authenticated watcher, or domains). */
  readonly many: boolean;
  readonly exceptWatchers: ReadonlySet<string>;
  readonly exceptDomains: ReadonlySet<string>;
  readonly domains: ReadonlySet<string>;
  readonly anyAuthenticated: boolean;
}
const identityIndexes = new WeakMap<Identity, IdentityIndex>();
/** Group id -> members; the first group with an id wins, as `groups.find` does. */
const groupMembers = new WeakMap<readonly Group[], ReadonlyMap<string, readonly string[]>>();

function membersById(groups: readonly Group[]): ReadonlyMap<string, readonly string[]> | undefined {
  const known = groupMembers.get(groups);
  if (known) return known;
  if (!Object.isFrozen(groups) || !groups.every((g) => Object.isFrozen(g) && Object.isFrozen(g.members))) return undefined;
  const index = new Map<string, readonly string[]>();
  for (const g of groups) if (!index.has(g.id)) index.set(g.id, g.members);
  groupMembers.set(groups, index);
  return index;
}

function identityIndex(identity: Identity, groups: readonly Group[]): IdentityIndex | undefined {
  const known = identityIndexes.get(identity);
  if (known?.groups === groups) return known;
  const { except } = identity;
  const frozen =
    Object.isFrozen(identity) &&
    Object.isFrozen(identity.watchers) &&
    Object.isFrozen(identity.groups) &&
    Object.isFrozen(identity.domains) &&
    Object.isFrozen(except) &&
    Object.isFrozen(except.watchers) &&
    Object.isFrozen(except.domains);
  const members = frozen ? membersById(groups) : undefined;
  if (!members) return undefined;
  const one = new Set(identity.watchers);
  for (const groupId of identity.groups) for (const member of members.get(groupId) ?? []) one.add(member);
  const index: IdentityIndex = {
    groups,
    one,
    many: identity.anyAuthenticated || identity.domains.length > 0,
    exceptWatchers: new Set(except.watchers),
    exceptDomains: new Set(except.domains),
    domains: new Set(identity.domains),
    anyAuthenticated: identity.anyAuthenticated,
  };
  identityIndexes.set(identity, index);
  return index;
}

export function identityMatches(identity: Identity, watcher: WatcherIdentity, groups: readonly Group[]): boolean {
  const index = identityIndex(identity, groups);
  if (!index) return identityMatchesLinear(identity, watcher, groups);
  // The same steps as identityMatchesLinear, with Set lookups; without a
  // <many> part nothing but <one> can match, so the exceptions need no look.
  if (index.one.has(watcher.id)) return true;
  if (!index.many) return false;
  if (index.exceptWatchers.has(watcher.id)) return false;
  if (watcher.domain !== undefined && index.exceptDomains.has(watcher.domain)) return false;
  if (index.anyAuthenticated) return true;
  return watcher.domain !== undefined && index.domains.has(watcher.domain);
}

function identityMatchesLinear(identity: Identity, watcher: WatcherIdentity, groups: readonly Group[]): boolean {
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

export interface RuleMatch {
  readonly matches: boolean;
  readonly nextEdge: number;
}
/** Most rules are for someone else: one shared answer rather than an object per rule per evaluation. */
const NOT_FOR_THIS_WATCHER: RuleMatch = Object.freeze({ matches: false, nextEdge: Infinity });

/**
 * Whether the rule's conditions hold for this watcher in this context, and
 * the next instant a time condition may change that.
 */
export function ruleMatches(rule: Rule, watcher: WatcherIdentity, groups: readonly Group[], context: PolicyContext): RuleMatch {
  if (!identityMatches(rule.conditions.identity, watcher, groups)) return NOT_FOR_THIS_WATCHER;
  return conditionsHold(rule, context);
}

/** The conditions beyond identity (RFC 4745 §7.2-7.4 and the extensions), for a rule whose identity matched. */
function conditionsHold(rule: Rule, context: PolicyContext): RuleMatch {
  const c = rule.conditions;
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

/**
 * A frozen policy (one held by the rule book), indexed once: which rules
 * name each watcher (directly or through a group), and which have a
 * `<many>` part. A rule whose identity does not match a watcher neither
 * matches nor bounds validUntil (ruleMatches gives Infinity), so only these
 * candidates need looking at: a read costs the rules that concern the
 * watcher, not every rule the owner has (an owner with one rule per
 * contact would otherwise pay for all of them on every read).
 */
interface CompiledPolicy {
  /** Watcher id -> positions of the rules naming them, ascending. */
  readonly named: ReadonlyMap<string, readonly number[]>;
  /** Positions of the rules with a `<many>` part, ascending, and their indexes. */
  readonly many: readonly number[];
  readonly manyIndexes: readonly IdentityIndex[];
}
const compiledPolicies = new WeakMap<OwnerPolicy, CompiledPolicy>();
const NO_RULES: readonly number[] = Object.freeze([]);

function compiledPolicy(policy: OwnerPolicy): CompiledPolicy | undefined {
  const known = compiledPolicies.get(policy);
  if (known) return known;
  // Frozen all the way down to what the index is built from (policy/rule-book.ts freezes it so).
  if (!Object.isFrozen(policy) || !Object.isFrozen(policy.rules) || !policy.rules.every((r) => Object.isFrozen(r) && Object.isFrozen(r.conditions))) return undefined;
  const named = new Map<string, number[]>();
  const many: number[] = [];
  const manyIndexes: IdentityIndex[] = [];
  for (let i = 0; i < policy.rules.length; i++) {
    const index = identityIndex((policy.rules[i] as Rule).conditions.identity, policy.groups);
    if (!index) return undefined;
    for (const id of index.one) {
      const positions = named.get(id);
      if (positions) positions.push(i);
      else named.set(id, [i]);
    }
    if (index.many) {
      many.push(i);
      manyIndexes.push(index);
    }
  }
  const compiled: CompiledPolicy = { named, many, manyIndexes };
  compiledPolicies.set(policy, compiled);
  return compiled;
}

/** RFC 4745 §7.1.3 <many> with <except>, for a watcher the rule does not name. */
function manyMatches(index: IdentityIndex, watcher: WatcherIdentity): boolean {
  if (index.exceptWatchers.has(watcher.id)) return false;
  if (watcher.domain !== undefined && index.exceptDomains.has(watcher.domain)) return false;
  if (index.anyAuthenticated) return true;
  return watcher.domain !== undefined && index.domains.has(watcher.domain);
}

export function evaluateConsent(policy: OwnerPolicy, watcher: WatcherIdentity, context: PolicyContext): Decision {
  const matching: Rule[] = [];
  let validUntil = Infinity;
  const consider = (rule: Rule, result: RuleMatch) => {
    validUntil = Math.min(validUntil, result.nextEdge);
    if (result.matches) matching.push(rule);
  };
  const compiled = compiledPolicy(policy);
  if (compiled) {
    // The candidates in rule order: merge the rules naming the watcher with those for many.
    const named = compiled.named.get(watcher.id) ?? NO_RULES;
    const { many, manyIndexes } = compiled;
    let n = 0;
    let m = 0;
    while (n < named.length || m < many.length) {
      const nextNamed = n < named.length ? (named[n] as number) : Infinity;
      const nextMany = m < many.length ? (many[m] as number) : Infinity;
      const position = Math.min(nextNamed, nextMany);
      const rule = policy.rules[position] as Rule;
      // Named: <one> matches outright (RFC 4745 §7.1.2), whatever the rule's <many> part says.
      const identity = position === nextNamed || manyMatches(manyIndexes[m] as IdentityIndex, watcher);
      if (position === nextNamed) n++;
      if (position === nextMany) m++;
      if (identity) consider(rule, conditionsHold(rule, context));
    }
  } else {
    for (const rule of policy.rules) consider(rule, ruleMatches(rule, watcher, policy.groups, context));
  }
  const ruleIds = matching.map((r) => r.id);
  if (matching.length === 0) return { kind: 'no-match', ruleIds, validUntil };

  let subHandling: SubHandling = 'block';
  for (const rule of matching) subHandling = strongerSubHandling(subHandling, rule.actions.subHandling);
  if (subHandling !== 'allow') return { kind: subHandling, ruleIds, validUntil };

  const allowRules = matching.filter((r) => r.actions.subHandling === 'allow');
  return new AllowDecision(grantOf(policy, allowRules), ruleIds, validUntil, allowRules);
}

/**
 * Combined grants, per frozen rule list and set of allow rules (by their
 * positions in it): a watcher matched by several allow rules gets the same
 * grant object on every evaluation, as one matched by a single rule does (its
 * rule's own transformations), so that what is built from a grant can be
 * reused by its identity (api/watcher-views.ts). Only for frozen rules, whose
 * transformations cannot change; a handful of combinations per policy, so a
 * small bound that is simply reset when exceeded.
 */
const combinedGrants = new WeakMap<readonly Rule[], Map<string, Transformations>>();
const MAX_COMBINED_GRANTS = 64;

function grantOf(policy: OwnerPolicy, allowRules: readonly Rule[]): Transformations {
  const grants = allowRules.map((r) => r.transformations);
  const single = grants.length === 1 ? (grants[0] as Transformations) : undefined;
  if ((single && isCanonical(single)) || !Object.isFrozen(policy.rules) || !allowRules.every(frozenRule)) return combineTransformations(grants);
  const key = allowRules.map((r) => policy.rules.indexOf(r)).join(',');
  let known = combinedGrants.get(policy.rules);
  const hit = known?.get(key);
  if (hit) return hit;
  const combined = combineTransformations(grants);
  if (Array.isArray(combined.devices)) Object.freeze(combined.devices);
  if (Array.isArray(combined.services)) Object.freeze(combined.services);
  Object.freeze(combined);
  if (!known || known.size >= MAX_COMBINED_GRANTS) {
    known = new Map();
    combinedGrants.set(policy.rules, known);
  }
  known.set(key, combined);
  return combined;
}

/** A rule whose transformations can change neither in place nor by being swapped. */
function frozenRule(rule: Rule): boolean {
  const t = rule.transformations;
  return Object.isFrozen(rule) && Object.isFrozen(t) && (t.devices === 'all' || Object.isFrozen(t.devices)) && (t.services === 'all' || Object.isFrozen(t.services));
}
