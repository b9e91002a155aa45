import { connectAsync } from 'mqtt';
import t from 'tap';
import { INGEST_ACCEPTED } from '../../ingest/ingest-pipeline.js';
import { MQTT_TEST_URL, createTestDatabase, uniqueName, waitFor } from '../helpers/env.js';
import { addRule, addWatcher, provision, startTestService, testConfig, type TestService } from '../helpers/service.js';

/**
 * Events published while the service is down are applied when it comes
 * back: a persistent MQTT session with a QoS 1 subscription on the real
 * Mosquitto, and the signals restored from PostgreSQL.
 */
const root = t;
const config = await testConfig(t, { DATABASE_URL: await createTestDatabase(t), MQTT_URL: MQTT_TEST_URL, MQTT_TOPIC_ROOT: uniqueName('d') });
let service: TestService = await startTestService(t, config);
const alice = await provision(service, 'alice');
const bob = await addWatcher(service, 'Bob');
await addRule(service, 'alice', bob.id, 'allow');
const read = async () => (await service.api('GET', '/v1/presence/alice', { token: bob.token, headers: { accept: 'application/json' } })).json();

t.test('events published while the service is down are applied when it returns', async (t) => {
  const device = await connectAsync(MQTT_TEST_URL, { clientId: uniqueName('dev'), clean: true });
  t.teardown(() => device.endAsync());
  const now = Date.now();
  await device.publishAsync(alice.device.topic, JSON.stringify({ kind: 'user-input', at: new Date(now).toISOString(), state: 'active' }), { qos: 1 });
  await waitFor(() => service.metrics.value(INGEST_ACCEPTED) === 1, 'the first event');
  t.match(await read(), { basic: 'open', availability: 'available' });

  await service.close();
  // While the service is away: a call starts, then a meeting begins.
  await device.publishAsync(alice.device.topic, JSON.stringify({ kind: 'call', at: new Date(now + 1000).toISOString(), state: 'in-call' }), { qos: 1 });
  await device.publishAsync(
    alice.device.topic,
    JSON.stringify({ kind: 'calendar', at: new Date(now + 2000).toISOString(), state: 'busy', start: new Date(now).toISOString(), end: new Date(now + 3_600_000).toISOString() }),
    { qos: 1 },
  );

  service = await startTestService(root, config);
  await waitFor(() => service.metrics.value(INGEST_ACCEPTED) === 2, 'the two queued events');
  t.same(await read(), { entity: 'pres:alice@presence.local', basic: 'open', availability: 'busy', activities: ['on-the-phone', 'meeting'] });
});
