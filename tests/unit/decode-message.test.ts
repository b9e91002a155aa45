import t from 'tap';
import { MAX_EVENTS_PER_MESSAGE } from '../../core/events.js';
import { decodeMessage } from '../../ingest/decode-message.js';
import { mayPublish, parseTopic } from '../../ingest/topics.js';

const NOW = Date.parse('2026-05-04T10:00:00Z');
const limits = { maxBytes: 16_384, maxClockSkewMs: 300_000 };
const at = new Date(NOW).toISOString();
const enc = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v));

t.test('accepts one event or a batch', async (t) => {
  t.same(decodeMessage(enc({ kind: 'call', at, state: 'in-call' }), limits, NOW), { ok: true, events: [{ kind: 'call', at, state: 'in-call' }] });
  const batch = decodeMessage(enc({ events: [{ kind: 'call', at, state: 'idle' }, { kind: 'user-input', at, state: 'active' }] }), limits, NOW);
  t.ok(batch.ok && batch.events.length === 2);
});

t.test('strips unknown fields (a calendar subject is never kept)', async (t) => {
  const decoded = decodeMessage(enc({ kind: 'calendar', at, state: 'busy', start: at, end: new Date(NOW + 1000).toISOString(), subject: 'Secret' }), limits, NOW);
  t.ok(decoded.ok);
  if (decoded.ok) t.notOk('subject' in (decoded.events[0] as object));
});

const refused: [string, Buffer, string][] = [
  ['oversized', Buffer.alloc(16_385, 32), 'payload_too_large'],
  ['valid UTF-8 beyond ASCII', enc({ kind: 'network', at, connection: 'wifi', ssid: 'Café ☕' }), 'ok-plain'],
  ['not JSON', enc('{"kind":'), 'malformed_json'],
  ['binary garbage', Buffer.from([0xff, 0xfe, 0x00]), 'malformed_json'],
  ['unknown kind', enc({ kind: 'teleport', at }), 'invalid_event'],
  ['wrong type', enc({ kind: 'call', at, state: 3 }), 'invalid_event'],
  ['missing time', enc({ kind: 'call', state: 'idle' }), 'invalid_event'],
  ['time without offset', enc({ kind: 'call', at: '2026-05-04T10:00:00', state: 'idle' }), 'invalid_event'],
  ['calendar ending before it starts', enc({ kind: 'calendar', at, state: 'busy', start: at, end: at }), 'invalid_event'],
  ['empty batch', enc({ events: [] }), 'invalid_event'],
  ['batch too long', enc({ events: Array.from({ length: MAX_EVENTS_PER_MESSAGE + 1 }, () => ({ kind: 'call', at, state: 'idle' })) }), 'invalid_event'],
  ['array at the top', enc([{ kind: 'call', at, state: 'idle' }]), 'invalid_event'],
  ['null', enc('null'), 'invalid_event'],
  ['prototype pollution', enc('{"kind":"call","at":"' + at + '","state":"idle","__proto__":{"admin":true}}'), 'ok'],
  ['one bad event refuses the batch', enc({ events: [{ kind: 'call', at, state: 'idle' }, { kind: 'call', at, state: 'on' }] }), 'invalid_event'],
  ['far future', enc({ kind: 'call', at: new Date(NOW + 301_000).toISOString(), state: 'idle' }), 'clock_skew'],
  // RFC 8259 §8.1: UTF-8 only. Decoded leniently, 'Café' in Latin-1 and 'Caf\xe8' would be one Wi-Fi name.
  ['Latin-1 bytes in a string', Buffer.concat([enc(`{"kind":"network","at":"${at}","connection":"wifi","ssid":"Caf`), Buffer.from([0xe9]), enc('"}')]), 'malformed_json'],
  ['a lone UTF-8 continuation byte', Buffer.concat([enc(`{"kind":"call","at":"${at}","state":"idle","x":"`), Buffer.from([0x80]), enc('"}')]), 'malformed_json'],
  ['an encoded surrogate', Buffer.concat([enc(`{"kind":"call","at":"${at}","state":"idle","x":"`), Buffer.from([0xed, 0xa0, 0x80]), enc('"}')]), 'malformed_json'],
  // At most nanoseconds: a timestamp of unbounded precision would be held, and written with the state, at any length.
  ['a timestamp of 16,000 fraction digits', enc({ kind: 'call', at: `2026-05-04T10:00:00.${'1'.repeat(16_000)}Z`, state: 'idle' }), 'invalid_event'],
  ['nanoseconds with an offset', enc({ kind: 'call', at: '2026-05-04T11:59:59.123456789+02:00', state: 'idle' }), 'ok-plain'],
  ['ten fraction digits with an offset', enc({ kind: 'call', at: '2026-05-04T11:59:59.1234567891+02:00', state: 'idle' }), 'invalid_event'],
];

for (const [name, payload, reason] of refused) {
  t.test(name, async (t) => {
    const result = decodeMessage(payload, limits, NOW);
    if (reason === 'ok') {
      t.ok(result.ok);
      const event = result.ok ? (result.events[0] as object) : {};
      t.notOk(Object.prototype.hasOwnProperty.call(event, '__proto__'), 'the __proto__ key is stripped');
      t.equal(Object.getPrototypeOf(event), Object.prototype, 'the prototype is the plain one');
      t.equal((event as Record<string, unknown>).admin, undefined);
    } else if (reason === 'ok-plain') t.ok(result.ok, 'accepted');
    else t.same(result, { ok: false, reason });
  });
}

t.test('topics', async (t) => {
  const id = '11111111-1111-4111-8111-111111111111';
  const other = '22222222-2222-4222-8222-222222222222';
  const scheme = { root: 'presence', ownTracksRoot: 'owntracks' };
  t.same(parseTopic(scheme, `presence/${id}/events`), { deviceId: id, format: 'native' });
  t.same(parseTopic({ root: 'a/b', ownTracksRoot: 'o' }, `a/b/${id}/events`), { deviceId: id, format: 'native' });
  t.same(parseTopic(scheme, `owntracks/${id}/phone`), { deviceId: id, format: 'owntracks' });
  t.same(parseTopic(scheme, `owntracks/${id}/phone/event`), { deviceId: id, format: 'owntracks' });
  for (const topic of [`presence/${id}/other`, `presence/x/${id}/events`, `other/${id}/events`, 'presence/NOT-A-UUID/events', `owntracks/${id}/phone/waypoints`, `owntracks/${id}`]) {
    t.equal(parseTopic(scheme, topic), undefined, topic);
  }
  t.ok(mayPublish(scheme, id, `presence/${id}/events`));
  t.ok(mayPublish(scheme, id, `owntracks/${id}/phone/waypoints`), 'the OwnTracks app may publish its other messages');
  t.notOk(mayPublish(scheme, id, `presence/${other}/events`));
  t.notOk(mayPublish(scheme, id, `owntracks/${other}/phone`));
  t.notOk(mayPublish(scheme, id, `owntracks/${id}`));
  t.notOk(mayPublish(scheme, id, `owntracks/${id}//x`));
});
