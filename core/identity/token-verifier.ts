import { decodeJwt, type CryptoKey } from 'jose';
import type { OidcVerifier } from './oidc.js';
import { KeySet } from './key-set.js';
import { verifyToken, type Principal, type VerifyFailure } from './tokens.js';

/**
 * Verification with a cache of verified tokens, kept until each expires.
 * Measured on these machines: one ES256 verification per request drops
 * Fastify to about a fifth of bare node:http; with this cache the API pays a
 * Map lookup. Only successes are cached (a forged token costs the forger a
 * full verification each time). Bounded: the oldest entries go first.
 */
export class TokenVerifier {
  /** By audience, then by the token itself: no key string is built per lookup (measured: a ~500-character concatenation per request was 6% of a read). */
  private readonly cache = new Map<string, Map<string, Principal>>();
  private size = 0;

  private readonly key: CryptoKey | ((kid: string | undefined) => Promise<CryptoKey | undefined>);

  /** `keys`: the key set of a running service (rotation), or one public key. */
  constructor(
    keys: CryptoKey | KeySet,
    private readonly issuer: string,
    private readonly maxEntries = 100_000,
    clock: () => number = Date.now,
    /** An external OpenID Connect provider whose tokens are accepted too (core/identity/oidc.ts). */
    private readonly external?: OidcVerifier,
  ) {
    this.key = keys instanceof KeySet ? (kid) => keys.keyFor(kid, clock()) : keys;
    // A retired key's tokens must not live on in the cache.
    if (keys instanceof KeySet) keys.onRetired(() => this.clear());
  }

  /** Forgets every verified token (they are verified again on their next use). */
  clear(): void {
    this.cache.clear();
    this.size = 0;
  }

  /** A cached verification only: the principal, 'expired', or undefined when this token was never verified here. */
  peek(token: string, audience: string, now: number): Principal | 'expired' | undefined {
    const byToken = this.cache.get(audience);
    const cached = byToken?.get(token);
    if (!cached || !byToken) return undefined;
    if (cached.expiresAt > now) return cached;
    byToken.delete(token);
    this.size -= 1;
    return 'expired';
  }

  async verify(
    token: string,
    audience: string,
    now: number,
  ): Promise<{ ok: true; principal: Principal } | { ok: false; reason: VerifyFailure }> {
    const cached = this.peek(token, audience, now);
    if (cached === 'expired') return { ok: false, reason: 'expired' };
    if (cached) return { ok: true, principal: cached };
    const result = this.fromProvider(token) && this.external ? await this.external.verify(token, audience, now) : await verifyToken(this.key, token, { issuer: this.issuer, audience, now });
    if (result.ok) {
      if (this.size >= this.maxEntries) this.evictOne();
      let byToken = this.cache.get(audience);
      if (!byToken) {
        byToken = new Map();
        this.cache.set(audience, byToken);
      }
      if (!byToken.has(token)) this.size += 1;
      byToken.set(token, result.principal);
    }
    return result;
  }

  /** Whether the token says the external provider issued it (checked, of course, by the provider's keys). */
  private fromProvider(token: string): boolean {
    if (!this.external) return false;
    try {
      return decodeJwt(token).iss === this.external.issuer;
    } catch {
      return false;
    }
  }

  /** The oldest entry of the largest audience goes first. */
  private evictOne(): void {
    let largest: Map<string, Principal> | undefined;
    for (const byToken of this.cache.values()) if (!largest || byToken.size > largest.size) largest = byToken;
    const oldest = largest?.keys().next();
    if (largest && oldest && !oldest.done) {
      largest.delete(oldest.value);
      this.size -= 1;
    }
  }
}
