import t from 'tap';
import { derivePresence, distanceMeters, localTime } from '../../core/derive-presence.js';
import type { SensorEvent } from '../../core/events.js';
import { ownerSettingsSchema } from '../../core/owner-settings.js';
import { toSignal } from '../../core/signal-store.js';

/** Owner settings, places, dwell times and the trace, with an explicit now. */
const NOW = Date.parse('2026-05-04T10:30:00Z'); // a Monday; 12:30 in Berlin (CEST, +120)
const phone = '11111111-1111-4111-8111-111111111111';
const desk = '22222222-2222-4222-8222-222222222222';
const settings = { offlineAfterMs: 15 * 60_000 };
const iso = (offsetMs: number) => new Date(NOW + offsetMs).toISOString();
const owner = ownerSettingsSchema.parse({
  timeZone: 'Europe/Berlin',
  zones: [
    { name: 'Home', sphere: 'home', placeType: 'residence', circle: { latitude: 48.15, longitude: 11.55, radiusMeters: 100 }, networks: ['HOMEdigestHOMEdigest12'] },
    { name: 'Office', sphere: 'work', placeType: 'office', circle: { latitude: 48.137, longitude: 11.575, radiusMeters: 150 }, geofences: ['Work', 'Office'], rooms: ['Desk 4.12'] },
  ],
});
const derive = (signals: [string, SensorEvent][], now = NOW, o = owner) =>
  derivePresence(
    signals.map(([d, e]) => toSignal(d, e)),
    settings,
    now,
    o,
  );

t.test('place from each kind of evidence', async (t) => {
  const cases: [string, [string, SensorEvent][], string | undefined][] = [
    ['geofence enter (by alias)', [[phone, { kind: 'geofence', at: iso(-60_000), zone: 'Work', transition: 'enter' }]], 'Office'],
    ['accurate fix inside the circle', [[phone, { kind: 'location', at: iso(0), latitude: 48.1372, longitude: 11.5752, accuracy: 20 }]], 'Office'],
    ['fix whose accuracy circle touches the zone', [[phone, { kind: 'location', at: iso(0), latitude: 48.139, longitude: 11.575, accuracy: 120 }]], 'Office'],
    ['inaccurate fix ignored', [[phone, { kind: 'location', at: iso(0), latitude: 48.137, longitude: 11.575, accuracy: 900 }]], undefined],
    ['occupied desk', [[desk, { kind: 'occupancy', at: iso(0), room: 'Desk 4.12', occupied: true }]], 'Office'],
    ['BLE nearby', [[desk, { kind: 'ble-room', at: iso(0), id: 'alice-phone', room: 'Desk 4.12', distance: 1.5 }]], 'Office'],
    ['BLE too far', [[desk, { kind: 'ble-room', at: iso(0), id: 'alice-phone', room: 'Desk 4.12', distance: 12 }]], undefined],
    ['tagged Wi-Fi', [[phone, { kind: 'network', at: iso(0), connection: 'wifi', network: 'HOMEdigestHOMEdigest12' }]], 'Home'],
    [
      'the newest evidence wins',
      [
        [phone, { kind: 'geofence', at: iso(-3_600_000), zone: 'Office', transition: 'enter' }],
        [desk, { kind: 'network', at: iso(-60_000), connection: 'wifi', network: 'HOMEdigestHOMEdigest12' }],
      ],
      'Home',
    ],
    [
      'a newer accurate fix outside every zone: elsewhere',
      [
        [phone, { kind: 'geofence', at: iso(-600_000), zone: 'Office', transition: 'enter' }],
        [desk, { kind: 'location', at: iso(0), latitude: 48.2, longitude: 11.7, accuracy: 30 }],
      ],
      undefined,
    ],
  ];
  for (const [name, signals, zone] of cases) t.equal(derive(signals).state.place?.zone, zone, name);
  const office = derive([[phone, { kind: 'geofence', at: iso(0), zone: 'Office', transition: 'enter' }]]).state;
  t.same(office.place, { zone: 'Office', placeType: 'office', sphere: 'work' });
  t.match(office.trace.place, { rule: 'geofence Office entered', signals: [`${phone}/geofence/Office`] });
});

