import { CompactSign } from 'jose';
import type { AccessLogBuffer } from '../core/access-log.js';
import { SIGNING_ALG, type SigningKey } from '../core/identity/tokens.js';
import type { Metrics } from '../core/metrics.js';
import { JSON_MEDIA_TYPE, type RepresentationCache } from './representations.js';
import { createWebhookPost, REFUSED_ADDRESS, type WebhookPost } from './webhook-transport.js';
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
 * slow receiver costs one pending view, not a queue, and ends up with the
 * newest view even when the view flips back and forth meanwhile. A view
 * given up on is counted, and the next change tries again. Every POST is
 * an outbound publication in the owner's access log (action `publish`).
 */
export interface Webhook {
  readonly id: string;
  readonly watcherId: string;
  /**
   * Null while no owner holds the handle: the view is then the offline one,
   * as a read's is, so registering does not tell whether a handle exists.
   */
  readonly ownerId: string | null;
  readonly handle: string;
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
  /** How POSTs leave (api/webhook-transport.ts); by default with internal addresses allowed, as outside production. */
  readonly post?: WebhookPost;
}

/** The newest view computed for a webhook: what the receiver should end up with. */
interface Latest {
  readonly etag: string;
  readonly access: ComputedView;
}

interface Active {
  /** Replaced in place when the webhook is bound to its owner (serve): the delivery state stays. */
  hook: Webhook;
  /** The owner whose state and rules this entry watches: null while the handle has no owner known here. */
  ownerWatched: string | null;
  stopWatchingOwner: () => void;
  latest: Latest | undefined;
  /** The entity tag the receiver acknowledged last (2xx). */
  delivered: string | undefined;
  /** The entity tag given up on (retries exhausted or refused): not retried until the view changes. */
  abandoned: string | undefined;
  /** A delivery loop is running (at most one per webhook). */
  running: boolean;
  wakeTimer: NodeJS.Timeout | undefined;
  /** Wakes a loop sleeping between retries (removal, or a newer view). */
  nudge: (() => void) | undefined;
  readonly stopWatchingWatcher: () => void;
}

/** How long a removed webhook's id is remembered: a reload's two reads, each at most the longest statement timeout allowed (1 h), with room to spare. */
const TOMBSTONE_MS = 3 * 3_600_000;
const RETRYABLE = (status: number) => status === 0 || status === 408 || status === 429 || status >= 500;

export class WebhookDispatcher {
  private readonly active = new Map<string, Active>();
  private readonly retry: RetryPolicy;
  private readonly send: WebhookPost;
  private closed = false;

  constructor(private readonly deps: WebhookDeps) {
    this.retry = deps.retry ?? DEFAULT_RETRY;
    this.send = deps.post ?? createWebhookPost({ refuseInternal: false });
    deps.metrics.counter('presence_webhook_deliveries_total', 'Webhook POSTs by outcome (delivered, retried, gave_up, refused_address)');
    deps.metrics.gauge('presence_webhooks_active', 'Webhooks being served', () => this.active.size);
  }

  /** Every registered webhook; served (in `active`) only while this process delivers. */
  private readonly known = new Map<string, Webhook>();
  private delivering = true;

  /**
   * A webhook registered here: call it only once its row is committed
   * (replaceOwner relies on that). Noted with the next registration
   * number, so that a reload that read before it cannot drop it. While
   * this process delivers, the current view is delivered at once.
   */
  add(hook: Webhook): void {
    this.prune();
    this.registrations += 1;
    this.addedHere.delete(hook.id);
    this.addedHere.set(hook.id, { number: this.registrations, at: this.deps.clock() });
    this.register(hook);
  }

  /** A stored webhook, loaded at start. */
  restore(hook: Webhook): void {
    this.register(hook);
  }

  private register(hook: Webhook): void {
    this.known.set(hook.id, hook);
    if (this.delivering) this.activate(hook);
  }

  /** Webhooks registered here so far: taken by a reload before it reads an owner's webhooks, and handed to replaceOwner. */
  get registrationMark(): number {
    return this.registrations;
  }

  /** Removed here (deleted by its watcher, with a revocation, with its owner): remembered, so that no older read registers it again. */
  remove(id: string): void {
    this.prune();
    this.addedHere.delete(id);
    if (this.known.has(id)) {
      this.removedAt.delete(id);
      this.removedAt.set(id, this.deps.clock());
    }
    this.forget(id);
  }

  /** The owner's registered webhooks, served or not. */
  registered(ownerId: string): Webhook[] {
    return [...this.known.values()].filter((hook) => hook.ownerId === ownerId);
  }

