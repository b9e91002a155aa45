import type { IncomingMessage } from 'node:http';
import { RateLimiter, type RateLimit } from '../core/rate-limit.js';

/** Which bucket refused a request, and how long until it has a token again. */
export interface Refusal {
  readonly limit: 'http_address' | 'http_token';
  readonly waitMs: number;
}

/**
 * The per-address and per-token request limits of the HTTP API (token
 * buckets, core/rate-limit.ts): the address first, then the bearer token,
 * keyed by the token as sent, before it is verified, so a flood of forged
 * tokens costs a verification each only within its address's budget.
 *
 * Both ways into the API take from the same buckets: Fastify's onRequest
 * hook, and the cached read path (api/fast-read.ts), which decides a request
 * before Fastify sees it and, when it hands the request on (a refusal, or a
 * read it cannot finish), leaves the decision here so the hook applies it
 * instead of taking a second token.
 */
export class HttpLimits {
  private readonly byAddress: RateLimiter;
  private readonly byToken: RateLimiter;
  private readonly decided = new WeakMap<IncomingMessage, Refusal | null>();

  constructor(limits: { readonly httpAddress: RateLimit; readonly httpToken: RateLimit }) {
    this.byAddress = new RateLimiter(limits.httpAddress);
    this.byToken = new RateLimiter(limits.httpToken);
  }

  get enabled(): boolean {
    return this.byAddress.enabled || this.byToken.enabled;
  }

  /** Takes one token from the address's bucket, then from the bearer token's; nothing is taken from a bucket that refuses. */
  take(address: string | undefined, authorization: string | undefined, now: number): Refusal | undefined {
    const addressWait = this.byAddress.take(address ?? '', now);
    if (addressWait > 0) return { limit: 'http_address', waitMs: addressWait };
    // Keyed by the token's signature end, not the whole header: a client
    // sending distinct 16 KB headers must not fill memory with keys.
    const tokenWait = authorization === undefined ? 0 : this.byToken.take(authorization.slice(-64), now);
    if (tokenWait > 0) return { limit: 'http_token', waitMs: tokenWait };
    return undefined;
  }

  /** The fast path took this request's tokens: the outcome, for the hook if the request is handed on. */
  remember(request: IncomingMessage, refusal: Refusal | undefined): void {
    this.decided.set(request, refusal ?? null);
  }

  /** What the fast path decided: a refusal, null (allowed), or undefined (not decided: take now). */
  decidedFor(request: IncomingMessage): Refusal | null | undefined {
    return this.decided.get(request);
  }
}
