import fc from 'fast-check';
import { isUtf8 } from 'node:buffer';
import { isDeepStrictEqual } from 'node:util';
import t from 'tap';
import { Directory } from '../../core/directory.js';
import { ingestRejections, type IngestRejection } from '../../core/errors.js';
import { sensorEventSchema, type SensorEvent } from '../../core/events.js';
import type { Log } from '../../core/log.js';
import { Metrics } from '../../core/metrics.js';
import { PresenceHub } from '../../core/presence-hub.js';
import { INGEST_ACCEPTED, INGEST_EVENTS, INGEST_IGNORED, INGEST_REJECTED, IngestPipeline } from '../../ingest/ingest-pipeline.js';
import { rawEventArbitrary } from '../helpers/event-arbitraries.js';

/**
 * Fuzzing the MQTT ingest path (issue: "Fuzzing: generated hostile input"):
 * 12,000 generated payloads, seeded so that a failure replays, fed through
 * the real IngestPipeline with a real Directory, PresenceHub and Metrics.
 *
 * The corpus mixes random bytes, valid events of every kind in
 * core/events.ts and OwnTracks messages (core of the accepted share), and
 * those same messages mutated: truncated, byte-flipped, fields removed or
 * replaced by huge numbers, NaN-ish strings, wrong types, oversize strings,
 * deep nesting, prototype-pollution keys, invalid UTF-8, batches with one
 * bad member, and hostile topics.
 *
 * Properties, checked message by message:
 * - handle() never throws;
 * - a refused message changes nothing: the hub's signals, derived state
 *   (with its trace), overrides, owner and dirty counts are identical
 *   (as JSON) before and after, no watcher is told of a change, and
 *   onApplied is not called;
 * - every refusal is counted once, under its own reason, which is one of
 *   core/errors.ts ingestRejections;
 * - an accepted message hands the hub only events that re-validate with
 *   sensorEventSchema unchanged, carry no Wi-Fi name in clear and no own
 *   `__proto__`, and are not dated beyond the clock skew;
 * - Object.prototype (and Array.prototype) are untouched at the end.
 */

/** Fixed, so runs are reproducible; FUZZ_SEED explores others. */
const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed_2026);
const RUNS = 12_000;
const NOW = Date.parse('2026-05-04T10:00:00Z');
const STEP_MS = 50;
const MAX_BYTES = 16_384;
const MAX_SKEW_MS = 300_000;
const DEVICE = '11111111-1111-4111-8111-111111111111';
const WATCH = '33333333-3333-4333-8333-333333333333';
const REVOKED = '22222222-2222-4222-8222-222222222222';
const OTHER_OWNER_DEVICE = '44444444-4444-4444-8444-444444444444';
const NATIVE = `p/${DEVICE}/events`;
const OWNTRACKS = `ot/${DEVICE}/phone`;

// --- generators ----------------------------------------------------------------

/** Dates around the test's clock: the past, the allowed skew, and beyond it. */
const isoAt = fc.integer({ min: -7 * 86_400_000, max: MAX_SKEW_MS + 120_000 }).chain((offset) =>
  fc.constantFrom('Z', '+00:00', '+02:00', '-05:30').map((zone) => {
    const ms = NOW + offset;
    if (zone === 'Z') return new Date(ms).toISOString();
    const minutes = (zone.startsWith('-') ? -1 : 1) * (Number(zone.slice(1, 3)) * 60 + Number(zone.slice(4, 6)));
    return `${new Date(ms + minutes * 60_000).toISOString().slice(0, -1)}${zone}`;
  }),
);

/** A valid event of each kind in core/events.ts (a calendar entry that ends after it starts, with a subject the schema strips). */
const validEvent: fc.Arbitrary<Record<string, unknown>> = rawEventArbitrary(
  isoAt,
  fc.tuple(isoAt, fc.integer({ min: 1, max: 8 * 3_600_000 }), fc.constantFrom('busy', 'free', 'tentative', 'out-of-office')).map(([at, length, state]) => ({
    kind: 'calendar',
    at,
    state,
    start: new Date(Date.parse(at) - 60_000).toISOString(),
    end: new Date(Date.parse(at) - 60_000 + length).toISOString(),
    subject: 'Secret meeting',
  })),
);

