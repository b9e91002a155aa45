import { errors as joseErrors, jwtVerify, type JWTVerifyGetKey } from 'jose';
import { z } from 'zod';
import { AUDIENCE_API, scopeSchema, type Principal, type Scope, type VerifyFailure } from './tokens.js';

/**
 * Tokens from an external OpenID Connect provider (OIDC Core §2, RFC 9068
 * access tokens): verified against the provider's JWK Set (fetched from its
 * jwks_uri, cached, fetched again for a key id it has not seen, so the
 * provider rotates keys freely), its issuer, the audience configured for
 * this service, and expiry. The (issuer, sub) pair must be linked to an
 * owner or a watcher by an operator (table external_identities): an
 * unlinked account is unknown here, like a forged token.
 *
 * Scopes come from the token (`scope`, space-separated, RFC 8693 §4.2, or
 * `scp`, an array) and are cut to what the linked kind may hold; a token
 * without any is read-only (presence:read), so a provider that issues
 * access tokens without scopes never hands out the right to erase an
 * account.
 */
export interface OidcSettings {
  readonly issuer: string;
  readonly audience: string;
  readonly algorithms: readonly string[];
}

export type LinkedPrincipal = { readonly kind: 'owner' | 'watcher'; readonly id: string };

const claimsSchema = z.object({
  sub: z.string().min(1).max(255),
  exp: z.number(),
  /** Compared with a revocation by subject; a token without it counts as revoked once anything was. */
  iat: z.number().optional(),
  scope: z.string().max(4096).optional(),
  scp: z.array(z.string().max(128)).max(64).optional(),
});

const READ_ONLY: readonly Scope[] = ['presence:read'];

/**
 * JOSE `typ` values of tokens that may open the API: RFC 9068 §2.1 access
 * tokens (`at+jwt`, or its media-type form), and plain `JWT` or none, which
 * most providers still put on access and ID tokens. Any other explicit type
 * names a different kind of token signed by the same keys (a logout token
 * `logout+jwt`, OIDC Back-Channel Logout §2.4; a DPoP proof `dpop+jwt`,
 * RFC 9449 §4.2; a security event `secevent+jwt`, RFC 8417) and is refused,
 * as RFC 8725 §3.11 (explicit typing) advises against such substitution.
 */
const ACCEPTED_TYPES = new Set(['jwt', 'at+jwt', 'application/at+jwt', 'application/jwt']);
function acceptedType(typ: string | undefined): boolean {
  return typ === undefined || ACCEPTED_TYPES.has(typ.toLowerCase());
}

export class OidcVerifier {
  constructor(
    private readonly settings: OidcSettings,
    private readonly keys: JWTVerifyGetKey,
    private readonly linked: (issuer: string, subject: string) => Promise<LinkedPrincipal | undefined>,
    private readonly allowedScopes: Readonly<Record<'owner' | 'watcher', readonly Scope[]>>,
  ) {}

  get issuer(): string {
    return this.settings.issuer;
  }

  async verify(token: string, audience: string, now: number): Promise<{ ok: true; principal: Principal } | { ok: false; reason: VerifyFailure }> {
    // Provider tokens open the HTTP API only, never MQTT.
    if (audience !== AUDIENCE_API) return { ok: false, reason: 'invalid' };
    let payload: unknown;
    let typ: string | undefined;
    try {
      ({
        payload,
        protectedHeader: { typ },
      } = await jwtVerify(token, this.keys, {
        issuer: this.settings.issuer,
        audience: this.settings.audience,
        algorithms: [...this.settings.algorithms],
        currentDate: new Date(now),
        requiredClaims: ['exp', 'sub'],
      }));
    } catch (error) {
      return { ok: false, reason: error instanceof joseErrors.JWTExpired ? 'expired' : 'invalid' };
    }
    if (!acceptedType(typ)) return { ok: false, reason: 'invalid' };
    const claims = claimsSchema.safeParse(payload);
    if (!claims.success) return { ok: false, reason: 'invalid' };
    const link = await this.linked(this.settings.issuer, claims.data.sub);
    if (!link) return { ok: false, reason: 'invalid' };
    const asked = claims.data.scp ?? (claims.data.scope ?? '').split(' ').filter(Boolean);
    const allowed = this.allowedScopes[link.kind];
    const granted = asked.length === 0 ? READ_ONLY : asked.filter((s): s is Scope => scopeSchema.safeParse(s).success && allowed.includes(s as Scope));
    // tokenId undefined: a provider's token is revoked at the provider, or here by unlinking its account or revoking its subject.
    return { ok: true, principal: { kind: link.kind, subject: link.id, owner: undefined, scopes: new Set(granted), expiresAt: claims.data.exp * 1000, issuedAt: claims.data.iat === undefined ? undefined : claims.data.iat * 1000, tokenId: undefined } };
  }
}
