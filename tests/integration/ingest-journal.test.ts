import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connectAsync } from 'mqtt';
import pg from 'pg';
import t from 'tap';
import { parseConfig } from '../../core/config.js';
import { MQTT_TEST_URL, createTestDatabase, projectRoot, tempDir, uniqueName, waitFor } from '../helpers/env.js';
import { NO_RATE_LIMITS, startTestService } from '../helpers/service.js';

/**
 * A single process acknowledges a device's QoS 1 message (PUBACK) before
 * the write-behind stores it. The ingest journal (ingest/ingest-journal.ts)
 * closes that window: here the write-behind is slowed to a minute, events
 * are published and acknowledged, the process is killed with SIGKILL, and
 * the restarted process must store every acknowledged event, although the
 * broker will never deliver them again. QoS 0 messages are never
 * acknowledged (at most once): they are applied, not journaled.
 */
const DEVICES = 40;
const QOS0 = 10;
const entry = join(projectRoot, 'dist', 'bin', 'start.js');

// With the journal flushed to the disk too (INGEST_JOURNAL_FSYNC=true): the
// same path, each sync followed by fdatasync (tests/integration/ingest-journal-fsync.test.ts
// shows the calls).
for (const fsync of ['false', 'true']) t.test(`acknowledged events survive a SIGKILL before the write-behind ran (INGEST_JOURNAL_FSYNC=${fsync})`, async (t) => {
  const databaseUrl = await createTestDatabase(t);
  const signingKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const topicRoot = uniqueName('journal');
  const common = { DATABASE_URL: databaseUrl, MQTT_URL: MQTT_TEST_URL, MQTT_TOPIC_ROOT: topicRoot, SIGNING_KEY: signingKey, NODE_ENV: 'test', TLS: 'off' };

  const seedConfig = parseConfig({ ...common, ...NO_RATE_LIMITS, PORT: '0', LOG_LEVEL: 'silent', DATA_DIR: await tempDir(t), MQTT_CLIENT_ID: uniqueName('seed') });
  if (!seedConfig.ok) throw new Error(seedConfig.problems.join('; '));
  const seed = await startTestService(t, seedConfig.config);
  await seed.api('POST', '/v1/admin/owners', { token: seed.adminToken, body: { handle: 'kim' } });
  const devices: { id: string; topic: string }[] = [];
  for (let d = 0; d < DEVICES; d++) {
    devices.push((await (await seed.api('POST', '/v1/admin/devices', { token: seed.adminToken, body: { owner: 'kim', class: 'sensor' } })).json()) as { id: string; topic: string });
  }
  await seed.close();

  const dataDir = await tempDir(t);
  const clientId = uniqueName('journal-svc');
  let out = '';
  const start = async (): Promise<ChildProcess> => {
    out = '';
    const child = spawn(process.execPath, [entry], {
      env: { PATH: process.env.PATH ?? '', ...NO_RATE_LIMITS, ...common, PORT: '0', DATA_DIR: dataDir, MQTT_CLIENT_ID: clientId, PERSIST_INTERVAL_MS: '60000', INGEST_JOURNAL_FSYNC: fsync, LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    await waitFor(() => out.includes('presence service ready'), 'the service to be ready', 30_000).catch((error: unknown) => {
      throw new Error(`${String(error)}; its output: ${out.slice(-2000)}`);
    });
    return child;
  };

  const first = await start();
  const publisher = await connectAsync(MQTT_TEST_URL, { clientId: uniqueName('pub'), clean: true });
  t.teardown(() => publisher.endAsync());
  const at = Date.now();
  // One event per device: each stays visible in the stored state.
  await Promise.all(
    devices.map((device, i) => publisher.publishAsync(device.topic, JSON.stringify({ kind: 'battery', at: new Date(at + i).toISOString(), level: 50, charging: false }), { qos: 1 })),
  );
  // And a few at QoS 0 (another kind of event, so they can be told apart).
  await Promise.all(
    devices.slice(0, QOS0).map((device, i) => publisher.publishAsync(device.topic, JSON.stringify({ kind: 'call', at: new Date(at + i).toISOString(), state: 'in-call' }), { qos: 0 })),
  );
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  t.teardown(() => db.end());
  const stored = async () => {
    const { rows } = await db.query<{ n: number }>(`select count(*)::int as n from presence_state, jsonb_array_elements(signals) s where s->'event'->>'kind' = 'battery'`);
    return rows[0]?.n ?? 0;
  };
  const journalDir = join(dataDir, 'ingest-journal');
  // The service applied (and so, within the same event-loop turn, journaled
  // and acknowledged) every event: its own counter says so.
  const httpUrl = (JSON.parse(out.split('\n').find((l) => l.includes('presence service ready')) ?? '{}') as { httpUrl: string }).httpUrl;
  await waitFor(async () => {
    const metrics = await (await fetch(`${httpUrl}/metrics`)).text();
    return new RegExp(`^presence_ingest_messages_total ${DEVICES + QOS0}$`, 'm').test(metrics);
  }, 'the service to apply every event');
  // One more turn for the acknowledgements to leave.
  await new Promise((resolve) => setTimeout(resolve, 100));
  const journaled = readdirSync(journalDir)
    .map((file) => readFileSync(join(journalDir, file), 'utf8'))
    .join('');
  t.equal(journaled.match(/"kind":"battery"/g)?.length, DEVICES, 'every acknowledged event is journaled');
  t.notOk(journaled.includes('"kind":"call"'), 'the QoS 0 events are not');
  first.kill('SIGKILL');
  await new Promise((resolve) => first.once('exit', resolve));
  t.equal(await stored(), 0, 'nothing was written by the write-behind before the kill');

  await start();
  await waitFor(async () => (await stored()) === DEVICES, 'every acknowledged event to be stored after the restart', 15_000);
  t.match(out, /ingest journal replayed and stored/);
  t.pass(`all ${DEVICES} events stored after SIGKILL`);
  const left = readdirSync(journalDir);
  t.ok(left.length <= 1, 'the replayed segments are deleted once stored');
});
