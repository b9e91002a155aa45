import { and, asc, desc, eq, gt, isNull, lt, lte, sql } from 'drizzle-orm';
import { z } from 'zod';
import { sensorEventSchema } from '../events.js';
import type { AccessEntry } from '../access-log.js';
import type { AccessRequestIntent } from '../access-requests.js';
import type { RawEvent } from '../raw-events.js';
import type { DirtyOwner, PersistedSignal } from '../presence-hub.js';
import { activitySchema, availabilitySchema } from '../presence.js';
import type { PresenceOverride } from '../presence-overrides.js';
import { forgetSilentDevices, mergeSignal, SignalSet, toSignal } from '../signal-store.js';
import type { Database } from './connect.js';
import { eraseStoredOwner, storedOwnerData, type ExportRecord } from './owner-data.js';
import { deleteInBatches } from './delete-in-batches.js';
import { executeNamed } from './named-statements.js';
import { accessLog, accessRequests, consentRules, devices, externalIdentities, owners, presenceOverrides, presenceState, signingKeys, watcherGroups, watchers, webhooks } from './schema.js';

/**
 * Every query the service makes, in one place. Rows read back are validated:
 * the database is a boundary too (an operator may have edited it).
 */
const persistedSignalSchema = z.object({ deviceId: z.uuid(), event: sensorEventSchema });
const storedOverrideSchema = z.object({ availability: availabilitySchema, activities: z.array(activitySchema), note: z.string().max(200).nullable(), etag: z.string().max(64).nullable() });

/** The columns of a stored override that the hub needs. */
type OverrideRow = Pick<typeof presenceOverrides.$inferSelect, 'ownerId' | 'source' | 'availability' | 'activities' | 'note' | 'etag' | 'expiresAt'>;

/** Stored override rows as the hub holds them; rows that no longer validate are counted, not returned. */
function parseOverrideRows(rows: readonly OverrideRow[]): { overrides: { ownerId: string; override: PresenceOverride }[]; skipped: number } {
  const overrides: { ownerId: string; override: PresenceOverride }[] = [];
  let skipped = 0;
  for (const row of rows) {
    const parsed = storedOverrideSchema.safeParse({ availability: row.availability, activities: row.activities, note: row.note, etag: row.etag });
    if (!parsed.success) {
      skipped += 1;
      continue;
    }
    const { note, etag, ...rest } = parsed.data;
    overrides.push({
      ownerId: row.ownerId,
      override: { source: row.source, ...rest, ...(note === null ? {} : { note }), ...(etag === null ? {} : { etag }), expiresAt: row.expiresAt.getTime() },
    });
  }
  return { overrides, skipped };
}

/** One publication change for Repository.writePublications. */
export type PublicationWrite =
  | { readonly op: 'create'; readonly ownerId: string; readonly source: string; readonly publication: PresenceOverride }
  | { readonly op: 'update'; readonly ownerId: string; readonly source: string; readonly expectEtag: string; readonly publication: PresenceOverride }
  | { readonly op: 'delete'; readonly ownerId: string; readonly source: string; readonly expectEtag: string };

export interface StoredRule {
  readonly id: string;
  readonly ownerId: string;
  readonly body: unknown;
  readonly arrivedAt: Date | null;
}

export interface StoredGroup {
  readonly id: string;
  readonly ownerId: string;
  readonly name: string;
  readonly members: unknown;
}

export interface StoredWebhook {
  readonly id: string;
  readonly watcherId: string;
  /** Null while no owner holds the handle (migration 0018). */
  readonly ownerId: string | null;
  readonly handle: string;
  readonly url: string;
}

export type AccessRequestStatus = 'pending' | 'active' | 'terminated';

export interface StoredAccessRequest {
  readonly ownerId: string;
  readonly watcherId: string;
  readonly watcherName: string | null;
  readonly watcherDomain: string | null;
  readonly status: string;
  readonly event: string;
  readonly message: string | null;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

export interface StoredWatcher {
  readonly id: string;
  readonly kind: string;
  readonly name: string;
  readonly domain: string | null;
  readonly revoked: boolean;
  readonly tokensNotBefore: Date | null;
}

const storedWatcher = (row: typeof watchers.$inferSelect): StoredWatcher => ({
  id: row.id,
  kind: row.kind,
  name: row.name,
  domain: row.domain,
  revoked: row.revokedAt !== null,
  tokensNotBefore: row.tokensNotBefore,
});

export interface Snapshot {
  readonly owners: readonly { id: string; handle: string; settings: unknown; tokensNotBefore: Date | null }[];
  readonly devices: readonly { id: string; ownerId: string; deviceClass: string; revoked: boolean }[];
  readonly watchers: readonly StoredWatcher[];
  readonly rules: readonly StoredRule[];
  readonly groups: readonly StoredGroup[];
  readonly states: readonly { ownerId: string; version: number; signals: readonly PersistedSignal[] }[];
  /** Unexpired manual statuses and app sessions. */
  readonly overrides: readonly { ownerId: string; override: PresenceOverride }[];
  /** Stored signals that failed validation and were skipped (one by one). */
  readonly skippedSignals: number;
}

/** A stored signal list, validated one by one: a bad signal is dropped alone. */
function validSignals(stored: unknown): { signals: PersistedSignal[]; skipped: number } {
  if (!Array.isArray(stored)) return { signals: [], skipped: 1 };
  const signals: PersistedSignal[] = [];
  let skipped = 0;
  for (const candidate of stored) {
    const parsed = persistedSignalSchema.safeParse(candidate);
    if (parsed.success) signals.push(parsed.data);
    else skipped += 1;
  }
  return { signals, skipped };
}

export interface StoredState {
  readonly ownerId: string;
  readonly signals: readonly PersistedSignal[];
}

export class Repository {
  /**
   * `long`: the same database, for the statements whose running time grows
   * with what is stored, not with one request (erasure, deleting an owner's
   * retained events, the retention purges): PostgreSQL allows them far
   * longer than DATABASE_STATEMENT_TIMEOUT_MS (core/db/statement-timeout.ts).
   * Cut at the ordinary limit, an owner with a long history could never be
   * erased: every retry would be cut the same way.
   */
  constructor(
    readonly db: Database,
    private readonly long: Database = db,
  ) {}

