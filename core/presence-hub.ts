import { derivePresence, type Derived, type DeriveSettings } from './derive-presence.js';
import { NO_TRACE, OFFLINE_STATE, samePresence, sharedActivities, type PresenceState } from './presence.js';
import { forgetSilentDevices, mergeSignal, SignalSet, toSignal, type Signal } from './signal-store.js';
import type { SensorEvent } from './events.js';
import { OwnerListeners } from './owner-listeners.js';
import { applyOverrides, type PresenceOverride } from './presence-overrides.js';
import { DEFAULT_OWNER_SETTINGS, type OwnerSettings } from './owner-settings.js';

/**
 * The hot state: each owner's signals and the presence derived from them.
 * Ingest applies events here; reads ask for the current state, streams
 * watch one owner each;
 * the write-behind persister drains the set of owners whose signals changed.
 *
 * Derivation is re-run lazily: when signals change, or when a read comes at
 * or after the instant the last derivation said it stops holding (a meeting
 * ends, the owner goes silent). The state object is replaced only when it
 * really changes, so its identity is a cheap "did anything change" key.
 */
interface OwnerPresence {
  readonly signals: SignalSet;
  derived: Derived;
  /** Bumped on every signal change: orders persisted snapshots. */
  version: number;
}

export interface PersistedSignal {
  readonly deviceId: string;
  readonly event: SensorEvent;
}

export interface DirtyOwner {
  readonly ownerId: string;
  readonly version: number;
  readonly signals: readonly PersistedSignal[];
}

export class PresenceHub {
  private readonly owners = new Map<string, OwnerPresence>();
  private readonly overrides = new Map<string, readonly PresenceOverride[]>();
  private readonly dirty = new Set<string>();
  /** Owners whose signals are held unpacked (changed since the sweeps last packed them): what packIdle() looks at. */
  private readonly unpacked = new Set<string>();
  private readonly watchers = new OwnerListeners<PresenceState>();

  constructor(
    private readonly settings: DeriveSettings,
    private readonly ownerSettings: (ownerId: string) => OwnerSettings = () => DEFAULT_OWNER_SETTINGS,
  ) {}

  /** Sets (or replaces, by source) a manual status or an app session. */
  setOverride(ownerId: string, override: PresenceOverride, now: number): void {
    // Expired overrides are dropped here, so the list stays bounded.
    const rest = (this.overrides.get(ownerId) ?? []).filter((o) => o.source !== override.source && o.expiresAt > now);
    this.overrides.set(ownerId, [...rest, override]);
    this.rederive(ownerId, this.entry(ownerId, now), now);
  }

  removeOverride(ownerId: string, source: string, now: number): void {
    this.overrides.set(
      ownerId,
      (this.overrides.get(ownerId) ?? []).filter((o) => o.source !== source),
    );
    const entry = this.owners.get(ownerId);
    if (entry) this.rederive(ownerId, entry, now);
  }

  /** Loads stored overrides at start (after restore()). */
  restoreOverrides(ownerId: string, overrides: readonly PresenceOverride[], now: number): void {
    this.overrides.set(ownerId, overrides);
    this.rederive(ownerId, this.entry(ownerId, now), now);
  }

  overridesOf(ownerId: string): readonly PresenceOverride[] {
    return this.overrides.get(ownerId) ?? [];
  }

  /** Re-derives now, after the owner's settings changed. */
  refresh(ownerId: string, now: number): void {
    const entry = this.owners.get(ownerId);
    if (entry) this.rederive(ownerId, entry, now);
  }

  /** Merges one device's events, ingested here (to be persisted by this process); returns true if the derived state changed. */
  apply(ownerId: string, deviceId: string, events: readonly SensorEvent[], now: number): boolean {
    return this.mergeInto(ownerId, events.map((event) => toSignal(deviceId, event)), true, now);
  }

  /**
   * Merges signals another process ingested (over the broker) or stored (read
   * back by a write): the same join, so every process converges on the same
   * signals whichever saw what first; not marked for writing, as the process
   * that ingested them writes them.
   */
  merge(ownerId: string, signals: readonly PersistedSignal[], now: number): boolean {
    return this.mergeInto(ownerId, signals.map((s) => toSignal(s.deviceId, s.event)), false, now);
  }

