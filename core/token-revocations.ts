import type { AdminActionStore } from './db/admin-actions.js';
import type { Directory } from './directory.js';

/**
 * Revocation of one HTTP API token by its id, and of an admin subject's
 * tokens by time (issue 7: an admin token seen in the audit trail, an
 * operator who left). Stored first, then reloaded whole into the
 * directory; the other processes of a group reload on the control
 * channel's `{"tokens": true}` (migration 0012).
 */
export class TokenRevocations {
  /** Reloads run one after another, so an older read can never be applied after a newer one (that would bring a revoked token back). */
  private chain: Promise<void> = Promise.resolve();
  private readonly webhooksRemoved: ((ids: readonly string[]) => void)[] = [];

  constructor(
    private readonly store: Pick<AdminActionStore, 'loadRevocations' | 'revokeTokenId' | 'revokeAdminSubject'>,
    private readonly directory: Directory,
    private readonly clock: () => number,
  ) {}

  reload(): Promise<void> {
    const next = this.chain.then(async () => {
      const { tokenIds, adminCutoffs } = await this.store.loadRevocations();
      this.directory.setTokenRevocations(tokenIds, adminCutoffs);
    });
    // A failed reload does not stop the next one.
    this.chain = next.catch(() => undefined);
    return next;
  }

  /**
   * Refuses the token with this id from now on, on every path; idempotent.
   * The webhooks it registered are removed with it (the other processes
   * drop them when the control channel reloads their owners).
   */
  async revokeTokenId(tokenId: string): Promise<void> {
    const removed = await this.store.revokeTokenId(tokenId, new Date(this.clock()));
    await this.reload();
    if (removed.length > 0) for (const listener of this.webhooksRemoved) listener(removed);
  }

  /** Called with the ids of the webhooks a revoked token had registered (the dispatcher stops them). */
  onWebhooksRemoved(listener: (ids: readonly string[]) => void): void {
    this.webhooksRemoved.push(listener);
  }

  /** Refuses every admin token of the subject issued up to now (the instant stored, in ms). */
  async revokeAdminSubject(subject: string): Promise<number> {
    const at = await this.store.revokeAdminSubject(subject, new Date(this.clock()));
    await this.reload();
    return at.getTime();
  }
}