/** OwnTracks messages (https://owntracks.org/booklet/tech/json/), mostly valid. */
const tst = fc.integer({ min: -7 * 86_400, max: 420 }).map((offset) => Math.floor(NOW / 1000) + offset);
const validOwnTracks: fc.Arbitrary<Record<string, unknown>> = fc.oneof(
  fc.record(
    {
      _type: fc.constant('location'),
      lat: fc.double({ min: -90, max: 90, noNaN: true }),
      lon: fc.double({ min: -180, max: 180, noNaN: true }),
      tst,
      acc: fc.integer({ min: 0, max: 100_000 }),
      batt: fc.integer({ min: 0, max: 100 }),
      bs: fc.integer({ min: 0, max: 3 }),
      conn: fc.constantFrom('w', 'm', 'o'),
      SSID: fc.string({ minLength: 1, maxLength: 32 }),
      BSSID: fc.constant('aa:bb:cc:dd:ee:ff'),
      inregions: fc.array(fc.string({ minLength: 1, maxLength: 64 }), { maxLength: 5 }),
      motionactivities: fc.oneof(fc.array(fc.constantFrom('stationary', 'walking', 'running', 'cycling', 'automotive', 'flying'), { maxLength: 3 }), fc.constantFrom('walking', 'automotive')),
      tid: fc.constant('ph'),
      t: fc.constantFrom('p', 'u', 't', 'c'),
    },
    { requiredKeys: ['_type', 'lat', 'lon', 'tst'] },
  ),
  fc.record({ _type: fc.constant('transition'), event: fc.constantFrom('enter', 'leave'), desc: fc.string({ minLength: 1, maxLength: 64 }), tst, wtst: tst, acc: fc.integer({ min: 0, max: 500 }) }),
  fc.constantFrom('lwt', 'card', 'waypoint', 'waypoints', 'status', 'steps', 'beacon', 'cmd', 'configuration', 'request', 'encrypted').map((_type) => ({ _type, tst: Math.floor(NOW / 1000) })),
);

/** Values that are wrong almost anywhere: huge numbers, NaN-ish strings, wrong types, oversize and hostile strings. */
const deepArray = (depth: number) => JSON.parse(`${'['.repeat(depth)}${']'.repeat(depth)}`) as unknown;
const deepObject = (depth: number) => JSON.parse(`${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`) as unknown;
const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(1e308, -1e308, Number.MAX_SAFE_INTEGER + 2, -(2 ** 63), 2 ** 64, 5e-324, -0, 0.5, 100.0000001, -1, 101, 251, 19, 1e21),
  fc.constantFrom('NaN', 'Infinity', '-Infinity', '1e999', '0x1F', ' 42 ', '42abc', '', ' ', '0', 'null', 'undefined', 'true', '[object Object]'),
  fc.constantFrom(null, true, false, [], {}, [1], { kind: 'call' }),
  fc.constantFrom('\u0000', '\uD800', '\uDFFF', '\uFFFE', '\u202Eevil', 'a\nb', '\u0085', '<x>&amp;', '%s%n%x', '${7*7}', '{{7*7}}', '../../etc/passwd'),
  fc.constantFrom('2026-13-45T99:99:99Z', '0000-00-00T00:00:00Z', '+275760-09-13T00:00:00.000Z', '2026-05-04T10:00:00', '2026-05-04', 'yesterday', '9999-12-31T23:59:59Z', '2026-05-04T10:00:00+99:99', '2026-05-04T10:00:00.0000000001Z'),
  fc.integer({ min: 65, max: 9000 }).map((n) => 'x'.repeat(n)),
  fc.integer({ min: 2, max: 3000 }).map(deepArray),
  fc.integer({ min: 2, max: 3000 }).map(deepObject),
  fc.anything({ maxDepth: 3 }),
);

const pollutionKey = fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'valueOf', 'hasOwnProperty', '__defineGetter__', 'isPrototypeOf', '');
const pollutionValue = fc.constantFrom<unknown>({ polluted: true }, { prototype: { polluted: true } }, { toString: 'x' }, 'polluted', 1);

type Obj = Record<string, unknown>;

