import type { Rule } from './rule.js';

/**
 * Each owner's consent rules in memory, consulted on every read. Replaced
 * whole after the database commit that changes them, so a read sees either
 * the old set or the new one, never half of a change; revoking takes effect
 * on the next read (privacy invariant 5).
 */
export class RuleBook {
  private readonly byOwner = new Map<string, readonly Rule[]>();

  rules(ownerId: string): readonly Rule[] {
    return this.byOwner.get(ownerId) ?? [];
  }

  replace(ownerId: string, rules: readonly Rule[]): void {
    this.byOwner.set(ownerId, Object.freeze([...rules]));
  }
}
