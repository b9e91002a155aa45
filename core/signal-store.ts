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
 * Motion keeps a short history per device (the latest MOTION_HISTORY
 * reports) rather than one value: debouncing driving needs to know when an
 * activity began and whether a different one lasted long enough to end it.
 * Keeping the N newest of the union is still commutative, associative and
 * idempotent: top-N(top-N(S + a) + b) = top-N(S + a + b).
 */
export const MOTION_HISTORY = 8;

/** Merges one signal into the set in place; returns whether the set changed. */
export function mergeSignal(set: SignalSet, signal: Signal): boolean {
  const key = signalKey(signal);
  if (!supersedes(signal, set.get(key))) return false;
  set.set(key, signal);
  if (signal.kind !== 'motion') return true;
  const history = [...set.entries()].filter(([, s]) => s.kind === 'motion' && s.deviceId === signal.deviceId);
  if (history.length <= MOTION_HISTORY) return true;
  history.sort(([, a], [, b]) => (supersedes(a, b) ? -1 : 1)); // newest first
  for (const [old] of history.slice(MOTION_HISTORY)) set.delete(old);
  return set.get(key) === signal;
}
