import { z } from 'zod';

/**
 * The presence model in RFC 4479 terms: a person (availability, RPID
 * activities, user input) and the devices that reported. Derived state is
 * the service's view of the owner; watchers never see it directly, only the
 * view the policy engine cuts from it.
 */
export const availabilitySchema = z.enum(['available', 'busy', 'do-not-disturb', 'away', 'offline']);
export type Availability = z.infer<typeof availabilitySchema>;

/** RFC 4480 §3.2 activities the service can derive (a subset of the RPID list); `steering` is driving. */
export const activitySchema = z.enum(['sleeping', 'on-the-phone', 'meeting', 'steering', 'away']);
export type Activity = z.infer<typeof activitySchema>;

export interface UserInput {
  readonly state: 'active' | 'idle';
  /** ms since the epoch, when the device reported it. */
  readonly lastInput: number | undefined;
}

export interface DeviceSeen {
  readonly id: string;
  readonly lastSeen: number;
}

export interface PresenceState {
  readonly availability: Availability;
  /** Most significant first. */
  readonly activities: readonly Activity[];
  readonly userInput: UserInput | undefined;
  /** Latest event time from any device (ms), or undefined if none ever reported. */
  readonly lastSeen: number | undefined;
  readonly devices: readonly DeviceSeen[];
}

export const OFFLINE_STATE: PresenceState = Object.freeze({
  availability: 'offline',
  activities: Object.freeze([]) as readonly Activity[],
  userInput: undefined,
  lastSeen: undefined,
  devices: Object.freeze([]) as readonly DeviceSeen[],
});

export function samePresence(a: PresenceState, b: PresenceState): boolean {
  return (
    a.availability === b.availability &&
    a.lastSeen === b.lastSeen &&
    a.activities.length === b.activities.length &&
    a.activities.every((activity, i) => activity === b.activities[i]) &&
    a.userInput?.state === b.userInput?.state &&
    a.userInput?.lastInput === b.userInput?.lastInput &&
    a.devices.length === b.devices.length &&
    a.devices.every((d, i) => d.id === b.devices[i]?.id && d.lastSeen === b.devices[i]?.lastSeen)
  );
}
