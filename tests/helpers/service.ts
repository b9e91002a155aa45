import type { Test } from 'tap';
import { parseConfig, type Config } from '../../core/config.js';
import { issueToken } from '../../core/identity/tokens.js';
import { startService, type RunningService, type ServiceOptions } from '../../bin/service.js';
import { connectAsync } from 'mqtt';
import { generateKeyPairSync } from 'node:crypto';
import { MQTT_TEST_URL, createTestDatabase, tempDir, uniqueName } from './env.js';

/**
 * Starts a real service for a test: ephemeral HTTP and MQTT ports, its own
 * data directory, silent logs; closed when the test ends.
 */
export interface TestService extends RunningService {
  readonly adminToken: string;
  api(method: string, path: string, options?: { token?: string; body?: unknown; headers?: Record<string, string> }): Promise<Response>;
}

export const NO_RATE_LIMITS = { RATE_LIMIT_HTTP_ADDRESS: '0', RATE_LIMIT_HTTP_TOKEN: '0', RATE_LIMIT_MQTT_DEVICE: '0', RATE_LIMIT_MQTT_CONNECT: '0' } as const;

export async function testConfig(t: Test, env: Record<string, string> = {}): Promise<Config> {
  // A client id of its own: test files run in parallel against one broker,
  // and a shared id would make them take each other's sessions.
  // The rate limits are off unless a test sets them (tests/integration/limits.test.ts does):
  // functional tests poll and retry faster than any real client should.
  // Plain text on loopback (TLS=off) unless a test sets TLS: the handshakes
  // are proven in tests/integration/tls.test.ts, and plain http keeps every
  // other test on the fetch() it has.
  const parsed = parseConfig({ PORT: '0', MQTT_PORT: '0', LOG_LEVEL: 'silent', NODE_ENV: 'test', TLS: 'off', DATA_DIR: await tempDir(t), MQTT_CLIENT_ID: uniqueName('svc'), ...NO_RATE_LIMITS, ...env });
  if (!parsed.ok) throw new Error(parsed.problems.join('; '));
  const { mqtt } = parsed.config;
  if (mqtt.kind === 'external' && mqtt.clientId) {
    // Leave no persistent session behind on a shared broker.
    // Best effort: a private broker may be gone by then.
    const { url, clientId, username, password } = mqtt;
    t.teardown(async () => {
      const client = await connectAsync(url, { clientId, clean: true, reconnectPeriod: 0, connectTimeout: 2000, ...(username ? { username, password } : {}) }).catch(() => undefined);
      await client?.endAsync();
    });
  }
  return parsed.config;
}

/**
 * The settings several processes of one group share (scale-out): a database
 * of their own, the machine's broker with topic roots and a share group of
 * their own, and one signing key, so each process accepts the tokens
 * another issued.
 */
export async function groupEnv(t: Test, prefix: string) {
  return {
    DATABASE_URL: await createTestDatabase(t),
    MQTT_URL: MQTT_TEST_URL,
    MQTT_TOPIC_ROOT: uniqueName(prefix),
    OWNTRACKS_TOPIC_ROOT: uniqueName(`${prefix}ot`),
    MQTT_SHARE_GROUP: uniqueName(`${prefix}g`),
    SIGNING_KEY: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  };
}

export async function startTestService(t: Test, config: Config, options: ServiceOptions = {}): Promise<TestService> {
  const service = await startService(config, options);
  t.teardown(() => service.close());
  const { token: adminToken } = await issueToken(
    service.signingKey,
    config.tokenIssuer,
    { kind: 'admin', subject: 'test', scopes: ['admin'], ttlSeconds: 3600 },
    Date.now(),
  );
  const api: TestService['api'] = (method, path, opts = {}) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    if (opts.body !== undefined) headers['content-type'] ??= 'application/json';
    return fetch(`${service.httpUrl}${path}`, {
      method,
      headers,
      body: opts.body === undefined ? null : typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body),
    });
  };
  return { ...service, adminToken, api };
}

/** Creates an owner, a device, and tokens, through the admin API. */
export async function provision(service: TestService, handle: string) {
  const admin = { token: service.adminToken };
  const owner = (await (await service.api('POST', '/v1/admin/owners', { ...admin, body: { handle } })).json()) as { id: string; entity: string };
  const device = (await (await service.api('POST', '/v1/admin/devices', { ...admin, body: { owner: handle, class: 'phone' } })).json()) as {
    id: string;
    topic: string;
  };
  const deviceToken = (
    (await (await service.api('POST', '/v1/admin/tokens', { ...admin, body: { kind: 'device', subject: device.id } })).json()) as { token: string }
  ).token;
  return { owner, device, deviceToken };
}

export async function addWatcher(service: TestService, name: string, kind: 'person' | 'app' = 'person', domain?: string) {
  const admin = { token: service.adminToken };
  const watcher = (await (await service.api('POST', '/v1/admin/watchers', { ...admin, body: { kind, name, ...(domain ? { domain } : {}) } })).json()) as { id: string };
  const token = ((await (await service.api('POST', '/v1/admin/tokens', { ...admin, body: { kind: 'watcher', subject: watcher.id } })).json()) as { token: string })
    .token;
  return { id: watcher.id, token };
}

export async function addRule(service: TestService, handle: string, watcherId: string, subHandling: 'allow' | 'block' | 'polite-block', transformations: Record<string, boolean | string | string[]> = { availability: true, activities: true }) {
  const response = await service.api('POST', `/v1/admin/owners/${handle}/rules`, {
    token: service.adminToken,
    body: { conditions: { identity: { watchers: [watcherId] } }, actions: { subHandling }, transformations },
  });
  if (response.status !== 201) throw new Error(`rule not created: ${response.status} ${await response.text()}`);
  return (await response.json()) as { id: string };
}

/** An owner token for `handle`, issued through the admin API. */
export async function ownerToken(service: TestService, handle: string): Promise<string> {
  const response = await service.api('POST', '/v1/admin/tokens', { token: service.adminToken, body: { kind: 'owner', subject: handle } });
  return ((await response.json()) as { token: string }).token;
}
