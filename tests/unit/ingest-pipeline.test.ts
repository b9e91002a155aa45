import t from 'tap';
import { Directory } from '../../core/directory.js';
import type { Log } from '../../core/log.js';
import { Metrics } from '../../core/metrics.js';
import { PresenceHub } from '../../core/presence-hub.js';
import { INGEST_ACCEPTED, INGEST_IGNORED, INGEST_REJECTED, IngestPipeline, type IngestOptions } from '../../ingest/ingest-pipeline.js';

const NOW = Date.parse('2026-05-04T10:00:00Z');
const DEVICE = '11111111-1111-4111-8111-111111111111';
const REVOKED = '22222222-2222-4222-8222-222222222222';

function setup(extra: Partial<IngestOptions> = {}) {
  const directory = new Directory();
  directory.putOwner({ id: 'o1', handle: 'alice' });
  directory.putDevice({ id: DEVICE, ownerId: 'o1', deviceClass: 'phone', revoked: false });
  directory.putDevice({ id: REVOKED, ownerId: 'o1', deviceClass: 'phone', revoked: true });
  const hub = new PresenceHub({ offlineAfterMs: 60_000 });
  const metrics = new Metrics();
  const lines: { obj: object; msg: string }[] = [];
  const log: Log = { debug: () => undefined, info: () => undefined, error: () => undefined, warn: (obj, msg) => lines.push({ obj, msg }) };
  const pipeline = new IngestPipeline(directory, hub, metrics, log, {
    topics: { root: 'p', ownTracksRoot: 'ot' },
    maxBytes: 1024,
    maxClockSkewMs: 60_000,
    digestNetworkName: (owner, ssid) => `digest-of-${owner}-${ssid.length}`.padEnd(22, 'x').slice(0, 22),
    ...extra,
  });
  return { hub, metrics, lines, pipeline };
}
const event = (state: string) => Buffer.from(JSON.stringify({ kind: 'call', at: new Date(NOW).toISOString(), state }));

t.test('applies a good message from an active device', async (t) => {
  const { hub, metrics, pipeline } = setup();
  t.equal(pipeline.handle(`p/${DEVICE}/events`, event('in-call'), NOW), undefined);
  t.equal(metrics.value(INGEST_ACCEPTED), 1);
  t.same(hub.current('o1', NOW).activities, ['on-the-phone']);
});

t.test('Wi-Fi names are replaced by a digest before they reach the store', async (t) => {
  const { hub, pipeline } = setup();
  const payload = Buffer.from(JSON.stringify({ kind: 'network', at: new Date(NOW).toISOString(), connection: 'wifi', ssid: 'HomeNet-42' }));
  t.equal(pipeline.handle(`p/${DEVICE}/events`, payload, NOW), undefined);
  const stored = JSON.stringify(hub.takeDirty());
  t.notMatch(stored, /HomeNet/, 'the name is gone');
  t.match(stored, /"network":"digest-of-o1-10xxxxxxx"/);
});

t.test('refuses unknown and revoked devices and foreign topics, without touching state', async (t) => {
  const { hub, metrics, pipeline } = setup();
  t.equal(pipeline.handle(`p/${REVOKED}/events`, event('in-call'), NOW), 'unknown_device');
  t.equal(pipeline.handle(`p/${crypto.randomUUID()}/events`, event('in-call'), NOW), 'unknown_device');
  t.equal(pipeline.handle(`q/${DEVICE}/events`, event('in-call'), NOW), 'bad_topic');
  t.equal(pipeline.handle(`p/${DEVICE}/events`, event('dancing'), NOW), 'invalid_event');
  t.equal(metrics.value(INGEST_REJECTED, { reason: 'unknown_device' }), 2);
  t.equal(hub.ownerCount, 0, 'no state created');
});

t.test('logs refusals without payloads, at most once per reason per window', async (t) => {
  const { lines, pipeline } = setup();
  for (let i = 0; i < 100; i++) pipeline.handle(`p/${DEVICE}/events`, Buffer.from('{"secret": "x'), NOW + i);
  t.equal(lines.length, 1);
  pipeline.handle(`p/${DEVICE}/events`, Buffer.from('{"secret": "x'), NOW + 10_000);
  t.equal(lines.length, 2);
  t.match(lines[1]?.obj, { reason: 'malformed_json', suppressedSinceLast: 99 });
  t.notMatch(JSON.stringify(lines), /secret/, 'no payload in the logs');
});

t.test('with ignoreEmpty, a zero-byte payload (a retained message removed) is ignored on any device topic, revoked too, and takes no rate-limit token', async (t) => {
  const { hub, metrics, pipeline } = setup({ deviceRateLimit: { perSecond: 1, burst: 1 }, ignoreEmpty: true });
  t.equal(pipeline.handle(`p/${DEVICE}/events`, Buffer.alloc(0), NOW), undefined);
  t.equal(pipeline.handle(`p/${REVOKED}/events`, Buffer.alloc(0), NOW), undefined);
  t.equal(pipeline.handle(`ot/${DEVICE}/phone`, Buffer.alloc(0), NOW), undefined);
  t.equal(pipeline.handle(`q/${DEVICE}/events`, Buffer.alloc(0), NOW), 'bad_topic', 'a foreign topic is still refused');
  t.equal(metrics.value(INGEST_IGNORED), 3);
  t.equal(metrics.value(INGEST_ACCEPTED), 0);
  t.equal(hub.ownerCount, 0, 'no state created');
  t.equal(pipeline.handle(`p/${DEVICE}/events`, event('in-call'), NOW), undefined, "the device's one token of the second is still there");
  t.equal(metrics.value(INGEST_ACCEPTED), 1);
});

t.test('without ignoreEmpty (the embedded broker), a zero-byte payload is checked and refused like any other', async (t) => {
  const { metrics, pipeline } = setup();
  t.equal(pipeline.handle(`p/${REVOKED}/events`, Buffer.alloc(0), NOW), 'unknown_device');
  t.equal(pipeline.handle(`p/${DEVICE}/events`, Buffer.alloc(0), NOW), 'malformed_json');
  t.equal(metrics.value(INGEST_IGNORED), 0);
});
