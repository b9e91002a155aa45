/** How much of an owner a control-channel change asks a group member to reload. */
export type ReloadKind = 'owner' | 'overrides';

export interface ReloadLoaders {
  /**
   * The whole owner: directory entries, settings, devices, rules, groups,
   * overrides, webhooks. False when the snapshot was thrown away unapplied
   * (this process changed the owner while it was read: core/reload-guard.ts);
   * the owner is then read again.
   */
  owner(ownerId: string): Promise<boolean>;
  /** These owners' overrides (manual statuses, app sessions, publications) only, in one query. */
  overrides(ownerIds: readonly string[]): Promise<void>;
}

/** Owners per overrides query: a burst of changes is read in bounded statements. */
export const MAX_OVERRIDES_BATCH = 1000;

/**
 * Whole-owner reloads in flight at once (six queries each); the others
 * wait their turn. After the control channel reconnects every owner is
 * reloaded: a million at once would queue six million queries on the pool.
 */
export const MAX_OWNER_RELOADS = 16;

/** The first wait before a failed healing reload is tried again; doubled each time, up to HEAL_MAX_DELAY_MS. */
export const HEAL_FIRST_DELAY_MS = 250;
export const HEAL_MAX_DELAY_MS = 30_000;

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
 * - At most MAX_OWNER_RELOADS whole-owner reloads run at once; the rest
 *   wait in the order asked (a resynchronisation asks for every owner).
 *
 * Failures go to `onError` and are not retried here: the next change, or
 * the resynchronisation after the channel reconnects, reloads again.
 * Except for owners being healed (heal()): a write of theirs failed in a
 * way that leaves its outcome unknown, so memory may lag storage and no
 * later change need come to put it right. Those are read again, with a
 * growing wait, until a reload of them succeeds.
 */
export class OwnerReloads {
  private readonly running = new Set<string>();
  /** Owners to reload again when the reload running for them ends, and how much. */
  private readonly again = new Map<string, ReloadKind>();
  private readonly overridesDue = new Set<string>();
  private scheduled = false;
  /** Whole-owner reloads waiting for one of the MAX_OWNER_RELOADS places, in the order asked. */
  private readonly ownersDue = new Set<string>();
  private ownerReloading = 0;
  /**
   * Owners being healed: the reload count when heal() was called (only a
   * reload started after it can have read the write), and the wait before
   * the next try if one fails.
   */
  private readonly healing = new Map<string, { after: number; delay: number; kind: ReloadKind }>();
  private started = 0;
  private readonly retries = new Set<NodeJS.Timeout>();
  private closed = false;

  constructor(
    private readonly load: ReloadLoaders,
    private readonly onError: (error: unknown, kind: ReloadKind, ownerIds: readonly string[]) => void,
  ) {}

  request(ownerId: string, kind: ReloadKind): void {
    if (this.closed) return;
    if (this.running.has(ownerId)) {
      if (kind === 'owner' || !this.again.has(ownerId)) this.again.set(ownerId, kind);
      return;
    }
    // Waiting for a whole-owner reload, which covers anything asked meanwhile.
    if (this.ownersDue.has(ownerId)) return;
    if (kind === 'owner') {
      this.overridesDue.delete(ownerId);
      if (this.ownerReloading >= MAX_OWNER_RELOADS) this.ownersDue.add(ownerId);
      else this.start([ownerId], 'owner');
      return;
    }
    this.overridesDue.add(ownerId);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flushOverrides());
  }

  /**
   * A write of the owner's failed without saying whether it was stored (a
   * lost answer to a statement that committed): memory may lag storage.
   * The owner (its overrides, or all of it) is read from storage now, and
   * again until a reload succeeds; a reload already running may have read
   * before the write, so one more follows it.
   */
  heal(ownerId: string, kind: ReloadKind): void {
    const before = this.healing.get(ownerId);
    const widest = kind === 'owner' || before?.kind === 'owner' ? 'owner' : 'overrides';
    this.healing.set(ownerId, { after: this.started, delay: before?.delay ?? HEAL_FIRST_DELAY_MS, kind: widest });
    this.request(ownerId, widest);
  }

  /** Whether a write of the owner's failed with an unknown outcome and no reload has succeeded since. */
  isHealing(ownerId: string): boolean {
    return this.healing.has(ownerId);
  }

  /** Owners being healed (a metric). */
  get healingCount(): number {
    return this.healing.size;
  }

  /** No more reloads or retries (the service stops). */
  close(): void {
    this.closed = true;
    this.ownersDue.clear();
    for (const timer of this.retries) clearTimeout(timer);
    this.retries.clear();
  }

  /** Owners with a reload running or waiting (what the tests wait on). */
  get pending(): number {
    return this.running.size + this.overridesDue.size + this.ownersDue.size + this.again.size;
  }

  private flushOverrides(): void {
    this.scheduled = false;
    const ownerIds = [...this.overridesDue];
    this.overridesDue.clear();
    for (let i = 0; i < ownerIds.length; i += MAX_OVERRIDES_BATCH) this.start(ownerIds.slice(i, i + MAX_OVERRIDES_BATCH), 'overrides');
  }

  private start(ownerIds: readonly string[], kind: ReloadKind): void {
    for (const ownerId of ownerIds) this.running.add(ownerId);
    const sequence = ++this.started;
    if (kind === 'owner') this.ownerReloading += 1;
    const work = kind === 'owner' ? this.load.owner(ownerIds[0] as string) : this.load.overrides(ownerIds);
    void work
      .then(
        (applied) => {
          if (applied === false) {
            for (const ownerId of ownerIds) this.again.set(ownerId, kind);
            return;
          }
          for (const ownerId of ownerIds) {
            const healing = this.healing.get(ownerId);
            // Healed by a reload that started after the failure and read at least as much.
            if (healing && healing.after < sequence && (kind === 'owner' || healing.kind === 'overrides')) this.healing.delete(ownerId);
          }
        },
        (error: unknown) => {
          this.onError(error, kind, ownerIds);
          for (const ownerId of ownerIds) this.retryHealing(ownerId);
        },
      )
      .finally(() => {
        if (kind === 'owner') this.ownerReloading -= 1;
        for (const ownerId of ownerIds) {
          this.running.delete(ownerId);
          const again = this.again.get(ownerId);
          if (again === undefined) continue;
          this.again.delete(ownerId);
          this.request(ownerId, again);
        }
        // The next owners waiting for a place.
        for (const ownerId of this.ownersDue) {
          if (this.ownerReloading >= MAX_OWNER_RELOADS || this.closed) break;
          this.ownersDue.delete(ownerId);
          this.start([ownerId], 'owner');
        }
      });
  }

  private retryHealing(ownerId: string): void {
    const healing = this.healing.get(ownerId);
    if (healing === undefined || this.closed) return;
    const { delay } = healing;
    healing.delay = Math.min(delay * 2, HEAL_MAX_DELAY_MS);
    const timer = setTimeout(() => {
      this.retries.delete(timer);
      this.request(ownerId, healing.kind);
    }, delay);
    timer.unref();
    this.retries.add(timer);
  }
}
