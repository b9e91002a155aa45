import { buildAuthorization, chooseChallenge, parseChallenges, type DigestChallenge } from './digest.js';
import type { AuthorizationHeader, SipResponse } from './message.js';

/**
 * The client side of digest authentication across requests (RFC 3261
 * §22.2-§22.3, RFC 7616 §3.4-§3.5): answers 401 (WWW-Authenticate ->
 * Authorization) and 407 (Proxy-Authenticate -> Proxy-Authorization)
 * challenges, caches the latest challenge of each kind so later requests
 * carry credentials up front with an incremented nonce count, and decides
 * when to give up (wrong credentials, no credentials, a loop of challenges).
 */

export interface DigestCredentials {
  readonly username: string;
  readonly password: string;
}

/** What was put on a request, so a following challenge can be judged against it. */
export interface SentCredentials {
  readonly headers: readonly AuthorizationHeader[];
  readonly nonces: ReadonlySet<string>;
}

export type ChallengeVerdict = { readonly retry: true; readonly challenge: DigestChallenge } | { readonly retry: false; readonly reason: string };

interface Cached {
  readonly challenge: DigestChallenge;
  nc: number;
}

type AuthHeader = 'Authorization' | 'Proxy-Authorization';

/** Nonces whose cached challenge was dropped, remembered with their last count: a few suffice (one realm per server). */
const MAX_RETIRED = 32;

export class DigestAuthenticator {
  private readonly cache = new Map<AuthHeader, Cached>();
  /**
   * The last nonce count of challenges no longer cached (credentials
   * refused, a challenge without Digest, reset()), by header, realm and
   * nonce: a server that challenges with the same nonce again must not see
   * its counts start over (RFC 7616 §3.4: a repeated count is a replay).
   */
  private readonly retired = new Map<string, number>();

  constructor(private readonly credentials: DigestCredentials | undefined) {}

  /** Credentials for a request from the cached challenges (none before the first challenge). */
  authorize(method: string, uri: string, body?: string): SentCredentials {
    const headers: AuthorizationHeader[] = [];
    const nonces = new Set<string>();
    if (!this.credentials) return { headers, nonces };
    for (const [header, cached] of this.cache) {
      cached.nc += 1;
      headers.push({
        header,
        value: buildAuthorization({ challenge: cached.challenge, username: this.credentials.username, password: this.credentials.password, method, uri, nc: cached.nc, ...(body === undefined ? {} : { body }) }),
      });
      nonces.add(cached.challenge.nonce);
    }
    return { headers, nonces };
  }

  /**
   * Learns from a 401/407. Retry when a usable challenge came with a nonce
   * not yet answered, or the server says the answered nonce was stale
   * (RFC 7616 §3.3 stale=true); give up when the same nonce is refused
   * again without stale (the credentials are wrong), or there are none.
   */
  onChallenge(response: SipResponse, sent: SentCredentials): ChallengeVerdict {
    const header = response.status === 407 ? 'Proxy-Authorization' : 'Authorization';
    const values = response.headers.getAll(response.status === 407 ? 'proxy-authenticate' : 'www-authenticate');
    const challenge = chooseChallenge(parseChallenges(values));
    if (!challenge) {
      this.retire(header);
      return { retry: false, reason: `${response.status} without a usable Digest challenge` };
    }
    if (!this.credentials) return { retry: false, reason: `${response.status}: the server demands credentials and none are configured` };
    if (sent.nonces.has(challenge.nonce) && !challenge.stale) {
      this.retire(header);
      return { retry: false, reason: `${response.status}: credentials refused for realm "${challenge.realm}"` };
    }
    // RFC 7616 §3.4: the nonce count grows with every request that uses a
    // nonce. Several publications challenged with the same nonce (one
    // challenge answered, the others in flight with no credentials) must not
    // start it over, or the server sees its values again (a replay).
    const cached = this.cache.get(header);
    const same = cached !== undefined && cached.challenge.nonce === challenge.nonce && cached.challenge.realm === challenge.realm;
    const nc = same ? cached.nc : (this.retired.get(retiredKey(header, challenge)) ?? 0);
    if (cached && !same) this.retire(header);
    this.cache.set(header, { challenge, nc });
    return { retry: true, challenge };
  }

  /** Forgets cached challenges (e.g. after the credentials were refused); their counts are kept. */
  reset(): void {
    for (const header of [...this.cache.keys()]) this.retire(header);
  }

  private retire(header: AuthHeader): void {
    const cached = this.cache.get(header);
    if (!cached) return;
    this.cache.delete(header);
    const key = retiredKey(header, cached.challenge);
    this.retired.delete(key);
    this.retired.set(key, cached.nc);
    if (this.retired.size > MAX_RETIRED) {
      const oldest = this.retired.keys().next().value;
      if (oldest !== undefined) this.retired.delete(oldest);
    }
  }
}

function retiredKey(header: AuthHeader, challenge: DigestChallenge): string {
  return `${header}\u0000${challenge.realm}\u0000${challenge.nonce}`;
}
