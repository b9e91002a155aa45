import { createServer, type AddressInfo, type Socket } from 'node:net';
import { connect, type MqttClient } from 'mqtt';
import t, { type Test } from 'tap';
import { Metrics } from '../../core/metrics.js';
import { PresenceHub } from '../../core/presence-hub.js';
import { ClusterSync, SYNC_MESSAGES } from '../../ingest/cluster-sync.js';
import { packet, utf8 } from '../helpers/mqtt-packets.js';

/**
 * A sync message published while mqtt.js resends what it stored after a
 * reconnect is queued by mqtt.js, and dropped if that connection closes
 * too. The real mqtt.js client against a broker scripted over TCP that
 * does exactly that: the message must still reach the broker on the next
 * connection, or the other processes never hold the signals it carries.
 */
interface Packet {
  readonly type: number;
  readonly flags: number;
  readonly body: Buffer;
}

/** MQTT 3.1.1 §2.2: fixed header, remaining length as a variable byte integer. */
function* packets(buffer: { data: Buffer }): Generator<Packet> {
  for (;;) {
    const data = buffer.data;
    if (data.length < 2) return;
    let length = 0;
    let multiplier = 1;
    let i = 1;
    for (;;) {
      if (i >= data.length) return;
      const byte = data[i] ?? 0;
      length += (byte & 0x7f) * multiplier;
      multiplier *= 128;
      i += 1;
      if ((byte & 0x80) === 0) break;
    }
    if (data.length < i + length) return;
    buffer.data = data.subarray(i + length);
    yield { type: (data[0] ?? 0) >> 4, flags: (data[0] ?? 0) & 0x0f, body: data.subarray(i, i + length) };
  }
}

/** A PUBLISH's topic, packet id (QoS 1) and payload. */
function publishOf(packet: Packet): { topic: string; id: number; payload: string } {
  const topicLength = packet.body.readUInt16BE(0);
  const topic = packet.body.subarray(2, 2 + topicLength).toString();
  const id = packet.body.readUInt16BE(2 + topicLength);
  return { topic, id, payload: packet.body.subarray(4 + topicLength).toString() };
}

const OWNER = '00000000-0000-4000-8000-000000000001';
const DEVICE = '11111111-1111-4111-8111-111111111111';
const silent = { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined };
const newSync = (metrics = new Metrics()) =>
  new ClusterSync({ root: 'sync', clientId: 'node-a', hub: new PresenceHub({ offlineAfterMs: 900_000 }), clock: Date.now, log: silent, metrics, requestWrite: () => undefined });
const battery = (level: number) => [{ kind: 'battery' as const, at: '2026-12-05T10:00:00.000Z', level, charging: false }];

/**
 * A broker scripted over TCP: each packet the client sends, with the number
 * of its connection (1, 2, ...), goes to `script`; PINGREQ is answered. The
 * real mqtt.js client connects to it with a persistent session, and sync
 * attached; all is closed when the test ends.
 */
