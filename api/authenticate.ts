import type { FastifyRequest } from 'fastify';
import type { Directory } from '../core/directory.js';
import { AppError } from '../core/errors.js';
import type { TokenVerifier } from '../core/identity/token-verifier.js';
import { AUDIENCE_API, type Principal, type TokenKind, type Scope } from '../core/identity/tokens.js';

/**
 * Bearer authentication (RFC 6750) for the HTTP API. A token must verify
 * (signature, issuer, audience, expiry) and still name a live subject: a
 * removed watcher's tokens stop working at once.
 */
export class Authenticator {
  constructor(
    private readonly verifier: TokenVerifier,
    private readonly directory: Directory,
    private readonly clock: () => number,
  ) {}

  async require(request: FastifyRequest, kinds: readonly TokenKind[], scope?: Scope): Promise<Principal> {
    const header = request.headers.authorization;
    const match = header ? /^Bearer ([A-Za-z0-9._~+/=-]+)$/.exec(header) : null;
    if (!match?.[1]) throw new AppError('unauthorized');
    const result = await this.verifier.verify(match[1], AUDIENCE_API, this.clock());
    if (!result.ok) throw new AppError('unauthorized', result.reason === 'expired' ? 'The token has expired.' : 'The token is not valid.');
    const principal = result.principal;
    if (!this.isLive(principal)) throw new AppError('unauthorized', 'The token is not valid.');
    if (!kinds.includes(principal.kind)) throw new AppError('forbidden');
    if (scope && !principal.scopes.has(scope)) throw new AppError('forbidden', `The token lacks the scope ${scope}.`);
    return principal;
  }

  /** For long-lived connections: the token has not expired and its subject still exists. */
  stillValid(principal: Principal, now: number): boolean {
    return now < principal.expiresAt && this.isLive(principal);
  }

  private isLive(principal: Principal): boolean {
    switch (principal.kind) {
      case 'watcher':
        return this.directory.activeWatcher(principal.subject) !== undefined;
      case 'owner':
        return this.directory.owner(principal.subject) !== undefined;
      case 'admin':
        return true;
      default:
        return false;
    }
  }
}
