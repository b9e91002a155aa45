import fc from 'fast-check';
import t from 'tap';
import { derivePresence } from '../../core/derive-presence.js';
import { sensorEventSchema, type SensorEvent } from '../../core/events.js';
import { LAYOUTS, packSignals, unpackSignals } from '../../core/packed-signals.js';
import { PresenceHub } from '../../core/presence-hub.js';
import type { PresenceState } from '../../core/presence.js';
import { mergeSignal, SignalSet, toSignal, type Signal } from '../../core/signal-store.js';
import { rawEventArbitrary } from '../helpers/event-arbitraries.js';

/**
 * Packed signals (core/packed-signals.ts) must come back exactly as they
 * went in, or not be packed at all: the events' canonical JSON is the
 * merge's tie-breaker and what storage and exports hold.
 */
const DEVICES = ['11111111-1111-4111-8111-111111111111', '22222222-2222-4222-8222-222222222222', '33333333-3333-4333-8333-333333333333'];
const NOW = Date.parse('2026-05-04T10:00:00Z');

/** RFC 3339 times of every shape the schema takes: 0 to 6 fraction digits, Z or an offset of either sign. */
const timeArb = fc
  .tuple(
    fc.integer({ min: -400 * 86_400_000, max: 86_400_000 }),
    // Mostly what devices send (0 to 3 digits), now and then more (not packed).
    fc.oneof({ arbitrary: fc.integer({ min: 0, max: 3 }), weight: 19 }, { arbitrary: fc.integer({ min: 4, max: 6 }), weight: 1 }),
    fc.constantFrom('Z', '+00:00', '-00:00', '+02:00', '-05:30', '+14:00', '-12:00', '+05:45'),
    fc.integer({ min: 0, max: 999 }),
  )
  .map(([offset, digits, zone, extra]) => {
    const ms = NOW + offset;
    const minutes = zone === 'Z' ? 0 : (zone.startsWith('-') ? -1 : 1) * (Number(zone.slice(1, 3)) * 60 + Number(zone.slice(4, 6)));
    const wall = new Date(ms + minutes * 60_000).toISOString();
    const fraction = digits === 0 ? '' : `.${`${wall.slice(20, 23)}${String(extra).padStart(3, '0')}`.slice(0, digits)}`;
    return `${wall.slice(0, 19)}${fraction}${zone}`;
  });
/** Raw event objects of every kind; parsed by the schema below, as ingest does. */
const rawEvent = rawEventArbitrary(timeArb);
const validEvent: fc.Arbitrary<SensorEvent> = rawEvent.map((raw) => sensorEventSchema.safeParse(raw)).filter((r) => r.success).map((r) => r.data as SensorEvent);
const signalArb = fc.tuple(fc.constantFrom(...DEVICES), validEvent).map(([deviceId, event]) => ({ deviceId, event }));

/** Whether every time field has at most millisecond digits (what the packing keeps exactly). */
const TIME_FIELDS = ['at', 'since', 'lastInput', 'start', 'end'];
const packableTimes = (event: SensorEvent) =>
  TIME_FIELDS.every((field) => {
    const value = (event as unknown as Record<string, unknown>)[field];
    return typeof value !== 'string' || !/\.\d{4,}/.test(value);
  });

t.test('the layouts list every field of every event kind, in the schema order', async (t) => {
  for (const option of sensorEventSchema.options) {
    const kind = (option.shape.kind as unknown as { value: SensorEvent['kind'] }).value;
    t.same(
      LAYOUTS[kind].map(([field]) => field),
      Object.keys(option.shape).filter((field) => field !== 'kind'),
      kind,
    );
  }
  t.equal(Object.keys(LAYOUTS).length, sensorEventSchema.options.length, 'no layout for a kind that does not exist');
});

t.test('packed signals come back exactly, or are not packed', async (t) => {
  let packed = 0;
  fc.assert(
    fc.property(fc.array(signalArb, { minLength: 1, maxLength: 12 }), (signals) => {
      const result = packSignals(signals);
      if (!result) {
        // Only sub-millisecond digits are a reason not to pack.
        return !signals.every((s) => packableTimes(s.event));
      }
      packed += 1;
      const back = unpackSignals(result);
      return (
        back.length === signals.length &&
        back.every((s, i) => {
          const original = signals[i] as (typeof signals)[number];
          return s.deviceId === original.deviceId && JSON.stringify(s.event) === JSON.stringify(original.event) && s.at === Date.parse(original.event.at);
        })
      );
    }),
    { numRuns: 3000, seed: 0x9ac4 },
  );
  t.ok(packed > 1000, `most sets packed (${packed} of 3000)`);
});

