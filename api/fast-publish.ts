import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { AppError, httpErrors } from '../core/errors.js';
import type { Principal, TokenKind } from '../core/identity/tokens.js';
import type { Directory } from '../core/directory.js';
import type { Metrics } from '../core/metrics.js';
import { PIDF_MEDIA_TYPE } from '../core/render-pidf.js';
import type { Accounts } from './accounts.js';
import type { Authenticator } from './authenticate.js';
import { frontHandle } from './front-path.js';
import { answerFor, ERROR_CONTENT_TYPE, errorBody } from './http-errors.js';
import type { HttpLimits } from './http-limits.js';
import type { RequestDurations } from './request-durations.js';
import { contentOf, publish, readPublicationHeaders, type PublicationHeaders } from './routes/publications.js';

export const CACHED_PUBLISHES = 'presence_http_cached_publishes_total';
/** The route pattern this path answers, as Fastify names it in the duration metric. */
const ROUTE = '/v1/presence/:handle';
const KINDS: readonly TokenKind[] = ['owner'];

export interface FastPublishDeps {
  readonly auth: Authenticator;
  readonly directory: Directory;
  readonly accounts: Accounts;
  readonly clock: () => number;
  readonly limits: HttpLimits;
  readonly durations: RequestDurations;
  readonly metrics: Metrics;
  /** HTTP_MAX_BODY_BYTES: a longer body goes to Fastify, which answers 413. */
  readonly maxBodyBytes: number;
  readonly log: { warn(obj: object, msg: string): void; error(obj: object, msg: string): void };
  /** The server is closing: every request goes to Fastify, which answers 503. */
  readonly closing: () => boolean;
}

/**
 * POST /v1/presence/{handle} with a PIDF body, for an owner whose token is
 * in the verified cache, answered on the raw node:http request without
 * Fastify's request, reply, router, hooks, content-type parser and schema
 * validation and serialization: a publisher's steady state (RFC 3903 §4.4
 * modifications and refreshes carrying a document), the service's hottest
 * write. Measured with bench/publish.ts: docs/scaling.md, "Where a
 * PUBLISH's time goes".
 *
 * It is the same publication, not a copy of it: the headers are checked by
 * the route's own function (readPublicationHeaders), the body read by the
 * route's contentOf (the safe PIDF reader, the entity compared), the change
 * made by the route's publish (Accounts.publish: the group commit, the
 * entity tags); the answer has the route's status, headers and bytes, and
 * an error the catalog's body, through answerFor, the part of Fastify's
 * error handler for errors that are not Fastify's own (the only kind
 * contentOf and publish throw); the token is checked again once the body
 * is in, where the route checks it; the same rate-limit buckets and
 * duration metric (tests/integration/fast-publish.test.ts compares both
 * paths).
 *
 * Everything that can be refused before the body is read is checked first,
 * and any doubt hands the request to Fastify untouched (returns false): a
 * token not yet verified, another route or method, an encoded or invalid
 * handle, a query string, another owner's handle, a body that is not PIDF
 * (a parameter such as charset included), no Content-Length or one over
 * the limit, an empty body, chunked transfer coding, a header the route
 * would refuse, a missing Host, a rate-limit refusal, a closing server
 * (from its preClose hook on, a few ticks after Fastify starts refusing,
 * so publications in that gap are answered like publications in flight,
 * as on the cached read path). Only errors found after the body is read
 * are answered here: the token expired or revoked, or its owner erased,
 * meanwhile (401), the document (400), its entity (400), a spent entity
 * tag (412), too many publications (409), a full write queue or the
 * database unavailable (503), and the unexpected (500, logged).
 */
