import type { FastifyRequest } from 'fastify';
import type { Directory } from '../core/directory.js';
import { AppError } from '../core/errors.js';
import type { TokenVerifier } from '../core/identity/token-verifier.js';
import { AUDIENCE_API, type Principal, type TokenKind, type Scope } from '../core/identity/tokens.js';

/** How far ahead of this process's clock an admin token's iat may be (the signer's clock may run a little fast). */
const ADMIN_CLOCK_SKEW_MS = 60_000;

/**
 * Bearer authentication (RFC 6750) for the HTTP API. A token must verify
 * (signature, issuer, audience, expiry) and still name a live subject: a
 * removed watcher's tokens stop working at once, and so do tokens issued
 * before their subject's tokens were revoked.
 */
export class Authenticator {
  private readonly adminTokenMaxMs: number;

  constructor(
    private readonly verifier: TokenVerifier,
    private readonly directory: Directory,
    private readonly clock: () => number,
    /** ADMIN_TOKEN_MAX_SECONDS: an admin token made to live longer is refused, whoever signed it. */
    adminTokenMaxSeconds: number,
  ) {
    this.adminTokenMaxMs = adminTokenMaxSeconds * 1000;
  }

  async require(request: FastifyRequest, kinds: readonly TokenKind[], scope?: Scope): Promise<Principal> {
    const header = request.headers.authorization;
    const token = header?.startsWith('Bearer ') ? header.slice(7) : undefined;
    if (!token) throw new AppError('unauthorized');
    const now = this.clock();
    // A token verified before skips the syntax check and the signature: one
    // Map lookup on the hot path (reads, publications).
    let principal = this.verifier.peek(token, AUDIENCE_API, now);
    if (principal === 'expired') throw new AppError('unauthorized', 'The token has expired.');
    if (!principal) {
      // RFC 6750 §2.1 b64token.
      if (!/^[A-Za-z0-9._~+/=-]+$/.test(token)) throw new AppError('unauthorized');
      const result = await this.verifier.verify(token, AUDIENCE_API, now);
      if (!result.ok) throw new AppError('unauthorized', result.reason === 'expired' ? 'The token has expired.' : 'The token is not valid.');
      principal = result.principal;
    }
    if (!this.isLive(principal, now)) throw new AppError('unauthorized', 'The token is not valid.');
    if (!kinds.includes(principal.kind)) throw new AppError('forbidden');
    if (scope && !principal.scopes.has(scope)) throw new AppError('forbidden', `The token lacks the scope ${scope}.`);
    return principal;
  }

  /**
   * The caller, when require() would accept them from the verified-token
   * cache alone: a token verified before, not expired, its subject live,
   * of an accepted kind and with the scope. Anything else is undefined and
   * the request goes the whole way, where require() verifies or refuses it
   * (api/fast-read.ts). No side effect beyond what peek() does to an
   * expired entry (require() then refuses it the same way).
   */
  cached(authorization: string | undefined, kinds: readonly TokenKind[], scope: Scope, now: number): Principal | undefined {
    if (authorization === undefined || !authorization.startsWith('Bearer ')) return undefined;
    const principal = this.verifier.peek(authorization.slice(7), AUDIENCE_API, now);
    if (principal === undefined || principal === 'expired') return undefined;
    if (!this.isLive(principal, now) || !kinds.includes(principal.kind) || !principal.scopes.has(scope)) return undefined;
    return principal;
  }

  /** For long-lived connections: the token has not expired and its subject still exists. */
  stillValid(principal: Principal, now: number): boolean {
    return now < principal.expiresAt && this.isLive(principal, now);
  }

  private isLive(principal: Principal, now: number): boolean {
    // Revoked by its id, or by subject ("sign out everywhere", an admin's revocation): refused on every path, the cached one too.
    if (this.directory.tokenIdRevoked(principal.tokenId)) return false;
    switch (principal.kind) {
      case 'watcher':
        return !this.directory.tokenRevoked(principal.subject, principal.issuedAt) && this.directory.activeWatcher(principal.subject) !== undefined;
      case 'owner':
        return !this.directory.tokenRevoked(principal.subject, principal.issuedAt) && this.directory.owner(principal.subject) !== undefined;
      case 'admin':
        // Admin tokens are signed by whoever holds the signing key, with
        // any lifetime: a long-lived one is refused here, and so is one
        // dated ahead (an iat in the future would stretch the lifetime
        // and outlive a revocation by subject, which compares iat; jose
        // checks iat only with maxTokenAge). The audit (api/admin-audit.ts)
        // needs to know which token acted.
        return (
          principal.issuedAt !== undefined &&
          principal.tokenId !== undefined &&
          principal.issuedAt <= now + ADMIN_CLOCK_SKEW_MS &&
          principal.expiresAt - principal.issuedAt <= this.adminTokenMaxMs &&
          !this.directory.adminTokenRevoked(principal.subject, principal.issuedAt)
        );
      default:
        return false;
    }
  }
}
