import { connectAsync, type MqttClient } from 'mqtt';
import t from 'tap';
import { RETAINED_CLEARED } from '../../bin/service.js';
import { INGEST_ACCEPTED, INGEST_IGNORED } from '../../ingest/ingest-pipeline.js';
import { MQTT_TEST_URL, createTestDatabase, uniqueName, waitFor } from '../helpers/env.js';
import { provision, startTestService, testConfig, type TestService } from '../helpers/service.js';

/**
 * Privacy invariant 4 at an external broker (ingest/retained-clearing.ts),
 * on the machine's real Mosquitto: device messages published with the
 * retain flag must not stay at the broker once the service has them.
 * Whether the broker still keeps a topic's message is asked the way any
 * subscriber would find it: subscribe, and see whether a retained copy
 * arrives before a marker published after the SUBACK.
 */
const top = t;
const databaseUrl = await createTestDatabase(t);
const root = uniqueName('t');
const ownTracksRoot = uniqueName('ot');
const config = await testConfig(t, { DATABASE_URL: databaseUrl, MQTT_URL: MQTT_TEST_URL, MQTT_TOPIC_ROOT: root, OWNTRACKS_TOPIC_ROOT: ownTracksRoot });
let service: TestService = await startTestService(t, config);
const alice = await provision(service, 'alice');
const bobby = await provision(service, 'bobby');

// Mosquitto here has no authentication: this client stands in for the devices.
const device: MqttClient = await connectAsync(MQTT_TEST_URL, { clientId: uniqueName('dev'), clean: true });
t.teardown(() => device.endAsync());
const event = (state: string) => JSON.stringify({ kind: 'call', at: new Date().toISOString(), state });
const location = () => JSON.stringify({ _type: 'location', lat: 52.52, lon: 13.405, acc: 10, tst: Math.floor(Date.now() / 1000) });

/** The payloads the broker still retains for `topic` (at most one). */
async function retainedAt(topic: string): Promise<string[]> {
  const probe = await connectAsync(MQTT_TEST_URL, { clientId: uniqueName('probe'), clean: true });
  try {
    const retained: string[] = [];
    // The marker goes below the topic, where the service does not listen (its
    // arrival there would count as one of the service's clears coming back).
    const markerTopic = `${topic}/probe-marker`;
    const marker = new Promise<void>((resolve) => {
      probe.on('message', (received, payload, packet) => {
        if (received === markerTopic) resolve();
        else if (packet.retain) retained.push(payload.toString());
      });
    });
    await probe.subscribeAsync([topic, markerTopic], { qos: 1 });
    // A retained copy is sent with the subscription, before anything published after it.
    await probe.publishAsync(markerTopic, 'marker', { qos: 1 });
    await marker;
    return retained;
  } finally {
    await probe.endAsync();
  }
}

/** Waits until the service has seen its own clear of a topic come back (so the broker has applied it). */
async function clearedTimes(n: number) {
  await waitFor(() => service.metrics.value(RETAINED_CLEARED) >= n, `${n} clears sent`);
}

t.test('an OwnTracks location, retained as the app does, is removed from the broker once applied', async (t) => {
  const topic = `${ownTracksRoot}/${alice.device.id}/phone`;
  const before = { accepted: service.metrics.value(INGEST_ACCEPTED), ignored: service.metrics.value(INGEST_IGNORED) };
  await device.publishAsync(topic, location(), { qos: 1, retain: true });
  await waitFor(() => service.metrics.value(INGEST_ACCEPTED) > before.accepted, 'the location applied');
  await clearedTimes(1);
  await waitFor(() => service.metrics.value(INGEST_IGNORED) > before.ignored, 'the clear to come back, applied by the broker');
  t.same(await retainedAt(topic), [], 'the broker keeps nothing');
});

