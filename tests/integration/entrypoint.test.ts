import { spawn } from 'node:child_process';
import { join } from 'node:path';
import t from 'tap';
import { createTestDatabase, projectRoot, tempDir, waitFor } from '../helpers/env.js';

/** The real `npm start` entry point, as an operator runs it. */
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

t.test('a broken configuration is refused with every problem listed', async (t) => {
  const proc = start({ PORT: 'http', DATABASE_URL: 'mysql://db', OFFLINE_AFTER_SECONDS: '0' });
  t.equal(await proc.exited, 2);
  const err = proc.err();
  t.match(err, /invalid configuration/);
  for (const name of ['PORT', 'DATABASE_URL', 'OFFLINE_AFTER_SECONDS']) t.match(err, new RegExp(`- ${name}:`));
});

t.test('an unreachable broker fails the start with a clear message', async (t) => {
  const proc = start({ DATA_DIR: await tempDir(t), DATABASE_URL: await createTestDatabase(t), MQTT_URL: 'mqtt://127.0.0.1:1', PORT: '0', LOG_LEVEL: 'silent' });
  t.equal(await proc.exited, 1);
  t.match(proc.err(), /could not start: cannot use MQTT broker mqtt:\/\/127\.0\.0\.1:1.*ECONNREFUSED/);
});

t.test('starts, serves, and stops cleanly on SIGTERM', async (t) => {
  const proc = start({
    DATA_DIR: await tempDir(t),
    DATABASE_URL: await createTestDatabase(t),
    PORT: '0',
    MQTT_PORT: '0',
    LOG_LEVEL: 'info',
    // Plain fetch() below; the default (HTTPS with a local CA) is started and proven in tls.test.ts.
    TLS: 'off',
  });
  t.teardown(() => {
    if (proc.child.exitCode === null) proc.child.kill('SIGKILL');
  });
  const ready = await waitFor(() => /"msg":"presence service ready"/.test(proc.out()) && proc.out(), 'the service to be ready', 20_000);
  const line = ready.split('\n').find((l) => l.includes('presence service ready')) ?? '';
  const { httpUrl } = JSON.parse(line) as { httpUrl: string };
  const health = await fetch(`${httpUrl}/readyz`);
  t.equal(health.status, 200);
  const metrics = await (await fetch(`${httpUrl}/metrics`)).text();
  t.match(metrics, /presence_ingest_rejected_total\{reason="malformed_json"\} 0/);
  proc.child.kill('SIGTERM');
  t.equal(await proc.exited, 0, 'exit code 0 after a graceful shutdown');
  t.match(proc.out(), /shutting down/);
});
