import { z } from 'zod';
import type { PlaceType, Sphere } from './owner-settings.js';

/**
 * The presence model in RFC 4479 terms: a person (availability, RPID
 * activities, user input) and the devices that reported. Derived state is
 * the service's view of the owner; watchers never see it directly, only the
 * view the policy engine cuts from it.
 */
export const availabilitySchema = z.enum(['available', 'busy', 'do-not-disturb', 'away', 'unknown', 'offline']);
export type Availability = z.infer<typeof availabilitySchema>;

/** RFC 4480 §3.2 activities the service can derive (a subset of the RPID list), most significant first; `steering` is driving. */
export const activitySchema = z.enum(['sleeping', 'on-the-phone', 'meeting', 'steering', 'travel', 'meal', 'working', 'away']);
export type Activity = z.infer<typeof activitySchema>;

export interface UserInput {
  readonly state: 'active' | 'idle';
  /** ms since the epoch, when the device reported it. */
  readonly lastInput: number | undefined;
}

export interface DeviceSeen {
  readonly id: string;
  readonly lastSeen: number;
  /** RFC 4479 service tuple status: open while the device counts, closed once silent. */
  readonly live: boolean;
}

export interface Place {
  /** The owner's name for the zone. */
  readonly zone: string;
  readonly placeType: PlaceType | undefined;
  readonly sphere: Sphere | undefined;
}

/** The newest accurate location fix (WGS 84); watchers get it only snapped to their granted precision. */
export interface Location {
  readonly latitude: number;
  readonly longitude: number;
  /** Radius of the 68% confidence circle, metres. */
  readonly accuracy: number;
  /** The device that measured it (RFC 5491 §3.4: a location belongs to the device element). */
  readonly deviceId?: string | undefined;
}

/** Why a field has its value: the rule and the signals (device/kind keys) behind it. Owner's eyes only. */
export interface TraceEntry {
  readonly rule: string;
  readonly signals: readonly string[];
}

export interface PresenceState {
  readonly availability: Availability;
  /** Most significant first. */
  readonly activities: readonly Activity[];
  readonly userInput: UserInput | undefined;
  readonly place: Place | undefined;
  readonly location?: Location | undefined;
  /** The owner's own words, from their manual status (RFC 3863 §4.1.5 note). */
  readonly note?: string | undefined;
  /** RFC 4480 §3.9 time-offset: minutes from UTC in the owner's time zone. */
  readonly timeOffsetMinutes: number | undefined;
  /** Latest event time from any device (ms), or undefined if none ever reported. */
  readonly lastSeen: number | undefined;
  readonly devices: readonly DeviceSeen[];
  readonly trace: Readonly<Record<string, TraceEntry>>;
}

/** The trace of a state derived without one (derivePresence's `explain` false). */
export const NO_TRACE: PresenceState['trace'] = Object.freeze({});

const NO_ACTIVITIES: readonly Activity[] = Object.freeze([]);
const activityLists = new Map<string, readonly Activity[]>();

/**
 * Activity lists are few (ordered subsets of eight values): one frozen
 * array each, shared by every state that has it, so a million owners do not
 * hold a million copies. Returns the shared list equal to `activities`.
 */
export function sharedActivities(activities: readonly Activity[]): readonly Activity[] {
  if (activities.length === 0) return NO_ACTIVITIES;
  const key = activities.join(' ');
  let list = activityLists.get(key);
  if (!list) {
    list = Object.freeze([...activities]);
    if (activityLists.size < 1024) activityLists.set(key, list);
  }
  return list;
}

export const OFFLINE_STATE: PresenceState = Object.freeze({
  availability: 'offline',
  activities: Object.freeze([]) as readonly Activity[],
  userInput: undefined,
  place: undefined,
  timeOffsetMinutes: undefined,
  lastSeen: undefined,
  devices: Object.freeze([]) as readonly DeviceSeen[],
  trace: Object.freeze({ availability: Object.freeze({ rule: 'no device reported within OFFLINE_AFTER_SECONDS', signals: [] }) }),
});

function sameList<T>(a: readonly T[], b: readonly T[], same: (x: T, y: T) => boolean): boolean {
  return a.length === b.length && a.every((x, i) => same(x, b[i] as T));
}

const sameStrings = (a: readonly string[], b: readonly string[]) => sameList(a, b, (x, y) => x === y);

/**
 * Field by field, cheapest first (on the ingest hot path the last-seen time
 * differs on almost every event, so most calls end at the first test).
 */
export function samePresence(a: PresenceState, b: PresenceState): boolean {
  if (a === b) return true;
  if (a.lastSeen !== b.lastSeen || a.availability !== b.availability || a.timeOffsetMinutes !== b.timeOffsetMinutes) return false;
  if (!sameStrings(a.activities, b.activities)) return false;
  if ((a.userInput === undefined) !== (b.userInput === undefined) || a.userInput?.state !== b.userInput?.state || a.userInput?.lastInput !== b.userInput?.lastInput) return false;
  if ((a.place === undefined) !== (b.place === undefined) || a.place?.zone !== b.place?.zone || a.place?.placeType !== b.place?.placeType || a.place?.sphere !== b.place?.sphere) {
    return false;
  }
  if (a.note !== b.note || a.location?.latitude !== b.location?.latitude || a.location?.longitude !== b.location?.longitude || a.location?.accuracy !== b.location?.accuracy || a.location?.deviceId !== b.location?.deviceId) return false;
  // The trace is not compared: it is the owner's explanation, worked out on
  // demand (PresenceHub.explain), and a new reason alone changes nothing
  // anyone is shown.
  return sameList(a.devices, b.devices, (x, y) => x.id === y.id && x.lastSeen === y.lastSeen && x.live === y.live);
}
