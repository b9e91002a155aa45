import fc from 'fast-check';
import { isPrintableText } from '../../core/text.js';

/**
 * Raw sensor events of every kind in core/events.ts, as a device would send
 * them (before the schema parses them), with times from `time`. Shared by
 * the payload fuzzer (tests/unit/fuzz-mqtt-payloads.test.ts) and the
 * packing test (tests/unit/packed-signals.test.ts), which differ in the
 * times they need and in the calendar entries: `calendar` replaces the
 * default one (start and end from `time`, so often refused as ending first).
 */
export function rawEventArbitrary(time: fc.Arbitrary<string>, calendar?: fc.Arbitrary<Record<string, unknown>>): fc.Arbitrary<Record<string, unknown>> {
  const label = fc.string({ minLength: 1, maxLength: 64, unit: 'grapheme' }).filter((s) => s.length <= 64 && isPrintableText(s));
  const bool = fc.boolean();
  const number = (min: number, max: number) => fc.double({ min, max, noNaN: true });
  return fc.oneof(
    fc.record(
      { kind: fc.constant('motion'), at: time, activity: fc.constantFrom('still', 'walking', 'running', 'cycling', 'in-vehicle', 'unknown'), confidence: fc.integer({ min: 0, max: 100 }), since: time },
      { requiredKeys: ['kind', 'at', 'activity', 'confidence'] },
    ),
    fc.record({ kind: fc.constant('user-input'), at: time, state: fc.constantFrom('active', 'idle'), lastInput: time }, { requiredKeys: ['kind', 'at', 'state'] }),
    fc.record({ kind: fc.constant('screen'), at: time, state: fc.constantFrom('on', 'off'), locked: bool }),
    fc.record({ kind: fc.constant('call'), at: time, state: fc.constantFrom('idle', 'ringing', 'in-call') }),
    calendar ?? fc.record({ kind: fc.constant('calendar'), at: time, state: fc.constantFrom('busy', 'free', 'tentative', 'out-of-office'), start: time, end: time }),
    fc.record({ kind: fc.constant('focus'), at: time, state: fc.constantFrom('on', 'off') }),
    fc.record({ kind: fc.constant('battery'), at: time, level: fc.integer({ min: 0, max: 100 }), charging: bool }),
    fc.record(
      { kind: fc.constant('network'), at: time, connection: fc.constantFrom('wifi', 'cellular', 'offline'), ssid: fc.string({ minLength: 1, maxLength: 32 }), network: fc.stringMatching(/^[A-Za-z0-9_-]{22}$/) },
      { requiredKeys: ['kind', 'at', 'connection'] },
    ),
    fc.record({ kind: fc.constant('geofence'), at: time, zone: label, transition: fc.constantFrom('enter', 'leave') }),
    fc.record({ kind: fc.constant('location'), at: time, latitude: number(-90, 90), longitude: number(-180, 180), accuracy: number(0, 100_000) }),
    fc.record({ kind: fc.constant('sleep'), at: time, state: fc.constantFrom('asleep', 'awake') }),
    fc.record({ kind: fc.constant('worn'), at: time, state: fc.constantFrom('on', 'off') }),
    fc.record({ kind: fc.constant('heart-rate'), at: time, bpm: fc.integer({ min: 20, max: 250 }) }),
    fc.record({ kind: fc.constant('occupancy'), at: time, room: label, occupied: bool }),
    fc.record({ kind: fc.constant('ble-room'), at: time, id: label, room: label, distance: number(0, 1000) }),
    fc.record({ kind: fc.constant('headset'), at: time, onHead: bool, inCall: bool, muted: bool }),
  );
}
