import type { Directory } from '../core/directory.js';
import { AppError } from '../core/errors.js';
import { toStoredSettings, type OwnerSettings, type SettingsInput } from '../core/owner-settings.js';
import type { PresenceHub } from '../core/presence-hub.js';
import { MANUAL, MAX_SESSIONS, type OverrideInput, type PresenceOverride } from '../core/presence-overrides.js';
import { presentityUri } from '../core/identifiers.js';
import { issueToken, type Scope, type SigningKey, type TokenKind } from '../core/identity/tokens.js';
import type { Repository } from '../core/db/repository.js';
import { ruleSchema, type Rule, type RuleBody } from '../policy/rule.js';
import type { RuleBook } from '../policy/rule-book.js';

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
  owner: ['presence:read', 'presence:write', 'status:manage', 'consent:manage', 'settings:manage'],
};

/** Access-log page cursors: opaque to clients, `{at}|{id}` inside. */
function encodeCursor(at: Date, id: number): string {
  return Buffer.from(`${at.toISOString()}|${id}`).toString('base64url');
}

function decodeCursor(cursor: string): { at: Date; id: number } {
  const [at, id] = Buffer.from(cursor, 'base64url').toString('utf8').split('|');
  const date = new Date(at ?? '');
  const n = Number(id);
  if (Number.isNaN(date.getTime()) || !Number.isSafeInteger(n) || n < 0) throw new AppError('invalid_request', 'The cursor is not valid.');
  return { at: date, id: n };
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
    private readonly flushAccessLog: () => Promise<void>,
  ) {}

  /** Sets the owner's manual status or an app session (by source), stored first. */
  async setOverride(ownerId: string, source: string, input: OverrideInput): Promise<PresenceOverride> {
    const now = this.clock();
    const others = this.hub.overridesOf(ownerId).filter((o) => o.expiresAt > now && o.source !== source && o.source !== MANUAL);
    if (source !== MANUAL && others.length >= MAX_SESSIONS) throw new AppError('conflict', `At most ${MAX_SESSIONS} app sessions at once; end one first.`);
    const override: PresenceOverride = {
      source,
      availability: input.availability,
      activities: input.activities,
      expiresAt: now + input.expiresInSeconds * 1000,
    };
    await this.repository.upsertOverride(ownerId, override);
    this.hub.setOverride(ownerId, override, this.clock());
    return override;
  }

  async removeOverride(ownerId: string, source: string): Promise<void> {
    if (!(await this.repository.deleteOverride(ownerId, source))) throw new AppError('not_found', 'Nothing set.');
    this.hub.removeOverride(ownerId, source, this.clock());
  }

  /** Pending entries are written first, so a read right after an access finds it. */
  async accessLog(ownerId: string, cursor: string | undefined, limit: number) {
    await this.flushAccessLog();
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

  settingsOf(ownerId: string): OwnerSettings {
    return this.directory.settings(ownerId);
  }

  /** Stores the settings (Wi-Fi names digested), then re-derives the owner's presence with them. */
  async updateSettings(ownerId: string, input: SettingsInput): Promise<OwnerSettings> {
    const stored = toStoredSettings(input, (ssid) => this.digestNetworkName(ownerId, ssid));
    if (!stored.success) throw new AppError('invalid_request', 'The settings are not valid.', stored.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`));
    const settings = stored.data;
    await this.repository.updateOwnerSettings(ownerId, settings);
    this.directory.putSettings(ownerId, settings);
    this.hub.refresh(ownerId, this.clock());
    return settings;
  }

  /** Everything derived about the owner, with the trace: for the owner's own eyes. */
  ownerView(ownerId: string, handle: string) {
    const state = this.hub.current(ownerId, this.clock());
    return {
      entity: this.entityOf(handle),
      availability: state.availability,
      activities: [...state.activities],
      place: state.place ? { zone: state.place.zone, placeType: state.place.placeType ?? null, sphere: state.place.sphere ?? null } : null,
      userInput: state.userInput ? { state: state.userInput.state, lastInput: state.userInput.lastInput === undefined ? null : new Date(state.userInput.lastInput).toISOString() } : null,
      timeOffsetMinutes: state.timeOffsetMinutes ?? null,
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

  entityOf(handle: string): string {
    return presentityUri(handle, this.presenceDomain);
  }

  async createOwner(handle: string, displayName: string | undefined) {
    const id = crypto.randomUUID();
    if (!(await this.repository.insertOwner({ id, handle, displayName }))) {
      throw new AppError('conflict', `The handle ${handle} is taken.`);
    }
    this.directory.putOwner({ id, handle });
    return { id, handle, entity: this.entityOf(handle) };
  }

  async registerDevice(ownerHandle: string, deviceClass: string, name: string | undefined) {
    const owner = this.ownerByHandle(ownerHandle);
    const id = crypto.randomUUID();
    await this.repository.insertDevice({ id, ownerId: owner.id, deviceClass, name });
    this.directory.putDevice({ id, ownerId: owner.id, deviceClass, revoked: false });
    return { id, ownerId: owner.id, owner: owner.handle, class: deviceClass };
  }

  async registerWatcher(kind: 'person' | 'app', name: string) {
    const id = crypto.randomUUID();
    await this.repository.insertWatcher({ id, kind, name });
    this.directory.putWatcher({ id, kind, name, revoked: false });
    return { id, kind, name };
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
    return { kind, subject: tokenSubject, token: issued.token, expiresAt: new Date(issued.expiresAt).toISOString(), scopes: [...granted] };
  }

  listRules(ownerId: string): readonly Rule[] {
    return this.ruleBook.rules(ownerId);
  }

  async addRule(ownerId: string, body: RuleBody): Promise<Rule> {
    const unknown = body.conditions.identity.watchers.filter((w) => !this.directory.activeWatcher(w));
    if (unknown.length > 0) throw new AppError('invalid_request', 'The rule names unknown watchers.', unknown);
    const rule = ruleSchema.parse({ ...body, id: crypto.randomUUID() });
    await this.repository.insertRule({ id: rule.id, ownerId, body });
    this.ruleBook.replace(ownerId, [...this.ruleBook.rules(ownerId), rule]);
    return rule;
  }

  async deleteRule(ownerId: string, ruleId: string): Promise<void> {
    // Memory forgets exactly the row the database deleted, by its stored id.
    const deleted = await this.repository.deleteRule(ownerId, ruleId);
    if (!deleted) throw new AppError('not_found', 'No such rule.');
    this.ruleBook.replace(
      ownerId,
      this.ruleBook.rules(ownerId).filter((r) => r.id !== deleted),
    );
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