t.test('the place implies travel, meal or working', async (t) => {
  const places = ownerSettingsSchema.parse({
    ...owner,
    zones: [
      ...owner.zones,
      { name: 'Airport', placeType: 'airport', geofences: ['MUC'] },
      { name: 'Canteen', placeType: 'restaurant', geofences: ['Canteen'], sphere: 'work' },
    ],
  });
  const at = (zone: string): [string, SensorEvent] => [phone, { kind: 'geofence', at: iso(0), zone, transition: 'enter' }];
  t.same(derive([at('MUC')], NOW, places).state.activities, ['travel']);
  t.same(derive([at('Canteen')], NOW, places).state.activities, ['meal'], 'a meal, even at work');
  t.same(derive([at('Office')], NOW, places).state.activities, ['working']);
  t.equal(derive([at('Office')], NOW, places).state.availability, 'available', 'working does not make busy');
  t.same(derive([at('Office'), [phone, { kind: 'call', at: iso(0), state: 'in-call' }]], NOW, places).state.activities, ['on-the-phone', 'working'], 'after the sensed ones');
  t.same(derive([at('Office'), [desk, { kind: 'sleep', at: iso(0), state: 'asleep' }]], NOW, places).state.activities, ['sleeping'], 'none while asleep');
});

t.test('leaving a geofence counts only after the leave dwell', async (t) => {
  const left = derive([[phone, { kind: 'geofence', at: iso(-60_000), zone: 'Office', transition: 'leave' }]]);
  t.equal(left.state.place?.zone, 'Office', 'a minute after leaving: not confirmed yet');
  t.ok(left.validUntil <= NOW - 60_000 + 180_000, 're-derived by the time the leave is confirmed');
  const confirmed = NOW - 60_000 + 180_000;
  t.equal(derive([[phone, { kind: 'geofence', at: iso(-60_000), zone: 'Office', transition: 'leave' }], [desk, { kind: 'call', at: iso(120_000), state: 'idle' }]], confirmed).state.place, undefined);
});

t.test('driving needs the activity to last the dwell time from its start', async (t) => {
  const driving = (since: number): SensorEvent => ({ kind: 'motion', at: iso(0), activity: 'in-vehicle', confidence: 90, since: iso(since) });
  const early = derive([[phone, driving(-60_000)]]);
  t.same(early.state.activities, [], 'one minute in: not yet');
  t.equal(early.validUntil, NOW + 60_000, 're-derive when the dwell completes');
  t.same(derive([[phone, driving(-60_000)]], NOW + 60_000).state.activities, ['steering']);
  t.same(derive([[phone, driving(-10 * 60_000)]]).state.activities, ['steering']);
});

t.test('a brief stop does not end a drive; a real one does', async (t) => {
  const motion = (at: number, activity: 'in-vehicle' | 'still' | 'walking', since = at, confidence = 90): [string, SensorEvent] => [
    phone,
    { kind: 'motion', at: iso(at), activity, confidence, since: iso(since) },
  ];
  const blip = derive([motion(-20 * 60_000, 'in-vehicle'), motion(-5 * 60_000, 'still'), motion(-4 * 60_000, 'in-vehicle')]);
  t.same(blip.state.activities, ['steering'], 'one minute at a light: still driving');
  const stopped = derive([motion(-20 * 60_000, 'in-vehicle'), motion(-3 * 60_000, 'walking')]);
  t.same(stopped.state.activities, [], 'walking for three minutes: the drive is over');
  const justStopped = derive([motion(-20 * 60_000, 'in-vehicle'), motion(-60_000, 'still')]);
  t.same(justStopped.state.activities, ['steering'], 'stopped a minute ago: not yet over');
  t.equal(justStopped.validUntil, NOW + 60_000, 'over once the stop lasts the dwell');
  const unsure = derive([motion(-20 * 60_000, 'in-vehicle'), motion(-10 * 60_000, 'still', -10 * 60_000, 30)]);
  t.same(unsure.state.activities, ['steering'], 'an unsure still does not end it');
  const periodic = derive([0, 1, 2, 3].map((m) => motion(-m * 60_000, 'in-vehicle', -m * 60_000)));
  t.same(periodic.state.activities, ['steering'], 'periodic reports without a start: dwell from the first of the run');
});

t.test("a report's start does not reach back past the device's own earlier report of another activity", async (t) => {
  const motion = (at: number, activity: 'in-vehicle' | 'still', since: number): [string, SensorEvent] => [phone, { kind: 'motion', at: iso(at), activity, confidence: 90, since: iso(since) }];
  // Still ten minutes ago; now "in a vehicle since half an hour ago": the
  // newest report wins, from when the device last said otherwise. Sorted by
  // the claimed start alone, the older "still" came last and hid the drive.
  const contradicted = derive([motion(-10 * 60_000, 'still', -10 * 60_000), motion(-60_000, 'in-vehicle', -30 * 60_000)]);
  t.same(contradicted.state.activities, ['steering'], 'driving since the still report, ten minutes: past the dwell');
  const recent = derive([motion(-60_000, 'still', -60_000), motion(-30_000, 'in-vehicle', -30 * 60_000)]);
  t.same(recent.state.activities, [], 'driving for a minute at most (the still report was a minute ago): not yet');
  t.equal(recent.validUntil, NOW - 60_000 + 2 * 60_000, 'due when the dwell from the still report completes');
  const alone = derive([motion(-60_000, 'in-vehicle', -30 * 60_000)]);
  t.same(alone.state.activities, ['steering'], 'with nothing to contradict it, the claimed start stands');
});