export function createFastPublish(deps: FastPublishDeps): (request: IncomingMessage, response: ServerResponse) => boolean {
  deps.metrics.counter(CACHED_PUBLISHES, 'PIDF publications answered on the cached path (owner token verified before; no Fastify request objects)');
  const observeOk = deps.durations.seriesFor('POST', ROUTE, 200);

  const answer = (response: ServerResponse, status: number, headers: string[], body: string, started: number) => {
    headers.push('content-length', String(Buffer.byteLength(body, 'utf8')));
    response.writeHead(status, headers);
    // A string, not a Buffer: node:http then sends the head and the body in
    // one write (a Buffer body is a second chunk, a writev of two).
    response.end(body, 'utf8');
    deps.metrics.inc(CACHED_PUBLISHES);
    // Until the response is handed to the socket, as api/fast-read.ts measures it.
    const seconds = (performance.now() - started) / 1000;
    if (status === 200) observeOk(seconds);
    else deps.durations.observe('POST', ROUTE, status, seconds);
  };

  const fail = (response: ServerResponse, error: unknown, started: number) => {
    const { code, message, details, retryAfter } = answerFor(error, deps.log);
    // The order Fastify gives them: headers set by the handler, then the type, then the length.
    const headers = retryAfter === undefined ? ['content-type', ERROR_CONTENT_TYPE] : ['retry-after', retryAfter, 'content-type', ERROR_CONTENT_TYPE];
    try {
      answer(response, httpErrors[code].status, headers, errorBody(code, message, details), started);
    } catch (failure) {
      // Only if the answer itself failed after its head was written: the connection cannot be trusted any more.
      deps.log.error({ err: failure }, 'publication answer failed');
      response.destroy();
    }
  };

  const complete = async (response: ServerResponse, body: string, principal: Principal, ownerId: string, handle: string, checked: PublicationHeaders, started: number) => {
    try {
      // The token again, as the route checks it after the body: it may have
      // expired or been revoked (or its owner erased) while the body was
      // uploading, which takes as long as the client likes.
      const now = deps.clock();
      if (!deps.auth.stillValid(principal, now)) throw new AppError('unauthorized', now >= principal.expiresAt ? 'The token has expired.' : 'The token is not valid.');
      const content = contentOf(PIDF_MEDIA_TYPE, body, deps.accounts.entityOf(handle));
      const result = await publish(deps.accounts, ownerId, checked, content);
      // The route's headers in the route's order: expires, cache-control, etag, then Fastify's type and length.
      const headers = ['expires', String(result.expiresSeconds), 'cache-control', 'no-store'];
      if (result.etag !== undefined) headers.push('etag', `"${result.etag}"`);
      headers.push('content-type', 'application/json; charset=utf-8');
      // The route's serialized body: its schema's fields in its order.
      const json = result.etag === undefined ? `{"expires":${result.expiresSeconds}}` : `{"etag":${JSON.stringify(result.etag)},"expires":${result.expiresSeconds}}`;
      answer(response, result.created ? 201 : 200, headers, json, started);
    } catch (error) {
      fail(response, error, started);
    }
  };

  return (request, response) => {
    const handle = frontHandle(request, 'POST');
    if (handle === undefined || deps.closing()) return false;
    const started = performance.now();
    const headers = request.headers;
    if (headers['content-type'] !== PIDF_MEDIA_TYPE || headers['transfer-encoding'] !== undefined) return false;
    const length = Number(headers['content-length']);
    if (!(length > 0 && length <= deps.maxBodyBytes)) return false;
    const now = deps.clock();
    const principal = deps.auth.cached(headers.authorization, KINDS, 'presence:write', now);
    if (!principal) return false;
    // Owners publish their own presence only (the route's 403).
    const owner = deps.directory.ownerByHandle(handle);
    if (owner === undefined || owner.id !== principal.subject) return false;
    let checked: PublicationHeaders;
    try {
      checked = readPublicationHeaders(headers);
    } catch {
      return false;
    }
    // A body on a removal is the route's 400, before anything is read.
    if (checked.expiresSeconds === 0) return false;
    if (deps.limits.enabled) {
      const refusal = deps.limits.take(request.socket.remoteAddress, headers.authorization, now);
      if (refusal) {
        deps.limits.remember(request, refusal);
        return false;
      }
    }

    // From here on the request is this path's: its body is read.
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.once('end', () => {
      const body = chunks.length === 1 ? (chunks[0] as Buffer).toString('utf8') : Buffer.concat(chunks).toString('utf8');
      void complete(response, body, principal, owner.id, owner.handle, checked, started);
    });
    // An aborted upload: nothing was stored and there is no one to answer.
    request.once('error', () => response.destroy());
    return true;
  };
}
