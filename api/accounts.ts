import type { AccessRequestQueue } from '../core/access-requests.js';
import type { Directory } from '../core/directory.js';
import { AppError } from '../core/errors.js';
import { toStoredSettings, type OwnerSettings, type SettingsInput } from '../core/owner-settings.js';
import type { PresenceHub } from '../core/presence-hub.js';
import { MANUAL, MAX_PUBLICATIONS, MAX_SESSIONS, PUBLICATION_PREFIX, type OverrideInput, type PresenceOverride } from '../core/presence-overrides.js';
import type { Activity, Availability } from '../core/presence.js';
import { presentityUri } from '../core/identifiers.js';
import { issueToken, type Scope, type SigningKey, type TokenKind } from '../core/identity/tokens.js';
import { isDatabaseUnavailable } from '../core/db/db-error.js';
import type { PublicationWrite, Repository } from '../core/db/repository.js';
import { GroupCommit } from '../core/group-commit.js';
import { randomTag } from '../core/random-tag.js';
import { identityMatches, strongerSubHandling } from '../policy/evaluate-consent.js';
import { ruleBodySchema, ruleSchema, type Group, type GroupBody, type Rule, type RuleBody, type SubHandling, type Transformations } from '../policy/rule.js';
import type { RuleBook } from '../policy/rule-book.js';
import { KeyedQueue } from '../core/keyed-queue.js';
import type { ReloadKind } from '../core/owner-reloads.js';
import { decodeCursor, encodeCursor } from './page-cursor.js';

/**
 * Owner, device, watcher, rule and token management, shared by the admin
 * API (and so the command-line tool) and the owner's own API. Each change is
 * committed to the database first and only then made visible in memory.
 */
export const DEFAULT_TTL_SECONDS: Record<'device' | 'watcher' | 'owner', number> = {
  device: 365 * 24 * 3600,
  watcher: 30 * 24 * 3600,
  owner: 24 * 3600,
};

export const DEFAULT_SCOPES: Record<'device' | 'watcher' | 'owner', readonly Scope[]> = {
  device: ['presence:write'],
  watcher: ['presence:read'],
  owner: ['presence:read', 'presence:write', 'status:manage', 'consent:manage', 'settings:manage', 'account:manage'],
};

export interface PublicationContent {
  readonly availability: Availability;
  readonly activities: readonly Activity[];
  readonly note?: string | undefined;
}

export interface WatcherInfo {
  readonly watcherId: string;
  readonly name: string;
  readonly kind: 'person' | 'app';
  readonly domain: string | null;
  readonly status: 'pending' | 'active' | 'terminated';
  readonly event: 'subscribe' | 'approved' | 'rejected' | 'deactivated';
  readonly message: string | null;
  readonly requestedAt: string | null;
  readonly updatedAt: string | null;
}

/** An external broker that keeps device credentials (bin/service.ts wires Mosquitto's dynamic security). */
export interface BrokerCredentials {
  /** Makes `token` the device's broker password, until `expiresAt` (ms; the token's expiry). */
  provision(deviceId: string, token: string, expiresAt: number): Promise<void>;
  /** Removes the device from the broker (it was revoked or erased while being provisioned). */
  withdraw(deviceId: string): Promise<void>;
}

export class Accounts {
  constructor(
    private readonly repository: Repository,
    private readonly directory: Directory,
    private readonly ruleBook: RuleBook,
    private readonly signingKey: SigningKey,
    private readonly issuer: string,
    private readonly presenceDomain: string,
    private readonly clock: () => number,
    private readonly hub: PresenceHub,
    private readonly digestNetworkName: (ownerId: string, ssid: string) => string,
    /** Access requests are answered from memory and written behind (core/access-requests.ts). */
    private readonly accessRequests: AccessRequestQueue,
    /** Writes what the write-behind holds (state, access log, retained events): reads of storage then see everything. */
    private readonly flushWrites: () => Promise<void>,
    private readonly onBackgroundError: (error: unknown) => void = () => undefined,
  ) {}

  /** Sets the owner's manual status or an app session (by source), stored first. */
  async setOverride(ownerId: string, source: string, input: OverrideInput): Promise<PresenceOverride> {
    const now = this.clock();
    const others = this.hub.overridesOf(ownerId).filter((o) => o.expiresAt > now && o.source !== source && o.source.startsWith('session:'));
    if (source !== MANUAL && others.length >= MAX_SESSIONS) throw new AppError('conflict', `At most ${MAX_SESSIONS} app sessions at once; end one first.`);
    const override: PresenceOverride = {
      source,
      availability: input.availability,
      activities: input.activities,
      ...(input.note === undefined ? {} : { note: input.note }),
      expiresAt: now + input.expiresInSeconds * 1000,
    };
    await this.tracked(ownerId, 'overrides', this.repository.upsertOverride(ownerId, override));
    this.hub.setOverride(ownerId, override, this.clock());
    return override;
  }

  // --- publications (RFC 3903 PUBLISH semantics over HTTP) ------------------

  private readonly publishing = new KeyedQueue();

  /**
   * Publications are stored by group commit: concurrent PUBLISH requests
   * share one statement and one commit, and each is answered once its own
   * row is durable (RFC 3903 §6: the 2xx confirms the publication). One
   * batch in flight: two (measured with bench/publish.ts) made batches
   * smaller and slower and cut the rate from 4,500 to 2,800/s.
   */
  private readonly publicationWrites = new GroupCommit<PublicationWrite, boolean>(
    (batch) => this.repository.writePublications(batch),
    (write) => `${write.ownerId} ${write.source}`,
    { maxBatch: 500, maxQueued: 20_000 },
    (size) => {
      for (const listener of this.publicationBatchListeners) listener(size);
    },
  );