t.test('a native topic: a retained message is removed at the next subscribe, and every later one as it arrives', async (t) => {
  const topic = bobby.device.topic;
  const first = event('in-call');
  const accepted = service.metrics.value(INGEST_ACCEPTED);
  await device.publishAsync(topic, first, { qos: 1, retain: true });
  await waitFor(() => service.metrics.value(INGEST_ACCEPTED) > accepted, 'the event applied');
  // MQTT 3.1.1 forwards a live message with RETAIN 0: nothing told the
  // service that this device retains, so the broker still keeps it.
  t.same(await retainedAt(topic), [first], 'kept until the service subscribes again');

  // A restart (the service subscribes anew; a reconnect resumes its session and subscribes to nothing) hands the retained copy over, flagged.
  await service.close();
  service = await startTestService(top, config); // closed when the file ends, not with this test
  await clearedTimes(1);
  await waitFor(() => service.metrics.value(INGEST_IGNORED) >= 1, 'the clear to come back');
  t.same(await retainedAt(topic), [], 'removed at the subscribe');

  // From then on the topic is known retained: a live message is removed as it arrives.
  const ignored = service.metrics.value(INGEST_IGNORED);
  await device.publishAsync(topic, event('idle'), { qos: 1, retain: true });
  await clearedTimes(2);
  await waitFor(() => service.metrics.value(INGEST_IGNORED) > ignored, 'the clear to come back');
  t.same(await retainedAt(topic), [], 'removed as it arrived');
});

t.test('a native topic that begins to retain after the start: found by the periodic renewal of the subscription and removed (MQTT_RETAINED_SWEEP_SECONDS)', async (t) => {
  const sweepRoot = uniqueName('t');
  const sweeping = await startTestService(t, await testConfig(t, { DATABASE_URL: await createTestDatabase(t), MQTT_URL: MQTT_TEST_URL, MQTT_TOPIC_ROOT: sweepRoot, OWNTRACKS_TOPIC_ROOT: uniqueName('ot'), MQTT_RETAINED_SWEEP_SECONDS: '1' }));
  t.teardown(() => sweeping.close());
  const carol = await provision(sweeping, 'carol');
  const topic = carol.device.topic;
  t.teardown(() => device.publishAsync(topic, Buffer.alloc(0), { qos: 1, retain: true }));
  const body = event('in-call');
  const accepted = sweeping.metrics.value(INGEST_ACCEPTED);
  await device.publishAsync(topic, body, { qos: 1, retain: true });
  await waitFor(() => sweeping.metrics.value(INGEST_ACCEPTED) > accepted, 'the event applied');
  const appliedLive = sweeping.metrics.value(INGEST_ACCEPTED);
  // Forwarded live with RETAIN 0 (MQTT 3.1.1): the service could not tell, so the broker keeps it for now.
  t.equal(sweeping.metrics.value(RETAINED_CLEARED), 0, 'not cleared as it arrived');
  await waitFor(() => sweeping.metrics.value(RETAINED_CLEARED) >= 1, 'the renewed subscription to hand it over, flagged, and the clear', 10_000);
  await waitFor(() => sweeping.metrics.value(INGEST_IGNORED) >= 1, 'the clear to come back, applied by the broker');
  t.same(await retainedAt(topic), [], 'the broker keeps nothing');
  t.equal(sweeping.metrics.value(INGEST_ACCEPTED), appliedLive, 'the copy the renewal brought is cleared, not applied a second time');
  t.ok(sweeping.hub.current(carol.owner.id, Date.now()).activities.includes('on-the-phone'));
});

t.test('a native message not retained costs no clear', async (t) => {
  const cleared = service.metrics.value(RETAINED_CLEARED);
  const accepted = service.metrics.value(INGEST_ACCEPTED);
  await device.publishAsync(alice.device.topic, event('in-call'), { qos: 1 });
  await waitFor(() => service.metrics.value(INGEST_ACCEPTED) > accepted, 'the event applied');
  t.equal(service.metrics.value(RETAINED_CLEARED), cleared);
});

t.test('MQTT_CLEAR_RETAINED=false leaves the broker what it retains', async (t) => {
  const otherRoot = uniqueName('ot');
  const keeping = await startTestService(t, await testConfig(t, { DATABASE_URL: databaseUrl, MQTT_URL: MQTT_TEST_URL, MQTT_TOPIC_ROOT: uniqueName('t'), OWNTRACKS_TOPIC_ROOT: otherRoot, MQTT_CLEAR_RETAINED: 'false' }));
  t.teardown(() => keeping.close());
  const topic = `${otherRoot}/${alice.device.id}/phone`;
  // Leave nothing behind on the machine's broker.
  t.teardown(() => device.publishAsync(topic, Buffer.alloc(0), { qos: 1, retain: true }));
  const body = location();
  const accepted = keeping.metrics.value(INGEST_ACCEPTED);
  await device.publishAsync(topic, body, { qos: 1, retain: true });
  await waitFor(() => keeping.metrics.value(INGEST_ACCEPTED) > accepted, 'the location applied');
  t.same(await retainedAt(topic), [body]);
  t.equal(keeping.metrics.value(RETAINED_CLEARED), 0);
});
