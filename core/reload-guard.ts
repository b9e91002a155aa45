/**
 * Scale-out: a group member reloads an owner from storage after another
 * member changed it (core/owner-reloads.ts). The reload reads a snapshot,
 * then puts it in memory. If this member changed the same owner in between
 * (deleted a rule, revoked a device, erased the owner), the snapshot may
 * have been read before that change was committed, and putting it in
 * memory would undo the change: a revoked rule granting again, a revoked
 * device publishing again, an erased owner back. Only until the next reload
 * (the change's own notification asks for one), but that reload can fail,
 * and the old state would then stay.
 *
 * So a reload records the owner here before it reads, every local change
 * to the owner marks it, and a reload that finds its owner marked throws
 * its snapshot away and reads again. Whole-owner changes are rare (rules,
 * groups, devices, settings), so reading again costs little; the frequent
 * ones (publications, statuses) have their own finer guard
 * (PresenceHub.finishOverridesReload), which keeps both sides.
 *
 * Holds only the owners with a reload in flight: nothing per owner at rest.
 */
export class ReloadGuard {
  /** Owner id -> whether this process changed the owner since its reload began. */
  private readonly inFlight = new Map<string, boolean>();

  /** A reload of the owner starts reading (one at a time per owner: OwnerReloads). */
  begin(ownerId: string): void {
    this.inFlight.set(ownerId, false);
  }

  /** This process changed the owner (after the commit, with memory updated). */
  changed(ownerId: string): void {
    if (this.inFlight.has(ownerId)) this.inFlight.set(ownerId, true);
  }

  /** Whether the owner was changed here since its reload began: if so, the snapshot may be older than memory. */
  overtaken(ownerId: string): boolean {
    return this.inFlight.get(ownerId) === true;
  }

  /** The reload ended (applied, thrown away or failed). */
  end(ownerId: string): void {
    this.inFlight.delete(ownerId);
  }

  /** Owners with a reload in flight (tests). */
  get size(): number {
    return this.inFlight.size;
  }
}