  /**
   * The live overrides (manual statuses, app sessions, publications) of
   * these owners: what a group member reloads after another member changed
   * them (the control channel's `overrides`), and what any process reads
   * back after a write of them had an unknown outcome (OwnerReloads.heal);
   * one query for every owner asked for in the same tick. A row that no
   * longer validates is skipped.
   */
  async overridesOfOwners(ownerIds: readonly string[]): Promise<{ ownerId: string; override: PresenceOverride }[]> {
    if (ownerIds.length === 0) return [];
    // A named statement (core/db/named-statements.ts): a group member runs it once per batch another member committed.
    const rows = (await executeNamed(
      this.db,
      'overrides_of_owners',
      sql`
        select owner_id, source, availability, activities, note, etag, expires_at
        from presence_overrides
        where expires_at > now() and owner_id in (select jsonb_array_elements_text(${JSON.stringify(ownerIds)}::jsonb)::uuid)`,
    )) as readonly { owner_id: string; source: string; availability: string; activities: unknown; note: string | null; etag: string | null; expires_at: Date | string }[];
    return parseOverrideRows(
      rows.map((r) => ({ ownerId: r.owner_id, source: r.source, availability: r.availability, activities: r.activities, note: r.note, etag: r.etag, expiresAt: new Date(r.expires_at) })),
    ).overrides;
  }

  /**
   * Everything the processes hold in memory, loaded at start; with `ownerId`,
   * one owner's records only (no watchers, no signals), reloaded when
   * another process changed them (scale-out).
   */
  async loadSnapshot(ownerId?: string): Promise<Snapshot> {
    let skippedSignals = 0;
    const one = ownerId !== undefined;
    const [ownerRows, deviceRows, watcherRows, ruleRows, stateRows, overrideRows, groupRows] = await Promise.all([
      this.db.select({ id: owners.id, handle: owners.handle, settings: owners.settings, tokensNotBefore: owners.tokensNotBefore }).from(owners).where(one ? eq(owners.id, ownerId) : undefined),
      this.db.select().from(devices).where(one ? eq(devices.ownerId, ownerId) : undefined),
      one ? Promise.resolve([]) : this.db.select().from(watchers),
      this.db.select().from(consentRules).where(one ? eq(consentRules.ownerId, ownerId) : undefined).orderBy(asc(consentRules.createdAt), asc(consentRules.id)),
      one ? Promise.resolve([]) : this.db.select().from(presenceState),
      this.db
        .select()
        .from(presenceOverrides)
        .where(and(gt(presenceOverrides.expiresAt, sql`now()`), one ? eq(presenceOverrides.ownerId, ownerId) : undefined)),
      this.db.select().from(watcherGroups).where(one ? eq(watcherGroups.ownerId, ownerId) : undefined).orderBy(asc(watcherGroups.createdAt), asc(watcherGroups.id)),
    ]);
    const { overrides, skipped } = parseOverrideRows(overrideRows);
    skippedSignals += skipped;
    // A bad signal is dropped alone; the rest of the row still counts.
    const states: { ownerId: string; version: number; signals: PersistedSignal[] }[] = [];
    for (const row of stateRows) {
      const valid = validSignals(row.signals);
      skippedSignals += valid.skipped;
      states.push({ ownerId: row.ownerId, version: row.version, signals: valid.signals });
    }
    return {
      owners: ownerRows,
      devices: deviceRows.map((d) => ({ id: d.id, ownerId: d.ownerId, deviceClass: d.deviceClass, revoked: d.revokedAt !== null })),
      watchers: watcherRows.map(storedWatcher),
      rules: ruleRows.map((r) => ({ id: r.id, ownerId: r.ownerId, body: r.body, arrivedAt: r.arrivedAt })),
      groups: groupRows.map((g) => ({ id: g.id, ownerId: g.ownerId, name: g.name, members: g.members })),
      states,
      overrides,
      skippedSignals,
    };
  }

  async loadWatcher(id: string): Promise<StoredWatcher | undefined> {
    const [row] = await this.db.select().from(watchers).where(eq(watchers.id, id));
    return row ? storedWatcher(row) : undefined;
  }

  /**
   * What a group member's resynchronisation lists (every owner's id, every
   * watcher) without the rest of a snapshot: the states, overrides, rules
   * and groups of every owner would be read only to be thrown away, each
   * owner being reloaded on its own after.
   */
  async ownerIdsAndWatchers(): Promise<{ ownerIds: string[]; watchers: StoredWatcher[] }> {
    const [ownerRows, watcherRows] = await Promise.all([this.db.select({ id: owners.id }).from(owners), this.db.select().from(watchers)]);
    return { ownerIds: ownerRows.map((row) => row.id), watchers: watcherRows.map(storedWatcher) };
  }

