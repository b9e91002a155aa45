import { connectAsync, type MqttClient } from 'mqtt';
import pg from 'pg';
import t from 'tap';
import { ingestRejections } from '../../core/errors.js';
import { INGEST_ACCEPTED, INGEST_REJECTED } from '../../ingest/ingest-pipeline.js';
import { badPayloads } from '../helpers/bad-payloads.js';
import { MQTT_TEST_URL, createTestDatabase, uniqueName, waitFor } from '../helpers/env.js';
import { addRule, addWatcher, ownerToken, provision, startTestService, testConfig } from '../helpers/service.js';

/**
 * Fuzzing MQTT ingest end to end (issue 7: "generated hostile input for
 * MQTT payloads (at least 10,000) ... no crash, no 5xx for a client
 * error, no partial write"), on the real components: 10,000 generated
 * hostile payloads (tests/helpers/bad-payloads.ts, seeded: malformed and
 * truncated JSON, binary noise, wrong types and shapes, unknown kinds,
 * out-of-range values, far-future dates, deep nesting, prototype-pollution
 * keys, batches with one bad event, oversized bodies), interleaved with 100
 * valid events, published at QoS 1 through the machine's Mosquitto, half on
 * the native topic and half on the OwnTracks one, to a service on
 * PostgreSQL. The owner keeps raw sensor events, so every accepted event
 * becomes a row of its own and a partial write would show.
 *
 * A second owner's device receives only the 100 valid events, in the same
 * order: what PostgreSQL holds for the two must be the same (their ids
 * aside). The in-process corpus (tests/unit/fuzz-mqtt-payloads.test.ts,
 * 12,000 cases) checks the pipeline message by message; this checks what
 * reaches storage through a real broker.
 */
const HOSTILE = 10_000;
const VALID_EVERY = 100;
const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed_0007);

const databaseUrl = await createTestDatabase(t);
const topicRoot = uniqueName('fz');
const ownTracksRoot = uniqueName('fzot');
const config = await testConfig(t, { DATABASE_URL: databaseUrl, MQTT_URL: MQTT_TEST_URL, MQTT_TOPIC_ROOT: topicRoot, OWNTRACKS_TOPIC_ROOT: ownTracksRoot });
const service = await startTestService(t, config);
const alice = await provision(service, 'alice');
const carol = await provision(service, 'carol');
const walt = await addWatcher(service, 'Walt');
await addRule(service, 'alice', walt.id, 'allow');
await addRule(service, 'carol', walt.id, 'allow');
for (const handle of ['alice', 'carol']) {
  const kept = await service.api('PUT', '/v1/me/settings', { token: await ownerToken(service, handle), body: { keepRawEventsDays: 7 } });
  if (kept.status !== 200) throw new Error(`retention for ${handle}: ${kept.status}`);
}

const db = new pg.Client({ connectionString: databaseUrl });
await db.connect();
t.teardown(() => db.end());
// Mosquitto here has no authentication: the publisher stands in for the devices.
const publisher: MqttClient = await connectAsync(MQTT_TEST_URL, { clientId: uniqueName('fz-dev'), clean: true });
t.teardown(() => publisher.endAsync());

/** Valid events of several kinds, each a little later than the one before, so their order decides the state. */
function validEvent(i: number, at: string): Record<string, unknown> {
  switch (i % 5) {
    case 0:
      return { kind: 'call', at, state: i % 2 ? 'in-call' : 'idle' };
    case 1:
      return { kind: 'motion', at, activity: (['still', 'walking', 'in-vehicle'] as const)[i % 3], confidence: 50 + (i % 50) };
    case 2:
      return { kind: 'user-input', at, state: i % 3 ? 'active' : 'idle' };
    case 3:
      return { kind: 'battery', at, level: i % 101, charging: i % 2 === 0 };
    default:
      return { kind: 'screen', at, state: i % 2 ? 'on' : 'off', locked: i % 3 === 0 };
  }
}

const totalRejected = () => ingestRejections.reduce((sum, reason) => sum + service.metrics.value(INGEST_REJECTED, { reason }), 0);