t.test('quiet hours and the time offset come from the owner time zone', async (t) => {
  const quiet = ownerSettingsSchema.parse({ ...owner, quietHours: { from: '12:00', to: '13:00' } });
  const on = derive([[phone, { kind: 'call', at: iso(0), state: 'idle' }]], NOW, quiet);
  t.equal(on.state.availability, 'do-not-disturb', '12:30 local is inside 12:00-13:00');
  t.equal(on.state.trace.availability?.rule, 'quiet hours');
  t.equal(on.state.timeOffsetMinutes, 120, 'Berlin is UTC+2 in May');
  t.ok(on.validUntil <= NOW + 15 * 60_000, 're-derived at least every 15 minutes');
  const off = ownerSettingsSchema.parse({ ...owner, quietHours: { from: '22:00', to: '07:00' } });
  t.equal(derive([[phone, { kind: 'call', at: iso(0), state: 'idle' }]], NOW, off).state.availability, 'available');
  t.equal(localTime('America/New_York', Date.parse('2026-01-15T12:00:00Z')).offsetMinutes, -300);
  t.equal(localTime('Asia/Kolkata', NOW).offsetMinutes, 330);
});

t.test('a state older than its lifetime stops counting even while its device reports', async (t) => {
  const stuck = derive([
    [phone, { kind: 'call', at: iso(-5 * 3_600_000), state: 'in-call' }],
    [phone, { kind: 'user-input', at: iso(0), state: 'active' }],
  ]);
  t.equal(stuck.state.availability, 'available', 'a call reported five hours ago and never ended: not on the phone');
  const recent = derive([
    [phone, { kind: 'call', at: iso(-3 * 3_600_000), state: 'in-call' }],
    [phone, { kind: 'user-input', at: iso(0), state: 'active' }],
  ]);
  t.equal(recent.state.availability, 'busy', 'three hours: still a (long) call');
  const anHourLater = derive(
    [
      [phone, { kind: 'call', at: iso(-3 * 3_600_000), state: 'in-call' }],
      [phone, { kind: 'user-input', at: iso(3_600_000), state: 'active' }],
    ],
    NOW + 3_600_000,
  );
  t.equal(anHourLater.state.availability, 'available', 'at four hours the lifetime ends');
});

t.test('ignored signal kinds never count', async (t) => {
  const ignoring = ownerSettingsSchema.parse({ ...owner, ignore: ['call'] });
  t.equal(derive([[phone, { kind: 'call', at: iso(0), state: 'in-call' }], [phone, { kind: 'user-input', at: iso(0), state: 'active' }]], NOW, ignoring).state.availability, 'available');
});

t.test('devices are service tuples: open while live, closed once silent', async (t) => {
  const state = derive([
    [phone, { kind: 'call', at: iso(0), state: 'idle' }],
    [desk, { kind: 'occupancy', at: iso(-20 * 60_000), room: 'Desk 4.12', occupied: true }],
  ]).state;
  t.same(state.devices, [
    { id: phone, lastSeen: NOW, live: true },
    { id: desk, lastSeen: NOW - 20 * 60_000, live: false },
  ]);
  t.equal(state.place, undefined, 'the silent desk sensor no longer places the owner');
});

t.test('every shown field has a trace', async (t) => {
  const state = derive([
    [phone, { kind: 'call', at: iso(0), state: 'in-call' }],
    [phone, { kind: 'user-input', at: iso(0), state: 'active' }],
    [desk, { kind: 'occupancy', at: iso(0), room: 'Desk 4.12', occupied: true }],
  ]).state;
  t.match(state.trace, {
    availability: { rule: 'in a call', signals: [`${phone}/call`] },
    'activity:on-the-phone': { signals: [`${phone}/call`] },
    userInput: { signals: [`${phone}/user-input`] },
    place: { rule: 'room Desk 4.12 occupied' },
  });
});

t.test('settings are validated', async (t) => {
  t.notOk(ownerSettingsSchema.safeParse({ timeZone: 'Mars/Olympus' }).success);
  t.notOk(ownerSettingsSchema.safeParse({ quietHours: { from: '22:00', to: '07:00' } }).success, 'quiet hours need a time zone');
  t.notOk(ownerSettingsSchema.safeParse({ zones: [{ name: 'A' }, { name: 'A' }] }).success, 'zone names unique');
  t.notOk(ownerSettingsSchema.safeParse({ zones: [{ name: 'A', circle: { latitude: 0, longitude: 0, radiusMeters: 5 } }] }).success, 'radius at least 20 m');
  t.notOk(ownerSettingsSchema.safeParse({ surprise: true }).success, 'unknown settings refused');
  t.ok(Math.abs(distanceMeters(48.137, 11.575, 48.15, 11.55) - 2337) < 30, 'haversine');
});

