import t from 'tap';
import { derivePresence } from '../../core/derive-presence.js';
import type { SensorEvent } from '../../core/events.js';
import { toSignal } from '../../core/signal-store.js';

const NOW = Date.parse('2026-05-04T10:30:00Z');
const settings = { offlineAfterMs: 15 * 60_000 };
const iso = (offsetMs: number) => new Date(NOW + offsetMs).toISOString();
const phone = '11111111-1111-4111-8111-111111111111';
const laptop = '22222222-2222-4222-8222-222222222222';

const call = (state: 'idle' | 'ringing' | 'in-call', ago = 0): SensorEvent => ({ kind: 'call', at: iso(-ago), state });
const calendar = (state: 'busy' | 'free' | 'tentative' | 'out-of-office', startIn: number, endIn: number, ago = 0): SensorEvent => ({
  kind: 'calendar',
  at: iso(-ago),
  state,
  start: iso(startIn),
  end: iso(endIn),
});

const cases: { name: string; signals: [string, SensorEvent][]; availability: string; activities: string[]; validUntil?: number }[] = [
  { name: 'no signal at all -> offline', signals: [], availability: 'offline', activities: [] },
  { name: 'active call -> on-the-phone, busy', signals: [[phone, call('in-call')]], availability: 'busy', activities: ['on-the-phone'] },
  { name: 'ringing is not a call yet', signals: [[phone, call('ringing')]], availability: 'available', activities: [] },
  { name: 'call ended -> available', signals: [[phone, call('idle')]], availability: 'available', activities: [] },
  {
    name: 'busy calendar entry covering now -> meeting, busy',
    signals: [[laptop, calendar('busy', -60_000, 30 * 60_000)]],
    availability: 'busy',
    activities: ['meeting'],
    validUntil: NOW + 15 * 60_000, // silence comes before the meeting ends
  },
  { name: 'tentative entry does not make busy', signals: [[laptop, calendar('tentative', -60_000, 60_000)]], availability: 'available', activities: [] },
  {
    name: 'meeting in the future -> available until it starts',
    signals: [[laptop, calendar('busy', 5 * 60_000, 35 * 60_000)]],
    availability: 'available',
    activities: [],
    validUntil: NOW + 5 * 60_000,
  },
  { name: 'meeting that ended -> available', signals: [[laptop, calendar('busy', -60 * 60_000, -60_000)]], availability: 'available', activities: [] },
  {
    name: 'call during a meeting -> both activities, call first',
    signals: [
      [phone, call('in-call')],
      [laptop, calendar('busy', -60_000, 60_000)],
    ],
    availability: 'busy',
    activities: ['on-the-phone', 'meeting'],
    validUntil: NOW + 60_000,
  },
  { name: 'out of office -> away', signals: [[laptop, calendar('out-of-office', -60_000, 3_600_000)]], availability: 'away', activities: ['away'] },
  {
    name: 'call beats out of office (both listed)',
    signals: [
      [phone, call('in-call')],
      [laptop, calendar('out-of-office', -60_000, 3_600_000)],
    ],
    availability: 'busy',
    activities: ['on-the-phone', 'away'],
  },
  {
    name: 'silent for the offline time -> offline, even mid-call',
    signals: [[phone, call('in-call', 15 * 60_000)]],
    availability: 'offline',
    activities: [],
  },
  {
    name: 'a device silent for the offline time stops counting, even if another speaks',
    signals: [
      [phone, call('in-call', 3 * 3_600_000)],
      [laptop, { kind: 'user-input', at: iso(0), state: 'active' }],
    ],
    availability: 'available',
    activities: [],
  },
  {
    name: 'a busy calendar entry from a silent device stops counting',
    signals: [
      [laptop, calendar('busy', -60_000, 3_600_000, 20 * 60_000)],
      [phone, call('idle')],
    ],
    availability: 'available',
    activities: [],
  },
  {
    name: 'one device quiet for less than the offline time, another recent -> both count',
    signals: [
      [phone, call('in-call', 14 * 60_000)],
      [laptop, { kind: 'user-input', at: iso(0), state: 'active' }],
    ],
    availability: 'busy',
    activities: ['on-the-phone'],
    validUntil: NOW + 60_000, // the phone goes silent first
  },
];

const watch = '33333333-3333-4333-8333-333333333333';
const ev = {
  asleep: { kind: 'sleep', at: iso(0), state: 'asleep' } as SensorEvent,
  awake: { kind: 'sleep', at: iso(0), state: 'awake' } as SensorEvent,
  notWorn: { kind: 'worn', at: iso(0), state: 'off' } as SensorEvent,
  driving: { kind: 'motion', at: iso(0), activity: 'in-vehicle', confidence: 90, since: iso(-600_000) } as SensorEvent,
  unsureDriving: { kind: 'motion', at: iso(0), activity: 'in-vehicle', confidence: 40, since: iso(-600_000) } as SensorEvent,
  walking: { kind: 'motion', at: iso(0), activity: 'walking', confidence: 95 } as SensorEvent,
  focus: { kind: 'focus', at: iso(0), state: 'on' } as SensorEvent,
  headsetCall: { kind: 'headset', at: iso(0), onHead: true, inCall: true, muted: false } as SensorEvent,
  idle: { kind: 'user-input', at: iso(0), state: 'idle', lastInput: iso(-600_000) } as SensorEvent,
  justIdle: { kind: 'user-input', at: iso(0), state: 'idle', lastInput: iso(-60_000) } as SensorEvent,
  active: { kind: 'user-input', at: iso(0), state: 'active' } as SensorEvent,
  location: { kind: 'location', at: iso(0), latitude: 48.1, longitude: 11.5, accuracy: 20 } as SensorEvent,
};

