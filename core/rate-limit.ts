import { z } from 'zod';

/**
 * Token buckets, one per key (an address, a bearer token, a device): each
 * holds up to `burst` tokens and refills at `perSecond`; a request takes
 * one. `now` is passed in. Bounded: past `maxKeys`, buckets that have
 * refilled completely (their key has been quiet; forgetting them changes
 * nothing) are dropped, then the oldest ones.
 */
export interface RateLimit {
  /** Sustained rate; 0 turns the limit off. */
  readonly perSecond: number;
  /** Requests allowed at once after a quiet spell. */
  readonly burst: number;
}

/** `200/400`: 200 per second, bursts of 400; `0`: off. One syntax for every limit in the configuration. */
export const rateLimitSchema = z
  .string()
  .trim()
  .regex(/^(0|[1-9]\d{0,9}\/[1-9]\d{0,9})$/, 'must be PER_SECOND/BURST such as 200/400, or 0 for no limit')
  .transform((value): RateLimit => {
    if (value === '0') return { perSecond: 0, burst: 0 };
    const [perSecond, burst] = value.split('/').map(Number);
    return { perSecond: perSecond ?? 0, burst: burst ?? 0 };
  });

interface Bucket {
  tokens: number;
  at: number;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly limit: RateLimit,
    private readonly maxKeys = 100_000,
  ) {}

  get enabled(): boolean {
    return this.limit.perSecond > 0;
  }

  /** Takes one token for `key`: 0 if allowed, else how many ms until one is there (nothing is taken then). */
  take(key: string, now: number): number {
    const { perSecond, burst } = this.limit;
    if (perSecond <= 0) return 0;
    let bucket = this.buckets.get(key);
    if (!bucket) {
      if (this.buckets.size >= this.maxKeys) this.evict(now);
      bucket = { tokens: burst, at: now };
      this.buckets.set(key, bucket);
    } else if (now > bucket.at) {
      bucket.tokens = this.tokensAt(bucket, now);
      bucket.at = now;
    }
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return this.waitFor(bucket.tokens);
  }

  /** How many ms until `key` has a token (0: one is there now), taking nothing. */
  wait(key: string, now: number): number {
    if (this.limit.perSecond <= 0) return 0;
    const bucket = this.buckets.get(key);
    if (!bucket) return 0;
    const tokens = this.tokensAt(bucket, now);
    return tokens >= 1 ? 0 : this.waitFor(tokens);
  }

  /** What a bucket holds at `now`, refilled since it was last used (a clock going back refills nothing). */
  private tokensAt(bucket: Bucket, now: number): number {
    return now > bucket.at ? Math.min(this.limit.burst, bucket.tokens + ((now - bucket.at) * this.limit.perSecond) / 1000) : bucket.tokens;
  }

  /** ms until a bucket holding `tokens` (< 1) has one. */
  private waitFor(tokens: number): number {
    return Math.ceil(((1 - tokens) * 1000) / this.limit.perSecond);
  }

  get size(): number {
    return this.buckets.size;
  }

  private evict(now: number): void {
    for (const [key, bucket] of this.buckets) {
      if (this.tokensAt(bucket, now) >= this.limit.burst) this.buckets.delete(key);
    }
    // Still full of busy keys: the oldest go (each comes back with a full bucket, a small gift to an abuser with that many keys).
    for (const key of this.buckets.keys()) {
      if (this.buckets.size < this.maxKeys * 0.9) break;
      this.buckets.delete(key);
    }
  }
}
