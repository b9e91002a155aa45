import { and, asc, eq, sql } from 'drizzle-orm';
import { z } from 'zod';
import { sensorEventSchema } from '../events.js';
import type { DirtyOwner, PersistedSignal } from '../presence-hub.js';
import type { Database } from './connect.js';
import { consentRules, devices, owners, presenceState, signingKeys, watchers } from './schema.js';

/**
 * Every query the service makes, in one place. Rows read back are validated:
 * the database is a boundary too (an operator may have edited it).
 */
const persistedSignalsSchema = z.array(z.object({ deviceId: z.uuid(), event: sensorEventSchema }));

export interface StoredRule {
  readonly id: string;
  readonly ownerId: string;
  readonly body: unknown;
}

export interface Snapshot {
  readonly owners: readonly { id: string; handle: string }[];
  readonly devices: readonly { id: string; ownerId: string; deviceClass: string; revoked: boolean }[];
  readonly watchers: readonly { id: string; kind: string; name: string; revoked: boolean }[];
  readonly rules: readonly StoredRule[];
  readonly states: readonly { ownerId: string; version: number; signals: readonly PersistedSignal[] }[];
  /** Stored signal rows that failed validation and were skipped. */
  readonly skippedStates: number;
}

export class Repository {
  constructor(readonly db: Database) {}

  async loadSnapshot(): Promise<Snapshot> {
    const [ownerRows, deviceRows, watcherRows, ruleRows, stateRows] = await Promise.all([
      this.db.select({ id: owners.id, handle: owners.handle }).from(owners),
      this.db.select().from(devices),
      this.db.select().from(watchers),
      this.db.select().from(consentRules).orderBy(asc(consentRules.createdAt), asc(consentRules.id)),
      this.db.select().from(presenceState),
    ]);
    const states: { ownerId: string; version: number; signals: PersistedSignal[] }[] = [];
    let skippedStates = 0;
    for (const row of stateRows) {
      const parsed = persistedSignalsSchema.safeParse(row.signals);
      if (parsed.success) states.push({ ownerId: row.ownerId, version: row.version, signals: parsed.data });
      else skippedStates += 1;
    }
    return {
      owners: ownerRows,
      devices: deviceRows.map((d) => ({ id: d.id, ownerId: d.ownerId, deviceClass: d.deviceClass, revoked: d.revokedAt !== null })),
      watchers: watcherRows.map((w) => ({ id: w.id, kind: w.kind, name: w.name, revoked: w.revokedAt !== null })),
      rules: ruleRows.map((r) => ({ id: r.id, ownerId: r.ownerId, body: r.body })),
      states,
      skippedStates,
    };
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

  async insertDevice(device: { id: string; ownerId: string; deviceClass: string; name: string | undefined }): Promise<void> {
    await this.db.insert(devices).values({ ...device, name: device.name ?? null });
  }

  async insertWatcher(watcher: { id: string; kind: 'person' | 'app'; name: string }): Promise<void> {
    await this.db.insert(watchers).values(watcher);
  }

  async insertRule(rule: { id: string; ownerId: string; body: unknown }): Promise<void> {
    await this.db.insert(consentRules).values(rule);
  }

  /** Returns false if the owner has no such rule. */
  async deleteRule(ownerId: string, ruleId: string): Promise<boolean> {
    const rows = await this.db
      .delete(consentRules)
      .where(and(eq(consentRules.ownerId, ownerId), eq(consentRules.id, ruleId)))
      .returning({ id: consentRules.id });
    return rows.length === 1;
  }

  async saveSigningKey(kid: string, algorithm: string, publicJwk: unknown): Promise<void> {
    await this.db.insert(signingKeys).values({ kid, algorithm, publicJwk }).onConflictDoNothing();
  }

  /**
   * Writes many owners' signals in one statement: the batch travels as one
   * jsonb parameter (measured ~4x a multi-row insert, ~40x a row per
   * transaction). A row only moves forward: an older version never
   * overwrites a newer one.
   */
  async upsertStates(batch: readonly DirtyOwner[]): Promise<void> {
    if (batch.length === 0) return;
    const rows = batch.map((b) => ({ owner_id: b.ownerId, version: b.version, signals: b.signals }));
    await this.db.execute(sql`
      insert into presence_state (owner_id, signals, version, updated_at)
      select r.owner_id, r.signals, r.version, now()
      from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as r(owner_id uuid, signals jsonb, version bigint)
      on conflict (owner_id) do update
        set signals = excluded.signals, version = excluded.version, updated_at = excluded.updated_at
        where presence_state.version < excluded.version`);
  }
}