async function scriptedBroker(t: Test, sync: ClusterSync, script: (packet: Packet, connection: number, socket: Socket) => void): Promise<MqttClient> {
  let connections = 0;
  const sockets = new Set<Socket>();
  const broker = createServer((socket) => {
    const connection = ++connections;
    sockets.add(socket);
    socket.on('error', () => undefined);
    const buffer = { data: Buffer.alloc(0) };
    socket.on('data', (chunk: Buffer) => {
      buffer.data = Buffer.concat([buffer.data, chunk]);
      for (const packet of packets(buffer)) {
        if (packet.type === 12) socket.write(Buffer.from([0xd0, 0]));
        else script(packet, connection, socket);
      }
    });
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => broker.listen(0, '127.0.0.1', resolve));
  const client = connect(`mqtt://127.0.0.1:${(broker.address() as AddressInfo).port}`, { clientId: 'node-a', clean: false, reconnectPeriod: 50, protocolVersion: 4 });
  client.on('error', () => undefined);
  sync.attach(client);
  t.teardown(async () => {
    await client.endAsync(true);
    for (const socket of sockets) socket.destroy();
    broker.close();
  });
  return client;
}

/** CONNACK (MQTT 3.1.1 §3.2): the session is present from the second connection on. */
const connack = (connection: number) => Buffer.from([0x20, 2, connection > 1 ? 1 : 0, 0]);
/** The battery level a sync PUBLISH carries. */
const levelOf = (payload: string) => (JSON.parse(payload) as { signals: { event: { level: number } }[] }).signals[0]?.event.level ?? -1;

t.test('a sync message queued by mqtt.js during a resend, and dropped when that connection closes, is published again', async (t) => {
  const received: { connection: number; level: number }[] = [];
  const metrics = new Metrics();
  const sync = newSync(metrics);
  const client = await scriptedBroker(t, sync, (packet, connection, socket) => {
    if (packet.type === 1) socket.write(connack(connection));
    else if (packet.type === 3) {
      const { id, payload } = publishOf(packet);
      received.push({ connection, level: levelOf(payload) });
      if (connection === 1) {
        // The first message is never acknowledged: mqtt.js stores it and resends it on the next connection.
        socket.destroy();
      } else if (connection === 2) {
        // Its resend: mqtt.js waits for this acknowledgement before anything else, and queues what is published meanwhile.
        sync.applied(OWNER, DEVICE, battery(2));
        setTimeout(() => socket.destroy(), 20);
      } else {
        socket.write(Buffer.from([0x40, 2, id >> 8, id & 0xff]));
      }
    }
  });
  await new Promise((resolve) => client.once('connect', resolve));
  sync.applied(OWNER, DEVICE, battery(1));
  const deadline = Date.now() + 10_000;
  while (!received.some((r) => r.level === 2 && r.connection >= 3) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  t.ok(
    received.some((r) => r.level === 2 && r.connection >= 3),
    `the message queued during the resend reached the broker on a later connection (received: ${JSON.stringify(received)})`,
  );
  t.ok(received.some((r) => r.level === 1 && r.connection === 2), 'the stored one was resent first');
  t.equal(metrics.value(SYNC_MESSAGES, { type: 'signals', outcome: 'requeued' }), 1, 'counted');
});

t.test("a device message delivered during mqtt.js's resend is acknowledged only after its sync message is written", async (t) => {
  const DEVICE_MESSAGE_ID = 77;
  const second: string[] = []; // what the broker read on the second connection, in order
  const sync = newSync();
  const devicePublish = packet(0x32, utf8(`presence/${DEVICE}/events`), Buffer.from([0, DEVICE_MESSAGE_ID]), Buffer.from('{}')); // PUBLISH, QoS 1
  const client = await scriptedBroker(t, sync, (packet, connection, socket) => {
    if (packet.type === 1) {
      socket.write(connack(connection));
      // A resumed session: the broker hands over a queued device message at once.
      if (connection === 2) socket.write(devicePublish);
    } else if (packet.type === 3) {
      const { id, payload } = publishOf(packet);
      const level = levelOf(payload);
      if (connection === 1) socket.destroy(); // never acknowledged: stored, resent on the next connection
      else {
        second.push(`sync ${level}`);
        // The resend's acknowledgement comes a little later: the window in which the device message arrived.
        setTimeout(() => socket.write(Buffer.from([0x40, 2, id >> 8, id & 0xff])), level === 1 ? 30 : 0);
      }
    } else if (packet.type === 4 && connection === 2) {
      second.push(`puback ${packet.body.readUInt16BE(0)}`);
    }
  });
  // As the service's ingest does: a device message applied, its sync message published in the handler.
  client.on('message', (topic) => {
    if (topic.startsWith('presence/')) sync.applied(OWNER, DEVICE, battery(2));
  });
  await new Promise((resolve) => client.once('connect', resolve));
  sync.applied(OWNER, DEVICE, battery(1));
  const deadline = Date.now() + 10_000;
  while (!second.includes(`puback ${DEVICE_MESSAGE_ID}`) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
  t.same(second, ['sync 1', 'sync 2', `puback ${DEVICE_MESSAGE_ID}`], "the stored message resent, the device message's sync message, then its acknowledgement");
});
