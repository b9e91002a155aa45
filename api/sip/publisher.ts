/*
 * Why a purpose-built client and not a SIP library: the npm SIP libraries
 * we looked at do not fit a server-side publisher. SIP.js and JsSIP are
 * user agents for WebRTC over WebSocket transports; drachtio-srf drives a
 * separate drachtio C++ server; the `sip` package is a 0.0.x release. The
 * surface this gateway needs is small (one method, non-INVITE client
 * transactions over UDP and TCP, digest with MD5 and SHA-256, RFC 3903
 * entity-tag state; no dialogs, no media), and a few hundred lines tested
 * against a real Kamailio are easier to audit than a large dependency
 * driven through corners it was not built for.
 */
import type { DigestAuthenticator } from './credentials.js';
import { newCallId, newTag, parseDeltaSeconds, TOKEN, type SipResponse } from './message.js';
import { SipTransportError, type SipTransport } from './transport.js';

/**
 * RFC 3903 event publication, client side (the event publication agent),
 * one state machine per presentity:
 *
 * - Request-URI and To are the presentity, Event: presence (§4.1);
 * - initial PUBLISH: body, no SIP-If-Match (§4.2);
 * - refresh: SIP-If-Match, no body, before the granted lifetime ends (§4.3);
 * - modify: SIP-If-Match + body (§4.4); remove: SIP-If-Match + Expires: 0 (§4.5);
 * - each 2xx carries the entity tag to use next and the granted lifetime
 *   (§5, §11.3.1); Kamailio issues a new tag on every refresh, so only the
 *   latest is kept;
 * - 412 Conditional Request Failed: the tag is unknown, start over with an
 *   initial PUBLISH of the latest body (§5, §11.2.1);
 * - 423 Interval Too Brief: retry with Min-Expires (§5, RFC 3261 §21.4.17);
 * - 401/407: answer the digest challenge (RFC 3261 §22.2-§22.3);
 * - 5xx, 408, timeouts, transport errors: retry after a bounded exponential
 *   back-off, with the latest body.
 *
 * Requests are serialized per presentity; a body published while another is
 * in flight or waiting replaces the waiting one, so only the latest is sent.
 */

export type PublishKind = 'initial' | 'modify' | 'refresh' | 'remove';

/** One completed PUBLISH transaction (for metrics and audit). */
export interface PublishOutcome {
  readonly presentity: string;
  readonly kind: PublishKind;
  /** Final status code; 0 when no response came (timeout, transport error). */
  readonly status: number;
  /** The entity tag the server issued (2xx). */
  readonly etag?: string;
  /** The lifetime the server granted, in seconds (2xx). */
  readonly expires?: number;
  /** Why it failed, when it did. */
  readonly error?: string;
  /** From sending the request to this outcome (absent when nothing was sent). */
  readonly seconds?: number;
}

