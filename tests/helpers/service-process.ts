import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { Test } from 'tap';
import { issueToken } from '../../core/identity/tokens.js';
import { generateSigningKeyPem, signingKeyFromPem } from '../../core/identity/signing-key.js';
import { createTestDatabase, projectRoot, tempDir, waitFor } from './env.js';
import { startPrivateBroker } from './mosquitto.js';
import { NO_RATE_LIMITS } from './service.js';

/**
 * The service as an operator runs it: the compiled entry point in a child
 * process, so a test can SIGKILL it and start it again (a supervisor's
 * restart) with the same environment. Killed when the test ends.
 */
export interface ServiceProcess {
  readonly child: ChildProcess;
  readonly url: string;
  /** Its stdout and stderr (the last 64 KiB), for failure messages. */
  readonly output: () => string;
  readonly exited: boolean;
  /** SIGKILL, then waits for the exit. */
  kill(): Promise<void>;
  /** SIGTERM (a clean stop: writes pending state), then waits for the exit. */
  stop(): Promise<void>;
}

const entry = join(projectRoot, 'dist', 'bin', 'start.js');

export async function spawnService(t: Test, env: Record<string, string>): Promise<ServiceProcess> {
  const child = spawn(process.execPath, [entry], {
    env: { PATH: process.env.PATH ?? '', ...NO_RATE_LIMITS, NODE_ENV: 'test', TLS: 'off', PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const append = (d: Buffer) => (out = (out + d.toString()).slice(-65_536));
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  const exit = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const running = () => child.exitCode === null && child.signalCode === null;
  t.teardown(async () => {
    if (running()) child.kill('SIGKILL');
    await exit;
  });
  const ready = await waitFor(() => out.split('\n').find((l) => l.includes('presence service ready')) ?? (!running() && 'exited'), 'the service to be ready', 30_000).catch(
    (error: unknown) => {
      throw new Error(`${String(error)}; its output: ${out.slice(-2000)}`);
    },
  );
  if (ready === 'exited') throw new Error(`the service exited at start (${child.exitCode ?? child.signalCode}): ${out.slice(-2000)}`);
  const { httpUrl } = JSON.parse(ready) as { httpUrl: string };
  return {
    child,
    url: httpUrl,
    output: () => out,
    get exited() {
      return !running();
    },
    kill: async () => {
      if (running()) child.kill('SIGKILL');
      await exit;
    },
    stop: async () => {
      if (running()) child.kill('SIGTERM');
      await exit;
    },
  };
}

/** A signing key for SIGNING_KEY, and an admin token it signs (valid for an hour). */
export async function adminCredentials(issuer = 'presence-service'): Promise<{ signingKeyPem: string; adminToken: string }> {
  const signingKeyPem = await generateSigningKeyPem();
  const { token } = await issueToken(await signingKeyFromPem(signingKeyPem), issuer, { kind: 'admin', subject: 'test', scopes: ['admin'], ttlSeconds: 3600 }, Date.now());
  return { signingKeyPem, adminToken: token };
}

/** One JSON call to a service process: status, headers and parsed body ({} when empty). */
export type JsonCall = (
  method: string,
  path: string,
  token: string,
  body?: unknown,
  headers?: Record<string, string>,
) => Promise<{ status: number; headers: Headers; body: Record<string, unknown> }>;

export interface GroupMember {
  readonly service: ServiceProcess;
  readonly call: JsonCall;
}

/**
 * A scale-out group (MQTT_SHARE_GROUP) of `size` real processes on one
 * private Mosquitto and one test database, started one after the other
 * (the first migrates the database), with an admin token and, per member,
 * a JSON caller (Accept: application/json, so presence reads answer JSON).
 */
export async function startGroup(t: Test, size: number, env: Record<string, string> = {}): Promise<{ members: GroupMember[]; databaseUrl: string; brokerUrl: string; adminToken: string }> {
  const broker = await startPrivateBroker();
  t.teardown(() => broker.stop());
  const databaseUrl = await createTestDatabase(t);
  const { signingKeyPem, adminToken } = await adminCredentials();
  const members: GroupMember[] = [];
  for (let i = 0; i < size; i++) {
    const service = await spawnService(t, {
      DATABASE_URL: databaseUrl,
      MQTT_URL: broker.url,
      SIGNING_KEY: signingKeyPem,
      MQTT_SHARE_GROUP: 'presence',
      MQTT_CLIENT_ID: `member-${i}`,
      DATA_DIR: await tempDir(t),
      ...env,
    });
    const call: JsonCall = async (method, path, token, body, headers = {}) => {
      const response = await fetch(`${service.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, accept: 'application/json', ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const text = await response.text();
      return { status: response.status, headers: response.headers, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
    };
    members.push({ service, call });
  }
  return { members, databaseUrl, brokerUrl: broker.url, adminToken };
}
