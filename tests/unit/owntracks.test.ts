import t from 'tap';
import { decodeMessage } from '../../ingest/decode-message.js';
import { OWNTRACKS_MOTION_CONFIDENCE } from '../../ingest/owntracks.js';

/** Payloads in the shapes the OwnTracks booklet documents (JSON format page). */
const NOW = 1_777_000_000_000;
const tst = Math.floor(NOW / 1000) - 60;
const at = new Date(tst * 1000).toISOString();
const limits = { maxBytes: 16_384, maxClockSkewMs: 300_000 };
const decode = (payload: unknown) => decodeMessage(Buffer.from(JSON.stringify(payload)), limits, NOW, 'owntracks');

t.test('location with the extended data', async (t) => {
  const result = decode({
    _type: 'location',
    acc: 14,
    alt: 510,
    batt: 83,
    bs: 2,
    conn: 'w',
    SSID: 'HomeNet',
    BSSID: 'b0:f2:8:45:94:33',
    lat: 48.137154,
    lon: 11.576124,
    inregions: ['Home'],
    inrids: ['7da7f0'],
    m: 1,
    motionactivities: ['stationary'],
    t: 'u',
    tid: 'AL',
    tst,
    vac: 0,
    vel: 0,
    created_at: tst,
  });
  t.same(result, {
    ok: true,
    events: [
      { kind: 'location', at, latitude: 48.137154, longitude: 11.576124, accuracy: 14 },
      { kind: 'battery', at, level: 83, charging: true },
      { kind: 'network', at, connection: 'wifi', ssid: 'HomeNet' },
      { kind: 'geofence', at, zone: 'Home', transition: 'enter' },
      { kind: 'motion', at, activity: 'still', confidence: OWNTRACKS_MOTION_CONFIDENCE },
    ],
  });
});

t.test('a minimal Android location', async (t) => {
  const result = decode({ _type: 'location', lat: 52.52, lon: 13.405, tst, tid: 'ab', conn: 'm' });
  t.same(result, {
    ok: true,
    events: [
      { kind: 'location', at, latitude: 52.52, longitude: 13.405, accuracy: 100_000 },
      { kind: 'network', at, connection: 'cellular' },
    ],
  });
});

t.test('automotive is driving', async (t) => {
  const result = decode({ _type: 'location', lat: 1, lon: 2, acc: 10, tst, motionactivities: ['automotive'] });
  t.ok(result.ok && result.events.some((e) => e.kind === 'motion' && e.activity === 'in-vehicle'));
});

t.test("an activity named after an object property is an unknown one, not a reason to refuse the location", async (t) => {
  for (const name of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
    const result = decode({ _type: 'location', lat: 1, lon: 2, acc: 10, tst, batt: 80, motionactivities: [name, 'walking'] });
    t.ok(result.ok, `${name}: the location is applied`);
    if (result.ok) {
      t.ok(result.events.some((e) => e.kind === 'battery'), `${name}: with its battery reading`);
      t.ok(result.events.some((e) => e.kind === 'motion' && e.activity === 'walking'), `${name}: and the known activity after it`);
    }
  }
});

t.test('transition (enter and leave of a region)', async (t) => {
  for (const event of ['enter', 'leave'] as const) {
    const result = decode({ _type: 'transition', wtst: tst - 1000, lat: 48.1, lon: 11.5, tst, acc: 30, tid: 'AL', event, desc: 'Office', t: 'c' });
    t.same(result, { ok: true, events: [{ kind: 'geofence', at, zone: 'Office', transition: event }] }, event);
  }
});

t.test('lwt, cards, waypoints and status apply nothing but are not errors', async (t) => {
  for (const payload of [{ _type: 'lwt', tst }, { _type: 'card', name: 'Alice', face: 'iVBOR' }, { _type: 'waypoints', waypoints: [] }, { _type: 'status', iOS: {} }]) {
    t.same(decode(payload), { ok: true, events: [] }, payload._type);
  }
});

t.test('bad OwnTracks payloads are refused whole', async (t) => {
  const cases: [string, unknown, string][] = [
    ['unknown type', { _type: 'teleport', tst }, 'invalid_event'],
    ['latitude out of range', { _type: 'location', lat: 91, lon: 0, tst }, 'invalid_event'],
    ['no timestamp', { _type: 'location', lat: 1, lon: 1 }, 'invalid_event'],
    ['timestamp in seconds as a string', { _type: 'location', lat: 1, lon: 1, tst: String(tst) }, 'invalid_event'],
    ['battery status out of range', { _type: 'location', lat: 1, lon: 1, tst, batt: 50, bs: 7 }, 'invalid_event'],
    ['transition without a region', { _type: 'transition', event: 'enter', tst }, 'invalid_event'],
    ['region with a control character', { _type: 'transition', event: 'enter', desc: 'Of\u0007fice', tst }, 'invalid_event'],
    ['far future', { _type: 'location', lat: 1, lon: 1, tst: tst + 3600 }, 'clock_skew'],
  ];
  for (const [name, payload, reason] of cases) t.same(decode(payload), { ok: false, reason }, name);
});
