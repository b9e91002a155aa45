import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { createSocket, type RemoteInfo } from 'node:dgram';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { connectAsync } from 'mqtt';
import pg from 'pg';
import t from 'tap';
import { parseConfig } from '../../core/config.js';
import { MQTT_TEST_URL, createTestDatabase, projectRoot, tempDir, uniqueName, waitFor } from '../helpers/env.js';
import { NO_RATE_LIMITS, addRule, addWatcher, ownerToken, startTestService } from '../helpers/service.js';
import { openStream } from '../helpers/sse.js';

/**
 * Operations (issue 7 item 4): the real entry point as an operator runs it,
 * with a SIP server to publish to, a watcher streaming, and events arriving.
 * Its metrics expose the latency histograms, write-behind batches and open
 * streams; on SIGTERM it drains ingest, flushes pending writes (the
 * write-behind is slowed to a minute, so only the shutdown flush can have
 * stored them), removes its SIP publication (Expires: 0, RFC 3903 §4.5),
 * ends the streams, and exits 0; events published during the shutdown are
 * applied on the next start. Everything both runs logged (at info, with
 * refused messages and requests carrying marked values among the traffic)
 * is then searched for payloads, presence values, the handle and tokens.
 */
const DEVICES = 20;
const entry = join(projectRoot, 'dist', 'bin', 'start.js');

