import { SignJWT, UnsecuredJWT, base64url } from 'jose';
import t from 'tap';
import { generateSigningKeyPem, signingKeyFromPem } from '../../core/identity/signing-key.js';
import { TokenVerifier } from '../../core/identity/token-verifier.js';
import { AUDIENCE_API, AUDIENCE_MQTT, issueToken, verifyToken } from '../../core/identity/tokens.js';

const NOW = Date.parse('2026-05-04T10:00:00Z');
const key = await signingKeyFromPem(await generateSigningKeyPem());
const otherKey = await signingKeyFromPem(await generateSigningKeyPem());
const issuer = 'presence-test';
const expect = (audience = AUDIENCE_API, now = NOW) => ({ issuer, audience, now });

t.test('a valid watcher token verifies with its claims', async (t) => {
  const { token, expiresAt } = await issueToken(key, issuer, { kind: 'watcher', subject: 'w1', scopes: ['presence:read'], ttlSeconds: 60 }, NOW);
  const result = await verifyToken(key.publicKey, token, expect());
  t.ok(result.ok);
  if (result.ok) {
    t.equal(result.principal.kind, 'watcher');
    t.equal(result.principal.subject, 'w1');
    t.ok(result.principal.scopes.has('presence:read'));
    t.equal(result.principal.expiresAt, expiresAt);
  }
});

t.test('refuses alg: none', async (t) => {
  const unsecured = new UnsecuredJWT({ kind: 'watcher', scope: 'presence:read' })
    .setIssuer(issuer)
    .setAudience(AUDIENCE_API)
    .setSubject('w1')
    .setIssuedAt(NOW / 1000)
    .setExpirationTime(NOW / 1000 + 60)
    .encode();
  t.same(await verifyToken(key.publicKey, unsecured, expect()), { ok: false, reason: 'invalid' });
});

t.test('refuses a token signed by another key', async (t) => {
  const { token } = await issueToken(otherKey, issuer, { kind: 'watcher', subject: 'w1', ttlSeconds: 60 }, NOW);
  t.same(await verifyToken(key.publicKey, token, expect()), { ok: false, reason: 'invalid' });
});

t.test('refuses an HS256 token keyed with the public key bytes (algorithm confusion)', async (t) => {
  const secret = new TextEncoder().encode(JSON.stringify(await crypto.subtle.exportKey('jwk', key.publicKey)));
  const forged = await new SignJWT({ kind: 'admin', scope: 'admin' })
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer(issuer)
    .setAudience(AUDIENCE_API)
    .setSubject('x')
    .setIssuedAt(NOW / 1000)
    .setExpirationTime(NOW / 1000 + 60)
    .sign(secret);
  t.same(await verifyToken(key.publicKey, forged, expect()), { ok: false, reason: 'invalid' });
});

t.test('refuses an expired token, and one exactly at expiry', async (t) => {
  const { token } = await issueToken(key, issuer, { kind: 'watcher', subject: 'w1', ttlSeconds: 60 }, NOW);
  t.same(await verifyToken(key.publicKey, token, expect(AUDIENCE_API, NOW + 61_000)), { ok: false, reason: 'expired' });
  t.same(await verifyToken(key.publicKey, token, expect(AUDIENCE_API, NOW + 60_000)), { ok: false, reason: 'expired' });
});

t.test('refuses a wrong issuer or audience', async (t) => {
  const { token } = await issueToken(key, 'someone-else', { kind: 'watcher', subject: 'w1', ttlSeconds: 60 }, NOW);
  t.same(await verifyToken(key.publicKey, token, expect()), { ok: false, reason: 'invalid' });
  const device = await issueToken(key, issuer, { kind: 'device', subject: 'd1', owner: 'o1', ttlSeconds: 60 }, NOW);
  t.same(await verifyToken(key.publicKey, device.token, expect(AUDIENCE_API)), { ok: false, reason: 'invalid' }, 'device token on HTTP');
  t.ok((await verifyToken(key.publicKey, device.token, expect(AUDIENCE_MQTT))).ok, 'device token on MQTT');
});

t.test('refuses a tampered payload', async (t) => {
  const { token } = await issueToken(key, issuer, { kind: 'watcher', subject: 'w1', ttlSeconds: 60 }, NOW);
  const [h, p, s] = token.split('.') as [string, string, string];
  const claims = JSON.parse(new TextDecoder().decode(base64url.decode(p))) as Record<string, unknown>;
  const tampered = `${h}.${base64url.encode(JSON.stringify({ ...claims, kind: 'admin', scope: 'admin' }))}.${s}`;
  t.same(await verifyToken(key.publicKey, tampered, expect()), { ok: false, reason: 'invalid' });
  t.same(await verifyToken(key.publicKey, 'not.a.jwt', expect()), { ok: false, reason: 'invalid' });
});

t.test('the verifier cache still honours expiry and audience', async (t) => {
  const verifier = new TokenVerifier(key.publicKey, issuer);
  const { token } = await issueToken(key, issuer, { kind: 'watcher', subject: 'w1', ttlSeconds: 60 }, NOW);
  t.ok((await verifier.verify(token, AUDIENCE_API, NOW)).ok);
  t.ok((await verifier.verify(token, AUDIENCE_API, NOW + 59_000)).ok, 'cached hit');
  t.notOk((await verifier.verify(token, AUDIENCE_MQTT, NOW)).ok, 'cache keyed by audience');
  t.same(await verifier.verify(token, AUDIENCE_API, NOW + 60_000), { ok: false, reason: 'expired' }, 'cached entry expires');
});

t.test('peek answers from the cache only, and the cache stays bounded', async (t) => {
  const verifier = new TokenVerifier(key.publicKey, issuer, 2);
  const tokens = await Promise.all(['w1', 'w2', 'w3'].map(async (subject) => (await issueToken(key, issuer, { kind: 'watcher', subject, ttlSeconds: 60 }, NOW)).token));
  const [first, second, third] = tokens as [string, string, string];
  t.equal(verifier.peek(first, AUDIENCE_API, NOW), undefined, 'never verified: nothing cached');
  for (const token of tokens) t.ok((await verifier.verify(token, AUDIENCE_API, NOW)).ok);
  t.equal(verifier.peek(first, AUDIENCE_API, NOW), undefined, 'the oldest went when the third came');
  t.match(verifier.peek(second, AUDIENCE_API, NOW), { subject: 'w2' });
  t.match(verifier.peek(third, AUDIENCE_API, NOW), { subject: 'w3' });
  t.equal(verifier.peek(third, AUDIENCE_MQTT, NOW), undefined, 'per audience');
  t.equal(verifier.peek(third, AUDIENCE_API, NOW + 60_000), 'expired');
  t.equal(verifier.peek(third, AUDIENCE_API, NOW), undefined, 'an expired entry is dropped');
});
