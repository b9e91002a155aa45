import { connectAsync, type MqttClient } from 'mqtt';
import { randomUUID } from 'node:crypto';
import t, { type Test } from 'tap';
import { MosquittoDynsec } from '../../ingest/mosquitto-dynsec.js';
import { startDynsecBroker } from '../helpers/dynsec-broker.js';
import { waitFor } from '../helpers/env.js';
import { startPrivateBroker } from '../helpers/mosquitto.js';

/**
 * Device credentials on an external Mosquitto through its Dynamic Security
 * plugin, proven on a real mosquitto started here on an ephemeral port:
 * the operator's set-up as documented in ingest/mosquitto-dynsec.ts, then
 * the service's own user provisions, disables and deletes devices, and a
 * disabled device is thrown off the broker at once.
 */
const SERVICE_USER = 'presence-service';
const topics = { root: 'presence', ownTracksRoot: 'owntracks' };

// The operator's set-up (`mosquitto_ctrl dynsec init`, then brokerSetupCommands as admin).
const { broker, adminPassword, servicePassword: SERVICE_PASSWORD } = await startDynsecBroker(t, topics, SERVICE_USER);
// The admin user, for the checks below.
const admin = await connectAsync(broker.url, { username: 'admin', password: adminPassword, reconnectPeriod: 0 });
t.teardown(() => admin.endAsync(true));
const adminDynsec = new MosquittoDynsec({ client: admin, topics });
t.teardown(() => adminDynsec.close());
await adminDynsec.start();

// From here on, the service's own user does everything.
const service = await connectAsync(broker.url, { username: SERVICE_USER, password: SERVICE_PASSWORD, reconnectPeriod: 0 });
t.teardown(() => service.endAsync(true));
const received: string[] = [];
service.on('message', (topic) => {
  if (!topic.startsWith('$')) received.push(topic);
});
await service.subscribeAsync(`${topics.root}/+/events`, { qos: 1 });
const dynsec = new MosquittoDynsec({ client: service, topics, timeoutMs: 3000 });
t.teardown(() => dynsec.close());
await dynsec.start();

const alice = randomUUID();
const bobby = randomUUID();
const topicOf = (id: string) => `${topics.root}/${id}/events`;
const NOT_AUTHORIZED = /Not authorized/i;

async function asDevice(t: Test, id: string, password: string, clientId = id): Promise<MqttClient> {
  const client = await connectAsync(broker.url, { username: id, password, clientId, reconnectPeriod: 0 });
  t.teardown(() => client.endAsync(true));
  return client;
}

/** The device publishes to its own topic, and that (only) reaches the service. */
async function writesItsTopic(t: Test, device: MqttClient, id: string, payload: string, who: string): Promise<void> {
  received.length = 0;
  await device.publishAsync(topicOf(id), payload, { qos: 1 });
  await waitFor(() => received.length > 0, `${who}'s event`);
  t.same(received, [topicOf(id)], 'it writes its topic again');
}

/** Resolves with the ms from now until the client's connection closes. */
function closedWithin(client: MqttClient): Promise<number> {
  const start = Date.now();
  return new Promise((resolve) => client.once('close', () => resolve(Date.now() - start)));
}

let aliceToken = randomUUID();

t.test('a provisioned device writes its own topic only', async (t) => {
  // Two at once: each command waits for its own response.
  await Promise.all([dynsec.provisionDevice(alice, aliceToken), dynsec.provisionDevice(bobby, randomUUID())]);
  const device = await asDevice(t, alice, aliceToken);
  received.length = 0;
  await device.publishAsync(topicOf(bobby), 'forged', { qos: 1 }); // dropped by the broker
  await device.publishAsync(topicOf(alice), 'own', { qos: 1 }); // the marker, in order after it
  await waitFor(() => received.length > 0, "alice's event");
  t.same(received, [topicOf(alice)], "only alice's own topic reached the service");
  await t.rejects(device.subscribeAsync(`${topics.root}/+/events`, { qos: 1 }), /Subscribe error/, 'devices may not subscribe');
});

