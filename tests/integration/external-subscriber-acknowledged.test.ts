import { connectAsync } from 'mqtt';
import t, { type Test } from 'tap';
import { resendRetained, startExternalSubscriber } from '../../ingest/external-subscriber.js';
import { deviceTopic } from '../../ingest/topics.js';
import { startPrivateBroker } from '../helpers/mosquitto.js';

/**
 * What the external subscriber tells ingest about each message: whether the
 * device was told it is safe, so that ingest journals it before the
 * service's own acknowledgement (ingest/ingest-journal.ts). Against real
 * Mosquitto: a QoS 1 message through the QoS 1 subscription is
 * acknowledged, a QoS 0 one is not (MQTT 3.1.1 §4.3.1); and a broker that
 * grants the subscription QoS 0 only (`max_qos 0`) acknowledges devices
 * itself and hands every message on at QoS 0, so each counts as
 * acknowledged whatever QoS it arrives at, and the downgrade is logged.
 */
const DEVICE = '11111111-1111-4111-8111-111111111111';
const topics = { root: 'presence', ownTracksRoot: 'owntracks' };

async function receive(t: Test, brokerConfig: readonly string[], publishes: readonly { payload: string; qos: 0 | 1 }[]) {
  const broker = await startPrivateBroker({ config: ['allow_anonymous true', ...brokerConfig] });
  t.teardown(() => broker.stop());
  const warnings: string[] = [];
  const received: string[] = [];
  let expected = publishes.length;
  let arrived: () => void = () => undefined;
  const all = new Promise<void>((resolve) => (arrived = resolve));
  const subscriber = await startExternalSubscriber({
    url: broker.url,
    username: undefined,
    password: undefined,
    clientId: `ack-test-${process.pid}`,
    topics,
    log: { debug: () => undefined, info: () => undefined, warn: (_fields, message) => warnings.push(message), error: () => undefined },
    onMessage: (_topic, payload, acknowledged) => {
      received.push(`${payload.toString()} ${acknowledged ? 'acknowledged' : 'not acknowledged'}`);
      if (--expected === 0) arrived();
    },
  });
  t.teardown(() => subscriber.close());
  const device = await connectAsync(broker.url, { clientId: DEVICE, reconnectPeriod: 0 });
  t.teardown(() => device.endAsync(true));
  for (const { payload, qos } of publishes) await device.publishAsync(deviceTopic(topics, DEVICE), payload, { qos });
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([all, new Promise((_resolve, reject) => (timer = setTimeout(() => reject(new Error(`received only ${JSON.stringify(received)}`)), 5000)))]);
  clearTimeout(timer);
  return { received, warnings };
}

t.test('QoS 1 through the QoS 1 subscription is acknowledged, QoS 0 is not', async (t) => {
  const { received, warnings } = await receive(t, [], [
    { payload: 'one', qos: 1 },
    { payload: 'two', qos: 0 },
  ]);
  t.same(received, ['one acknowledged', 'two not acknowledged']);
  t.same(warnings, [], 'the subscription was granted QoS 1');
});

t.test('a broker that grants QoS 0 only: every message counts as acknowledged, and the downgrade is logged', async (t) => {
  // Mosquitto disconnects a 3.1.1 client publishing above max_qos, so the device publishes at QoS 0 here.
  const { received, warnings } = await receive(t, ['max_qos 0'], [{ payload: 'three', qos: 0 }]);
  t.same(received, ['three acknowledged']);
  t.match(warnings, [/granted QoS 0 only/]);
});