  /**
   * Refuses the subject's tokens issued at or before `at` or the database's
   * own now(), whichever is later (the clocks of the processes and of an
   * identity provider that issue tokens may differ a little; the later
   * instant leaves fewer of them out), and never moves the instant back.
   * A watcher's webhooks registered by then go in the same transaction:
   * they were registered with a token now refused, perhaps a leaked one,
   * and would otherwise keep delivering. Returns the instant now in force
   * and the ids of the webhooks removed, or undefined if there is no such
   * owner or watcher.
   */
  async revokeTokens(kind: 'owner' | 'watcher', id: string, at: Date): Promise<{ at: Date; webhookIds: string[] } | undefined> {
    return this.db.transaction(async (tx) => {
      const table = kind === 'owner' ? owners : watchers;
      const [row] = await tx
        .update(table)
        .set({ tokensNotBefore: sql`greatest(${table.tokensNotBefore}, ${at.toISOString()}::timestamptz, now())` })
        .where(eq(table.id, id))
        .returning({ tokensNotBefore: table.tokensNotBefore });
      const cutoff = row?.tokensNotBefore;
      if (!cutoff) return undefined;
      const removed =
        kind === 'watcher'
          ? await tx
              .delete(webhooks)
              .where(and(eq(webhooks.watcherId, id), lte(webhooks.createdAt, cutoff)))
              .returning({ id: webhooks.id })
          : [];
      return { at: cutoff, webhookIds: removed.map((row) => row.id) };
    });
  }

  /** Returns false if the handle is taken. */
  async insertOwner(owner: { id: string; handle: string; displayName: string | undefined }): Promise<boolean> {
    const rows = await this.db
      .insert(owners)
      .values({ id: owner.id, handle: owner.handle, displayName: owner.displayName ?? null })
      .onConflictDoNothing()
      .returning({ id: owners.id });
    return rows.length === 1;
  }

  async updateOwnerSettings(ownerId: string, settings: unknown): Promise<void> {
    await this.db.update(owners).set({ settings }).where(eq(owners.id, ownerId));
  }

  async insertDevice(device: { id: string; ownerId: string; deviceClass: string; name: string | undefined }): Promise<void> {
    await this.db.insert(devices).values({ ...device, name: device.name ?? null });
  }

  async insertWatcher(watcher: { id: string; kind: 'person' | 'app'; name: string; domain: string | undefined }): Promise<void> {
    await this.db.insert(watchers).values({ ...watcher, domain: watcher.domain ?? null });
  }

  /** The owner's devices, oldest first. */
  async listDevices(ownerId: string) {
    return this.db
      .select({ id: devices.id, deviceClass: devices.deviceClass, name: devices.name, createdAt: devices.createdAt, revokedAt: devices.revokedAt })
      .from(devices)
      .where(eq(devices.ownerId, ownerId))
      .orderBy(asc(devices.createdAt), asc(devices.id));
  }

  /** Marks a device revoked (a lost phone); `ownerId` limits it to that owner's devices. Undefined if there is no such device. */
  async revokeDevice(deviceId: string, ownerId?: string): Promise<{ id: string; ownerId: string; deviceClass: string } | undefined> {
    const rows = await this.db
      .update(devices)
      // A revoked device's broker client is disabled already: nothing left to expire.
      .set({ revokedAt: sql`coalesce(${devices.revokedAt}, now())`, brokerPasswordExpiresAt: null })
      .where(ownerId === undefined ? eq(devices.id, deviceId) : and(eq(devices.id, deviceId), eq(devices.ownerId, ownerId)))
      .returning({ id: devices.id, ownerId: devices.ownerId, deviceClass: devices.deviceClass });
    return rows[0];
  }

  /** The device's broker password (its newest token) expires at `at` (MQTT_DEVICE_CREDENTIALS=mosquitto-dynsec). */
  async setBrokerPasswordExpiry(deviceId: string, at: Date): Promise<void> {
    await this.db.update(devices).set({ brokerPasswordExpiresAt: at }).where(and(eq(devices.id, deviceId), isNull(devices.revokedAt)));
  }

  /** Devices whose broker password expired at or before `now`, oldest first. */
  async expiredBrokerPasswords(now: Date, limit: number): Promise<string[]> {
    const rows = await this.db
      .select({ id: devices.id })
      .from(devices)
      // As the claim below: a page of devices it would refuse would be read again and again.
      .where(and(lte(devices.brokerPasswordExpiresAt, now), isNull(devices.revokedAt)))
      .orderBy(asc(devices.brokerPasswordExpiresAt))
      .limit(limit);
    return rows.map((r) => r.id);
  }

  /**
   * Takes the device's expired broker password for disabling, as a lease
   * until `leaseUntil`: true for the one caller (of any process) that took
   * it; false if it was renewed (a new token) or taken meanwhile. A lease
   * not settled (the process died, the broker did not answer) ends, and the
   * expiry is found again by a later sweep.
   */
  async claimExpiredBrokerPassword(deviceId: string, now: Date, leaseUntil: Date): Promise<boolean> {
    const rows = await this.db
      .update(devices)
      .set({ brokerPasswordExpiresAt: leaseUntil })
      .where(and(eq(devices.id, deviceId), lte(devices.brokerPasswordExpiresAt, now), isNull(devices.revokedAt)))
      .returning({ id: devices.id });
    return rows.length === 1;
  }

