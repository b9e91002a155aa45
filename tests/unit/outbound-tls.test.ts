import { X509Certificate } from 'node:crypto';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { PeerCertificate } from 'node:tls';
import t from 'tap';
import { checkSipServerIdentity } from '../../api/sip/tls-identity.js';
import { loadOutboundTls } from '../../bin/outbound-tls-files.js';
import { parseConfig, type Config } from '../../core/config.js';
import { pgClientConfig } from '../../core/db/pg-tls.js';
import { tlsFailureHint } from '../../core/tls/errors.js';
import { checkTlsMaterial } from '../../core/tls/pem.js';
import { tempDir } from '../helpers/env.js';
import { createTestCa } from '../helpers/test-pki.js';

/**
 * The outbound TLS settings (issue 7): which combinations the configuration
 * accepts, how DATABASE_SSL is decided, how the PEM files are read and
 * checked at start, the pg client options every connection gets, and the
 * SIP server identity check of RFC 5922 §7.
 */
const problems = (env: Record<string, string>): string[] => {
  const result = parseConfig(env);
  return result.ok ? [] : result.problems;
};
const tlsOf = (env: Record<string, string>): Config['outboundTls'] => {
  const result = parseConfig(env);
  if (!result.ok) throw new Error(result.problems.join('; '));
  return result.config.outboundTls;
};

t.test('MQTT: files only with a TLS MQTT_URL, cert and key together', async (t) => {
  t.match(problems({ MQTT_CA_FILE: '/ca.pem' }), [/MQTT_CA_FILE.*only used with MQTT_URL/]);
  t.match(problems({ MQTT_URL: 'mqtt://b', MQTT_CA_FILE: '/ca.pem' }), [/does not use TLS/]);
  t.match(problems({ MQTT_URL: 'ws://b', MQTT_CA_FILE: '/ca.pem' }), [/does not use TLS/]);
  t.match(problems({ MQTT_URL: 'mqtts://b', MQTT_CERT_FILE: '/c.pem' }), [/MQTT_CERT_FILE\/MQTT_KEY_FILE: set both or neither/]);
  t.same(tlsOf({ MQTT_URL: 'mqtts://b:8883', MQTT_CA_FILE: '/ca.pem', MQTT_CERT_FILE: '/c.pem', MQTT_KEY_FILE: '/k.pem' }).mqtt, { caFile: '/ca.pem', certFile: '/c.pem', keyFile: '/k.pem' });
  t.same(tlsOf({ MQTT_URL: 'wss://b/mqtt' }).mqtt, { caFile: undefined, certFile: undefined, keyFile: undefined }, 'wss without files: public roots');
  t.equal(tlsOf({ MQTT_URL: 'mqtt://b' }).mqtt, undefined, 'plain MQTT: no TLS');
});

t.test('PostgreSQL: DATABASE_SSL, the URL sslmode and the files', async (t) => {
  const url = 'postgres://db.example.com/presence';
  const mode = (env: Record<string, string>) => tlsOf({ DATABASE_URL: url, ...env }).database?.mode;
  t.equal(mode({}), 'disable', 'nothing said: plain TCP, as the driver does');
  t.equal(tlsOf({ DATABASE_URL: `${url}?sslmode=require` }).database?.mode, 'require', "the URL's sslmode");
  t.equal(tlsOf({ DATABASE_URL: `${url}?sslmode=verify-full` }).database?.mode, 'verify-full');
  t.equal(mode({ DATABASE_CA_FILE: '/ca.pem' }), 'verify-full', 'a CA file means verify-full');
  t.equal(mode({ DATABASE_SSL: 'require' }), 'require');
  t.equal(mode({ DATABASE_SSL: 'require', DATABASE_CERT_FILE: '/c', DATABASE_KEY_FILE: '/k' }), 'require', 'client certificate without verifying the server');
  t.equal(tlsOf({}).database, undefined, 'embedded: nothing');

  t.match(problems({ DATABASE_SSL: 'verify-full' }), [/only used with DATABASE_URL/]);
  t.match(problems({ DATABASE_URL: url, DATABASE_SSL: 'prefer' }), [/DATABASE_SSL/]);
  for (const sslmode of ['prefer', 'allow', 'verify-ca']) t.match(problems({ DATABASE_URL: `${url}?sslmode=${sslmode}` }), [new RegExp(`sslmode=${sslmode} is not supported`)]);
  t.match(problems({ DATABASE_URL: `${url}?sslmode=require`, DATABASE_SSL: 'verify-full' }), [/contradicts sslmode=require/]);
  t.same(problems({ DATABASE_URL: `${url}?sslmode=verify-full`, DATABASE_SSL: 'verify-full' }), [], 'saying it twice is fine');
  t.match(problems({ DATABASE_URL: `${url}?sslrootcert=/x.pem` }), [/sslrootcert is not supported; use DATABASE_CA_FILE/]);
  t.match(problems({ DATABASE_URL: `${url}?ssl=true` }), [/not ssl=/]);
  t.match(problems({ DATABASE_URL: url, DATABASE_SSL: 'require', DATABASE_CA_FILE: '/ca.pem' }), [/DATABASE_CA_FILE: only used with DATABASE_SSL=verify-full/]);
  t.match(problems({ DATABASE_URL: url, DATABASE_CERT_FILE: '/c', DATABASE_KEY_FILE: '/k' }), [/need TLS/]);
  t.match(problems({ DATABASE_URL: url, DATABASE_SSL: 'verify-full', DATABASE_KEY_FILE: '/k' }), [/set both or neither/]);
});

