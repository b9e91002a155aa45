import { CompactSign } from 'jose';
import type { AccessLogBuffer } from '../core/access-log.js';
import { SIGNING_ALG, type SigningKey } from '../core/identity/tokens.js';
import type { Metrics } from '../core/metrics.js';
import { JSON_MEDIA_TYPE, type RepresentationCache } from './representations.js';
import { computeView, recordAccess, type ComputedView, type WatcherViewDeps } from './watcher-views.js';

/**
 * Webhooks for third-party apps: a watcher's view of one owner, POSTed to
 * the app's URL whenever that view changes (changes the watcher cannot see
 * send nothing, as for streams), signed as a compact JWS (RFC 7515, ES256,
 * the service key; receivers verify with /.well-known/jwks.json).
 *
 * Delivery is at least once while the process runs: a failed POST (network
 * error, timeout, 408, 429, 5xx) is retried with exponential backoff; any
 * other 4xx gives up (the receiver refused it). Only the newest view is
 * pending per webhook: a change during retries replaces the payload, so a
 * slow receiver costs one pending view, not a queue. A delivery that gives
 * up is counted, and the next change tries again. Every delivery is an
 * outbound publication in the owner's access log (action `publish`).
 */
export interface Webhook {
  readonly id: string;
  readonly watcherId: string;
  readonly ownerId: string;
  readonly url: string;
}

export interface RetryPolicy {
  /** First retry after this; doubled each time. */
  readonly baseMs: number;
  readonly maxAttempts: number;
  readonly timeoutMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { baseMs: 1000, maxAttempts: 6, timeoutMs: 5000 };
export const WEBHOOK_MEDIA_TYPE = 'application/jose';

export interface WebhookDeps extends WatcherViewDeps {
  readonly representations: RepresentationCache;
  readonly accessLog: AccessLogBuffer;
  readonly clock: () => number;
  readonly signingKey: SigningKey;
  readonly issuer: string;
  readonly metrics: Metrics;
  readonly retry?: RetryPolicy;
  readonly fetch?: typeof fetch;
}

interface Pending {
  readonly etag: string;
  readonly body: string;
  readonly access: ComputedView;
  attempts: number;
}

interface Active {
  readonly hook: Webhook;
  readonly handle: string;
  lastDelivered: string | undefined;
  pending: Pending | undefined;
  inFlight: boolean;
  retryTimer: NodeJS.Timeout | undefined;
  wakeTimer: NodeJS.Timeout | undefined;
  readonly unsubscribe: () => void;
}

const RETRYABLE = (status: number) => status === 408 || status === 429 || status >= 500;

export class WebhookDispatcher {
  private readonly active = new Map<string, Active>();
  private readonly retry: RetryPolicy;
  private readonly send: typeof fetch;
  private closed = false;

  constructor(private readonly deps: WebhookDeps) {
    this.retry = deps.retry ?? DEFAULT_RETRY;
    this.send = deps.fetch ?? fetch;
    deps.metrics.counter('presence_webhook_deliveries_total', 'Webhook deliveries by outcome (delivered, retried, gave_up)');
    deps.metrics.gauge('presence_webhooks_active', 'Webhooks being served', () => this.active.size);
  }

  /** Starts serving a webhook: the current view is delivered at once. */
  add(hook: Webhook): void {
    if (this.closed || this.active.has(hook.id)) return;
    const owner = this.deps.directory.owner(hook.ownerId);
    if (!owner) return;
    const check = () => this.check(hook.id);
    const offHub = this.deps.hub.watch(hook.ownerId, check);
    const offRules = this.deps.ruleBook.watch(hook.ownerId, check);
    this.active.set(hook.id, {
      hook,
      handle: owner.handle,
      lastDelivered: undefined,
      pending: undefined,
      inFlight: false,
      retryTimer: undefined,
      wakeTimer: undefined,
      unsubscribe: () => {
        offHub();
        offRules();
      },
    });
    check();
  }

  remove(id: string): void {
    const entry = this.active.get(id);
    if (!entry) return;
    this.active.delete(id);
    entry.unsubscribe();
    clearTimeout(entry.retryTimer);
    clearTimeout(entry.wakeTimer);
  }