  private readonly publicationBatchListeners: ((size: number) => void)[] = [];

  /** Called with the size of each publication batch written (a metric). */
  onPublicationBatch(listener: (size: number) => void): void {
    this.publicationBatchListeners.push(listener);
  }

  /** Publication writes waiting for the next group commit (a metric). */
  get publicationQueueDepth(): number {
    return this.publicationWrites.depth;
  }

  /** One publication change at a time per owner: two refreshes racing on one tag must not both succeed. */
  private serialized<T>(ownerId: string, work: () => Promise<T>): Promise<T> {
    return this.publishing.run(ownerId, work);
  }

  /** A change to the owner's rules, groups or account, serialized and tracked as a whole-owner write. */
  private ownerChange<T>(ownerId: string, work: () => Promise<T>): Promise<T> {
    return this.serialized(ownerId, () => this.tracked(ownerId, 'owner', work()));
  }

  /**
   * An event state compositor's PUBLISH handling (RFC 3903 §6): without
   * If-Match, an initial publication (a body is required); with it, a
   * refresh (no body), a modify (a body) or a removal (expiry 0) of the
   * live publication holding that tag, else 412. Every success but a
   * removal issues a new entity tag (§6, step 8). Stored before it is
   * applied, like every other change; the store checks the tag again, so a
   * tag spent on another process of a group is refused here too.
   */
  async publish(ownerId: string, request: { ifMatch: string | undefined; expiresSeconds: number; content: PublicationContent | undefined }): Promise<{ etag: string | undefined; expiresSeconds: number; created: boolean }> {
    return this.serialized(ownerId, async () => {
      const now = this.clock();
      const live = this.hub.overridesOf(ownerId).filter((o) => o.expiresAt > now && o.source.startsWith(PUBLICATION_PREFIX));
      if (request.ifMatch === undefined) {
        if (!request.content) throw new AppError('invalid_request', 'An initial publication needs a body (RFC 3903 §6).');
        if (request.expiresSeconds === 0) throw new AppError('invalid_request', 'An initial publication cannot have expiry 0.');
        if (live.length >= MAX_PUBLICATIONS) throw new AppError('conflict', `At most ${MAX_PUBLICATIONS} live publications per owner; remove or let one expire.`);
        const publication = this.publication(`${PUBLICATION_PREFIX}${crypto.randomUUID()}`, request.content, now, request.expiresSeconds);
        await this.storePublication({ op: 'create', ownerId, source: publication.source, publication });
        return { etag: publication.etag, expiresSeconds: request.expiresSeconds, created: true };
      }
      const current = live.find((o) => o.etag === request.ifMatch);
      if (!current) throw new AppError('precondition_failed');
      if (request.expiresSeconds === 0) {
        await this.storePublication({ op: 'delete', ownerId, source: current.source, expectEtag: request.ifMatch });
        return { etag: undefined, expiresSeconds: 0, created: false };
      }
      const content = request.content ?? { availability: current.availability, activities: current.activities, note: current.note };
      const publication = this.publication(current.source, content, now, request.expiresSeconds);
      await this.storePublication({ op: 'update', ownerId, source: current.source, expectEtag: request.ifMatch, publication });
      return { etag: publication.etag, expiresSeconds: request.expiresSeconds, created: false };
    });
  }

  private publication(source: string, content: PublicationContent, now: number, expiresSeconds: number): PresenceOverride {
    return {
      source,
      availability: content.availability,
      activities: content.activities,
      ...(content.note === undefined ? {} : { note: content.note }),
      etag: randomTag(),
      expiresAt: now + expiresSeconds * 1000,
    };
  }

  private readonly uncertainListeners: ((ownerId: string, what: ReloadKind) => void)[] = [];

  /**
   * Called when a write of the owner's failed without saying whether it
   * was stored: a statement whose answer was lost (a timeout, a dropped
   * connection) may have committed, and memory, which applies a write only
   * once it is known stored, may now lag storage: a deleted rule still
   * granting, a revoked device still publishing, an old publication.
   * `what`: the overrides only (publications, statuses, sessions) or the
   * whole owner (rules, groups, devices, settings, erasure). bin/service.ts
   * reads it back until that succeeds (OwnerReloads.heal).
   */
  onWriteUncertain(listener: (ownerId: string, what: ReloadKind) => void): void {
    this.uncertainListeners.push(listener);
  }

  /**
   * Every write of an owner's goes through here, so that the listeners hear
   * of it: a whole-owner change that succeeded (onOwnerChanged: a reload
   * in flight may hold an older snapshot), and any write that failed in a
   * way that may have stored it all the same (onWriteUncertain). Passes the
   * result or the error on.
   */
  private tracked<T>(ownerId: string, what: ReloadKind, write: Promise<T>): Promise<T> {
    return write.then(
      (result) => {
        if (what === 'owner') for (const listener of this.changedListeners) listener(ownerId);
        return result;
      },
      (error: unknown) => {
        // An AppError was decided by the service (a full queue, a refusal, not found): the database was not left in doubt.
        if (!(error instanceof AppError)) for (const listener of this.uncertainListeners) listener(ownerId, what);
        throw error;
      },
    );
  }

