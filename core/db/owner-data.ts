import { and, asc, eq, gt, sql } from 'drizzle-orm';
import type { Database } from './connect.js';
import { accessLog, accessRequests, adminActions, consentRules, devices, externalIdentities, owners, presenceOverrides, presenceState, rawEvents, watcherGroups, watchers, webhooks } from './schema.js';

/**
 * Everything storage holds about one owner, for their export (the right of
 * access and to portability), and its erasure. Every table that holds an
 * owner's data references owners(id) with ON DELETE CASCADE, so erasure is
 * one statement and one commit (admin_actions, the operators' trail, with
 * ON DELETE SET NULL: what an operator did stays, not whom it concerned); tests/integration/data-rights.test.ts checks
 * every table of the schema afterwards, so a new table that forgets the
 * cascade fails there.
 */
export type ExportRecord = { readonly type: string } & Record<string, unknown>;

const iso = (d: Date | null): string | null => (d === null ? null : d.toISOString());
const PAGE = 1000;

export async function* storedOwnerData(db: Database, ownerId: string): AsyncGenerator<ExportRecord> {
  const [owner] = await db.select().from(owners).where(eq(owners.id, ownerId));
  if (!owner) return;
  yield { type: 'owner', id: owner.id, handle: owner.handle, displayName: owner.displayName, settings: owner.settings, createdAt: iso(owner.createdAt) };

  for (const d of await db.select().from(devices).where(eq(devices.ownerId, ownerId)).orderBy(asc(devices.createdAt), asc(devices.id))) {
    yield { type: 'device', id: d.id, class: d.deviceClass, name: d.name, createdAt: iso(d.createdAt), revokedAt: iso(d.revokedAt), brokerPasswordExpiresAt: iso(d.brokerPasswordExpiresAt) };
  }
  for (const r of await db.select().from(consentRules).where(eq(consentRules.ownerId, ownerId)).orderBy(asc(consentRules.createdAt), asc(consentRules.id))) {
    yield { type: 'rule', id: r.id, body: r.body, arrivedAt: iso(r.arrivedAt), createdAt: iso(r.createdAt), updatedAt: iso(r.updatedAt) };
  }
  for (const g of await db.select().from(watcherGroups).where(eq(watcherGroups.ownerId, ownerId)).orderBy(asc(watcherGroups.createdAt), asc(watcherGroups.id))) {
    yield { type: 'group', id: g.id, name: g.name, members: g.members, createdAt: iso(g.createdAt) };
  }
  const requests = await db
    .select({ watcherId: accessRequests.watcherId, watcherName: watchers.name, status: accessRequests.status, event: accessRequests.event, message: accessRequests.message, createdAt: accessRequests.createdAt, updatedAt: accessRequests.updatedAt })
    .from(accessRequests)
    .leftJoin(watchers, eq(watchers.id, accessRequests.watcherId))
    .where(eq(accessRequests.ownerId, ownerId))
    .orderBy(asc(accessRequests.createdAt), asc(accessRequests.watcherId));
  for (const a of requests) yield { type: 'access-request', ...a, createdAt: iso(a.createdAt), updatedAt: iso(a.updatedAt) };
  const hooks = await db
    .select({ id: webhooks.id, watcherId: webhooks.watcherId, watcherName: watchers.name, url: webhooks.url, createdAt: webhooks.createdAt })
    .from(webhooks)
    .leftJoin(watchers, eq(watchers.id, webhooks.watcherId))
    .where(eq(webhooks.ownerId, ownerId))
    .orderBy(asc(webhooks.createdAt), asc(webhooks.id));
  // Where the owner's presence is sent: the host, not the watcher's whole URL (its path may hold the watcher's own secrets).
  for (const h of hooks) yield { type: 'webhook', id: h.id, watcherId: h.watcherId, watcherName: h.watcherName, host: hostOf(h.url), createdAt: iso(h.createdAt) };

  for (const x of await db.select().from(externalIdentities).where(eq(externalIdentities.ownerId, ownerId)).orderBy(asc(externalIdentities.issuer), asc(externalIdentities.subject))) {
    yield { type: 'external-identity', issuer: x.issuer, subject: x.subject, createdAt: iso(x.createdAt) };
  }

  const [state] = await db.select().from(presenceState).where(eq(presenceState.ownerId, ownerId));
  if (state) yield { type: 'stored-signals', signals: state.signals, version: state.version, updatedAt: iso(state.updatedAt) };
  for (const o of await db.select().from(presenceOverrides).where(eq(presenceOverrides.ownerId, ownerId)).orderBy(asc(presenceOverrides.source))) {
    yield { type: 'status', source: o.source, availability: o.availability, activities: o.activities, note: o.note, expiresAt: iso(o.expiresAt), updatedAt: iso(o.updatedAt) };
  }

  // The histories, oldest first, page by page: never whole in memory.
  for await (const { id: _id, ...r } of byId((after) =>
    db
      .select({ id: accessLog.id, watcherId: accessLog.watcherId, watcherName: watchers.name, at: accessLog.at, action: accessLog.action, outcome: accessLog.outcome, fields: accessLog.fields, count: accessLog.count })
      .from(accessLog)
      .leftJoin(watchers, eq(watchers.id, accessLog.watcherId))
      .where(and(eq(accessLog.ownerId, ownerId), gt(accessLog.id, after)))
      .orderBy(asc(accessLog.id))
      .limit(PAGE),
  )) {
    yield { type: 'access-log', ...r, at: iso(r.at) };
  }
  // What operators did that concerned the owner (api/admin-audit.ts): which
  // operator, with which token, which route, what came of it.
  for await (const a of byId((after) =>
    db
      .select()
      .from(adminActions)
      .where(and(eq(adminActions.ownerId, ownerId), gt(adminActions.id, after)))
      .orderBy(asc(adminActions.id))
      .limit(PAGE),
  )) {
    yield { type: 'admin-action', at: iso(a.at), operator: a.operator, tokenId: a.tokenId, method: a.method, route: a.route, status: a.status };
  }
  for await (const r of byId((after) =>
    db
      .select()
      .from(rawEvents)
      .where(and(eq(rawEvents.ownerId, ownerId), gt(rawEvents.id, after)))
      .orderBy(asc(rawEvents.id))
      .limit(PAGE),
  )) {
    yield { type: 'raw-event', deviceId: r.deviceId, receivedAt: iso(r.receivedAt), event: r.event };
  }
}

