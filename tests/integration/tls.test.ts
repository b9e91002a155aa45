import { execFile, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connectAsync, type IClientOptions } from 'mqtt';
import t from 'tap';
import { WebSocket } from 'ws';
import { generateLocalCa, issueServerCertificate } from '../../core/tls/local-certificate.js';
import { presencectl } from '../helpers/cli.js';
import { createTestDatabase, projectRoot, tempDir, waitFor } from '../helpers/env.js';
import { startTestService, testConfig } from '../helpers/service.js';

/**
 * TLS on everything the service serves, with real handshakes: the embedded
 * default (`npm start` with nothing set) is HTTPS, MQTT over TLS and MQTT
 * over secure WebSockets with a certificate from a local CA it made under
 * DATA_DIR/tls; clients that trust that CA get in, others are refused; the
 * CA survives a restart; the operator's own certificate files are served
 * as given, and unusable ones stop the start with a clear message.
 */
const run = promisify(execFile);
const entry = join(projectRoot, 'dist', 'bin', 'start.js');

function start(env: Record<string, string>) {
  const child = spawn(process.execPath, [entry], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, exited, out: () => stdout, err: () => stderr };
}

interface Ready {
  httpUrl: string;
  mqttUrl: string;
  mqttWebSocketUrl: string;
}

async function startReady(env: Record<string, string>) {
  const proc = start(env);
  t.teardown(() => {
    if (proc.child.exitCode === null) proc.child.kill('SIGKILL');
  });
  const line = await waitFor(() => proc.out().split('\n').find((l) => l.includes('"msg":"presence service ready"')), 'the service to be ready', 30_000).catch((error: unknown) => {
    throw new Error(`${String(error)}; its output: ${proc.out().slice(-2000)} ${proc.err().slice(-2000)}`);
  });
  return { proc, ready: JSON.parse(line) as Ready };
}

/** An HTTPS request with a chosen trust anchor (fetch() cannot take one); rejects with the TLS error. */
function httpsGet(url: string, options: { ca?: string; headers?: Record<string, string> } = {}) {
  return new Promise<{ status: number; body: string; peer: X509Certificate | undefined }>((resolve, reject) => {
    const req = request(url, { headers: options.headers ?? {}, ...(options.ca ? { ca: options.ca } : {}), agent: false }, (res) => {
      const raw = (res.socket as import('node:tls').TLSSocket).getPeerX509Certificate?.();
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, peer: raw }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The certificate a TLS listener presents (without trusting it). */
function peerCertificate(port: number): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const cert = socket.getPeerX509Certificate();
      socket.destroy();
      if (cert) resolve(cert);
      else reject(new Error('no peer certificate'));
    });
    socket.on('error', reject);
  });
}

// Refusals as OpenSSL words them: no trusted issuer at all, or a trusted
// issuer by that name whose signature does not verify.
const UNTRUSTED = /UNABLE_TO_VERIFY_LEAF_SIGNATURE|unable to verify the first certificate|self[- ]signed|unable to get local issuer|certificate signature failure/i;

const dataDir = await tempDir(t);
const databaseUrl = await createTestDatabase(t);
// The embedded defaults as `npm start` has them (no TLS variable at all);
// PostgreSQL instead of PGlite only to spare the test PGlite's memory.
const env = { DATA_DIR: dataDir, DATABASE_URL: databaseUrl, PORT: '0', MQTT_PORT: '0', LOG_LEVEL: 'info' };
const caFile = join(dataDir, 'tls', 'ca.pem');
const otherCa = await generateLocalCa(Date.now());
let { proc, ready } = await startReady(env);
const ca = await readFile(caFile, 'utf8');

// No assertion at the top level before the awaits below: tap ends a root
// test that has asserted and has no subtest queued, running its teardowns.
// Provisioned with the real command-line tool, which must itself trust the local CA.
const cliEnv = { DATA_DIR: dataDir, PRESENCE_URL: ready.httpUrl };
async function ctl(...args: string[]) {
  const result = await presencectl(cliEnv, ...args);
  if (result.code !== 0) throw new Error(`presencectl ${args.join(' ')} failed: ${result.stderr}`);
  return result.json as Record<string, string>;
}
await ctl('owner', 'create', 'alice');
const device = await ctl('device', 'add', 'alice', '--class', 'phone');
const watcher = await ctl('watcher', 'add', '--kind', 'person', '--name', 'Bob');
const deviceToken = (await ctl('token', 'device', device.id as string)).token as string;
const watcherToken = (await ctl('token', 'watcher', watcher.id as string)).token as string;
await ctl('allow', 'alice', watcher.id as string);

