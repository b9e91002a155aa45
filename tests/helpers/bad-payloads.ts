import fc from 'fast-check';

/**
 * A generated corpus of hostile MQTT payloads: malformed JSON, wrong types,
 * unknown kinds, missing fields, far-future dates, deep nesting, prototype
 * pollution attempts, oversized bodies and binary noise. Deterministic for a
 * given seed, so a failure can be replayed.
 */
export function badPayloads(count: number, now: number, maxBytes: number, seed = 42): Buffer[] {
  const at = new Date(now).toISOString();
  const future = new Date(now + 86_400_000).toISOString();
  const valid = { kind: 'call', at, state: 'in-call' };
  const wrongValue = fc.oneof(fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.string(), fc.array(fc.integer(), { maxLength: 3 }), fc.object({ maxDepth: 1 }));
  const kinds = ['motion', 'user-input', 'screen', 'call', 'calendar', 'focus', 'battery', 'network', 'geofence', 'location', 'sleep', 'worn', 'heart-rate', 'occupancy', 'ble-room', 'headset'];

  const generators: fc.Arbitrary<Buffer>[] = [
    // Not JSON at all, or truncated JSON.
    fc.string({ minLength: 1, maxLength: 200 }).filter((s) => {
      try {
        JSON.parse(s);
        return false;
      } catch {
        return true;
      }
    }).map((s) => Buffer.from(s)),
    fc.integer({ min: 1, max: 40 }).map((n) => Buffer.from(JSON.stringify(valid).slice(0, n))),
    fc.uint8Array({ minLength: 1, maxLength: 300 }).map((bytes) => Buffer.from(bytes)),
    // Valid JSON, wrong shape.
    fc.oneof(fc.integer(), fc.string(), fc.constant(null), fc.array(fc.anything(), { maxLength: 3 })).map((v) => Buffer.from(JSON.stringify(v) ?? 'null')),
    // A real kind with one field of the wrong type.
    fc.tuple(fc.constantFrom(...kinds), fc.constantFrom('at', 'state', 'confidence', 'activity', 'start', 'end', 'latitude', 'level', 'bpm', 'room', 'onHead'), wrongValue).map(([kind, field, value]) =>
      Buffer.from(JSON.stringify({ kind, at, [field]: value })),
    ),
    // Unknown kinds and missing discriminators.
    fc.string({ maxLength: 20 }).filter((k) => !kinds.includes(k)).map((kind) => Buffer.from(JSON.stringify({ kind, at, state: 'on' }))),
    fc.constant(Buffer.from(JSON.stringify({ at, state: 'in-call' }))),
    // Out-of-range values.
    fc.oneof(
      fc.integer({ min: 101, max: 1e6 }).map((confidence) => ({ kind: 'motion', at, activity: 'walking', confidence })),
      fc.double({ min: 90.0001, max: 1e9, noNaN: true }).map((latitude) => ({ kind: 'location', at, latitude, longitude: 0, accuracy: 5 })),
      fc.integer({ min: 251, max: 1e6 }).map((bpm) => ({ kind: 'heart-rate', at, bpm })),
    ).map((v) => Buffer.from(JSON.stringify(v))),
    // Dated far in the future.
    fc.constantFrom(...kinds).map(() => Buffer.from(JSON.stringify({ ...valid, at: future }))),
    // Deep nesting, inside and outside the events array.
    fc.integer({ min: 50, max: 2000 }).map((depth) => Buffer.from(`{"events":${'['.repeat(depth)}${']'.repeat(depth)}}`)),
    fc.integer({ min: 50, max: 2000 }).map((depth) => Buffer.from(`${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`)),
    // Prototype pollution attempts (also invalid, so nothing may apply).
    fc.constantFrom(
      `{"__proto__":{"polluted":true},"kind":"teleport","at":"${at}"}`,
      `{"constructor":{"prototype":{"polluted":true}},"kind":"call","at":"${at}","state":"on"}`,
      `{"events":[{"__proto__":{"polluted":true}}]}`,
    ).map((s) => Buffer.from(s)),
    // Batches with one bad event (must not be half-applied), and too long.
    wrongValue.map((state) => Buffer.from(JSON.stringify({ events: [valid, { ...valid, state }] }))),
    fc.constant(Buffer.from(JSON.stringify({ events: Array.from({ length: 65 }, () => valid) }))),
    // Oversized.
    fc.integer({ min: 1, max: 4096 }).map((extra) => Buffer.alloc(maxBytes + extra, 0x20)),
  ];
  return fc.sample(fc.oneof(...generators), { numRuns: count, seed });
}