  private mergeInto(ownerId: string, signals: readonly Signal[], persistHere: boolean, now: number): boolean {
    const entry = this.entry(ownerId, now);
    let signalsChanged = false;
    for (const signal of signals) signalsChanged = mergeSignal(entry.signals, signal) || signalsChanged;
    // Even a merge that changes nothing may have unpacked the set to look.
    this.unpacked.add(ownerId);
    if (!signalsChanged) return false;
    entry.version += 1;
    if (persistHere) this.dirty.add(ownerId);
    return this.rederive(ownerId, entry, now);
  }

  /** The owner's presence at `now`; OFFLINE_STATE for an owner never heard from. */
  current(ownerId: string, now: number): PresenceState {
    const entry = this.owners.get(ownerId);
    if (!entry) return OFFLINE_STATE;
    if (now >= entry.derived.validUntil) this.rederive(ownerId, entry, now);
    return entry.derived.state;
  }

  /** When the owner's current derivation stops holding (Infinity: only an event can change it). */
  validUntil(ownerId: string): number {
    return this.owners.get(ownerId)?.derived.validUntil ?? Infinity;
  }

  /**
   * Forgets everything about the owner (they were erased): signals, manual
   * status and publications, and any write still pending. Watchers are told
   * the owner is offline, which is what an unknown owner looks like.
   */
  forget(ownerId: string): void {
    this.owners.delete(ownerId);
    this.overrides.delete(ownerId);
    this.dirty.delete(ownerId);
    this.unpacked.delete(ownerId);
    this.watchers.notify(ownerId, OFFLINE_STATE);
  }

