import type { AccessLogBuffer } from '../core/access-log.js';
import { DURATION_BUCKETS, type Metrics } from '../core/metrics.js';
import { PIDF_MEDIA_TYPE } from '../core/render-pidf.js';
import type { RepresentationCache } from './representations.js';
import type { PublishOutcome, SipPublisherPool } from './sip/index.js';
import { computeView, recordAccess, type ComputedView, type WatcherViewDeps } from './watcher-views.js';

/**
 * The SIP gateway: for owners who turn it on (settings `sipPublish`), the
 * service acts as their presence user agent and PUBLISHes (RFC 3903) to the
 * configured SIP presence server the view granted to the SIP audience, a
 * watcher like any other (the owner's rules decide what it sees: consent
 * applies to SIP exactly as to HTTP). A document is sent when the rendered
 * PIDF changes; the publisher pool keeps the entity tag, refreshes before
 * expiry and starts over on 412. Turning the gateway off, or shutting down,
 * removes the publication (Expires: 0). Each document sent is an outbound
 * publication in the owner's access log.
 */
export interface SipGatewayDeps extends WatcherViewDeps {
  readonly pool: SipPublisherPool;
  /** The watcher whose consent applies to what the SIP server receives. */
  readonly audience: string;
  readonly enabled: (ownerId: string) => boolean;
  readonly representations: RepresentationCache;
  readonly accessLog: AccessLogBuffer;
  readonly clock: () => number;
  readonly metrics: Metrics;
  readonly onError: (error: unknown) => void;
}

interface Served {
  readonly handle: string;
  readonly uri: string;
  lastBody: string | undefined;
  /** The view behind the newest document handed to the pool (audited when the server accepts it). */
  lastAccess: ComputedView | undefined;
  /** When the view last computed stops holding (a grant that ends), whatever the document sent. */
  validUntil: number;
  timer: NodeJS.Timeout | undefined;
  readonly unsubscribe: () => void;
}

/** After the server refuses a document for good, try it again this much later (the view may not change for hours). */
export const REPUBLISH_AFTER_MS = 30_000;
/** A transport failure (no response: timeout, refused connection, failed TLS handshake) is logged once per reason this often. */
export const FAILURE_LOG_INTERVAL_MS = 60_000;

export class SipGateway {
  private readonly served = new Map<string, Served>();
  private readonly ownerByUri = new Map<string, string>();
  private closed = false;
  /** When each transport failure reason was last logged: one line per reason a minute, not one per presentity and retry. */
  private readonly failuresLogged = new Map<string, number>();

  /** Stops watching the audience watcher's revocation. */
  private readonly unwatchAudience: () => void;

  constructor(private readonly deps: SipGatewayDeps) {
    // The audience is a watcher like any other: revoked, it matches no rule
    // any more (api/watcher-views.ts), and every document it was shown must
    // give way to the offline view at once, not at each owner's next change.
    this.unwatchAudience = deps.directory.watchSubject(deps.audience, () => {
      for (const ownerId of [...this.served.keys()]) this.check(ownerId);
    });
    deps.metrics.counter('presence_sip_publish_total', 'SIP PUBLISH transactions by kind (initial, modify, refresh, remove) and final status');
    deps.metrics.gauge('presence_sip_publications', 'Owners whose presence the SIP gateway publishes', () => this.served.size);
    deps.metrics.histogram('presence_sip_publish_seconds', 'SIP PUBLISH transactions: from the request to the final response (or the transport error), by kind', DURATION_BUCKETS);
  }

