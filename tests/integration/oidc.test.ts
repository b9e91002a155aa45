import t from 'tap';
import { MQTT_TEST_URL, createTestDatabase, uniqueName, waitFor } from '../helpers/env.js';
import { startOidcProvider } from '../helpers/oidc-provider.js';
import { addRule, addWatcher, provision, startTestService, testConfig } from '../helpers/service.js';

/**
 * Tokens from an external OpenID Connect provider (issue 7): discovered
 * through its configuration document, verified with its rotating keys,
 * issuer, audience and expiry; only accounts an operator linked act as an
 * owner or a watcher, with the scopes their token carries.
 */
const provider = await startOidcProvider(t);
// Two processes of a group on one database: an unlink through one ends the account on the other too.
const env = {
  DATABASE_URL: await createTestDatabase(t),
  MQTT_URL: MQTT_TEST_URL,
  MQTT_TOPIC_ROOT: uniqueName('oidc'),
  OWNTRACKS_TOPIC_ROOT: uniqueName('oidcot'),
  MQTT_SHARE_GROUP: uniqueName('oidcg'),
  OIDC_ISSUER: provider.issuer,
  OIDC_AUDIENCE: 'presence-api',
  OIDC_JWKS_COOLDOWN_SECONDS: '0',
  OIDC_JWKS_MAX_AGE_SECONDS: '1',
};
const service = await startTestService(t, await testConfig(t, env));
const peer = await startTestService(t, await testConfig(t, env));
await provision(service, 'alice');
const walt = await addWatcher(service, 'Walt');
await addRule(service, 'alice', walt.id, 'allow');
const link = (body: Record<string, string>) => service.api('POST', '/v1/admin/identities', { token: service.adminToken, body: { issuer: provider.issuer, ...body } });
const mine = (token: string) => service.api('GET', '/v1/me/presence', { token });

t.test('operators link accounts; links are checked', async (t) => {
  t.equal((await link({ subject: 'alice@idp', owner: 'alice' })).status, 201);
  t.equal((await link({ subject: 'walt@idp', watcher: walt.id })).status, 201);
  t.equal((await link({ subject: 'alice@idp', owner: 'alice' })).status, 409, 'linked already');
  t.equal((await link({ subject: 'x', owner: 'nobody' })).status, 404);
  t.equal((await link({ subject: 'x' })).status, 400, 'an owner or a watcher');
  t.equal((await link({ subject: 'x', owner: 'alice', watcher: walt.id })).status, 400, 'not both');
  const listed = (await (await service.api('GET', '/v1/admin/identities', { token: service.adminToken })).json()) as { identities: unknown[] };
  t.match(listed.identities, [
    { issuer: provider.issuer, subject: 'alice@idp', owner: 'alice', watcher: null },
    { issuer: provider.issuer, subject: 'walt@idp', owner: null, watcher: walt.id },
  ]);
});

t.test("a linked account's token acts as its owner or watcher, with the token's scopes", async (t) => {
  const owner = await provider.sign({ sub: 'alice@idp', scope: 'presence:read openid profile' });
  t.equal((await mine(owner)).status, 200, 'discovered, verified, linked');
  t.equal((await service.api('PUT', '/v1/me/settings', { token: owner, body: {} })).status, 403, 'no settings:manage in the token');
  const writer = await provider.sign({ sub: 'alice@idp', scp: ['settings:manage', 'admin'] });
  t.equal((await service.api('GET', '/v1/me/settings', { token: writer })).status, 200, 'scp as an array');
  t.equal((await service.api('GET', '/v1/admin/keys', { token: writer })).status, 403, 'an owner never gets admin, whatever the token says');
  const bare = await provider.sign({ sub: 'alice@idp' });
  t.equal((await service.api('DELETE', '/v1/me?confirm=alice', { token: bare })).status, 403, 'no scopes at all: read-only');
  t.equal((await mine(bare)).status, 200);
  const watcher = await provider.sign({ sub: 'walt@idp' });
  const read = await service.api('GET', '/v1/presence/alice', { token: watcher, headers: { accept: 'application/json' } });
  t.equal(read.status, 200, 'the watcher reads what the rule grants it');
});

