import fc from 'fast-check';
import t from 'tap';
import { derivePresence } from '../../core/derive-presence.js';
import type { SensorEvent } from '../../core/events.js';
import { forgetSilentDevices, mergeSignal, signalKey, SignalSet, toSignal, type Signal } from '../../core/signal-store.js';

/**
 * The signal store must converge whatever the order: merging is commutative
 * and idempotent (last-writer-wins by event time, ties broken by value).
 */
const devices = ['11111111-1111-4111-8111-111111111111', '22222222-2222-4222-8222-222222222222'];
const base = Date.parse('2026-01-01T00:00:00Z');

const eventArb: fc.Arbitrary<SensorEvent> = fc.oneof(
  // Motion keeps a bounded history (SIGNAL_FAMILIES), which must converge too.
  fc.record({
    kind: fc.constant('motion' as const),
    at: fc.integer({ min: 0, max: 20 }).map((s) => new Date(base + s * 1000).toISOString()),
    activity: fc.constantFrom('still' as const, 'in-vehicle' as const),
    confidence: fc.constantFrom(50, 90),
  }),
  fc.record({
    kind: fc.constant('call' as const),
    at: fc.integer({ min: 0, max: 20 }).map((s) => new Date(base + s * 1000).toISOString()),
    state: fc.constantFrom('idle' as const, 'ringing' as const, 'in-call' as const),
  }),
  fc.record({
    kind: fc.constant('user-input' as const),
    at: fc.integer({ min: 0, max: 20 }).map((s) => new Date(base + s * 1000).toISOString()),
    state: fc.constantFrom('active' as const, 'idle' as const),
  }),
);
const signalArb: fc.Arbitrary<Signal> = fc.tuple(fc.constantFrom(...devices), eventArb).map(([d, e]) => toSignal(d, e));

function fold(signals: readonly Signal[]): Record<string, string> {
  const set = new SignalSet();
  for (const s of signals) mergeSignal(set, s);
  return Object.fromEntries([...set].map((v) => [signalKey(v), v.canonical]).sort());
}

t.test('any permutation with any duplication converges to the same state', async (t) => {
  fc.assert(
    fc.property(
      fc.array(signalArb, { minLength: 1, maxLength: 30 }).chain((signals) =>
        fc.tuple(
          fc.constant(signals),
          fc.shuffledSubarray(signals, { minLength: signals.length, maxLength: signals.length }),
          fc.array(fc.constantFrom(...signals), { maxLength: 10 }),
        ),
      ),
      ([signals, shuffled, duplicates]) => {
        const expected = fold(signals);
        const actual = fold([...duplicates, ...shuffled, ...duplicates]);
        return JSON.stringify(expected) === JSON.stringify(actual);
      },
    ),
    { numRuns: 500 },
  );
  t.pass('converged in every run');
});

t.test('a later event replaces an earlier one; an older or equal one does not', async (t) => {
  const set = new SignalSet();
  const d = devices[0] as string;
  t.ok(mergeSignal(set, toSignal(d, { kind: 'call', at: new Date(base + 2000).toISOString(), state: 'in-call' })));
  t.notOk(mergeSignal(set, toSignal(d, { kind: 'call', at: new Date(base + 1000).toISOString(), state: 'idle' })), 'late event ignored');
  t.notOk(mergeSignal(set, toSignal(d, { kind: 'call', at: new Date(base + 2000).toISOString(), state: 'in-call' })), 'duplicate ignored');
  t.ok(mergeSignal(set, toSignal(d, { kind: 'call', at: new Date(base + 3000).toISOString(), state: 'idle' })));
  t.equal(set.size, 1);
});

t.test('multi-valued kinds stay bounded per device', async (t) => {
  const set = new SignalSet();
  const d = devices[0] as string;
  for (let i = 0; i < 500; i++) {
    mergeSignal(set, toSignal(d, { kind: 'ble-room', at: new Date(base + i * 1000).toISOString(), id: `rotating-${i}`, room: 'kitchen', distance: 1 }));
    mergeSignal(set, toSignal(d, { kind: 'geofence', at: new Date(base + i * 1000).toISOString(), zone: `zone-${i}`, transition: 'enter' }));
    mergeSignal(set, toSignal(d, { kind: 'motion', at: new Date(base + i * 1000).toISOString(), activity: 'walking', confidence: 90 }));
  }
  const count = (kind: string) => [...set.values()].filter((s) => s.kind === kind).length;
  t.equal(count('ble-room'), 16);
  t.equal(count('geofence'), 16);
  t.equal(count('motion'), 32);
  t.ok([...set.values()].filter((s) => s.kind === 'ble-room').every((s) => s.at >= base + 484_000), 'the newest kept');
});

