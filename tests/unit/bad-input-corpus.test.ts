import t from 'tap';
import { Directory } from '../../core/directory.js';
import { ingestRejections } from '../../core/errors.js';
import { Metrics } from '../../core/metrics.js';
import { PresenceHub } from '../../core/presence-hub.js';
import { INGEST_ACCEPTED, INGEST_REJECTED, IngestPipeline } from '../../ingest/ingest-pipeline.js';
import { badPayloads } from '../helpers/bad-payloads.js';

const NOW = Date.parse('2026-05-04T10:00:00Z');
const DEVICE = '11111111-1111-4111-8111-111111111111';

t.test('5,000 generated hostile payloads: each refused with a counted reason, nothing applied, nothing thrown', async (t) => {
  const directory = new Directory();
  directory.putOwner({ id: 'o1', handle: 'alice' });
  directory.putDevice({ id: DEVICE, ownerId: 'o1', deviceClass: 'phone', revoked: false });
  const hub = new PresenceHub({ offlineAfterMs: 600_000 });
  const metrics = new Metrics();
  const quiet = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };
  const pipeline = new IngestPipeline(directory, hub, metrics, quiet, {
    topics: { root: 'p', ownTracksRoot: 'ot' },
    maxBytes: 16_384,
    maxClockSkewMs: 300_000,
    digestNetworkName: () => 'x'.repeat(22),
  });
  const corpus = badPayloads(5000, NOW, 16_384);
  const reasons = new Map<string, number>();
  for (const [i, payload] of corpus.entries()) {
    const topic = i % 2 ? `p/${DEVICE}/events` : `ot/${DEVICE}/phone`;
    const reason = pipeline.handle(topic, payload, NOW);
    if (reason === undefined) t.fail(`payload ${i} was accepted: ${payload.subarray(0, 120).toString()}`);
    else reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
  }
  t.equal(metrics.value(INGEST_ACCEPTED), 0, 'nothing accepted');
  t.equal(hub.ownerCount, 0, 'no state created: nothing half-applied');
  const counted = ingestRejections.reduce((sum, reason) => sum + metrics.value(INGEST_REJECTED, { reason }), 0);
  t.equal(counted, corpus.length, 'every refusal counted');
  for (const reason of ['malformed_json', 'invalid_event', 'clock_skew', 'payload_too_large']) t.ok((reasons.get(reason) ?? 0) > 0, `the corpus exercises ${reason}`);
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype untouched');
});
