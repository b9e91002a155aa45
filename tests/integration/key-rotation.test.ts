import { generateKeyPairSync } from 'node:crypto';
import t from 'tap';
import { MQTT_TEST_URL, createTestDatabase, tempDir, uniqueName } from '../helpers/env.js';
import { addRule, addWatcher, provision, startTestService, testConfig } from '../helpers/service.js';

/**
 * Signing-key rotation (issue 7): a process started with a new key signs
 * with it, while tokens signed with the old one keep working, on it and on
 * a process still running with the old key (which learns the new key from
 * storage on the first token that names it); both keys are published as a
 * JWK Set until the old one is retired, and then its tokens stop working.
 */
const pem = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const databaseUrl = await createTestDatabase(t);
const common = { DATABASE_URL: databaseUrl, MQTT_URL: MQTT_TEST_URL, MQTT_TOPIC_ROOT: uniqueName('kr'), OWNTRACKS_TOPIC_ROOT: uniqueName('krot') };
const oldKey = pem();
const newKey = pem();

const before = await startTestService(t, await testConfig(t, { ...common, SIGNING_KEY: oldKey, DATA_DIR: await tempDir(t) }));
await provision(before, 'alice');
const walt = await addWatcher(before, 'Walt');
await addRule(before, 'alice', walt.id, 'allow');

const after = await startTestService(t, await testConfig(t, { ...common, SIGNING_KEY: newKey, DATA_DIR: await tempDir(t) }));
const read = (service: typeof before, token: string) => service.api('GET', '/v1/presence/alice', { token, headers: { accept: 'application/json' } });
const jwks = async (service: typeof before) => ((await (await service.api('GET', '/.well-known/jwks.json')).json()) as { keys: { kid: string }[] }).keys.map((k) => k.kid);
const kidOf = (token: string) => (JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString()) as { kid: string }).kid;

t.test('old tokens keep working after the rotation; new ones are signed with the new key', async (t) => {
  t.equal((await read(after, walt.token)).status, 200, 'a token signed with the old key, on the rotated process');
  const issued = await after.api('POST', '/v1/admin/tokens', { token: after.adminToken, body: { kind: 'watcher', subject: walt.id } });
  const fresh = ((await issued.json()) as { token: string }).token;
  t.equal(kidOf(fresh), after.signingKey.kid);
  t.not(kidOf(fresh), kidOf(walt.token));
  t.equal((await read(before, fresh)).status, 200, 'and a new token on a process still running with the old key');
  t.same((await jwks(after)).sort(), [before.signingKey.kid, after.signingKey.kid].sort(), 'both keys published');
  const listed = (await (await after.api('GET', '/v1/admin/keys', { token: after.adminToken })).json()) as { keys: { kid: string; signing: boolean; retiredAt: string | null }[] };
  t.match(listed.keys, [
    { kid: before.signingKey.kid, signing: false, retiredAt: null },
    { kid: after.signingKey.kid, signing: true, retiredAt: null },
  ]);
});

t.test('retiring the old key ends its tokens; the signing key cannot be retired', async (t) => {
  t.equal((await after.api('POST', `/v1/admin/keys/${after.signingKey.kid}/retire`, { token: after.adminToken })).status, 409);
  t.equal((await after.api('POST', `/v1/admin/keys/${before.signingKey.kid}/retire`, { token: after.adminToken })).status, 204);
  t.equal((await after.api('POST', `/v1/admin/keys/${before.signingKey.kid}/retire`, { token: after.adminToken })).status, 404, 'once');
  t.equal((await read(after, walt.token)).status, 401, 'a token signed with the retired key');
  t.same(await jwks(after), [after.signingKey.kid]);
});
