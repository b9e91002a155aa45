import t from 'tap';
import { Directory } from '../../core/directory.js';
import type { Log } from '../../core/log.js';
import { Metrics } from '../../core/metrics.js';
import { PresenceHub } from '../../core/presence-hub.js';
import { INGEST_ACCEPTED, INGEST_IGNORED, INGEST_KEPT, INGEST_REJECTED, IngestPipeline, KEPT_PER_DEVICE, type IngestOptions } from '../../ingest/ingest-pipeline.js';

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
  return { directory, hub, metrics, lines, pipeline };
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

t.test('over the limit without keepNewestOverLimit (the embedded broker paces before this): refused as rate_limited', async (t) => {
  const { metrics, pipeline } = setup({ deviceRateLimit: { perSecond: 1, burst: 1 } });
  t.equal(pipeline.handle(`p/${DEVICE}/events`, event('idle'), NOW), undefined);
  t.equal(pipeline.handle(`p/${DEVICE}/events`, event('in-call'), NOW), 'rate_limited');
  t.equal(pipeline.applyKept(NOW + 5000), undefined, 'nothing kept');
  t.equal(metrics.value(INGEST_ACCEPTED), 1);
});

t.test('keepNewestOverLimit: messages over the limit are kept, unparsed, and applied oldest first as the limit allows', async (t) => {
  const waits: number[] = [];
  const { hub, metrics, pipeline } = setup({ deviceRateLimit: { perSecond: 2, burst: 1 }, keepNewestOverLimit: true, onKept: (ms) => waits.push(ms) });
  const call = (state: string, at: number) => Buffer.from(JSON.stringify({ kind: 'call', at: new Date(at).toISOString(), state }));
  t.equal(pipeline.handle(`p/${DEVICE}/events`, call('idle', NOW - 3000), NOW), undefined, 'the burst');
  t.equal(pipeline.handle(`p/${DEVICE}/events`, call('idle', NOW - 2000), NOW), undefined, 'kept');
  t.equal(pipeline.handle(`p/${DEVICE}/events`, Buffer.from('{"not json'), NOW), undefined, 'kept too, unparsed');
  t.equal(pipeline.handle(`p/${DEVICE}/events`, call('in-call', NOW - 1000), NOW), undefined, 'kept too');
  t.same(waits, [500, 500, 500], 'each time told when the device may send again');
  t.equal(metrics.value(INGEST_REJECTED, { reason: 'rate_limited' }), 0, 'none refused');
  t.equal(metrics.value(INGEST_REJECTED, { reason: 'malformed_json' }), 0, 'never parsed');
  t.equal(metrics.value(INGEST_KEPT), 3);
  t.equal(metrics.value('presence_ingest_kept'), 3);
  t.equal(pipeline.applyKept(NOW + 100), 400, 'not yet: 400 ms to go');
  t.same(hub.current('o1', NOW).activities, [], 'not applied before');
  t.equal(pipeline.applyKept(NOW + 500), 500, 'one token: the oldest applied, the next due in 500 ms');
  t.equal(metrics.value(INGEST_ACCEPTED), 2);
  t.equal(pipeline.applyKept(NOW + 1000), 500, 'the next: refused when applied (not JSON)');
  t.equal(metrics.value(INGEST_REJECTED, { reason: 'malformed_json' }), 1);
  t.equal(pipeline.applyKept(NOW + 1500), undefined, 'the newest: nothing left');
  t.same(hub.current('o1', NOW + 1500).activities, ['on-the-phone'], 'the newest report is what shows');
  t.equal(metrics.value(INGEST_ACCEPTED), 3, 'every message applied or refused once');
  t.equal(metrics.value('presence_ingest_kept'), 0);
  t.equal(pipeline.handle(`p/${DEVICE}/events`, call('idle', NOW + 1400), NOW + 1500), undefined, 'the token was taken: kept again');
  t.equal(metrics.value('presence_ingest_kept'), 1);
});

t.test('keepNewestOverLimit: a phone flushing an offline queue of 210 reports past a burst of 60: the newest 100 are applied within the limit, the older refused, every one counted once', async (t) => {
  const refused: string[] = [];
  const { metrics, pipeline } = setup({
    deviceRateLimit: { perSecond: 20, burst: 60 },
    keepNewestOverLimit: true,
    onRejected: (_topic, payload, reason) => refused.push(`${reason} ${JSON.parse(payload.toString()).at as string}`),
  });
  const at = (i: number) => new Date(NOW - (200 - i) * 1000).toISOString();
  for (let i = 0; i < 210; i++) pipeline.handle(`p/${DEVICE}/events`, Buffer.from(JSON.stringify({ kind: 'battery', at: at(i), level: i % 100, charging: false })), NOW);
  t.equal(metrics.value(INGEST_ACCEPTED), 60, 'the burst');
  t.equal(metrics.value('presence_ingest_kept'), 100, 'the newest hundred kept');
  t.equal(refused.length, 50);
  t.same(refused[0], `rate_limited ${at(60)}`, 'the oldest over the limit pushed out first');
  t.same(refused.at(-1), `rate_limited ${at(109)}`);
  let now = NOW;
  let due = pipeline.applyKept(now);
  while (due !== undefined) {
    now += due;
    due = pipeline.applyKept(now);
  }
  t.equal(metrics.value(INGEST_ACCEPTED), 160, 'all kept applied');
  t.ok(now - NOW <= 5000 + 50, `within the limit: ${now - NOW} ms for 100 at 20/s`);
  t.equal(metrics.value(INGEST_ACCEPTED) + metrics.value(INGEST_REJECTED, { reason: 'rate_limited' }), 210);
});