t.test('everything else is refused', async (t) => {
  const refused = async (token: string, why: string) => t.equal((await mine(token)).status, 401, why);
  await refused(await provider.sign({ sub: 'stranger@idp', scope: 'presence:read' }), 'an account nobody linked');
  await refused(await provider.sign({ sub: 'alice@idp' }, { audience: 'another-api' }), 'another audience');
  await refused(await provider.sign({ sub: 'alice@idp' }, { expiresIn: Math.floor(Date.now() / 1000) - 10 }), 'expired');
  await refused(await provider.sign({ sub: 'alice@idp' }, { issuer: 'https://evil.example' }), 'another issuer (so not even checked against the provider)');
  const good = await provider.sign({ sub: 'alice@idp' });
  const [h, p] = good.split('.');
  await refused(`${h}.${p}.${'A'.repeat(342)}`, 'a forged signature');
  const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${p}.`;
  await refused(none, 'alg none');
  // RFC 8725 §3.11: other kinds of token signed by the same provider keys are not access tokens.
  await refused(await provider.sign({ sub: 'alice@idp' }, { typ: 'logout+jwt' }), 'a logout token');
  await refused(await provider.sign({ sub: 'alice@idp' }, { typ: 'dpop+jwt' }), 'a DPoP proof');
  t.equal((await service.api('GET', '/v1/me/presence', { token: await provider.sign({ sub: 'alice@idp' }, { typ: 'JWT' }) })).status, 200, 'typ JWT (most providers) is accepted');
  t.equal((await service.api('GET', '/v1/me/presence', { token: good })).status, 200, 'the genuine token still works');
});

t.test('the key set is cached: new tokens signed with known keys do not fetch it again', async (t) => {
  await mine(await provider.sign({ sub: 'alice@idp', jti: 'warm' }));
  const before = provider.jwksFetches();
  const started = Date.now();
  // Each token is new (its own jti), so each is verified, not found in the verified-token cache.
  for (let i = 0; i < 30; i++) t.equal((await mine(await provider.sign({ sub: 'alice@idp', jti: `cached-${i}` }))).status, 200);
  const elapsed = Date.now() - started;
  // OIDC_JWKS_MAX_AGE_SECONDS is 1 here: at most one fetch per second of the run, against one per verification without a cache.
  const fetched = provider.jwksFetches() - before;
  t.ok(fetched <= 1 + Math.floor(elapsed / 1000), `30 verifications in ${elapsed} ms fetched the key set ${fetched} time(s)`);
});

t.test('the provider rotates its keys: new keys are fetched, dropped keys stop working', async (t) => {
  const before = provider.jwksFetches();
  await provider.rotate();
  const fresh = await provider.sign({ sub: 'alice@idp' });
  t.equal((await mine(fresh)).status, 200, 'a token with the new key');
  t.ok(provider.jwksFetches() > before, 'the key set was fetched again for the unknown kid');
  const withOld = await provider.sign({ sub: 'alice@idp', jti: 'old-1' }, { key: 'old' });
  t.equal((await mine(withOld)).status, 200, 'the old key still published: still good');
  const lateOld = await provider.sign({ sub: 'alice@idp', jti: 'old-2' }, { key: 'old' });
  provider.dropOld();
  // The service's copy of the key set is older than OIDC_JWKS_MAX_AGE_SECONDS (1 s here) by then: fetched again, without the old key.
  await new Promise((resolve) => setTimeout(resolve, 1100));
  t.equal((await mine(lateOld)).status, 401, 'a token signed with the dropped key, first seen after the drop');
  t.equal((await mine(await provider.sign({ sub: 'alice@idp', jti: 'new-2' }))).status, 200, 'the current key still works');
});

t.test('unlinking ends the account at once here, and on the other processes of the group', async (t) => {
  const token = await provider.sign({ sub: 'walt@idp' });
  await waitFor(async () => (await peer.api('GET', '/v1/presence/alice', { token })).status === 200 || undefined, 'the peer to know the rule');
  t.equal((await service.api('GET', '/v1/presence/alice', { token })).status, 200);
  t.equal((await peer.api('GET', '/v1/presence/alice', { token })).status, 200, 'verified and cached on the peer');
  t.equal((await service.api('DELETE', `/v1/admin/identities?issuer=${encodeURIComponent(provider.issuer)}&subject=walt%40idp`, { token: service.adminToken })).status, 204);
  t.equal((await service.api('GET', '/v1/presence/alice', { token })).status, 401);
  await waitFor(async () => (await peer.api('GET', '/v1/presence/alice', { token })).status === 401 || undefined, 'the peer to refuse it');
  const owner = await provider.sign({ sub: 'alice@idp' });
  t.equal((await peer.api('GET', '/v1/me/presence', { token: owner })).status, 200, 'a linked account still works there (verified again)');
});