const deviceLogin = (): IClientOptions => ({ username: device.id, password: deviceToken, clientId: device.id, reconnectPeriod: 0, connectTimeout: 5000 });
const call = (state: 'in-call' | 'idle') => JSON.stringify({ kind: 'call', at: new Date().toISOString(), state });
const activities = async () => {
  const response = await httpsGet(`${ready.httpUrl}/v1/presence/alice`, { ca, headers: { authorization: `Bearer ${watcherToken}`, accept: 'application/json' } });
  return (JSON.parse(response.body) as { activities?: string[] }).activities ?? [];
};
const onThePhone = async () => (await activities()).includes('on-the-phone');

t.test('the embedded default is HTTPS, MQTT over TLS and WSS, with a generated local CA', async (t) => {
  t.match(ready.httpUrl, /^https:\/\/127\.0\.0\.1:\d+$/);
  t.match(ready.mqttUrl, /^mqtts:\/\/127\.0\.0\.1:\d+$/);
  t.match(ready.mqttWebSocketUrl, /^wss:\/\/127\.0\.0\.1:\d+\/mqtt$/);
  t.match(proc.out(), `TLS: local certificate authority at ${caFile}; trust it with curl --cacert ${caFile} / mosquitto_sub --cafile ${caFile}`);
  for (const key of ['ca-key.pem', 'server-key.pem']) t.equal((await stat(join(dataDir, 'tls', key))).mode & 0o777, 0o600, `${key} is private`);
  const caCert = new X509Certificate(ca);
  t.ok(caCert.ca, 'ca.pem is a CA certificate');

  const health = await httpsGet(`${ready.httpUrl}/readyz`, { ca });
  t.equal(health.status, 200, 'a client trusting ca.pem gets in');
  t.ok(health.peer?.checkIssued(caCert), 'the server certificate is issued by the local CA');
  t.ok(health.peer?.checkIP('127.0.0.1') && health.peer.checkHost('localhost'), 'for 127.0.0.1 and localhost');
  const viaName = await httpsGet(`${ready.httpUrl.replace('127.0.0.1', 'localhost')}/healthz`, { ca });
  t.equal(viaName.status, 200, 'by name too');

  // OpenSSL's client, as the README tells people to use it.
  const curl = await run('curl', ['-sS', '--cacert', caFile, `${ready.httpUrl}/readyz`]).catch((error: unknown) => error as Error & { code?: string });
  if ('stdout' in curl) t.match(curl.stdout, /"status":"ready"/, 'curl --cacert ca.pem');
  else if (curl.code === 'ENOENT') t.comment('curl not installed: skipped');
  else t.fail(`curl: ${curl.message}`);
});

t.test('HTTPS clients that do not trust the local CA are refused', async (t) => {
  await t.rejects(httpsGet(`${ready.httpUrl}/readyz`), UNTRUSTED, 'the default trust store');
  await t.rejects(httpsGet(`${ready.httpUrl}/readyz`, { ca: otherCa.cert }), UNTRUSTED, 'another CA');
  await t.rejects(fetch(`${ready.httpUrl}/readyz`), /fetch failed/, 'fetch() with the default trust store');
  await t.rejects(fetch(`${ready.httpUrl.replace('https:', 'http:')}/readyz`), /fetch failed|other side closed|ECONNRESET/, 'plain http on the HTTPS port gets no answer');
});

t.test('a device publishes over MQTT over TLS and over secure WebSockets; presence follows', async (t) => {
  const mqtts = await connectAsync(ready.mqttUrl, { ...deviceLogin(), ca });
  await mqtts.publishAsync(device.topic as string, call('in-call'), { qos: 1 });
  await mqtts.endAsync();
  await waitFor(() => onThePhone(), 'the call over MQTT over TLS to show');
  t.pass('mqtts:// with ca.pem: the call shows');

  const wss = await connectAsync(ready.mqttWebSocketUrl, { ...deviceLogin(), ca });
  await wss.publishAsync(device.topic as string, call('idle'), { qos: 1 });
  await wss.endAsync();
  await waitFor(async () => !(await onThePhone()), 'the end of the call over WSS to show');
  t.pass('wss://.../mqtt with ca.pem: the end of the call shows');

  // Mosquitto's client (OpenSSL), as the README shows it.
  const { port } = new URL(ready.mqttUrl);
  const pub = await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', port, '--cafile', caFile, '-u', device.id as string, '-P', deviceToken, '-i', device.id as string, '-q', '1', '-t', device.topic as string, '-m', call('in-call')]).catch(
    (error: unknown) => error as Error & { code?: string },
  );
  if ('stdout' in pub) {
    await waitFor(() => onThePhone(), 'the call from mosquitto_pub to show');
    t.pass('mosquitto_pub --cafile ca.pem');
  } else if (pub.code === 'ENOENT') t.comment('mosquitto_pub not installed: skipped');
  else t.fail(`mosquitto_pub: ${pub.message}`);
});