/** The documented precedence: asleep > in call > meeting > driving > focus > out of office > idle. */
cases.push(
  { name: 'asleep -> sleeping, do-not-disturb', signals: [[watch, ev.asleep]], availability: 'do-not-disturb', activities: ['sleeping'] },
  { name: 'a watch not worn says nothing about sleep', signals: [[watch, ev.asleep], [watch, ev.notWorn]], availability: 'available', activities: [] },
  { name: 'awake -> available', signals: [[watch, ev.awake]], availability: 'available', activities: [] },
  { name: 'asleep beats a call', signals: [[watch, ev.asleep], [phone, call('in-call')]], availability: 'do-not-disturb', activities: ['sleeping', 'on-the-phone'] },
  { name: 'a headset in a call -> on-the-phone', signals: [[laptop, ev.headsetCall]], availability: 'busy', activities: ['on-the-phone'] },
  { name: 'confident in-vehicle motion -> steering, busy', signals: [[phone, ev.driving]], availability: 'busy', activities: ['steering'] },
  { name: 'unsure in-vehicle motion does not count', signals: [[phone, ev.unsureDriving]], availability: 'available', activities: [] },
  { name: 'walking is not driving', signals: [[phone, ev.walking]], availability: 'available', activities: [] },
  {
    name: 'meeting beats driving (both listed)',
    signals: [[phone, ev.driving], [laptop, calendar('busy', -60_000, 60_000)]],
    availability: 'busy',
    activities: ['meeting', 'steering'],
    validUntil: NOW + 60_000,
  },
  { name: 'focus on -> do-not-disturb', signals: [[phone, ev.focus]], availability: 'do-not-disturb', activities: [] },
  { name: 'driving beats focus', signals: [[phone, ev.focus], [laptop, ev.driving]], availability: 'busy', activities: ['steering'] },
  { name: 'focus beats out of office', signals: [[phone, ev.focus], [laptop, calendar('out-of-office', -60_000, 3_600_000)]], availability: 'do-not-disturb', activities: ['away'] },
  { name: 'idle user input for idleAfterSeconds -> away', signals: [[laptop, ev.idle]], availability: 'away', activities: [] },
  {
    name: 'idle for less than idleAfterSeconds -> still available, until the threshold',
    signals: [[laptop, ev.justIdle]],
    availability: 'available',
    activities: [],
    validUntil: NOW + 4 * 60_000,
  },
  { name: 'focus beats idle', signals: [[laptop, ev.idle], [phone, ev.focus]], availability: 'do-not-disturb', activities: [] },
  { name: 'a location alone keeps the owner online, available', signals: [[phone, ev.location]], availability: 'available', activities: [] },
  { name: 'only a heart rate: alive, reachability unknown', signals: [[watch, { kind: 'heart-rate', at: iso(0), bpm: 60 } as SensorEvent]], availability: 'unknown', activities: [] },
  {
    name: 'a heart rate and a sleep report: asleep',
    signals: [
      [watch, { kind: 'heart-rate', at: iso(0), bpm: 52 } as SensorEvent],
      [watch, ev.asleep],
    ],
    availability: 'do-not-disturb',
    activities: ['sleeping'],
  },
);

for (const c of cases) {
  t.test(c.name, async (t) => {
    const derived = derivePresence(
      c.signals.map(([device, event]) => toSignal(device, event)),
      settings,
      NOW,
    );
    t.equal(derived.state.availability, c.availability);
    t.same(derived.state.activities, c.activities);
    if (c.validUntil !== undefined) t.equal(derived.validUntil, c.validUntil);
  });
}

t.test('validUntil is the instant the answer changes', async (t) => {
  const signals = [toSignal(laptop, calendar('busy', -60_000, 5 * 60_000))];
  const before = derivePresence(signals, settings, NOW);
  t.equal(before.state.availability, 'busy');
  t.equal(before.validUntil, NOW + 5 * 60_000);
  const after = derivePresence(signals, settings, before.validUntil);
  t.equal(after.state.availability, 'available', 'the meeting is over at its end');
  const silent = derivePresence(signals, settings, after.validUntil);
  t.equal(silent.state.availability, 'offline', 'then the owner goes silent');
  t.equal(silent.validUntil, Infinity);
});

t.test('a device clock slightly ahead counts as now', async (t) => {
  const derived = derivePresence([toSignal(phone, call('in-call', -30_000))], settings, NOW);
  t.equal(derived.state.lastSeen, NOW);
  t.equal(derived.validUntil, NOW + 30_000, 're-derived when its time comes');
});

t.test('most recent user input across devices wins (RFC 4480 §3.11)', async (t) => {
  const derived = derivePresence(
    [
      toSignal(phone, { kind: 'user-input', at: iso(-1000), state: 'active' }),
      toSignal(laptop, { kind: 'user-input', at: iso(-500), state: 'idle', lastInput: iso(-600_000) }),
    ],
    settings,
    NOW,
  );
  t.same(derived.state.userInput, { state: 'idle', lastInput: NOW - 600_000 });
});

t.test('a lastInput after its own report counts as the report time: idleness is not held off', async (t) => {
  // Reported idle 400 s ago (idle after 300 s by default), with a lastInput an hour ahead of the report.
  const derived = derivePresence([toSignal(laptop, { kind: 'user-input', at: iso(-400_000), state: 'idle', lastInput: iso(3_600_000) })], settings, NOW);
  t.same(derived.state.userInput, { state: 'idle', lastInput: NOW - 400_000 }, 'not an hour ahead');
  t.equal(derived.state.availability, 'away', 'idle from the report on');
});