t.test('edge cases', async (t) => {
  const device = DEVICES[0] as string;
  const geofence = sensorEventSchema.parse({ kind: 'geofence', at: '2026-05-04T10:00:00+02:00', zone: 'Büro 🏢 東京', transition: 'enter' });
  const back = unpackSignals(packSignals([{ deviceId: device, event: geofence }]) ?? { bytes: '', devices: [] });
  t.same(back[0]?.event, geofence, 'text beyond Latin-1 comes back');
  t.equal(packSignals([]), undefined, 'nothing to pack');
  const fine = sensorEventSchema.parse({ kind: 'call', at: '2026-05-04T10:00:00.1234Z', state: 'idle' });
  t.equal(packSignals([{ deviceId: device, event: fine }]), undefined, 'a time with sub-millisecond digits is not packed');
  const negativeZero = sensorEventSchema.parse({ kind: 'call', at: '2026-05-04T10:00:00-00:00', state: 'idle' });
  t.equal(unpackSignals(packSignals([{ deviceId: device, event: negativeZero }]) ?? { bytes: '', devices: [] })[0]?.event.at, '2026-05-04T10:00:00-00:00', '-00:00 stays -00:00');
  const early = sensorEventSchema.parse({ kind: 'call', at: '0001-01-01T00:00:00.5+14:00', state: 'idle' });
  t.equal(unpackSignals(packSignals([{ deviceId: device, event: early }]) ?? { bytes: '', devices: [] })[0]?.event.at, '0001-01-01T00:00:00.5+14:00', 'a date before the epoch');
  // Times as differences from the one before: equal, earlier, later, and
  // further apart than a difference is allowed to be (a float64 again).
  const spread = ['2026-05-04T10:00:00.250Z', '2026-05-04T10:00:00.250Z', '2026-05-04T09:59:31+02:00', '0001-01-01T00:00:00Z', '9999-12-31T23:59:59.999-12:00', '2026-05-04T10:00:00Z'].map((at) => ({
    deviceId: device,
    event: sensorEventSchema.parse({ kind: 'call', at, state: 'idle' }),
  }));
  const packedSpread = packSignals(spread);
  t.same(
    unpackSignals(packedSpread ?? { bytes: '', devices: [] }).map((s) => s.event.at),
    spread.map((s) => s.event.at),
    'near and far times come back',
  );
  const near = packSignals(spread.slice(0, 3));
  const alone = packSignals(spread.slice(0, 1));
  // Two more call events: device, kind and state bytes, a shape byte, the
  // difference (0, then -2 h: one and four bytes) and the offset's two:
  // 15 bytes, where float64 instants would take 26.
  t.equal(near && alone && near.bytes.length - alone.bytes.length, 15, 'a time near the one before costs a few bytes, not eight');
  const many = Array.from({ length: 257 }, (_, i) => ({ deviceId: `device-${i}`, event: sensorEventSchema.parse({ kind: 'call', at: '2026-05-04T10:00:00Z', state: 'idle' }) }));
  t.equal(packSignals(many), undefined, 'more than 256 devices are not packed');
  t.ok(packSignals(many.slice(0, 256)), '256 devices are');
});

const settings = { offlineAfterMs: 900_000 };
const fold = (signals: readonly { deviceId: string; event: SensorEvent }[]) => {
  const set = new SignalSet();
  for (const s of signals) mergeSignal(set, toSignal(s.deviceId, s.event));
  return set;
};
const view = (set: SignalSet) => [...set].map((s: Signal) => [s.deviceId, s.kind, s.at, s.canonical]);

t.test('a packed set reads, merges and derives as the unpacked one', async (t) => {
  fc.assert(
    fc.property(fc.array(signalArb, { minLength: 1, maxLength: 12 }), fc.array(signalArb, { maxLength: 4 }), (signals, later) => {
      const plain = fold(signals);
      const packed = fold(signals);
      packed.pack();
      if (!packed.packed) return !signals.every((s) => packableTimes(s.event));
      if (JSON.stringify(view(packed)) !== JSON.stringify(view(plain)) || packed.size !== plain.size) return false;
      if (!packed.packed) return false; // reading does not unpack
      const derived = (set: SignalSet) => JSON.stringify(derivePresence(set.values(), settings, NOW, undefined, true));
      if (derived(packed) !== derived(plain)) return false;
      for (const s of later) {
        if (mergeSignal(plain, toSignal(s.deviceId, s.event)) !== mergeSignal(packed, toSignal(s.deviceId, s.event))) return false;
      }
      return JSON.stringify(view(packed)) === JSON.stringify(view(plain)) && derived(packed) === derived(plain);
    }),
    { numRuns: 1000, seed: 0x51a7 },
  );
  t.pass('the same in every run');
});

