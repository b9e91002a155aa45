import type { Rule } from './rule.js';

/**
 * Each owner's consent rules in memory, consulted on every read. Replaced
 * whole after the database commit that changes them, so a read sees either
 * the old set or the new one, never half of a change; revoking takes effect
 * on the next read (privacy invariant 5).
 */
export class RuleBook {
  private readonly byOwner = new Map<string, readonly Rule[]>();
  private readonly listeners = new Map<string, Set<() => void>>();

  /** Called after this owner's rules change (open streams re-check what they may show). */
  watch(ownerId: string, listener: () => void): () => void {
    let set = this.listeners.get(ownerId);
    if (!set) {
      set = new Set();
      this.listeners.set(ownerId, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.listeners.delete(ownerId);
    };
  }

  rules(ownerId: string): readonly Rule[] {
    return this.byOwner.get(ownerId) ?? [];
  }

  replace(ownerId: string, rules: readonly Rule[]): void {
    this.byOwner.set(ownerId, Object.freeze([...rules]));
    for (const listener of this.listeners.get(ownerId) ?? []) listener();
  }
}
