import { z } from 'zod';

/**
 * Sensor events as devices publish them (the MQTT payload contract).
 *
 * A payload is one event or `{ "events": [...] }` with up to MAX_EVENTS_PER_MESSAGE.
 * `at` is the device's own clock (RFC 3339 with offset); the service refuses
 * events dated further in the future than MAX_CLOCK_SKEW_SECONDS.
 * Unknown fields are stripped, never stored (a calendar entry's subject, say).
 */
export const MAX_EVENTS_PER_MESSAGE = 64;

const at = z.iso.datetime({ offset: true });

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
    /** The entry that is current at `at`; `free` clears a previous one. */
    state: z.enum(['busy', 'free', 'tentative', 'out-of-office']),
    start: z.iso.datetime({ offset: true }),
    end: z.iso.datetime({ offset: true }),
  })
  .refine((e) => Date.parse(e.end) > Date.parse(e.start), { message: 'end must be after start', path: ['end'] });

export const userInputEventSchema = z.object({
  kind: z.literal('user-input'),
  at,
  state: z.enum(['active', 'idle']),
  lastInput: z.iso.datetime({ offset: true }).optional(),
});

export const sensorEventSchema = z.discriminatedUnion('kind', [callEventSchema, calendarEventSchema, userInputEventSchema]);

export const sensorMessageSchema = z.union([
  sensorEventSchema.transform((event) => [event]),
  z.object({ events: z.array(sensorEventSchema).min(1).max(MAX_EVENTS_PER_MESSAGE) }).transform((m) => m.events),
]);

export type SensorEvent = z.infer<typeof sensorEventSchema>;
export type SensorEventKind = SensorEvent['kind'];
