import t from 'tap';
import { deadLetter } from '../../ingest/dead-letter.js';

const now = Date.parse('2026-12-05T12:00:00Z');
const payload = Buffer.from(JSON.stringify({ kind: 'location', lat: 48.85, lon: 2.29, ssid: 'Home' }));

t.test('a dead letter names the fields, never their values', async (t) => {
  const letter = deadLetter('dl', 'presence/d1/events', payload, 'invalid_event', now);
  t.ok(letter);
  t.equal(letter?.topic, 'dl/invalid_event');
  t.same(JSON.parse(letter?.payload ?? '{}'), { reason: 'invalid_event', topic: 'presence/d1/events', receivedAt: '2026-12-05T12:00:00.000Z', bytes: payload.byteLength, fields: ['kind', 'lat', 'lon', 'ssid'] });
  t.notMatch(letter?.payload ?? '', /48\.85|Home/);
});

t.test('no dead letter for unknown devices, bad topics, or a device over its rate limit', async (t) => {
  for (const reason of ['bad_topic', 'unknown_device', 'rate_limited'] as const) t.equal(deadLetter('dl', 'x', payload, reason, now), undefined, reason);
});
