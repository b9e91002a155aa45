import { connect as mqttConnect, connectAsync, type MqttClient } from 'mqtt';
import { connect, type Socket } from 'node:net';
import t from 'tap';
import { WebSocket } from 'ws';
import { LIMIT_REFUSALS } from '../../api/server.js';
import { INGEST_HELD } from '../../bin/service.js';
import { INGEST_ACCEPTED, INGEST_KEPT, INGEST_REJECTED } from '../../ingest/ingest-pipeline.js';
import { MQTT_TEST_URL, createTestDatabase, tempDir, uniqueName, waitFor } from '../helpers/env.js';
import { openStream } from '../helpers/sse.js';
import { addRule, addWatcher, provision, startTestService, testConfig } from '../helpers/service.js';

/**
 * Abuse limits (issue 7): per address and per token on HTTP (429 with
 * Retry-After), per device on MQTT, body size, open streams and
 * connections; every refusal counted by limit. Small limits here so that a
 * test reaches them; the defaults are in core/config.ts and the README.
 */
const limit = (service: { metrics: { value: (name: string, labels?: Record<string, string>) => number } }, name: string) => service.metrics.value(LIMIT_REFUSALS, { limit: name });

t.test('HTTP and MQTT limits on PostgreSQL and an external broker', async (t) => {
  const common = { DATA_DIR: await tempDir(t), DATABASE_URL: await createTestDatabase(t), MQTT_URL: MQTT_TEST_URL, MQTT_TOPIC_ROOT: uniqueName('lim'), OWNTRACKS_TOPIC_ROOT: uniqueName('limot') };
  // Set up without limits (the admin token counts like any other), then restart on the same database with them.
  const setup = await startTestService(t, await testConfig(t, common));
  const alice = await provision(setup, 'alice');
  const watchers = [];
  for (const name of ['w1', 'w2', 'w3', 'w4']) {
    const w = await addWatcher(setup, name);
    await addRule(setup, 'alice', w.id, 'allow');
    watchers.push(w);
  }
  await setup.close();
  const config = await testConfig(t, {
    ...common,
    RATE_LIMIT_HTTP_ADDRESS: '30/30',
    RATE_LIMIT_HTTP_TOKEN: '5/5',
    RATE_LIMIT_MQTT_DEVICE: '2/3',
    HTTP_MAX_BODY_BYTES: '2048',
    HTTP_MAX_STREAMS_PER_CALLER: '2',
    HTTP_MAX_STREAMS: '3',
  });
  const service = await startTestService(t, config);
  const [w1, w2, w3, w4] = watchers as [(typeof watchers)[number], (typeof watchers)[number], (typeof watchers)[number], (typeof watchers)[number]];
  const read = (token: string) => service.api('GET', '/v1/presence/alice', { token });

  t.test('per token: a burst, then 429 with Retry-After; another token is unaffected', async (t) => {
    // The burst of 5, plus what the bucket refilled (5/s) while they were sent (slower on a loaded machine).
    const started = Date.now();
    let served = 0;
    let refused = await read(w1.token);
    while (refused.status === 200 && served < 100) {
      served += 1;
      refused = await read(w1.token);
    }
    const refilled = Math.ceil(((Date.now() - started) / 1000) * 5);
    t.ok(served >= 5 && served <= 5 + refilled, `the burst of 5 (and at most ${refilled} refilled) served: ${served}`);
    t.equal(refused.status, 429);
    t.match(refused.headers.get('retry-after'), /^[1-9]\d*$/);
    t.match(await refused.json(), { code: 'too_many_requests', message: /token/ });
    t.equal(limit(service, 'http_token'), 1, 'counted');
    t.equal((await read(w2.token)).status, 200);
  });

  t.test('body size: 413, counted', async (t) => {
    const response = await service.api('PUT', '/v1/admin/owners/alice/settings', { token: service.adminToken, body: { ignore: [], note: 'x'.repeat(4000) } });
    t.equal(response.status, 413);
    t.match(await response.json(), { code: 'payload_too_large' });
    t.equal(limit(service, 'http_body'), 1);
  });

  t.test('streams: per caller, then in all', async (t) => {
    const url = `${service.httpUrl}/v1/presence/alice/stream`;
    const open = [await openStream(url, w3.token), await openStream(url, w3.token)];
    t.teardown(() => open.forEach((s) => s.close()));
    const third = await openStream(url, w3.token);
    t.equal(third.response.status, 429, 'a third stream for the same caller');
    third.close();
    open.push(await openStream(url, w4.token));
    t.equal(open.at(-1)?.response.status, 200);
    const beyond = await openStream(url, w2.token);
    t.equal(beyond.response.status, 503, 'the fourth stream in all');
    beyond.close();
    t.equal(limit(service, 'http_streams_per_caller'), 1);
    t.equal(limit(service, 'http_streams'), 1);
  });

  t.test('per device on an external broker: the excess (the broker has acknowledged it already) waits, undecoded, and is applied as the limit allows, oldest first', async (t) => {
    const device = await connectAsync(MQTT_TEST_URL, { clientId: uniqueName('dev'), clean: true });
    t.teardown(() => device.endAsync());
    const accepted = service.metrics.value(INGEST_ACCEPTED);
    const refusedBefore = service.metrics.value(INGEST_REJECTED, { reason: 'rate_limited' });
    const keptBefore = service.metrics.value(INGEST_KEPT);
    const started = Date.now();
    // A phone flushing its offline queue: seven reports of no call, then the call going on now.
    for (let i = 0; i < 8; i++) {
      const at = new Date(started - 8000 + i * 1000).toISOString();
      await device.publishAsync(alice.device.topic, JSON.stringify({ kind: 'call', at, state: i === 7 ? 'in-call' : 'idle' }), { qos: 1 });
    }
    const kept = service.metrics.value(INGEST_KEPT) - keptBefore;
    t.ok(kept >= 1 && kept <= 5, `past the burst of 3, kept (${kept}; fewer if the bucket refilled while they were sent)`);
    await waitFor(() => service.metrics.value(INGEST_ACCEPTED) - accepted >= 8, 'all eight applied', 10_000);
    // Five over the burst at 2/s: the last one about 2.5 s after the first (less what refilled while they were sent).
    t.ok(Date.now() - started >= (kept - 1) * 500, `paced by the limit (${Date.now() - started} ms for ${kept} kept)`);
    t.equal(service.metrics.value(INGEST_REJECTED, { reason: 'rate_limited' }), refusedBefore, 'none refused');
    t.ok(service.hub.current(alice.owner.id, Date.now()).activities.includes('on-the-phone'), 'the call, sent last, is what the owner shows');
    t.equal(service.metrics.value('presence_ingest_kept'), 0, 'nothing kept any more');
  });

  t.test('per address: requests with any token or none count; the probes do not', async (t) => {
    let status = 0;
    let sent = 0;
    let refusal: Response | undefined;
    const started = Date.now();
    while (status !== 429 && sent < 200) {
      refusal = await service.api('GET', '/v1/presence/alice', { token: `forged-${sent}` });
      status = refusal.status;
      sent += 1;
    }
    // The burst of 30, plus what the bucket refilled (30/s) while the
    // requests were being sent (a loaded machine sends them slower).
    const refilled = Math.ceil(((Date.now() - started) / 1000) * 30);
    t.equal(status, 429, `refused after ${sent} requests`);
    t.match(refusal?.headers.get('retry-after'), /^[1-9]\d*$/, 'with Retry-After in whole seconds (RFC 9110 §10.2.3)');
    t.match(await refusal?.json(), { code: 'too_many_requests' });
    t.ok(sent <= 31 + refilled, `at most the burst and the refill (${30 + refilled})`);
    t.ok(limit(service, 'http_address') >= 1);
    t.equal((await service.api('GET', '/healthz')).status, 200, 'liveness is exempt');
    t.equal((await service.api('GET', '/readyz')).status, 200);
    const metrics = await (await service.api('GET', '/metrics')).text();
    t.match(metrics, /presence_limit_refusals_total\{limit="http_address"\} [1-9]/);
    t.match(metrics, /presence_ingest_kept_total [1-9]/);
  });
});

