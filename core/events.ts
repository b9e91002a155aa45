import { z } from 'zod';
import { isPrintableText } from './text.js';

/**
 * Sensor events as devices publish them (the MQTT payload contract): one
 * discriminated union on `kind`.
 *
 * A payload is one event or `{ "events": [...] }` with up to
 * MAX_EVENTS_PER_MESSAGE. `at` is the device's own clock (RFC 3339 with an
 * offset); events dated further ahead than MAX_CLOCK_SKEW_SECONDS are
 * refused. Objects are stripped of unknown fields, so what a device adds
 * (a meeting's subject, a focus mode's name, a Wi-Fi name) is never stored.
 */
export const MAX_EVENTS_PER_MESSAGE = 64;

/**
 * RFC 3339 with an offset, at most nanoseconds (`2026-12-05T10:00:00.123456789+05:30`
 * is 35 characters): any number of fraction digits would let one event hold
 * kilobytes of timestamp in memory and in every state row written after it.
 */
const MAX_TIMESTAMP_LENGTH = 35;
const at = z.iso.datetime({ offset: true }).max(MAX_TIMESTAMP_LENGTH);
const time = z.iso.datetime({ offset: true }).max(MAX_TIMESTAMP_LENGTH);
/** A label the owner chose (zone, room): short and printable (renderers escape it). */
const label = z
  .string()
  .min(1)
  .max(64)
  .refine(isPrintableText, 'must be printable text');

// --- phone -----------------------------------------------------------------

/** Android Activity Recognition / iOS CoreMotion, with their confidence. */
export const motionEventSchema = z.object({
  kind: z.literal('motion'),
  at,
  activity: z.enum(['still', 'walking', 'running', 'cycling', 'in-vehicle', 'unknown']),
  confidence: z.number().int().min(0).max(100),
  /**
   * When this activity began (CoreMotion's startDate, the Activity
   * Recognition transition time); without it, from this report. Dwell times
   * are measured from it.
   */
  since: time.optional(),
});

export const userInputEventSchema = z.object({
  kind: z.literal('user-input'),
  at,
  state: z.enum(['active', 'idle']),
  lastInput: time.optional(),
});

export const screenEventSchema = z.object({
  kind: z.literal('screen'),
  at,
  state: z.enum(['on', 'off']),
  locked: z.boolean(),
});

export const callEventSchema = z.object({
  kind: z.literal('call'),
  at,
  /** As the phone's telephony API reports it. */
  state: z.enum(['idle', 'ringing', 'in-call']),
});

export const calendarEventSchema = z
  .object({
    kind: z.literal('calendar'),
    at,
    /** The entry that is current at `at`; `free` clears a previous one. The subject is never read. */
    state: z.enum(['busy', 'free', 'tentative', 'out-of-office']),
    start: time,
    end: time,
  })
  .refine((e) => Date.parse(e.end) > Date.parse(e.start), { message: 'end must be after start', path: ['end'] });

/** Focus / do-not-disturb; the mode's name stays on the phone. */
export const focusEventSchema = z.object({
  kind: z.literal('focus'),
  at,
  state: z.enum(['on', 'off']),
});

export const batteryEventSchema = z.object({
  kind: z.literal('battery'),
  at,
  level: z.number().int().min(0).max(100),
  charging: z.boolean(),
});

/**
 * The network the phone is on. A Wi-Fi name (`ssid`) is accepted on input
 * and replaced by a keyed digest before anything stores it (see
 * sanitizeEvent), so owners can tag networks as places without the service
 * keeping network names.
 */
export const networkEventSchema = z.object({
  kind: z.literal('network'),
  at,
  connection: z.enum(['wifi', 'cellular', 'offline']),
  ssid: z.string().min(1).max(32).optional(),
  /** Set by the service only: the digest that replaces `ssid`. */
  network: z
    .string()
    .regex(/^[A-Za-z0-9_-]{22}$/)
    .optional(),
});