t.test('pack(): packs, reads stay packed, a merge unpacks', async (t) => {
  const call = (at: string) => toSignal(DEVICES[0] as string, sensorEventSchema.parse({ kind: 'call', at, state: 'in-call' }));
  const set = fold([]);
  t.notOk(set.pack(), 'an empty set stays as it is');
  mergeSignal(set, call('2026-05-04T10:00:00Z'));
  t.ok(set.pack());
  t.ok(set.packed);
  t.equal([...set].length, 1, 'read while packed');
  t.equal(set.size, 1);
  t.ok(set.packed, 'still packed after a read');
  t.notOk(mergeSignal(set, call('2026-05-04T09:00:00Z')), 'an older event changes nothing');
  t.notOk(set.packed, 'but looking for its slot unpacked the set');
  t.ok(set.pack());
  t.ok(mergeSignal(set, call('2026-05-04T10:00:01Z')), 'a newer one replaces the packed signal');
  t.equal([...set].length, 1);
  t.equal([...set][0]?.at, Date.parse('2026-05-04T10:00:01Z'));
});

t.test('pack(): one, two (held in fields, not a list) and three devices read back alike, and a merge after each unpacks', async (t) => {
  const call = (device: number, at: string) => toSignal(DEVICES[device] as string, sensorEventSchema.parse({ kind: 'call', at, state: 'in-call' }));
  const set = fold([]);
  for (let device = 0; device < 3; device++) {
    mergeSignal(set, call(device, '2026-05-04T10:00:00Z'));
    t.ok(set.pack());
    t.same(
      [...set].map((s) => s.deviceId),
      DEVICES.slice(0, device + 1),
      `${device + 1} device(s) while packed`,
    );
    t.ok(mergeSignal(set, call(device, '2026-05-04T10:00:01Z')));
    t.notOk(set.packed);
    t.same(
      [...set].map((s) => [s.deviceId, s.at]),
      // Each device's newer call, this one's just merged and the others' in earlier rounds.
      DEVICES.slice(0, device + 1).map((d) => [d, Date.parse('2026-05-04T10:00:01Z')]),
    );
  }
});

t.test('PresenceHub.restIdle: owners neither read nor changed between two sweeps rest; reads, writes and changes are unaffected', async (t) => {
  const owner = 'owner-1';
  const hub = new PresenceHub(settings);
  const events = [
    sensorEventSchema.parse({ kind: 'call', at: '2026-05-04T09:59:00Z', state: 'in-call' }),
    sensorEventSchema.parse({ kind: 'motion', at: '2026-05-04T09:59:30+02:00', activity: 'walking', confidence: 90, since: '2026-05-04T09:50:00+02:00' }),
  ];
  hub.apply(owner, DEVICES[0] as string, events, NOW);
  const before = { state: hub.current(owner, NOW), validUntil: hub.validUntil(owner, NOW), explained: JSON.stringify(hub.explain(owner, NOW)), signals: JSON.stringify(hub.signalsOf(owner)) };
  t.equal(hub.activeCount, 1);
  t.equal(await hub.restIdle(), 0, 'just changed: not yet');
  t.equal(await hub.restIdle(), 1, 'idle since the previous sweep: at rest');
  t.equal(hub.activeCount, 0);
  t.equal(JSON.stringify(hub.explain(owner, NOW)), before.explained, 'explained the same from packed signals');
  t.equal(JSON.stringify(hub.signalsOf(owner)), before.signals, 'handed to a sync the same');
  t.equal(JSON.stringify(hub.takeDirty()[0]?.signals), before.signals, 'written the same');
  t.equal(hub.activeCount, 0, 'explaining, syncing and writing do not wake the owner');
  const again = hub.current(owner, NOW);
  t.not(again, before.state, 'a read derives the state again');
  t.same(again, before.state, 'equal to the one dropped');
  t.equal(hub.validUntil(owner, NOW), before.validUntil, 'valid as long');
  t.equal(hub.activeCount, 1, 'and the owner is busy again');
  t.equal(hub.current(owner, NOW), again, 'held while busy');
  await hub.restIdle();
  await hub.restIdle();
  t.equal(hub.current(owner, NOW + 3_600_000).availability, 'offline', 'derived at a later time from packed signals');

  await hub.restIdle();
  await hub.restIdle();
  t.ok(hub.apply(owner, DEVICES[1] as string, [sensorEventSchema.parse({ kind: 'call', at: '2026-05-04T10:00:00Z', state: 'in-call' })], NOW), 'a change to an owner at rest');
  t.equal(hub.activeCount, 1, 'wakes it');
  t.equal(hub.signalsOf(owner).length, 3);

  const restored = new PresenceHub(settings);
  restored.restore(owner, 7, hub.signalsOf(owner), NOW);
  t.equal(restored.activeCount, 0, 'restored owners are at rest at once');
  t.equal(JSON.stringify(restored.signalsOf(owner)), JSON.stringify(hub.signalsOf(owner)));
  t.same(restored.current(owner, NOW), hub.current(owner, NOW));
  restored.forget(owner);
  t.equal(restored.ownerCount, 0);
  t.equal(restored.activeCount, 0);
});

