import type { Activity, Availability, DeviceSeen, PresenceState, UserInput } from './presence.js';
import { OFFLINE_STATE } from './presence.js';
import type { Signal } from './signal-store.js';

export interface DeriveSettings {
  /** No event from any device for this long means offline. */
  readonly offlineAfterMs: number;
}

export interface Derived {
  readonly state: PresenceState;
  /**
   * The first instant at which the same signals would derive a different
   * state (a calendar entry starts or ends, the owner goes silent). Callers
   * re-derive at or after it; Infinity if only a new event can change it.
   */
  readonly validUntil: number;
}

/**
 * Pure: signals + settings + now -> presence state.
 *
 * A silent device stops counting: a device's signals count only while that
 * device has reported anything within offlineAfterMs (any event refreshes
 * it, so a phone in a long call keeps the call alive with any heartbeat).
 * Calendar entries count only inside their [start, end) window.
 *
 * Precedence (first wins for availability; activities are all listed, most
 * significant first):
 *   1. no device has reported within offlineAfterMs -> offline (nothing else)
 *   2. any live device in a call -> on-the-phone, busy
 *   3. a busy calendar entry covering now -> meeting, busy
 *   4. an out-of-office entry covering now -> away
 *   5. otherwise available
 */
export function derivePresence(signals: Iterable<Signal>, settings: DeriveSettings, now: number): Derived {
  // A device clock slightly ahead (within the accepted skew) counts as now.
  const deviceSeen = new Map<string, number>();
  const all: Signal[] = [];
  for (const signal of signals) {
    all.push(signal);
    const seen = Math.min(signal.at, now);
    const previous = deviceSeen.get(signal.deviceId);
    if (previous === undefined || seen > previous) deviceSeen.set(signal.deviceId, seen);
  }

  let validUntil = Infinity;
  let lastSeen: number | undefined;
  const live = new Set<string>();
  for (const [deviceId, seen] of deviceSeen) {
    const silentAt = seen + settings.offlineAfterMs;
    if (now >= silentAt) continue;
    live.add(deviceId);
    validUntil = Math.min(validUntil, silentAt);
    if (lastSeen === undefined || seen > lastSeen) lastSeen = seen;
  }
  if (lastSeen === undefined) return { state: OFFLINE_STATE, validUntil: Infinity };

  let inCall = false;
  let meeting = false;
  let outOfOffice = false;
  let userInput: UserInput | undefined;
  let userInputAt = -Infinity;
  for (const signal of all) {
    if (!live.has(signal.deviceId)) continue;
    const event = signal.event;
    switch (event.kind) {
      case 'call':
        if (event.state === 'in-call') inCall = true;
        break;
      case 'calendar': {
        const start = Date.parse(event.start);
        const end = Date.parse(event.end);
        if (now < start) validUntil = Math.min(validUntil, start);
        else if (now < end) {
          validUntil = Math.min(validUntil, end);
          if (event.state === 'busy') meeting = true;
          else if (event.state === 'out-of-office') outOfOffice = true;
        }
        break;
      }
      case 'user-input':
        // RFC 4480 §3.11: the most recent report across devices wins.
        if (signal.at > userInputAt) {
          userInputAt = signal.at;
          userInput = { state: event.state, lastInput: event.lastInput ? Date.parse(event.lastInput) : undefined };
        }
        break;
    }
  }

  const activities: Activity[] = [];
  if (inCall) activities.push('on-the-phone');
  if (meeting) activities.push('meeting');
  let availability: Availability = 'available';
  if (inCall || meeting) availability = 'busy';
  else if (outOfOffice) {
    availability = 'away';
    activities.push('away');
  }

  const devices: DeviceSeen[] = [...live].sort().map((id) => ({ id, lastSeen: deviceSeen.get(id) as number }));
  return { state: { availability, activities, userInput, lastSeen, devices }, validUntil };
}
