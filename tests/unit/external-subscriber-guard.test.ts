import { createServer, type AddressInfo, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import t from 'tap';
import { guardWrites, startExternalSubscriber } from '../../ingest/external-subscriber.js';

/**
 * The ingest journal must hold a device's message before its
 * acknowledgement leaves for the broker (ingest/ingest-journal.ts). These
 * tests record, in one list, when `beforeSend` (the journal's sync) runs
 * and when bytes reach the stream's underlying write: a sync must come
 * first every time.
 */
function recordingStream(order: string[]): Duplex {
  return new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      order.push(`bytes ${chunk.toString()}`);
      callback();
    },
    writev(chunks, callback) {
      order.push(`bytes ${chunks.map((c) => String(c.chunk)).join('+')}`);
      callback();
    },
  });
}

/** A recording stream, guarded: `sync` in the list each time beforeSend runs. */
function guarded(): { order: string[]; stream: Duplex } {
  const order: string[] = [];
  const stream = recordingStream(order);
  guardWrites(stream, () => order.push('sync'));
  return { order, stream };
}

const tick = () => new Promise((resolve) => process.nextTick(resolve));
const turn = () => new Promise((resolve) => setImmediate(resolve));

t.test("mqtt-packet's way: cork, write, uncork on the next tick; the uncork sends, after the sync", async (t) => {
  const { order, stream } = guarded();
  stream.cork();
  stream.write('puback');
  process.nextTick(() => stream.uncork());
  await tick();
  t.same(order, ['sync', 'bytes puback']);
});

t.test('a write on an uncorked stream syncs first', async (t) => {
  const { order, stream } = guarded();
  stream.write('puback');
  t.same(order, ['sync', 'bytes puback']);
});

t.test('only the last uncork sends, and syncs; nested corks do not', async (t) => {
  const { order, stream } = guarded();
  stream.cork();
  stream.cork();
  stream.write('a');
  stream.uncork();
  t.same(order, [], 'still corked once: nothing sent, no sync needed yet');
  stream.uncork();
  t.same(order, ['sync', 'bytes a']);
});

t.test('what one read brings is answered in one write, after one sync', async (t) => {
  const { order, stream } = guarded();
  stream.on('data', () => {
    // As mqtt.js does per packet: each answer corked, uncorked on the next tick.
    for (const answer of ['puback 1', 'puback 2', 'puback 3']) {
      stream.cork();
      stream.write(answer);
      process.nextTick(() => stream.uncork());
    }
  });
  stream.push(Buffer.from('three publishes'));
  await tick();
  await tick();
  t.same(order, [], 'held until the event loop has handled the read');
  await turn();
  t.same(order, ['sync', 'bytes puback 1+puback 2+puback 3']);
});

t.test('end() of a corked stream syncs before it sends', async (t) => {
  const { order, stream } = guarded();
  stream.cork();
  stream.write('disconnect');
  stream.end();
  await turn();
  t.same(order.slice(0, 2), ['sync', 'bytes disconnect']);
});

t.test('a stream is guarded once, however often it is offered', async (t) => {
  const { order, stream } = guarded();
  guardWrites(stream, () => order.push('sync again'));
  stream.write('x');
  t.same(order, ['sync', 'bytes x']);
});

/**
 * A resumed persistent session (MQTT 3.1.1 §3.1.2.4): the broker sends
 * CONNACK with session present and the messages it queued, in one write,
 * so mqtt.js applies a message before it says 'connect'. A broker that does
 * exactly that, over TCP: when the PUBACK arrives, the journal must have
 * been synced after the message was applied.
 */
t.test('a resumed session: the PUBACK of a message that came with the CONNACK leaves after the journal sync', async (t) => {
  const topic = 'presence/11111111-1111-4111-8111-111111111111/events';
  const payload = Buffer.from('{}');
  const name = Buffer.from(topic);
  const publish = Buffer.concat([Buffer.from([0x32, 2 + name.length + 2 + payload.length, 0, name.length]), name, Buffer.from([0, 7]), payload]);
  const order: string[] = [];
  let pubacks = 0;
  const sockets = new Set<Socket>();
  const broker = createServer((socket) => {
    sockets.add(socket);
    let buffered = Buffer.alloc(0);
    socket.on('data', (data) => {
      buffered = Buffer.concat([buffered, data]);
      while (buffered.length >= 2 && buffered.length >= 2 + (buffered[1] ?? 0)) {
        const type = (buffered[0] ?? 0) >> 4;
        const packet = buffered.subarray(0, 2 + (buffered[1] ?? 0));
        buffered = buffered.subarray(packet.length);
        if (type === 1) socket.write(Buffer.concat([Buffer.from([0x20, 2, 1, 0]), publish]));
        else if (type === 4) {
          pubacks += 1;
          order.push('broker: PUBACK');
        } else if (type === 8) {
          // SUBACK granting QoS 1 to every filter.
          const id = packet.readUInt16BE(2);
          let filters = 0;
          for (let i = 4; i < packet.length; filters++) i += 2 + packet.readUInt16BE(i) + 1;
          socket.write(Buffer.from([0x90, 2 + filters, id >> 8, id & 0xff, ...Array<number>(filters).fill(1)]));
        }
      }
    });
  });
  await new Promise<void>((resolve) => broker.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const socket of sockets) socket.destroy();
    broker.close();
  });
  const silent = { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined };
  const subscriber = await startExternalSubscriber({
    url: `mqtt://127.0.0.1:${(broker.address() as AddressInfo).port}`,
    username: undefined,
    password: undefined,
    clientId: 'guard-test',
    topics: { root: 'presence', ownTracksRoot: 'owntracks' },
    log: silent,
    onMessage: () => order.push('service: applied'),
    beforeAck: () => {
      if (order.at(-1) === 'service: applied') order.push('service: sync');
    },
  });
  t.teardown(() => subscriber.close());
  const deadline = Date.now() + 5000;
  while (pubacks === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
  t.same(order, ['service: applied', 'service: sync', 'broker: PUBACK']);
});