t.test('SIP: sips: and ;transport=tls servers, files only with them', async (t) => {
  const base = { SIP_AUDIENCE: '6f1c2a52-3c1e-4a55-9a4e-0f9f9b1f2d3c' };
  t.same(tlsOf({ ...base, SIP_SERVER: 'sips:pres.example.com', SIP_CA_FILE: '/ca.pem' }).sip, { caFile: '/ca.pem', certFile: undefined, keyFile: undefined });
  t.ok(tlsOf({ ...base, SIP_SERVER: 'sip:pres.example.com;transport=tls' }).sip);
  t.equal(tlsOf({ ...base, SIP_SERVER: 'sip:pres.example.com;transport=tcp' }).sip, undefined);
  t.match(problems({ ...base, SIP_SERVER: 'sip:pres.example.com;transport=tcp', SIP_CA_FILE: '/ca.pem' }), [/SIP_SERVER does not use TLS/]);
  t.match(problems({ SIP_CA_FILE: '/ca.pem' }), [/only used with SIP_SERVER/]);
  t.match(problems({ ...base, SIP_SERVER: 'sips:p', SIP_CERT_FILE: '/c' }), [/SIP_CERT_FILE\/SIP_KEY_FILE: set both or neither/]);
});

t.test('PEM files: read once at start, each problem named by its variable', async (t) => {
  const dir = await tempDir(t, 'tls-files-');
  const ca = await createTestCa();
  const client = await ca.issue('svc', { client: true });
  const other = await ca.issue('other', { client: true });
  const write = async (name: string, text: string) => {
    const path = join(dir, name);
    await writeFile(path, text, { mode: 0o600 });
    return path;
  };
  const caFile = await write('ca.pem', ca.cert);
  const certFile = await write('c.pem', client.cert);
  const keyFile = await write('k.pem', client.key);
  const otherKey = await write('other.key', other.key);
  const garbage = await write('garbage.pem', 'hello');
  const env = { DATABASE_URL: 'postgres://db.example.com/p', MQTT_URL: 'mqtts://b', SIP_SERVER: 'sips:p', SIP_AUDIENCE: '6f1c2a52-3c1e-4a55-9a4e-0f9f9b1f2d3c' };

  const loaded = await loadOutboundTls(tlsOf({ ...env, MQTT_CA_FILE: caFile, MQTT_CERT_FILE: certFile, MQTT_KEY_FILE: keyFile, DATABASE_CA_FILE: caFile, SIP_CA_FILE: caFile }));
  t.same(loaded.mqtt, { ca: ca.cert, cert: client.cert, key: client.key });
  t.same(loaded.database, { mode: 'verify-full', material: { ca: ca.cert } });
  t.same(loaded.sip, { ca: ca.cert });
  t.same(loaded.warnings, []);
  t.match((await loadOutboundTls(tlsOf({ ...env, DATABASE_SSL: 'require' }))).warnings, [/DATABASE_SSL=require: .* not verified/]);

  await t.rejects(loadOutboundTls(tlsOf({ ...env, MQTT_CA_FILE: join(dir, 'missing.pem') })), { message: `MQTT_CA_FILE: cannot read ${join(dir, 'missing.pem')}: no such file` });
  await t.rejects(loadOutboundTls(tlsOf({ ...env, SIP_CA_FILE: dir })), { message: `SIP_CA_FILE: cannot read ${dir}: it is a directory` });
  await t.rejects(loadOutboundTls(tlsOf({ ...env, DATABASE_CA_FILE: garbage })), { message: /^DATABASE_CA_FILE \(.*garbage\.pem\) holds no PEM certificate/ });
  await t.rejects(loadOutboundTls(tlsOf({ ...env, MQTT_CERT_FILE: certFile, MQTT_KEY_FILE: otherKey })), { message: /^MQTT_KEY_FILE \(.*other\.key\) is not the private key of the first certificate in MQTT_CERT_FILE/ });
  await t.rejects(loadOutboundTls(tlsOf({ ...env, MQTT_CERT_FILE: certFile, MQTT_KEY_FILE: certFile })), { message: /MQTT_KEY_FILE .* holds no PEM private key/ });
  if (process.getuid?.() !== 0) {
    const locked = await write('locked.pem', ca.cert);
    await chmod(locked, 0o000);
    await t.rejects(loadOutboundTls(tlsOf({ ...env, MQTT_CA_FILE: locked })), { message: /permission denied/ });
  }
});