  /** The webhooks waiting on a handle no owner holds, served or not. */
  waiting(handle: string): Webhook[] {
    return [...this.known.values()].filter((hook) => hook.ownerId === null && hook.handle === handle);
  }

  /** The handles webhooks known here wait on. */
  waitingHandles(): Set<string> {
    const out = new Set<string>();
    for (const hook of this.known.values()) if (hook.ownerId === null) out.add(hook.handle);
    return out;
  }

  /**
   * An owner took the handle here: the webhooks waiting on it are theirs
   * now, as the database's trigger made them (migration 0018), and those
   * registered here already bound to them (the row was committed after the
   * owner's, before this process knew the owner) are served as theirs.
   */
  ownerCreated(ownerId: string, handle: string): void {
    for (const hook of this.waiting(handle)) this.rebind({ ...hook, ownerId });
    for (const hook of this.registered(ownerId)) this.serve(hook);
  }

  /** The same webhook, now of its owner. */
  private rebind(hook: Webhook): void {
    this.known.set(hook.id, hook);
    this.serve(hook);
  }

  /**
   * Every webhook of the owner, removed as by remove() (the owner was
   * erased, here or elsewhere). The owner is remembered as erased for as
   * long as removals are: a list read before the erasure (a handle's
   * reload) must not bring back a webhook bound to them.
   */
  removeOwner(ownerId: string): void {
    this.prune();
    this.erasedAt.delete(ownerId);
    this.erasedAt.set(ownerId, this.deps.clock());
    for (const [id, hook] of this.known) if (hook.ownerId === ownerId) this.remove(id);
  }

  /** Owners erased lately, by id, with when (pruned with removedAt). */
  private readonly erasedAt = new Map<string, number>();

  private forget(id: string): void {
    this.known.delete(id);
    this.deactivate(id);
  }

  /**
   * Webhooks removed lately, by id, with when. A group member's reload of
   * the owner that read before the removal was committed (replaceOwner)
   * must not register one again: it would deliver, perhaps to the URL of a
   * leaked token's holder, until the next reload, and for good if that one
   * failed. Ids are random and never reused, so a removed id never comes
   * back rightly; each is kept TOMBSTONE_MS, longer than a reload's reads
   * may take (DATABASE_STATEMENT_TIMEOUT_MS), in removal order.
   */
  private readonly removedAt = new Map<string, number>();

  /**
   * Forgets removals and registrations older than TOMBSTONE_MS (both maps
   * are in time order), on every change to either: a single process, which
   * never reloads an owner, must not keep one entry per webhook ever removed.
   */
  private prune(): void {
    const forgetBefore = this.deps.clock() - TOMBSTONE_MS;
    for (const [id, at] of this.removedAt) {
      if (at >= forgetBefore) break;
      this.removedAt.delete(id);
    }
    for (const [id, at] of this.erasedAt) {
      if (at >= forgetBefore) break;
      this.erasedAt.delete(id);
    }
    for (const [id, added] of this.addedHere) {
      if (added.at >= forgetBefore) break;
      this.addedHere.delete(id);
    }
  }

  private registrations = 0;
  /**
   * Webhooks registered here lately, by id: the registration's number and
   * when, in registration order, each kept TOMBSTONE_MS (as removedAt).
   */
  private readonly addedHere = new Map<string, { number: number; at: number }>();

  /**
   * Makes the registered webhooks of one owner exactly `hooks` (another
   * process changed them), as read by a reload that took `mark`
   * (registrationMark) before it read them. Those missing are forgotten
   * without being remembered as removed, except one registered here after
   * the mark: the read may have begun before that registration was
   * committed, and dropping it would stop its deliveries until the next
   * reload of the owner. One registered before the mark was committed
   * before the read began, so a list without it means it was deleted
   * elsewhere since. Returns true if one was kept only for that reason:
   * it may also have been deleted elsewhere after it was committed and
   * before it was added here, with both notifications spent on this
   * reload, so the caller reads the owner once more (its mark is then
   * past the registration, and that list is the truth).
   */
  replaceOwner(ownerId: string, hooks: readonly Webhook[], mark: number): boolean {
    return this.replaceWhere((hook) => hook.ownerId === ownerId, hooks, mark);
  }

  /**
   * The same for every webhook of a handle, bound or waiting (a change to
   * those waiting is announced by handle: migration 0018). One bound since
   * is in the list, not missing from it: it is rebound, not dropped, so what
   * was delivered is not lost and not sent again.
   */
  replaceHandle(handle: string, hooks: readonly Webhook[], mark: number): boolean {
    return this.replaceWhere((hook) => hook.handle === handle, hooks, mark);
  }