/** Structured mutations of one message object. */
function mutateObject(base: Obj): fc.Arbitrary<Obj> {
  const keys = Object.keys(base);
  const key = fc.constantFrom(...keys);
  return fc.oneof(
    // Replace one field with a hostile value.
    fc.tuple(key, hostileValue).map(([k, v]) => ({ ...base, [k]: v })),
    // Drop one field.
    key.map((k) => {
      const copy = { ...base };
      delete copy[k];
      return copy;
    }),
    // Another kind's discriminator with these fields.
    fc.constantFrom('motion', 'user-input', 'screen', 'call', 'calendar', 'focus', 'battery', 'network', 'geofence', 'location', 'sleep', 'worn', 'heart-rate', 'occupancy', 'ble-room', 'headset', 'Call', 'call ', 'teleport', '').map((kind) =>
      '_type' in base ? { ...base, _type: kind } : { ...base, kind },
    ),
    // A pollution key as an own property (JSON.parse makes __proto__ an own key).
    fc.tuple(pollutionKey, pollutionValue).map(([k, v]) => JSON.parse(`{${JSON.stringify(k)}:${JSON.stringify(v)},${JSON.stringify(base).slice(1)}`) as Obj),
    // Extra unknown fields (must be stripped, never stored).
    fc.dictionary(fc.string({ maxLength: 12 }), hostileValue, { maxKeys: 4 }).map((extra) => ({ ...extra, ...base })),
  );
}

/** Serializations of a message object, some of them broken at the text or byte level. */
function encodings(message: Obj | unknown[]): fc.Arbitrary<Buffer> {
  const json = JSON.stringify(message);
  const bytes = Buffer.from(json);
  return fc.oneof(
    { weight: 4, arbitrary: fc.constant(bytes) },
    // Truncated.
    { weight: 2, arbitrary: fc.integer({ min: 0, max: Math.max(0, bytes.length - 1) }).map((n) => bytes.subarray(0, n)) },
    // One byte replaced, inserted or removed.
    {
      weight: 2,
      arbitrary: fc.tuple(fc.nat(bytes.length), fc.integer({ min: 0, max: 255 }), fc.constantFrom('set', 'insert', 'delete')).map(([at, byte, op]) => {
        const i = Math.min(at, bytes.length - 1);
        if (op === 'set') return Buffer.concat([bytes.subarray(0, i), Buffer.from([byte]), bytes.subarray(i + 1)]);
        if (op === 'insert') return Buffer.concat([bytes.subarray(0, i), Buffer.from([byte]), bytes.subarray(i)]);
        return Buffer.concat([bytes.subarray(0, i), bytes.subarray(i + 1)]);
      }),
    },
    // Invalid UTF-8 inside a string value: overlong, lone surrogate, truncated sequences, 0xFF.
    {
      weight: 2,
      arbitrary: fc.constantFrom([0xc0, 0x80], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0xff], [0xfe, 0xff], [0xf4, 0x90, 0x80, 0x80], [0x80]).chain((bad) => {
        const quotes = [...json.matchAll(/"[^"\\]+"/g)].map((m) => (m.index ?? 0) + 1);
        return fc.constantFrom(...(quotes.length ? quotes : [1])).map((at) => Buffer.concat([bytes.subarray(0, at), Buffer.from(bad), bytes.subarray(at)]));
      }),
    },
    // Text-level JSON tricks: duplicate keys, NaN literals, huge exponents, comments, BOM, trailing garbage, padding.
    {
      weight: 2,
      arbitrary: fc
        .constantFrom<(s: string) => string>(
          (s) => s.replace('{', '{"kind":"teleport",'),
          (s) => s.replace(/}$/, ',"kind":"teleport"}'),
          (s) => s.replace(/:(-?\d+(\.\d+)?)/, ':NaN'),
          (s) => s.replace(/:(-?\d+(\.\d+)?)/, ':1e400'),
          (s) => s.replace(/:(-?\d+(\.\d+)?)/, ':-1e400'),
          (s) => s.replace(/:(-?\d+(\.\d+)?)/, ':0x10'),
          (s) => s.replace(/:(-?\d+(\.\d+)?)/, ':1_000'),
          (s) => s.replace(/:(-?\d+)(,|})/, ':$1.0$2'),
          (s) => s.replace(/:(-?\d+)(,|})/, ':$1e0$2'),
          (s) => `/* c */${s}`,
          (s) => `\uFEFF${s}`,
          (s) => `${s}${s}`,
          (s) => `${s} garbage`,
          (s) => `  \n\t${s}\r\n  `,
          (s) => s.replace(/"/g, "'"),
          (s) => s.replace('{', '{"__proto__":{"polluted":true},'),
          (s) => s.replace('{', '{"constructor":{"prototype":{"polluted":true}},'),
          (s) => s.replaceAll(',', ',,'),
          (s) => `[${s}]`,
          (s) => `{"events":${s}}`,
          (s) => `{"events":[${s}],"events":[]}`,
          (s) => s.replace(/"at":"[^"]*"/, '"at":"\\u0032\\u0030\\u0032\\u0036-05-04T10:00:00Z"'),
          (s) => s.replace(/"at":"[^"]*"/, '"at":"2026-05-04T10:00:00\\u0000Z"'),
        )
        .map((f) => Buffer.from(f(json))),
    },
    // Padded to the size limit exactly, and one byte over it.
    { weight: 1, arbitrary: fc.constantFrom(0, 1).map((over) => Buffer.concat([bytes, Buffer.alloc(Math.max(0, MAX_BYTES - bytes.length + over), 0x20)])) },
  );
}

