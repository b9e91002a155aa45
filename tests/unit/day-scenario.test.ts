import t from 'tap';
import type { SensorEvent } from '../../core/events.js';
import { ownerSettingsSchema } from '../../core/owner-settings.js';
import { PresenceHub } from '../../core/presence-hub.js';

/**
 * A day replayed minute by minute through the hub (Europe/Berlin, UTC+2):
 * asleep, wake up, drive to the office (with a stop at a light), desk,
 * meeting, a call in the meeting, walking past the office door at lunch,
 * drive home, sleep. The whole timeline of shown changes is asserted, so a
 * blip that flapped the state would add a line.
 */
const DAY = '2026-05-04';
const at = (hhmm: string) => Date.parse(`${DAY}T${hhmm}:00Z`) - 2 * 3_600_000; // local time -> UTC
const iso = (hhmm: string) => new Date(at(hhmm)).toISOString();
const WATCH = '11111111-1111-4111-8111-111111111111';
const PHONE = '22222222-2222-4222-8222-222222222222';
const LAPTOP = '33333333-3333-4333-8333-333333333333';
const DESK = '44444444-4444-4444-8444-444444444444';
const HOME_WIFI = 'HomeWifiDigest00000000';

const owner = ownerSettingsSchema.parse({
  timeZone: 'Europe/Berlin',
  zones: [
    { name: 'Home', sphere: 'home', placeType: 'residence', circle: { latitude: 48.15, longitude: 11.55, radiusMeters: 100 }, networks: [HOME_WIFI] },
    { name: 'Office', sphere: 'work', placeType: 'office', circle: { latitude: 48.137, longitude: 11.575, radiusMeters: 150 }, rooms: ['Desk 4.12'] },
  ],
});

type EventBody = SensorEvent extends infer E ? (E extends SensorEvent ? Omit<E, 'at'> : never) : never;
const events: [string, string, SensorEvent][] = [];
const add = (hhmm: string, device: string, event: EventBody) => events.push([hhmm, device, { ...event, at: iso(hhmm) } as SensorEvent]);
const minutes = (from: string, to: string, step: number) => {
  const out: string[] = [];
  for (let m = at(from); m <= at(to); m += step * 60_000) out.push(new Date(m + 2 * 3_600_000).toISOString().slice(11, 16));
  return out;
};

// The watch is worn all day and reports its heart rate every 10 minutes.
add('06:00', WATCH, { kind: 'worn', state: 'on' });
add('06:00', WATCH, { kind: 'sleep', state: 'asleep' });
for (const m of minutes('06:00', '23:50', 10)) add(m, WATCH, { kind: 'heart-rate', bpm: 60 });
add('06:50', WATCH, { kind: 'sleep', state: 'awake' });
// The phone reports input every 10 minutes from waking up (its heartbeat).
for (const m of minutes('06:55', '23:55', 10)) add(m, PHONE, { kind: 'user-input', state: 'active' });
// Morning at home.
add('06:55', PHONE, { kind: 'network', connection: 'wifi', network: HOME_WIFI });
// Drive to work, with a one-minute stop at a light.
add('07:30', PHONE, { kind: 'network', connection: 'cellular' });
add('07:30', PHONE, { kind: 'motion', activity: 'in-vehicle', confidence: 90, since: iso('07:30') });
for (const m of minutes('07:30', '07:55', 5)) add(m, PHONE, { kind: 'location', latitude: 48.2, longitude: 11.7, accuracy: 30 });
add('07:40', PHONE, { kind: 'motion', activity: 'still', confidence: 90, since: iso('07:40') });
add('07:41', PHONE, { kind: 'motion', activity: 'in-vehicle', confidence: 90, since: iso('07:41') });
// Arrive: walking into the office, at the desk.
add('08:00', PHONE, { kind: 'motion', activity: 'walking', confidence: 90, since: iso('08:00') });
add('08:01', PHONE, { kind: 'location', latitude: 48.1371, longitude: 11.5751, accuracy: 20 });
// The desk sensor re-reports every 10 minutes while occupied.
for (const m of [...minutes('08:05', '11:55', 10), ...minutes('12:40', '16:50', 10)]) add(m, DESK, { kind: 'occupancy', room: 'Desk 4.12', occupied: true });
for (const m of minutes('08:05', '16:55', 10)) add(m, LAPTOP, { kind: 'user-input', state: 'active' });
// A meeting 09:00-10:00 with a call in it.
add('08:55', LAPTOP, { kind: 'calendar', state: 'busy', start: iso('09:00'), end: iso('10:00') });
add('09:30', PHONE, { kind: 'call', state: 'in-call' });
add('09:40', PHONE, { kind: 'call', state: 'idle' });
// Lunch in the canteen: away from the desk, still inside the office zone.
add('12:00', DESK, { kind: 'occupancy', room: 'Desk 4.12', occupied: false });
add('12:05', PHONE, { kind: 'location', latitude: 48.1375, longitude: 11.5755, accuracy: 25 });
// Drive home.
add('17:00', DESK, { kind: 'occupancy', room: 'Desk 4.12', occupied: false });
add('17:00', PHONE, { kind: 'motion', activity: 'in-vehicle', confidence: 90, since: iso('17:00') });
for (const m of minutes('17:00', '17:25', 5)) add(m, PHONE, { kind: 'location', latitude: 48.2, longitude: 11.7, accuracy: 30 });
add('17:30', PHONE, { kind: 'motion', activity: 'walking', confidence: 90, since: iso('17:30') });
add('17:31', PHONE, { kind: 'network', connection: 'wifi', network: HOME_WIFI });
// Bed.
add('22:30', WATCH, { kind: 'sleep', state: 'asleep' });

function replay(): string[] {
  const hub = new PresenceHub({ offlineAfterMs: 30 * 60_000 }, () => owner);
  const timeline: string[] = [];
  const byTime = [...events].sort((a, b) => at(a[0]) - at(b[0]));
  let next = 0;
  let previous = '';
  for (const minute of minutes('06:00', '23:59', 1)) {
    const now = at(minute);
    while (next < byTime.length && at((byTime[next] as [string, string, SensorEvent])[0]) <= now) {
      const [, device, event] = byTime[next++] as [string, string, SensorEvent];
      hub.apply('alice', device, [event], now);
    }
    const s = hub.current('alice', now);
    const line = `${s.availability} [${s.activities.join(',')}] @${s.place?.zone ?? '-'}${s.place?.sphere ? `/${s.place.sphere}` : ''}`;
    if (line !== previous) timeline.push(`${minute} ${line}`);
    previous = line;
  }
  return timeline;
}

t.test('a whole day, minute by minute', async (t) => {
  t.same(replay(), [
    '06:00 do-not-disturb [sleeping] @-',
    '06:50 available [] @-',
    '06:55 available [] @Home/home',
    '07:30 available [] @-',
    '07:32 busy [steering] @-',
    '08:01 busy [steering,working] @Office/work',
    '08:02 available [working] @Office/work',
    '09:00 busy [meeting,working] @Office/work',
    '09:30 busy [on-the-phone,meeting,working] @Office/work',
    '09:40 busy [meeting,working] @Office/work',
    '10:00 available [working] @Office/work',
    '17:00 available [] @-',
    '17:02 busy [steering] @-',
    '17:31 busy [steering] @Home/home',
    '17:32 available [] @Home/home',
    '22:30 do-not-disturb [sleeping] @Home/home',
  ]);
});