/** Time source and timers, injectable for tests. */
export interface Clock {
  now(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export interface BackoffPolicy {
  /** First retry delay (default 1 s). */
  readonly initialMs: number;
  /** Cap (default 60 s). */
  readonly maxMs: number;
}

export interface PublicationOptions {
  /** The presentity's SIP URI: Request-URI and To (RFC 3903 §4.1). */
  readonly presentity: string;
  /** From URI; the presentity by default. */
  readonly fromUri?: string;
  readonly transport: SipTransport;
  readonly authenticator?: DigestAuthenticator;
  /** Requested lifetime in seconds (default 3600). */
  readonly expires?: number;
  readonly userAgent?: string;
  readonly clock?: Clock;
  readonly backoff?: Partial<BackoffPolicy>;
  /** Challenges answered in a row for one publication step before giving up (default 2). */
  readonly maxAuthRounds?: number;
  /**
   * Refresh by re-sending the document (a modify, RFC 3903 §4.4, which also
   * extends the lifetime) instead of a body-less refresh (§4.3). For servers
   * that lose the document on a body-less refresh: Kamailio 5.6 with
   * `publ_cache=2` does. Default false.
   */
  readonly refreshWithBody?: boolean;
  /** When to refresh, given the granted lifetime in seconds (default {@link defaultRefreshDelayMs}). */
  readonly refreshDelayMs?: (grantedSeconds: number) => number;
  readonly onOutcome?: (outcome: PublishOutcome) => void;
}

/**
 * RFC 3903 §4.3: refresh before the lifetime ends. 80 % of it, or 32 s
 * (a full Timer F of retransmissions) before expiry when that is earlier,
 * but never before half of it, nor sooner than MIN_REFRESH_DELAY_MS.
 */
export function defaultRefreshDelayMs(grantedSeconds: number): number {
  const ms = grantedSeconds * 1000;
  return Math.max(MIN_REFRESH_DELAY_MS, ms * 0.5, Math.min(ms * 0.8, ms - 32_000));
}

/** Longest lifetime we accept from a 423's Min-Expires (RFC 3903 configurations top out at a day). */
const MAX_EXPIRES = 86_400;
/**
 * The soonest a refresh follows its grant (defaultRefreshDelayMs). A server may grant less than was
 * asked (RFC 3903 §6 step 4), but a grant of a second would otherwise mean a
 * refresh every half second per presentity: below this the document lapses
 * between refreshes rather than the server being flooded.
 */
export const MIN_REFRESH_DELAY_MS = 10_000;
/** Longest delay a Node timer takes (about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** The longest a Retry-After is honoured (it lengthens the back-off past its cap). */
const MAX_RETRY_AFTER_MS = 3_600_000;
/** PUBLISH requests within one step (auth rounds, 412 restart, 423 retry) before it stops; a guard against loops. */
const MAX_REQUESTS_PER_STEP = 6;

type StepResult = { readonly outcome: PublishOutcome; readonly retry: boolean; readonly retryAfterMs?: number };

interface Waiter {
  readonly gen: number;
  readonly resolve: (outcome: PublishOutcome | undefined) => void;
}

export class Publication {
  readonly presentity: string;
  private readonly fromUri: string;
  private readonly fromTag = newTag();
  private readonly callId = newCallId();
  private cseq = 0;
  private readonly clock: Clock;
  private readonly backoff: BackoffPolicy;
  private readonly maxAuthRounds: number;
  private readonly refreshDelay: (grantedSeconds: number) => number;
  private requestedExpires: number;

  private etag: string | undefined;
  /** When the live publication lapses at the server by itself (clock.now() ms), from the lifetime it granted. */
  private expiresAt = 0;
  /** When the removal being retried first failed (clock.now() ms). */
  private removeFailingSince: number | undefined;
  private body: string | undefined;
  /** Every publish()/remove() call is an intent; waiters resolve once a step covered theirs. */
  private intentGen = 0;
  private bodyGen = 0;
  private sentBodyGen = 0;
  private removeWanted = false;
  private refreshDue = false;
  private refreshTimer: unknown;
  private backoffTimer: unknown;
  private backoffMs = 0;
  private busy = false;
  /** When the current transaction's request was sent (performance.now()), for the outcome's duration. */
  private sentAt: number | undefined;
  private closed = false;
  private waiters: Waiter[] = [];
  private idleWaiters: (() => void)[] = [];
  private doneWaiters: (() => void)[] = [];

  constructor(private readonly options: PublicationOptions) {
    this.presentity = options.presentity;
    this.fromUri = options.fromUri ?? options.presentity;
    this.clock = options.clock ?? systemClock;
    this.backoff = { initialMs: options.backoff?.initialMs ?? 1000, maxMs: options.backoff?.maxMs ?? 60_000 };
    this.maxAuthRounds = options.maxAuthRounds ?? 2;
    this.refreshDelay = options.refreshDelayMs ?? defaultRefreshDelayMs;
    this.requestedExpires = options.expires ?? 3600;
  }

  /** The entity tag of the live publication, if any. */
  get entityTag(): string | undefined {
    return this.etag;
  }

  /** True when nothing is published and nothing is pending. */
  get isIdle(): boolean {
    return !this.busy && this.etag === undefined && !this.hasWork() && this.backoffTimer === undefined;
  }

  /**
   * Publishes a document (initial PUBLISH, or a modify when a publication
   * exists). Resolves with the outcome of the step that carried this body or
   * a newer one; `undefined` when a later remove() made it moot.
   */
  publish(body: string): Promise<PublishOutcome | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    this.removeFailingSince = undefined;
    this.body = body;
    this.bodyGen++;
    this.removeWanted = false;
    return this.enqueue();
  }

  /** Removes the publication (Expires: 0, RFC 3903 §4.5). `undefined` when there was none. */
  remove(): Promise<PublishOutcome | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    this.body = undefined;
    this.sentBodyGen = this.bodyGen;
    this.removeWanted = true;
    // A removal does not wait for a back-off meant for publishing.
    this.clearBackoff();
    return this.enqueue();
  }

