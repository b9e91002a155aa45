import t from 'tap';
import { parseConfig } from '../../core/config.js';

t.test('no configuration means embedded defaults', async (t) => {
  const result = parseConfig({});
  t.ok(result.ok);
  if (!result.ok) return;
  const c = result.config;
  t.same(c.database, { kind: 'embedded' });
  t.equal(c.mqtt.kind, 'embedded');
  t.equal(c.http.port, 8080);
  t.equal(c.dataDir, './data');
  t.equal(c.mqtt.topicRoot, 'presence');
  t.equal(c.offlineAfterMs, 900_000);
  t.ok(Object.isFrozen(c) && Object.isFrozen(c.http) && Object.isFrozen(c.mqtt), 'deeply frozen');
});

t.test('DATABASE_URL and MQTT_URL switch to external components', async (t) => {
  const result = parseConfig({
    DATABASE_URL: 'postgres://u@db:5432/presence',
    MQTT_URL: 'mqtts://broker:8883',
    MQTT_USERNAME: 'svc',
    MQTT_PASSWORD: 'secret',
  });
  t.ok(result.ok);
  if (!result.ok) return;
  t.same(result.config.database, { kind: 'postgres', url: 'postgres://u@db:5432/presence', statementTimeoutMs: 30_000 });
  t.match(result.config.mqtt, { kind: 'external', url: 'mqtts://broker:8883', username: 'svc', password: 'secret' });
});

t.test('DATABASE_STATEMENT_TIMEOUT_MS: a bound on PostgreSQL statements, 30 s by default, only with DATABASE_URL', async (t) => {
  const url = 'postgres://u@db:5432/presence';
  const timeout = (env: Record<string, string>) => {
    const result = parseConfig({ DATABASE_URL: url, ...env });
    return result.ok && result.config.database.kind === 'postgres' ? result.config.database.statementTimeoutMs : result.ok ? 'embedded' : result.problems;
  };
  t.equal(timeout({}), 30_000, 'default');
  t.equal(timeout({ DATABASE_STATEMENT_TIMEOUT_MS: '' }), 30_000, 'empty means unset');
  t.equal(timeout({ DATABASE_STATEMENT_TIMEOUT_MS: '300' }), 300);
  t.equal(timeout({ DATABASE_STATEMENT_TIMEOUT_MS: '100' }), 100, 'the least');
  t.equal(timeout({ DATABASE_STATEMENT_TIMEOUT_MS: '3600000' }), 3_600_000, 'the most: an hour');
  for (const bad of ['0', '-1', '99', '3600001', '1.5', '30s', 'off']) {
    const problems = timeout({ DATABASE_STATEMENT_TIMEOUT_MS: bad });
    t.ok(Array.isArray(problems) && problems.length > 0 && problems.every((p) => p.startsWith('DATABASE_STATEMENT_TIMEOUT_MS: ')), `${bad} refused`);
  }
  // The embedded database has no server to cancel a statement: a value set there is a mistake, said like the other DATABASE_* settings.
  const embedded = parseConfig({ DATABASE_STATEMENT_TIMEOUT_MS: '5000' });
  t.notOk(embedded.ok);
  if (!embedded.ok) t.same(embedded.problems, ['DATABASE_STATEMENT_TIMEOUT_MS: only used with DATABASE_URL']);
  const none = parseConfig({});
  t.ok(none.ok, 'the embedded default needs nothing');
  if (none.ok) t.same(none.config.database, { kind: 'embedded' });
});

t.test('every problem is reported at once', async (t) => {
  const result = parseConfig({
    PORT: 'eighty',
    MQTT_PORT: '70000',
    DATABASE_URL: 'mysql://x',
    MQTT_URL: 'http://broker',
    OFFLINE_AFTER_SECONDS: '-5',
    MQTT_TOPIC_ROOT: 'a/#',
    LOG_LEVEL: 'loud',
    SIGNING_KEY: 'not a key',
  });
  t.notOk(result.ok);
  if (result.ok) return;
  const vars = result.problems.map((p) => p.split(':')[0]).sort();
  t.same(vars, ['DATABASE_URL', 'LOG_LEVEL', 'MQTT_PORT', 'MQTT_TOPIC_ROOT', 'MQTT_URL', 'OFFLINE_AFTER_SECONDS', 'PORT', 'SIGNING_KEY']);
});

