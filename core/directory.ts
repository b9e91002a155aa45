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

export class Directory {
  private readonly settingsByOwner = new Map<string, OwnerSettings>();
  private readonly ownersById = new Map<string, OwnerRecord>();
  private readonly ownersByHandle = new Map<string, OwnerRecord>();
  private readonly devices = new Map<string, DeviceRecord>();
  private readonly watchers = new Map<string, WatcherRecord>();

  putOwner(owner: OwnerRecord): void {
    this.ownersById.set(owner.id, owner);
    this.ownersByHandle.set(owner.handle, owner);
  }

  putSettings(ownerId: string, settings: OwnerSettings): void {
    this.settingsByOwner.set(ownerId, settings);
  }

  /** The owner's settings, or the defaults. */
  settings(ownerId: string): OwnerSettings {
    return this.settingsByOwner.get(ownerId) ?? DEFAULT_OWNER_SETTINGS;
  }

  putDevice(device: DeviceRecord): void {
    this.devices.set(device.id, device);
  }

  putWatcher(watcher: WatcherRecord): void {
    this.watchers.set(watcher.id, watcher);
  }

  owner(id: string): OwnerRecord | undefined {
    return this.ownersById.get(id);
  }

  ownerIds(): string[] {
    return [...this.ownersById.keys()];
  }

  ownerByHandle(handle: string): OwnerRecord | undefined {
    return this.ownersByHandle.get(handle);
  }

  /** Any registered device, revoked or not. */
  device(id: string): DeviceRecord | undefined {
    return this.devices.get(id);
  }

  /** Only devices that may still publish. */
  activeDevice(id: string): DeviceRecord | undefined {
    const device = this.devices.get(id);
    return device && !device.revoked ? device : undefined;
  }

  activeWatcher(id: string): WatcherRecord | undefined {
    const watcher = this.watchers.get(id);
    return watcher && !watcher.revoked ? watcher : undefined;
  }
}
