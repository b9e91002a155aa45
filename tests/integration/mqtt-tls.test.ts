import { writeFile } from 'node:fs/promises';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Aedes } from 'aedes';
import { connectAsync } from 'mqtt';
import { WebSocketServer, createWebSocketStream } from 'ws';
import t, { type Test } from 'tap';
import { startService } from '../../bin/service.js';
import { INGEST_ACCEPTED } from '../../ingest/ingest-pipeline.js';
import { createTestDatabase, tempDir, uniqueName, waitFor } from '../helpers/env.js';
import { startPrivateBroker, type PrivateBroker } from '../helpers/mosquitto.js';
import { provision, startTestService, testConfig } from '../helpers/service.js';
import { createTestCa } from '../helpers/test-pki.js';

/**
 * TLS to an external broker (MQTT_URL mqtts:// and wss://, MQTT_CA_FILE,
 * MQTT_CERT_FILE, MQTT_KEY_FILE) against private Mosquitto brokers with
 * TLS listeners and certificates made here: the service ingests a device
 * event over a verified connection, presents its client certificate to a
 * broker that requires one, and refuses to start, saying why, when the
 * broker's certificate is not signed by MQTT_CA_FILE or when it has no
 * client certificate to show.
 */
const ca = await createTestCa('MQTT test CA');
const otherCa = await createTestCa('Another CA');
const serverCert = await ca.issue('broker', { ips: ['127.0.0.1'], dns: ['localhost'] });
const serviceCert = await ca.issue('presence-service', { client: true });
const deviceCert = await ca.issue('device', { client: true });
const dir = await tempDir(t, 'mqtt-tls-');
const files = {
  ca: join(dir, 'ca.pem'),
  otherCa: join(dir, 'other-ca.pem'),
  cert: join(dir, 'service.pem'),
  key: join(dir, 'service.key'),
};
await writeFile(files.ca, ca.cert);
await writeFile(files.otherCa, otherCa.cert);
await writeFile(files.cert, serviceCert.cert);
await writeFile(files.key, serviceCert.key, { mode: 0o600 });
const databaseUrl = await createTestDatabase(t);

async function broker(t: Test, options: { requireCertificate?: boolean } = {}): Promise<PrivateBroker> {
  const b = await startPrivateBroker({ tls: { ...serverCert, ca: ca.cert, ...(options.requireCertificate ? { requireCertificate: true } : {}) } });
  t.teardown(() => b.stop());
  return b;
}

/**
 * MQTT over WebSockets over TLS (wss://): Debian 12's Mosquitto cannot open
 * a websockets listener, so an aedes broker behind a node:https server
 * with a `ws` endpoint stands in (a real handshake all the same).
 */
async function wssBroker(t: Test, options: { requireCertificate?: boolean } = {}): Promise<{ url: string }> {
  const aedes = await Aedes.createBroker();
  // Requiring a client certificate, as Mosquitto's require_certificate: signed by the test CA, or the handshake fails.
  const https = createHttpsServer({ cert: serverCert.cert, key: serverCert.key, ...(options.requireCertificate ? { ca: ca.cert, requestCert: true, rejectUnauthorized: true } : {}) });
  const wss = new WebSocketServer({ server: https });
  wss.on('connection', (socket) => aedes.handle(createWebSocketStream(socket)));
  await new Promise<void>((resolve) => https.listen(0, '127.0.0.1', () => resolve()));
  t.teardown(async () => {
    for (const client of wss.clients) client.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
    await new Promise<void>((resolve) => https.close(() => resolve()));
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
  });
  return { url: `wss://127.0.0.1:${(https.address() as AddressInfo).port}/mqtt` };
}

const env = (b: { url: string }, extra: Record<string, string> = {}) => ({
  DATABASE_URL: databaseUrl,
  MQTT_URL: b.url,
  MQTT_TOPIC_ROOT: uniqueName('mt'),
  OWNTRACKS_TOPIC_ROOT: uniqueName('mtot'),
  ...extra,
});

