import { OwnerListeners } from '../core/owner-listeners.js';
import type { Rule } from './rule.js';

/**
 * Each owner's consent rules in memory, consulted on every read. Replaced
 * whole after the database commit that changes them, so a read sees either
 * the old set or the new one, never half of a change; revoking takes effect
 * on the next read (privacy invariant 5).
 */
export class RuleBook {
  private readonly byOwner = new Map<string, readonly Rule[]>();
  private readonly listeners = new OwnerListeners<void>();

  /** Called after this owner's rules change (open streams re-check what they may show). */
  watch(ownerId: string, listener: () => void): () => void {
    return this.listeners.add(ownerId, listener);
  }

  rules(ownerId: string): readonly Rule[] {
    return this.byOwner.get(ownerId) ?? [];
  }

  replace(ownerId: string, rules: readonly Rule[]): void {
    this.byOwner.set(ownerId, Object.freeze([...rules]));
    this.listeners.notify(ownerId, undefined);
  }
}