/** A SIP presence server reduced to what the gateway needs: 200 OK to every PUBLISH, with an entity tag (RFC 3903 §6). */
async function startSipResponder() {
  const socket = createSocket('udp4');
  const publishes: { expires: number; hasBody: boolean }[] = [];
  let etags = 0;
  socket.on('message', (data: Buffer, from: RemoteInfo) => {
    const text = data.toString('utf8');
    const [head = '', body = ''] = text.split('\r\n\r\n');
    const lines = head.split('\r\n');
    if (!lines[0]?.startsWith('PUBLISH ')) return;
    const header = (name: string) => lines.filter((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`));
    const expires = Number(header('Expires')[0]?.split(':')[1]?.trim() ?? '3600');
    publishes.push({ expires, hasBody: body.length > 0 });
    etags += 1;
    const response = [
      'SIP/2.0 200 OK',
      ...header('Via'),
      ...header('From'),
      `${header('To')[0] ?? 'To: <sip:x@y>'};tag=responder`,
      ...header('Call-ID'),
      ...header('CSeq'),
      `SIP-ETag: e${etags}`,
      `Expires: ${expires}`,
      'Content-Length: 0',
      '',
      '',
    ].join('\r\n');
    socket.send(response, from.port, from.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return { port: socket.address().port, publishes, close: () => new Promise<void>((resolve) => socket.close(() => resolve())) };
}

t.test('metrics, then a graceful SIGTERM: ingest drained, writes flushed, SIP publication removed, streams ended', async (t) => {
  const databaseUrl = await createTestDatabase(t);
  const signingKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const topicRoot = uniqueName('ops');
  const common = { DATABASE_URL: databaseUrl, MQTT_URL: MQTT_TEST_URL, MQTT_TOPIC_ROOT: topicRoot, SIGNING_KEY: signingKey, NODE_ENV: 'test', TLS: 'off' };

  // Provisioned through an in-process service first, as a deploy would find it.
  const seedConfig = parseConfig({ ...common, ...NO_RATE_LIMITS, PORT: '0', LOG_LEVEL: 'silent', DATA_DIR: await tempDir(t), MQTT_CLIENT_ID: uniqueName('seed') });
  if (!seedConfig.ok) throw new Error(seedConfig.problems.join('; '));
  const seed = await startTestService(t, seedConfig.config);
  await seed.api('POST', '/v1/admin/owners', { token: seed.adminToken, body: { handle: 'ops' } });
  const devices: { id: string; topic: string }[] = [];
  for (let d = 0; d < DEVICES; d++) {
    devices.push((await (await seed.api('POST', '/v1/admin/devices', { token: seed.adminToken, body: { owner: 'ops', class: 'sensor' } })).json()) as { id: string; topic: string });
  }
  const audience = await addWatcher(seed, 'SIP presence server', 'app');
  await addRule(seed, 'ops', audience.id, 'allow', { availability: true, activities: false });
  const viewer = await addWatcher(seed, 'Colleague');
  await addRule(seed, 'ops', viewer.id, 'allow');
  const owner = await ownerToken(seed, 'ops');
  if ((await seed.api('PUT', '/v1/me/settings', { token: owner, body: { sipPublish: true } })).status !== 200) throw new Error('settings not saved');
  await seed.close();

  const sip = await startSipResponder();
  t.teardown(() => sip.close());
  const dataDir = await tempDir(t);
  const clientId = uniqueName('ops-svc');
  let out = '';
  /** Everything both runs printed, for the personal-data check at the end. */
  let logged = '';
  const start = async (): Promise<{ child: ChildProcess; url: string }> => {
    out = '';
    const child = spawn(process.execPath, [entry], {
      env: {
        PATH: process.env.PATH ?? '',
        ...NO_RATE_LIMITS,
        ...common,
        PORT: '0',
        DATA_DIR: dataDir,
        MQTT_CLIENT_ID: clientId,
        PERSIST_INTERVAL_MS: '60000',
        SIP_SERVER: `sip:127.0.0.1:${sip.port}`,
        SIP_AUDIENCE: audience.id,
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const append = (d: Buffer) => {
      out += d.toString();
      logged += d.toString();
    };
    child.stdout?.on('data', append);
    child.stderr?.on('data', append);
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    const ready = await waitFor(() => out.split('\n').find((l) => l.includes('presence service ready')), 'the service to be ready', 30_000).catch((error: unknown) => {
      throw new Error(`${String(error)}; its output: ${out.slice(-2000)}`);
    });
    return { child, url: (JSON.parse(ready) as { httpUrl: string }).httpUrl };
  };

  const { child, url } = await start();
  t.equal((await fetch(`${url}/healthz`)).status, 200, 'alive');
  t.equal((await fetch(`${url}/readyz`)).status, 200, 'ready');
  await waitFor(() => sip.publishes.some((p) => p.expires > 0 && p.hasBody), 'the initial SIP PUBLISH');

  const stream = await openStream(`${url}/v1/presence/ops/stream`, viewer.token);
  t.equal(stream.response.status, 200);
  await waitFor(() => stream.events.length >= 1, 'the first stream event');

  const publisher = await connectAsync(MQTT_TEST_URL, { clientId: uniqueName('pub'), clean: true });
  t.teardown(() => publisher.endAsync());
  const at = Date.now();
  const publishAll = (from: number, to: number) =>
    Promise.all(
      devices
        .slice(from, to)
        .map((device, i) => publisher.publishAsync(device.topic, JSON.stringify({ kind: 'battery', at: new Date(at + from + i).toISOString(), level: 60, charging: true }), { qos: 1 })),
    );
  await publishAll(0, DEVICES / 2);
  const metrics = async () => (await fetch(`${url}/metrics`)).text();
  await waitFor(async () => new RegExp(`^presence_ingest_messages_total ${DEVICES / 2}$`, 'm').test(await metrics()), 'the first half applied');

  // What would put personal data in a log if anything logged it: a refused
  // device message carrying a value, refused requests naming the owner and
  // carrying a token, a failed rule change.
  await publisher.publishAsync(devices[0]?.topic ?? '', JSON.stringify({ kind: 'battery', at: new Date().toISOString(), level: 'MARKER-level', charging: 'MARKER-charging' }), { qos: 1 });
  await publisher.publishAsync(devices[0]?.topic ?? '', '{"kind":"call","state":"MARKER-truncated', { qos: 1 });
  t.equal((await fetch(`${url}/v1/presence/ops`, { headers: { authorization: 'Bearer MARKER.token.value' } })).status, 401);
  t.equal((await fetch(`${url}/v1/me/rules`, { method: 'POST', headers: { authorization: `Bearer ${owner}`, 'content-type': 'application/json' }, body: '{"MARKER-rule":' })).status, 400);
  await waitFor(async () => /^presence_ingest_rejected_total\{reason="(invalid_event|malformed_json)"\} [1-9]/m.test(await metrics()), 'the refusals counted');

  const text = await metrics();
  t.match(text, /^# TYPE presence_http_request_duration_seconds histogram$/m);
  t.match(text, /^presence_http_request_duration_seconds_bucket\{le="0.005",method="GET",route="\/healthz",status="2xx"\} \d+$/m, 'request latency by route pattern');
  t.notMatch(text, /route="\/v1\/presence\/ops/, 'routes by pattern: no handle in a label');
  t.match(text, /^presence_http_open_streams 1$/m, 'the open stream is counted');
  t.match(text, /^presence_sip_publish_seconds_count\{kind="initial"\} [1-9]\d*$/m, 'SIP PUBLISH latency');
  t.match(text, /^# TYPE presence_ingest_seconds histogram$/m);
  const ingested = Number(/^presence_ingest_seconds_count (\d+)$/m.exec(text)?.[1] ?? -1);
  t.ok(ingested >= DEVICES / 2 + 2, `ingest latency: every device message, applied or refused, observed (${ingested})`);
  t.match(text, /^presence_ingest_seconds_bucket\{le="0.00001"\} \d+$/m, 'from 10 µs');
  t.match(text, /^presence_sip_publish_total\{kind="initial",status="200"\} 1$/m, 'SIP outcomes');
  t.match(text, /^presence_state_dirty_owners 1$/m, 'write-behind queue depth: the owner awaits the (slowed) write');
  t.match(text, /^# TYPE presence_write_behind_batch_rows histogram$/m);
  t.match(text, /^presence_write_behind_failures_total\{writer="presence_state"\} 0$/m);

  // The second half is published as the stop begins: each is either applied
  // and stored now, or left unacknowledged at the broker for the next start.
  const late = publishAll(DEVICES / 2, DEVICES);
  child.kill('SIGTERM');
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  await late;
  t.equal(code, 0, 'exit code 0');
  t.match(out, /"signal":"SIGTERM".*shutting down/);
  t.notMatch(out, /shutdown step failed/);
  await waitFor(() => stream.ended(), 'the stream to end');
  t.ok(
    sip.publishes.some((p) => p.expires === 0),
    'the SIP publication was removed (Expires: 0)',
  );

  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  t.teardown(() => db.end());
  const stored = async () => {
    const { rows } = await db.query<{ n: number }>(`select count(*)::int as n from presence_state, jsonb_array_elements(signals) s where s->'event'->>'kind' = 'battery'`);
    return rows[0]?.n ?? 0;
  };
  const afterStop = await stored();
  t.ok(afterStop >= DEVICES / 2, `the shutdown flush stored what was applied (${afterStop} of ${DEVICES} events; the write-behind interval is a minute)`);
  const journalDir = join(dataDir, 'ingest-journal');
  t.ok(
    readdirSync(journalDir).every((f) => statSync(join(journalDir, f)).size === 0),
    'the journal holds nothing once everything is stored',
  );

  // The next start gets from the broker what the stop left unacknowledged;
  // a second graceful stop stores it.
  const again = await start();
  await waitFor(
    async () => {
      const applied = Number(/^presence_ingest_messages_total (\d+)$/m.exec(await (await fetch(`${again.url}/metrics`)).text())?.[1] ?? 0);
      return applied + afterStop >= DEVICES;
    },
    'the events left at the broker to be applied',
    15_000,
  );
  again.child.kill('SIGTERM');
  t.equal(await new Promise<number | null>((resolve) => again.child.once('exit', (c) => resolve(c))), 0);
  t.equal(await stored(), DEVICES, `all ${DEVICES} events stored across the graceful restart`);

  // SECURITY.md: logs carry ids and reasons, never payloads, presence
  // values, handles or credentials. Both runs logged at info, through a
  // start, ingest, refusals, a SIP publication, a stream and two shutdowns.
  t.ok(logged.split('\n').filter(Boolean).length >= 10, `the runs logged (${logged.split('\n').filter(Boolean).length} lines)`);
  t.notMatch(logged, /MARKER/, 'nothing of a refused payload, header or body');
  t.notMatch(logged, /"ops"|pres:ops@|\/presence\/ops/, "the owner's handle nowhere");
  // ("level" is pino's own key: the events' battery level is looked for by their kind and fields.)
  t.notMatch(logged, /battery|charging|on-the-phone|"availability"|"activities"/, 'no event or presence values');
  for (const [name, secret] of Object.entries({ owner, viewer: viewer.token, audience: audience.token })) t.notOk(logged.includes(secret.split('.')[2] ?? secret), `no ${name} token`);
  t.notMatch(logged, /PRIVATE KEY/, 'no key');
});