const nativeMessage: fc.Arbitrary<Obj> = fc.oneof(
  { weight: 3, arbitrary: validEvent },
  { weight: 4, arbitrary: validEvent.chain(mutateObject) },
  { weight: 2, arbitrary: fc.array(validEvent, { minLength: 1, maxLength: 6 }).map((events) => ({ events })) },
  {
    weight: 2,
    arbitrary: fc.tuple(fc.array(validEvent, { minLength: 1, maxLength: 5 }), validEvent.chain(mutateObject), fc.nat()).map(([events, bad, at]) => {
      const copy = [...events];
      copy.splice(at % (copy.length + 1), 0, bad);
      return { events: copy };
    }),
  },
  { weight: 1, arbitrary: fc.integer({ min: 64, max: 70 }).chain((n) => fc.array(validEvent, { minLength: n, maxLength: n })).map((events) => ({ events })) },
  { weight: 1, arbitrary: fc.tuple(hostileValue, fc.array(validEvent, { maxLength: 2 })).map(([events, extra]) => ({ events, extra })) },
);

const ownTracksMessage: fc.Arbitrary<Obj> = fc.oneof({ weight: 3, arbitrary: validOwnTracks }, { weight: 4, arbitrary: validOwnTracks.chain(mutateObject) });

const rawPayload: fc.Arbitrary<Buffer> = fc.oneof(
  fc.uint8Array({ minLength: 0, maxLength: 512 }).map((b) => Buffer.from(b)),
  fc.string({ maxLength: 300, unit: 'binary' }).map((s) => Buffer.from(s)),
  fc.jsonValue({ maxDepth: 4 }).map((v) => Buffer.from(JSON.stringify(v) ?? 'null')),
  fc.integer({ min: 100, max: Math.floor(MAX_BYTES / 2) - 20 }).map((depth) => Buffer.from(`{"events":${'['.repeat(depth)}${']'.repeat(depth)}}`)),
  fc.integer({ min: 100, max: Math.floor(MAX_BYTES / 6) }).map((depth) => Buffer.from(`${'{"kind":'.repeat(depth)}"call"${'}'.repeat(depth)}`)),
  fc.integer({ min: 1, max: 70_000 }).map((extra) => Buffer.alloc(MAX_BYTES + extra, 0x7b)),
  fc.constantFrom('', 'null', 'true', '0', '""', '[]', '{}', '{"events":null}', '{"events":{}}', '{"events":{"0":{"kind":"call"},"length":1}}', '{"_type":null}', '{"kind":null}').map((s) => Buffer.from(s)),
);

