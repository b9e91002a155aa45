import { signalQualifier, type SensorEvent } from './events.js';

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

export type SignalSet = Map<string, Signal>;

/** One signal per device and qualifier (see signalQualifier). */
export function signalKey(signal: Signal): string {
  return `${signal.deviceId}/${signalQualifier(signal.event)}`;
}

/** The canonical form is needed only to break a tie on time, so it is made on first use. */
class SignalRecord implements Signal {
  readonly kind: SensorEvent['kind'];
  readonly at: number;
  private canonicalForm: string | undefined;

  constructor(
    readonly deviceId: string,
    readonly event: SensorEvent,
  ) {
    this.kind = event.kind;
    this.at = Date.parse(event.at);
  }

  get canonical(): string {
    this.canonicalForm ??= JSON.stringify(this.event);
    return this.canonicalForm;
  }
}

export function toSignal(deviceId: string, event: SensorEvent): Signal {
  return new SignalRecord(deviceId, event);
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
  const key = signalKey(signal);
  if (!supersedes(signal, set.get(key))) return false;
  set.set(key, signal);
  const family = SIGNAL_FAMILIES[signal.kind];
  if (!family) return true;
  const members: [string, Signal][] = [];
  for (const entry of set) if (entry[1].kind === signal.kind && entry[1].deviceId === signal.deviceId) members.push(entry);
  members.sort(([, a], [, b]) => (supersedes(a, b) ? -1 : 1)); // newest first
  const newest = (members[0] as [string, Signal])[1].at;
  members.forEach(([k, s], i) => {
    if (i >= family.max || (family.windowMs !== undefined && s.at < newest - family.windowMs)) set.delete(k);
  });
  return set.get(key) === signal;
}