t.test('a watched owner keeps its state at rest, and its watchers are told of every change', async (t) => {
  const owner = 'owner-1';
  const hub = new PresenceHub(settings);
  const call = (at: string, state: 'idle' | 'in-call') => [sensorEventSchema.parse({ kind: 'call', at, state })];
  hub.apply(owner, DEVICES[0] as string, call('2026-05-04T09:59:00Z', 'in-call'), NOW);
  const told: string[] = [];
  const stop = hub.watch(owner, (state) => told.push(state.activities.join(',')));
  const held = hub.current(owner, NOW);
  await hub.restIdle();
  await hub.restIdle();
  t.equal(hub.current(owner, NOW), held, 'watched: the same state object, held through the sweeps');
  await hub.restIdle();
  await hub.restIdle();
  hub.apply(owner, DEVICES[0] as string, call('2026-05-04T09:59:30Z', 'idle'), NOW);
  t.same(told, [''], 'the watcher is told the call ended');
  stop();

  // Watched only after the owner came to rest: the change is still compared with what held before it.
  await hub.restIdle();
  await hub.restIdle();
  const late: string[] = [];
  hub.watch(owner, (state) => late.push(state.activities.join(',')));
  hub.apply(owner, DEVICES[0] as string, call('2026-05-04T09:59:40Z', 'in-call'), NOW);
  t.same(late, ['on-the-phone'], 'a watcher that arrived while the owner rested is told too');
  hub.apply(owner, DEVICES[0] as string, call('2026-05-04T09:59:40Z', 'in-call'), NOW);
  t.same(late, ['on-the-phone'], 'and not told of what changes nothing (the same event again)');
});

/**
 * A state as anyone but its owner sees it: without the trace, which is not
 * part of a state's identity (core/presence.ts samePresence; the owner asks
 * explain() for it).
 */
const seen = (state: PresenceState) => JSON.stringify({ ...state, trace: undefined });

/** Operations on two hubs, one swept after every step and one never: reads and notifications must not tell them apart. */
type Op =
  | { readonly op: 'apply'; readonly owner: number; readonly device: number; readonly event: SensorEvent }
  | { readonly op: 'read'; readonly owner: number }
  | { readonly op: 'watch' | 'unwatch'; readonly owner: number }
  | { readonly op: 'sweep' }
  | { readonly op: 'wait'; readonly ms: number }
  | { readonly op: 'status'; readonly owner: number; readonly availability: 'busy' | 'away'; readonly forMs: number }
  | { readonly op: 'unstatus'; readonly owner: number }
  | { readonly op: 'forget'; readonly agoMs: number }
  | { readonly op: 'merge'; readonly owner: number; readonly device: number; readonly event: SensorEvent };
const OWNER_IDS = ['o1', 'o2', 'o3'];
/**
 * Events dated up to NOW only. An event from a device whose clock runs
 * ahead (within MAX_CLOCK_SKEW_SECONDS) counts as seen "now" until its
 * time comes, so a state derived again later within the same validity
 * shows a later lastSeen than the state a busy hub still holds: the one
 * difference resting makes, and the fresher of the two.
 */
