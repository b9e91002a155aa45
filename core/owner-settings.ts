import { z } from 'zod';
import { printableText } from './text.js';
import { deepFreeze } from './deep-freeze.js';

/**
 * What an owner tells the service about their life, validated: places and
 * zones, dwell times, thresholds, quiet hours, signals to ignore. Input to
 * derivation, never shown to watchers.
 */
const label = printableText(64);

export const sphereSchema = z.enum(['home', 'work']);
export type Sphere = z.infer<typeof sphereSchema>;

/** RFC 4589 location types (the vocabulary of RFC 4480 place-type), a common subset. */
export const placeTypeSchema = z.enum([
  'residence',
  'office',
  'school',
  'hospital',
  'restaurant',
  'cafe',
  'store',
  'shopping-area',
  'airport',
  'train-station',
  'public-transport',
  'hotel',
  'library',
  'outdoors',
  'place-of-worship',
  'unknown',
]);
export type PlaceType = z.infer<typeof placeTypeSchema>;

const hhmm = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'must be HH:MM (24 h)');

export const timeZoneSchema = z.string().refine((tz) => {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}, 'must be an IANA time zone such as Europe/Berlin');

export const zoneSchema = z
  .object({
    name: label,
    sphere: sphereSchema.optional(),
    placeType: placeTypeSchema.optional(),
    /** A circle; a location fix counts when its accuracy circle touches it. */
    circle: z
      .object({
        latitude: z.number().min(-90).max(90),
        longitude: z.number().min(-180).max(180),
        radiusMeters: z.number().min(20).max(50_000),
      })
      .strict()
      .optional(),
    /** Phone geofence / OwnTracks region names that mean this zone (default: the zone's name). */
    geofences: z.array(label).max(20).optional(),
    /** Occupancy and BLE rooms that mean this zone. */
    rooms: z.array(label).max(50).optional(),
    /** Digests of the Wi-Fi networks that mean this zone (see the settings API: names go in, digests are kept). */
    networks: z
      .array(z.string().regex(/^[A-Za-z0-9_-]{22}$/))
      .max(20)
      .optional(),
  })
  .strict();
export type Zone = z.infer<typeof zoneSchema>;

export const ignorableSignals = ['motion', 'user-input', 'screen', 'call', 'calendar', 'focus', 'network', 'geofence', 'location', 'sleep', 'occupancy', 'ble-room', 'headset'] as const;

/** The settings object without its cross-field checks (see withSettingsChecks). */
export const ownerSettingsFields = z
  .object({
    timeZone: timeZoneSchema.optional(),
    zones: z.array(zoneSchema).max(50).default([]),
    dwell: z
      .object({
        /** In-vehicle motion must have lasted this long (from the device's `since`) to show as driving. */
        drivingSeconds: z.number().int().min(0).max(3600).default(120),
        /** Leaving a geofence counts only after this long without re-entering. */
        leaveSeconds: z.number().int().min(0).max(3600).default(180),
      })
      .strict()
      .default({ drivingSeconds: 120, leaveSeconds: 180 }),
    /** Idle input shows as away only after this long without input. */
    idleAfterSeconds: z.number().int().min(0).max(86_400).default(300),
    minMotionConfidence: z.number().int().min(0).max(100).default(70),
    /** Location fixes less precise than this are ignored. */
    maxLocationAccuracyMeters: z.number().min(1).max(100_000).default(250),
    /** BLE room sightings further than this are ignored. */
    maxBleDistanceMeters: z.number().min(0).max(1000).default(5),
    /** Do-not-disturb between these local times (needs timeZone). */
    quietHours: z.object({ from: hhmm, to: hhmm }).strict().optional(),
    /** Publish this owner's presence to the SIP presence server (SIP_SERVER), as the SIP audience may see it. */
    sipPublish: z.boolean().default(false),
    /** Signal kinds that never count for this owner. */
    ignore: z.array(z.enum(ignorableSignals)).max(ignorableSignals.length).default([]),
    /**
     * Keep every sensor event received for this many days (0: keep none, the
     * default; privacy invariant 4), for the owner's own export. The operator
     * caps it (RAW_EVENTS_MAX_DAYS); turning it back to 0 deletes them at once.
     */
    keepRawEventsDays: z.number().int().min(0).max(365).default(0),
  })
  .strict();

export function withSettingsChecks<T extends z.ZodType<{ timeZone?: string | undefined; quietHours?: unknown; zones: readonly { name: string }[] }>>(schema: T) {
  return schema
    .refine((s) => !s.quietHours || s.timeZone, { message: 'quietHours needs timeZone', path: ['quietHours'] })
    .refine((s) => new Set(s.zones.map((zone) => zone.name)).size === s.zones.length, { message: 'zone names must be unique', path: ['zones'] });
}

export const ownerSettingsSchema = withSettingsChecks(ownerSettingsFields);

export type OwnerSettings = z.infer<typeof ownerSettingsSchema>;

/** Frozen: every owner without settings of their own shares this one object (core/directory.ts). */
export const DEFAULT_OWNER_SETTINGS: OwnerSettings = deepFreeze(ownerSettingsSchema.parse({}));


/**
 * The settings as an owner sends them: a zone may name Wi-Fi networks in
 * clear (`wifi`); they are digested on the way in (toStoredSettings) and
 * only the digests are kept, as for the network events themselves.
 */
export const settingsInputSchema = withSettingsChecks(
  ownerSettingsFields.extend({
    zones: z
      .array(zoneSchema.extend({ wifi: z.array(z.string().min(1).max(32)).max(20).optional() }))
      .max(50)
      .default([]),
  }),
);
export type SettingsInput = z.infer<typeof settingsInputSchema>;

/** Digests the Wi-Fi names; the result is checked again (digests added to `networks` may exceed its limit). */
export function toStoredSettings(input: SettingsInput, digestNetworkName: (ssid: string) => string) {
  const zones = input.zones.map(({ wifi, ...zone }) => {
    if (!wifi || wifi.length === 0) return zone;
    const networks = [...new Set([...(zone.networks ?? []), ...wifi.map(digestNetworkName)])];
    return { ...zone, networks };
  });
  return ownerSettingsSchema.safeParse({ ...input, zones });
}