t.test('MQTT clients that do not trust the local CA are refused', async (t) => {
  await t.rejects(connectAsync(ready.mqttUrl, deviceLogin()), UNTRUSTED, 'mqtts:// with the default trust store');
  await t.rejects(connectAsync(ready.mqttUrl, { ...deviceLogin(), ca: otherCa.cert }), UNTRUSTED, 'mqtts:// with another CA');
  await t.rejects(connectAsync(ready.mqttWebSocketUrl, { ...deviceLogin(), ca: otherCa.cert }), UNTRUSTED, 'wss:// with another CA');
  // Plain MQTT on the TLS port: no fallback to clear text; the CONNECT gets no CONNACK (0x20), at most a TLS alert.
  const answer = await new Promise<Buffer | 'open'>((resolve) => {
    const socket = netConnect(Number(new URL(ready.mqttUrl).port), '127.0.0.1', () => socket.write(Buffer.from([0x10, 0x0c, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 2, 0, 60, 0, 0])));
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(Buffer.concat(chunks)));
    setTimeout(() => {
      socket.destroy();
      resolve('open');
    }, 5000).unref();
  });
  t.ok(answer !== 'open' && answer[0] !== 0x20, 'plain MQTT on the TLS port is closed without a CONNACK');
});

t.test('WebSocket upgrades on another path, or without the mqtt subprotocol, are refused', async (t) => {
  const upgrade = (url: string, protocols: string[]) =>
    new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(url, protocols, { ca });
      ws.on('unexpected-response', (_request, response) => {
        resolve(response.statusCode ?? 0);
        ws.terminate();
      });
      ws.on('open', () => {
        ws.close();
        reject(new Error('the upgrade was accepted'));
      });
      ws.on('error', () => undefined);
    });
  t.equal(await upgrade(ready.httpUrl.replace('https:', 'wss:') + '/v1/presence/alice', ['mqtt']), 404);
  t.equal(await upgrade(ready.mqttWebSocketUrl, ['chat']), 400);
  t.equal(await upgrade(ready.mqttWebSocketUrl, []), 400);
});

t.test('a restart on the same data directory reuses the CA and the server certificate', async (t) => {
  const before = { ca: new X509Certificate(ca).fingerprint256, server: new X509Certificate(await readFile(join(dataDir, 'tls', 'server.pem'), 'utf8')).fingerprint256 };
  proc.child.kill('SIGTERM');
  t.equal(await proc.exited, 0);
  ({ proc, ready } = await startReady(env));
  t.notMatch(proc.out(), /local certificate authority created|server certificate issued/, 'nothing generated');
  t.equal(new X509Certificate(await readFile(caFile, 'utf8')).fingerprint256, before.ca, 'same CA');
  const served = await peerCertificate(Number(new URL(ready.httpUrl).port));
  t.equal(served.fingerprint256, before.server, 'same server certificate on HTTPS');
  t.equal((await peerCertificate(Number(new URL(ready.mqttUrl).port))).fingerprint256, before.server, 'and on MQTT over TLS');
  t.equal((await httpsGet(`${ready.httpUrl}/readyz`, { ca })).status, 200, 'clients trusting the CA need nothing new');
  proc.child.kill('SIGHUP');
  await waitFor(() => proc.out().includes('TLS certificate files read again (SIGHUP)'), 'SIGHUP to be handled');
  t.equal(proc.child.exitCode, null, 'SIGHUP reads the certificate again and does not stop the service');
  proc.child.kill('SIGTERM');
  t.equal(await proc.exited, 0);
});

