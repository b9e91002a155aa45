import { isSipUser, type SipGatewayConfig } from './config.js';
import { DigestAuthenticator } from './credentials.js';
import { Publication, type BackoffPolicy, type Clock, type PublishOutcome } from './publisher.js';
import { createTransport, type SipTransport, type TransactionTimers } from './transport.js';

/**
 * Many presentities over one transport, for the gateway: `update()` when a
 * presentity's document changes, `remove()` when an owner turns the gateway
 * off, `close()` on shutdown (every publication removed with Expires: 0,
 * then the transport closed, within a time bound).
 */

export interface SipPublisherPoolOptions {
  /** A ready transport; by default one is created from the configuration. */
  readonly transport?: SipTransport;
  /** RFC 3261 timers of the created transport (tests shorten them). */
  readonly timers?: Partial<TransactionTimers>;
  readonly clock?: Clock;
  readonly backoff?: Partial<BackoffPolicy>;
  readonly refreshDelayMs?: (grantedSeconds: number) => number;
  readonly onOutcome?: (outcome: PublishOutcome) => void;
  /** Bound on close()'s removals (default 5 s). */
  readonly closeTimeoutMs?: number;
}

export class SipPoolClosedError extends Error {
  override readonly name = 'SipPoolClosedError';
}

export class SipPublisherPool {
  private readonly publications = new Map<string, Publication>();
  private readonly authenticator: DigestAuthenticator;
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly config: SipGatewayConfig,
    private readonly transport: SipTransport,
    private readonly options: SipPublisherPoolOptions,
  ) {
    this.authenticator = new DigestAuthenticator(config.username !== undefined && config.password !== undefined ? { username: config.username, password: config.password } : undefined);
  }

  static async create(config: SipGatewayConfig, options: SipPublisherPoolOptions = {}): Promise<SipPublisherPool> {
    const transport =
      options.transport ??
      (await createTransport(config.server.transport, {
        remoteHost: config.server.host,
        remotePort: config.server.port,
        localHost: config.localHost,
        localPort: config.localPort,
        ...(config.tls ? { tls: config.tls } : {}),
        ...(options.timers ? { timers: options.timers } : {}),
      }));
    return new SipPublisherPool(config, transport, options);
  }

  /**
   * The SIP URI of a presentity: a bare user becomes `sip:{user}@{domain}`;
   * `pres:user@host` (RFC 3859) becomes `sip:user@host`; `sip:` URIs pass
   * unchanged. Throws a TypeError for anything that could not be put in a
   * header safely.
   */
  presentityUri(presentity: string): string {
    const match = /^(?:(sip|pres):)?([^@:\s<>"]+)(?:@([A-Za-z0-9.\-[\]:]+))?$/i.exec(presentity);
    const user = match?.[2];
    if (!match || user === undefined || !isSipUser(user) || (match[1] === undefined && match[3] !== undefined)) throw new TypeError(`not a presentity: ${JSON.stringify(presentity.slice(0, 80))}`);
    return `sip:${user}@${match[3] ?? this.config.domain}`;
  }

  /** Publications whose retried removal will be forgotten when done (one wait each). */
  private readonly forgetting = new WeakSet<Publication>();

  get size(): number {
    return this.publications.size;
  }

  /** The entity tag of a presentity's live publication, if any. */
  entityTag(presentity: string): string | undefined {
    return this.publications.get(this.presentityUri(presentity))?.entityTag;
  }

  /** Publishes (or modifies) a presentity's PIDF document. Rejects with SipPoolClosedError after close(), TypeError for a bad presentity. */
  update(presentity: string, pidf: string): Promise<PublishOutcome | undefined> {
    if (this.closing) return Promise.reject(new SipPoolClosedError('the SIP publisher pool is closed'));
    let uri: string;
    try {
      uri = this.presentityUri(presentity);
    } catch (error) {
      return Promise.reject(error);
    }
    let publication = this.publications.get(uri);
    if (!publication) {
      publication = new Publication({
        presentity: uri,
        transport: this.transport,
        authenticator: this.authenticator,
        expires: this.config.expires,
        userAgent: this.config.userAgent,
        refreshWithBody: this.config.refreshWithBody,
        ...(this.config.fromUri === undefined ? {} : { fromUri: this.config.fromUri }),
        ...(this.options.clock ? { clock: this.options.clock } : {}),
        ...(this.options.backoff ? { backoff: this.options.backoff } : {}),
        ...(this.options.refreshDelayMs ? { refreshDelayMs: this.options.refreshDelayMs } : {}),
        ...(this.options.onOutcome ? { onOutcome: this.options.onOutcome } : {}),
      });
      this.publications.set(uri, publication);
    }
    return publication.publish(pidf);
  }

  /** Removes a presentity's publication (Expires: 0) and forgets it. */
  async remove(presentity: string): Promise<PublishOutcome | undefined> {
    const uri = this.presentityUri(presentity); // async: a bad URI rejects
    const publication = this.publications.get(uri);
    if (!publication) return undefined;
    const outcome = await publication.remove();
    await publication.whenIdle();
    const forget = () => {
      if (publication.isIdle && this.publications.get(uri) === publication) {
        publication.dispose();
        this.publications.delete(uri);
      }
    };
    // A removal retried after a back-off (no answer, 5xx) answers this call
    // with its first outcome and goes on: forgotten once it lands or lapses.
    if (publication.isIdle) forget();
    else if (!this.forgetting.has(publication)) {
      this.forgetting.add(publication);
      void publication.whenDone().then(() => {
        this.forgetting.delete(publication);
        forget();
      });
    }
    return outcome;
  }

  /** Removes every publication (bounded by closeTimeoutMs), then closes the transport. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    const all = [...this.publications.values()];
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.options.closeTimeoutMs ?? 5000);
    });
    await Promise.race([Promise.allSettled(all.map((p) => p.remove())), bound]);
    clearTimeout(timer);
    for (const p of all) p.dispose();
    this.publications.clear();
    await this.transport.close();
  }
}