t.test('wrong credentials are refused', async (t) => {
  await t.rejects(asDevice(t, alice, 'not-the-token'), NOT_AUTHORIZED, 'wrong password');
  await t.rejects(asDevice(t, alice, aliceToken, bobby), NOT_AUTHORIZED, "another device's client id");
  await t.rejects(asDevice(t, bobby, aliceToken), NOT_AUTHORIZED, "alice's token is not bobby's password");
});

t.test('disableDevice disconnects the device now and refuses it', async (t) => {
  const device = await asDevice(t, alice, aliceToken);
  const closed = closedWithin(device);
  await dynsec.disableDevice(alice);
  t.ok((await closed) < 2000, 'disconnected within 2 s');
  await t.rejects(asDevice(t, alice, aliceToken), NOT_AUTHORIZED, 'a reconnect is refused');
  await t.resolves(dynsec.disableDevice(alice), 'disabling again is fine');
});

t.test('provisioning again re-enables the device with the new token only', async (t) => {
  const oldToken = aliceToken;
  aliceToken = randomUUID();
  await dynsec.provisionDevice(alice, aliceToken);
  await t.rejects(asDevice(t, alice, oldToken), NOT_AUTHORIZED, 'the old token is refused');
  const device = await asDevice(t, alice, aliceToken);
  await writesItsTopic(t, device, alice, 'back', 'alice');
  // A new token also ends the sessions opened with the previous one.
  const closed = closedWithin(device);
  aliceToken = randomUUID();
  await dynsec.provisionDevice(alice, aliceToken);
  t.ok((await closed) < 2000, 'the live session is disconnected');
});

t.test('an expired password is disabled; one renewed meanwhile by another process is enabled again', async (t) => {
  const claimed = async () => true;
  t.equal(await dynsec.expireDevice(alice, claimed, async () => 'cleared'), true, 'disabled');
  await t.rejects(asDevice(t, alice, aliceToken), NOT_AUTHORIZED, 'its token no longer logs in');
  aliceToken = randomUUID();
  await dynsec.provisionDevice(alice, aliceToken);
  t.ok((await asDevice(t, alice, aliceToken)).connected, 'a new token enables it');
  // Another process provisioned a new token between the claim and the disabling: enabled again.
  t.equal(await dynsec.expireDevice(alice, claimed, async () => 'renewed'), false, 'not counted as expired');
  t.ok((await asDevice(t, alice, aliceToken)).connected, 'the renewed token still logs in');
});

t.test('provisioning repairs a device that lost its own role', async (t) => {
  // Not deleteRole: on 2.0.11 that leaves the client a dangling role (#2660).
  await adminDynsec.command({ command: 'removeClientRole', username: bobby, rolename: `presence-device:${bobby}` });
  const token = randomUUID();
  await dynsec.provisionDevice(bobby, token); // the role exists: addRoleACL; the client exists: addClientRole
  const device = await asDevice(t, bobby, token);
  await writesItsTopic(t, device, bobby, 'repaired', 'bobby');
  const info = await adminDynsec.command({ command: 'getClient', username: bobby });
  t.match(info.data, { client: { clientid: bobby, roles: [{ rolename: 'presence-device' }, { rolename: `presence-device:${bobby}` }] } }, 'both roles, client id fixed');
});

t.test('deleteDevice removes the device; unknown devices are not errors', async (t) => {
  const device = await asDevice(t, alice, aliceToken);
  const closed = closedWithin(device);
  await dynsec.deleteDevice(alice);
  t.ok((await closed) < 2000, 'disconnected within 2 s');
  await t.rejects(asDevice(t, alice, aliceToken), NOT_AUTHORIZED, 'refused once deleted');
  await t.resolves(dynsec.deleteDevice(alice), 'deleting again is fine');
  await t.resolves(dynsec.disableDevice(randomUUID()), 'disabling an unknown device is fine');
  await t.resolves(dynsec.deleteDevice(randomUUID()), 'deleting an unknown device is fine');
  await t.rejects(dynsec.command({ command: 'getClient', username: alice }), /dynamic-security getClient failed: Client not found/, 'other broker errors name the command');
  await t.rejects(dynsec.provisionDevice('a/+', 'x'), /cannot be a topic level/, 'a device id with wildcards is refused');
});