  /**
   * Forgets the signals of devices silent since before `before`, for every
   * owner (core/signal-store.ts forgetSilentDevices); owners who lost any
   * are written again (dirty), so storage forgets them too. Availability,
   * activities and every other field stay as they were (those devices
   * count for nothing already); only the forgotten devices leave the
   * owner's device list, which watchers are told like any change. In slices
   * of `slice` owners with the event loop free between them: a million
   * owners must not stall ingest and reads. Returns how many owners lost
   * signals.
   */
  async forgetSilent(before: number, now: () => number, slice = 2_000): Promise<number> {
    let changed = 0;
    const ids = [...this.owners.keys()];
    for (let i = 0; i < ids.length; i += slice) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      const at = now();
      for (const ownerId of ids.slice(i, i + slice)) {
        // Erased meanwhile, or replaced: whatever is there now.
        const entry = this.owners.get(ownerId);
        if (!entry || !forgetSilentDevices(entry.signals, before)) continue;
        entry.version += 1;
        this.dirty.add(ownerId);
        this.unpacked.add(ownerId);
        this.rederive(ownerId, entry, at);
        changed += 1;
      }
    }
    return changed;
  }

  /**
   * Packs the signals of owners whose signals did not change between two
   * calls (core/signal-store.ts SignalSet.pack): called every few seconds
   * (bin/service.ts), an owner is packed between one and two periods after
   * its last change, and ingest keeps working on objects for owners that
   * are still reporting. Looks only at unpacked owners, in slices of
   * `slice` with the event loop free between them. Returns how many owners
   * it packed.
   */
  async packIdle(slice = 5_000): Promise<number> {
    let packed = 0;
    const ids = [...this.unpacked];
    for (let i = 0; i < ids.length; i += slice) {
      if (i > 0) await new Promise<void>((resolve) => setImmediate(resolve));
      for (const ownerId of ids.slice(i, i + slice)) {
        const entry = this.owners.get(ownerId);
        const outcome = entry?.signals.pack() ?? 'unpackable';
        if (outcome === 'recent') continue;
        // Packed, gone, or not packable until it changes (which adds it again).
        this.unpacked.delete(ownerId);
        if (outcome === 'packed') packed += 1;
      }
    }
    return packed;
  }

  /** How many owners' signals are held unpacked (a metric: the rest are packed). */
  get unpackedCount(): number {
    return this.unpacked.size;
  }

  /** Loads persisted signals at start (no change event, nothing dirty), packed: they are at rest. */
  restore(ownerId: string, version: number, signals: readonly PersistedSignal[], now: number): void {
    const set: SignalSet = new SignalSet();
    for (const s of signals) mergeSignal(set, toSignal(s.deviceId, s.event));
    this.owners.set(ownerId, { signals: set, version, derived: this.derive(ownerId, set, now) });
    set.pack(true);
    // Packed, or not packable until it changes: no sweep needs to look.
    this.unpacked.delete(ownerId);
  }

  /** The owner's current signals (empty for an owner never heard from). */
  signalsOf(ownerId: string): PersistedSignal[] {
    const entry = this.owners.get(ownerId);
    return entry ? [...entry.signals.values()].map(persisted) : [];
  }

  /** Hands over the owners changed since the last call (coalesced). */
  takeDirty(): DirtyOwner[] {
    const out: DirtyOwner[] = [];
    for (const ownerId of this.dirty) {
      const entry = this.owners.get(ownerId);
      if (!entry) continue;
      out.push({ ownerId, version: entry.version, signals: [...entry.signals.values()].map(persisted) });
    }
    this.dirty.clear();
    return out;
  }

  /** Puts owners back after a failed write, unless they changed since. */
  markDirty(ownerIds: Iterable<string>): void {
    for (const id of ownerIds) this.dirty.add(id);
  }

  get dirtyCount(): number {
    return this.dirty.size;
  }

  get ownerCount(): number {
    return this.owners.size;
  }

  /** Listens to one owner only: a change costs its own watchers, not every open stream. */
  watch(ownerId: string, listener: (state: PresenceState) => void): () => void {
    return this.watchers.add(ownerId, listener);
  }

  private entry(ownerId: string, now: number): OwnerPresence {
    let entry = this.owners.get(ownerId);
    if (!entry) {
      entry = { signals: new SignalSet(), version: 0, derived: { state: OFFLINE_STATE, validUntil: Infinity } };
      this.owners.set(ownerId, entry);
    } else if (now >= entry.derived.validUntil) {
      this.rederive(ownerId, entry, now);
    }
    return entry;
  }

  /** With its trace: what derivePresence says, composed with the owner's manual status and publications. */
  private deriveExplained(ownerId: string, signals: SignalSet, now: number, explain = true): Derived {
    const derived = derivePresence(signals.values(), this.settings, now, this.ownerSettings(ownerId), explain);
    const overrides = this.overrides.get(ownerId);
    return overrides && overrides.length > 0 ? applyOverrides(derived, overrides, now) : derived;
  }

  /**
   * What is held per owner: the state without its trace (only the owner
   * ever asks why, and explain() works it out again then: measured, the
   * trace was about a quarter of an owner's memory), with its activity list
   * shared among owners.
   */
  private derive(ownerId: string, signals: SignalSet, now: number): Derived {
    const derived = this.deriveExplained(ownerId, signals, now, false);
    const { state, validUntil } = derived;
    // A manual status or a publication composed in adds a trace and a list of its own.
    if (state.trace === NO_TRACE && state.activities === sharedActivities(state.activities)) return derived;
    // Object.assign, not spread: on Node 20 an object spread in hot code gives
    // each result a hidden class of its own (measured: ~200 bytes per owner).
    return { state: Object.assign({}, state, { activities: sharedActivities(state.activities), trace: NO_TRACE }), validUntil };
  }

  /** The owner's presence at `now` with the trace of each field: for the owner's own eyes. */
  explain(ownerId: string, now: number): PresenceState {
    const entry = this.owners.get(ownerId);
    if (!entry) return OFFLINE_STATE;
    return this.deriveExplained(ownerId, entry.signals, now).state;
  }

  private rederive(ownerId: string, entry: OwnerPresence, now: number): boolean {
    const next = this.derive(ownerId, entry.signals, now);
    if (samePresence(next.state, entry.derived.state)) {
      const sooner = next.validUntil < entry.derived.validUntil;
      entry.derived = { state: entry.derived.state, validUntil: next.validUntil };
      // Nothing changed, but a change now comes sooner (a meeting was just
      // booked): watchers re-arm their timers.
      if (sooner) this.watchers.notify(ownerId, entry.derived.state);
      return false;
    }
    entry.derived = next;
    this.watchers.notify(ownerId, next.state);
    return true;
  }
}

function persisted(signal: Signal): PersistedSignal {
  return { deviceId: signal.deviceId, event: signal.event };
}
