import { OwnerListeners } from '../core/owner-listeners.js';
import type { OwnerPolicy } from './evaluate-consent.js';
import { deepFreeze } from '../core/deep-freeze.js';
import { packPolicy, unpackPolicy } from './packed-policy.js';
import type { Group, Identity, Rule } from './rule.js';

/**
 * Each owner's consent rules and watcher groups in memory, consulted on
 * every read. Replaced whole after the database commit that changes them, so
 * a read sees either the old set or the new one, never half of a change;
 * revoking takes effect on the next read (privacy invariant 5), and open
 * streams are told at once to re-check what they may show.
 */
const EMPTY: OwnerPolicy = Object.freeze({ rules: Object.freeze([]) as readonly Rule[], groups: Object.freeze([]) as readonly Group[] });

/**
 * Rules (their conditions, who they are for and what they grant) and group
 * membership are frozen here, once held: evaluateConsent indexes a frozen
 * policy once (which rules name which watcher, in Sets, not scanned per
 * watcher and rule) and reuses combined grants, and api/watcher-views.ts
 * reuses views per grant object, which is sound only if none of it can
 * change afterwards. Nothing changes them in place; a change is a new rule
 * or group, swapped in whole.
 */
const MAX_SHARED = 4096;
const sharedParts = new Map<string, unknown>();
/** The same parts, by identity. */
const sharedObjects = new WeakSet<object>();

/**
 * Hash-consing: equal parts of rules are held once, frozen, for every rule
 * of every owner (measured: a parsed allow rule with its defaults took
 * ~1.3 KB per owner, most of it empty lists and the same few grants). Keyed
 * by the canonical JSON of plain, already validated data; bounded, so rules
 * that share nothing with others cost only their own copy.
 */
function shared<T>(value: T): T {
  // A part already shared (one of an unpacked rule's, policy/packed-policy.ts) is itself.
  if (typeof value === 'object' && value !== null && sharedObjects.has(value)) return value;
  const key = JSON.stringify(value);
  const known = sharedParts.get(key);
  if (known !== undefined) return known as T;
  deepFreeze(value);
  if (sharedParts.size < MAX_SHARED) {
    sharedParts.set(key, value);
    if (typeof value === 'object' && value !== null) sharedObjects.add(value);
  }
  return value;
}

/**
 * Who a rule is for: the lists it names, shared when empty or equal to
 * another rule's. An object literal of the schema's five fields, not
 * Object.assign onto `{}`: an empty literal has room for four properties
 * in the object itself, and the fifth went to a property array of its own
 * (measured: 40 bytes more per rule, in heap snapshots).
 */
function sharedIdentity(identity: Identity): Identity {
  const { watchers, groups, domains, anyAuthenticated, except, ...others } = identity;
  // A field added to the schema must be added here too: this fails to compile until it is.
  const none: Record<string, never> = others;
  void none;
  if (watchers.length > 0) Object.freeze(watchers);
  return Object.freeze({ watchers: watchers.length === 0 ? shared(watchers) : watchers, groups: shared(groups), domains: shared(domains), anyAuthenticated, except: shared(except) });
}

/** A rule made of frozen, shared parts. */
function frozenRule(rule: Rule): Rule {
  // Object.assign rather than object spread: on Node 20, a spread in hot
  // code gives each result a hidden class of its own once optimized
  // (measured: ~200 bytes more per object kept).
  const conditions = Object.assign({}, rule.conditions, { identity: sharedIdentity(rule.conditions.identity) });
  return Object.freeze(Object.assign({}, rule, { conditions: deepFreeze(conditions), actions: shared(rule.actions), transformations: shared(rule.transformations) }));
}

export class RuleBook {
  /** Each owner's policy: frozen objects while in use, packed (policy/packed-policy.ts) at rest. */
  private readonly byOwner = new Map<string, OwnerPolicy | string>();
  /** Owners whose policy is held as objects: all restIdle() looks at. */
  private readonly held = new Set<string>();
  /** Owners whose policy was consulted or changed since the last sweep (restIdle leaves them held). */
  private readonly seen = new Set<string>();
  /**
   * The packed form a held policy was unpacked from: unchanged since, it
   * rests as that same string again, with no packing and nothing new
   * allocated (the usual cycle: rest, a read, rest). A changed policy is a
   * new object, with no packed form until the sweep makes one.
   */
  private readonly packedForms = new WeakMap<OwnerPolicy, string>();
  private readonly listeners = new OwnerListeners<void>();