t.test('cross-variable checks', async (t) => {
  const result = parseConfig({ MQTT_USERNAME: 'svc' });
  t.notOk(result.ok);
  if (!result.ok) t.match(result.problems.join('\n'), /only used with MQTT_URL/);
});

t.test('the dead-letter topic needs an external broker and its own subtree', async (t) => {
  const embedded = parseConfig({ MQTT_DEAD_LETTER_TOPIC: 'dead' });
  t.notOk(embedded.ok);
  const overlapping = parseConfig({ MQTT_URL: 'mqtt://b', MQTT_DEAD_LETTER_TOPIC: 'presence/dead' });
  t.notOk(overlapping.ok);
  if (!overlapping.ok) t.match(overlapping.problems.join('\n'), /must not overlap presence\//);
  const fine = parseConfig({ MQTT_URL: 'mqtt://b', MQTT_DEAD_LETTER_TOPIC: 'presence-dead' });
  t.ok(fine.ok);
  if (fine.ok && fine.config.mqtt.kind === 'external') t.equal(fine.config.mqtt.deadLetterRoot, 'presence-dead');
});

t.test('production requires a configured signing key', async (t) => {
  const result = parseConfig({ NODE_ENV: 'production' });
  t.notOk(result.ok);
  if (!result.ok) t.match(result.problems.join('\n'), /SIGNING_KEY: required when NODE_ENV=production/);
});

t.test('empty strings count as unset', async (t) => {
  const result = parseConfig({ DATABASE_URL: '', PORT: '' });
  t.ok(result.ok);
  if (result.ok) {
    t.same(result.config.database, { kind: 'embedded' });
    t.equal(result.config.http.port, 8080);
  }
});

t.test('scale-out needs an external broker, a client id per process and PostgreSQL', async (t) => {
  const alone = parseConfig({ MQTT_SHARE_GROUP: 'presence' });
  t.notOk(alone.ok);
  if (!alone.ok) for (const needed of ['needs MQTT_URL', 'needs MQTT_CLIENT_ID', 'needs DATABASE_URL']) t.ok(alone.problems.some((p) => p.includes(needed)), needed);
  const overlapping = parseConfig({ MQTT_URL: 'mqtt://b', MQTT_CLIENT_ID: 'a', DATABASE_URL: 'postgres://db/x', MQTT_SHARE_GROUP: 'g', MQTT_SYNC_TOPIC: 'presence/sync' });
  t.notOk(overlapping.ok, 'the sync topic must not be below the device topics');
  t.notOk(parseConfig({ MQTT_URL: 'mqtt://b', MQTT_CLIENT_ID: 'a', DATABASE_URL: 'postgres://db/x', MQTT_SHARE_GROUP: 'a/b' }).ok, 'a group is one topic level');
  const fine = parseConfig({ MQTT_URL: 'mqtt://b', MQTT_CLIENT_ID: 'node-1', DATABASE_URL: 'postgres://db/x', MQTT_SHARE_GROUP: 'presence' });
  t.ok(fine.ok);
  if (fine.ok && fine.config.mqtt.kind === 'external') t.same(fine.config.mqtt.cluster, { shareGroup: 'presence', syncRoot: 'presence-sync', clientId: 'node-1' });
});

t.test('INGEST_JOURNAL_FSYNC: off by default, true or false, and not with a group (it keeps no journal)', async (t) => {
  const fsync = (env: Record<string, string>) => {
    const result = parseConfig(env);
    return result.ok ? result.config.ingestJournalFsync : result.problems;
  };
  t.equal(fsync({}), false, 'default: written to the kernel only');
  t.equal(fsync({ INGEST_JOURNAL_FSYNC: '' }), false, 'empty means unset');
  t.equal(fsync({ INGEST_JOURNAL_FSYNC: 'true' }), true);
  t.equal(fsync({ INGEST_JOURNAL_FSYNC: 'false' }), false);
  for (const bad of ['yes', '1', 'TRUE', 'always']) {
    const problems = fsync({ INGEST_JOURNAL_FSYNC: bad });
    t.ok(Array.isArray(problems) && problems.length === 1 && problems[0]?.startsWith('INGEST_JOURNAL_FSYNC: '), `${bad} refused`);
  }
  const group = { MQTT_URL: 'mqtt://b', MQTT_CLIENT_ID: 'node-1', DATABASE_URL: 'postgres://db/x', MQTT_SHARE_GROUP: 'presence' };
  t.same(fsync({ ...group, INGEST_JOURNAL_FSYNC: 'true' }), ['INGEST_JOURNAL_FSYNC: a group keeps no ingest journal (the other processes hold what one had not stored)']);
  t.equal(fsync({ ...group, INGEST_JOURNAL_FSYNC: 'false' }), false, 'saying false to a group is harmless');
});

t.test('abuse limits: PER_SECOND/BURST or 0, with defaults; anything else is refused', async (t) => {
  const defaults = parseConfig({});
  if (!defaults.ok) throw new Error('defaults refused');
  t.same(defaults.config.limits, {
    httpAddress: { perSecond: 200, burst: 400 },
    httpToken: { perSecond: 50, burst: 100 },
    mqttDevice: { perSecond: 20, burst: 60 },
    mqttConnect: { perSecond: 20, burst: 200 },
    httpMaxBodyBytes: 65_536,
    httpMaxConnections: 20_000,
    httpMaxStreams: 10_000,
    httpMaxStreamsPerCaller: 8,
    mqttMaxConnections: 100_000,
  });
  t.equal(defaults.config.rawEventsMaxDays, 30);
  const set = parseConfig({ RATE_LIMIT_HTTP_ADDRESS: '0', RATE_LIMIT_HTTP_TOKEN: ' 5/10 ', RATE_LIMIT_MQTT_DEVICE: '1/1', RATE_LIMIT_MQTT_CONNECT: '2/4', RAW_EVENTS_MAX_DAYS: '0' });
  t.ok(set.ok);
  if (set.ok) {
    t.same(set.config.limits.httpAddress, { perSecond: 0, burst: 0 }, '0 turns it off');
    t.same(set.config.limits.httpToken, { perSecond: 5, burst: 10 });
    t.same(set.config.limits.mqttConnect, { perSecond: 2, burst: 4 });
    t.equal(set.config.rawEventsMaxDays, 0);
  }
  const bad = parseConfig({ RATE_LIMIT_HTTP_ADDRESS: '200', RATE_LIMIT_HTTP_TOKEN: '5/0', RATE_LIMIT_MQTT_DEVICE: '-1/3', RATE_LIMIT_MQTT_CONNECT: '5', HTTP_MAX_BODY_BYTES: '10', RAW_EVENTS_MAX_DAYS: '400' });
  t.notOk(bad.ok);
  if (!bad.ok) for (const name of ['RATE_LIMIT_HTTP_ADDRESS', 'RATE_LIMIT_HTTP_TOKEN', 'RATE_LIMIT_MQTT_DEVICE', 'RATE_LIMIT_MQTT_CONNECT', 'HTTP_MAX_BODY_BYTES', 'RAW_EVENTS_MAX_DAYS']) t.ok(bad.problems.some((p) => p.startsWith(name)), `${name} refused`);
});

t.test('an external OpenID provider: issuer and audience together, https in production', async (t) => {
  const on = parseConfig({ OIDC_ISSUER: 'https://idp.example', OIDC_AUDIENCE: 'presence' });
  t.ok(on.ok);
  if (on.ok) t.same(on.config.oidc, { issuer: 'https://idp.example', audience: 'presence', jwksUrl: undefined, algorithms: ['RS256', 'ES256'], jwksCooldownMs: 30_000, jwksMaxAgeMs: 600_000 });
  const off = parseConfig({});
  t.equal(off.ok && off.config.oidc, undefined);
  const half = parseConfig({ OIDC_ISSUER: 'https://idp.example' });
  t.notOk(half.ok);
  if (!half.ok) t.match(half.problems.join('\n'), /OIDC_ISSUER and OIDC_AUDIENCE/);
  const plain = parseConfig({ NODE_ENV: 'production', OIDC_ISSUER: 'http://idp.example', OIDC_AUDIENCE: 'x' });
  t.notOk(plain.ok);
  if (!plain.ok) t.match(plain.problems.join('\n'), /OIDC_ISSUER: must be https/);
  const hmac = parseConfig({ OIDC_ISSUER: 'https://idp.example', OIDC_AUDIENCE: 'x', OIDC_ALGORITHMS: 'HS256' });
  t.notOk(hmac.ok);
  if (!hmac.ok) t.match(hmac.problems.join('\n'), /OIDC_ALGORITHMS/, 'no HMAC: the provider publishes public keys');
});

t.test('TLS: on by default with a local certificate; files together; plain text only on loopback and never in production', async (t) => {
  const defaults = parseConfig({});
  t.same(defaults.ok && defaults.config.tls, { mode: 'local', names: ['localhost', '127.0.0.1', '::1'] });
  const named = parseConfig({ HOST: 'presence.lan', MQTT_HOST: '192.168.1.20' });
  t.same(named.ok && named.config.tls, { mode: 'local', names: ['localhost', '127.0.0.1', '::1', 'presence.lan', '192.168.1.20'] }, 'listen names are covered');
  const wildcard = parseConfig({ HOST: '0.0.0.0', MQTT_HOST: '::' });
  t.same(wildcard.ok && wildcard.config.tls, { mode: 'local', names: ['localhost', '127.0.0.1', '::1'] }, 'a wildcard address is no name');
  const files = parseConfig({ TLS_CERT_FILE: '/etc/presence/fullchain.pem', TLS_KEY_FILE: '/etc/presence/key.pem' });
  t.same(files.ok && files.config.tls, { mode: 'files', certFile: '/etc/presence/fullchain.pem', keyFile: '/etc/presence/key.pem' });
  for (const loopback of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', '::ffff:127.0.0.1']) {
    t.ok(parseConfig({ TLS: 'off', HOST: loopback }).ok, `TLS=off on ${loopback}`);
  }
  const problems = (env: Record<string, string>) => {
    const result = parseConfig(env);
    return result.ok ? '' : result.problems.join('\n');
  };
  t.match(problems({ TLS_CERT_FILE: '/c.pem' }), /TLS_CERT_FILE and TLS_KEY_FILE: set both or neither/);
  t.match(problems({ TLS: 'off', TLS_CERT_FILE: '/c.pem', TLS_KEY_FILE: '/k.pem' }), /not used with TLS=off/);
  t.match(problems({ TLS: 'off', HOST: '0.0.0.0' }), /TLS: off is only allowed with a loopback HOST .* not 0\.0\.0\.0/);
  t.match(problems({ TLS: 'off', HOST: '127.0.0.1.example.com' }), /loopback HOST/);
  t.match(problems({ TLS: 'off', MQTT_HOST: '10.0.0.5' }), /loopback MQTT_HOST/);
  t.ok(parseConfig({ TLS: 'off', MQTT_HOST: '10.0.0.5', MQTT_URL: 'mqtt://broker' }).ok, 'MQTT_HOST does not matter with an external broker');
  t.match(problems({ TLS: 'off', NODE_ENV: 'production', SIGNING_KEY: '-----BEGIN PRIVATE KEY-----x' }), /TLS: off is refused when NODE_ENV=production/);
  t.match(problems({ TLS: 'maybe' }), /^TLS:/);
});

t.test('WEBHOOK_REFUSE_NETWORKS: parsed once at start; a bad network is a start-up problem', async (t) => {
  const none = parseConfig({});
  t.ok(none.ok && none.config.webhookRefuseNetworks.length === 0, 'none by default');
  const some = parseConfig({ WEBHOOK_REFUSE_NETWORKS: '203.0.113.0/24, 2001:db8::/32' });
  t.ok(some.ok);
  if (some.ok) t.same(some.config.webhookRefuseNetworks.map((n) => `${n.address}/${n.prefix}`), ['203.0.113.0/24', '2001:db8::/32']);
  const bad = parseConfig({ WEBHOOK_REFUSE_NETWORKS: '203.0.113.0/24,203.0.113.0/40' });
  t.notOk(bad.ok);
  if (!bad.ok) t.match(bad.problems, [/^WEBHOOK_REFUSE_NETWORKS: "203.0.113.0\/40" is not a network/]);
});