  close(): void {
    this.closed = true;
    for (const id of [...this.active.keys()]) this.remove(id);
  }

  private check(id: string): void {
    const entry = this.active.get(id);
    if (!entry) return;
    const now = this.deps.clock();
    // A removed watcher's webhooks fall silent (their rows go with the watcher).
    if (!this.deps.directory.activeWatcher(entry.hook.watcherId)) return this.remove(id);
    const access = computeView(this.deps, { kind: 'watcher', id: entry.hook.watcherId }, entry.handle, now);
    // Wake when the view may change with no event (a meeting ends, a rule's window closes).
    clearTimeout(entry.wakeTimer);
    if (Number.isFinite(access.validUntil)) entry.wakeTimer = setTimeout(() => this.check(id), Math.min(Math.max(0, access.validUntil - now) + 1, 2_147_000_000));
    const representation = this.deps.representations.get(access.view, JSON_MEDIA_TYPE);
    if (representation.etag === entry.lastDelivered && !entry.pending) return;
    if (representation.etag === entry.pending?.etag) return;
    const payload = {
      iss: this.deps.issuer,
      sub: access.view.entity,
      aud: `urn:uuid:${entry.hook.watcherId}`,
      iat: Math.floor(now / 1000),
      jti: crypto.randomUUID(),
      webhook: entry.hook.id,
      etag: representation.etag,
      view: access.view,
    };
    const pending: Pending = { etag: representation.etag, body: JSON.stringify(payload), access, attempts: 0 };
    if (representation.etag === entry.lastDelivered) {
      // Back to what the receiver already has: drop the pending change.
      entry.pending = undefined;
      return;
    }
    entry.pending = pending;
    if (!entry.inFlight && !entry.retryTimer) void this.deliver(id);
  }

  private async deliver(id: string): Promise<void> {
    const entry = this.active.get(id);
    const pending = entry?.pending;
    if (!entry || !pending || this.closed) return;
    entry.inFlight = true;
    entry.retryTimer = undefined;
    pending.attempts += 1;
    let status = 0;
    try {
      const jws = await new CompactSign(new TextEncoder().encode(pending.body))
        .setProtectedHeader({ alg: SIGNING_ALG, kid: this.deps.signingKey.kid, typ: 'presence+jws', cty: 'json' })
        .sign(this.deps.signingKey.privateKey);
      const response = await this.send(entry.hook.url, {
        method: 'POST',
        headers: { 'content-type': WEBHOOK_MEDIA_TYPE, 'user-agent': 'presence-service-webhook' },
        body: jws,
        redirect: 'manual',
        signal: AbortSignal.timeout(this.retry.timeoutMs),
      });
      status = response.status;
      await response.body?.cancel().catch(() => undefined);
    } catch {
      status = 0; // network error or timeout: retryable
    }
    entry.inFlight = false;
    if (!this.active.has(id)) return;
    const delivered = status >= 200 && status < 300;
    const newer = entry.pending !== pending;
    if (delivered) {
      this.deps.metrics.inc('presence_webhook_deliveries_total', { outcome: 'delivered' });
      entry.lastDelivered = pending.etag;
      // Audited once the view has left, granted and withheld views alike.
      recordAccess(this.deps.accessLog, entry.hook.watcherId, pending.access, 'publish', this.deps.clock());
      if (!newer) entry.pending = undefined;
    } else if ((status === 0 || RETRYABLE(status)) && (newer || pending.attempts < this.retry.maxAttempts)) {
      this.deps.metrics.inc('presence_webhook_deliveries_total', { outcome: 'retried' });
      const delay = newer ? 0 : this.retry.baseMs * 2 ** (pending.attempts - 1);
      entry.retryTimer = setTimeout(() => void this.deliver(id), delay);
      entry.retryTimer.unref();
      return;
    } else {
      this.deps.metrics.inc('presence_webhook_deliveries_total', { outcome: 'gave_up' });
      if (!newer) entry.pending = undefined;
    }
    if (entry.pending) void this.deliver(id);
  }
}