t.test('PEM checks: expired certificates are a warning, encrypted keys an error', async (t) => {
  const ca = await createTestCa();
  const expired = await ca.issue('old', { client: true, days: -1 });
  const names = { ca: 'CA', cert: 'CERT', key: 'KEY' };
  t.match(checkTlsMaterial(names, { cert: expired.cert, key: expired.key }, Date.now()).warnings, [/CERT: certificate CN=old expired on/]);
  t.throws(() => checkTlsMaterial(names, { cert: expired.cert, key: '-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n' }, Date.now()), /KEY holds an encrypted private key/);
  t.throws(() => checkTlsMaterial(names, { ca: '-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----' }, Date.now()), /CA: certificate 1 is not a valid X\.509 certificate/);
});

t.test('pg client options: one TLS policy, the URL cannot override it', async (t) => {
  const url = 'postgres://u@db.example.com:5433/p?sslmode=require&application_name=presence';
  t.same(pgClientConfig({ url }), { connectionString: url }, 'no policy given: the URL alone, as before');
  t.same(pgClientConfig({ url, tls: { mode: 'disable' } }), { connectionString: 'postgres://u@db.example.com:5433/p?application_name=presence', ssl: false });
  t.same(pgClientConfig({ url, tls: { mode: 'require', material: { cert: 'C', key: 'K' } } }), {
    connectionString: 'postgres://u@db.example.com:5433/p?application_name=presence',
    ssl: { cert: 'C', key: 'K', rejectUnauthorized: false },
  });
  t.same(pgClientConfig({ url: 'postgres://db/p?sslmode=verify-full', tls: { mode: 'verify-full', material: { ca: 'CA' } } }), {
    connectionString: 'postgres://db/p',
    ssl: { ca: 'CA', rejectUnauthorized: true },
  });
});

t.test('SIP server identity (RFC 5922 §7)', async (t) => {
  const ca = await createTestCa();
  const peer = async (cn: string, options: Parameters<typeof ca.issue>[1]): Promise<PeerCertificate> => {
    const x = new X509Certificate((await ca.issue(cn, options)).cert);
    // The fields checkServerIdentity reads, as tls.TLSSocket#getPeerCertificate gives them.
    return { subject: { CN: cn }, subjectaltname: x.subjectAltName } as unknown as PeerCertificate;
  };
  const ok = (host: string, cert: PeerCertificate) => checkSipServerIdentity(host, cert) === undefined;
  const sipUri = await peer('ignored', { uris: ['sip:presence.example.com'] });
  t.ok(ok('presence.example.com', sipUri), 'subjectAltName URI sip:domain');
  t.ok(ok('PRESENCE.example.com', sipUri), 'case-insensitive');
  t.notOk(ok('other.example.com', sipUri));
  t.ok(ok('presence.example.com', await peer('x', { dns: ['presence.example.com'] })), 'dNSName');
  t.notOk(ok('presence.example.com', await peer('x', { dns: ['*.example.com'] })), 'no wildcards (§7.2)');
  t.ok(ok('presence.example.com', await peer('presence.example.com', {})), 'CN only when there is no subjectAltName (§7.1)');
  t.notOk(ok('presence.example.com', await peer('presence.example.com', { dns: ['other.example.com'] })), 'CN ignored when a subjectAltName names something else');
  t.ok(ok('127.0.0.1', await peer('x', { ips: ['127.0.0.1'] })), 'an IP literal: iPAddress subjectAltName');
  t.notOk(ok('127.0.0.1', await peer('127.0.0.1', { dns: ['localhost'] })));
  t.match(checkSipServerIdentity('a.example.com', sipUri), { code: 'ERR_TLS_CERT_ALTNAME_INVALID', message: /does not name a\.example\.com \(it names presence\.example\.com/ });
});

t.test('TLS failure hints name the setting to check', async (t) => {
  const names = { ca: 'X_CA_FILE', cert: 'X_CERT_FILE', host: 'X_URL' };
  t.match(tlsFailureHint({ code: 'SELF_SIGNED_CERT_IN_CHAIN' }, names), /check X_CA_FILE/);
  t.match(tlsFailureHint({ code: 'ERR_TLS_CERT_ALTNAME_INVALID' }, names), /host in X_URL/);
  t.match(tlsFailureHint({ code: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED' }, names), /set X_CERT_FILE/);
  t.match(tlsFailureHint({ code: 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA' }, names), /refused the client certificate/);
  t.equal(tlsFailureHint({ code: 'ECONNREFUSED' }, names), undefined);
});
