import { OwnerListeners } from '../core/owner-listeners.js';
import type { OwnerPolicy } from './evaluate-consent.js';
import type { Group, Rule, Transformations } from './rule.js';

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
function freezeIdentity(identity: Rule['conditions']['identity']): void {
  Object.freeze(identity.watchers);
  Object.freeze(identity.groups);
  Object.freeze(identity.domains);
  Object.freeze(identity.except.watchers);
  Object.freeze(identity.except.domains);
  Object.freeze(identity.except);
  Object.freeze(identity);
}

function freezeTransformations(transformations: Transformations): void {
  if (Array.isArray(transformations.devices)) Object.freeze(transformations.devices);
  if (Array.isArray(transformations.services)) Object.freeze(transformations.services);
  Object.freeze(transformations);
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
    for (const rule of rules) {
      freezeIdentity(rule.conditions.identity);
      freezeTransformations(rule.transformations);
      Object.freeze(rule.conditions);
      Object.freeze(rule.actions);
      Object.freeze(rule);
    }
    this.set(ownerId, { rules: Object.freeze([...rules]), groups: this.groups(ownerId) });
  }

  replaceGroups(ownerId: string, groups: readonly Group[]): void {
    for (const group of groups) Object.freeze(Object.freeze(group).members);
    this.set(ownerId, { rules: this.rules(ownerId), groups: Object.freeze([...groups]) });
  }

  private set(ownerId: string, policy: OwnerPolicy): void {
    this.byOwner.set(ownerId, Object.freeze(policy));
    this.listeners.notify(ownerId, undefined);
  }
}