t.test('keepNewestOverLimit: a kept message is checked again when applied (a device revoked meanwhile is refused)', async (t) => {
  const { directory, hub, metrics, pipeline } = setup({ deviceRateLimit: { perSecond: 1, burst: 1 }, keepNewestOverLimit: true });
  pipeline.handle(`p/${DEVICE}/events`, event('idle'), NOW);
  pipeline.handle(`p/${DEVICE}/events`, event('in-call'), NOW);
  directory.putDevice({ id: DEVICE, ownerId: 'o1', deviceClass: 'phone', revoked: true });
  pipeline.applyKept(NOW + 1000);
  t.equal(metrics.value(INGEST_REJECTED, { reason: 'unknown_device' }), 1);
  t.same(hub.current('o1', NOW).activities, [], 'not applied');
});

t.test('keepNewestOverLimit: at a stop every kept message is applied whatever the limit, and later excess is refused', async (t) => {
  const { hub, metrics, pipeline } = setup({ deviceRateLimit: { perSecond: 1, burst: 1 }, keepNewestOverLimit: true });
  pipeline.handle(`p/${DEVICE}/events`, event('idle'), NOW);
  pipeline.handle(`p/${DEVICE}/events`, event('in-call'), NOW);
  pipeline.applyAllKept(NOW);
  t.equal(pipeline.applyKept(NOW), undefined, 'nothing left kept');
  t.same(hub.current('o1', NOW).activities, ['on-the-phone'], 'applied, though the device has no token');
  t.equal(pipeline.handle(`p/${DEVICE}/events`, event('idle'), NOW), 'rate_limited', 'no longer kept');
  t.equal(metrics.value(INGEST_ACCEPTED), 2);
});

t.test('keepNewestOverLimit: bounded in bytes (16 MiB in all); past that a device makes room from its own oldest, or its excess is refused', async (t) => {
  const { directory, metrics, pipeline } = setup({ maxBytes: 1_048_576, deviceRateLimit: { perSecond: 1, burst: 1 }, keepNewestOverLimit: true });
  const devices = [...Array(18).keys()].map((i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`);
  for (const id of devices) directory.putDevice({ id, ownerId: 'o1', deviceClass: 'sensor', revoked: false });
  const big = Buffer.alloc(1_048_576, 0x20);
  for (const id of devices) {
    pipeline.handle(`p/${id}/events`, event('idle'), NOW);
    pipeline.handle(`p/${id}/events`, big, NOW);
  }
  t.equal(metrics.value('presence_ingest_kept'), 16, 'sixteen of 1 MiB kept');
  t.equal(metrics.value(INGEST_REJECTED, { reason: 'rate_limited' }), 2, 'the rest refused');
  t.equal(pipeline.handle(`p/${devices[0]}/events`, event('in-call'), NOW), undefined, 'a device at the bound makes room from its own oldest');
  t.equal(metrics.value(INGEST_REJECTED, { reason: 'rate_limited' }), 3);
  t.equal(metrics.value('presence_ingest_kept'), 16);
  t.equal(pipeline.handle(`p/${devices[17]}/events`, event('in-call'), NOW), undefined, 'which made room for another');
  t.equal(pipeline.handle(`p/${devices[16]}/events`, big, NOW), 'rate_limited', 'one with nothing kept and no room: refused');
  // devices[0] and devices[17] hold a small one each now: a big one does not fit even without theirs.
  const keptBefore = metrics.value('presence_ingest_kept');
  const refusedBefore = metrics.value(INGEST_REJECTED, { reason: 'rate_limited' });
  t.equal(pipeline.handle(`p/${devices[17]}/events`, big, NOW), 'rate_limited', 'refused without giving up its own for nothing');
  t.equal(metrics.value('presence_ingest_kept'), keptBefore, 'what it kept is still kept');
  t.equal(metrics.value(INGEST_REJECTED, { reason: 'rate_limited' }), refusedBefore + 1, 'only the new one refused');
  t.equal(pipeline.handle(`p/${devices[1]}/events`, big, NOW), undefined, 'one whose own oldest makes room: kept in its place');
});

t.test('keepNewestOverLimit: a payload too large to apply is refused at once, not kept; refusals reach onRejected, the pushed out and the applied alike', async (t) => {
  const refusals: string[] = [];
  const { metrics, pipeline } = setup({
    deviceRateLimit: { perSecond: 1, burst: 1 },
    keepNewestOverLimit: true,
    onRejected: (_topic, payload, reason) => refusals.push(`${reason} ${payload.byteLength}`),
  });
  pipeline.handle(`p/${DEVICE}/events`, event('idle'), NOW);
  t.equal(pipeline.handle(`p/${DEVICE}/events`, Buffer.alloc(1025, 0x20), NOW), 'payload_too_large');
  t.equal(metrics.value('presence_ingest_kept'), 0, 'not kept');
  for (let i = 0; i < KEPT_PER_DEVICE + 1; i++) pipeline.handle(`p/${DEVICE}/events`, Buffer.from(`{"${String(i).padStart(3, '0')}`), NOW);
  pipeline.applyAllKept(NOW);
  t.same(refusals.slice(0, 3), ['payload_too_large 1025', 'rate_limited 5', 'malformed_json 5'], 'in order: too large, pushed out, refused when applied');
  t.equal(refusals.length, 2 + KEPT_PER_DEVICE);
});
