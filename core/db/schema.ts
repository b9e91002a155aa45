import { sql } from 'drizzle-orm';
import { bigint, bigserial, check, index, integer, jsonb, pgTable, primaryKey, text, timestamp, uuid } from 'drizzle-orm/pg-core';

/**
 * The one storage schema, PostgreSQL dialect, for both PGlite (embedded) and
 * a real PostgreSQL. Hot state lives in memory; these tables are the record
 * it is loaded from at start and written back to in batches.
 */
export const owners = pgTable(
  'owners',
  {
    id: uuid('id').primaryKey(),
    handle: text('handle').notNull().unique(),
    displayName: text('display_name'),
    /** Validated OwnerSettings (zones, dwell times, ...); {} means the defaults. */
    settings: jsonb('settings').notNull().default({}),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    /** Tokens of this owner issued at or before this instant are refused ("sign out everywhere": a lost phone). */
    tokensNotBefore: timestamp('tokens_not_before', { withTimezone: true }),
  },
  (t) => [check('owners_handle_shape', sql`${t.handle} ~ '^[a-z0-9][a-z0-9._-]{0,62}$'`)],
);

export const devices = pgTable(
  'devices',
  {
    id: uuid('id').primaryKey(),
    ownerId: uuid('owner_id')
      .notNull()
      .references(() => owners.id, { onDelete: 'cascade' }),
    /** RFC 4480 §3.3 class: phone, wearable, sensor, ... */
    deviceClass: text('device_class').notNull(),
    name: text('name'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    revokedAt: timestamp('revoked_at', { withTimezone: true }),
    /**
     * With MQTT_DEVICE_CREDENTIALS=mosquitto-dynsec: when the device's
     * broker password (its latest token) expires. The broker cannot read a
     * token's expiry, so the service disables the broker client then, and
     * clears this; null: nothing to expire.
     */
    brokerPasswordExpiresAt: timestamp('broker_password_expires_at', { withTimezone: true }),
  },
  (t) => [index('devices_owner_idx').on(t.ownerId), index('devices_broker_password_expiry_idx').on(t.brokerPasswordExpiresAt).where(sql`${t.brokerPasswordExpiresAt} is not null`)],
);

/** Watchers are people and third-party apps that read presence. */
export const watchers = pgTable(
  'watchers',
  {
    id: uuid('id').primaryKey(),
    kind: text('kind').notNull(),
    name: text('name').notNull(),
    /** For rules naming a domain (RFC 4745 §7.1.3 `<many domain>`); lower case. */
    domain: text('domain'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    revokedAt: timestamp('revoked_at', { withTimezone: true }),
    /** Tokens of this watcher issued at or before this instant are refused (a leaked app token). */
    tokensNotBefore: timestamp('tokens_not_before', { withTimezone: true }),
  },
  (t) => [check('watchers_kind', sql`${t.kind} in ('person', 'app')`)],
);

/** RFC 4745 rules, one row each, the rule body as validated JSON. */
export const consentRules = pgTable(
  'consent_rules',
  {
    id: uuid('id').primaryKey(),
    ownerId: uuid('owner_id')
      .notNull()
      .references(() => owners.id, { onDelete: 'cascade' }),
    body: jsonb('body').notNull(),
    /** When the owner arrived at the zone of an "until I arrive" rule: the rule holds no more. */
    arrivedAt: timestamp('arrived_at', { withTimezone: true }),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [index('consent_rules_owner_idx').on(t.ownerId)],
);

/** Owner-defined groups of watchers, named by id in rules. */
export const watcherGroups = pgTable(
  'watcher_groups',
  {
    id: uuid('id').primaryKey(),
    ownerId: uuid('owner_id')
      .notNull()
      .references(() => owners.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    /** Watcher ids (validated on the way in and on load). */
    members: jsonb('members').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [index('watcher_groups_owner_idx').on(t.ownerId)],
);

/**
 * Watcher information (RFC 3857): who asked to see an owner and where that
 * stands (pending, active, terminated) and why (the last event).
 */
export const accessRequests = pgTable(
  'access_requests',
  {
    ownerId: uuid('owner_id')
      .notNull()
      .references(() => owners.id, { onDelete: 'cascade' }),
    watcherId: uuid('watcher_id')
      .notNull()
      .references(() => watchers.id, { onDelete: 'cascade' }),
    status: text('status').notNull(),
    event: text('event').notNull(),
    /** What the watcher said when asking (shown to the owner only). */
    message: text('message'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    primaryKey({ columns: [t.ownerId, t.watcherId] }),
    check('access_requests_status', sql`${t.status} in ('pending', 'active', 'terminated')`),
  ],
);

/**
 * Webhooks: a watcher asks for its view of one handle to be POSTed, signed,
 * to a URL on every change. A handle no owner holds is taken too (its view
 * is the offline one), so registering does not tell whether a handle
 * exists: `owner_id` is null until an owner takes the handle, when a
 * trigger (migration 0018) binds the rows. Erasing the owner deletes them.
 */
export const webhooks = pgTable(
  'webhooks',
  {
    id: uuid('id').primaryKey(),
    watcherId: uuid('watcher_id')
      .notNull()
      .references(() => watchers.id, { onDelete: 'cascade' }),
    ownerId: uuid('owner_id').references(() => owners.id, { onDelete: 'cascade' }),
    handle: text('handle').notNull(),
    url: text('url').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    /** The id (jti) of the watcher token that registered it: revoking that token by its id removes it (a leaked token may have pointed it anywhere). */
    tokenId: text('token_id'),
  },
  (t) => [
    index('webhooks_watcher_idx').on(t.watcherId),
    index('webhooks_token_idx').on(t.tokenId).where(sql`${t.tokenId} is not null`),
    index('webhooks_owner_idx').on(t.ownerId),
    index('webhooks_handle_idx').on(t.handle),
  ],
);

/**
 * The latest signals of each owner (the merge input of derivation), written
 * behind the hot path in coalesced batches and restored at start. Derived
 * state is not stored: it is a pure function of these and the clock.
 */
export const presenceState = pgTable('presence_state', {
  ownerId: uuid('owner_id')
    .primaryKey()
    .references(() => owners.id, { onDelete: 'cascade' }),
  signals: jsonb('signals').notNull(),
  /** Monotonic per owner: a stale batch never overwrites a newer one. */
  version: bigint('version', { mode: 'number' }).notNull(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});

/**
 * What the owner said (source `manual`) or an app holds for them (source
 * `session:{id}`), each with an expiry; combined with the derived state.
 */
export const presenceOverrides = pgTable(
  'presence_overrides',
  {
    ownerId: uuid('owner_id')
      .notNull()
      .references(() => owners.id, { onDelete: 'cascade' }),
    source: text('source').notNull(),
    availability: text('availability').notNull(),
    activities: jsonb('activities').notNull(),
    note: text('note'),
    /** RFC 3903 entity tag of a publication (source `publication:{id}`); a new one on every refresh or modify. */
    etag: text('etag'),
    expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.ownerId, t.source] })],
);

/**
 * The owner's access log (privacy invariant 6): who read what, when, and
 * whether anything was shown. Reads of the same view by the same watcher in
 * the same second are one row with a count. Kept AUDIT_RETENTION_DAYS.
 */
export const accessLog = pgTable(
  'access_log',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    ownerId: uuid('owner_id')
      .notNull()
      .references(() => owners.id, { onDelete: 'cascade' }),
    watcherId: uuid('watcher_id').notNull(),
    at: timestamp('at', { withTimezone: true }).notNull(),
    action: text('action').notNull(),
    /** `shown`, or `withheld` (the watcher got the offline view). */
    outcome: text('outcome').notNull(),
    /** The view's fields the watcher received. */
    fields: jsonb('fields').notNull(),
    count: integer('count').notNull(),
  },
  (t) => [index('access_log_owner_at_idx').on(t.ownerId, t.at, t.id), index('access_log_at_idx').on(t.at)],
);

/**
 * Sensor events as received (validated, with Wi-Fi names already digested),
 * kept only for owners who turned retention on (settings
 * keepRawEventsDays), and purged past min(that, RAW_EVENTS_MAX_DAYS)
 * (privacy invariant 4). Nothing else stores event history: presence_state
 * holds the latest signal of each kind only.
 */
export const rawEvents = pgTable(
  'raw_events',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    ownerId: uuid('owner_id')
      .notNull()
      .references(() => owners.id, { onDelete: 'cascade' }),
    deviceId: uuid('device_id').notNull(),
    receivedAt: timestamp('received_at', { withTimezone: true }).notNull(),
    event: jsonb('event').notNull(),
  },
  (t) => [index('raw_events_owner_received_idx').on(t.ownerId, t.receivedAt, t.id), index('raw_events_received_idx').on(t.receivedAt)],
);

/**
 * Accounts at an external OpenID Connect provider, linked to an owner or a
 * watcher: a token the provider issued for (issuer, subject) acts as that
 * owner or watcher. Exactly one of owner_id and watcher_id is set; the link
 * goes with its owner or watcher (ON DELETE CASCADE).
 */
export const externalIdentities = pgTable(
  'external_identities',
  {
    issuer: text('issuer').notNull(),
    subject: text('subject').notNull(),
    ownerId: uuid('owner_id').references(() => owners.id, { onDelete: 'cascade' }),
    watcherId: uuid('watcher_id').references(() => watchers.id, { onDelete: 'cascade' }),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.issuer, t.subject] }), check('external_identities_one_principal', sql`(${t.ownerId} is null) <> (${t.watcherId} is null)`)],
);

