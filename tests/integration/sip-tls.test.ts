import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { sipGatewayConfigSchema } from '../../api/sip/config.js';
import { SipPublisherPool } from '../../api/sip/pool.js';
import type { PublishOutcome } from '../../api/sip/publisher.js';
import type { TlsMaterial } from '../../core/tls/pem.js';
import { MQTT_TEST_URL, createTestDatabase, tempDir, uniqueName, waitFor } from '../helpers/env.js';
import { addRule, addWatcher, ownerToken, provision, startTestService, testConfig } from '../helpers/service.js';
import { startSipTlsServer, type SipTlsServer } from '../helpers/sip-tls-server.js';
import { createTestCa } from '../helpers/test-pki.js';

/**
 * SIP over TLS (RFC 3261 §26.2; RFC 5922 §7 for the server's identity)
 * with real handshakes against a node:tls SIP server: a PUBLISH goes out
 * with Via SIP/2.0/TLS and gets its 200 OK; a client certificate is
 * presented when configured; a server whose certificate the CA did not
 * sign, or that names another host, is refused; in the service, a refused
 * server is a counted outcome (status 0) and a log line, not a crash.
 */
const ca = await createTestCa('SIP test CA');
const otherCa = await createTestCa('Someone else');
const serverCert = await ca.issue('sip server', { ips: ['127.0.0.1'], uris: ['sip:presence.test'] });
const dir = await tempDir(t, 'sip-tls-');

const pidf = (note: string) => `<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:alice@presence.test"><tuple id="t"><status><basic>open</basic></status><note>${note}</note></tuple></presence>\n`;

async function server(t: Test, options: Parameters<typeof startSipTlsServer>[0]): Promise<SipTlsServer> {
  const s = await startSipTlsServer(options);
  t.teardown(() => s.close());
  return s;
}

async function pool(t: Test, uri: string, tls: TlsMaterial | undefined) {
  const outcomes: PublishOutcome[] = [];
  const p = await SipPublisherPool.create(sipGatewayConfigSchema.parse({ server: uri, domain: 'presence.test', ...(tls ? { tls } : {}) }), {
    onOutcome: (o) => outcomes.push(o),
    closeTimeoutMs: 2000,
    timers: { t1Ms: 100, timerFMs: 3000 },
    backoff: { initialMs: 60_000, maxMs: 60_000 },
  });
  t.teardown(() => p.close());
  return { pool: p, outcomes };
}

t.test('PUBLISH over TLS: handshake verified against SIP_CA_FILE, Via TLS, 200 OK with an entity tag', async (t) => {
  const s = await server(t, serverCert);
  const { pool: p, outcomes } = await pool(t, `sips:127.0.0.1:${s.port}`, { ca: ca.cert });
  const outcome = await p.update('alice', pidf('over tls'));
  t.match(outcome, { kind: 'initial', status: 200, etag: 'tls-etag-1' });
  t.equal(s.requests.length, 1);
  t.match(s.requests[0]?.headers.get('via'), /^SIP\/2\.0\/TLS 127\.0\.0\.1:\d+;branch=z9hG4bK/, 'Via transport TLS (RFC 3261 §18.1.1)');
  t.match(s.requests[0]?.body.toString(), /over tls/);
  await p.update('alice', pidf('modified'));
  t.match(outcomes.map((o) => `${o.kind} ${o.status}`), ['initial 200', 'modify 200'], 'one connection, reused');
});

t.test(';transport=tls is TLS too', async (t) => {
  const s = await server(t, serverCert);
  const { pool: p } = await pool(t, `sip:127.0.0.1:${s.port};transport=tls`, { ca: ca.cert });
  t.match(await p.update('alice', pidf('x')), { status: 200 });
});

t.test('a client certificate is presented when the server asks for one', async (t) => {
  const client = await ca.issue('presence-gateway', { client: true });
  const s = await server(t, { ...serverCert, clientCa: ca.cert });
  const withCert = await pool(t, `sips:127.0.0.1:${s.port}`, { ca: ca.cert, ...client });
  t.match(await withCert.pool.update('alice', pidf('x')), { status: 200 });
  t.same(s.clientSubjects, ['presence-gateway']);

  const without = await pool(t, `sips:127.0.0.1:${s.port}`, { ca: ca.cert });
  const refused = await without.pool.update('bob', pidf('x'));
  t.equal(refused?.status, 0, 'no response: the server refused the handshake');
  // TLS 1.3: the server's alert comes after the client's handshake completed.
  t.match(refused?.error, /^tls: TLS connection to 127\.0\.0\.1:\d+ refused by the server: .*certificate required.*\(the server wants a client certificate \(set SIP_CERT_FILE\/SIP_KEY_FILE\)\)/);
});

