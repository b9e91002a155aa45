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
 * Pure: signals + settings + now -> presence state. Precedence (first wins
 * for availability; activities are all listed, most significant first):
 *   1. no event from any device for offlineAfterMs -> offline (nothing else)
 *   2. any device in a call -> on-the-phone, busy
 *   3. a busy calendar entry covering now -> meeting, busy
 *   4. an out-of-office entry covering now -> away
 *   5. otherwise available
 */
export function derivePresence(signals: Iterable<Signal>, settings: DeriveSettings, now: number): Derived {
  let lastSeen: number | undefined;
  const devices = new Map<string, number>();
  let inCall = false;
  let meeting = false;
  let outOfOffice = false;
  let validUntil = Infinity;
  let userInput: UserInput | undefined;
  let userInputAt = -Infinity;

  for (const signal of signals) {
    // A device clock slightly ahead (within the accepted skew) counts as now.
    const seen = Math.min(signal.at, now);
    if (lastSeen === undefined || seen > lastSeen) lastSeen = seen;
    const deviceSeen = devices.get(signal.deviceId);
    if (deviceSeen === undefined || seen > deviceSeen) devices.set(signal.deviceId, seen);

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

  if (lastSeen === undefined) return { state: OFFLINE_STATE, validUntil: Infinity };
  const silentAt = lastSeen + settings.offlineAfterMs;
  if (now >= silentAt) return { state: OFFLINE_STATE, validUntil: Infinity };
  validUntil = Math.min(validUntil, silentAt);

  const activities: Activity[] = [];
  if (inCall) activities.push('on-the-phone');
  if (meeting) activities.push('meeting');
  let availability: Availability = 'available';
  if (inCall || meeting) availability = 'busy';
  else if (outOfOffice) {
    availability = 'away';
    activities.push('away');
  }

  const deviceList: DeviceSeen[] = [...devices].map(([id, seen]) => ({ id, lastSeen: seen }));
  deviceList.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return { state: { availability, activities, userInput, lastSeen, devices: deviceList }, validUntil };
}
