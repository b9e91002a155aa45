import { DrizzleQueryError } from 'drizzle-orm';
import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { STATUS_CODES } from 'node:http';
import { AppError, httpErrors, type HttpErrorCode } from '../core/errors.js';
import { isDatabaseUnavailable, loggableDbError } from '../core/db/db-error.js';

export const ERROR_CONTENT_TYPE = 'application/json; charset=utf-8';

/**
 * Every HTTP error leaves as `{ code, message, details? }` with a code from
 * the catalog. Internal errors are logged with their stack and answered with
 * the generic message only.
 */
export function sendError(reply: FastifyReply, code: HttpErrorCode, message?: string, details?: readonly string[]): FastifyReply {
  return reply.code(httpErrors[code].status).type(ERROR_CONTENT_TYPE).send(errorBody(code, message, details));
}

/** An error's body in the catalog's shape. */
export function errorBody(code: HttpErrorCode, message?: string, details?: readonly string[]): string {
  const body: { code: string; message: string; details?: readonly string[] } = { code, message: message ?? httpErrors[code].message };
  if (details && details.length > 0) body.details = details;
  return JSON.stringify(body);
}

/** What an error thrown by a handler is answered with; `retryAfter`: seconds, for a Retry-After header. */
export interface ErrorAnswer {
  readonly code: HttpErrorCode;
  readonly message?: string;
  readonly details?: readonly string[];
  readonly retryAfter?: string;
}

/**
 * The answer to an error that is not Fastify's own (the route handlers'
 * and api/fast-publish.ts's): an AppError as it says; PostgreSQL down or
 * restarting, a 503 the client may retry shortly (the write-behind holds
 * and retries what ingest applied meanwhile); anything else is logged with
 * its stack (a database error without the statement's parameters, which
 * may hold personal data) and answered with the generic message only.
 */
export function answerFor(error: unknown, log: { warn(obj: object, msg: string): void; error(obj: object, msg: string): void }): ErrorAnswer {
  if (error instanceof AppError) return { code: error.code, message: error.message, ...(error.details ? { details: error.details } : {}) };
  if (isDatabaseUnavailable(error)) {
    log.warn({ error: loggableDbError(error) }, 'database unavailable');
    return { code: 'unavailable', message: 'The database is unavailable; try again shortly.', retryAfter: '2' };
  }
  if (error instanceof DrizzleQueryError) {
    // The stack's frames only: its first lines repeat the message, parameters included.
    const frames = error.stack?.split('\n').filter((line) => line.trimStart().startsWith('at '));
    log.error({ error: loggableDbError(error), stack: frames?.join('\n') }, 'unhandled database error');
    return { code: 'internal' };
  }
  log.error({ err: error }, 'unhandled error');
  return { code: 'internal' };
}

const fastifyCodes: Record<string, HttpErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'payload_too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'invalid_request',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'invalid_request',
  FST_ERR_CTP_INVALID_JSON_BODY: 'invalid_request',
};

export function installErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (!(error instanceof AppError)) {
      if (hasZodFastifySchemaValidationErrors(error)) {
        const details = error.validation.map((v) => `${v.instancePath || '/'} ${v.message ?? 'is invalid'}`.trim());
        return sendError(reply, 'invalid_request', `Invalid ${error.validationContext ?? 'request'}.`, details);
      }
      const mapped = error.code ? fastifyCodes[error.code] : undefined;
      if (mapped) return sendError(reply, mapped, mapped === 'invalid_request' ? 'The request body is not valid JSON.' : undefined);
      if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
        return sendError(reply, 'invalid_request', error.message);
      }
    }
    const answer = answerFor(error, request.log);
    if (answer.retryAfter !== undefined) reply.header('retry-after', answer.retryAfter);
    return sendError(reply, answer.code, answer.message, answer.details);
  });
  app.setNotFoundHandler((_request, reply) => sendError(reply, 'not_found'));
}

/**
 * Requests node:http cannot parse (a bad header character, a broken
 * Content-Length or chunk, headers over the limit, too slow) never reach a
 * route: they are answered here, on the raw socket, in the catalog's shape,
 * and the connection is closed (after a framing error nothing more on it
 * can be trusted).
 */
export function answerClientError(error: Error & { code?: string }, socket: { writable: boolean; destroyed: boolean; end(data: string): void; destroy(): void }): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  if (!socket.writable) return socket.destroy();
  const code: HttpErrorCode = error.code === 'HPE_HEADER_OVERFLOW' ? 'headers_too_large' : error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'request_timeout' : 'invalid_request';
  writeRawError(socket, code, code === 'invalid_request' ? 'The request is not valid HTTP/1.1.' : undefined);
}

/** A whole error response on a raw socket: status line, headers, the catalog body; the connection closes. */
export function writeRawError(socket: { end(data: string): void }, code: HttpErrorCode, message?: string): void {
  const { status } = httpErrors[code];
  const body = JSON.stringify({ code, message: message ?? httpErrors[code].message });
  socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
}
