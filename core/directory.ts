import { OwnerListeners } from './owner-listeners.js';
import { DEFAULT_OWNER_SETTINGS, type OwnerSettings } from './owner-settings.js';

/**
 * The in-memory directory of owners (and their settings), devices and watchers:
 * what the hot paths (MQTT ingest, presence reads) consult without touching
 * the database. Loaded at start; changed only after the database commit that
 * makes a change durable, so memory never holds what storage does not.
 */
export interface OwnerRecord {
  readonly id: string;
  readonly handle: string;
}

export interface DeviceRecord {
  readonly id: string;
  readonly ownerId: string;
  readonly deviceClass: string;
  readonly revoked: boolean;
}

export interface WatcherRecord {
  readonly id: string;
  readonly kind: 'person' | 'app';
  readonly name: string;
  /** RFC 4745 §7.1.3 domain, lower case; undefined matches no domain rule. */
  readonly domain: string | undefined;
  readonly revoked: boolean;
}

const DEFAULT_SETTINGS_JSON = JSON.stringify(DEFAULT_OWNER_SETTINGS);

/**
 * A device record as handed out: made when asked, from the directory's
 * arrays (Directory's device slots); whether it is revoked is its class.
 */
class ActiveDevice implements DeviceRecord {
  constructor(
    readonly id: string,
    readonly ownerId: string,
    readonly deviceClass: string,
  ) {}

  get revoked(): boolean {
    return false;
  }
}

class RevokedDevice implements DeviceRecord {
  constructor(
    readonly id: string,
    readonly ownerId: string,
    readonly deviceClass: string,
  ) {}

  get revoked(): boolean {
    return true;
  }
}

/** Device classes come from a small vocabulary (phone, watch, desk-sensor...): one string each, up to a bound. */
const classes = new Map<string, string>();
function internClass(deviceClass: string): string {
  const known = classes.get(deviceClass);
  if (known !== undefined) return known;
  if (classes.size < 1024) classes.set(deviceClass, deviceClass);
  return deviceClass;
}

export class Directory {
  private readonly settingsByOwner = new Map<string, OwnerSettings>();
  /**
   * Owners as two maps of strings, id -> handle and handle -> id, and no
   * record object held per owner (issue 6, memory per owner: 40 bytes each);
   * owner() and ownerByHandle() make the record when asked. The id held as
   * the second map's value is the directory's own copy (ownerId()).
   */
  private readonly handlesById = new Map<string, string>();
  private readonly idsByHandle = new Map<string, string>();
  /**
   * Devices held in slots of three parallel arrays (id, owner id, class),
   * found by id through one map of slot numbers, and no object per device
   * (issue 6, memory per owner: an object of three fields is 48 bytes on
   * Node 20, three array slots 24). The id in the slot is the directory's
   * own copy, the first one put: records handed out carry it, so ingest
   * and the hub hold that same string, not each their own. A slot freed by
   * an erasure holds '' and is reused.
   */
  private readonly deviceSlots = new Map<string, number>();
  private readonly deviceIds: string[] = [];
  private readonly deviceOwners: string[] = [];
  private readonly deviceClasses: string[] = [];
  /** Revoked devices' slots (few). */
  private readonly revokedSlots = new Set<number>();
  private readonly freeSlots: number[] = [];
  private readonly watchers = new Map<string, WatcherRecord>();
  /**
   * Owners and watchers whose tokens were revoked up to an instant (ms):
   * few, so kept apart rather than as a field of every record.
   */
  private readonly tokenCutoffs = new Map<string, number>();
  /** HTTP API tokens revoked one by one, by id (jti); replaced whole on every reload (few). */
  private revokedTokenIds: ReadonlySet<string> = new Set();
  /** Admin tokens revoked by subject up to an instant (ms); admin subjects are not accounts, so apart from tokenCutoffs. */
  private adminCutoffs: ReadonlyMap<string, number> = new Map();
  /** Long-lived connections (event streams) of a subject, told when its tokens or its watcher record change. */
  private readonly subjectListeners = new OwnerListeners<void>();
  /** The same, by the id of the token they were opened with (revocation by id). */
  private readonly tokenListeners = new OwnerListeners<void>();