  /**
   * The pool's outcome callback: counted for operators (no presentity in
   * labels); a document the server accepted (initial or modify, 2xx) is an
   * outbound publication in the owner's access log, whenever it lands (a
   * retry may succeed long after update() settled); a document refused for
   * good (a final 4xx) is sent again later, so a publication that the
   * server dropped does not stay gone until the view changes.
   */
  onOutcome(outcome: PublishOutcome): void {
    this.deps.metrics.inc('presence_sip_publish_total', { kind: outcome.kind, status: String(outcome.status) });
    if (outcome.seconds !== undefined) this.deps.metrics.observe('presence_sip_publish_seconds', outcome.seconds, { kind: outcome.kind });
    if (outcome.status === 0 && outcome.error !== undefined && !outcome.error.startsWith('closed:')) this.logFailure(outcome.error);
    const ownerId = this.ownerByUri.get(outcome.presentity);
    const served = ownerId === undefined ? undefined : this.served.get(ownerId);
    if (ownerId === undefined || !served) return;
    const accepted = outcome.status >= 200 && outcome.status < 300;
    if (accepted && (outcome.kind === 'initial' || outcome.kind === 'modify') && served.lastAccess) {
      recordAccess(this.deps.accessLog, this.deps.audience, served.lastAccess, 'publish', this.deps.clock());
    } else if (!accepted && outcome.kind !== 'remove' && outcome.status >= 400 && ![401, 407, 412, 423].includes(outcome.status)) {
      served.lastBody = undefined;
      // The view's own expiry (a grant that lapses) may come sooner than the
      // retry: the check then runs at the earlier of the two, as check() set it.
      const expiresIn = Number.isFinite(served.validUntil) ? Math.max(0, served.validUntil - this.deps.clock()) + 1 : Infinity;
      clearTimeout(served.timer);
      served.timer = setTimeout(() => this.check(ownerId), Math.min(REPUBLISH_AFTER_MS, expiresIn));
      served.timer.unref();
    }
  }

  private logFailure(reason: string): void {
    const now = this.deps.clock();
    const last = this.failuresLogged.get(reason);
    if (last !== undefined && now - last < FAILURE_LOG_INTERVAL_MS) return;
    if (this.failuresLogged.size > 100) this.failuresLogged.clear();
    this.failuresLogged.set(reason, now);
    this.deps.onError(new Error(`no response from the SIP server: ${reason}`));
  }

  /** Starts or stops publishing for one owner, as their settings now say. */
  sync(ownerId: string): void {
    if (this.closed) return;
    const owner = this.deps.directory.owner(ownerId);
    const wanted = owner !== undefined && this.deps.enabled(ownerId);
    const current = this.served.get(ownerId);
    if (wanted && !current && owner) {
      const check = () => this.check(ownerId);
      const offHub = this.deps.hub.watch(ownerId, check);
      const offRules = this.deps.ruleBook.watch(ownerId, check);
      const uri = this.deps.pool.presentityUri(owner.handle);
      this.ownerByUri.set(uri, ownerId);
      this.served.set(ownerId, {
        handle: owner.handle,
        uri,
        lastBody: undefined,
        lastAccess: undefined,
        validUntil: Infinity,
        timer: undefined,
        unsubscribe: () => {
          offHub();
          offRules();
        },
      });
      check();
    } else if (!wanted && current) {
      this.stop(ownerId, current);
      this.deps.pool.remove(current.handle).catch(this.deps.onError);
    }
  }

  /** Stops watching; the pool's close() removes the publications. */
  close(): void {
    this.closed = true;
    this.unwatchAudience();
    for (const [ownerId, served] of this.served) this.stop(ownerId, served);
  }

  private stop(ownerId: string, served: Served): void {
    served.unsubscribe();
    clearTimeout(served.timer);
    this.served.delete(ownerId);
    this.ownerByUri.delete(served.uri);
  }

  private check(ownerId: string): void {
    const served = this.served.get(ownerId);
    if (!served || this.closed) return;
    const now = this.deps.clock();
    const access = computeView(this.deps, { kind: 'watcher', id: this.deps.audience }, served.handle, now);
    clearTimeout(served.timer);
    served.validUntil = access.validUntil;
    if (Number.isFinite(access.validUntil)) {
      served.timer = setTimeout(() => this.check(ownerId), Math.min(Math.max(0, access.validUntil - now) + 1, 2_147_000_000));
      served.timer.unref();
    }
    const body = this.deps.representations.get(access.view, PIDF_MEDIA_TYPE, now).body;
    if (body === served.lastBody) return;
    served.lastBody = body;
    served.lastAccess = access;
    // The pool sends only the newest document if several queue up; outcomes arrive through onOutcome.
    this.deps.pool.update(served.handle, body).catch((error: unknown) => {
      served.lastBody = undefined; // try again on the next change
      this.deps.onError(error);
    });
  }
}
