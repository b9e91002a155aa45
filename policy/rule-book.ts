import { OwnerListeners } from '../core/owner-listeners.js';
import type { OwnerPolicy } from './evaluate-consent.js';
import { deepFreeze } from '../core/deep-freeze.js';
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

/**
 * Hash-consing: equal parts of rules are held once, frozen, for every rule
 * of every owner (measured: a parsed allow rule with its defaults took
 * ~1.3 KB per owner, most of it empty lists and the same few grants). Keyed
 * by the canonical JSON of plain, already validated data; bounded, so rules
 * that share nothing with others cost only their own copy.
 */
function shared<T>(value: T): T {
  const key = JSON.stringify(value);
  const known = sharedParts.get(key);
  if (known !== undefined) return known as T;
  deepFreeze(value);
  if (sharedParts.size < MAX_SHARED) sharedParts.set(key, value);
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
  private readonly byOwner = new Map<string, OwnerPolicy>();
  private readonly listeners = new OwnerListeners<void>();

  /** Called after this owner's rules or groups change. */
  watch(ownerId: string, listener: () => void): () => void {
    return this.listeners.add(ownerId, listener);
  }

  policy(ownerId: string): OwnerPolicy {
    return this.byOwner.get(ownerId) ?? EMPTY;
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
    for (const group of groups) Object.freeze(Object.freeze(group).members);
    this.set(ownerId, { rules: this.rules(ownerId), groups: Object.freeze([...groups]) });
  }

  /** Forgets the owner's rules and groups (the owner was erased); watchers of them are told, and now find none. */
  remove(ownerId: string): void {
    if (!this.byOwner.delete(ownerId)) return;
    this.listeners.notify(ownerId, undefined);
  }

  private set(ownerId: string, policy: OwnerPolicy): void {
    this.byOwner.set(ownerId, Object.freeze(policy));
    this.listeners.notify(ownerId, undefined);
  }
}
