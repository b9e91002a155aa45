import { z } from 'zod';
import type { SensorEvent } from '../core/events.js';

/**
 * OwnTracks (https://owntracks.org/booklet/tech/json/) payloads, mapped to
 * the service's own events so an unmodified app in MQTT mode feeds the same
 * signals. Unknown fields are ignored; known ones are validated.
 *
 *   location   -> location (lat, lon, acc), battery (batt, bs), network
 *                 (conn, SSID), geofence enter per region in `inregions`,
 *                 motion (motionactivities)
 *   transition -> geofence enter/leave of region `desc`
 *   lwt, and the types the service has no use for (card, waypoint(s),
 *   status, steps, beacon, cmd, configuration, request) -> nothing
 *
 * OwnTracks reports motion activities without a confidence; the ones it
 * lists are counted at OWNTRACKS_MOTION_CONFIDENCE.
 */
export const OWNTRACKS_MOTION_CONFIDENCE = 80;

const tst = z.number().int().positive().max(1e11);
const region = z.string().min(1).max(64);

const locationSchema = z.object({
  _type: z.literal('location'),
  lat: z.number().min(-90).max(90),
  lon: z.number().min(-180).max(180),
  tst,
  acc: z.number().min(0).max(100_000).optional(),
  batt: z.number().int().min(0).max(100).optional(),
  /** 0 unknown, 1 unplugged, 2 charging, 3 full. */
  bs: z.number().int().min(0).max(3).optional(),
  /** w Wi-Fi, m mobile data, o offline. */
  conn: z.enum(['w', 'm', 'o']).optional(),
  SSID: z.string().min(1).max(32).optional(),
  inregions: z.array(region).max(50).optional(),
  motionactivities: z.union([z.array(z.string().max(32)).max(10), z.string().max(32)]).optional(),
});

const transitionSchema = z.object({
  _type: z.literal('transition'),
  event: z.enum(['enter', 'leave']),
  desc: region,
  tst,
});

const ignoredSchema = z.object({
  _type: z.enum(['lwt', 'card', 'waypoint', 'waypoints', 'status', 'steps', 'beacon', 'cmd', 'configuration', 'request', 'encrypted']),
});

export const ownTracksMessageSchema = z.discriminatedUnion('_type', [locationSchema, transitionSchema, ignoredSchema]);
export type OwnTracksMessage = z.infer<typeof ownTracksMessageSchema>;

const motionMap: Record<string, 'still' | 'walking' | 'running' | 'cycling' | 'in-vehicle'> = {
  stationary: 'still',
  walking: 'walking',
  running: 'running',
  cycling: 'cycling',
  automotive: 'in-vehicle',
};

export function ownTracksToEvents(message: OwnTracksMessage): SensorEvent[] {
  switch (message._type) {
    case 'location': {
      const at = new Date(message.tst * 1000).toISOString();
      // An unknown accuracy is treated as the worst: inference ignores imprecise fixes.
      const events: SensorEvent[] = [{ kind: 'location', at, latitude: message.lat, longitude: message.lon, accuracy: message.acc ?? 100_000 }];
      if (message.batt !== undefined) events.push({ kind: 'battery', at, level: message.batt, charging: message.bs === 2 || message.bs === 3 });
      if (message.conn !== undefined) {
        const connection = message.conn === 'w' ? 'wifi' : message.conn === 'm' ? 'cellular' : 'offline';
        events.push({ kind: 'network', at, connection, ...(connection === 'wifi' && message.SSID ? { ssid: message.SSID } : {}) });
      }
      for (const zone of new Set(message.inregions ?? [])) events.push({ kind: 'geofence', at, zone, transition: 'enter' });
      const activities = typeof message.motionactivities === 'string' ? [message.motionactivities] : (message.motionactivities ?? []);
      // Own keys only: an activity named `constructor` or `toString` is an unknown one, not Object.prototype's.
      const activity = activities.map((a) => (Object.hasOwn(motionMap, a) ? motionMap[a] : undefined)).find((a) => a !== undefined);
      if (activity) events.push({ kind: 'motion', at, activity, confidence: OWNTRACKS_MOTION_CONFIDENCE });
      return events;
    }
    case 'transition':
      return [{ kind: 'geofence', at: new Date(message.tst * 1000).toISOString(), zone: message.desc, transition: message.event }];
    default:
      return [];
  }
}
