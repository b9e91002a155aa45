import { X509Certificate } from 'node:crypto';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import t from 'tap';
import { loadServerTls, tlsDir } from '../../bin/tls-files.js';
import { generateLocalCa, issueServerCertificate, RENEW_BEFORE_DAYS, SERVER_CERT_DAYS, serverCertificateProblem } from '../../core/tls/local-certificate.js';
import { serverTls } from '../../core/tls/server-tls.js';
import { tempDir } from '../helpers/env.js';

const DAY = 86_400_000;
const log = pino({ level: 'silent' });
const now = Date.now();
const ca = await generateLocalCa(now);
const caCert = new X509Certificate(ca.cert);

t.test('the local CA may sign server certificates only; the server certificate covers its names', async (t) => {
  t.ok(caCert.ca);
  const server = new X509Certificate((await issueServerCertificate(ca, ['localhost', '127.0.0.1', '::1', 'presence.lan'], now)).cert);
  t.notOk(server.ca);
  t.ok(server.checkIssued(caCert) && server.verify(caCert.publicKey));
  t.ok(server.checkHost('presence.lan') && server.checkIP('::1') && server.checkIP('127.0.0.1'));
  t.equal(server.checkHost('other.lan'), undefined);
  t.ok(Date.parse(server.validTo) - now <= SERVER_CERT_DAYS * DAY);
  t.match(server.keyUsage ?? [], ['1.3.6.1.5.5.7.3.1'], 'extended key usage: serverAuth');
});

t.test('a server certificate is replaced when it nears expiry, misses a name or has another issuer', async (t) => {
  const server = new X509Certificate((await issueServerCertificate(ca, ['localhost', '127.0.0.1'], now)).cert);
  t.equal(serverCertificateProblem(server, caCert, ['localhost', '127.0.0.1'], now), undefined);
  t.equal(serverCertificateProblem(server, caCert, ['localhost', '127.0.0.1'], now + (SERVER_CERT_DAYS - RENEW_BEFORE_DAYS + 1) * DAY), 'expires soon');
  t.equal(serverCertificateProblem(server, caCert, ['localhost', '10.0.0.2'], now), 'does not cover 10.0.0.2');
  t.equal(serverCertificateProblem(server, caCert, ['presence.lan'], now), 'does not cover presence.lan');
  const other = new X509Certificate((await generateLocalCa(now)).cert);
  t.equal(serverCertificateProblem(server, other, ['localhost'], now), 'not issued by the local CA');
});

t.test('DATA_DIR/tls: made once, reused, the server certificate renewed under the same CA when the names change', async (t) => {
  const dir = await tempDir(t);
  const first = await loadServerTls({ mode: 'local', names: ['localhost', '127.0.0.1', '::1'] }, dir, now, log);
  t.equal(first.caFile, join(tlsDir(dir), 'ca.pem'));
  t.equal((await stat(join(tlsDir(dir), 'ca-key.pem'))).mode & 0o777, 0o600);
  t.equal((await stat(tlsDir(dir))).mode & 0o777, 0o700);
  const caPem = await readFile(join(tlsDir(dir), 'ca.pem'), 'utf8');
  const again = await loadServerTls({ mode: 'local', names: ['localhost', '127.0.0.1', '::1'] }, dir, now + DAY, log);
  t.equal(again.certificate.fingerprint256, first.certificate.fingerprint256, 'reused');
  const renamed = await loadServerTls({ mode: 'local', names: ['localhost', '127.0.0.1', '::1', 'presence.lan'] }, dir, now + DAY, log);
  t.not(renamed.certificate.fingerprint256, first.certificate.fingerprint256, 'a new server certificate for the new name');
  t.ok(renamed.certificate.checkHost('presence.lan'));
  t.equal(await readFile(join(tlsDir(dir), 'ca.pem'), 'utf8'), caPem, 'under the same CA');
  const late = await loadServerTls({ mode: 'local', names: ['localhost'] }, dir, now + (SERVER_CERT_DAYS - 10) * DAY, log);
  t.not(late.certificate.fingerprint256, renamed.certificate.fingerprint256, 'renewed before it expires');

  await writeFile(join(tlsDir(dir), 'server.pem'), 'garbage');
  const repaired = await loadServerTls({ mode: 'local', names: ['localhost'] }, dir, now, log);
  t.ok(repaired.certificate.checkIssued(new X509Certificate(caPem)), 'an unreadable server certificate is simply issued again');

  await rm(join(tlsDir(dir), 'ca-key.pem'));
  await t.rejects(loadServerTls({ mode: 'local', names: ['localhost'] }, dir, now, log), /ca-key\.pem is missing while .*ca\.pem exists/, 'a CA is never silently replaced');
});

t.test("the operator's files: the key must match, the certificate must be valid now", async (t) => {
  const server = await issueServerCertificate(ca, ['localhost'], now);
  const input = { certPem: server.cert + ca.cert, keyPem: server.key, certSource: 'cert', keySource: 'key', caFile: undefined };
  const tls = serverTls(input, now);
  t.equal(tls.certificate.fingerprint256, new X509Certificate(server.cert).fingerprint256, 'the first certificate is the server certificate');
  t.equal((tls.certPem.match(/BEGIN CERTIFICATE/g) ?? []).length, 2, 'the chain is served whole');
  t.throws(() => serverTls({ ...input, certPem: ca.cert + server.cert }, now), /does not belong to the certificate/, 'the chain in the wrong order');
  t.throws(() => serverTls(input, now + 400 * DAY), /the certificate expired/);
  t.throws(() => serverTls({ ...input, keyPem: '-----BEGIN ENCRYPTED PRIVATE KEY-----\nx\n-----END ENCRYPTED PRIVATE KEY-----' }, now), /encrypted/);
  t.throws(() => serverTls({ ...input, certPem: 'nothing' }, now), /no PEM certificate found/);
  const file = join(await tempDir(t), 'missing.pem');
  await t.rejects(loadServerTls({ mode: 'files', certFile: file, keyFile: file }, '/nonexistent', now, log), /TLS_CERT_FILE .*missing\.pem: cannot be read \(ENOENT\)/);
});