/** Public halves of the token signing keys (the private key never lands here). */
export const signingKeys = pgTable('signing_keys', {
  kid: text('kid').primaryKey(),
  algorithm: text('algorithm').notNull(),
  publicJwk: jsonb('public_jwk').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  retiredAt: timestamp('retired_at', { withTimezone: true }),
});

/**
 * What operators did through the admin API (issue 7, "a careless
 * operator"): one row per admin request that passed validation and
 * authentication, written before the action runs (an action that cannot be
 * recorded is not run) and given its status when answered. The route is the pattern
 * (`/v1/admin/owners/:handle/export`), never the values in the URL or the
 * body. The owner it concerned sees it (GET /v1/me/admin-actions) and finds
 * it in their export; their erasure sets owner_id to null, which leaves
 * the operators' trail without anything that leads back to them. Kept
 * AUDIT_RETENTION_DAYS.
 */
export const adminActions = pgTable(
  'admin_actions',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    at: timestamp('at', { withTimezone: true }).notNull(),
    /** The admin token's subject (`presencectl`, an operator's name). */
    operator: text('operator').notNull(),
    /** The token's id (jti), to revoke that one token (POST /v1/admin/tokens/revoke). */
    tokenId: text('token_id'),
    tokenExpiresAt: timestamp('token_expires_at', { withTimezone: true }).notNull(),
    method: text('method').notNull(),
    route: text('route').notNull(),
    ownerId: uuid('owner_id').references(() => owners.id, { onDelete: 'set null' }),
    watcherId: uuid('watcher_id').references(() => watchers.id, { onDelete: 'set null' }),
    /** The HTTP status answered; null while running, or if the client went away or the process ended first. */
    status: integer('status'),
  },
  (t) => [index('admin_actions_owner_at_idx').on(t.ownerId, t.at, t.id), index('admin_actions_at_idx').on(t.at)],
);

/**
 * HTTP API tokens revoked one by one, by their id (jti): an admin token
 * seen in admin_actions, a token an owner or watcher can name. Kept past
 * the longest lifetime the service issues (expires_at), then purged.
 */
export const tokenRevocations = pgTable('token_revocations', {
  tokenId: text('token_id').primaryKey(),
  revokedAt: timestamp('revoked_at', { withTimezone: true }).notNull(),
  expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
});

/**
 * Admin tokens revoked by subject: every admin token of the subject issued
 * at or before not_before is refused (an operator leaves, a laptop is lost).
 * Admin subjects are not accounts, so they have a table of their own.
 */
export const adminTokenCutoffs = pgTable('admin_token_cutoffs', {
  subject: text('subject').primaryKey(),
  notBefore: timestamp('not_before', { withTimezone: true }).notNull(),
});