t.test('per device on the embedded broker: the excess is held, the device slowed down to the limit, nothing refused', async (t) => {
  const service = await startTestService(t, await testConfig(t, { RATE_LIMIT_MQTT_DEVICE: '2/3' }));
  const { device, deviceToken } = await provision(service, 'alice');
  const client = await connectAsync(service.mqttUrl, { username: device.id, password: deviceToken, clientId: device.id, reconnectPeriod: 0 });
  t.teardown(() => client.endAsync());
  const event = (i: number) => JSON.stringify({ kind: 'call', at: new Date().toISOString(), state: i % 2 ? 'idle' : 'in-call' });
  const started = Date.now();
  // Sent at once, as a phone flushing its offline queue does: QoS 1 and QoS 0 alike.
  await Promise.all([...Array(8).keys()].map((i) => client.publishAsync(device.topic, event(i), { qos: i < 6 ? 1 : 0 })));
  await waitFor(() => service.metrics.value(INGEST_ACCEPTED) >= 8, 'all eight applied');
  const refilled = Math.ceil(((Date.now() - started) / 1000) * 2);
  t.equal(service.metrics.value(INGEST_ACCEPTED), 8, 'every message applied');
  t.equal(service.metrics.value(INGEST_REJECTED, { reason: 'rate_limited' }), 0, 'none refused');
  t.ok(service.metrics.value(INGEST_HELD, { outcome: 'held' }) >= 5, `held beyond the burst of 3: ${service.metrics.value(INGEST_HELD, { outcome: 'held' })}`);
  t.equal(service.metrics.value(INGEST_HELD, { outcome: 'closed' }), 0);
  // The limit still holds: 3 at once, then 2 a second (applied no faster than the refill allows).
  t.ok(8 <= 3 + refilled, `eight applied over at least 2.5 s of refill (${Date.now() - started} ms)`);
  t.ok(client.connected, 'the device stays connected');
});

