import { createServer, type Socket } from 'node:net';
import { connectAsync } from 'mqtt';
import t from 'tap';
import { Directory } from '../../core/directory.js';
import { generateSigningKeyPem, signingKeyFromPem } from '../../core/identity/signing-key.js';
import { TokenVerifier } from '../../core/identity/token-verifier.js';
import { issueToken } from '../../core/identity/tokens.js';
import { startEmbeddedBroker } from '../../ingest/embedded-broker.js';
import { deviceTopic } from '../../ingest/topics.js';

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

t.test('a QoS 1 message is applied and journaled before its PUBACK leaves; QoS 0 waits for nothing', async (t) => {
  const key = await signingKeyFromPem(await generateSigningKeyPem());
  const directory = new Directory();
  directory.putOwner({ id: OWNER, handle: 'alice' });
  directory.putDevice({ id: DEVICE, ownerId: OWNER, deviceClass: 'phone', revoked: false });
  const order: string[] = [];
  const broker = await startEmbeddedBroker({
    host: '127.0.0.1',
    port: 0,
    topics,
    verifier: new TokenVerifier(key.publicKey, ISSUER),
    directory,
    clock: Date.now,
    log: quiet,
    maxPacketBytes: 65_536,
    onMessage: (_topic, payload, acknowledged) => order.push(`applied ${payload.toString()}${acknowledged ? ', to be acknowledged' : ''}`),
    beforeAck: () => order.push('journal written'),
  });
  t.teardown(() => broker.close());
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
  const { token } = await issueToken(key, ISSUER, { kind: 'device', subject: DEVICE, owner: OWNER, ttlSeconds: 600 }, Date.now());
  const device = await connectAsync(`mqtt://127.0.0.1:${port}`, { clientId: DEVICE, username: DEVICE, password: token, reconnectPeriod: 0 });
  t.teardown(() => device.endAsync(true));

  await device.publishAsync(deviceTopic(topics, DEVICE), 'one', { qos: 1 });
  t.same(order, ['applied one, to be acknowledged', 'journal written', 'PUBACK written'], 'applied, journaled, then acknowledged');

  order.length = 0;
  await device.publishAsync(deviceTopic(topics, DEVICE), 'two', { qos: 0 });
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.same(order, ['applied two'], 'QoS 0: applied, nothing to acknowledge or journal');
});

t.test('over the rate limit a message is held, in order, and acknowledged only once applied; close() applies what is held', async (t) => {
  const key = await signingKeyFromPem(await generateSigningKeyPem());
  const directory = new Directory();
  directory.putOwner({ id: OWNER, handle: 'alice' });
  directory.putDevice({ id: DEVICE, ownerId: OWNER, deviceClass: 'phone', revoked: false });
  const order: string[] = [];
  let open = false;
  let held = 0;
  const broker = await startEmbeddedBroker({
    host: '127.0.0.1',
    port: 0,
    topics,
    verifier: new TokenVerifier(key.publicKey, ISSUER),
    directory,
    clock: Date.now,
    log: quiet,
    maxPacketBytes: 65_536,
    onMessage: (_topic, payload) => order.push(`applied ${payload.toString()}`),
    beforeAck: () => undefined,
    pace: (deviceId) => (deviceId === DEVICE && !open ? 20 : 0),
    onHeld: () => void (held += 1),
  });
  let closed = false;
  t.teardown(() => (closed ? undefined : broker.close()));
  const { token } = await issueToken(key, ISSUER, { kind: 'device', subject: DEVICE, owner: OWNER, ttlSeconds: 600 }, Date.now());
  const device = await connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: DEVICE, username: DEVICE, password: token, reconnectPeriod: 0 });
  t.teardown(() => device.endAsync(true));
  const topic = deviceTopic(topics, DEVICE);

  const acked: string[] = [];
  const sent = ['a', 'b', 'c'].map((p) => device.publishAsync(topic, p, { qos: 1 }).then(() => acked.push(p)));
  while (held < 3) await new Promise((resolve) => setTimeout(resolve, 5));
  await new Promise((resolve) => setTimeout(resolve, 60)); // the pace is asked again every 20 ms
  t.same(order, [], 'nothing applied while the limit holds');
  t.same(acked, [], 'nor acknowledged');
  open = true;
  await Promise.all(sent);
  t.same(order, ['applied a', 'applied b', 'applied c'], 'applied in order once allowed');
  t.same(acked, ['a', 'b', 'c']);

  open = false;
  void device.publishAsync(topic, 'd', { qos: 1 }).catch(() => undefined);
  while (held < 4) await new Promise((resolve) => setTimeout(resolve, 5));
  t.equal(order.length, 3, 'd is held');
  closed = true;
  await broker.close();
  t.same(order.slice(3), ['applied d'], 'applied at close, to be stored with the rest');
});