t.test('property: the derived presence does not depend on arrival order either', async (t) => {
  const now = base + 21_000;
  fc.assert(
    fc.property(
      fc.array(signalArb, { minLength: 1, maxLength: 30 }).chain((signals) => fc.tuple(fc.constant(signals), fc.shuffledSubarray(signals, { minLength: signals.length, maxLength: signals.length }))),
      ([signals, shuffled]) => {
        const a = new SignalSet();
        const b = new SignalSet();
        for (const s of signals) mergeSignal(a, s);
        for (const s of shuffled) mergeSignal(b, s);
        const settings = { offlineAfterMs: 600_000 };
        return JSON.stringify(derivePresence(a.values(), settings, now)) === JSON.stringify(derivePresence(b.values(), settings, now));
      },
    ),
    { numRuns: 500 },
  );
  t.pass('same state in every run');
});

t.test('property: deriving without the trace gives the same presence', async (t) => {
  const now = base + 21_000;
  fc.assert(
    fc.property(fc.array(signalArb, { minLength: 0, maxLength: 30 }), fc.integer({ min: 0, max: 40_000 }), (signals, offset) => {
      const set = new SignalSet();
      for (const s of signals) mergeSignal(set, s);
      const settings = { offlineAfterMs: 600_000 };
      const explained = derivePresence(set.values(), settings, now + offset, undefined, true);
      const plain = derivePresence(set.values(), settings, now + offset, undefined, false);
      return JSON.stringify({ ...explained.state, trace: {} }) === JSON.stringify({ ...plain.state, trace: {} }) && explained.validUntil === plain.validUntil;
    }),
    { numRuns: 500 },
  );
  t.pass('same state and validity in every run');
});

t.test('forgetting silent devices: whole devices silent since before the cutoff, nothing of a device still reporting', async (t) => {
  const [phone, watch] = devices as [string, string];
  const set = new SignalSet();
  const at = (s: number) => new Date(base + s * 1000).toISOString();
  mergeSignal(set, toSignal(phone, { kind: 'call', at: at(1), state: 'in-call' }));
  mergeSignal(set, toSignal(phone, { kind: 'user-input', at: at(10), state: 'active' }));
  mergeSignal(set, toSignal(watch, { kind: 'user-input', at: at(2), state: 'idle' }));
  t.notOk(forgetSilentDevices(set, base + 2000), 'nothing silent since before the cutoff: unchanged');
  t.equal(set.size, 3);
  t.ok(forgetSilentDevices(set, base + 5000), 'the watch, silent since 2 s');
  t.same([...set].map((s) => `${s.deviceId === phone ? 'phone' : 'watch'} ${s.kind}`).sort(), ['phone call', 'phone user-input'], 'the phone keeps even its older call: it reported since');
  t.ok(forgetSilentDevices(set, base + 11_000));
  t.equal(set.size, 0, 'then the phone too');
  t.notOk(forgetSilentDevices(set, base + 11_000), 'an empty set: nothing to do');
});

t.test('property: forgetting devices silent past offlineAfter changes nothing in the derived presence but the device list', async (t) => {
  const offlineAfterMs = 5_000;
  fc.assert(
    fc.property(fc.array(signalArb, { minLength: 1, maxLength: 30 }), fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 20 }), (signals, nowS, slackS) => {
      const now = base + nowS * 1000;
      const kept = new SignalSet();
      const all = new SignalSet();
      for (const s of signals) {
        mergeSignal(kept, s);
        mergeSignal(all, s);
      }
      // Any cutoff at or before now - offlineAfter (retention is at least that, and the purge runs late, never early).
      forgetSilentDevices(kept, now - offlineAfterMs - slackS * 1000);
      const settings = { offlineAfterMs };
      // Everything but the device list, which loses the forgotten (silent) devices and nothing else.
      const live = (d: ReturnType<typeof derivePresence>) => ({ ...d, state: { ...d.state, devices: d.state.devices?.filter((device) => device.live) } });
      return JSON.stringify(live(derivePresence(kept.values(), settings, now, undefined, false))) === JSON.stringify(live(derivePresence(all.values(), settings, now, undefined, false)));
    }),
    { numRuns: 1000 },
  );
  t.pass('same state (bar silent devices in the list) and validity in every run');
});