  /**
   * After the broker disabled the device: `cleared` if the lease was still
   * there (nothing left to expire); `renewed` if a new token was provisioned
   * meanwhile (through another process: its client must be enabled again);
   * `gone` if the device was revoked or erased meanwhile.
   */
  async settleExpiredBrokerPassword(deviceId: string, leaseUntil: Date): Promise<'cleared' | 'renewed' | 'gone'> {
    const cleared = await this.db
      .update(devices)
      .set({ brokerPasswordExpiresAt: null })
      .where(and(eq(devices.id, deviceId), eq(devices.brokerPasswordExpiresAt, leaseUntil)))
      .returning({ id: devices.id });
    if (cleared.length === 1) return 'cleared';
    const [row] = await this.db.select({ revokedAt: devices.revokedAt, expiresAt: devices.brokerPasswordExpiresAt }).from(devices).where(eq(devices.id, deviceId));
    return row && row.revokedAt === null && row.expiresAt !== null ? 'renewed' : 'gone';
  }

  /** Marks a watcher revoked: their tokens stop working and they match no rule. */
  async revokeWatcher(watcherId: string): Promise<boolean> {
    const rows = await this.db
      .update(watchers)
      .set({ revokedAt: sql`coalesce(${watchers.revokedAt}, now())` })
      .where(eq(watchers.id, watcherId))
      .returning({ id: watchers.id });
    return rows.length === 1;
  }

  /** The owner or watcher an external account is linked to. */
  async linkedIdentity(issuer: string, subject: string): Promise<{ kind: 'owner' | 'watcher'; id: string } | undefined> {
    const [row] = await this.db
      .select({ ownerId: externalIdentities.ownerId, watcherId: externalIdentities.watcherId })
      .from(externalIdentities)
      .where(and(eq(externalIdentities.issuer, issuer), eq(externalIdentities.subject, subject)));
    if (row?.ownerId) return { kind: 'owner', id: row.ownerId };
    if (row?.watcherId) return { kind: 'watcher', id: row.watcherId };
    return undefined;
  }

  /** False if the account is linked already. */
  async linkIdentity(link: { issuer: string; subject: string; ownerId?: string; watcherId?: string }): Promise<boolean> {
    const rows = await this.db
      .insert(externalIdentities)
      .values({ issuer: link.issuer, subject: link.subject, ownerId: link.ownerId ?? null, watcherId: link.watcherId ?? null })
      .onConflictDoNothing()
      .returning({ issuer: externalIdentities.issuer });
    return rows.length === 1;
  }

  async unlinkIdentity(issuer: string, subject: string): Promise<boolean> {
    const rows = await this.db
      .delete(externalIdentities)
      .where(and(eq(externalIdentities.issuer, issuer), eq(externalIdentities.subject, subject)))
      .returning({ issuer: externalIdentities.issuer });
    return rows.length === 1;
  }

  /** Whom one link names (the admin audit of an unlink), or undefined if there is none. */
  async identityLink(issuer: string, subject: string): Promise<{ ownerId: string | null; watcherId: string | null } | undefined> {
    const [row] = await this.db
      .select({ ownerId: externalIdentities.ownerId, watcherId: externalIdentities.watcherId })
      .from(externalIdentities)
      .where(and(eq(externalIdentities.issuer, issuer), eq(externalIdentities.subject, subject)));
    return row;
  }

  async listIdentities(): Promise<{ issuer: string; subject: string; ownerId: string | null; watcherId: string | null; createdAt: Date }[]> {
    return this.db.select().from(externalIdentities).orderBy(asc(externalIdentities.issuer), asc(externalIdentities.subject));
  }

  /** Everything stored about the owner (core/db/owner-data.ts). */
  ownerData(ownerId: string): AsyncGenerator<ExportRecord> {
    return storedOwnerData(this.db, ownerId);
  }

  /** Erases the owner and everything that references them (one cascading delete, after the handle's webhook lock); false if there was none. */
  eraseOwner(ownerId: string): Promise<boolean> {
    return eraseStoredOwner(this.long, ownerId);
  }

  async insertRule(rule: { id: string; ownerId: string; body: unknown }): Promise<void> {
    await this.db.insert(consentRules).values(rule);
  }

  /** Replaces the body (a changed rule holds afresh: any recorded arrival is cleared). Returns false if the owner has no such rule. */
  async updateRule(ownerId: string, ruleId: string, body: unknown): Promise<boolean> {
    const rows = await this.db
      .update(consentRules)
      .set({ body, arrivedAt: null, updatedAt: new Date() })
      .where(and(eq(consentRules.ownerId, ownerId), eq(consentRules.id, ruleId)))
      .returning({ id: consentRules.id });
    return rows.length === 1;
  }

  async markRuleArrived(ownerId: string, ruleId: string, at: Date): Promise<boolean> {
    const rows = await this.db
      .update(consentRules)
      .set({ arrivedAt: at })
      .where(and(eq(consentRules.ownerId, ownerId), eq(consentRules.id, ruleId), isNull(consentRules.arrivedAt)))
      .returning({ id: consentRules.id });
    return rows.length === 1;
  }

  /** All of an owner's rules at once, in one transaction (import): the old set or the new one, never a mix. */
  async replaceRules(ownerId: string, rules: readonly { id: string; body: unknown; arrivedAt: Date | null }[]): Promise<void> {
    await this.db.transaction(async (tx) => {
      await tx.delete(consentRules).where(eq(consentRules.ownerId, ownerId));
      if (rules.length > 0) await tx.insert(consentRules).values(rules.map((r) => ({ ...r, ownerId })));
    });
  }