  private replaceWhere(belongs: (hook: Webhook) => boolean, hooks: readonly Webhook[], mark: number): boolean {
    const wanted = new Set(hooks.map((h) => h.id));
    let keptUnread = false;
    for (const [id, hook] of this.known) {
      if (!belongs(hook) || wanted.has(id)) continue;
      if ((this.addedHere.get(id)?.number ?? 0) > mark) {
        keptUnread = true;
        continue;
      }
      this.forget(id);
    }
    this.prune();
    for (const hook of hooks) {
      if (this.removedAt.has(hook.id) || (hook.ownerId !== null && this.erasedAt.has(hook.ownerId))) continue;
      const known = this.known.get(hook.id);
      if (!known) this.register(hook);
      // Bound to an owner elsewhere (the owner took the handle there) before this process heard of it.
      else if (known.ownerId !== hook.ownerId) this.rebind(hook);
      // Bound to an owner this process did not know yet: served as theirs now that the owner is loaded.
      else this.serve(known);
    }
    return keptUnread;
  }

  /**
   * Scale-out: one process of the group delivers (it holds the delivery
   * lease); the others keep the registry and take over when it goes.
   */
  setDelivering(on: boolean): void {
    this.delivering = on;
    if (on) for (const hook of this.known.values()) this.activate(hook);
    else for (const id of [...this.active.keys()]) this.deactivate(id);
  }

  /** The owner a webhook's view comes from here: its own, once this process knows them. */
  private ownerToWatch(hook: Webhook): string | null {
    return hook.ownerId !== null && this.deps.directory.owner(hook.ownerId) ? hook.ownerId : null;
  }

  private watchOwner(ownerId: string | null, check: () => void): () => void {
    if (ownerId === null) return () => undefined;
    const offHub = this.deps.hub.watch(ownerId, check);
    const offRules = this.deps.ruleBook.watch(ownerId, check);
    return () => {
      offHub();
      offRules();
    };
  }

  /**
   * Served, or served as it is now: an entry that exists is updated in
   * place (the owner it watches, the hook record), so what was computed,
   * delivered, given up on or is in flight stays with it. Binding a
   * webhook to the owner who took its handle must not re-send a view the
   * receiver has (or refused): that would tell it an owner appeared.
   */
  private serve(hook: Webhook): void {
    const entry = this.active.get(hook.id);
    if (!entry) return this.activate(hook);
    entry.hook = hook;
    const ownerId = this.ownerToWatch(hook);
    if (entry.ownerWatched === ownerId) return;
    entry.stopWatchingOwner();
    entry.ownerWatched = ownerId;
    entry.stopWatchingOwner = this.watchOwner(ownerId, () => this.check(hook.id));
    this.check(hook.id);
  }

  /**
   * A webhook waiting on a handle watches nothing but its watcher: its view
   * is the offline one, computed from the handle. One bound to an owner this
   * process has not loaded yet (created, or erased, elsewhere) is not served
   * until the owner's reload (replaceOwner) or creation here (ownerCreated)
   * calls serve(): it might be an erased owner's, and an offline view sent
   * now would be false or late news. An entry that exists already is kept
   * by serve() whatever the binding, so nothing it sent is sent again.
   */
  private activate(hook: Webhook): void {
    if (!this.delivering || this.closed || this.active.has(hook.id)) return;
    if (hook.ownerId !== null && !this.deps.directory.owner(hook.ownerId)) return;
    const check = () => this.check(hook.id);
    const ownerId = this.ownerToWatch(hook);
    this.active.set(hook.id, {
      hook,
      ownerWatched: ownerId,
      stopWatchingOwner: this.watchOwner(ownerId, check),
      latest: undefined,
      delivered: undefined,
      abandoned: undefined,
      running: false,
      wakeTimer: undefined,
      nudge: undefined,
      // The watcher revoked (or its tokens): checked at once, so a revoked
      // watcher's webhook is removed then, and a delivery being retried stops,
      // instead of POSTing the view it was granted before for another half
      // minute, or until the owner's next change.
      stopWatchingWatcher: this.deps.directory.watchSubject(hook.watcherId, check),
    });
    check();
  }

  private deactivate(id: string): void {
    const entry = this.active.get(id);
    if (!entry) return;
    this.active.delete(id);
    entry.stopWatchingOwner();
    entry.stopWatchingWatcher();
    clearTimeout(entry.wakeTimer);
    entry.nudge?.();
  }

  close(): void {
    this.closed = true;
    for (const id of [...this.active.keys()]) this.deactivate(id);
  }

