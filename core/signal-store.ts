import { signalQualifier, type SensorEvent } from './events.js';
import { packSignals, unpackSignals } from './packed-signals.js';

/**
 * The latest value of each signal of one owner: one entry per (device, kind),
 * last-writer-wins by the event's own time. Ties on time are broken by the
 * value's canonical form, so merging is commutative, associative and
 * idempotent: duplicated, late and reordered events converge to one state
 * whichever order (or process) they arrive in.
 */
export interface Signal {
  readonly deviceId: string;
  readonly kind: SensorEvent['kind'];
  /** Event time, ms since the epoch, from the device clock. */
  readonly at: number;
  readonly event: SensorEvent;
  /** Canonical JSON of the event, the tie-breaker. */
  readonly canonical: string;
}

/** One signal per device and qualifier (see signalQualifier): a readable name, for traces. */
export function signalKey(signal: Signal): string {
  return `${signal.deviceId}/${signalQualifier(signal.event)}`;
}

/**
 * Whether two events update the same signal of a device: signalQualifier's
 * rule, without building its strings (the merge runs on every event).
 */
function sameQualifier(a: SensorEvent, b: SensorEvent): boolean {
  if (a.kind !== b.kind) return false;
  switch (a.kind) {
    case 'geofence':
      return a.zone === (b as typeof a).zone;
    case 'occupancy':
      return a.room === (b as typeof a).room;
    case 'ble-room':
      return a.id === (b as typeof a).id && a.room === (b as typeof a).room;
    case 'motion':
      return a.at === (b as typeof a).at;
    default:
      return true;
  }
}

/**
 * Three fields per signal; the kind is read from the event and the
 * canonical form, needed only to break a tie on time, is made when asked
 * (measured: a million owners' signals are the service's largest memory).
 */
class SignalRecord implements Signal {
  readonly at: number;

  constructor(
    readonly deviceId: string,
    readonly event: SensorEvent,
    at = Date.parse(event.at),
  ) {
    this.at = at;
  }

  get kind(): SensorEvent['kind'] {
    return this.event.kind;
  }

  get canonical(): string {
    return JSON.stringify(this.event);
  }
}

export function toSignal(deviceId: string, event: SensorEvent): Signal {
  return new SignalRecord(deviceId, event);
}

/**
 * An owner's signals: a plain array, scanned. An owner has a handful of
 * signals (bounded below), where a Map would cost a hash table and a key
 * string per signal.
 *
 * At rest the array can be packed into one string (core/packed-signals.ts,
 * about a fifth of the memory): the hub packs owners idle between two of
 * its sweeps (PresenceHub.restIdle). Reading a packed set (iterating it, to
 * derive or to persist) decodes it for that read only; changing it (put,
 * retain, or slotOf ahead of a put) unpacks it for good, until the sweeps
 * find it idle again.
 */
export class SignalSet implements Iterable<Signal> {
  /**
   * The signals, or at rest their packed form (a string): one field for
   * both, 8 bytes less per owner (issue 6, memory per owner).
   */
  private items: Signal[] | string = [];
  /** The packed form's devices ('' while the signals are held as objects). */
  private devices: string | readonly string[] = '';
  /**
   * The second of exactly two devices (a phone and a watch, the usual
   * owner with more than one), whose ids are then held in these two fields
   * rather than in an array: 64 bytes less per such owner at rest (issue
   * 6, memory per owner), 8 more for the others.
   */
  private secondDevice: string | undefined = undefined;

  get size(): number {
    return (this.hot ?? this.decoded()).length;
  }

  /** Whether the signals are held packed. */
  get packed(): boolean {
    return typeof this.items === 'string';
  }

  values(): IterableIterator<Signal> {
    return (this.hot ?? this.decoded()).values();
  }

  [Symbol.iterator](): IterableIterator<Signal> {
    return this.values();
  }

  /** The index of the signal in the same slot (device and qualifier) as `signal`, or -1. */
  slotOf(signal: Signal): number {
    const items = this.unpacked();
    for (let i = 0; i < items.length; i++) {
      const held = items[i] as Signal;
      if (held.deviceId === signal.deviceId && sameQualifier(held.event, signal.event)) return i;
    }
    return -1;
  }

  at(index: number): Signal | undefined {
    return this.unpacked()[index];
  }

  /** Replaces the signal at `index`, or adds one for -1. */
  put(index: number, signal: Signal): void {
    const items = this.unpacked();
    if (index < 0) items.push(signal);
    else items[index] = signal;
  }

  /** Keeps the signals `keep` says yes to. */
  retain(keep: (signal: Signal) => boolean): void {
    this.items = this.unpacked().filter(keep);
  }

