import type { Activity, Availability, DeviceSeen, PresenceState, UserInput } from './presence.js';
import { OFFLINE_STATE } from './presence.js';
import type { Signal } from './signal-store.js';

export interface DeriveSettings {
  /** A device silent for this long stops counting; all silent means offline. */
  readonly offlineAfterMs: number;
  /** Motion confidence (0-100) from which in-vehicle counts as driving. */
  readonly minMotionConfidence?: number;
}

export const DEFAULT_MIN_MOTION_CONFIDENCE = 70;

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
 * Precedence: every condition that holds adds its activity (most significant
 * first); the first that holds sets the availability.
 *
 *   condition (live devices only)                  activity      availability
 *   1. no device reported within offlineAfterMs    -             offline (nothing else)
 *   2. a worn wearable reports asleep              sleeping      do-not-disturb
 *   3. a phone in a call, or a headset in a call   on-the-phone  busy
 *   4. a busy calendar entry covering now          meeting       busy
 *   5. motion in-vehicle at >= minMotionConfidence steering      busy
 *   6. focus / do-not-disturb on                   -             do-not-disturb
 *   7. an out-of-office entry covering now         away          away
 *   8. the most recent user input says idle        -             away
 *   9. otherwise                                   -             available
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

  const minMotionConfidence = settings.minMotionConfidence ?? DEFAULT_MIN_MOTION_CONFIDENCE;
  const notWorn = new Set<string>();
  for (const signal of all) {
    if (signal.event.kind === 'worn' && signal.event.state === 'off') notWorn.add(signal.deviceId);
  }
  let asleep = false;
  let inCall = false;
  let meeting = false;
  let driving = false;
  let focus = false;
  let outOfOffice = false;
  let userInput: UserInput | undefined;
  let userInputAt = -Infinity;
  for (const signal of all) {
    if (!live.has(signal.deviceId)) continue;
    const event = signal.event;
    switch (event.kind) {
      case 'sleep':
        // A watch lying on the nightstand says nothing about its owner.
        if (event.state === 'asleep' && !notWorn.has(signal.deviceId)) asleep = true;
        break;
      case 'call':
        if (event.state === 'in-call') inCall = true;
        break;
      case 'headset':
        if (event.inCall) inCall = true;
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
      case 'motion':
        if (event.activity === 'in-vehicle' && event.confidence >= minMotionConfidence) driving = true;
        break;
      case 'focus':
        if (event.state === 'on') focus = true;
        break;
      case 'user-input':
        // RFC 4480 §3.11: the most recent report across devices wins.
        if (signal.at > userInputAt) {
          userInputAt = signal.at;
          userInput = { state: event.state, lastInput: event.lastInput ? Date.parse(event.lastInput) : undefined };
        }
        break;
      default:
        // Other signals (location, network, battery, rooms, ...) are kept for
        // place and device inference; they do not set availability here.
        break;
    }
  }

  const activities: Activity[] = [];
  if (asleep) activities.push('sleeping');
  if (inCall) activities.push('on-the-phone');
  if (meeting) activities.push('meeting');
  if (driving) activities.push('steering');
  if (outOfOffice) activities.push('away');

  let availability: Availability;
  if (asleep) availability = 'do-not-disturb';
  else if (inCall || meeting || driving) availability = 'busy';
  else if (focus) availability = 'do-not-disturb';
  else if (outOfOffice || userInput?.state === 'idle') availability = 'away';
  else availability = 'available';

  const devices: DeviceSeen[] = [...live].sort().map((id) => ({ id, lastSeen: deviceSeen.get(id) ?? lastSeen }));
  return { state: { availability, activities, userInput, lastSeen, devices }, validUntil };
}