const pastEvent = validEvent.filter((event) => Date.parse(event.at) <= NOW);

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ op: fc.constant('apply' as const), owner: fc.integer({ min: 0, max: 2 }), device: fc.integer({ min: 0, max: 2 }), event: pastEvent }), weight: 4 },
  { arbitrary: fc.record({ op: fc.constant('read' as const), owner: fc.integer({ min: 0, max: 2 }) }), weight: 3 },
  { arbitrary: fc.record({ op: fc.constantFrom('watch' as const, 'unwatch' as const), owner: fc.integer({ min: 0, max: 2 }) }), weight: 1 },
  { arbitrary: fc.constant({ op: 'sweep' as const }), weight: 3 },
  { arbitrary: fc.record({ op: fc.constant('wait' as const), ms: fc.integer({ min: 0, max: 1_800_000 }) }), weight: 1 },
  // A manual status (setOverride), its removal, the retention purge (forgetSilent), and signals from another process (merge).
  { arbitrary: fc.record({ op: fc.constant('status' as const), owner: fc.integer({ min: 0, max: 2 }), availability: fc.constantFrom('busy' as const, 'away' as const), forMs: fc.integer({ min: 1, max: 3_600_000 }) }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant('unstatus' as const), owner: fc.integer({ min: 0, max: 2 }) }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant('forget' as const), agoMs: fc.integer({ min: 900_000, max: 400 * 86_400_000 }) }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant('merge' as const), owner: fc.integer({ min: 0, max: 2 }), device: fc.integer({ min: 0, max: 2 }), event: pastEvent }), weight: 2 },
);

t.test('property: resting changes nothing anyone can see', async (t) => {
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { maxLength: 40 }), async (ops) => {
      const resting = new PresenceHub(settings);
      const busy = new PresenceHub(settings);
      const logs = { resting: [] as string[], busy: [] as string[] };
      const stops = new Map<number, (() => void)[]>();
      let now = NOW;
      for (const op of ops) {
        switch (op.op) {
          case 'apply':
            for (const hub of [resting, busy]) hub.apply(OWNER_IDS[op.owner] as string, DEVICES[op.device] as string, [op.event], now);
            break;
          case 'read': {
            const a = resting.current(OWNER_IDS[op.owner] as string, now);
            const b = busy.current(OWNER_IDS[op.owner] as string, now);
            if (seen(a) !== seen(b)) return false;
            if (resting.validUntil(OWNER_IDS[op.owner] as string, now) !== busy.validUntil(OWNER_IDS[op.owner] as string, now)) return false;
            break;
          }
          case 'watch': {
            if (stops.has(op.owner)) break;
            const id = OWNER_IDS[op.owner] as string;
            // As every watcher (streams, the SIP gateway, webhooks) does: listen, then read the
            // state to start from. A ping during that first read (a busy hub re-deriving an
            // expired state) tells the watcher nothing its read does not, so it is not logged.
            let starting = true;
            stops.set(op.owner, [
              resting.watch(id, (state) => starting || logs.resting.push(`${id} ${seen(state)}`)),
              busy.watch(id, (state) => starting || logs.busy.push(`${id} ${seen(state)}`)),
            ]);
            logs.resting.push(`${id} starts from ${seen(resting.current(id, now))}`);
            logs.busy.push(`${id} starts from ${seen(busy.current(id, now))}`);
            starting = false;
            break;
          }
          case 'unwatch':
            for (const stop of stops.get(op.owner) ?? []) stop();
            stops.delete(op.owner);
            break;
          case 'sweep':
            await resting.restIdle();
            break;
          case 'status':
            for (const hub of [resting, busy]) hub.setOverride(OWNER_IDS[op.owner] as string, { source: 'manual', availability: op.availability, activities: [], expiresAt: now + op.forMs }, now);
            break;
          case 'unstatus':
            for (const hub of [resting, busy]) hub.removeOverride(OWNER_IDS[op.owner] as string, 'manual', now);
            break;
          case 'forget': {
            const at = now;
            await Promise.all([resting, busy].map((hub) => hub.forgetSilent(at - op.agoMs, () => at)));
            break;
          }
          case 'merge':
            for (const hub of [resting, busy]) hub.merge(OWNER_IDS[op.owner] as string, [{ deviceId: DEVICES[op.device] as string, event: op.event }], now);
            break;
          case 'wait':
            now += op.ms;
            break;
        }
      }
      for (const id of OWNER_IDS) {
        if (seen(resting.current(id, now)) !== seen(busy.current(id, now))) return false;
        if (JSON.stringify(resting.explain(id, now)) !== JSON.stringify(busy.explain(id, now))) return false;
        if (JSON.stringify(resting.signalsOf(id)) !== JSON.stringify(busy.signalsOf(id))) return false;
      }
      return JSON.stringify(logs.resting) === JSON.stringify(logs.busy);
    }),
    { numRuns: Number(process.env.REST_RUNS ?? 400), seed: Number(process.env.REST_SEED ?? 0x7e57) },
  );
  t.pass('the same in every run');
});
