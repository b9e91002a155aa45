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
 *
 * Owners at rest hold less (issue 6: memory per owner). An owner nobody
 * read, watched or changed between two sweeps (restIdle, every 15 s in
 * bin/service.ts) has its signals packed (core/packed-signals.ts) and its
 * derived state dropped: nobody holds that state, and it is derived again,
 * from the same signals and to an equal state, when a read asks for it or a
 * watcher starts (equal but for one thing: an event dated ahead of `now` by
 * a device clock that runs fast counts as seen "now" until its time comes,
 * so a state derived later shows a later lastSeen, the fresher of the two).
 * Changes to such an owner are merged without deriving (nobody is there to
 * tell); an owner someone watches always keeps its state, so every change
 * it sees is compared and notified as before.
 */
/**
 * The hub's entry for an owner is the owner's signal set itself, extended
 * with the hub's fields: one object per owner rather than two (measured in
 * heap snapshots of bench/memory.ts: 32 bytes less per owner, an object
 * header and the pointer to it).
 */
class OwnerPresence extends SignalSet {
  /** Undefined while the owner is at rest and unwatched. */
  derived: Derived | undefined;
  /** Bumped on every signal change: orders persisted snapshots. */
  version: number;
  constructor(version: number, derived: Derived | undefined) {
    super();
    this.version = version;
    this.derived = derived;
  }

  /** The owner's signals: the entry itself. */
  get signals(): SignalSet {
    return this;
  }
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
  /** Owners read or changed since the sweeps last put them at rest: all restIdle() looks at. */
  private readonly active = new Set<string>();
  /**
   * Owners read or changed since the last sweep (restIdle leaves them as
   * they are): a set of the busy, not a flag in every owner's entry (issue
   * 6, memory per owner: 8 bytes each at rest).
   */
  private readonly seen = new Set<string>();
  private readonly watchers = new OwnerListeners<PresenceState>();

  constructor(
    private readonly settings: DeriveSettings,
    private readonly ownerSettings: (ownerId: string) => OwnerSettings = () => DEFAULT_OWNER_SETTINGS,
  ) {}

  /**
   * Owners whose overrides are being reloaded from storage (a scale-out
   * group's control channel), with the sources changed here since the
   * reload's query was sent: beginOverridesReload / finishOverridesReload.
   */
  private readonly reloading = new Map<string, Set<string>>();

  /** Sets (or replaces, by source) a manual status or an app session. */
  setOverride(ownerId: string, override: PresenceOverride, now: number): void {
    this.reloading.get(ownerId)?.add(override.source);
    // Expired overrides are dropped here, so the list stays bounded.
    const rest = (this.overrides.get(ownerId) ?? []).filter((o) => o.source !== override.source && o.expiresAt > now);
    // The baseline a watcher is told the change against is taken before it.
    const entry = this.entry(ownerId, now);
    this.overrides.set(ownerId, [...rest, override]);
    this.changed(ownerId, entry, now);
  }

  removeOverride(ownerId: string, source: string, now: number): void {
    this.reloading.get(ownerId)?.add(source);
    this.beforeChange(ownerId, now);
    this.overrides.set(
      ownerId,
      (this.overrides.get(ownerId) ?? []).filter((o) => o.source !== source),
    );
    this.refresh(ownerId, now);
  }

  /** Loads stored overrides at start (after restore()). */
  restoreOverrides(ownerId: string, overrides: readonly PresenceOverride[], now: number): void {
    const entry = this.entry(ownerId, now);
    this.overrides.set(ownerId, overrides);
    this.changed(ownerId, entry, now);
  }

  /**
   * Before a reload of the owner's overrides from storage is queried. What
   * the query returns may predate a change this process stores and applies
   * while it runs (a PUBLISH answered, then modified again at once): applied
   * as it is, the older snapshot would undo that change until the next
   * reload, and a publisher's next If-Match would get a 412 for a tag it
   * was just given. So the sources changed here in the meantime are noted.
   */
  beginOverridesReload(ownerId: string): void {
    this.reloading.set(ownerId, new Set());
  }

  /**
   * The stored overrides, except for the sources changed here since
   * beginOverridesReload: those keep what this process applied, which was
   * stored before it was applied and so is at least as new as the snapshot.
   * Without a begin (the start-up snapshot), the stored list as it is.
   */
  finishOverridesReload(ownerId: string, stored: readonly PresenceOverride[], now: number): void {
    const changedHere = this.reloading.get(ownerId);
    this.reloading.delete(ownerId);
    if (!changedHere || changedHere.size === 0) return this.restoreOverrides(ownerId, stored, now);
    const kept = this.overridesOf(ownerId).filter((o) => changedHere.has(o.source));
    this.restoreOverrides(ownerId, [...stored.filter((o) => !changedHere.has(o.source)), ...kept], now);
  }

