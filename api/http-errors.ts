import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { AppError, httpErrors, type HttpErrorCode } from '../core/errors.js';

/**
 * Every HTTP error leaves as `{ code, message, details? }` with a code from
 * the catalog. Internal errors are logged with their stack and answered with
 * the generic message only.
 */
export function sendError(reply: FastifyReply, code: HttpErrorCode, message?: string, details?: readonly string[]): FastifyReply {
  const body: { code: string; message: string; details?: readonly string[] } = { code, message: message ?? httpErrors[code].message };
  if (details && details.length > 0) body.details = details;
  return reply.code(httpErrors[code].status).type('application/json; charset=utf-8').send(JSON.stringify(body));
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
    if (error instanceof AppError) return sendError(reply, error.code, error.message, error.details);
    if (hasZodFastifySchemaValidationErrors(error)) {
      const details = error.validation.map((v) => `${v.instancePath || '/'} ${v.message ?? 'is invalid'}`.trim());
      return sendError(reply, 'invalid_request', `Invalid ${error.validationContext ?? 'request'}.`, details);
    }
    const mapped = error.code ? fastifyCodes[error.code] : undefined;
    if (mapped) return sendError(reply, mapped, mapped === 'invalid_request' ? 'The request body is not valid JSON.' : undefined);
    if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
      return sendError(reply, 'invalid_request', error.message);
    }
    request.log.error({ err: error }, 'unhandled error');
    return sendError(reply, 'internal');
  });
  app.setNotFoundHandler((_request, reply) => sendError(reply, 'not_found'));
}