  /** Called after this owner's rules or groups change. */
  watch(ownerId: string, listener: () => void): () => void {
    return this.listeners.add(ownerId, listener);
  }

  /**
   * The owner's policy, frozen. A policy at rest is unpacked (and frozen
   * again) for good, until the sweeps find it idle: the objects are new
   * but equal, so what is derived from them (evaluateConsent's indexes,
   * combined grants) is derived again once, and views stay equal.
   */
  policy(ownerId: string): OwnerPolicy {
    const held = this.byOwner.get(ownerId);
    if (held === undefined) return EMPTY;
    this.seen.add(ownerId);
    if (typeof held !== 'string') return held;
    const { rules, groups } = unpackPolicy(held, undefined, frozenRule);
    const policy = Object.freeze({ rules: Object.freeze(rules), groups: frozenGroups(groups) });
    this.packedForms.set(policy, held);
    this.byOwner.set(ownerId, policy);
    this.held.add(ownerId);
    return policy;
  }

  rules(ownerId: string): readonly Rule[] {
    return this.policy(ownerId).rules;
  }

  groups(ownerId: string): readonly Group[] {
    return this.policy(ownerId).groups;
  }

  replace(ownerId: string, rules: readonly Rule[]): void {
    this.set(ownerId, { rules: Object.freeze(rules.map(frozenRule)), groups: this.groups(ownerId) });
  }

  replaceGroups(ownerId: string, groups: readonly Group[]): void {
    this.set(ownerId, { rules: this.rules(ownerId), groups: frozenGroups(groups) });
  }

  /** Forgets the owner's rules and groups (the owner was erased); watchers of them are told, and now find none. */
  remove(ownerId: string): void {
    this.held.delete(ownerId);
    this.seen.delete(ownerId);
    if (!this.byOwner.delete(ownerId)) return;
    this.listeners.notify(ownerId, undefined);
  }

  /**
   * Packs the policies nobody consulted or changed since the previous sweep
   * (called with PresenceHub.restIdle, every 15 s in bin/service.ts, so a
   * policy rests 15 to 30 s after its last use). The policies of owners
   * someone listens to (streams, webhooks, SIP subscriptions: each change
   * of the owner's state consults it) stay held. Sliced like the hub's
   * sweep, so a million owners never hold the event loop. Returns how many
   * were packed.
   */
  async restIdle(slice = 5_000): Promise<number> {
    let rested = 0;
    const ids = [...this.held];
    for (let i = 0; i < ids.length; i += slice) {
      if (i > 0) await new Promise<void>((resolve) => setImmediate(resolve));
      for (const ownerId of ids.slice(i, i + slice)) {
        if (this.seen.delete(ownerId) || this.listeners.has(ownerId)) continue;
        const policy = this.byOwner.get(ownerId);
        if (policy === undefined || typeof policy === 'string') {
          this.held.delete(ownerId);
          continue;
        }
        const packed = this.packedForms.get(policy) ?? packPolicy(policy);
        // Not packable (not plain JSON data; never seen from validated bodies): held as it is, tried again next time.
        if (packed === undefined) continue;
        this.byOwner.set(ownerId, packed);
        this.held.delete(ownerId);
        rested += 1;
      }
    }
    return rested;
  }

  /** How many owners' policies are held as objects (the others are packed). */
  get heldCount(): number {
    return this.held.size;
  }

  private set(ownerId: string, policy: OwnerPolicy): void {
    if (policy.rules.length === 0 && policy.groups.length === 0) {
      // Nothing left: the owner holds nothing (policy() gives the shared empty one).
      this.byOwner.delete(ownerId);
      this.held.delete(ownerId);
      this.seen.delete(ownerId);
    } else {
      this.byOwner.set(ownerId, Object.freeze(policy));
      this.held.add(ownerId);
      this.seen.add(ownerId);
    }
    this.listeners.notify(ownerId, undefined);
  }
}

/** Groups (and their member lists) frozen, in a frozen list of their own. */
function frozenGroups(groups: readonly Group[]): readonly Group[] {
  for (const group of groups) Object.freeze(Object.freeze(group).members);
  return Object.freeze([...groups]);
}