export const geofenceEventSchema = z.object({
  kind: z.literal('geofence'),
  at,
  zone: label,
  transition: z.enum(['enter', 'leave']),
});

export const locationEventSchema = z.object({
  kind: z.literal('location'),
  at,
  latitude: z.number().min(-90).max(90),
  longitude: z.number().min(-180).max(180),
  /** Radius of the 68% confidence circle, metres. */
  accuracy: z.number().min(0).max(100_000),
});

// --- wearable --------------------------------------------------------------

export const sleepEventSchema = z.object({
  kind: z.literal('sleep'),
  at,
  state: z.enum(['asleep', 'awake']),
});

export const wornEventSchema = z.object({
  kind: z.literal('worn'),
  at,
  state: z.enum(['on', 'off']),
});

export const heartRateEventSchema = z.object({
  kind: z.literal('heart-rate'),
  at,
  bpm: z.number().int().min(20).max(250),
});

// --- IoT -------------------------------------------------------------------

/** A room or desk occupancy sensor (PIR, mmWave, desk switch). */
export const occupancyEventSchema = z.object({
  kind: z.literal('occupancy'),
  at,
  room: label,
  occupied: z.boolean(),
});

/** BLE room presence, the ESPresense / Home Assistant mqtt_room shape. */
export const bleRoomEventSchema = z.object({
  kind: z.literal('ble-room'),
  at,
  /** The tracked beacon (the owner's phone or watch). */
  id: label,
  room: label,
  /** Estimated distance to the room's station, metres. */
  distance: z.number().min(0).max(1000),
});

export const headsetEventSchema = z.object({
  kind: z.literal('headset'),
  at,
  onHead: z.boolean(),
  inCall: z.boolean(),
  muted: z.boolean(),
});

export const sensorEventSchema = z.discriminatedUnion('kind', [
  motionEventSchema,
  userInputEventSchema,
  screenEventSchema,
  callEventSchema,
  calendarEventSchema,
  focusEventSchema,
  batteryEventSchema,
  networkEventSchema,
  geofenceEventSchema,
  locationEventSchema,
  sleepEventSchema,
  wornEventSchema,
  heartRateEventSchema,
  occupancyEventSchema,
  bleRoomEventSchema,
  headsetEventSchema,
]);

export const sensorMessageSchema = z.union([
  sensorEventSchema.transform((event) => [event]),
  z.object({ events: z.array(sensorEventSchema).min(1).max(MAX_EVENTS_PER_MESSAGE) }).transform((m) => m.events),
]);

export type SensorEvent = z.infer<typeof sensorEventSchema>;

/**
 * Which signal an event updates: most kinds keep one value per device; a
 * geofence, an occupied room and a BLE room each keep one per zone or room,
 * so entering B does not erase having left A.
 */
export function signalQualifier(event: SensorEvent): string {
  switch (event.kind) {
    case 'geofence':
      return `geofence/${event.zone}`;
    case 'occupancy':
      return `occupancy/${event.room}`;
    case 'ble-room':
      return `ble-room/${event.id}/${event.room}`;
    case 'motion':
      // A short history, not one value (bounded by SIGNAL_FAMILIES in signal-store).
      return `motion@${event.at}`;
    default:
      return event.kind;
  }
}

/**
 * Removes what must never be stored: a Wi-Fi name becomes a keyed digest
 * (`network`), so owners can still tag their networks as places. Applied
 * by ingest before an event reaches the signal store.
 */
export function sanitizeEvent(event: SensorEvent, digestNetworkName: (ssid: string) => string): SensorEvent {
  if (event.kind !== 'network') return event;
  // A digest a device sent itself is dropped: only the service makes them.
  const { ssid, network: _fromDevice, ...rest } = event;
  // Object.assign, not spread: on Node 20 a spread of a rest object gives
  // each result a hidden class of its own (~200 bytes per stored event).
  return ssid === undefined ? rest : Object.assign(rest, { network: digestNetworkName(ssid) });
}
