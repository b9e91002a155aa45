import { and, desc, eq, lt, sql, type SQL } from 'drizzle-orm';
import { MAX_TOKEN_TTL_SECONDS } from '../identity/tokens.js';
import type { Database } from './connect.js';
import { deleteInBatches } from './delete-in-batches.js';
import { adminActions, adminTokenCutoffs, tokenRevocations, webhooks } from './schema.js';

/**
 * Storage of the operators' audit trail (admin_actions) and of token
 * revocations by id and by admin subject (issue 7, "a careless operator").
 * Pure storage: api/admin-audit.ts decides what is recorded.
 */
export interface AdminActionStart {
  readonly at: Date;
  readonly operator: string;
  readonly tokenId: string | undefined;
  readonly tokenExpiresAt: Date;
  readonly method: string;
  readonly route: string;
  readonly ownerId: string | undefined;
  readonly watcherId: string | undefined;
}

export interface AdminActionRow {
  readonly id: number;
  readonly at: Date;
  readonly operator: string;
  readonly tokenId: string | null;
  readonly tokenExpiresAt: Date;
  readonly method: string;
  readonly route: string;
  readonly ownerId: string | null;
  readonly watcherId: string | null;
  readonly status: number | null;
}

/** How long a revocation by id is kept: a day past the longest lifetime of any token the service issues, then purged. */
export const REVOCATION_KEPT_MS = (MAX_TOKEN_TTL_SECONDS + 86_400) * 1000;

export class AdminActionStore {
  constructor(
    private readonly db: Database,
    private readonly long: Database = db,
  ) {}

  /**
   * Records an action about to run; its id, for finish(). The owner and
   * watcher are looked up in the same statement, so one whose deletion has
   * committed is recorded as null rather than failing the insert (one being
   * deleted at that very moment fails it: the action is refused, 503).
   */
  async start(action: AdminActionStart): Promise<number> {
    const result = await this.db.execute(sql`
      insert into admin_actions (at, operator, token_id, token_expires_at, method, route, owner_id, watcher_id)
      values (${action.at.toISOString()}::timestamptz, ${action.operator}, ${action.tokenId ?? null}, ${action.tokenExpiresAt.toISOString()}::timestamptz,
        ${action.method}, ${action.route},
        (select id from owners where id = ${action.ownerId ?? null}::uuid),
        (select id from watchers where id = ${action.watcherId ?? null}::uuid))
      returning id`);
    const id = (result as unknown as { rows: { id: string | number }[] }).rows[0]?.id;
    if (id === undefined) throw new Error('admin action not recorded');
    return Number(id);
  }

  /** The answer's status, and the owner when known only now (one the action created). */
  async finish(id: number, status: number, ownerId?: string): Promise<void> {
    await this.db
      .update(adminActions)
      .set(ownerId === undefined ? { status } : { status, ownerId: sql`(select id from owners where id = ${ownerId}::uuid)` })
      .where(eq(adminActions.id, id));
  }

  /**
   * Newest first in the total order (at, id), after `cursor` (exclusive);
   * one owner's, or everyone's (the operators' view).
   */
  async list(filter: { ownerId?: string | undefined; since?: Date | undefined }, cursor: { at: Date; id: number } | undefined, limit: number): Promise<AdminActionRow[]> {
    const where: SQL[] = [];
    if (filter.ownerId !== undefined) where.push(eq(adminActions.ownerId, filter.ownerId));
    if (filter.since !== undefined) where.push(sql`${adminActions.at} >= ${filter.since.toISOString()}::timestamptz`);
    if (cursor) where.push(sql`(${adminActions.at}, ${adminActions.id}) < (${cursor.at.toISOString()}::timestamptz, ${cursor.id})`);
    return this.db
      .select()
      .from(adminActions)
      .where(where.length === 0 ? undefined : and(...where))
      .orderBy(desc(adminActions.at), desc(adminActions.id))
      .limit(limit);
  }

  /** Deletes actions older than `olderThan` and revocations past their keeping; returns how many actions went. */
  async purge(olderThan: Date, batch = 10_000): Promise<number> {
    await this.long.delete(tokenRevocations).where(lt(tokenRevocations.expiresAt, sql`now()`));
    return deleteInBatches(
      this.long,
      (limit) => sql`
        with gone as (
          delete from admin_actions where id in (select id from admin_actions where at < ${olderThan.toISOString()}::timestamptz limit ${limit})
          returning 1)
        select count(*)::int as n from gone`,
      batch,
    );
  }

  /**
   * Revokes one token by its id and, in the same transaction, removes the
   * webhooks it registered; returns their ids (none if it was revoked
   * already).
   */
  async revokeTokenId(tokenId: string, at: Date): Promise<string[]> {
    return this.db.transaction(async (tx) => {
      await tx
        .insert(tokenRevocations)
        .values({ tokenId, revokedAt: at, expiresAt: new Date(at.getTime() + REVOCATION_KEPT_MS) })
        .onConflictDoNothing();
      const removed = await tx.delete(webhooks).where(eq(webhooks.tokenId, tokenId)).returning({ id: webhooks.id });
      return removed.map((row) => row.id);
    });
  }

  /**
   * Revokes every admin token of `subject` issued up to `at` (or up to the
   * database's now, if later: the instant only moves forward). Returns the
   * instant in force.
   */
  async revokeAdminSubject(subject: string, at: Date): Promise<Date> {
    const [row] = await this.db
      .insert(adminTokenCutoffs)
      .values({ subject, notBefore: sql`greatest(${at.toISOString()}::timestamptz, now())` })
      .onConflictDoUpdate({
        target: adminTokenCutoffs.subject,
        set: { notBefore: sql`greatest(${adminTokenCutoffs.notBefore}, excluded.not_before)` },
      })
      .returning({ notBefore: adminTokenCutoffs.notBefore });
    if (!row) throw new Error('admin cutoff not stored');
    return row.notBefore;
  }

  /** Both kinds of revocation, whole (small tables), for Directory.setTokenRevocations. */
  async loadRevocations(): Promise<{ tokenIds: string[]; adminCutoffs: [string, number][] }> {
    const [ids, cutoffs] = await Promise.all([
      this.db.select({ tokenId: tokenRevocations.tokenId }).from(tokenRevocations),
      this.db.select({ subject: adminTokenCutoffs.subject, notBefore: adminTokenCutoffs.notBefore }).from(adminTokenCutoffs),
    ]);
    return { tokenIds: ids.map((r) => r.tokenId), adminCutoffs: cutoffs.map((r) => [r.subject, r.notBefore.getTime()]) };
  }
}
