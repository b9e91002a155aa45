import { SignJWT, jwtVerify, errors as joseErrors, type CryptoKey, type JWTPayload } from 'jose';
import { z } from 'zod';

/**
 * Tokens are ES256 JWTs made and verified with jose. Verification pins the
 * algorithm (so `alg: none` and HMAC-with-the-public-key tricks fail), the
 * key, the issuer and the audience, and refuses expired tokens.
 *
 * Audiences keep the two doors apart: a device token opens MQTT only, an
 * API token (owner, watcher, app, admin) opens HTTP only.
 */
export const SIGNING_ALG = 'ES256';
export const AUDIENCE_MQTT = 'presence:mqtt';
export const AUDIENCE_API = 'presence:api';
/** The longest lifetime of a token the service issues (POST /v1/admin/tokens). */
export const MAX_TOKEN_TTL_SECONDS = 400 * 24 * 3600;

export const tokenKindSchema = z.enum(['device', 'service', 'owner', 'watcher', 'admin']);
export type TokenKind = z.infer<typeof tokenKindSchema>;

export const scopeSchema = z.enum(['presence:read', 'presence:write', 'status:manage', 'consent:manage', 'settings:manage', 'account:manage', 'admin']);
export type Scope = z.infer<typeof scopeSchema>;

const claimsSchema = z.object({
  sub: z.string().min(1),
  kind: tokenKindSchema,
  /** For device tokens: the owner the device belongs to. */
  owner: z.string().optional(),
  scope: z.string().default(''),
  exp: z.number(),
  /** Required by verifyToken: revocation (Directory.tokenRevoked) compares it. */
  iat: z.number(),
  /** What POST /v1/admin/tokens/revoke takes as a tokenId: a token that could not be named there is refused. */
  jti: z.string().regex(/^[A-Za-z0-9._~:-]{1,200}$/).optional(),
});

export interface Principal {
  readonly kind: TokenKind;
  readonly subject: string;
  readonly owner: string | undefined;
  readonly scopes: ReadonlySet<string>;
  /** ms since the epoch. */
  readonly expiresAt: number;
  /** When the token was issued (its iat, ms since the epoch); undefined when it does not say (a provider's token may not). */
  readonly issuedAt: number | undefined;
  /** The token's id (its jti, RFC 7519 §4.1.7): revocation of this one token, and the admin audit. Undefined when it has none. */
  readonly tokenId: string | undefined;
}

export function audienceFor(kind: TokenKind): string {
  return kind === 'device' || kind === 'service' ? AUDIENCE_MQTT : AUDIENCE_API;
}

export interface IssueRequest {
  readonly kind: TokenKind;
  readonly subject: string;
  readonly owner?: string | undefined;
  readonly scopes?: readonly Scope[];
  readonly ttlSeconds: number;
}

export interface SigningKey {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
}

export async function issueToken(
  key: SigningKey,
  issuer: string,
  request: IssueRequest,
  now: number,
): Promise<{ token: string; expiresAt: number }> {
  const iat = Math.floor(now / 1000);
  const exp = iat + request.ttlSeconds;
  const payload: JWTPayload & { kind: TokenKind; owner?: string; scope?: string } = { kind: request.kind };
  if (request.owner) payload.owner = request.owner;
  if (request.scopes && request.scopes.length > 0) payload.scope = request.scopes.join(' ');
  const token = await new SignJWT(payload)
    .setProtectedHeader({ alg: SIGNING_ALG, kid: key.kid, typ: 'JWT' })
    .setIssuer(issuer)
    .setAudience(audienceFor(request.kind))
    .setSubject(request.subject)
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .setJti(crypto.randomUUID())
    .sign(key.privateKey);
  return { token, expiresAt: exp * 1000 };
}

export type VerifyFailure = 'expired' | 'invalid';

/**
 * Verifies one token. Returns a principal or why not; never throws for a bad
 * token (a bad token is input, not an exceptional condition).
 */
export async function verifyToken(
  publicKey: CryptoKey | ((kid: string | undefined) => Promise<CryptoKey | undefined>),
  token: string,
  expected: { issuer: string; audience: string; now: number },
): Promise<{ ok: true; principal: Principal } | { ok: false; reason: VerifyFailure }> {
  // A key set picks the key by the token's kid (RFC 7515 §4.1.4); an unknown kid verifies nothing.
  const key =
    typeof publicKey === 'function'
      ? async (header: { kid?: string | undefined }) => {
          const found = await publicKey(header.kid);
          if (!found) throw new joseErrors.JWKSNoMatchingKey();
          return found;
        }
      : publicKey;
  try {
    const { payload } = await jwtVerify(token, key, {
      algorithms: [SIGNING_ALG],
      issuer: expected.issuer,
      audience: expected.audience,
      currentDate: new Date(expected.now),
      requiredClaims: ['exp', 'sub', 'iat'],
      clockTolerance: 0,
    });
    const claims = claimsSchema.safeParse(payload);
    if (!claims.success) return { ok: false, reason: 'invalid' };
    if (audienceFor(claims.data.kind) !== expected.audience) return { ok: false, reason: 'invalid' };
    return {
      ok: true,
      principal: {
        kind: claims.data.kind,
        subject: claims.data.sub,
        owner: claims.data.owner,
        scopes: new Set(claims.data.scope.split(' ').filter(Boolean)),
        expiresAt: claims.data.exp * 1000,
        issuedAt: claims.data.iat * 1000,
        tokenId: claims.data.jti,
      },
    };
  } catch (error) {
    return { ok: false, reason: error instanceof joseErrors.JWTExpired ? 'expired' : 'invalid' };
  }
}