t.test('changes to one device run in order: a revocation or erasure during provisioning is not undone', async (t) => {
  const dora = randomUUID();
  const token = randomUUID();
  // Issued at once: provisioning's createClient/enableClient must not land after the disable or the delete.
  await Promise.all([dynsec.provisionDevice(dora, token), dynsec.disableDevice(dora)]);
  await t.rejects(connectAsync(broker.url, { username: dora, password: token, clientId: dora, reconnectPeriod: 0 }), NOT_AUTHORIZED, 'disabled after all');
  await Promise.all([dynsec.provisionDevice(dora, token), dynsec.deleteDevice(dora)]);
  await t.rejects(adminDynsec.command({ command: 'getClient', username: dora }), /Client not found/, 'deleted after all');
  await t.rejects(adminDynsec.command({ command: 'getRole', rolename: `presence-device:${dora}` }), /Role not found/, 'its role too, never while held');
});

t.test('ACL topics do not substitute %u on 2.0.11 (hence a role per device)', async (t) => {
  const carol = randomUUID();
  await adminDynsec.command({ command: 'createRole', rolename: 'percent-u', acls: [{ acltype: 'publishClientSend', topic: `${topics.root}/%u/events`, allow: true }] });
  await adminDynsec.command({ command: 'createClient', username: carol, password: 'carol', roles: [{ rolename: 'percent-u' }] });
  const device = await connectAsync(broker.url, { username: carol, password: 'carol', clientId: carol, protocolVersion: 5, reconnectPeriod: 0 });
  t.teardown(() => device.endAsync(true));
  // MQTT 5: the broker's PUBACK says why (0x87 Not authorized).
  await t.rejects(device.publishAsync(topicOf(carol), 'x', { qos: 1 }), /Not authorized/, 'its own topic is refused');
  await adminDynsec.command({ command: 'deleteClient', username: carol }); // the client first (#2660)
  await adminDynsec.command({ command: 'deleteRole', rolename: 'percent-u' });
});

t.test('a user without the dynsec ACLs cannot start', async (t) => {
  await adminDynsec.command({ command: 'createClient', username: 'nobody', password: 'nobody' });
  const client = await connectAsync(broker.url, { username: 'nobody', password: 'nobody', reconnectPeriod: 0 });
  t.teardown(() => client.endAsync(true));
  const unprivileged = new MosquittoDynsec({ client, topics });
  t.teardown(() => unprivileged.close());
  await t.rejects(unprivileged.start(), /cannot subscribe to \$CONTROL\/dynamic-security\/v1\/response/);
});

t.test('a broker that never answers: the request times out', async (t) => {
  const plain = await startPrivateBroker(); // no plugin: nobody answers
  t.teardown(() => plain.stop());
  const client = await connectAsync(plain.url, { reconnectPeriod: 0 });
  t.teardown(() => client.endAsync(true));
  const silent = new MosquittoDynsec({ client, topics, timeoutMs: 300 });
  t.teardown(() => silent.close());
  await silent.start();
  const started = Date.now();
  await t.rejects(silent.disableDevice(alice), /dynamic-security disableClient: no response from the broker within 300 ms/);
  t.ok(Date.now() - started >= 290, 'after the timeout');
  // An expired password the broker did not disable: the error, and nothing settled (the claim's lease ends by itself).
  let settled = 0;
  const settle = async () => {
    settled += 1;
    return 'cleared' as const;
  };
  await t.rejects(silent.expireDevice(alice, async () => true, settle), /disableClient: no response/);
  t.equal(settled, 0, 'not settled');
  t.equal(await silent.expireDevice(alice, async () => false, settle), false, 'nothing claimed (renewed or taken meanwhile): nothing sent');
  const pending = silent.deleteDevice(alice);
  await new Promise((resolve) => setTimeout(resolve, 50)); // sent, awaiting its response
  silent.close();
  await t.rejects(pending, /closed before the response/, 'close() rejects what is pending');
});