  async insertGroup(group: { id: string; ownerId: string; name: string; members: readonly string[] }): Promise<void> {
    await this.db.insert(watcherGroups).values({ ...group, members: [...group.members] });
  }

  async updateGroup(ownerId: string, groupId: string, change: { name: string; members: readonly string[] }): Promise<boolean> {
    const rows = await this.db
      .update(watcherGroups)
      .set({ name: change.name, members: [...change.members] })
      .where(and(eq(watcherGroups.ownerId, ownerId), eq(watcherGroups.id, groupId)))
      .returning({ id: watcherGroups.id });
    return rows.length === 1;
  }

  async deleteGroup(ownerId: string, groupId: string): Promise<boolean> {
    const rows = await this.db
      .delete(watcherGroups)
      .where(and(eq(watcherGroups.ownerId, ownerId), eq(watcherGroups.id, groupId)))
      .returning({ id: watcherGroups.id });
    return rows.length === 1;
  }

  private selectWebhooks() {
    return this.db.select({ id: webhooks.id, watcherId: webhooks.watcherId, ownerId: webhooks.ownerId, handle: webhooks.handle, url: webhooks.url }).from(webhooks);
  }

  async listWebhooks(): Promise<StoredWebhook[]> {
    return this.selectWebhooks().orderBy(asc(webhooks.createdAt), asc(webhooks.id));
  }

  async webhooksOfOwner(ownerId: string): Promise<StoredWebhook[]> {
    return this.selectWebhooks().where(eq(webhooks.ownerId, ownerId)).orderBy(asc(webhooks.createdAt), asc(webhooks.id));
  }

  /** Every webhook of a handle, bound to its owner or waiting for one. */
  async webhooksOfHandle(handle: string): Promise<StoredWebhook[]> {
    return this.selectWebhooks().where(eq(webhooks.handle, handle)).orderBy(asc(webhooks.createdAt), asc(webhooks.id));
  }

  /** Every handle that webhooks wait on. */
  async unheldWebhookHandles(): Promise<string[]> {
    const rows = await this.db.selectDistinct({ handle: webhooks.handle }).from(webhooks).where(isNull(webhooks.ownerId));
    return rows.map((row) => row.handle);
  }

  async webhooksOf(watcherId: string): Promise<StoredWebhook[]> {
    return this.selectWebhooks().where(eq(webhooks.watcherId, watcherId)).orderBy(asc(webhooks.createdAt), asc(webhooks.id));
  }

  /**
   * `tokenId`: the id of the token that registered it (revoking that token
   * removes it). The owner is whoever holds the handle when the row is
   * committed, set by the database (migration 0018), not by this process's
   * directory, which may not know an owner created elsewhere yet: the
   * stored webhook, with it, is returned.
   */
  async insertWebhook(hook: { id: string; watcherId: string; handle: string; url: string }, tokenId?: string): Promise<StoredWebhook> {
    const [row] = await this.db
      .insert(webhooks)
      .values({ ...hook, tokenId: tokenId ?? null })
      .returning({ id: webhooks.id, watcherId: webhooks.watcherId, ownerId: webhooks.ownerId, handle: webhooks.handle, url: webhooks.url });
    if (!row) throw new Error('the webhook insert returned no row');
    return row;
  }

  async deleteWebhook(watcherId: string, id: string): Promise<boolean> {
    const rows = await this.db
      .delete(webhooks)
      .where(and(eq(webhooks.watcherId, watcherId), eq(webhooks.id, id)))
      .returning({ id: webhooks.id });
    return rows.length === 1;
  }

  async accessRequest(ownerId: string, watcherId: string): Promise<StoredAccessRequest | undefined> {
    return (await this.accessRequests(ownerId, watcherId))[0];
  }

  /** RFC 3857 watcher information, newest change first. */
  async accessRequests(ownerId: string, watcherId?: string): Promise<StoredAccessRequest[]> {
    return this.db
      .select({
        ownerId: accessRequests.ownerId,
        watcherId: accessRequests.watcherId,
        watcherName: watchers.name,
        watcherDomain: watchers.domain,
        status: accessRequests.status,
        event: accessRequests.event,
        message: accessRequests.message,
        createdAt: accessRequests.createdAt,
        updatedAt: accessRequests.updatedAt,
      })
      .from(accessRequests)
      .leftJoin(watchers, eq(watchers.id, accessRequests.watcherId))
      .where(watcherId === undefined ? eq(accessRequests.ownerId, ownerId) : and(eq(accessRequests.ownerId, ownerId), eq(accessRequests.watcherId, watcherId)))
      .orderBy(desc(accessRequests.updatedAt), asc(accessRequests.watcherId));
  }

  /** `at`: the service clock's time (ms), the one written-behind requests carry, so the later of the two wins (recordAccessRequests). */
  async putAccessRequest(request: { ownerId: string; watcherId: string; status: AccessRequestStatus; event: string; message?: string | undefined; at: number }): Promise<void> {
    const now = new Date(request.at);
    const change = { status: request.status, event: request.event, updatedAt: now, ...(request.message === undefined ? {} : { message: request.message }) };
    await this.db
      .insert(accessRequests)
      .values({ ownerId: request.ownerId, watcherId: request.watcherId, message: request.message ?? null, status: request.status, event: request.event, createdAt: now, updatedAt: now })
      .onConflictDoUpdate({ target: [accessRequests.ownerId, accessRequests.watcherId], set: change });
  }