  putOwner(owner: OwnerRecord): void {
    const before = this.handlesById.get(owner.id);
    // A changed handle: the old one no longer names the owner.
    if (before !== undefined && before !== owner.handle && this.idsByHandle.get(before) === owner.id) this.idsByHandle.delete(before);
    this.handlesById.set(owner.id, owner.handle);
    this.idsByHandle.set(owner.handle, owner.id);
  }

  /**
   * Most owners keep the defaults: those hold no settings object of their
   * own (measured: ~300 bytes per owner at start), and settings() hands out
   * the one frozen default object.
   */
  putSettings(ownerId: string, settings: OwnerSettings): void {
    if (settings === DEFAULT_OWNER_SETTINGS || JSON.stringify(settings) === DEFAULT_SETTINGS_JSON) this.settingsByOwner.delete(ownerId);
    else this.settingsByOwner.set(ownerId, settings);
  }

  /** The owner's settings, or the defaults. */
  settings(ownerId: string): OwnerSettings {
    return this.settingsByOwner.get(ownerId) ?? DEFAULT_OWNER_SETTINGS;
  }

  /**
   * The device's owner id and class are shared with the owner record and
   * other devices, not held once per device. A revocation is never undone
   * (storage only ever sets revoked_at), so a record read before the
   * device was revoked, and put after, leaves it revoked.
   */
  putDevice(device: DeviceRecord): void {
    let slot = this.deviceSlots.get(device.id);
    if (slot === undefined) {
      slot = this.freeSlots.pop() ?? this.deviceIds.length;
      this.deviceSlots.set(device.id, slot);
      this.deviceIds[slot] = device.id;
    }
    this.deviceOwners[slot] = this.ownerId(device.ownerId);
    this.deviceClasses[slot] = internClass(device.deviceClass);
    if (device.revoked) this.revokedSlots.add(slot);
  }

  /**
   * The directory's own copy of an owner id (the same string object), or the
   * id as given for an unknown owner. Structures loaded from other rows use
   * it, so a million owners' ids are held once each, not once per structure.
   */
  ownerId(id: string): string {
    const handle = this.handlesById.get(id);
    const held = handle === undefined ? undefined : this.idsByHandle.get(handle);
    // Equal text, and the directory's own string object: the one to share.
    return held === id ? held : id;
  }

  /** As with devices, a revoked watcher stays revoked whatever older record is put after. */
  putWatcher(watcher: WatcherRecord): void {
    const before = this.watchers.get(watcher.id);
    this.watchers.set(watcher.id, before?.revoked === true && !watcher.revoked ? { ...watcher, revoked: true } : watcher);
    if (watcher.revoked && before && !before.revoked) this.subjectListeners.notify(watcher.id, undefined);
  }

  /**
   * Tokens of this owner or watcher issued at or before `notBefore` (ms)
   * are refused. The instant only moves forward, as stored: a reload that
   * read the row before a revocation committed, and is applied after it,
   * cannot undo it (undefined, a row read before any revocation, changes
   * nothing). Its open streams are told, and end.
   */
  setTokenCutoff(subject: string, notBefore: number | undefined): void {
    const current = this.tokenCutoffs.get(subject);
    if (notBefore === undefined || (current !== undefined && current >= notBefore)) return;
    this.tokenCutoffs.set(subject, notBefore);
    this.subjectListeners.notify(subject, undefined);
  }

  /** Called when the subject's tokens are revoked or (a watcher) it is revoked: streams re-check their caller. */
  watchSubject(subject: string, listener: () => void): () => void {
    return this.subjectListeners.add(subject, listener);
  }

  /**
   * Whether a token of the subject issued at `issuedAt` (ms; undefined when
   * the token does not say) was revoked. A token that does not say when it
   * was issued counts as revoked once anything was.
   */
  tokenRevoked(subject: string, issuedAt: number | undefined): boolean {
    const cutoff = this.tokenCutoffs.get(subject);
    return cutoff !== undefined && (issuedAt === undefined || issuedAt <= cutoff);
  }