/** What PostgreSQL holds for an owner's sensor data, with the owner's and the device's ids replaced, so two owners compare. */
async function stored(owner: { id: string }, deviceId: string) {
  const anonymous = (value: unknown) => JSON.parse(JSON.stringify(value).replaceAll(owner.id, 'OWNER').replaceAll(deviceId, 'DEVICE')) as unknown;
  // By the event's own time (each valid event has its own): the write-behind's row order is not the arrival order.
  const raw = await db.query("select device_id, event from raw_events where owner_id = $1 order by event->>'at', id", [owner.id]);
  const state = await db.query('select signals from presence_state where owner_id = $1', [owner.id]);
  return { raw: raw.rows.map((r: { device_id: string; event: unknown }) => anonymous({ device: r.device_id, event: r.event })), signals: anonymous(state.rows[0]?.signals) };
}

t.test(`${HOSTILE} generated hostile payloads and ${HOSTILE / VALID_EVERY} valid events over Mosquitto to PostgreSQL (seed ${SEED})`, async (t) => {
  const now = Date.now();
  const corpus = badPayloads(HOSTILE, now, config.maxEventBytes, SEED);
  const ownTracksTopic = `${ownTracksRoot}/${alice.device.id}/phone`;
  const before = { rejected: totalRejected(), accepted: service.metrics.value(INGEST_ACCEPTED) };
  const handled = () => totalRejected() - before.rejected + service.metrics.value(INGEST_ACCEPTED) - before.accepted;
  const valid: Buffer[] = [];
  let sent = 0;
  // In chunks, each handled before the next is sent: the machine's Mosquitto
  // queues at most 1,000 messages for a subscriber (max_queued_messages) and
  // drops the rest, which would be the broker's loss, not the service's.
  const send = async (topic: string, payload: Buffer) => {
    await publisher.publishAsync(topic, payload, { qos: 1 });
    sent += 1;
    if (sent % 500 === 0) await waitFor(() => handled() >= sent || undefined, `${sent} messages handled`, 30_000);
  };
  for (const [i, payload] of corpus.entries()) {
    await send(i % 2 ? alice.device.topic : ownTracksTopic, payload);
    if (i % VALID_EVERY === VALID_EVERY - 1) {
      // Dated in the recent past, one millisecond apart: all within the accepted skew, in a fixed order.
      const event = Buffer.from(JSON.stringify(validEvent(valid.length, new Date(now - 60_000 + valid.length).toISOString())));
      valid.push(event);
      await send(alice.device.topic, event);
    }
  }
  // The same valid events, alone, to the second owner.
  for (const event of valid) await send(carol.device.topic, event);
  await waitFor(() => handled() >= sent || undefined, 'every message handled', 30_000);

  t.equal(totalRejected(), before.rejected + HOSTILE, 'every hostile payload refused, counted once under a reason of the catalog');
  t.equal(service.metrics.value(INGEST_ACCEPTED), before.accepted + 2 * valid.length, 'every valid event accepted');
  const ready = await service.api('GET', '/readyz');
  t.equal(ready.status, 200, 'the service is up and ready');

  await service.flush();
  const [mine, control] = [await stored(alice.owner, alice.device.id), await stored(carol.owner, carol.device.id)];
  t.equal(mine.raw.length, valid.length, 'exactly the valid events are kept as raw events');
  t.same(mine.raw, control.raw, 'the same rows as for an owner who received only the valid events');
  t.same(mine.signals, control.signals, 'and the same stored state');
  t.not(mine.signals, undefined, 'a state was stored');
  const views = await Promise.all(['alice', 'carol'].map(async (handle) => (await service.api('GET', `/v1/presence/${handle}`, { token: walt.token, headers: { accept: 'application/json' } })).json()));
  t.same({ ...(views[0] as object), entity: undefined }, { ...(views[1] as object), entity: undefined }, 'and the same view for their watcher');
  t.notOk(Object.prototype.hasOwnProperty.call(Object.prototype, 'polluted'), 'no prototype polluted');
});