  /**
   * The access requests the write-behind holds (core/access-requests.ts), in
   * one statement. A pair appears once per batch (the buffer coalesces), as
   * ON CONFLICT needs. A request the owner denied stays denied (its event
   * too) when asked again; only the message and the time change. A row
   * changed after the request was answered (an approval or a denial, here
   * or on another process of a group) is not overwritten by it. An owner or
   * watcher removed meanwhile is skipped, so one gone row cannot fail the
   * batch forever.
   */
  async recordAccessRequests(requests: readonly AccessRequestIntent[]): Promise<void> {
    if (requests.length === 0) return;
    const rows = requests.map((r) => ({
      owner_id: r.ownerId,
      watcher_id: r.watcherId,
      status: r.intent === 'allowed' ? 'active' : 'pending',
      event: r.intent === 'allowed' ? 'approved' : 'subscribe',
      message: r.message ?? null,
      at: new Date(r.at).toISOString(),
    }));
    await executeNamed(this.db, 'record_access_requests', sql`
      insert into access_requests (owner_id, watcher_id, status, event, message, created_at, updated_at)
      select r.owner_id, r.watcher_id, r.status, r.event, r.message, r.at, r.at
      from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb)
        as r(owner_id uuid, watcher_id uuid, status text, event text, message text, at timestamptz)
      where exists (select 1 from owners o where o.id = r.owner_id)
        and exists (select 1 from watchers w where w.id = r.watcher_id)
      on conflict (owner_id, watcher_id) do update set
        status = case when excluded.status = 'pending' and access_requests.status = 'terminated' then 'terminated' else excluded.status end,
        event = case when excluded.status = 'pending' and access_requests.status = 'terminated' then access_requests.event else excluded.event end,
        message = coalesce(excluded.message, access_requests.message),
        updated_at = excluded.updated_at
      where access_requests.updated_at <= excluded.updated_at`);
  }

  /** The id of the deleted rule as stored, or undefined if the owner has no such rule. */
  async deleteRule(ownerId: string, ruleId: string): Promise<string | undefined> {
    const rows = await this.db
      .delete(consentRules)
      .where(and(eq(consentRules.ownerId, ownerId), eq(consentRules.id, ruleId)))
      .returning({ id: consentRules.id });
    return rows[0]?.id;
  }

  async upsertOverride(ownerId: string, override: PresenceOverride): Promise<void> {
    await this.db.delete(presenceOverrides).where(and(eq(presenceOverrides.ownerId, ownerId), lt(presenceOverrides.expiresAt, sql`now()`)));
    const row = { availability: override.availability, activities: [...override.activities], note: override.note ?? null, etag: override.etag ?? null, expiresAt: new Date(override.expiresAt), updatedAt: new Date() };
    await this.db
      .insert(presenceOverrides)
      .values({ ownerId, source: override.source, ...row })
      .onConflictDoUpdate({ target: [presenceOverrides.ownerId, presenceOverrides.source], set: row });
  }

  /**
   * RFC 3903 §6 for a batch of publications, in one statement (one round
   * trip, one commit; see core/group-commit.ts): an initial publication is
   * inserted; a refresh or modify updates, and a removal deletes, only the
   * row still holding the entity tag the request named, so two processes
   * racing on one tag cannot both succeed. Expired rows of the batch's
   * owners go in the same statement. Returns, per write, whether it was
   * applied (false: the tag is no longer current, or the owner is gone).
   */
  async writePublications(batch: readonly PublicationWrite[]): Promise<boolean[]> {
    if (batch.length === 0) return [];
    const rows = batch.map((w) => ({
      op: w.op,
      owner_id: w.ownerId,
      source: w.source,
      expect: w.op === 'create' ? null : w.expectEtag,
      availability: w.op === 'delete' ? null : w.publication.availability,
      activities: w.op === 'delete' ? null : w.publication.activities,
      note: w.op === 'delete' ? null : (w.publication.note ?? null),
      etag: w.op === 'delete' ? null : (w.publication.etag ?? null),
      expires_at: w.op === 'delete' ? null : new Date(w.publication.expiresAt).toISOString(),
    }));
    const result = await executeNamed(this.db, 'write_publications', sql`
      with input as (
        select * from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb)
          as r(op text, owner_id uuid, source text, expect text, availability text, activities jsonb, note text, etag text, expires_at timestamptz)
      ),
      created as (
        insert into presence_overrides (owner_id, source, availability, activities, note, etag, expires_at, updated_at)
        select r.owner_id, r.source, r.availability, r.activities, r.note, r.etag, r.expires_at, now()
        from input r join owners o on o.id = r.owner_id
        where r.op = 'create'
        on conflict (owner_id, source) do nothing
        returning owner_id, source
      ),
      updated as (
        update presence_overrides p
        set availability = r.availability, activities = r.activities, note = r.note, etag = r.etag, expires_at = r.expires_at, updated_at = now()
        from input r
        where r.op = 'update' and p.owner_id = r.owner_id and p.source = r.source and p.etag = r.expect
        returning p.owner_id, p.source
      ),
      deleted as (
        delete from presence_overrides p using input r
        where r.op = 'delete' and p.owner_id = r.owner_id and p.source = r.source and p.etag = r.expect
        returning p.owner_id, p.source
      ),
      purged as (
        delete from presence_overrides p
        where p.owner_id in (select owner_id from input) and p.expires_at < now()
          and not exists (select 1 from input r where r.owner_id = p.owner_id and r.source = p.source)
      )
      select owner_id, source from created
      union all select owner_id, source from updated
      union all select owner_id, source from deleted`);
    const applied = new Set((result as { owner_id: string; source: string }[]).map((r) => `${r.owner_id} ${r.source}`));
    return batch.map((w) => applied.has(`${w.ownerId} ${w.source}`));
  }

