import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { startService } from '../../bin/service.js';
import { MQTT_TEST_URL, tempDir, uniqueName } from '../helpers/env.js';
import { startTlsPostgres, tlsPostgresUnavailable } from '../helpers/postgres-tls.js';
import { provision, startTestService, testConfig } from '../helpers/service.js';
import { createTestCa } from '../helpers/test-pki.js';

/**
 * TLS to PostgreSQL (DATABASE_SSL, DATABASE_CA_FILE, DATABASE_CERT_FILE,
 * DATABASE_KEY_FILE) against a private PostgreSQL that refuses every
 * connection without TLS (the machine's PostgreSQL has ssl off and is not
 * reconfigured). Every connection the service opens (migrations, the
 * pool, the LISTEN/NOTIFY control channel and the delivery lease of a
 * scale-out group) is over TLS; verify-full refuses a server certified by
 * another CA or for another host; require encrypts without verifying;
 * a role that needs a client certificate gets the configured one.
 */
const unavailable = await tlsPostgresUnavailable();
if (unavailable !== undefined) {
  t.plan(0, `no private PostgreSQL: ${unavailable}`);
} else {
  const ca = await createTestCa('PostgreSQL test CA');
  const otherCa = await createTestCa('Another CA');
  const certUser = 'presence_cert';
  const server = await startTlsPostgres({ ...(await ca.issue('db', { ips: ['127.0.0.1'], dns: ['localhost'] })), clientCa: ca.cert, certUser });
  t.teardown(() => server.stop());
  const dir = await tempDir(t, 'postgres-tls-');
  const write = async (name: string, text: string) => {
    const path = join(dir, name);
    await writeFile(path, text, { mode: 0o600 });
    return path;
  };
  const clientCert = await ca.issue(certUser, { client: true });
  const strangerCert = await ca.issue('somebody_else', { client: true });
  const files = {
    ca: await write('ca.pem', ca.cert),
    otherCa: await write('other-ca.pem', otherCa.cert),
    cert: await write('client.pem', clientCert.cert),
    key: await write('client.key', clientCert.key),
    strangerCert: await write('stranger.pem', strangerCert.cert),
    strangerKey: await write('stranger.key', strangerCert.key),
  };

  const env = (extra: Record<string, string>) => ({ MQTT_URL: MQTT_TEST_URL, MQTT_TOPIC_ROOT: uniqueName('pt'), OWNTRACKS_TOPIC_ROOT: uniqueName('ptot'), ...extra });

  /** The TLS state of the server's sessions on a database (but the asking one). */
  async function sessions(database: string) {
    const admin = await server.admin(database);
    try {
      const { rows } = await admin.query<{ ssl: boolean; query: string; client_dn: string | null; usename: string }>(
        'select s.ssl, a.query, s.client_dn, a.usename from pg_stat_activity a join pg_stat_ssl s using (pid) where a.datname = $1 and a.pid <> pg_backend_pid()',
        [database],
      );
      return rows;
    } finally {
      await admin.end();
    }
  }

  async function refusal(t: Test, extra: Record<string, string>): Promise<string> {
    const config = await testConfig(t, env(extra));
    const error = await startService(config).then(
      async (service) => {
        await service.close();
        return undefined;
      },
      (e: unknown) => (e instanceof Error ? e.message : String(e)),
    );
    t.ok(error !== undefined, 'the service does not start');
    return error ?? '';
  }

  t.test('verify-full with DATABASE_CA_FILE: migrations, pool, control channel and delivery lease all over verified TLS', async (t) => {
    const database = await server.createDatabase('verify');
    const service = await startTestService(
      t,
      await testConfig(t, env({ DATABASE_URL: server.url({ database }), DATABASE_CA_FILE: files.ca, MQTT_SHARE_GROUP: uniqueName('g'), MQTT_SYNC_TOPIC: uniqueName('sync') })),
    );
    t.equal(service.config.outboundTls.database?.mode, 'verify-full', 'a CA file means verify-full');
    const alice = await provision(service, 'alice');
    t.ok(alice.device.id, 'writes and reads go through');
    const rows = await sessions(database);
    t.ok(rows.length >= 3, `the pool, the control channel and the lease are connected (${rows.length} sessions)`);
    t.ok(
      rows.every((r) => r.ssl),
      'every session is TLS',
    );
    t.ok(
      rows.some((r) => /LISTEN presence_control/.test(r.query)),
      'the LISTEN/NOTIFY control channel',
    );
    t.ok(
      rows.some((r) => /pg_try_advisory_lock/.test(r.query)),
      'the delivery lease',
    );
  });

  t.test('a server certified by another CA is refused, and the error says where to look', async (t) => {
    const database = await server.createDatabase('other_ca');
    const error = await refusal(t, { DATABASE_URL: server.url({ database }), DATABASE_CA_FILE: files.otherCa });
    t.match(error, /^cannot connect to PostgreSQL: .*\(the server's certificate is not signed by a trusted CA \(check DATABASE_CA_FILE\)\)$/);
  });

  t.test('verify-full without a CA file trusts public roots only', async (t) => {
    const database = await server.createDatabase('public_roots');
    const error = await refusal(t, { DATABASE_URL: `${server.url({ database })}?sslmode=verify-full` });
    t.match(error, /check DATABASE_CA_FILE/);
  });

  t.test('a certificate that does not name the host of DATABASE_URL is refused', async (t) => {
    const database = await server.createDatabase('other_host');
    // The same server reached as 127.0.0.2, an address its certificate does not carry.
    const error = await refusal(t, { DATABASE_URL: server.url({ host: '127.0.0.2', database }), DATABASE_CA_FILE: files.ca });
    t.match(error, /does not name the host in DATABASE_URL/);
    t.match(error, /127\.0\.0\.2/);
  });

  t.test('require: encrypted, not verified (and the operator is warned at start)', async (t) => {
    const database = await server.createDatabase('require');
    const lines: string[] = [];
    const log = pino({ level: 'warn' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(chunk.toString()), done()) }));
    const service = await startTestService(t, await testConfig(t, env({ DATABASE_URL: server.url({ database }), DATABASE_SSL: 'require' })), { log });
    await provision(service, 'bob');
    t.ok(
      lines.some((l) => l.includes("DATABASE_SSL=require: the database connection is encrypted but the server's certificate is not verified")),
      'warned',
    );
    const rows = await sessions(database);
    t.ok(rows.length >= 1 && rows.every((r) => r.ssl), 'TLS without a CA');
  });

  t.test('disable: plain TCP, which this server refuses', async (t) => {
    const database = await server.createDatabase('plain');
    t.match(await refusal(t, { DATABASE_URL: server.url({ database }) }), /no encryption/);
  });

  t.test('a role that needs a client certificate: DATABASE_CERT_FILE/DATABASE_KEY_FILE are presented', async (t) => {
    const database = await server.createDatabase('client_cert');
    const service = await startTestService(
      t,
      await testConfig(t, env({ DATABASE_URL: server.url({ database, user: certUser }), DATABASE_CA_FILE: files.ca, DATABASE_CERT_FILE: files.cert, DATABASE_KEY_FILE: files.key })),
    );
    await provision(service, 'carol');
    const rows = await sessions(database);
    t.ok(rows.length >= 1);
    t.ok(
      rows.every((r) => r.ssl && r.usename === certUser && r.client_dn === `/CN=${certUser}`),
      'logged in with the client certificate',
    );

    t.match(await refusal(t, { DATABASE_URL: server.url({ database, user: certUser }), DATABASE_CA_FILE: files.ca }), /client certificate/, 'none configured');
    t.match(
      await refusal(t, { DATABASE_URL: server.url({ database, user: certUser }), DATABASE_CA_FILE: files.ca, DATABASE_CERT_FILE: files.strangerCert, DATABASE_KEY_FILE: files.strangerKey }),
      /certificate authentication failed/,
      "another name's certificate",
    );
  });
}