  /** Stored first (group commit), then applied; a write the store refused (the tag was spent elsewhere) is a 412. */
  private async storePublication(write: PublicationWrite): Promise<void> {
    const stored = await this.tracked(write.ownerId, 'overrides', this.publicationWrites.submit(write));
    if (!stored) {
      if (write.op === 'create') throw new AppError('not_found', 'No such owner.');
      throw new AppError('precondition_failed');
    }
    if (write.op === 'delete') this.hub.removeOverride(write.ownerId, write.source, this.clock());
    else this.hub.setOverride(write.ownerId, write.publication, this.clock());
  }

  async removeOverride(ownerId: string, source: string): Promise<void> {
    if (!(await this.tracked(ownerId, 'overrides', this.repository.deleteOverride(ownerId, source)))) throw new AppError('not_found', 'Nothing set.');
    this.hub.removeOverride(ownerId, source, this.clock());
  }

  /** Pending entries are written first, so a read right after an access finds it. */
  async accessLog(ownerId: string, cursor: string | undefined, limit: number) {
    await this.flushWrites();
    const rows = await this.repository.listAccessLog(ownerId, cursor === undefined ? undefined : decodeCursor(cursor), limit);
    const last = rows.at(-1);
    return {
      ...(last && rows.length === limit ? { next: encodeCursor(last.at, last.id) } : {}),
      entries: rows.map((r) => ({
        watcherId: r.watcherId,
        watcherName: r.watcherName,
        at: r.at.toISOString(),
        action: r.action,
        outcome: r.outcome,
        fields: Array.isArray(r.fields) ? r.fields.map(String) : [],
        count: r.count,
      })),
    };
  }

  private readonly settingsListeners: ((ownerId: string) => void)[] = [];
  private readonly changedListeners: ((ownerId: string) => void)[] = [];

  /**
   * Called when this process changed an owner's rules, groups, devices or
   * settings, or erased the owner (committed; in memory at once, or in the
   * same turn for a single statement's write): a reload of that owner in
   * flight may hold an older snapshot (core/reload-guard.ts).
   */
  onOwnerChanged(listener: (ownerId: string) => void): void {
    this.changedListeners.push(listener);
  }

  /** Called after an owner's settings change (the SIP gateway starts or stops publishing). */
  onSettingsChange(listener: (ownerId: string) => void): void {
    this.settingsListeners.push(listener);
  }

  settingsOf(ownerId: string): OwnerSettings {
    return this.directory.settings(ownerId);
  }

