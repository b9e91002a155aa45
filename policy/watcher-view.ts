import { z } from 'zod';
import { placeTypeSchema, sphereSchema } from '../core/owner-settings.js';
import { activitySchema, availabilitySchema, type Activity, type DeviceSeen, type PresenceState } from '../core/presence.js';
import type { DeviceRefs } from './device-refs.js';
import type { Decision } from './evaluate-consent.js';
import type { ClassSet, Transformations } from './rule.js';
import { snapLocation } from './snap-location.js';

/**
 * What a watcher is shown: the only input the renderers get. Every field is
 * optional and present only when a rule granted it (privacy invariant 2).
 * It carries no timestamps beyond what a grant names (user input `full`): a
 * device reporting the same state again must not change what a watcher sees
 * (a change they cannot see leaves no trace).
 */
export const viewDeviceSchema = z
  .object({
    /** Occurrence id (RFC 4479 §3.4), stable per device, an xs:ID. */
    id: z.string(),
    /** RFC 4479 §11.1.3 deviceID: a URN derived from the device, never its service id. */
    deviceId: z.string(),
    class: z.string().optional(),
  })
  .strict();
export const viewServiceSchema = z
  .object({
    id: z.string(),
    class: z.string().optional(),
    /** RFC 3863 §4.1.4: open while the device counts, closed once silent. */
    basic: z.enum(['open', 'closed']),
  })
  .strict();

export const watcherViewSchema = z
  .object({
    entity: z.string(),
    /** RFC 3863 §4.1.4 basic status of the person's presence. */
    basic: z.enum(['open', 'closed']),
    availability: availabilitySchema.optional(),
    activities: z.array(activitySchema).optional(),
    /** RFC 4480 §3.7 place-type (RFC 4589 values). */
    placeType: placeTypeSchema.optional(),
    /** The owner's name for the zone (granted with place `zone`). */
    zone: z.string().optional(),
    /** RFC 4480 §3.8. */
    sphere: sphereSchema.optional(),
    /** RFC 4119 / RFC 5491 location, snapped to the granted grid (RFC 6772 §6.5.2). */
    location: z
      .object({
        latitude: z.number(),
        longitude: z.number(),
        radiusMeters: z.number(),
        precision: z.enum(['city', 'km', '100m', 'exact']),
        /** RFC 4119 §2.2.2 usage rules, from the consent rule. */
        retransmissionAllowed: z.boolean(),
        retentionDays: z.number().int(),
        /** The device element the location belongs to (RFC 5491 §3.4), by its derived ids; only when that device is granted. */
        device: z.object({ id: z.string(), deviceId: z.string() }).strict().optional(),
      })
      .strict()
      .optional(),
    /** RFC 4480 §3.11 user-input, cut to the grant (RFC 5025 §3.3.2). */
    userInput: z
      .object({
        state: z.enum(['active', 'idle']),
        idleThresholdSeconds: z.number().int().positive().optional(),
        lastInput: z.string().optional(),
      })
      .strict()
      .optional(),
    /** RFC 4480 §3.9 time-offset, minutes. */
    timeOffsetMinutes: z.number().int().optional(),
    /** RFC 3863 §4.1.5 note. */
    note: z.string().optional(),
    devices: z.array(viewDeviceSchema).optional(),
    services: z.array(viewServiceSchema).optional(),
  })
  .strict();
export type WatcherView = z.infer<typeof watcherViewSchema>;
export type ViewField = Exclude<keyof WatcherView, 'entity'>;

/**
 * The one view shown for an owner who is offline, and shown identically for
 * polite-block, block, confirm (pending) and no matching rule (privacy
 * invariant 1): no time, no device, nothing that differs from a real
 * offline owner.
 */
export function offlineView(entity: string): WatcherView {
  return { entity, basic: 'closed', availability: 'offline' };
}

export interface ViewContext {
  readonly entity: string;
  /** RFC 4480 class of a device, from the owner's registration. */
  readonly deviceClass: (deviceId: string) => string | undefined;
  /** The owner's idle threshold, shown with user input `thresholds` (RFC 5025 §3.3.2). */
  readonly idleThresholdSeconds: number;
  /**
   * Whether devices and services show their class (RFC 4480 §3.2). RFC
   * 5025 §3.3.2 makes that a permission of its own, provide-class, which no
   * rule here grants (the pres-rules import refuses it): only the owner's
   * own view shows classes. A grant of devices by class still selects by
   * it (provide-devices, RFC 5025 §3.3.1).
   */
  readonly showsClass: boolean;
  /** The ids devices are shown by (keyed, per device grant). */
  readonly deviceRefs: DeviceRefs;
}

/**
 * Activities implied by the owner's place reveal what the place grants:
 * travel and meal its type (RFC 5025 provide-place-type), working the work
 * sphere (provide-sphere). They leave only with that permission.
 */
const IMPLIED_BY: Partial<Record<Activity, (g: Transformations) => boolean>> = {
  travel: (g) => g.place !== 'none',
  meal: (g) => g.place !== 'none',
  working: (g) => g.sphere,
};

