import { connect, createServer, type Socket } from 'node:net';
import { connectAsync } from 'mqtt';
import t, { type Test } from 'tap';
import { Directory } from '../../core/directory.js';
import { generateSigningKeyPem, signingKeyFromPem } from '../../core/identity/signing-key.js';
import { TokenVerifier } from '../../core/identity/token-verifier.js';
import { issueToken } from '../../core/identity/tokens.js';
import { MAX_INBOUND_QOS2, startEmbeddedBroker, type EmbeddedBrokerOptions } from '../../ingest/embedded-broker.js';
import { deviceTopic } from '../../ingest/topics.js';
import { packet, utf8 } from '../helpers/mqtt-packets.js';

/**
 * The embedded broker tells a device its QoS 1 message is safe (PUBACK)
 * only after the service applied it and the ingest journal wrote it
 * (beforeAck): aedes writes a PUBACK before it routes a message to any
 * subscriber, so the broker ingests while it authorizes the publish. The
 * order is read from what the broker writes to the device's connection.
 */
const ISSUER = 'presence-test';
const DEVICE = '11111111-1111-4111-8111-111111111111';
const OWNER = '22222222-2222-4222-8222-222222222222';
const topics = { root: 'presence', ownTracksRoot: 'owntracks' };
const quiet = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

/** A broker for the one device, started with these options; closed when the test ends. Its signing key issues the device's token. */
async function deviceBroker(t: Test, options: Pick<EmbeddedBrokerOptions, 'onMessage'> & Partial<EmbeddedBrokerOptions>) {
  const key = await signingKeyFromPem(await generateSigningKeyPem());
  const directory = new Directory();
  directory.putOwner({ id: OWNER, handle: 'alice' });
  directory.putDevice({ id: DEVICE, ownerId: OWNER, deviceClass: 'phone', revoked: false });
  const broker = await startEmbeddedBroker({
    host: '127.0.0.1',
    port: 0,
    topics,
    verifier: new TokenVerifier(key.publicKey, ISSUER),
    directory,
    clock: Date.now,
    log: quiet,
    maxPacketBytes: 65_536,
    ...options,
  });
  t.teardown(() => broker.close());
  const { token } = await issueToken(key, ISSUER, { kind: 'device', subject: DEVICE, owner: OWNER, ttlSeconds: 600 }, Date.now());
  return { broker, token };
}

t.test('a QoS 1 message is applied and journaled before its PUBACK leaves; QoS 0 waits for nothing', async (t) => {
  const order: string[] = [];
  const { broker, token } = await deviceBroker(t, {
    onMessage: (_topic, payload, acknowledged) => order.push(`applied ${payload.toString()}${acknowledged ? ', to be acknowledged' : ''}`),
    beforeAck: () => order.push('journal written'),
  });
  // The device's connection reaches the broker through accept(), with what the broker writes to it recorded.
  const relay = createServer((socket: Socket) => {
    const write = socket.write.bind(socket) as (chunk: unknown, ...rest: unknown[]) => boolean;
    socket.write = ((chunk: unknown, ...rest: unknown[]) => {
      if (Buffer.isBuffer(chunk) && chunk[0] === 0x40) order.push('PUBACK written'); // MQTT 3.1.1 §3.4: PUBACK's fixed header
      return write(chunk, ...rest);
    }) as Socket['write'];
    broker.accept(socket);
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => relay.close(() => resolve())));
  const port = (relay.address() as { port: number }).port;
  const device = await connectAsync(`mqtt://127.0.0.1:${port}`, { clientId: DEVICE, username: DEVICE, password: token, reconnectPeriod: 0 });
  t.teardown(() => device.endAsync(true));

  await device.publishAsync(deviceTopic(topics, DEVICE), 'one', { qos: 1 });
  t.same(order, ['applied one, to be acknowledged', 'journal written', 'PUBACK written'], 'applied, journaled, then acknowledged');

  order.length = 0;
  await device.publishAsync(deviceTopic(topics, DEVICE), 'two', { qos: 0 });
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.same(order, ['applied two'], 'QoS 0: applied, nothing to acknowledge or journal');
});

