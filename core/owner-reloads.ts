/** How much of an owner a control-channel change asks a group member to reload. */
export type ReloadKind = 'owner' | 'overrides';

export interface ReloadLoaders {
  /** The whole owner: directory entries, settings, devices, rules, groups, overrides, webhooks. */
  owner(ownerId: string): Promise<void>;
  /** These owners' overrides (manual statuses, app sessions, publications) only, in one query. */
  overrides(ownerIds: readonly string[]): Promise<void>;
}

/** Owners per overrides query: a burst of changes is read in bounded statements. */
export const MAX_OVERRIDES_BATCH = 1000;

/**
 * Scale-out: which owners a group member reloads from storage after the
 * control channel announced a change (core/db/control-channel.ts), and how
 * much of each.
 *
 * - One reload per owner at a time: a change announced while one runs is
 *   reloaded once more after it, however many arrive (coalesced), so the
 *   last reload always starts after the last change was committed.
 * - A change to an owner's overrides alone (a publication, a status) waits
 *   for the end of the event-loop turn and is read with every other owner's
 *   announced in that turn: one query, not six per owner. With two group
 *   members each PUBLISH was a whole-owner reload on both, about 3 ms of CPU
 *   (bench/publish.ts).
 * - A whole-owner reload covers the overrides too: an owner asked for both
 *   gets the whole one.
 *
 * Failures go to `onError` and are not retried here: the next change, or
 * the resynchronisation after the channel reconnects, reloads again.
 */
export class OwnerReloads {
  private readonly running = new Set<string>();
  /** Owners to reload again when the reload running for them ends, and how much. */
  private readonly again = new Map<string, ReloadKind>();
  private readonly overridesDue = new Set<string>();
  private scheduled = false;

  constructor(
    private readonly load: ReloadLoaders,
    private readonly onError: (error: unknown, kind: ReloadKind, ownerIds: readonly string[]) => void,
  ) {}

  request(ownerId: string, kind: ReloadKind): void {
    if (this.running.has(ownerId)) {
      if (kind === 'owner' || !this.again.has(ownerId)) this.again.set(ownerId, kind);
      return;
    }
    if (kind === 'owner') {
      this.overridesDue.delete(ownerId);
      this.start([ownerId], 'owner');
      return;
    }
    this.overridesDue.add(ownerId);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flushOverrides());
  }

  /** Owners with a reload running or waiting (what the tests wait on). */
  get pending(): number {
    return this.running.size + this.overridesDue.size + this.again.size;
  }

  private flushOverrides(): void {
    this.scheduled = false;
    const ownerIds = [...this.overridesDue];
    this.overridesDue.clear();
    for (let i = 0; i < ownerIds.length; i += MAX_OVERRIDES_BATCH) this.start(ownerIds.slice(i, i + MAX_OVERRIDES_BATCH), 'overrides');
  }

  private start(ownerIds: readonly string[], kind: ReloadKind): void {
    for (const ownerId of ownerIds) this.running.add(ownerId);
    const work = kind === 'owner' ? this.load.owner(ownerIds[0] as string) : this.load.overrides(ownerIds);
    void work
      .catch((error: unknown) => this.onError(error, kind, ownerIds))
      .finally(() => {
        for (const ownerId of ownerIds) {
          this.running.delete(ownerId);
          const again = this.again.get(ownerId);
          if (again === undefined) continue;
          this.again.delete(ownerId);
          this.request(ownerId, again);
        }
      });
  }
}