/** Topics: mostly the device's own, sometimes the other format's, sometimes hostile. */
const hostileTopic = fc.constantFrom(
  `p/${DEVICE}/events/extra`,
  `p/${DEVICE.toUpperCase()}/events`,
  `p/${DEVICE}/Events`,
  `p//events`,
  `p/+/events`,
  `p/#`,
  `p/${DEVICE}/events\u0000`,
  `/p/${DEVICE}/events`,
  `P/${DEVICE}/events`,
  `p/${REVOKED}/events`,
  'p/55555555-5555-4555-8555-555555555555/events',
  `ot/${DEVICE}`,
  `ot/${DEVICE}//event`,
  `ot/${DEVICE}/phone/waypoints`,
  `ot/${REVOKED}/phone`,
  `p/${DEVICE}/${'x'.repeat(5000)}`,
  '',
);

interface Case {
  readonly topic: string;
  readonly payload: Buffer;
}

const caseArb: fc.Arbitrary<Case> = fc.oneof(
  { weight: 10, arbitrary: nativeMessage.chain(encodings).map((payload) => ({ topic: NATIVE, payload })) },
  { weight: 5, arbitrary: ownTracksMessage.chain(encodings).chain((payload) => fc.constantFrom(OWNTRACKS, `${OWNTRACKS}/event`, `ot/${DEVICE}/tablet`).map((topic) => ({ topic, payload }))) },
  { weight: 2, arbitrary: fc.tuple(rawPayload, fc.constantFrom(NATIVE, OWNTRACKS)).map(([payload, topic]) => ({ topic, payload })) },
  // Each format on the other's topic.
  { weight: 1, arbitrary: validOwnTracks.map((m) => ({ topic: NATIVE, payload: Buffer.from(JSON.stringify(m)) })) },
  { weight: 1, arbitrary: validEvent.map((m) => ({ topic: OWNTRACKS, payload: Buffer.from(JSON.stringify(m)) })) },
  // A second device of the same owner, and a device of another owner.
  { weight: 1, arbitrary: nativeMessage.map((m) => ({ topic: `p/${WATCH}/events`, payload: Buffer.from(JSON.stringify(m)) })) },
  { weight: 1, arbitrary: nativeMessage.map((m) => ({ topic: `p/${OTHER_OWNER_DEVICE}/events`, payload: Buffer.from(JSON.stringify(m)) })) },
  { weight: 1, arbitrary: fc.tuple(hostileTopic, fc.oneof(validEvent, validOwnTracks)).map(([topic, m]) => ({ topic, payload: Buffer.from(JSON.stringify(m)) })) },
);

// --- the run -----------------------------------------------------------------------

const OWNERS = ['o1', 'o2'];

/** Everything a message could change, as JSON: compared before and after each refused message. */
function stateOf(hub: PresenceHub, now: number): string {
  const owners = OWNERS.map((id) => ({
    id,
    signals: hub.signalsOf(id),
    current: hub.current(id, now),
    explained: hub.explain(id, now),
    validUntil: String(hub.validUntil(id, now)),
    overrides: hub.overridesOf(id),
  }));
  return JSON.stringify({ ownerCount: hub.ownerCount, dirty: hub.dirtyCount, owners });
}

const preview = (payload: Buffer) => ({ bytes: payload.length, base64: payload.subarray(0, 160).toString('base64'), text: payload.subarray(0, 160).toString('utf8') });

const prototypeKeys = (proto: object) => JSON.stringify(Reflect.ownKeys(proto).map(String).sort());
const objectProtoBefore = prototypeKeys(Object.prototype);
const arrayProtoBefore = prototypeKeys(Array.prototype);

