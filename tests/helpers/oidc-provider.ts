import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose';
import type { Test } from 'tap';

/**
 * A stand-in OpenID Connect provider for tests, on an ephemeral port: a
 * discovery document (OpenID Connect Discovery 1.0 §4) and a JWK Set,
 * RS256 keys that can be rotated, and a signer for access tokens. Counts
 * the JWK Set fetches, so a test can see the relying party's cache at work.
 */
export interface OidcProvider {
  readonly issuer: string;
  readonly jwksUrl: string;
  /** Fetches of the JWK Set so far. */
  readonly jwksFetches: () => number;
  /** An access token signed with the current key (or `key: 'old'` for the previous one). */
  sign(claims: Record<string, unknown>, options?: { audience?: string; expiresIn?: string | number; issuer?: string; key?: 'current' | 'old'; typ?: string }): Promise<string>;
  /** A new current key; the old one stays published until dropOld(). */
  rotate(): Promise<void>;
  dropOld(): void;
}

interface Key {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly jwk: JWK;
}

async function newKey(): Promise<Key> {
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  const kid = crypto.randomUUID();
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' } };
}

export async function startOidcProvider(t: Test): Promise<OidcProvider> {
  let current = await newKey();
  let old: Key | undefined;
  let fetches = 0;
  const server = createServer((request, response) => {
    const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    if (request.url === '/.well-known/openid-configuration') {
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ issuer, jwks_uri: `${issuer}/jwks`, id_token_signing_alg_values_supported: ['RS256'] }));
    } else if (request.url === '/jwks') {
      fetches += 1;
      response.writeHead(200, { 'content-type': 'application/jwk-set+json' }).end(JSON.stringify({ keys: [current.jwk, ...(old ? [old.jwk] : [])] }));
    } else {
      response.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    issuer,
    jwksUrl: `${issuer}/jwks`,
    jwksFetches: () => fetches,
    async sign(claims, options = {}) {
      const key = options.key === 'old' ? old : current;
      if (!key) throw new Error('no old key');
      return new SignJWT(claims)
        .setProtectedHeader({ alg: 'RS256', kid: key.kid, typ: options.typ ?? 'at+jwt' })
        .setIssuer(options.issuer ?? issuer)
        .setAudience(options.audience ?? 'presence-api')
        .setIssuedAt()
        .setExpirationTime(options.expiresIn ?? '5m')
        .sign(key.privateKey);
    },
    async rotate() {
      old = current;
      current = await newKey();
    },
    dropOld() {
      old = undefined;
    },
  };
}