t.test("the operator's certificate files are served as given", async (t) => {
  const dir = await tempDir(t);
  const operatorCa = await generateLocalCa(Date.now());
  const server = await issueServerCertificate(operatorCa, ['presence.example', '127.0.0.1'], Date.now());
  // A chain file: the server certificate, then the (here: root) CA, as an operator's fullchain.pem has it.
  await writeFile(join(dir, 'fullchain.pem'), server.cert + operatorCa.cert);
  await writeFile(join(dir, 'key.pem'), server.key, { mode: 0o600 });
  const config = await testConfig(t, { TLS: 'auto', TLS_CERT_FILE: join(dir, 'fullchain.pem'), TLS_KEY_FILE: join(dir, 'key.pem'), DATABASE_URL: await createTestDatabase(t) });
  const service = await startTestService(t, config);
  t.equal(service.caFile, undefined, 'no local CA');
  await t.rejects(stat(join(config.dataDir, 'tls')), { code: 'ENOENT' }, 'nothing written under DATA_DIR/tls');
  const health = await httpsGet(`${service.httpUrl}/readyz`, { ca: operatorCa.cert });
  t.equal(health.status, 200);
  t.equal(health.peer?.fingerprint256, new X509Certificate(server.cert).fingerprint256, 'the given certificate is served');
  const client = await connectAsync(service.mqttUrl, { ca: operatorCa.cert, reconnectPeriod: 0, username: 'x', password: 'y', clientId: 'x' }).catch((error: unknown) => error as Error);
  t.match(client, /Bad username or password|Not authorized/i, 'MQTT over TLS handshakes with it (and then wants device credentials)');

  // A renewal (certbot and the like) replaces the files: new connections get the new certificate, without a restart.
  const renewed = await issueServerCertificate(operatorCa, ['presence.example', '127.0.0.1'], Date.now());
  await writeFile(join(dir, 'fullchain.pem'), renewed.cert + operatorCa.cert);
  await writeFile(join(dir, 'key.pem'), renewed.key);
  await service.reloadTls();
  const fingerprint = new X509Certificate(renewed.cert).fingerprint256;
  t.equal((await peerCertificate(Number(new URL(service.httpUrl).port))).fingerprint256, fingerprint, 'HTTPS serves the renewed certificate');
  t.equal((await peerCertificate(Number(new URL(service.mqttUrl).port))).fingerprint256, fingerprint, 'so does MQTT over TLS');
  // A half-done renewal (a certificate and a key that do not match) is refused; the current certificate stays.
  await writeFile(join(dir, 'fullchain.pem'), server.cert);
  await t.rejects(service.reloadTls(), /does not belong to the certificate/);
  t.equal((await httpsGet(`${service.httpUrl}/readyz`, { ca: operatorCa.cert })).peer?.fingerprint256, fingerprint, 'the current certificate stays');
});

t.test('unusable certificate files stop the start with a clear message, not a stack trace', async (t) => {
  const dir = await tempDir(t);
  const one = await issueServerCertificate(otherCa, ['localhost'], Date.now());
  const two = await issueServerCertificate(otherCa, ['localhost'], Date.now());
  await writeFile(join(dir, 'cert.pem'), one.cert);
  await writeFile(join(dir, 'wrong-key.pem'), two.key);
  await writeFile(join(dir, 'garbage.pem'), '-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n');
  const cases: [Record<string, string>, RegExp][] = [
    [{ TLS_CERT_FILE: join(dir, 'missing.pem'), TLS_KEY_FILE: join(dir, 'wrong-key.pem') }, /TLS_CERT_FILE .*missing\.pem: cannot be read \(ENOENT\)/],
    [{ TLS_CERT_FILE: join(dir, 'cert.pem'), TLS_KEY_FILE: join(dir, 'wrong-key.pem') }, /this key does not belong to the certificate/],
    [{ TLS_CERT_FILE: join(dir, 'garbage.pem'), TLS_KEY_FILE: join(dir, 'wrong-key.pem') }, /certificate 1 of the file cannot be parsed/],
    [{ TLS_CERT_FILE: join(dir, 'cert.pem'), TLS_KEY_FILE: join(dir, 'cert.pem') }, /not a PEM private key/],
  ];
  for (const [files, message] of cases) {
    const failed = start({ DATA_DIR: await tempDir(t), PORT: '0', MQTT_PORT: '0', LOG_LEVEL: 'silent', ...files });
    t.equal(await failed.exited, 1);
    t.match(failed.err(), /^presence-service: could not start: /);
    t.match(failed.err(), message);
    t.notMatch(failed.err(), /\n\s+at /, 'no stack trace');
  }
  const half = start({ DATA_DIR: dir, PORT: '0', TLS_CERT_FILE: join(dir, 'cert.pem') });
  t.equal(await half.exited, 2, 'a certificate without its key is a configuration error');
  t.match(half.err(), /TLS_CERT_FILE and TLS_KEY_FILE: set both or neither/);
  const open = start({ DATA_DIR: dir, PORT: '0', TLS: 'off', HOST: '0.0.0.0' });
  t.equal(await open.exited, 2, 'plain text off loopback is refused');
  t.match(open.err(), /TLS: off is only allowed with a loopback HOST/);
});