  /** Resolves once nothing is published, pending or waiting for a back-off (isIdle), or the publication is disposed. */
  whenDone(): Promise<void> {
    if (this.isIdle || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.doneWaiters.push(resolve));
  }

  /** Resolves when no request is in flight or due now. */
  whenIdle(): Promise<void> {
    if (!this.busy && (!this.hasWork() || this.backoffTimer !== undefined)) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops every timer; pending callers get `undefined`. Does not send anything. */
  dispose(): void {
    this.closed = true;
    this.clock.clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    this.clearBackoff();
    this.settle(Number.POSITIVE_INFINITY, undefined);
    for (const resolve of this.idleWaiters.splice(0)) resolve();
    for (const resolve of this.doneWaiters.splice(0)) resolve();
  }

  private enqueue(): Promise<PublishOutcome | undefined> {
    const gen = ++this.intentGen;
    const promise = new Promise<PublishOutcome | undefined>((resolve) => this.waiters.push({ gen, resolve }));
    this.pump();
    return promise;
  }

  private hasWork(): boolean {
    return this.removeWanted || this.bodyGen > this.sentBodyGen || (this.refreshDue && this.etag !== undefined);
  }

  private nextStep(): PublishKind | undefined {
    if (this.backoffTimer !== undefined) return undefined;
    if (this.removeWanted) {
      if (this.etag !== undefined) return 'remove';
      this.removeWanted = false;
      return undefined;
    }
    if (this.body !== undefined && this.bodyGen > this.sentBodyGen) return this.etag === undefined ? 'initial' : 'modify';
    if (this.refreshDue && this.etag !== undefined) return 'refresh';
    this.refreshDue = false;
    return undefined;
  }

  private pump(): void {
    if (this.busy || this.closed) return;
    const step = this.nextStep();
    if (step === undefined) {
      // Nothing to send now: callers whose intent needs nothing (e.g. remove
      // with no publication) are done; those waiting for a back-off stay.
      if (this.backoffTimer === undefined) this.settle(this.intentGen, undefined);
      for (const resolve of this.idleWaiters.splice(0)) resolve();
      if (this.isIdle) for (const resolve of this.doneWaiters.splice(0)) resolve();
      return;
    }
    this.busy = true;
    void this.runStep(step)
      .catch((error: unknown): StepResult => ({ outcome: { presentity: this.presentity, kind: step, status: 0, error: String(error) }, retry: false }))
      .then((result) => {
        this.busy = false;
        if (this.closed) return;
        // A removal asked for meanwhile goes out now, not after a back-off;
        // a removal that failed itself waits for one like any retry.
        if (result.retry && (!this.removeWanted || step === 'remove')) this.scheduleBackoff(result.retryAfterMs ?? 0);
        this.pump();
      });
  }

  private settle(upToGen: number, outcome: PublishOutcome | undefined): void {
    const keep: Waiter[] = [];
    for (const w of this.waiters) {
      if (w.gen <= upToGen) w.resolve(outcome);
      else keep.push(w);
    }
    this.waiters = keep;
  }

  private emit(outcome: PublishOutcome): void {
    const sentAt = this.sentAt;
    this.sentAt = undefined;
    try {
      this.options.onOutcome?.(sentAt === undefined ? outcome : { ...outcome, seconds: (performance.now() - sentAt) / 1000 });
    } catch {
      // An observer's failure must not break the state machine.
    }
  }

  /** One publication step: a PUBLISH and whatever retries its responses call for (auth, 412, 423). */
  private async runStep(first: PublishKind): Promise<StepResult> {
    let kind = first;
    let expires = kind === 'remove' ? 0 : this.requestedExpires;
    let authRounds = 0;
    let last: PublishOutcome | undefined;
    for (let requests = 0; requests < MAX_REQUESTS_PER_STEP; requests++) {
      const gen = this.intentGen;
      const bodyGen = this.bodyGen;
      const body = kind === 'initial' || kind === 'modify' || (kind === 'refresh' && this.options.refreshWithBody === true) ? this.body : undefined;
      if ((kind === 'initial' || kind === 'modify') && body === undefined) {
        // A removal was asked for while this step waited (a challenge, a
        // 412): the step ends here, and the removal's own step answers every
        // caller, instead of a made-up failure of this one.
        if (this.removeWanted) return { outcome: last ?? { presentity: this.presentity, kind, status: 0, error: 'superseded by a removal' }, retry: false };
        break;
      }
      if (kind !== 'initial' && this.etag === undefined) {
        // The tag went away (a 412 elsewhere, a failed refresh): only a fresh publication can follow.
        if (kind === 'remove' || this.body === undefined) return this.afterRemove(gen, { presentity: this.presentity, kind, status: 0, error: 'no publication' });
        kind = 'initial';
        continue;
      }
      const ifMatch = kind === 'initial' ? undefined : this.etag;
      const uri = this.presentity;
      const sent = this.options.authenticator?.authorize('PUBLISH', uri, body) ?? { headers: [], nonces: new Set<string>() };
      let response: SipResponse;
      this.sentAt = performance.now();
      try {
        response = await this.options.transport.send({
          method: 'PUBLISH',
          requestUri: uri,
          from: { uri: this.fromUri, tag: this.fromTag },
          to: { uri },
          callId: this.callId,
          cseq: ++this.cseq,
          // RFC 3903 §4.1: the event package; presence per RFC 3856.
          event: 'presence',
          expires,
          ...(ifMatch === undefined ? {} : { sipIfMatch: ifMatch }),
          ...(body === undefined ? {} : { body, contentType: 'application/pidf+xml' }),
          ...(sent.headers.length > 0 ? { authorization: sent.headers } : {}),
          ...(this.options.userAgent === undefined ? {} : { userAgent: this.options.userAgent }),
        });
      } catch (error) {
        const code = error instanceof SipTransportError ? error.code : 'network';
        last = { presentity: this.presentity, kind, status: 0, error: error instanceof Error ? `${code}: ${error.message}` : String(error) };
        this.emit(last);
        const retry = code !== 'closed' && code !== 'invalid-request';
        if (kind === 'remove') return retry ? this.removeAgainLater(gen, last) : this.afterRemove(gen, last);
        if (!retry) this.giveUp(kind, bodyGen);
        this.settle(gen, last);
        return { outcome: last, retry };
      }
      const status = response.status;
      if (status >= 200 && status < 300) {
        last = this.accepted(kind, response, expires, bodyGen);
        this.emit(last);
        this.settle(gen, last);
        return { outcome: last, retry: false };
      }
      last = { presentity: this.presentity, kind, status, error: `${status} ${response.reason}` };
      this.emit(last);

      if (status === 401 || status === 407) {
        const verdict = this.options.authenticator?.onChallenge(response, sent) ?? { retry: false as const, reason: `${status}: no credentials configured` };
        if (verdict.retry && ++authRounds <= this.maxAuthRounds) continue;
        last = { ...last, error: verdict.retry ? `${status}: gave up after ${this.maxAuthRounds} challenges in a row` : verdict.reason };
        return this.fail(kind, gen, bodyGen, last);
      }
      if (status === 412 && kind !== 'initial') {
        // The server no longer knows our tag: forget it and start over.
        this.etag = undefined;
        if (kind === 'remove') return this.afterRemove(gen, last);
        kind = 'initial';
        expires = this.requestedExpires;
        continue;
      }
      if (status === 423 && kind !== 'remove') {
        const min = parseDeltaSeconds(response.headers.get('min-expires'));
        if (min !== undefined && min > expires && min <= MAX_EXPIRES) {
          this.requestedExpires = min;
          expires = min;
          continue;
        }
        return this.fail(kind, gen, bodyGen, { ...last, error: `423 without a usable Min-Expires (${response.headers.get('min-expires') ?? 'absent'})` });
      }
      // RFC 3261 §21.5 / §21.4.9: server errors and request timeouts are worth retrying later.
      if (kind === 'remove') return status >= 500 || status === 408 ? this.removeAgainLater(gen, last, response.headers.get('retry-after')) : this.afterRemove(gen, last);
      if (status >= 500 || status === 408) {
        // RFC 3261 §20.33: a Retry-After lengthens (never shortens) the back-off.
        const retryAfter = parseDeltaSeconds(response.headers.get('retry-after')?.split(/[;(\s]/)[0]);
        this.settle(gen, last);
        return { outcome: last, retry: true, ...(retryAfter === undefined ? {} : { retryAfterMs: retryAfter * 1000 }) };
      }
      return this.fail(kind, gen, bodyGen, last);
    }
    last ??= { presentity: this.presentity, kind, status: 0, error: 'nothing to send' };
    return this.fail(kind, this.intentGen, this.bodyGen, { ...last, error: `${last.error ?? ''}; gave up after ${MAX_REQUESTS_PER_STEP} requests` });
  }

  /** 2xx: keep the new tag and the granted lifetime, and schedule the refresh. */
  private accepted(kind: PublishKind, response: SipResponse, requested: number, bodyGen: number): PublishOutcome {
    this.backoffMs = 0;
    if (kind === 'remove') {
      this.forget();
      return { presentity: this.presentity, kind, status: response.status };
    }
    if (kind === 'initial' || kind === 'modify') this.sentBodyGen = Math.max(this.sentBodyGen, bodyGen);
    this.refreshDue = false;
    const given = response.headers.get('sip-etag')?.trim();
    // RFC 3903 §11.3.1: entity-tag = token. Anything else would be sent back in SIP-If-Match as it came.
    const etag = given !== undefined && TOKEN.test(given) ? given : undefined;
    // RFC 3903 §5: the 2xx carries the granted Expires; without one, assume what we asked.
    const granted = parseDeltaSeconds(response.headers.get('expires')) ?? requested;
    if (!etag || granted === 0) {
      this.forget();
      const error = etag ? undefined : given ? `2xx with a SIP-ETag that is not a token (RFC 3903 §11.3.1): ${JSON.stringify(given.slice(0, 40))}` : '2xx without SIP-ETag (RFC 3903 §11.3.1)';
      return { presentity: this.presentity, kind, status: response.status, expires: granted, ...(etag ? { etag } : {}), ...(error ? { error } : {}) };
    }
    this.etag = etag;
    this.expiresAt = this.clock.now() + granted * 1000;
    this.clock.clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    if (!this.closed) {
      // Node timers overflow past 2**31-1 ms (they would fire at once): a
      // server granting years must not cause a refresh storm.
      const delay = Math.min(Math.max(0, this.refreshDelay(granted)), MAX_TIMER_MS);
      this.refreshTimer = this.clock.setTimeout(() => {
        this.refreshTimer = undefined;
        this.refreshDue = true;
        this.pump();
      }, delay);
    }
    return { presentity: this.presentity, kind, status: response.status, etag, expires: granted };
  }

  /**
   * A removal that failed in a way worth retrying (no answer, 5xx, 408):
   * the server may still hold the document, perhaps of an owner who was
   * just erased or whose consent was withdrawn, so it is sent again after
   * a back-off for as long as the publication would otherwise live; after
   * that the server has dropped it by itself.
   */
  private removeAgainLater(gen: number, outcome: PublishOutcome, retryAfterHeader?: string): StepResult {
    const now = this.clock.now();
    // At most a day of retries from the first failure, whatever lifetime the server granted.
    this.removeFailingSince ??= now;
    if (now >= Math.min(this.expiresAt, this.removeFailingSince + MAX_EXPIRES * 1000)) return this.afterRemove(gen, outcome);
    this.settle(gen, outcome);
    const retryAfter = parseDeltaSeconds(retryAfterHeader?.split(/[;(\s]/)[0]);
    return { outcome, retry: true, ...(retryAfter === undefined ? {} : { retryAfterMs: retryAfter * 1000 }) };
  }

  private afterRemove(gen: number, outcome: PublishOutcome): StepResult {
    // Best effort: whatever the answer, the publication ends at the server
    // at the latest when its lifetime runs out.
    this.forget();
    if (this.intentGen === gen || this.body === undefined) this.removeWanted = false;
    this.settle(gen, outcome);
    return { outcome, retry: false };
  }

  private fail(kind: PublishKind, gen: number, bodyGen: number, outcome: PublishOutcome): StepResult {
    this.giveUp(kind, bodyGen);
    this.settle(gen, outcome);
    return { outcome, retry: false };
  }

  /**
   * A definitive failure: do not resend this body; a rejected refresh
   * leaves nothing to refresh. A rejected modify leaves the server holding
   * the document it was to replace, which is older than what the owner
   * shows now and may show more (a modify is how a narrowed view, after
   * consent was withdrawn, reaches the server): that publication is
   * removed (RFC 3903 §4.5), never refreshed. The next body starts afresh
   * with an initial PUBLISH.
   */
  private giveUp(kind: PublishKind, bodyGen: number): void {
    if (kind === 'initial' || kind === 'modify') this.sentBodyGen = Math.max(this.sentBodyGen, bodyGen);
    if (kind === 'refresh') this.forget();
    if (kind === 'remove') this.forget();
    if (kind === 'modify' && this.etag !== undefined && this.bodyGen === this.sentBodyGen) {
      this.removeWanted = true;
      this.clock.clearTimeout(this.refreshTimer);
      this.refreshTimer = undefined;
    }
    this.refreshDue = false;
  }

  private forget(): void {
    this.removeFailingSince = undefined;
    this.etag = undefined;
    this.refreshDue = false;
    this.clock.clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
  }

  /**
   * Exponential back-off: initial, doubling, capped; reset by any 2xx. A
   * server's Retry-After (RFC 3261 §20.33, §21.5.4) lengthens the wait past
   * the cap, up to an hour: an overloaded server asks for it, and the
   * publication lapsing meanwhile is the server's choice.
   */
  private scheduleBackoff(atLeastMs: number): void {
    this.backoffMs = this.backoffMs === 0 ? this.backoff.initialMs : Math.min(this.backoffMs * 2, this.backoff.maxMs);
    const wait = Math.max(this.backoffMs, Math.min(atLeastMs, MAX_RETRY_AFTER_MS));
    this.clearBackoff();
    this.backoffTimer = this.clock.setTimeout(() => {
      this.backoffTimer = undefined;
      this.pump();
    }, wait);
  }

  private clearBackoff(): void {
    if (this.backoffTimer === undefined) return;
    this.clock.clearTimeout(this.backoffTimer);
    this.backoffTimer = undefined;
  }
}