const classAllowed = (set: ClassSet, deviceClass: string | undefined) => set === 'all' || (deviceClass !== undefined && set.includes(deviceClass));

function devicesShown(devices: readonly DeviceSeen[], set: ClassSet, context: ViewContext): DeviceSeen[] {
  if (set !== 'all' && set.length === 0) return [];
  return devices.filter((d) => classAllowed(set, context.deviceClass(d.id)));
}

/** Every granted field beyond availability, each present only when there is something to show. */
function grantedFields(state: PresenceState, grant: Transformations, context: ViewContext): Omit<WatcherView, 'entity' | 'basic' | 'availability'> {
  const out: Omit<WatcherView, 'entity' | 'basic' | 'availability'> = {};
  if (grant.activities) {
    const activities = state.activities.filter((a) => IMPLIED_BY[a]?.(grant) ?? true);
    if (activities.length > 0) out.activities = activities;
  }
  if (grant.place !== 'none' && state.place) {
    if (state.place.placeType) out.placeType = state.place.placeType;
    if (grant.place === 'zone') out.zone = state.place.zone;
  }
  if (grant.sphere && state.place?.sphere) out.sphere = state.place.sphere;
  if (grant.location !== 'none' && state.location) {
    const { latitude, longitude, accuracy } = state.location;
    // The location names its device (RFC 5491 §3.4) only when that device is
    // granted too; otherwise it is the person's, and no device is revealed.
    const measuredBy = state.location.deviceId;
    const shownDevice = measuredBy !== undefined && classAllowed(grant.devices, context.deviceClass(measuredBy)) ? context.deviceRefs.of(grant, measuredBy) : undefined;
    out.location = {
      ...snapLocation(latitude, longitude, accuracy, grant.location),
      precision: grant.location,
      retransmissionAllowed: grant.locationRetransmission,
      retentionDays: grant.locationRetentionDays,
      ...(shownDevice ? { device: { id: shownDevice.occurrence, deviceId: shownDevice.urn } } : {}),
    };
  }
  if (grant.userInput !== 'false' && state.userInput) {
    const ui: NonNullable<WatcherView['userInput']> = { state: state.userInput.state };
    if (grant.userInput !== 'bare' && context.idleThresholdSeconds > 0) ui.idleThresholdSeconds = context.idleThresholdSeconds;
    if (grant.userInput === 'full' && state.userInput.lastInput !== undefined) ui.lastInput = new Date(state.userInput.lastInput).toISOString();
    out.userInput = ui;
  }
  if (grant.timeOffset && state.timeOffsetMinutes !== undefined) out.timeOffsetMinutes = state.timeOffsetMinutes;
  if (grant.note && state.note !== undefined) out.note = state.note;
  const devices = devicesShown(state.devices, grant.devices, context);
  if (devices.length > 0) {
    out.devices = devices.map((d) => {
      const ref = context.deviceRefs.of(grant, d.id);
      const deviceClass = context.showsClass ? context.deviceClass(d.id) : undefined;
      return deviceClass === undefined ? { id: ref.occurrence, deviceId: ref.urn } : { id: ref.occurrence, deviceId: ref.urn, class: deviceClass };
    });
  }
  const services = devicesShown(state.devices, grant.services, context);
  if (services.length > 0) {
    out.services = services.map((d) => {
      const id = `s${context.deviceRefs.of(grant, d.id).occurrence.slice(1)}`;
      const deviceClass = context.showsClass ? context.deviceClass(d.id) : undefined;
      const basic = d.live ? ('open' as const) : ('closed' as const);
      return deviceClass === undefined ? { id, basic } : { id, class: deviceClass, basic };
    });
  }
  return out;
}

export function buildWatcherView(state: PresenceState, decision: Decision, context: ViewContext): WatcherView {
  const entity = context.entity;
  if (decision.kind !== 'allow' || state.availability === 'offline') return offlineView(entity);
  const { grant } = decision;
  const fields = grantedFields(state, grant, context);
  if (grant.availability) return { entity, basic: 'open', availability: state.availability, ...fields };
  // Without availability, the basic status (online or not) is not granted
  // either; any other field shown implies it, so the owner shows as open
  // with what there is. With nothing to show, the watcher sees exactly what
  // they would see of an offline owner.
  if (Object.keys(fields).length > 0) return { entity, basic: 'open', ...fields };
  return offlineView(entity);
}

/** The view's fields beyond its identity, with the precision shown (for the access log). */
export function viewFields(view: WatcherView): string[] {
  const out: string[] = [];
  for (const key of Object.keys(view) as (keyof WatcherView)[]) {
    if (key === 'entity') continue;
    if (key === 'location' && view.location) out.push(`location:${view.location.precision}`);
    else if (key === 'userInput' && view.userInput) out.push(view.userInput.lastInput ? 'userInput:full' : view.userInput.idleThresholdSeconds ? 'userInput:thresholds' : 'userInput:bare');
    else out.push(key);
  }
  return out;
}