t.test('a resumed session at a broker that grants QoS 0 only: what arrives before the new SUBACK counts as acknowledged too', async (t) => {
  // The broker queues QoS 0 messages for the offline session (queue_qos0_messages) and hands them
  // over right after CONNACK, before this connection's SUBSCRIBE is answered.
  const broker = await startPrivateBroker({ config: ['allow_anonymous true', 'max_qos 0', 'queue_qos0_messages true'] });
  t.teardown(() => broker.stop());
  const received: string[] = [];
  const subscriber = (onMessage: (payload: string, acknowledged: boolean) => void) =>
    startExternalSubscriber({
      url: broker.url,
      username: undefined,
      password: undefined,
      clientId: `ack-resume-${process.pid}`,
      topics,
      log: { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined },
      onMessage: (_topic, payload, acknowledged) => onMessage(payload.toString(), acknowledged),
    });
  const first = await subscriber(() => undefined);
  // DISCONNECT: the persistent session (clean: false) and its subscription stay with the broker.
  await first.close();
  const device = await connectAsync(broker.url, { clientId: DEVICE, reconnectPeriod: 0 });
  t.teardown(() => device.endAsync(true));
  await device.publishAsync(deviceTopic(topics, DEVICE), 'queued', { qos: 0 });
  let arrived: () => void = () => undefined;
  const queued = new Promise<void>((resolve) => (arrived = resolve));
  const second = await subscriber((payload, acknowledged) => {
    received.push(`${payload} ${acknowledged ? 'acknowledged' : 'not acknowledged'}`);
    arrived();
  });
  t.teardown(() => second.close());
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([queued, new Promise((_resolve, reject) => (timer = setTimeout(() => reject(new Error('the queued message never came')), 5000)))]);
  clearTimeout(timer);
  t.same(received, ['queued acknowledged']);
});

/**
 * The clean-stop test of a whole group (tests/integration/clean-stop.test.ts)
 * catches a stop's 'write after end' only when the race happens; this one
 * raises such an error on the client itself, before and after close()
 * begins, so the choice of log level is checked every run.
 */
t.test('a client error once close() began is logged at debug, before it as a warning', async (t) => {
  const broker = await startPrivateBroker({ config: ['allow_anonymous true'] });
  t.teardown(() => broker.stop());
  const lines: string[] = [];
  const subscriber = await startExternalSubscriber({
    url: broker.url,
    username: undefined,
    password: undefined,
    clientId: `close-test-${process.pid}`,
    topics,
    log: { debug: (_fields, message) => lines.push(`debug ${message}`), info: () => undefined, warn: (_fields, message) => lines.push(`warn ${message}`), error: () => undefined },
    onMessage: () => undefined,
  });
  subscriber.client.emit('error', new Error('before'));
  const closing = subscriber.close();
  subscriber.client.emit('error', new Error('write after end'));
  await closing;
  t.same(
    lines.filter((line) => /error/.test(line)),
    ['warn mqtt client error', 'debug mqtt client error while closing (unacknowledged messages are redelivered)'],
  );
});

/**
 * A group member's renewal (ingest/external-subscriber.ts resendRetained)
 * subscribes to the plain device filters for a moment: if its SUBACK is
 * not awaited to the end (a timeout, here at once), the plain filters must
 * still be given up, or that member would get every device message of the
 * group, those the shared subscription hands the others too, for good (its
 * session is persistent).
 */
t.test('a renewal cut short in a group still gives up the plain filters', async (t) => {
  const broker = await startPrivateBroker({ config: ['allow_anonymous true'] });
  t.teardown(() => broker.stop());
  const received: string[] = [];
  const member = (name: string) =>
    startExternalSubscriber({
      url: broker.url,
      username: undefined,
      password: undefined,
      clientId: `renewal-test-${name}-${process.pid}`,
      topics,
      shareGroup: 'g',
      log: { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined },
      onMessage: (_topic, payload) => received.push(`${name} ${payload.toString()}`),
    });
  const [a, b] = [await member('a'), await member('b')];
  t.teardown(() => Promise.all([a.close(), b.close()]));
  await t.rejects(resendRetained(a.client, topics, { shared: true, timeoutMs: 0 }), /no SUBACK/);
  // The SUBSCRIBE and the UNSUBSCRIBE queued behind it both reach the broker.
  await new Promise((resolve) => setTimeout(resolve, 300));
  const device = await connectAsync(broker.url, { clientId: DEVICE, reconnectPeriod: 0 });
  t.teardown(() => device.endAsync(true));
  for (let i = 0; i < 20; i++) await device.publishAsync(deviceTopic(topics, DEVICE), String(i), { qos: 1 });
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.equal(received.length, 20, `each message to one member only: ${received.join(', ')}`);
  t.ok(received.some((r) => r.startsWith('b ')), 'the other member still gets its share');
});