t.test('per device on an external broker: a stop applies and stores the kept message, whatever the limit', async (t) => {
  const common = { DATA_DIR: await tempDir(t), DATABASE_URL: await createTestDatabase(t), MQTT_URL: MQTT_TEST_URL, MQTT_TOPIC_ROOT: uniqueName('limstop'), RATE_LIMIT_MQTT_DEVICE: '1/1' };
  // The service's clock stops once the message is kept: its bucket never refills, so only the stop can apply it.
  let stopped: number | undefined = undefined;
  const service = await startTestService(t, await testConfig(t, common), { clock: () => stopped ?? Date.now() });
  const alice = await provision(service, 'alice');
  const device = await connectAsync(MQTT_TEST_URL, { clientId: uniqueName('dev'), clean: true });
  t.teardown(() => device.endAsync());
  const now = Date.now();
  await device.publishAsync(alice.device.topic, JSON.stringify({ kind: 'call', at: new Date(now - 1000).toISOString(), state: 'idle' }), { qos: 1 });
  await device.publishAsync(alice.device.topic, JSON.stringify({ kind: 'call', at: new Date(now).toISOString(), state: 'in-call' }), { qos: 1 });
  await waitFor(() => service.metrics.value(INGEST_KEPT) === 1, 'the second message kept');
  stopped = Date.now();
  await new Promise((resolve) => setTimeout(resolve, 1200));
  t.equal(service.metrics.value('presence_ingest_kept'), 1, 'still kept past the refill time: the clock stopped');
  await service.close();
  const again = await startTestService(t, await testConfig(t, common));
  t.ok(again.hub.current(alice.owner.id, Date.now()).activities.includes('on-the-phone'), 'stored at the stop: the restarted service shows the call');
});

t.test('connection limits on the embedded defaults: HTTP and the embedded broker drop the excess', async (t) => {
  const config = await testConfig(t, { HTTP_MAX_CONNECTIONS: '1', MQTT_MAX_CONNECTIONS: '1' });
  const service = await startTestService(t, config);
  const { port: httpPort } = new URL(service.httpUrl);
  const { port: mqttPort } = new URL(service.mqttUrl);
  const hold = async (port: string): Promise<Socket> => {
    const socket = connect(Number(port), '127.0.0.1');
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    return socket;
  };
  const closedSoon = (socket: Socket, ms = 2000) =>
    new Promise<boolean>((resolve) => {
      socket.once('close', () => resolve(true));
      setTimeout(() => resolve(false), ms);
    });
  for (const [port, name] of [
    [httpPort, 'http_connections'],
    [mqttPort, 'mqtt_connections'],
  ] as const) {
    const first = await hold(port);
    const second = await hold(port).catch(() => undefined);
    t.ok(second === undefined || (await closedSoon(second)), `the second ${name.split('_')[0]} connection is dropped`);
    await waitFor(() => limit(service, name) === 1, `${name} to be counted`);
    first.destroy();
  }

  // MQTT over WebSockets counts against the same MQTT_MAX_CONNECTIONS, and its packets pass the same frame guard.
  const wsUrl = service.mqttWebSocketUrl ?? '';
  const upgrade = () =>
    new Promise<WebSocket | number>((resolve) => {
      const ws = new WebSocket(wsUrl, ['mqtt']);
      ws.on('open', () => resolve(ws));
      ws.on('unexpected-response', (_request, response) => {
        resolve(response.statusCode ?? 0);
        ws.terminate();
      });
      ws.on('error', () => undefined);
    });
  // The server may not have seen the earlier connection close yet: hold one that stays open.
  const tcp = await waitFor(async () => {
    const socket = await hold(mqttPort);
    return (await closedSoon(socket, 300)) ? undefined : socket;
  }, 'a TCP connection to hold the slot');
  let refusals = limit(service, 'mqtt_connections');
  t.equal(await upgrade(), 503, 'no WebSocket while a TCP connection holds the only slot');
  await waitFor(() => limit(service, 'mqtt_connections') === refusals + 1, 'the WebSocket refusal to be counted');
  tcp.destroy();
  const ws = await waitFor(async () => {
    const result = await upgrade();
    return typeof result === 'number' ? undefined : result;
  }, 'the slot to be free');
  refusals = limit(service, 'mqtt_connections');
  const second = await hold(mqttPort).catch(() => undefined);
  t.ok(second === undefined || (await closedSoon(second)), 'no TCP connection while a WebSocket holds the only slot');
  await waitFor(() => limit(service, 'mqtt_connections') === refusals + 1, 'the TCP refusal to be counted');
  const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
  ws.send(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f])); // PUBLISH declaring 256 MB
  await closed;
  t.pass('an oversized packet header over a WebSocket closes it');
});