  /** Returns false if there was none. */
  async deleteOverride(ownerId: string, source: string): Promise<boolean> {
    const rows = await this.db
      .delete(presenceOverrides)
      .where(and(eq(presenceOverrides.ownerId, ownerId), eq(presenceOverrides.source, source)))
      .returning({ source: presenceOverrides.source });
    return rows.length === 1;
  }

  /** Many entries in one statement, as one jsonb parameter. */
  async insertAccessLog(entries: readonly AccessEntry[]): Promise<void> {
    if (entries.length === 0) return;
    const rows = entries.map((e) => ({
      owner_id: e.ownerId,
      watcher_id: e.watcherId,
      at: new Date(e.at).toISOString(),
      action: e.action,
      outcome: e.outcome,
      fields: e.fields,
      count: e.count,
    }));
    await executeNamed(this.db, 'insert_access_log', sql`
      insert into access_log (owner_id, watcher_id, at, action, outcome, fields, count)
      select r.owner_id, r.watcher_id, r.at, r.action, r.outcome, r.fields, r.count
      from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb)
        as r(owner_id uuid, watcher_id uuid, at timestamptz, action text, outcome text, fields jsonb, count int)
      where exists (select 1 from owners o where o.id = r.owner_id)`);
  }

  /**
   * Newest first, in the total order (at, id), after `cursor` (exclusive):
   * entries sharing a second are neither skipped nor repeated across pages.
   */
  async listAccessLog(ownerId: string, cursor: { at: Date; id: number } | undefined, limit: number) {
    const rows = await this.db
      .select({ id: accessLog.id, watcherId: accessLog.watcherId, watcherName: watchers.name, at: accessLog.at, action: accessLog.action, outcome: accessLog.outcome, fields: accessLog.fields, count: accessLog.count })
      .from(accessLog)
      .leftJoin(watchers, eq(watchers.id, accessLog.watcherId))
      .where(
        cursor
          ? and(eq(accessLog.ownerId, ownerId), sql`(${accessLog.at}, ${accessLog.id}) < (${cursor.at.toISOString()}::timestamptz, ${cursor.id})`)
          : eq(accessLog.ownerId, ownerId),
      )
      .orderBy(desc(accessLog.at), desc(accessLog.id))
      .limit(limit);
    return rows;
  }

  /**
   * Retained sensor events, in one statement: only for owners who still
   * keep them (the setting may have been turned off since they were
   * recorded) and still exist.
   */
  async insertRawEvents(batch: readonly RawEvent[]): Promise<void> {
    if (batch.length === 0) return;
    const rows = batch.map((e) => ({ owner_id: e.ownerId, device_id: e.deviceId, received_at: new Date(e.receivedAt).toISOString(), event: e.event }));
    await executeNamed(this.db, 'insert_raw_events', sql`
      insert into raw_events (owner_id, device_id, received_at, event)
      select r.owner_id, r.device_id, r.received_at, r.event
      from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as r(owner_id uuid, device_id uuid, received_at timestamptz, event jsonb)
      join owners o on o.id = r.owner_id
      where coalesce((o.settings->>'keepRawEventsDays')::int, 0) > 0`);
  }

  /** All of an owner's retained events (retention turned off). */
  async deleteRawEvents(ownerId: string): Promise<void> {
    await this.long.execute(sql`delete from raw_events where owner_id = ${ownerId}::uuid`);
  }

  /**
   * Events older than each owner's window, capped at `maxDays` (0 deletes
   * them all), in batches so that a lowered cap never becomes one huge
   * transaction. Returns how many went. On `long`: the window differs per
   * owner, so finding a batch may scan the whole table.
   */
  async purgeRawEvents(maxDays: number, batch = 10_000): Promise<number> {
    return deleteInBatches(
      this.long,
      (limit) => sql`
        with gone as (
          delete from raw_events where id in (
            select r.id from raw_events r join owners o on o.id = r.owner_id
            where r.received_at < now() - make_interval(days => least(coalesce((o.settings->>'keepRawEventsDays')::int, 0), ${maxDays}::int))
            limit ${limit})
          returning 1)
        select count(*)::int as n from gone`,
      batch,
    );
  }

  /** Deletes entries older than `olderThan`; returns how many. */
  async purgeAccessLog(olderThan: Date, batch = 10_000): Promise<number> {
    return deleteInBatches(
      this.long,
      (limit) => sql`
        with gone as (
          delete from access_log where id in (select id from access_log where at < ${olderThan.toISOString()}::timestamptz limit ${limit})
          returning 1)
        select count(*)::int as n from gone`,
      batch,
    );
  }

  async saveSigningKey(kid: string, algorithm: string, publicJwk: unknown): Promise<void> {
    await this.db.insert(signingKeys).values({ kid, algorithm, publicJwk }).onConflictDoNothing();
  }

  /** The public keys that still verify (not retired), oldest first. */
  async liveSigningKeys(): Promise<{ kid: string; publicJwk: unknown }[]> {
    return this.db.select({ kid: signingKeys.kid, publicJwk: signingKeys.publicJwk }).from(signingKeys).where(isNull(signingKeys.retiredAt)).orderBy(asc(signingKeys.createdAt));
  }