t.test(`${RUNS} generated hostile MQTT payloads through the real ingest pipeline (seed ${SEED})`, async (t) => {
  const corpus = fc.sample(caseArb, { numRuns: RUNS, seed: SEED });
  t.equal(corpus.length, RUNS, 'the corpus has the planned size');

  const directory = new Directory();
  directory.putOwner({ id: 'o1', handle: 'alice' });
  directory.putOwner({ id: 'o2', handle: 'bob' });
  directory.putDevice({ id: DEVICE, ownerId: 'o1', deviceClass: 'phone', revoked: false });
  directory.putDevice({ id: WATCH, ownerId: 'o1', deviceClass: 'watch', revoked: false });
  directory.putDevice({ id: REVOKED, ownerId: 'o1', deviceClass: 'phone', revoked: true });
  directory.putDevice({ id: OTHER_OWNER_DEVICE, ownerId: 'o2', deviceClass: 'desk-sensor', revoked: false });
  const hub = new PresenceHub({ offlineAfterMs: 600_000 }, (ownerId) => directory.settings(ownerId));
  const metrics = new Metrics();
  const quiet: Log = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };
  let applied: { ownerId: string; deviceId: string; events: readonly SensorEvent[] }[] = [];
  const pipeline = new IngestPipeline(directory, hub, metrics, quiet, {
    topics: { root: 'p', ownTracksRoot: 'ot' },
    maxBytes: MAX_BYTES,
    maxClockSkewMs: MAX_SKEW_MS,
    digestNetworkName: (owner, ssid) => `${owner}-${ssid.length}`.replace(/[^A-Za-z0-9_-]/g, '_').padEnd(22, 'x').slice(0, 22),
    onApplied: (ownerId, deviceId, events) => applied.push({ ownerId, deviceId, events }),
  });
  let notified = 0;
  for (const owner of OWNERS) hub.watch(owner, () => (notified += 1));

  const rejectedTotal = () => ingestRejections.reduce((sum, reason) => sum + metrics.value(INGEST_REJECTED, { reason }), 0);
  const problems = { threw: [] as object[], unknownReason: [] as object[], miscounted: [] as object[], refusedChangedState: [] as object[], acceptedBadEvent: [] as object[], acceptedMiscounted: [] as object[] };
  const reasons = new Map<string, number>();
  let accepted = 0;
  let ignored = 0;
  let eventsApplied = 0;
  let changedByAccepted = 0;
  let acceptedInvalidUtf8 = 0;
  const kindsApplied = new Set<string>();
  const started = performance.now();

  for (const [i, { topic, payload }] of corpus.entries()) {
    const now = NOW + i * STEP_MS;
    const before = stateOf(hub, now);
    const counts = { rejected: rejectedTotal(), accepted: metrics.value(INGEST_ACCEPTED), ignored: metrics.value(INGEST_IGNORED), events: metrics.value(INGEST_EVENTS) };
    notified = 0;
    applied = [];
    let outcome: IngestRejection | undefined;
    try {
      outcome = pipeline.handle(topic, payload, now);
    } catch (error) {
      problems.threw.push({ i, topic, ...preview(payload), error: String(error) });
      continue;
    }

    if (outcome !== undefined) {
      reasons.set(outcome, (reasons.get(outcome) ?? 0) + 1);
      if (!(ingestRejections as readonly string[]).includes(outcome)) problems.unknownReason.push({ i, topic, outcome });
      const own = metrics.value(INGEST_REJECTED, { reason: outcome });
      if (rejectedTotal() !== counts.rejected + 1 || metrics.value(INGEST_ACCEPTED) !== counts.accepted || metrics.value(INGEST_EVENTS) !== counts.events || own < 1) {
        problems.miscounted.push({ i, topic, outcome, ...preview(payload) });
      }
      const after = stateOf(hub, now);
      if (after !== before || notified > 0 || applied.length > 0) problems.refusedChangedState.push({ i, topic, outcome, notified, applied: applied.length, ...preview(payload) });
      continue;
    }

    // Accepted: either applied (events) or a valid message with nothing to apply.
    if (metrics.value(INGEST_IGNORED) === counts.ignored + 1) {
      ignored += 1;
      if (applied.length > 0 || stateOf(hub, now) !== before || metrics.value(INGEST_ACCEPTED) !== counts.accepted) problems.acceptedMiscounted.push({ i, topic, note: 'ignored but changed something', ...preview(payload) });
      continue;
    }
    accepted += 1;
    const call = applied[0];
    if (metrics.value(INGEST_ACCEPTED) !== counts.accepted + 1 || rejectedTotal() !== counts.rejected || applied.length !== 1 || !call || metrics.value(INGEST_EVENTS) !== counts.events + call.events.length) {
      problems.acceptedMiscounted.push({ i, topic, applied: applied.length, ...preview(payload) });
      continue;
    }
    eventsApplied += call.events.length;
    if (stateOf(hub, now) !== before) changedByAccepted += 1;
    if (!isUtf8(payload)) acceptedInvalidUtf8 += 1;
    for (const event of call.events) {
      kindsApplied.add(event.kind);
      const reparsed = sensorEventSchema.safeParse(event);
      const issues: string[] = [];
      if (!reparsed.success) issues.push(`does not re-validate: ${reparsed.error.issues.map((x) => `${x.path.join('.')} ${x.message}`).join('; ')}`);
      else if (!isDeepStrictEqual(reparsed.data, event)) issues.push('re-validation changes it (unknown fields kept?)');
      if (Object.getPrototypeOf(event) !== Object.prototype) issues.push('not a plain object');
      if (Object.prototype.hasOwnProperty.call(event, '__proto__')) issues.push('own __proto__ key');
      if ('ssid' in event) issues.push('a Wi-Fi name in clear');
      if (!(Date.parse(event.at) <= now + MAX_SKEW_MS)) issues.push('dated beyond the clock skew');
      if (issues.length > 0) problems.acceptedBadEvent.push({ i, topic, event, issues, ...preview(payload) });
    }
  }
  const elapsed = performance.now() - started;

  const show = (list: object[]) => ({ count: list.length, first: list.slice(0, 5) });
  t.same(show(problems.threw), { count: 0, first: [] }, 'handle() never throws');
  t.same(show(problems.unknownReason), { count: 0, first: [] }, 'every refusal reason is one of core/errors.ts ingestRejections');
  t.same(show(problems.miscounted), { count: 0, first: [] }, 'every refusal is counted once, under its reason, and nothing else is counted');
  t.same(show(problems.refusedChangedState), { count: 0, first: [] }, 'a refused message changes no state (signals, derived state, trace, overrides, dirty set) and notifies no watcher');
  t.same(show(problems.acceptedMiscounted), { count: 0, first: [] }, 'an accepted message is counted once and applied once (or, with nothing to apply, changes nothing)');
  t.same(show(problems.acceptedBadEvent), { count: 0, first: [] }, 'accepted messages only hand the hub events that re-validate with sensorEventSchema, unchanged');

  const refusedCount = [...reasons.values()].reduce((a, b) => a + b, 0);
  t.equal(refusedCount + accepted + ignored, RUNS, 'every message refused, applied or ignored');
  t.equal(refusedCount, rejectedTotal(), 'the refusal metrics add up to the refusals');
  t.equal(metrics.value(INGEST_ACCEPTED), accepted, 'the accepted metric adds up');
  t.equal(metrics.value(INGEST_EVENTS), eventsApplied, 'the events metric adds up');
  // The reasons a payload or topic can earn (rate limits are off here, and tested elsewhere).
  for (const reason of ['payload_too_large', 'malformed_json', 'invalid_event', 'bad_topic', 'unknown_device', 'clock_skew']) {
    t.ok((reasons.get(reason) ?? 0) > 0, `the corpus exercises ${reason} (${reasons.get(reason) ?? 0})`);
  }
  t.ok(accepted > RUNS / 20, `a real share of messages is accepted (${accepted}), so state does change during the run`);
  t.ok(changedByAccepted > 100, `the state snapshot does see changes (events older than the stored ones lose, last writer wins): ${changedByAccepted} of ${accepted} applied messages changed it`);
  t.ok(ignored > 0, `some OwnTracks messages are valid with nothing to apply (${ignored})`);
  t.equal(kindsApplied.size, 16, `every event kind was applied at least once (${[...kindsApplied].sort().join(', ')})`);

  t.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype has no polluted property');
  t.equal(prototypeKeys(Object.prototype), objectProtoBefore, 'Object.prototype keeps exactly its own keys');
  t.equal(prototypeKeys(Array.prototype), arrayProtoBefore, 'Array.prototype keeps exactly its own keys');
  t.equal(typeof Object.prototype.toString, 'function', 'Object.prototype.toString is intact');
  // Not a failure: JSON.parse sees U+FFFD where the bytes were not UTF-8 (RFC 8259 §8.1 wants UTF-8).
  t.comment(`${acceptedInvalidUtf8} applied payloads were not valid UTF-8 (decoded with U+FFFD replacements)`);
  t.comment(`${RUNS} payloads in ${Math.round(elapsed)} ms: ${accepted} applied (${eventsApplied} events), ${ignored} ignored, refused ${JSON.stringify(Object.fromEntries(reasons))}`);
});