  /**
   * The revocations by token id and the admin cutoffs, as stored (each
   * reload reads both tables whole: they are small, and a revocation is
   * never undone, so the newest read is the truth). Streams opened with a
   * newly revoked token are told, and end.
   */
  setTokenRevocations(tokenIds: Iterable<string>, adminCutoffs: Iterable<readonly [string, number]>): void {
    const ids = new Set(tokenIds);
    const added = [...ids].filter((id) => !this.revokedTokenIds.has(id));
    this.revokedTokenIds = ids;
    this.adminCutoffs = new Map(adminCutoffs);
    // Only the streams opened with a newly revoked token are woken (the
    // hourly purge of expired rows notifies too, and adds none).
    for (const id of added) this.tokenListeners.notify(id, undefined);
  }

  /** Called when this one token is revoked by its id: the stream opened with it re-checks its caller. */
  watchToken(tokenId: string, listener: () => void): () => void {
    return this.tokenListeners.add(tokenId, listener);
  }

  /** Whether this one token (by its id) was revoked. */
  tokenIdRevoked(tokenId: string | undefined): boolean {
    return tokenId !== undefined && this.revokedTokenIds.size !== 0 && this.revokedTokenIds.has(tokenId);
  }

  /** Whether an admin token of the subject issued at `issuedAt` (ms) was revoked; one that does not say when counts as revoked once anything was. */
  adminTokenRevoked(subject: string, issuedAt: number | undefined): boolean {
    const cutoff = this.adminCutoffs.get(subject);
    return cutoff !== undefined && (issuedAt === undefined || issuedAt <= cutoff);
  }

  owner(id: string): OwnerRecord | undefined {
    const handle = this.handlesById.get(id);
    return handle === undefined ? undefined : { id, handle };
  }

  ownerIds(): string[] {
    return [...this.handlesById.keys()];
  }

  ownerByHandle(handle: string): OwnerRecord | undefined {
    const id = this.idsByHandle.get(handle);
    return id === undefined ? undefined : { id, handle };
  }

  /** Any registered device, revoked or not (a record made for the caller). */
  device(id: string): DeviceRecord | undefined {
    const slot = this.deviceSlots.get(id);
    return slot === undefined ? undefined : this.deviceAt(slot);
  }

  /** Only devices that may still publish. */
  activeDevice(id: string): DeviceRecord | undefined {
    const slot = this.deviceSlots.get(id);
    return slot === undefined || this.revokedSlots.has(slot) ? undefined : this.deviceAt(slot);
  }

  /** A registered device's class (revoked or not), with no record made: what watcher views look up per device. */
  deviceClass(id: string): string | undefined {
    const slot = this.deviceSlots.get(id);
    return slot === undefined ? undefined : this.deviceClasses[slot];
  }

  /** The owner's devices, revoked ones included. */
  devicesOf(ownerId: string): DeviceRecord[] {
    const out: DeviceRecord[] = [];
    for (const slot of this.deviceSlots.values()) if (this.deviceOwners[slot] === ownerId) out.push(this.deviceAt(slot));
    return out;
  }

  /** The record of the device in `slot`, made for the caller. */
  private deviceAt(slot: number): DeviceRecord {
    const made = this.revokedSlots.has(slot) ? RevokedDevice : ActiveDevice;
    return new made(this.deviceIds[slot] as string, this.deviceOwners[slot] as string, this.deviceClasses[slot] as string);
  }

  /**
   * Forgets the owner, their settings and their devices (the owner was
   * erased). Rare, so the devices are found by a scan rather than kept in
   * an index of their own.
   */
  removeOwner(ownerId: string): void {
    const handle = this.handlesById.get(ownerId);
    if (handle === undefined) return;
    this.handlesById.delete(ownerId);
    if (this.idsByHandle.get(handle) === ownerId) this.idsByHandle.delete(handle);
    this.settingsByOwner.delete(ownerId);
    this.tokenCutoffs.delete(ownerId);
    for (const [id, slot] of this.deviceSlots) {
      if (this.deviceOwners[slot] !== ownerId) continue;
      this.deviceSlots.delete(id);
      this.deviceIds[slot] = this.deviceOwners[slot] = this.deviceClasses[slot] = '';
      this.revokedSlots.delete(slot);
      this.freeSlots.push(slot);
    }
  }

  activeWatcher(id: string): WatcherRecord | undefined {
    const watcher = this.watchers.get(id);
    return watcher && !watcher.revoked ? watcher : undefined;
  }
}