t.test('a server whose certificate the CA did not sign is refused', async (t) => {
  const untrusted = await otherCa.issue('impostor', { ips: ['127.0.0.1'] });
  const s = await server(t, untrusted);
  const { pool: p } = await pool(t, `sips:127.0.0.1:${s.port}`, { ca: ca.cert });
  const outcome = await p.update('alice', pidf('secret'));
  t.equal(outcome?.status, 0);
  t.match(outcome?.error, /^tls: TLS handshake with 127\.0\.0\.1:\d+ failed: .*not signed by a trusted CA \(check SIP_CA_FILE\)/);
  t.equal(s.requests.length, 0, 'nothing was sent to it');
});

t.test('without SIP_CA_FILE only public roots are trusted: a private CA is refused', async (t) => {
  const s = await server(t, serverCert);
  const { pool: p } = await pool(t, `sips:127.0.0.1:${s.port}`, undefined);
  t.match(await p.update('alice', pidf('x')), { status: 0, error: /^tls: / });
  t.equal(s.requests.length, 0);
});

t.test('a certificate for another host is refused (RFC 5922 §7)', async (t) => {
  const elsewhere = await ca.issue('other', { ips: ['127.0.0.2'], dns: ['other.test'] });
  const s = await server(t, elsewhere);
  const { pool: p } = await pool(t, `sips:127.0.0.1:${s.port}`, { ca: ca.cert });
  t.match(await p.update('alice', pidf('x')), { status: 0, error: /^tls: .*does not name the host in SIP_SERVER/ });
  t.equal(s.requests.length, 0);
});

t.test('in the service: SIP_SERVER sips: with SIP_CA_FILE publishes; an untrusted server is a counted failure and a log line', async (t) => {
  const caFile = join(dir, 'sip-ca.pem');
  await writeFile(caFile, ca.cert);
  const good = await server(t, serverCert);
  const bad = await server(t, await otherCa.issue('impostor', { ips: ['127.0.0.1'] }));
  const databaseUrl = await createTestDatabase(t);
  const env = { DATABASE_URL: databaseUrl, MQTT_URL: MQTT_TEST_URL, MQTT_TOPIC_ROOT: uniqueName('st'), OWNTRACKS_TOPIC_ROOT: uniqueName('stot') };
  const first = await startTestService(t, await testConfig(t, env));
  await provision(first, 'alice');
  const audience = await addWatcher(first, 'SIP server', 'app');
  await addRule(first, 'alice', audience.id, 'allow');
  const on = await first.api('PUT', '/v1/me/settings', { token: await ownerToken(first, 'alice'), body: { sipPublish: true } });
  t.equal(on.status, 200);
  await first.close();

  const sip = { SIP_AUDIENCE: audience.id, SIP_DOMAIN: 'presence.test', SIP_CA_FILE: caFile };
  const trusted = await startTestService(t, await testConfig(t, { ...env, ...sip, SIP_SERVER: `sips:127.0.0.1:${good.port}` }));
  await waitFor(() => trusted.metrics.value('presence_sip_publish_total', { kind: 'initial', status: '200' }) >= 1, 'the PUBLISH over TLS');
  t.match(good.requests[0]?.headers.get('via'), /^SIP\/2\.0\/TLS /);
  await trusted.close();

  const lines: string[] = [];
  const log = pino({ level: 'warn' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(chunk.toString()), done()) }));
  const refused = await startTestService(t, await testConfig(t, { ...env, ...sip, SIP_SERVER: `sips:127.0.0.1:${bad.port}` }), { log });
  await waitFor(() => refused.metrics.value('presence_sip_publish_total', { kind: 'initial', status: '0' }) >= 1, 'the refused PUBLISH to be counted');
  await waitFor(() => lines.some((l) => l.includes('SIP publication failed')), 'the log line');
  const line = JSON.parse(lines.find((l) => l.includes('SIP publication failed')) ?? '{}') as { err?: { message?: string } };
  t.match(line.err?.message, /TLS handshake with 127\.0\.0\.1:\d+ failed.*check SIP_CA_FILE/);
  t.equal(bad.requests.length, 0, 'no PUBLISH reached the untrusted server');
  t.equal((await refused.api('GET', '/healthz')).status < 500, true, 'the service keeps running');
});
