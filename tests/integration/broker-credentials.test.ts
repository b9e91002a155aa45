import { connectAsync, type MqttClient } from 'mqtt';
import t, { type Test } from 'tap';
import { parseConfig } from '../../core/config.js';
import { INGEST_ACCEPTED } from '../../ingest/ingest-pipeline.js';
import { startService } from '../../bin/service.js';
import { DEVICE_ROLE, MosquittoDynsec } from '../../ingest/mosquitto-dynsec.js';
import { startDynsecBroker } from '../helpers/dynsec-broker.js';
import { createTestDatabase, tempDir, uniqueName, waitFor } from '../helpers/env.js';
import { startPrivateBroker } from '../helpers/mosquitto.js';
import { provision, startTestService, testConfig } from '../helpers/service.js';

/**
 * A lost phone on an external broker (issue 7): with
 * MQTT_DEVICE_CREDENTIALS=mosquitto-dynsec the service keeps device
 * credentials on a real Mosquitto's Dynamic Security plugin, so a device
 * token issued is what the device logs in with, a new token ends the old
 * one's session, and a revoked or erased device is thrown off the broker
 * and refused, not merely ignored by ingest.
 */
const topics = { root: 'presence', ownTracksRoot: 'owntracks' };
const { broker, serviceUsername, servicePassword } = await startDynsecBroker(t, topics);
const config = await testConfig(t, {
  DATABASE_URL: await createTestDatabase(t),
  MQTT_URL: broker.url,
  MQTT_USERNAME: serviceUsername,
  MQTT_PASSWORD: servicePassword,
  MQTT_DEVICE_CREDENTIALS: 'mosquitto-dynsec',
});
// The service's clock runs ahead by `offsetMs` when a test makes tokens expire; expired broker passwords are looked for often.
let offsetMs = 0;
const service = await startTestService(t, config, { clock: () => Date.now() + offsetMs, brokerExpirySweepMs: 200 });
const NOT_AUTHORIZED = /Not authorized|Bad username or password/i;

async function asDevice(t: Test, deviceId: string, token: string): Promise<MqttClient> {
  const client = await connectAsync(broker.url, { username: deviceId, password: token, clientId: deviceId, reconnectPeriod: 0 });
  t.teardown(() => client.endAsync(true));
  return client;
}
const closed = (client: MqttClient) => new Promise<void>((resolve) => (client.connected ? client.once('close', () => resolve()) : resolve()));
const event = () => JSON.stringify({ kind: 'call', state: 'in-call', at: new Date().toISOString() });
const newToken = async (deviceId: string) =>
  ((await (await service.api('POST', '/v1/admin/tokens', { token: service.adminToken, body: { kind: 'device', subject: deviceId } })).json()) as { token: string }).token;

t.test('a device token issued is the device’s broker password; its events are ingested', async (t) => {
  const alice = await provision(service, 'alice');
  const device = await asDevice(t, alice.device.id, alice.deviceToken);
  const before = service.metrics.value(INGEST_ACCEPTED);
  await device.publishAsync(alice.device.topic, event(), { qos: 1 });
  await waitFor(() => service.metrics.value(INGEST_ACCEPTED) > before, 'the event ingested');
  await t.rejects(connectAsync(broker.url, { username: alice.device.id, password: 'not-the-token', clientId: alice.device.id, reconnectPeriod: 0 }), NOT_AUTHORIZED, 'another password is refused');

  // A new token: the broker takes it before the API hands it out, and the session opened with the old one ends.
  const ended = closed(device);
  const second = await newToken(alice.device.id);
  await ended;
  await t.rejects(connectAsync(broker.url, { username: alice.device.id, password: alice.deviceToken, clientId: alice.device.id, reconnectPeriod: 0 }), NOT_AUTHORIZED, 'the old token no longer logs in');
  const again = await asDevice(t, alice.device.id, second);
  t.ok(again.connected, 'the new one does');
});

t.test('a revoked device is disconnected by the broker and cannot log in again', async (t) => {
  const bob = await provision(service, 'bob');
  const device = await asDevice(t, bob.device.id, bob.deviceToken);
  const ended = closed(device);
  const started = Date.now();
  t.equal((await service.api('DELETE', `/v1/admin/devices/${bob.device.id}`, { token: service.adminToken })).status, 204);
  await ended;
  t.ok(Date.now() - started < 5000, `disconnected in ${Date.now() - started} ms`);
  await t.rejects(connectAsync(broker.url, { username: bob.device.id, password: bob.deviceToken, clientId: bob.device.id, reconnectPeriod: 0 }), NOT_AUTHORIZED);
  const refused = await service.api('POST', '/v1/admin/tokens', { token: service.adminToken, body: { kind: 'device', subject: bob.device.id } });
  t.equal(refused.status, 404, 'and gets no new token');
});