  /** A reload that failed: nothing of it is applied. */
  abandonOverridesReload(ownerId: string): void {
    this.reloading.delete(ownerId);
  }

  overridesOf(ownerId: string): readonly PresenceOverride[] {
    return this.overrides.get(ownerId) ?? [];
  }

  /**
   * Takes the state a watcher will be told a coming change against: called
   * before what derivation reads from outside the hub changes (the owner's
   * settings), then refresh() after it.
   */
  beforeChange(ownerId: string, now: number): void {
    const entry = this.owners.get(ownerId);
    if (entry) this.watchedBaseline(ownerId, entry, now);
  }

  /** Re-derives now, after the owner's settings changed (see beforeChange). */
  refresh(ownerId: string, now: number): void {
    const entry = this.owners.get(ownerId);
    if (entry) this.changed(ownerId, entry, now);
  }

  /**
   * Merges one device's events, ingested here (to be persisted by this
   * process); returns true if the derived state changed (or, for an owner
   * nobody watches, may have: its state is derived when next read).
   */
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
    if (!signalsChanged) return false;
    entry.version += 1;
    if (persistHere) this.dirty.add(ownerId);
    return this.changed(ownerId, entry, now);
  }

  /** The owner's presence at `now`; OFFLINE_STATE for an owner never heard from. */
  current(ownerId: string, now: number): PresenceState {
    const entry = this.owners.get(ownerId);
    if (!entry) return OFFLINE_STATE;
    this.touch(ownerId);
    return this.held(ownerId, entry, now).state;
  }

  /** When the owner's current derivation (at `now`) stops holding (Infinity: only an event can change it). */
  validUntil(ownerId: string, now: number): number {
    const entry = this.owners.get(ownerId);
    if (!entry) return Infinity;
    this.touch(ownerId);
    return this.held(ownerId, entry, now).validUntil;
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
    this.active.delete(ownerId);
    this.seen.delete(ownerId);
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
        if (!entry) continue;
        this.watchedBaseline(ownerId, entry, at);
        if (!forgetSilentDevices(entry.signals, before)) continue;
        entry.version += 1;
        this.dirty.add(ownerId);
        this.touch(ownerId);
        this.changed(ownerId, entry, at);
        changed += 1;
      }
    }
    return changed;
  }

  /**
   * Puts owners at rest: those neither read nor changed since the previous
   * call have their signals packed (core/signal-store.ts SignalSet.pack)
   * and, unless someone watches them, their derived state dropped. Called
   * every few seconds (bin/service.ts), so an owner rests one to two
   * periods after it was last read or changed, and ingest and reads keep
   * working on objects for owners that are busy. Looks only at owners read
   * or changed since they last rested, in slices of `slice` with the event
   * loop free between them. Returns how many owners it put at rest.
   *
   * An owner that rests while watched keeps its state; if its watchers
   * leave, it keeps it until it is next read or changed and rests again.
   */
  async restIdle(slice = 5_000): Promise<number> {
    let rested = 0;
    const ids = [...this.active];
    for (let i = 0; i < ids.length; i += slice) {
      if (i > 0) await new Promise<void>((resolve) => setImmediate(resolve));
      for (const ownerId of ids.slice(i, i + slice)) {
        if (this.seen.delete(ownerId)) continue;
        const entry = this.owners.get(ownerId);
        this.active.delete(ownerId);
        if (!entry) continue;
        // Not packable (empty, or a time with sub-millisecond digits): stays as it is until it changes.
        entry.signals.pack();
        if (!this.watchers.has(ownerId)) entry.derived = undefined;
        rested += 1;
      }
    }
    return rested;
  }

  /** How many owners were read or changed lately (the others rest: packed, and without a derived state unless watched). */
  get activeCount(): number {
    return this.active.size;
  }

  /** Loads persisted signals at start (no change event, nothing dirty), at rest: packed, derived when first asked. */
  restore(ownerId: string, version: number, signals: readonly PersistedSignal[], now: number): void {
    const entry = new OwnerPresence(version, undefined);
    for (const s of signals) mergeSignal(entry, toSignal(s.deviceId, s.event));
    entry.pack();
    this.owners.set(ownerId, entry);
    this.active.delete(ownerId);
    this.seen.delete(ownerId);
    // Someone already watching (a restore over a live owner): hold a state for their
    // next change to be compared with (what the restore itself changed is not announced).
    if (this.watchers.has(ownerId)) this.held(ownerId, entry, now);
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

  /**
   * The owner's entry, made if new, marked as busy. A held state that
   * expired is brought up to date first, so that a change is compared with
   * (and watchers told of) what holds now.
   */
  private entry(ownerId: string, now: number): OwnerPresence {
    let entry = this.owners.get(ownerId);
    if (!entry) {
      entry = new OwnerPresence(0, { state: OFFLINE_STATE, validUntil: Infinity });
      this.owners.set(ownerId, entry);
    }
    this.touch(ownerId);
    // Only watchers need it now; for others held() brings it up to date when read.
    const derived = this.watchedBaseline(ownerId, entry, now);
    if (derived && now >= derived.validUntil) this.rederive(ownerId, entry, now);
    return entry;
  }

  /** Marks the owner as read or changed since the last sweep. */
  private touch(ownerId: string): void {
    if (this.seen.has(ownerId)) return;
    this.seen.add(ownerId);
    this.active.add(ownerId);
  }

  /** The owner's state at `now`: the held one (re-derived if it expired), or derived afresh for an owner at rest, and held. */
  private held(ownerId: string, entry: OwnerPresence, now: number): Derived {
    const derived = this.upToDate(ownerId, entry, now);
    if (!derived) return (entry.derived = this.derive(ownerId, entry.signals, now));
    if (now < derived.validUntil) return derived;
    this.rederive(ownerId, entry, now);
    return entry.derived as Derived;
  }

  /**
   * The held state, a stale one derived again first, its state object kept
   * if the presence is the same; undefined for an owner at rest. Nobody is
   * told: nobody watched when it went stale, and a watcher that came since
   * was given the state as it is when it asked.
   */
  private upToDate(ownerId: string, entry: OwnerPresence, now: number): Derived | undefined {
    const stale = entry.derived;
    if (stale?.validUntil !== STALE) return stale;
    const next = this.derive(ownerId, entry.signals, now);
    return (entry.derived = samePresence(next.state, stale.state) ? { state: stale.state, validUntil: next.validUntil } : next);
  }

  /**
   * What a change is compared with, for an owner someone watches: the held
   * state, brought up to date (without telling anyone) if a change while
   * nobody watched left it stale, or derived again for an owner at rest
   * (so the watcher is told of the change); undefined when nobody watches.
   */
  private watchedBaseline(ownerId: string, entry: OwnerPresence, now: number): Derived | undefined {
    if (!this.watchers.has(ownerId)) return undefined;
    return this.upToDate(ownerId, entry, now) ?? (entry.derived = this.derive(ownerId, entry.signals, now));
  }

  /**
   * After a change to what the owner's state is derived from (signals,
   * overrides, settings), its baseline taken before it: watchers are told,
   * and the result says whether the state changed. A state held for nobody
   * is marked stale instead, derived when next read, not on every message
   * (an owner's devices may report many times between two reads:
   * bench/ingest.ts, alternated, 10.1-10.8 -> 7.7-7.9 µs of CPU per
   * message at QoS 0); the result is then true (it may have changed).
   */
  private changed(ownerId: string, entry: OwnerPresence, now: number): boolean {
    if (this.watchedBaseline(ownerId, entry, now)) return this.rederive(ownerId, entry, now);
    markStale(entry);
    return true;
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

  /** Derives again and tells watchers if the state changed; the entry must hold a state (entry(), held(), watchedBaseline()). */
  private rederive(ownerId: string, entry: OwnerPresence, now: number): boolean {
    const next = this.derive(ownerId, entry.signals, now);
    const previous = entry.derived;
    if (previous && samePresence(next.state, previous.state)) {
      const sooner = next.validUntil < previous.validUntil;
      entry.derived = { state: previous.state, validUntil: next.validUntil };
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

/** The validUntil of a held state that a change made out of date. */
const STALE = -Infinity;

/**
 * Marks a held state out of date without deriving it: held() derives it
 * again when next read, and keeps the same state object if the presence
 * is the same (views and renderings memoized on it stay valid).
 */
function markStale(entry: OwnerPresence): void {
  const derived = entry.derived;
  if (derived && derived.validUntil !== STALE) entry.derived = { state: derived.state, validUntil: STALE };
}

function persisted(signal: Signal): PersistedSignal {
  return { deviceId: signal.deviceId, event: signal.event };
}
