/**
 * Listeners keyed by owner, so a change to one owner reaches only the
 * listeners (open streams) of that owner, never every listener there is.
 */
export class OwnerListeners<T> {
  private readonly byOwner = new Map<string, Set<(value: T) => void>>();

  add(ownerId: string, listener: (value: T) => void): () => void {
    let set = this.byOwner.get(ownerId);
    if (!set) {
      set = new Set();
      this.byOwner.set(ownerId, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.byOwner.delete(ownerId);
    };
  }

  /** Whether anyone listens to the owner. */
  has(ownerId: string): boolean {
    return this.byOwner.has(ownerId);
  }

  notify(ownerId: string, value: T): void {
    for (const listener of this.byOwner.get(ownerId) ?? []) listener(value);
  }
}