t.test('over the rate limit a message is held, in order, and acknowledged only once applied; what is held when the connection ends is dropped', async (t) => {
  const order: string[] = [];
  let open = false;
  const outcomes: string[] = [];
  const held = () => outcomes.filter((o) => o === 'held').length;
  const { broker, token } = await deviceBroker(t, {
    onMessage: (_topic, payload) => order.push(`applied ${payload.toString()}`),
    beforeAck: () => undefined,
    pace: (deviceId) => (deviceId === DEVICE && !open ? 20 : 0),
    maxHeld: 4,
    onHeld: (outcome) => void outcomes.push(outcome),
  });
  const connectDevice = () => connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: DEVICE, username: DEVICE, password: token, reconnectPeriod: 0 });
  const device = await connectDevice();
  t.teardown(() => device.endAsync(true));
  const topic = deviceTopic(topics, DEVICE);

  const acked: string[] = [];
  const sent = ['a', 'b', 'c'].map((p) => device.publishAsync(topic, p, { qos: 1 }).then(() => acked.push(p)));
  while (held() < 3) await new Promise((resolve) => setTimeout(resolve, 5));
  await new Promise((resolve) => setTimeout(resolve, 60)); // the pace is asked again every 20 ms
  t.same(order, [], 'nothing applied while the limit holds');
  t.same(acked, [], 'nor acknowledged');
  open = true;
  await Promise.all(sent);
  t.same(order, ['applied a', 'applied b', 'applied c'], 'applied in order once allowed');
  t.same(acked, ['a', 'b', 'c']);

  // The device goes away while a message is held: dropped, never applied nor acknowledged.
  open = false;
  void device.publishAsync(topic, 'd', { qos: 1 }).catch(() => undefined);
  while (held() < 4) await new Promise((resolve) => setTimeout(resolve, 5));
  await device.endAsync(true);
  open = true;
  await new Promise((resolve) => setTimeout(resolve, 60));
  t.same(order.slice(3), [], 'd dropped with its connection (the device sends it again)');

  // A device that sends on regardless of acknowledgements is closed once maxHeld wait.
  open = false;
  const flooding = await connectDevice();
  t.teardown(() => flooding.endAsync(true));
  const closed = new Promise<void>((resolve) => flooding.once('close', () => resolve()));
  for (const p of ['e', 'f', 'g', 'h', 'i', 'j']) flooding.publish(topic, p, { qos: 0 });
  await closed;
  t.equal(outcomes.filter((o) => o === 'closed').length, 1, 'closed once');
  t.same(order.slice(3), [], 'nothing applied');
});

t.test('held messages are bounded in bytes across connections: the connection that would go past maxHeldBytes is closed', async (t) => {
  const order: string[] = [];
  const outcomes: string[] = [];
  const { broker, token } = await deviceBroker(t, {
    onMessage: (_topic, payload) => order.push(payload.toString()),
    beforeAck: () => undefined,
    pace: () => 60_000,
    maxHeldBytes: 10,
    onHeld: (outcome) => void outcomes.push(outcome),
  });
  const device = await connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: DEVICE, username: DEVICE, password: token, reconnectPeriod: 0 });
  t.teardown(() => device.endAsync(true));
  const closed = new Promise<void>((resolve) => device.once('close', () => resolve()));
  const topic = deviceTopic(topics, DEVICE);
  device.publish(topic, '123456', { qos: 0 });
  while (outcomes.length < 1) await new Promise((resolve) => setTimeout(resolve, 5));
  t.same(outcomes, ['held'], 'six bytes held');
  device.publish(topic, '789012', { qos: 0 });
  await closed;
  t.same(outcomes, ['held', 'closed'], 'six more would make twelve: closed');
  t.same(order, [], 'nothing applied');
});

t.test('a connection withholding PUBREL is closed past MAX_INBOUND_QOS2 QoS 2 messages', async (t) => {
  let applied = 0;
  const { broker, token } = await deviceBroker(t, { onMessage: () => void (applied += 1) });
  // A raw client: mqtt.js would answer every PUBREC with a PUBREL.
  const socket = connect(broker.port, '127.0.0.1');
  t.teardown(() => socket.destroy());
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  let received = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => void (received = Buffer.concat([received, chunk])));
  const connack = new Promise<void>((resolve) => socket.once('data', () => resolve()));
  // MQTT 3.1.1 §3.1: protocol name, level 4, flags (username, password, clean session), keep-alive 60 s.
  socket.write(packet(0x10, Buffer.from([0, 4, ...Buffer.from('MQTT'), 4, 0xc2, 0, 60]), utf8(DEVICE), utf8(DEVICE), utf8(token)));
  await connack;
  const topic = deviceTopic(topics, DEVICE);
  // §3.3: PUBLISH at QoS 2 (flags 0b0100), topic, packet id, payload.
  const publish = (id: number) => socket.write(packet(0x34, utf8(topic), Buffer.from([id >> 8, id & 0xff]), Buffer.from(`m${id}`)));
  for (let id = 1; id <= MAX_INBOUND_QOS2; id++) publish(id);
  // CONNACK (4 bytes), then a PUBREC (§3.5: 0x50, 2, packet id) per message kept to wait for its PUBREL.
  const pubrecs = () => (received.length - 4) / 4;
  const deadline = Date.now() + 5000;
  while (pubrecs() < MAX_INBOUND_QOS2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
  t.equal(pubrecs(), MAX_INBOUND_QOS2, 'up to the limit: each kept, and acknowledged with a PUBREC');
  t.ok(received.subarray(4).every((byte, i) => i % 4 !== 0 || byte === 0x50), 'PUBRECs only');
  t.notOk(socket.destroyed, 'still connected');
  publish(MAX_INBOUND_QOS2 + 1);
  await closed;
  t.equal(pubrecs(), MAX_INBOUND_QOS2, 'one more without a PUBREL for the others: closed');
  t.ok(applied >= MAX_INBOUND_QOS2, `applied as they came (${applied}; one past the limit is never acknowledged: the device sends it again)`);
});