  /**
   * Packs the set; returns whether it is packed now. A set that is empty,
   * or would not come back exactly as it is, stays unpacked.
   */
  pack(): boolean {
    const items = this.hot;
    if (items === undefined) return true;
    const packed = packSignals(items);
    if (!packed) return false;
    const devices = packed.devices;
    this.items = packed.bytes;
    if (typeof devices !== 'string' && devices.length === 2) {
      this.devices = devices[0] as string;
      this.secondDevice = devices[1];
    } else {
      this.devices = devices;
    }
    return true;
  }

  /** The signals as objects, or undefined while packed. */
  private get hot(): Signal[] | undefined {
    const items = this.items;
    return typeof items === 'string' ? undefined : items;
  }

  private decoded(): Signal[] {
    const devices = this.secondDevice === undefined ? this.devices : [this.devices as string, this.secondDevice];
    return unpackSignals({ bytes: this.items as string, devices }, (deviceId, event, at): Signal => new SignalRecord(deviceId, event, at));
  }

  /** The signals as objects, unpacked for good if they were packed. */
  private unpacked(): Signal[] {
    const hot = this.hot;
    if (hot) return hot;
    const items = this.decoded();
    this.items = items;
    this.devices = '';
    this.secondDevice = undefined;
    return items;
  }
}

/** True when `candidate` should replace `current` under last-writer-wins. */
export function supersedes(candidate: Signal, current: Signal | undefined): boolean {
  if (!current) return true;
  if (candidate.at !== current.at) return candidate.at > current.at;
  return candidate.canonical > current.canonical;
}

/**
 * Kinds that keep more than one signal per device are bounded, so no device
 * can grow an owner's state without limit (rotating BLE ids, invented zone
 * names): each keeps at most `max` signals per device, the newest, and
 * motion only those within `windowMs` of the newest report (debouncing
 * driving needs to know when an activity began and whether another one
 * lasted long enough to end it). Keeping "the newest N within W of the
 * newest" of the union is still commutative, associative and idempotent:
 * the newest time only grows, so whatever one merge drops, the final set
 * drops too.
 */
export const SIGNAL_FAMILIES: Partial<Record<SensorEvent['kind'], { readonly max: number; readonly windowMs?: number }>> = {
  motion: { max: 32, windowMs: 30 * 60_000 },
  geofence: { max: 16 },
  occupancy: { max: 16 },
  'ble-room': { max: 16 },
};

/** Merges one signal into the set in place; returns whether the set changed. */
export function mergeSignal(set: SignalSet, signal: Signal): boolean {
  const slot = set.slotOf(signal);
  if (!supersedes(signal, slot < 0 ? undefined : set.at(slot))) return false;
  set.put(slot, signal);
  const family = SIGNAL_FAMILIES[signal.kind];
  if (!family) return true;
  const members: Signal[] = [];
  for (const s of set) if (s.kind === signal.kind && s.deviceId === signal.deviceId) members.push(s);
  members.sort((a, b) => (supersedes(a, b) ? -1 : 1)); // newest first
  const newest = (members[0] as Signal).at;
  const dropped = new Set(members.filter((s, i) => i >= family.max || (family.windowMs !== undefined && s.at < newest - family.windowMs)));
  if (dropped.size > 0) set.retain((s) => !dropped.has(s));
  return !dropped.has(signal);
}

/**
 * Forgets every signal of each device whose newest signal is older than
 * `before` (ms since the epoch, by the events' own times). Callers keep
 * `before` at least OFFLINE_AFTER back (SIGNAL_RETENTION_HOURS): such a
 * device counts for nothing when deriving already, so forgetting it changes
 * nothing else in presence (property-tested); what it last said (a
 * location, a calendar entry, a sleep state) is simply not kept, and the
 * device leaves the owner's device list. A device that reports again after
 * so long starts afresh. Devices that still report keep everything: a
 * signal sent once and still true (a long out-of-office entry, a zone
 * entered days ago) is not lost for being old.
 *
 * Unlike the merge this is not order-free: a device forgotten on one
 * process and reporting again before another process forgot it keeps its
 * old signals there, and storage's union brings them back to the first.
 * That converges (to keeping them), and only for a device back from a
 * long silence. Returns whether anything was forgotten.
 */
export function forgetSilentDevices(set: SignalSet, before: number): boolean {
  const newest = new Map<string, number>();
  for (const s of set) newest.set(s.deviceId, Math.max(s.at, newest.get(s.deviceId) ?? -Infinity));
  if (![...newest.values()].some((at) => at < before)) return false;
  set.retain((s) => (newest.get(s.deviceId) as number) >= before);
  return true;
}