  private check(id: string): void {
    const entry = this.active.get(id);
    if (!entry) return;
    const now = this.deps.clock();
    // A removed watcher's webhooks fall silent (their rows go with the watcher).
    if (!this.deps.directory.activeWatcher(entry.hook.watcherId)) return this.remove(id);
    const access = computeView(this.deps, { kind: 'watcher', id: entry.hook.watcherId }, entry.hook.handle, now);
    // Wake when the view may change with no event (a meeting ends, a rule's window closes).
    clearTimeout(entry.wakeTimer);
    if (Number.isFinite(access.validUntil)) {
      entry.wakeTimer = setTimeout(() => this.check(id), Math.min(Math.max(0, access.validUntil - now) + 1, 2_147_000_000));
      entry.wakeTimer.unref();
    }
    const etag = this.deps.representations.get(access.view, JSON_MEDIA_TYPE).etag;
    if (etag === entry.latest?.etag) {
      // The same view, now of an owner (the handle was taken): a POST of it
      // still pending is recorded in that owner's access log (invariant 6).
      if (entry.latest.access.owner?.id !== access.owner?.id) entry.latest = { etag, access };
      return;
    }
    entry.latest = { etag, access };
    entry.abandoned = undefined;
    entry.nudge?.();
    if (!entry.running) void this.run(entry);
  }

  /**
   * One loop per webhook: while the newest view is not the one the receiver
   * acknowledged, POST it; a failure is retried with backoff, and a newer
   * view meanwhile is sent next instead (the receiver only needs the latest).
   */
  private async run(entry: Active): Promise<void> {
    entry.running = true;
    let attempts = 0;
    let attemptFor: string | undefined;
    try {
      for (;;) {
        const latest = entry.latest;
        if (this.active.get(entry.hook.id) !== entry || !latest || latest.etag === entry.delivered || latest.etag === entry.abandoned) return;
        if (attemptFor !== latest.etag) [attempts, attemptFor] = [0, latest.etag];
        attempts += 1;
        const status = await this.post(entry, latest);
        if (status === REFUSED_ADDRESS) {
          // The receiver's name resolves inside the operator's networks: no retry until the view changes (the name may be fixed by then).
          this.deps.metrics.inc('presence_webhook_deliveries_total', { outcome: 'refused_address' });
          entry.abandoned = latest.etag;
          continue;
        }
        if (status >= 200 && status < 300) {
          this.deps.metrics.inc('presence_webhook_deliveries_total', { outcome: 'delivered' });
          entry.delivered = latest.etag;
          continue;
        }
        if (!RETRYABLE(status) || attempts >= this.retry.maxAttempts) {
          this.deps.metrics.inc('presence_webhook_deliveries_total', { outcome: 'gave_up' });
          entry.abandoned = latest.etag;
          continue;
        }
        this.deps.metrics.inc('presence_webhook_deliveries_total', { outcome: 'retried' });
        // Sleep before retrying, unless a newer view (or removal) nudges us awake.
        if (entry.latest === latest) await this.sleep(entry, this.retry.baseMs * 2 ** (attempts - 1));
      }
    } finally {
      entry.running = false;
    }
  }

  private sleep(entry: Active, ms: number): Promise<void> {
    return new Promise((resolve) => {
      // Not unref'd: close() and remove() nudge sleeping loops awake, so it never holds a shutdown.
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        entry.nudge = undefined;
        resolve();
      }
      entry.nudge = done;
    });
  }

  /** One signed POST; 0 for a network error or timeout. */
  private async post(entry: Active, latest: Latest): Promise<number> {
    const now = this.deps.clock();
    const payload = {
      iss: this.deps.issuer,
      sub: latest.access.view.entity,
      aud: `urn:uuid:${entry.hook.watcherId}`,
      iat: Math.floor(now / 1000),
      // A receiver must not accept a replay of an old view as news.
      exp: Math.floor(now / 1000) + 300,
      jti: crypto.randomUUID(),
      webhook: entry.hook.id,
      etag: latest.etag,
      view: latest.access.view,
    };
    const jws = await new CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
      .setProtectedHeader({ alg: SIGNING_ALG, kid: this.deps.signingKey.kid, typ: 'presence+jws', cty: 'json' })
      .sign(this.deps.signingKey.privateKey);
    const status = await this.send(entry.hook.url, jws, { 'content-type': WEBHOOK_MEDIA_TYPE, 'user-agent': 'presence-service-webhook' }, this.retry.timeoutMs);
    // Privacy invariant 6: every POST carrying the view is an outbound
    // publication, whatever the receiver answers, and a network error or a
    // timeout counts too (the body may have left). Only a POST refused
    // before connecting (the name resolved to an internal or refused address) sent
    // nothing, and is not in the owner's access log.
    if (status !== REFUSED_ADDRESS) recordAccess(this.deps.accessLog, entry.hook.watcherId, latest.access, 'publish', now);
    return status;
  }
}
