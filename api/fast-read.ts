import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { AccessLogBuffer } from '../core/access-log.js';
import type { TokenKind } from '../core/identity/tokens.js';
import type { Metrics } from '../core/metrics.js';
import type { Authenticator } from './authenticate.js';
import { frontHandle } from './front-path.js';
import type { HttpLimits } from './http-limits.js';
import { ifNoneMatchHits, presenceMediaType, type Representation, type RepresentationCache } from './representations.js';
import type { RequestDurations } from './request-durations.js';
import { computeView, recordAccess, type Viewer, type WatcherViewDeps } from './watcher-views.js';

export const CACHED_READS = 'presence_http_cached_reads_total';
/** The route pattern this path answers, as Fastify names it in the duration metric. */
const ROUTE = '/v1/presence/:handle';
const KINDS: readonly TokenKind[] = ['watcher', 'owner'];
const OWNER: Viewer = Object.freeze({ kind: 'owner' });

export interface FastReadDeps extends WatcherViewDeps {
  readonly auth: Authenticator;
  readonly representations: RepresentationCache;
  readonly accessLog: AccessLogBuffer;
  readonly clock: () => number;
  readonly limits: HttpLimits;
  readonly durations: RequestDurations;
  readonly metrics: Metrics;
  /** The server is closing: every request goes to Fastify, which answers 503. */
  readonly closing: () => boolean;
}

/** A representation ready for the socket: its bytes encoded once, and both header blocks. */
interface Prepared {
  readonly body: Buffer;
  readonly ok: readonly string[];
  readonly notModified: readonly string[];
}

/**
 * GET /v1/presence/{handle} for a caller whose token is in the verified
 * cache, answered on the raw node:http request without Fastify's request,
 * reply, router, hooks and schema validation. Reads are the one hot path
 * whose target (0.6 of bare node:http) those per-request objects kept out
 * of reach (docs/scaling.md, "Where a read's time goes").
 *
 * It is the same read, not a copy of its result: the same consent
 * evaluation and view (computeView), the same representation cache, the same
 * access-log record (privacy invariant 6), the same rate-limit buckets and
 * duration metric, and the same bytes and headers the route in
 * api/routes/presence.ts sends (tests/integration/fast-read.test.ts compares
 * them). Only what it can answer with a 200 or a 304 is answered here; every
 * other request (another route or method, a token not yet verified, an
 * encoded or invalid handle, a query string, an owner reading someone
 * else, an unacceptable Accept, a missing Host, a rate-limit refusal, a
 * closing server: from its preClose hook on, a few ticks after Fastify
 * starts refusing, so reads in that gap are answered like reads in flight)
 * returns false and goes to Fastify, whose route gives the
 * error. A request handed on after its rate-limit tokens were taken carries
 * that decision (HttpLimits.remember), so it is not charged twice.
 */
export function createFastRead(deps: FastReadDeps): (request: IncomingMessage, response: ServerResponse) => boolean {
  deps.metrics.counter(CACHED_READS, 'Presence reads answered on the cached path (token verified before; no Fastify request objects)');
  // Looked up once, not per read (a string key and a Map lookup each).
  const observeOk = deps.durations.seriesFor('GET', ROUTE, 200);
  const observeNotModified = deps.durations.seriesFor('GET', ROUTE, 304);
  const prepared = new WeakMap<Representation, Prepared>();
  const prepare = (representation: Representation): Prepared => {
    let ready = prepared.get(representation);
    if (!ready) {
      const body = Buffer.from(representation.body, 'utf8');
      // The order api/routes/presence.ts sets them in, then Fastify's content-length; a 304 has no body and so no length (RFC 9110 §15.4.5).
      const common = ['content-type', representation.contentType, 'etag', representation.etag, 'cache-control', 'private, no-cache', 'vary', 'Accept, Authorization'];
      ready = { body, ok: [...common, 'content-length', String(body.length)], notModified: common };
      prepared.set(representation, ready);
    }
    return ready;
  };

  return (request, response) => {
    const handle = frontHandle(request, 'GET');
    if (handle === undefined || deps.closing()) return false;
    const started = performance.now();
    const headers = request.headers;
    const now = deps.clock();
    const principal = deps.auth.cached(headers.authorization, KINDS, 'presence:read', now);
    if (!principal) return false;
    const mediaType = presenceMediaType(headers.accept);
    if (!mediaType) return false;
    let viewer: Viewer;
    if (principal.kind === 'owner') {
      // Owners read their own presence only (the route's 403).
      if (deps.directory.ownerByHandle(handle)?.id !== principal.subject) return false;
      viewer = OWNER;
    } else viewer = { kind: 'watcher', id: principal.subject };

    if (deps.limits.enabled) {
      const refusal = deps.limits.take(request.socket.remoteAddress, headers.authorization, now);
      if (refusal) {
        deps.limits.remember(request, refusal);
        return false;
      }
    }

    let representation: Representation;
    try {
      const access = computeView(deps, viewer, handle, now);
      representation = deps.representations.get(access.view, mediaType, now);
      // Last, after everything that could throw: a read handed on is recorded by the route instead, once.
      if (viewer.kind === 'watcher') recordAccess(deps.accessLog, viewer.id, access, 'read', now);
    } catch {
      // Not expected; the route does the same work and answers (or logs) whatever this was.
      deps.limits.remember(request, undefined);
      return false;
    }
    const ready = prepare(representation);
    const notModified = ifNoneMatchHits(headers['if-none-match'], representation.etag);
    // Flat header arrays (key, value, ...): written as given, no per-header calls.
    if (notModified) {
      response.writeHead(304, ready.notModified as string[]);
      response.end();
    } else {
      response.writeHead(200, ready.ok as string[]);
      response.end(ready.body);
    }
    deps.metrics.inc(CACHED_READS);
    // Until the response is handed to the socket (Fastify's own figure runs to 'finish': the same for bodies this small).
    (notModified ? observeNotModified : observeOk)((performance.now() - started) / 1000);
    return true;
  };
}