/** A device publishes an event through the broker; resolves when the service applied it. */
async function ingestsOneEvent(t: Test, b: { url: string }, extra: Record<string, string>, deviceTls: Record<string, string>): Promise<void> {
  const service = await startTestService(t, await testConfig(t, env(b, extra)));
  const { device } = await provision(service, uniqueName('owner').toLowerCase().replace(/_/g, '-'));
  const client = await connectAsync(b.url, { clientId: uniqueName('dev'), clean: true, ca: ca.cert, rejectUnauthorized: true, ...deviceTls });
  t.teardown(() => client.endAsync());
  const before = service.metrics.value(INGEST_ACCEPTED);
  await client.publishAsync(device.topic, JSON.stringify({ kind: 'call', at: new Date().toISOString(), state: 'in-call' }), { qos: 1 });
  await waitFor(() => service.metrics.value(INGEST_ACCEPTED) > before, 'the event over TLS to be applied');
  t.pass('the event reached the service over a verified TLS connection');
  await service.close();
}

async function refusesToStart(t: Test, b: { url: string }, extra: Record<string, string>): Promise<string> {
  const config = await testConfig(t, { ...env(b, extra), MQTT_CLIENT_ID: uniqueName('svc') });
  const started = Date.now();
  const error = await startService(config).then(
    async (service) => {
      await service.close();
      return undefined;
    },
    (e: unknown) => (e instanceof Error ? e.message : String(e)),
  );
  t.ok(error !== undefined, 'the service does not start');
  t.ok(Date.now() - started < 8000, 'and says so at once, not after the CONNACK timeout');
  return error ?? '';
}

t.test('mqtts:// with MQTT_CA_FILE: verified, and a device event is ingested', async (t) => {
  const b = await broker(t);
  await ingestsOneEvent(t, b, { MQTT_CA_FILE: files.ca }, {});
});

t.test('a broker whose certificate MQTT_CA_FILE did not sign: the service refuses to start, and says why', async (t) => {
  const b = await broker(t);
  const error = await refusesToStart(t, b, { MQTT_CA_FILE: files.otherCa });
  t.match(error, /^cannot use MQTT broker mqtts:\/\/127\.0\.0\.1:\d+\/?: .*\(the server's certificate is not signed by a trusted CA \(check MQTT_CA_FILE\)\)$/);
});

t.test('without MQTT_CA_FILE only public roots are trusted', async (t) => {
  const b = await broker(t);
  t.match(await refusesToStart(t, b, {}), /check MQTT_CA_FILE/);
});

t.test('a broker that requires client certificates: MQTT_CERT_FILE/MQTT_KEY_FILE are presented', async (t) => {
  const b = await broker(t, { requireCertificate: true });
  await ingestsOneEvent(t, b, { MQTT_CA_FILE: files.ca, MQTT_CERT_FILE: files.cert, MQTT_KEY_FILE: files.key }, { cert: deviceCert.cert, key: deviceCert.key });
});

t.test('a broker that requires client certificates, and none configured: a clear failure', async (t) => {
  const b = await broker(t, { requireCertificate: true });
  const error = await refusesToStart(t, b, { MQTT_CA_FILE: files.ca });
  t.match(error, /certificate required.*\(the server wants a client certificate \(set MQTT_CERT_FILE\/MQTT_KEY_FILE\)\)/);
});

t.test('wss:// (MQTT over WebSockets over TLS) with MQTT_CA_FILE', async (t) => {
  const b = await wssBroker(t);
  await ingestsOneEvent(t, b, { MQTT_CA_FILE: files.ca }, {});
  const error = await refusesToStart(t, b, { MQTT_CA_FILE: files.otherCa });
  t.match(error, /check MQTT_CA_FILE/);
});

t.test('wss:// to a broker that requires client certificates: MQTT_CERT_FILE/MQTT_KEY_FILE are presented over WebSockets too', async (t) => {
  const b = await wssBroker(t, { requireCertificate: true });
  await ingestsOneEvent(t, b, { MQTT_CA_FILE: files.ca, MQTT_CERT_FILE: files.cert, MQTT_KEY_FILE: files.key }, { cert: deviceCert.cert, key: deviceCert.key });
  const error = await refusesToStart(t, b, { MQTT_CA_FILE: files.ca });
  t.match(error, /certificate required.*set MQTT_CERT_FILE\/MQTT_KEY_FILE/, 'without them, a clear failure');
});