/** The rows `page(after)` gives, PAGE at a time in id order, each page after the last id of the one before. */
async function* byId<T extends { readonly id: number }>(page: (after: number) => Promise<T[]>): AsyncGenerator<T> {
  for (let after = 0; ; ) {
    const rows = await page(after);
    yield* rows;
    if (rows.length < PAGE) return;
    after = rows[rows.length - 1]?.id ?? after;
  }
}

function hostOf(url: string): string | null {
  try {
    return new URL(url).host;
  } catch {
    return null;
  }
}

/**
 * Deletes the owner and, by cascade, everything that references them; false
 * if there was no such owner. The handle's webhook lock (migration 0018) is
 * taken first, before the row's: a webhook being registered on the handle
 * then either commits first (and goes with the owner) or waits and finds no
 * owner. Taken by the row's delete trigger alone, after the row lock, it
 * could deadlock with that registration's foreign-key check.
 */
export async function eraseStoredOwner(db: Database, ownerId: string): Promise<boolean> {
  return db.transaction(async (tx) => {
    await tx.execute(sql`select presence_lock_webhook_handle(handle) from owners where id = ${ownerId}`);
    const rows = await tx.delete(owners).where(eq(owners.id, ownerId)).returning({ id: owners.id });
    return rows.length === 1;
  });
}

/**
 * The tables (of the public schema) with an owner_id column: what the
 * erasure test checks is empty for the erased owner. Read from the
 * catalog, so a table added later is checked without anyone remembering to.
 */
export async function tablesWithOwnerColumn(db: Database): Promise<string[]> {
  const result = await db.execute(sql`
    select table_name from information_schema.columns
    where table_schema = 'public' and column_name = 'owner_id'
    order by table_name`);
  return (result as unknown as { rows: { table_name: string }[] }).rows.map((r) => r.table_name);
}