  async listSigningKeys(): Promise<{ kid: string; algorithm: string; createdAt: Date; retiredAt: Date | null }[]> {
    return this.db
      .select({ kid: signingKeys.kid, algorithm: signingKeys.algorithm, createdAt: signingKeys.createdAt, retiredAt: signingKeys.retiredAt })
      .from(signingKeys)
      .orderBy(asc(signingKeys.createdAt), asc(signingKeys.kid));
  }

  /** Retires a key: tokens it signed stop verifying. False if there is no such live key. */
  async retireSigningKey(kid: string): Promise<boolean> {
    const rows = await this.db
      .update(signingKeys)
      .set({ retiredAt: sql`now()` })
      .where(and(eq(signingKeys.kid, kid), isNull(signingKeys.retiredAt)))
      .returning({ kid: signingKeys.kid });
    return rows.length === 1;
  }

  /**
   * A single process's write: it is the only writer of presence state and
   * holds everything storage holds (it loaded it at start), so the stored
   * signals are replaced, in one statement, without reading them back
   * (measured: about twice the rows per second of the merged write).
   * Owners deleted meanwhile are skipped.
   */
  async replaceStates(batch: readonly DirtyOwner[]): Promise<void> {
    if (batch.length === 0) return;
    const rows = new Map<string, readonly PersistedSignal[]>();
    for (const b of batch) rows.set(b.ownerId, b.signals);
    await executeNamed(this.db, 'replace_states', sql`
      insert into presence_state (owner_id, signals, version)
      select r.owner_id, r.signals, 1
      from jsonb_to_recordset(${JSON.stringify([...rows].map(([owner_id, signals]) => ({ owner_id, signals })))}::jsonb) as r(owner_id uuid, signals jsonb)
      join owners o on o.id = r.owner_id
      order by r.owner_id
      on conflict (owner_id) do update set signals = excluded.signals, version = presence_state.version + 1, updated_at = now()`);
  }

  /**
   * Merges many owners' signals into what is stored, in one transaction of
   * three statements whatever the batch size (the batch travels as one jsonb
   * parameter: measured ~4x a multi-row insert, ~40x a row per transaction).
   *
   * Several processes may write the same owner (each persists what it
   * ingested, and a survivor takes over a dead process's unwritten changes),
   * so the stored row is never overwritten: it is locked, merged with the
   * batch by the signal store's own last-writer-wins join (the same function
   * as in memory, so memory and storage cannot disagree on a tie), and
   * written back. The join is commutative, associative and idempotent: the
   * stored state converges whichever process writes what, in any order.
   * Rows are created empty first, then locked in owner order, so two
   * processes writing a new owner at once merge rather than overwrite, and
   * two overlapping batches cannot deadlock. Owners deleted meanwhile are
   * skipped, so one vanished owner cannot fail the whole batch on every
   * retry.
   *
   * Returns the merged signals of the owners where storage held something
   * the batch did not, so the writer's memory learns what other processes
   * stored.
   */
  async upsertStates(batch: readonly DirtyOwner[], forgetBefore?: number): Promise<StoredState[]> {
    if (batch.length === 0) return [];
    const byOwner = new Map<string, readonly PersistedSignal[]>();
    for (const b of batch) byOwner.set(b.ownerId, b.signals);
    const ids = JSON.stringify([...byOwner.keys()].sort());
    return this.db.transaction(async (tx) => {
      await tx.execute(sql`
        insert into presence_state (owner_id, signals, version)
        select o.id, '[]'::jsonb, 0
        from owners o join jsonb_array_elements_text(${ids}::jsonb) as i(id) on o.id = i.id::uuid
        order by o.id
        on conflict (owner_id) do nothing`);
      const result = await tx.execute(sql`
        select owner_id, signals from presence_state
        where owner_id in (select id::uuid from jsonb_array_elements_text(${ids}::jsonb) as i(id))
        order by owner_id
        for update`);
      const stored = (result as unknown as { rows: { owner_id: string; signals: unknown }[] }).rows;
      const merged: StoredState[] = [];
      const learned: StoredState[] = [];
      for (const row of stored) {
        const set = new SignalSet();
        for (const s of byOwner.get(row.owner_id) ?? []) mergeSignal(set, toSignal(s.deviceId, s.event));
        let storeAddedSome = false;
        for (const s of validSignals(row.signals).signals) storeAddedSome = mergeSignal(set, toSignal(s.deviceId, s.event)) || storeAddedSome;
        // Devices silent past retention are forgotten here too, or a row
        // another process wrote would keep them (PresenceHub.forgetSilent).
        if (forgetBefore !== undefined) forgetSilentDevices(set, forgetBefore);
        const state = { ownerId: row.owner_id, signals: [...set.values()].map((s) => ({ deviceId: s.deviceId, event: s.event })) };
        merged.push(state);
        if (storeAddedSome) learned.push(state);
      }
      if (merged.length > 0) {
        await tx.execute(sql`
          update presence_state p
          set signals = r.signals, version = p.version + 1, updated_at = now()
          from jsonb_to_recordset(${JSON.stringify(merged.map((m) => ({ owner_id: m.ownerId, signals: m.signals })))}::jsonb) as r(owner_id uuid, signals jsonb)
          where p.owner_id = r.owner_id`);
      }
      return learned;
    });
  }
}