  /** Stores the settings (Wi-Fi names digested), then re-derives the owner's presence with them. */
  async updateSettings(ownerId: string, input: SettingsInput): Promise<OwnerSettings> {
    const stored = toStoredSettings(input, (ssid) => this.digestNetworkName(ownerId, ssid));
    if (!stored.success) throw new AppError('invalid_request', 'The settings are not valid.', stored.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`));
    const settings = stored.data;
    // An unspent "until I arrive" rule needs its zone: without it, the arrival could never be seen and the rule would share for ever.
    const orphaned = this.ruleBook.rules(ownerId).filter((r) => r.conditions.untilArrivalAt !== undefined && r.arrivedAt === undefined && !settings.zones.some((z) => z.name === r.conditions.untilArrivalAt));
    if (orphaned.length > 0) throw new AppError('conflict', '"Until I arrive" rules name a zone these settings remove; change or delete those rules first.', orphaned.map((r) => r.id));
    await this.tracked(ownerId, 'owner', this.repository.updateOwnerSettings(ownerId, settings));
    const now = this.clock();
    // Watchers are told the change against the state before it.
    this.hub.beforeChange(ownerId, now);
    this.directory.putSettings(ownerId, settings);
    this.hub.refresh(ownerId, now);
    this.settingsChanged(ownerId);
    // Retention turned off: what was kept goes now, not at the next purge (privacy invariant 4).
    if (settings.keepRawEventsDays === 0) await this.repository.deleteRawEvents(ownerId);
    return settings;
  }

  /** Tells the listeners (also when another process changed the settings). */
  settingsChanged(ownerId: string): void {
    for (const listener of this.settingsListeners) listener(ownerId);
  }

  /** Everything derived about the owner, with the trace: for the owner's own eyes. */
  ownerView(ownerId: string, handle: string) {
    const state = this.hub.explain(ownerId, this.clock());
    return {
      entity: this.entityOf(handle),
      availability: state.availability,
      activities: [...state.activities],
      place: state.place ? { zone: state.place.zone, placeType: state.place.placeType ?? null, sphere: state.place.sphere ?? null } : null,
      userInput: state.userInput ? { state: state.userInput.state, lastInput: state.userInput.lastInput === undefined ? null : new Date(state.userInput.lastInput).toISOString() } : null,
      timeOffsetMinutes: state.timeOffsetMinutes ?? null,
      location: state.location ? { latitude: state.location.latitude, longitude: state.location.longitude, accuracy: state.location.accuracy } : null,
      note: state.note ?? null,
      lastSeen: state.lastSeen === undefined ? null : new Date(state.lastSeen).toISOString(),
      devices: state.devices.map((d) => ({
        id: d.id,
        class: this.directory.device(d.id)?.deviceClass ?? null,
        lastSeen: new Date(d.lastSeen).toISOString(),
        basic: d.live ? ('open' as const) : ('closed' as const),
      })),
      trace: Object.fromEntries(Object.entries(state.trace).map(([field, entry]) => [field, { rule: entry.rule, signals: [...entry.signals] }])),
    };
  }

  // --- data rights and revocation -------------------------------------------

  private readonly erasedListeners: ((ownerId: string, deviceIds: readonly string[]) => void)[] = [];
  private readonly revokedListeners: ((deviceId: string) => void)[] = [];
  private readonly webhooksRemovedListeners: ((ids: readonly string[]) => void)[] = [];

  /** Told after an owner was erased here or elsewhere (streams, webhooks, the SIP gateway, the broker's connections). */
  onOwnerErased(listener: (ownerId: string, deviceIds: readonly string[]) => void): void {
    this.erasedListeners.push(listener);
  }

  private readonly createdListeners: ((ownerId: string, handle: string) => void)[] = [];

  /** Told after an owner was created here (webhooks waiting on the handle become theirs). */
  onOwnerCreated(listener: (ownerId: string, handle: string) => void): void {
    this.createdListeners.push(listener);
  }

  private brokerCredentials: BrokerCredentials | undefined;

  /**
   * An external broker that holds device credentials itself (Mosquitto's
   * dynamic security, MQTT_DEVICE_CREDENTIALS): every device token is given
   * to it before it is handed out, so a device can connect with what it was
   * given, and nothing is handed out that the broker did not take.
   */
  useBrokerCredentials(credentials: BrokerCredentials): void {
    this.brokerCredentials = credentials;
  }

  /** Told after a device was revoked (the broker disconnects it). */
  onDeviceRevoked(listener: (deviceId: string) => void): void {
    this.revokedListeners.push(listener);
  }

  async listDevices(ownerId: string) {
    return (await this.repository.listDevices(ownerId)).map((d) => ({
      id: d.id,
      class: d.deviceClass,
      name: d.name,
      createdAt: d.createdAt.toISOString(),
      revokedAt: d.revokedAt === null ? null : d.revokedAt.toISOString(),
    }));
  }

  /**
   * A lost phone: the device's tokens stop working at once (the directory
   * says it is revoked, which every token check consults), its open broker
   * connection is closed, and its events are refused from now on. Its past
   * signals stay until they age out (SIGNAL_RETENTION_HOURS), like any silent device's.
   */
  async revokeDevice(deviceId: string, ownerId?: string): Promise<void> {
    const owner = ownerId ?? this.directory.device(deviceId)?.ownerId;
    const revoke = this.repository.revokeDevice(deviceId, ownerId);
    const revoked = await (owner === undefined ? revoke : this.tracked(owner, 'owner', revoke));
    if (!revoked) throw new AppError('not_found', 'No such device.');
    this.directory.putDevice({ id: revoked.id, ownerId: revoked.ownerId, deviceClass: revoked.deviceClass, revoked: true });
    this.deviceRevoked(revoked.id);
  }

  /** Tells the listeners (also when another process revoked it). */
  deviceRevoked(deviceId: string): void {
    for (const listener of this.revokedListeners) listener(deviceId);
  }

  /**
   * Refuses every token of the owner or watcher issued up to now, the
   * caller's own included ("sign out everywhere": a lost phone, a leaked app
   * token; tokens are not stored, so one nobody can name is reached by its
   * time of issue). Open streams of the subject end. A token issued in the
   * same second is refused too (iat has whole seconds): a new one is good a
   * second later.
   */
  async revokeTokens(kind: 'owner' | 'watcher', subject: string): Promise<void> {
    // `subject` as issue() takes it: a watcher id, or an owner's id or handle.
    const id = kind === 'owner' ? (this.directory.owner(subject) ?? this.directory.ownerByHandle(subject))?.id : this.directory.activeWatcher(subject)?.id;
    const revoked = id === undefined ? undefined : await this.repository.revokeTokens(kind, id, new Date(this.clock()));
    if (id === undefined || !revoked) throw new AppError('not_found', kind === 'owner' ? 'No such owner.' : 'No such watcher.');
    this.directory.setTokenCutoff(id, revoked.at.getTime());
    // A watcher's webhooks registered with the revoked tokens were removed with them.
    for (const listener of this.webhooksRemovedListeners) listener(revoked.webhookIds);
  }

  /** Called with the ids of webhooks removed by a revocation (the dispatcher stops them). */
  onWebhooksRemoved(listener: (ids: readonly string[]) => void): void {
    this.webhooksRemovedListeners.push(listener);
  }

  /** A watcher revoked: their tokens stop working, they match no rule, and their streams end at once (on the other processes of a group when the control channel reloads the watcher). */
  async revokeWatcher(watcherId: string): Promise<void> {
    const watcher = this.directory.activeWatcher(watcherId);
    if (!(await this.repository.revokeWatcher(watcherId))) throw new AppError('not_found', 'No such watcher.');
    if (watcher) this.directory.putWatcher({ ...watcher, revoked: true });
  }

  /**
   * Everything the service holds about the owner, as records (the right of
   * access and to data portability): what storage holds, after the
   * write-behind has written what memory held, then the presence derived
   * now with the reasons behind it, then a trailer with the count, so that
   * a cut-off download is detectable.
   */
  async *exportOwner(ownerId: string): AsyncGenerator<Record<string, unknown>> {
    const owner = this.directory.owner(ownerId);
    if (!owner) throw new AppError('not_found', 'No such owner.');
    await this.flushWrites();
    yield { type: 'export', format: 'presence-export/1', ownerId, exportedAt: new Date(this.clock()).toISOString() };
    let records = 1;
    for await (const record of this.repository.ownerData(ownerId)) {
      records += 1;
      yield record;
    }
    yield { type: 'presence', ...this.ownerView(ownerId, owner.handle) };
    yield { type: 'end', records: records + 2 };
  }

  /**
   * The right to erasure: the owner and everything that references them go
   * in one committed delete (storage cascades), then every trace in memory.
   * What the write-behind still held for them is never written (its writes
   * skip owners that no longer exist). Serialized with the owner's other
   * changes, so nothing the owner started is stored after it.
   */
  eraseOwner(ownerId: string): Promise<void> {
    return this.ownerChange(ownerId, async () => {
      const deviceIds = this.directory.devicesOf(ownerId).map((d) => d.id);
      if (!(await this.repository.eraseOwner(ownerId))) throw new AppError('not_found', 'No such owner.');
      this.forgetOwner(ownerId, deviceIds);
    });
  }

  /** Drops the owner from memory (erased here, or found gone when reloading a change made elsewhere). */
  forgetOwner(ownerId: string, deviceIds: readonly string[] = this.directory.devicesOf(ownerId).map((d) => d.id)): void {
    this.directory.removeOwner(ownerId);
    this.accessRequests.forgetOwner(ownerId);
    // The erasure's listeners first: they stop what sends the owner's
    // presence out (webhooks, the SIP publication). Forgetting the state and
    // the rules tells every watcher of them, and a publisher still watching
    // would send the view of an owner who no longer exists (offline) after
    // the erasure. Streams are told, find no owner, and end.
    for (const listener of this.erasedListeners) listener(ownerId, deviceIds);
    this.hub.forget(ownerId);
    this.ruleBook.remove(ownerId);
    this.watchArrivals(ownerId); // no rules left: stops watching
  }

  entityOf(handle: string): string {
    return presentityUri(handle, this.presenceDomain);
  }

  async createOwner(handle: string, displayName: string | undefined) {
    const id = crypto.randomUUID();
    if (!(await this.repository.insertOwner({ id, handle, displayName }))) {
      throw new AppError('conflict', `The handle ${handle} is taken.`);
    }
    this.directory.putOwner({ id, handle });
    for (const listener of this.createdListeners) listener(id, handle);
    return { id, handle, entity: this.entityOf(handle) };
  }

  async registerDevice(ownerHandle: string, deviceClass: string, name: string | undefined) {
    const owner = this.ownerByHandle(ownerHandle);
    const id = crypto.randomUUID();
    await this.tracked(owner.id, 'owner', this.repository.insertDevice({ id, ownerId: owner.id, deviceClass, name }));
    this.directory.putDevice({ id, ownerId: owner.id, deviceClass, revoked: false });
    return { id, ownerId: owner.id, owner: owner.handle, class: deviceClass };
  }

  async registerWatcher(kind: 'person' | 'app', name: string, domain: string | undefined) {
    const id = crypto.randomUUID();
    await this.repository.insertWatcher({ id, kind, name, domain });
    this.directory.putWatcher({ id, kind, name, domain, revoked: false });
    return { id, kind, name, ...(domain === undefined ? {} : { domain }) };
  }

  /** `subject`: a device id, a watcher id, or an owner's id or handle. */
  async issue(kind: 'device' | 'watcher' | 'owner', subject: string, ttlSeconds: number | undefined, scopes: readonly Scope[] | undefined) {
    let tokenSubject = subject;
    let owner: string | undefined;
    if (kind === 'device') {
      const device = this.directory.activeDevice(subject);
      if (!device) throw new AppError('not_found', 'No such device.');
      owner = device.ownerId;
    } else if (kind === 'watcher') {
      if (!this.directory.activeWatcher(subject)) throw new AppError('not_found', 'No such watcher.');
    } else {
      const record = this.directory.owner(subject) ?? this.directory.ownerByHandle(subject);
      if (!record) throw new AppError('not_found', 'No such owner.');
      tokenSubject = record.id;
    }
    const allowed = DEFAULT_SCOPES[kind];
    const granted = scopes ?? allowed;
    const excess = granted.filter((s) => !allowed.includes(s));
    if (excess.length > 0) throw new AppError('invalid_request', `A ${kind} token cannot carry ${excess.join(', ')}.`);
    const issued = await issueToken(
      this.signingKey,
      this.issuer,
      { kind: kind satisfies TokenKind, subject: tokenSubject, owner, scopes: granted, ttlSeconds: ttlSeconds ?? DEFAULT_TTL_SECONDS[kind] },
      this.clock(),
    );
    if (kind === 'device' && this.brokerCredentials) {
      try {
        await this.brokerCredentials.provision(tokenSubject, issued.token, issued.expiresAt);
      } catch (error) {
        // The token is not handed out. The database down (the expiry is
        // recorded after the broker took the password): answered as any
        // write then; otherwise the broker did not take it (the provisioner
        // logs why). Either way a retry provisions again.
        if (isDatabaseUnavailable(error)) throw error;
        throw new AppError('unavailable', 'The broker did not take the device credentials; try again shortly.');
      }
      // Revoked or erased while the broker was being told: what was just
      // provisioned goes again (queued after it), and no token is handed out.
      if (!this.directory.activeDevice(tokenSubject)) {
        await this.brokerCredentials.withdraw(tokenSubject).catch(() => undefined);
        throw new AppError('not_found', 'No such device.');
      }
    }
    return { kind, subject: tokenSubject, token: issued.token, expiresAt: new Date(issued.expiresAt).toISOString(), scopes: [...granted] };
  }

  listRules(ownerId: string): readonly Rule[] {
    return this.ruleBook.rules(ownerId);
  }

  /**
   * A rule must name only what exists: active watchers and the owner's own
   * groups and zones. A typo would otherwise grant nothing, silently.
   */
  private checkRule(ownerId: string, body: RuleBody, groups: readonly Group[] = this.ruleBook.groups(ownerId)): void {
    const problems: string[] = [];
    const identity = body.conditions.identity;
    for (const w of [...identity.watchers, ...identity.except.watchers]) if (!this.directory.activeWatcher(w)) problems.push(`unknown watcher ${w}`);
    for (const g of identity.groups) if (!groups.some((group) => group.id === g)) problems.push(`unknown group ${g}`);
    const zone = body.conditions.untilArrivalAt;
    if (zone !== undefined && !this.directory.settings(ownerId).zones.some((z) => z.name === zone)) problems.push(`unknown zone ${zone}`);
    if (problems.length > 0) throw new AppError('invalid_request', 'The rule names what does not exist.', problems);
  }

  /** Consent changes for one owner happen one at a time (the same queue as publications), so no two interleave. */
  addRule(ownerId: string, body: RuleBody): Promise<Rule> {
    return this.ownerChange(ownerId, () => this.addRuleNow(ownerId, body));
  }

  private async addRuleNow(ownerId: string, body: RuleBody): Promise<Rule> {
    this.checkRule(ownerId, body);
    const rule = ruleSchema.parse({ ...body, id: crypto.randomUUID() });
    await this.repository.insertRule({ id: rule.id, ownerId, body });
    this.ruleBook.replace(ownerId, [...this.ruleBook.rules(ownerId), rule]);
    this.watchArrivals(ownerId);
    return rule;
  }

  /** Replaces a rule's body; narrowing takes effect on the next read and on open streams at once. */
  updateRule(ownerId: string, ruleId: string, body: RuleBody): Promise<Rule> {
    return this.ownerChange(ownerId, () => this.updateRuleNow(ownerId, ruleId, body));
  }

  private async updateRuleNow(ownerId: string, ruleId: string, body: RuleBody): Promise<Rule> {
    this.checkRule(ownerId, body);
    if (!(await this.repository.updateRule(ownerId, ruleId, body))) throw new AppError('not_found', 'No such rule.');
    const rule = ruleSchema.parse({ ...body, id: ruleId });
    this.ruleBook.replace(
      ownerId,
      this.ruleBook.rules(ownerId).map((r) => (r.id === ruleId ? rule : r)),
    );
    this.watchArrivals(ownerId);
    return rule;
  }

  deleteRule(ownerId: string, ruleId: string): Promise<void> {
    return this.ownerChange(ownerId, async () => {
      // Memory forgets exactly the row the database deleted, by its stored id.
      const deleted = await this.repository.deleteRule(ownerId, ruleId);
      if (!deleted) throw new AppError('not_found', 'No such rule.');
      this.ruleBook.replace(
        ownerId,
        this.ruleBook.rules(ownerId).filter((r) => r.id !== deleted),
      );
      this.watchArrivals(ownerId);
    });
  }

  /**
   * Replaces all of the owner's rules at once (pres-rules import): every
   * rule is checked before anything is stored, and the set is swapped in one
   * transaction, so a refused document changes nothing.
   */
  replaceRules(ownerId: string, imported: readonly { id?: string | undefined; body: RuleBody; arrivedAt?: string | undefined }[]): Promise<readonly Rule[]> {
    return this.ownerChange(ownerId, () => this.replaceRulesNow(ownerId, imported));
  }

  private async replaceRulesNow(ownerId: string, imported: readonly { id?: string | undefined; body: RuleBody; arrivedAt?: string | undefined }[]): Promise<readonly Rule[]> {
    const problems: string[] = [];
    imported.forEach((item, index) => {
      try {
        this.checkRule(ownerId, item.body);
      } catch (error) {
        if (error instanceof AppError) problems.push(...(error.details ?? []).map((d) => `rule ${item.id ?? index + 1}: ${d}`));
        else throw error;
      }
    });
    if (problems.length > 0) throw new AppError('invalid_document', 'The rules name what does not exist; nothing was changed.', problems);
    // A spent "until I arrive" rule stays spent when the set is written back
    // without its arrival (a client that drops the field must not revive it).
    const current = new Map(this.ruleBook.rules(ownerId).map((r) => [r.id, r]));
    const rules = imported.map((item) => {
      const previous = item.id === undefined ? undefined : current.get(item.id);
      const arrivedAt = item.arrivedAt ?? (previous?.arrivedAt !== undefined && previous.conditions.untilArrivalAt === item.body.conditions.untilArrivalAt ? previous.arrivedAt : undefined);
      return ruleSchema.parse({ ...item.body, id: item.id ?? crypto.randomUUID(), ...(arrivedAt ? { arrivedAt } : {}) });
    });
    if (new Set(rules.map((r) => r.id)).size !== rules.length) throw new AppError('invalid_document', 'Rule ids must be unique; nothing was changed.');
    try {
      await this.repository.replaceRules(
        ownerId,
        rules.map(({ id, arrivedAt, ...body }) => ({ id, body, arrivedAt: arrivedAt ? new Date(arrivedAt) : null })),
      );
    } catch (error) {
      // Another owner's rule id: refused like any other bad id (nothing changed: one transaction).
      if ((error as { code?: unknown; cause?: { code?: unknown } }).code === '23505' || (error as { cause?: { code?: unknown } }).cause?.code === '23505') {
        throw new AppError('invalid_document', 'A rule id is already in use; leave ids out to have new ones assigned. Nothing was changed.');
      }
      throw error;
    }
    this.ruleBook.replace(ownerId, rules);
    this.watchArrivals(ownerId);
    return rules;
  }

  // --- groups ---------------------------------------------------------------

  listGroups(ownerId: string): readonly Group[] {
    return this.ruleBook.groups(ownerId);
  }

  private checkMembers(members: readonly string[]): void {
    const unknown = members.filter((m) => !this.directory.activeWatcher(m));
    if (unknown.length > 0) throw new AppError('invalid_request', 'The group names unknown watchers.', unknown);
  }

  addGroup(ownerId: string, body: GroupBody): Promise<Group> {
    return this.ownerChange(ownerId, async () => {
      this.checkMembers(body.members);
      const group: Group = { id: crypto.randomUUID(), name: body.name, members: [...new Set(body.members)] };
      await this.repository.insertGroup({ ...group, ownerId });
      this.ruleBook.replaceGroups(ownerId, [...this.ruleBook.groups(ownerId), group]);
      return group;
    });
  }

  updateGroup(ownerId: string, groupId: string, body: GroupBody): Promise<Group> {
    return this.ownerChange(ownerId, async () => {
      this.checkMembers(body.members);
      const group: Group = { id: groupId, name: body.name, members: [...new Set(body.members)] };
      if (!(await this.repository.updateGroup(ownerId, groupId, group))) throw new AppError('not_found', 'No such group.');
      this.ruleBook.replaceGroups(
        ownerId,
        this.ruleBook.groups(ownerId).map((g) => (g.id === groupId ? group : g)),
      );
      return group;
    });
  }

  /** A group named by a rule cannot go: the rule would silently stop matching. */
  deleteGroup(ownerId: string, groupId: string): Promise<void> {
    return this.ownerChange(ownerId, async () => {
      const users = this.ruleBook.rules(ownerId).filter((r) => r.conditions.identity.groups.includes(groupId));
      if (users.length > 0) throw new AppError('conflict', 'Rules name this group; change them first.', users.map((r) => r.id));
      if (!(await this.repository.deleteGroup(ownerId, groupId))) throw new AppError('not_found', 'No such group.');
      this.ruleBook.replaceGroups(
        ownerId,
        this.ruleBook.groups(ownerId).filter((g) => g.id !== groupId),
      );
    });
  }

  // --- "share until I arrive" ----------------------------------------------

  private readonly arrivalWatches = new Map<string, (() => void) & { check: () => void }>();

  /**
   * While an owner has an unspent "until I arrive" rule, their presence is
   * watched; on arrival the rule is marked spent (stored, then in memory), so
   * it holds no more even after the owner leaves again. Until the mark is
   * stored the engine already refuses the rule while the owner is there.
   */
  watchArrivals(ownerId: string): void {
    const pending = () => this.ruleBook.rules(ownerId).filter((r) => r.conditions.untilArrivalAt !== undefined && r.arrivedAt === undefined);
    if (pending().length === 0) {
      this.arrivalWatches.get(ownerId)?.();
      this.arrivalWatches.delete(ownerId);
      return;
    }
    let watch = this.arrivalWatches.get(ownerId);
    if (!watch) {
      let marking = false;
      const check = () => {
        if (marking) return;
        const zone = this.hub.current(ownerId, this.clock()).place?.zone;
        if (!pending().some((r) => r.conditions.untilArrivalAt === zone)) return;
        marking = true;
        // With the other consent changes, so an edit of the rule cannot interleave with its marking.
        this.ownerChange(ownerId, async () => {
          const arrived = pending().filter((r) => r.conditions.untilArrivalAt === zone);
          const at = new Date(this.clock());
          for (const rule of arrived) await this.repository.markRuleArrived(ownerId, rule.id, at);
          const ids = new Set(arrived.map((r) => r.id));
          this.ruleBook.replace(
            ownerId,
            this.ruleBook.rules(ownerId).map((r) => (ids.has(r.id) ? { ...r, arrivedAt: at.toISOString() } : r)),
          );
        })
          .then(
            () => {
              marking = false;
              this.watchArrivals(ownerId);
            },
            (error: unknown) => {
              marking = false;
              this.onBackgroundError(error);
              // Not stored: try again soon (the engine refuses the rule meanwhile only while the owner is there).
              setTimeout(check, 5000).unref();
            },
          );
      };
      watch = Object.assign(this.hub.watch(ownerId, check), { check });
      this.arrivalWatches.set(ownerId, watch);
    }
    // A rule added while the owner is already there is spent at once.
    watch.check();
  }

  // --- access requests and watcher information (RFC 3857) -------------------

  /**
   * A watcher asks to see an owner. A block rule (RFC 5025 §3.2.1 `block`)
   * refuses the request itself; an allow rule makes it active at once;
   * anything else (no rule, confirm, polite-block, a request the owner
   * denied, an unknown owner) leaves it pending, and the watcher cannot
   * tell these apart. Answered from memory, the same way for every handle:
   * the row is written behind (core/access-requests.ts), so neither the
   * status nor the time taken tells an unknown owner from one who has not
   * answered.
   */
  requestAccess(handle: string, watcherId: string, message: string | undefined): { status: 'pending' | 'active' } {
    // Checked before the owner is looked up: a full buffer refuses every handle alike.
    if (this.accessRequests.full) throw new AppError('unavailable', 'Too many access requests wait to be stored; try again shortly.');
    const owner = this.directory.ownerByHandle(handle);
    // An unknown owner looks like one who has not answered yet.
    if (!owner) return { status: 'pending' };
    const decision = this.identityDecision(owner.id, watcherId);
    if (decision === 'block') throw new AppError('request_refused');
    const intent = decision === 'allow' ? 'allowed' : 'ask';
    this.accessRequests.submit({ ownerId: owner.id, watcherId, intent, message, at: this.clock() });
    return { status: intent === 'allowed' ? 'active' : 'pending' };
  }

  /**
   * The strongest sub-handling among the rules naming this watcher by
   * identity, whatever their time or place conditions: whether the owner
   * lets them in at all, not what they see right now.
   */
  private identityDecision(ownerId: string, watcherId: string): SubHandling | 'none' {
    const watcher = { id: watcherId, domain: this.directory.activeWatcher(watcherId)?.domain };
    const policy = this.ruleBook.policy(ownerId);
    let best: SubHandling | 'none' = 'none';
    for (const rule of policy.rules) if (identityMatches(rule.conditions.identity, watcher, policy.groups)) best = strongerSubHandling(best, rule.actions.subHandling);
    return best;
  }

  /**
   * RFC 3857 watcher information for the owner: every watcher who asked,
   * plus every watcher a rule names. Status follows the rules now in force:
   * active while a rule allows them (event approved), terminated when the
   * owner denied (rejected), blocked them (rejected) or removed the rule that
   * allowed them (deactivated), pending otherwise (subscribe).
   */
  async watcherInfo(ownerId: string): Promise<WatcherInfo[]> {
    // What was answered is what the owner sees: the requests written behind first.
    await this.accessRequests.flush();
    const requests = await this.repository.accessRequests(ownerId);
    const byWatcher = new Map(requests.map((r) => [r.watcherId, r]));
    const named = new Set(this.ruleBook.rules(ownerId).flatMap((r) => [...r.conditions.identity.watchers]));
    for (const g of this.ruleBook.groups(ownerId)) for (const m of g.members) named.add(m);
    const ids = [...byWatcher.keys(), ...[...named].filter((id) => !byWatcher.has(id)).sort()];
    const out: WatcherInfo[] = [];
    for (const watcherId of ids) {
      const watcher = this.directory.activeWatcher(watcherId);
      if (!watcher) continue;
      const request = byWatcher.get(watcherId);
      const decision = this.identityDecision(ownerId, watcherId);
      let status: WatcherInfo['status'];
      let event: WatcherInfo['event'];
      if (decision === 'allow') [status, event] = ['active', 'approved'];
      else if (decision === 'block' || decision === 'polite-block') [status, event] = ['terminated', 'rejected'];
      else if (request?.status === 'terminated') [status, event] = ['terminated', request.event === 'deactivated' ? 'deactivated' : 'rejected'];
      else if (request?.status === 'active') [status, event] = ['terminated', 'deactivated'];
      else if (request) [status, event] = ['pending', 'subscribe'];
      else continue; // named by a rule that shows nothing, never asked: nothing to report
      out.push({
        watcherId,
        name: watcher.name,
        kind: watcher.kind,
        domain: watcher.domain ?? null,
        status,
        event,
        message: request?.message ?? null,
        requestedAt: request ? request.createdAt.toISOString() : null,
        updatedAt: request ? request.updatedAt.toISOString() : null,
      });
    }
    return out;
  }

  /** Approves a request with a rule for this watcher (by default: availability only). */
  async approve(ownerId: string, watcherId: string, transformations: Transformations): Promise<Rule> {
    // A request answered before the approval is stored before it, not over it.
    await this.accessRequests.flush();
    const request = await this.repository.accessRequest(ownerId, watcherId);
    if (!request) throw new AppError('not_found', 'No request from this watcher.');
    return this.ownerChange(ownerId, async () => {
      // An approval adds one rule: a second one (a double click, a retry after success) is refused.
      if (this.identityDecision(ownerId, watcherId) === 'allow') throw new AppError('conflict', 'A rule already allows this watcher; change that rule instead.');
      // The request is marked first: should adding the rule then fail, a retry adds it.
      await this.repository.putAccessRequest({ ownerId, watcherId, status: 'active', event: 'approved', at: this.clock() });
      return this.addRuleNow(ownerId, ruleBodySchema.parse({ conditions: { identity: { watchers: [watcherId] } }, actions: { subHandling: 'allow' }, transformations }));
    });
  }

  /** Denies a request: it stays "pending" to the watcher (who must not learn of the refusal). */
  async deny(ownerId: string, watcherId: string): Promise<void> {
    await this.accessRequests.flush();
    const request = await this.repository.accessRequest(ownerId, watcherId);
    if (!request) throw new AppError('not_found', 'No request from this watcher.');
    if (this.identityDecision(ownerId, watcherId) === 'allow') throw new AppError('conflict', 'A rule allows this watcher; remove or narrow it instead.');
    await this.repository.putAccessRequest({ ownerId, watcherId, status: 'terminated', event: 'rejected', at: this.clock() });
  }

  ownerById(id: string) {
    const owner = this.directory.owner(id);
    if (!owner) throw new AppError('not_found', 'No such owner.');
    return owner;
  }

  ownerByHandle(handle: string) {
    const owner = this.directory.ownerByHandle(handle);
    if (!owner) throw new AppError('not_found', 'No such owner.');
    return owner;
  }
}