t.test('connection rate per address on the embedded broker: the excess dropped before TLS and token checks, WebSockets answered 429', async (t) => {
  const config = await testConfig(t, { RATE_LIMIT_MQTT_CONNECT: '1/3' });
  const service = await startTestService(t, config);
  const alice = await provision(service, 'alice');
  const { port } = new URL(service.mqttUrl);
  const open = (): Promise<Socket> =>
    new Promise((resolve, reject) => {
      const socket = connect(Number(port), '127.0.0.1');
      socket.once('connect', () => resolve(socket)).once('error', reject);
    });
  const closedWithin = (socket: Socket, ms: number) =>
    new Promise<boolean>((resolve) => {
      if (socket.destroyed) return resolve(true);
      socket.once('close', () => resolve(true));
      setTimeout(() => resolve(false), ms);
    });
  // The burst: three connections from 127.0.0.1 (the bucket refills one a second, so a slow machine may get a fourth).
  const held: Socket[] = [];
  t.teardown(() => held.forEach((s) => s.destroy()));
  let dropped: Socket | undefined;
  for (let i = 0; i < 8 && !dropped; i++) {
    const socket = await open();
    if (await closedWithin(socket, 200)) dropped = socket;
    else held.push(socket);
  }
  t.ok(held.length >= 3 && dropped !== undefined, `${held.length} connections kept, the next one dropped`);
  t.equal(limit(service, 'mqtt_connect_address'), 1, 'counted');
  t.equal(limit(service, 'mqtt_connections'), 0, 'not as the connection limit');

  const upgrade = () =>
    new Promise<{ code: number; retryAfter: string | undefined }>((resolve) => {
      const ws = new WebSocket(service.mqttWebSocketUrl ?? '', ['mqtt']);
      ws.on('open', () => {
        resolve({ code: 101, retryAfter: undefined });
        ws.terminate();
      });
      ws.on('unexpected-response', (_request, response) => {
        resolve({ code: response.statusCode ?? 0, retryAfter: response.headers['retry-after'] });
        ws.terminate();
      });
      ws.on('error', () => undefined);
    });
  // The bucket is empty now, unless a slow machine let a second pass since the drop: then an upgrade takes that token and the next is refused.
  let status = await upgrade();
  for (let i = 0; i < 3 && status.code === 101; i++) status = await upgrade();
  t.match(status, { code: 429, retryAfter: /^[1-9]\d*$/ }, 'a WebSocket from the same address: 429 with Retry-After, before the handshake');
  t.equal(limit(service, 'mqtt_connect_address'), 2, 'counted with the TCP refusal');

  // Once the bucket refills, the device connects as usual. (A dropped
  // connection is closed without a CONNACK: mqtt.js's connectAsync would
  // wait for ever without reconnecting, so each try ends at its close.)
  const tryConnect = () =>
    new Promise<MqttClient | undefined>((resolve) => {
      const client = mqttConnect(service.mqttUrl, { username: alice.device.id, password: alice.deviceToken, clientId: alice.device.id, reconnectPeriod: 0, connectTimeout: 2000 });
      client.once('connect', () => resolve(client));
      client.once('close', () => {
        client.end(true);
        resolve(undefined);
      });
      client.on('error', () => undefined);
    });
  const device = await waitFor(tryConnect, 'a token refilled', 10_000);
  t.ok(device.connected, 'a device connects after the wait');
  await device.endAsync();
});