t.test('an erased owner’s devices are removed from the broker', async (t) => {
  const carol = await provision(service, 'carol');
  const device = await asDevice(t, carol.device.id, carol.deviceToken);
  const ended = closed(device);
  t.equal((await service.api('DELETE', '/v1/admin/owners/carol?confirm=carol', { token: service.adminToken })).status, 204);
  await ended;
  await t.rejects(connectAsync(broker.url, { username: carol.device.id, password: carol.deviceToken, clientId: carol.device.id, reconnectPeriod: 0 }), NOT_AUTHORIZED);
});

t.test('a device token that expires stops logging in to the broker, and its session ends; a new token works', async (t) => {
  const dave = await provision(service, 'dave');
  const issued = await service.api('POST', '/v1/admin/tokens', { token: service.adminToken, body: { kind: 'device', subject: dave.device.id, ttlSeconds: 60 } });
  const { token, expiresAt } = (await issued.json()) as { token: string; expiresAt: string };
  const device = await asDevice(t, dave.device.id, token);
  const other = await provision(service, 'erin');
  const otherDevice = await asDevice(t, other.device.id, other.deviceToken);

  await new Promise((resolve) => setTimeout(resolve, 600));
  t.ok(device.connected, 'before its expiry the session stays (several sweeps have run)');
  const expiredBefore = service.metrics.value('presence_broker_credentials_expired_total');
  const ended = closed(device);
  offsetMs = Date.parse(expiresAt) - Date.now() + 1000;
  await ended;
  t.pass('the broker ended the session once the token expired');
  await waitFor(() => service.metrics.value('presence_broker_credentials_expired_total') === expiredBefore + 1 || undefined, 'the expiry counted');
  await new Promise((resolve) => setTimeout(resolve, 600));
  t.equal(service.metrics.value('presence_broker_credentials_expired_total'), expiredBefore + 1, 'counted once, whatever the later sweeps');
  await t.rejects(connectAsync(broker.url, { username: dave.device.id, password: token, clientId: dave.device.id, reconnectPeriod: 0 }), NOT_AUTHORIZED, 'and refuses it');
  t.ok(otherDevice.connected, "a device whose token has not expired keeps its session (365 days)");

  const renewed = await newToken(dave.device.id);
  await new Promise((resolve) => setTimeout(resolve, 600));
  const again = await asDevice(t, dave.device.id, renewed);
  t.ok(again.connected, 'a new token logs in, and later sweeps leave it alone');
  offsetMs = 0;
});

t.test('misconfiguration is found at start', async (t) => {
  const parsed = parseConfig({ MQTT_DEVICE_CREDENTIALS: 'mosquitto-dynsec', DATA_DIR: await tempDir(t) });
  t.notOk(parsed.ok, 'not with the embedded broker');
  t.match(parsed.ok ? [] : parsed.problems, [/MQTT_DEVICE_CREDENTIALS: only used with MQTT_URL/]);
  t.notOk(parseConfig({ MQTT_DEVICE_CREDENTIALS: 'password-file', MQTT_URL: broker.url }).ok, 'an unknown value');

  // A broker without the plugin answers no command: the start fails, clearly, instead of the first revocation.
  const plain = await startPrivateBroker();
  t.teardown(() => plain.stop());
  const noPlugin = await testConfig(t, {
    DATABASE_URL: await createTestDatabase(t),
    MQTT_URL: plain.url,
    MQTT_USERNAME: 'presence-service',
    MQTT_PASSWORD: 'unused',
    MQTT_DEVICE_CREDENTIALS: 'mosquitto-dynsec',
    MQTT_CLIENT_ID: uniqueName('svc'),
  });
  await t.rejects(startService(noPlugin), /no response from the broker/);

  // A broker set up without the shared device role: found at start, not as a 503 on every device token.
  const partial = await startDynsecBroker(t, topics);
  const admin = await connectAsync(partial.broker.url, { username: 'admin', password: partial.adminPassword, reconnectPeriod: 0 });
  const dynsec = new MosquittoDynsec({ client: admin, topics });
  await dynsec.start();
  await dynsec.command({ command: 'deleteRole', rolename: DEVICE_ROLE });
  dynsec.close();
  await admin.endAsync(true);
  const noRole = await testConfig(t, {
    DATABASE_URL: await createTestDatabase(t),
    MQTT_URL: partial.broker.url,
    MQTT_USERNAME: partial.serviceUsername,
    MQTT_PASSWORD: partial.servicePassword,
    MQTT_DEVICE_CREDENTIALS: 'mosquitto-dynsec',
    MQTT_CLIENT_ID: uniqueName('svc'),
  });
  await t.rejects(startService(noRole), /getRole failed: Role not found/);
});