t.test('a confirmed leave outweighs older evidence for the zone', async (t) => {
  const signals: [string, SensorEvent][] = [
    [phone, { kind: 'location', at: iso(-20 * 60_000), latitude: 48.1371, longitude: 11.5751, accuracy: 10 }],
    [phone, { kind: 'geofence', at: iso(-10 * 60_000), zone: 'Office', transition: 'leave' }],
  ];
  t.equal(derive(signals).state.place, undefined, 'the leave is confirmed: the older fix no longer places the owner');
  signals.push([desk, { kind: 'occupancy', at: iso(-60_000), room: 'Desk 4.12', occupied: true }]);
  t.equal(derive(signals).state.place?.zone, 'Office', 'newer evidence brings the owner back');
});

t.test('frequent motion reports and long runs of stops within the window', async (t) => {
  const every10s = Array.from({ length: 21 }, (_, i): [string, SensorEvent] => [phone, { kind: 'motion', at: iso(-200_000 + i * 10_000), activity: 'in-vehicle', confidence: 90 }]);
  t.same(derive(every10s).state.activities, ['steering'], 'reports every 10 s for 200 s: driving');
  const stop = Array.from({ length: 8 }, (_, i): [string, SensorEvent] => [phone, { kind: 'motion', at: iso(-40_000 + i * 5000), activity: 'still', confidence: 90 }]);
  t.same(derive([...every10s.map(([d, e]): [string, SensorEvent] => [d, { ...e, at: new Date(Date.parse(e.at) - 60_000).toISOString() }]), ...stop]).state.activities, ['steering'], '8 still reports over 40 s do not end it');
});

t.test('the derived state does not depend on the order signals arrived in', async (t) => {
  const signals: [string, SensorEvent][] = [
    [phone, { kind: 'motion', at: iso(-300_000), activity: 'in-vehicle', confidence: 90, since: iso(-300_000) }],
    [phone, { kind: 'motion', at: iso(-299_000), activity: 'still', confidence: 90, since: iso(-300_000) }],
    [desk, { kind: 'occupancy', at: iso(-60_000), room: 'Desk 4.12', occupied: true }],
    [phone, { kind: 'network', at: iso(-60_000), connection: 'wifi', network: 'HOMEdigestHOMEdigest12' }],
    [phone, { kind: 'call', at: iso(0), state: 'in-call' }],
  ];
  const a = JSON.stringify(derive(signals).state);
  const b = JSON.stringify(derive([...signals].reverse()).state);
  t.equal(a, b);
});

t.test('quiet hours switch on the exact minute, and the time offset at DST', async (t) => {
  const quiet = ownerSettingsSchema.parse({ ...owner, quietHours: { from: '13:00', to: '14:00' } });
  const justBefore = Date.parse('2026-05-04T10:59:59.500Z'); // 12:59:59.500 in Berlin
  const heartbeat: [string, SensorEvent][] = [[phone, { kind: 'call', at: new Date(justBefore).toISOString(), state: 'idle' }]];
  const before = derive(heartbeat, justBefore, quiet);
  t.equal(before.state.availability, 'available');
  t.equal(before.validUntil, Date.parse('2026-05-04T11:00:00.000Z'), 're-derived exactly at 13:00');
  t.equal(derive(heartbeat, before.validUntil, quiet).state.availability, 'do-not-disturb');
  const dst = Date.parse('2026-10-25T00:59:30Z'); // 02:59:30 CEST; at 01:00Z clocks go back to 02:00 CET
  const tz = ownerSettingsSchema.parse({ timeZone: 'Europe/Berlin' });
  const d = derive([[phone, { kind: 'call', at: new Date(dst).toISOString(), state: 'idle' }]], dst, tz);
  t.equal(d.state.timeOffsetMinutes, 120);
  t.equal(d.validUntil, Date.parse('2026-10-25T01:00:00Z'));
  t.equal(derive([[phone, { kind: 'call', at: new Date(dst).toISOString(), state: 'idle' }]], d.validUntil, tz).state.timeOffsetMinutes, 60);
});

t.test('ignored kinds do not even keep the owner online', async (t) => {
  const ignoring = ownerSettingsSchema.parse({ ...owner, ignore: ['location'] });
  t.equal(derive([[phone, { kind: 'location', at: iso(0), latitude: 1, longitude: 1, accuracy: 5 }]], NOW, ignoring).state.availability, 'offline');
});
