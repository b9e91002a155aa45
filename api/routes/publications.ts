import type { IncomingHttpHeaders } from 'node:http';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError } from '../../core/errors.js';
import { handleSchema } from '../../core/identifiers.js';
import { parsePidf } from '../../core/parse-pidf.js';
import { activitySchema, availabilitySchema } from '../../core/presence.js';
import { PIDF_MEDIA_TYPE } from '../../core/render-pidf.js';
import type { Accounts, PublicationContent } from '../accounts.js';
import type { Authenticator } from '../authenticate.js';
import { documented, errors, json, operation, ownerAccess, type ResponseHeaders } from '../openapi.js';
import { noteSchema } from '../../core/text.js';

/**
 * POST /v1/presence/{handle}: SIP PUBLISH (RFC 3903) mapped onto HTTP, for
 * apps, manual clients and SIP bridges publishing for an owner (owner token
 * with presence:write). The mapping:
 *
 * | SIP (RFC 3903)                   | HTTP here                                  |
 * |----------------------------------|--------------------------------------------|
 * | PUBLISH to the presentity        | POST /v1/presence/{handle}                 |
 * | Event: presence                  | Event: presence (optional; other -> bad_event, as 489) |
 * | Expires / Min-Expires            | Expires / Min-Expires (seconds)            |
 * | SIP-ETag in the 2xx              | ETag (and `etag` in the JSON body)         |
 * | SIP-If-Match                     | If-Match (one strong tag)                  |
 * | 412 Conditional Request Failed   | 412 precondition_failed                    |
 * | 423 Interval Too Brief           | 423 interval_too_brief + Min-Expires       |
 * | application/pidf+xml body        | application/pidf+xml, or the JSON form     |
 *
 * Initial: no If-Match, a body -> 201. Refresh: If-Match, no body. Modify:
 * If-Match and a body. Remove: If-Match and Expires: 0. Every live
 * publication is composed with the sensor-derived state like an app
 * session (core/presence-overrides.ts): the most significant availability
 * wins, activities merge, a manual status overrides them all.
 */
export const MIN_EXPIRES_SECONDS = 60;
export const MAX_EXPIRES_SECONDS = 86_400;
export const DEFAULT_EXPIRES_SECONDS = 3600;

const jsonPublication = z
  .object({
    availability: availabilitySchema,
    activities: z.array(activitySchema).max(8).default([]),
    note: noteSchema.optional(),
  })
  .strict();

/** RFC 3903 §4.1 / RFC 9110 §8.8.3: one strong entity tag, quoted; the tags this service issues are base64url. */
function parseIfMatch(header: string | string[] | undefined): string | undefined {
  if (header === undefined) return undefined;
  const value = Array.isArray(header) ? header.join(',') : header;
  const match = /^\s*"([A-Za-z0-9_-]{1,64})"\s*$/.exec(value);
  if (!match?.[1]) throw new AppError('invalid_request', 'If-Match must be one strong entity tag from a previous publication, such as "abc123".');
  return match[1];
}

/** The publication's expiry (RFC 3903 §4.1, §6 step 6); the route adds Min-Expires to an `interval_too_brief` (SIP's 423). */
function parseExpires(header: string | string[] | undefined): number {
  if (header === undefined) return DEFAULT_EXPIRES_SECONDS;
  if (Array.isArray(header) || !/^\s*\d{1,10}\s*$/.test(header)) throw new AppError('invalid_request', 'Expires must be a number of seconds.');
  const seconds = Number(header);
  if (seconds !== 0 && seconds < MIN_EXPIRES_SECONDS) throw new AppError('interval_too_brief', `The expiry must be 0 or at least ${MIN_EXPIRES_SECONDS} seconds.`);
  // RFC 3903 §6 step 6: the compositor may shorten a long expiry.
  return Math.min(seconds, MAX_EXPIRES_SECONDS);
}

function parseEvent(header: string | string[] | undefined): void {
  if (header === undefined) return;
  const value = (Array.isArray(header) ? header.join(',') : header).split(';')[0]?.trim().toLowerCase();
  if (value !== 'presence') throw new AppError('bad_event');
}

/** What a PUBLISH's headers ask for, checked before anything is read or stored (the route and api/fast-publish.ts). */
export interface PublicationHeaders {
  readonly ifMatch: string | undefined;
  readonly expiresSeconds: number;
}

/** Every header a PUBLISH depends on, checked in the route's order; throws the error the request gets. */
export function readPublicationHeaders(headers: IncomingHttpHeaders): PublicationHeaders {
  parseEvent(headers.event);
  const ifMatch = parseIfMatch(headers['if-match']);
  return { ifMatch, expiresSeconds: parseExpires(headers.expires) };
}

/** The published content: PIDF (its entity must be the owner's, RFC 3903 §6 step 4) or the JSON form; none for an empty body. */
export function contentOf(contentType: string | undefined, body: unknown, entity: string): PublicationContent | undefined {
  if (body === undefined || body === null || body === '') return undefined;
  const type = (contentType ?? '').split(';')[0]?.trim().toLowerCase();
  if (type === PIDF_MEDIA_TYPE) {
    const published = parsePidf(String(body));
    // RFC 3903 §6 step 4 compares the Request-URI and the document's entity.
    if (published.entity !== entity) throw new AppError('invalid_document', `The document's entity must be ${entity}.`);
    return published;
  }
  if (type !== 'application/json') throw new AppError('unsupported_media_type', `Publish ${PIDF_MEDIA_TYPE} or application/json.`);
  const parsed = jsonPublication.safeParse(body);
  if (!parsed.success) throw new AppError('invalid_request', 'Invalid body.', parsed.error.issues.map((i) => `/${i.path.join('/')} ${i.message}`));
  return parsed.data;
}

/** The publication change itself, once headers and body are read (the route and api/fast-publish.ts). */
export function publish(accounts: Accounts, ownerId: string, headers: PublicationHeaders, content: PublicationContent | undefined): ReturnType<Accounts['publish']> {
  if (headers.expiresSeconds === 0 && content !== undefined) throw new AppError('invalid_request', 'A removal (Expires: 0) carries no body.');
  return accounts.publish(ownerId, { ifMatch: headers.ifMatch, expiresSeconds: headers.expiresSeconds, content });
}

const publicationResult = z.object({
  etag: z.string().optional().describe('The entity tag of the publication (also in the ETag header); absent after a removal.'),
  expires: z.number().int().min(0).describe('Seconds until the publication expires (also in the Expires header); 0 after a removal.'),
});

const publicationHeaders: ResponseHeaders = {
  ETag: { type: 'string', description: 'The entity tag of the publication (SIP-ETag): send it in If-Match to refresh, modify or remove it.' },
  Expires: { type: 'integer', description: 'Seconds until the publication expires.' },
  'Cache-Control': { type: 'string', description: 'no-store' },
};

const publishErrors = errors('invalid_request', 'invalid_document', 'bad_event', 401, 'forbidden', 404, 'conflict', 412, 413, 415, 423);

export function publicationRoutes(app: FastifyInstance, deps: { auth: Authenticator; accounts: Accounts }): void {
  const schema = {
    ...operation(
      'publish',
      "Publish, refresh, modify or remove the owner's presence",
      ownerAccess('presence:write'),
      'SIP PUBLISH (RFC 3903) over HTTP. Initial: a body and no If-Match (201). Refresh: If-Match and no body. Modify: If-Match and a body. Remove: If-Match and Expires: 0. Owners publish their own presence only.',
    ),
    params: z.object({ handle: handleSchema }),
    response: {
      200: json(publicationResult, 'The publication was refreshed, modified or removed.', publicationHeaders),
      201: json(publicationResult, 'The publication was created.', publicationHeaders),
      ...publishErrors,
      423: { ...publishErrors[423], headers: { 'Min-Expires': { type: 'integer', description: `The shortest expiry accepted, in seconds (${MIN_EXPIRES_SECONDS}).` } } satisfies ResponseHeaders },
    },
  };
  const config = documented({
    headers: z.object({
      event: z.string().optional().describe('The event package: presence, the only one (another is `bad_event`).'),
      'if-match': z.string().optional().describe('One strong entity tag of a live publication (SIP-If-Match).'),
      expires: z
        .string()
        .regex(/^\d+$/)
        .optional()
        .describe(`Seconds: 0 removes, otherwise at least ${MIN_EXPIRES_SECONDS} (longer is cut to ${MAX_EXPIRES_SECONDS}); default ${DEFAULT_EXPIRES_SECONDS}.`),
    }),
    body: {
      description: 'The presence to publish, as PIDF or as JSON; none for a refresh or a removal.',
      content: { [PIDF_MEDIA_TYPE]: z.string().describe('A PIDF document (RFC 3863) whose entity is the owner.'), 'application/json': jsonPublication },
    },
    optionalBody: true,
  });
  app.withTypeProvider<ZodTypeProvider>().post('/v1/presence/:handle', { schema, config }, async (request, reply) => {
    const principal = await deps.auth.require(request, ['owner'], 'presence:write');
    // Compared with the caller's own handle: another owner's handle and one no owner holds are the same 403, so this does not tell whether a handle exists.
    const owner = deps.accounts.ownerById(principal.subject);
    if (owner.handle !== request.params.handle) throw new AppError('forbidden', 'Owners publish their own presence only.');
    // Every header is checked before anything is stored.
    let checked: PublicationHeaders;
    try {
      checked = readPublicationHeaders(request.headers);
    } catch (error) {
      if (error instanceof AppError && error.code === 'interval_too_brief') reply.header('min-expires', String(MIN_EXPIRES_SECONDS));
      throw error;
    }
    const content = contentOf(request.headers['content-type'], request.body, deps.accounts.entityOf(owner.handle));
    const result = await publish(deps.accounts, owner.id, checked, content);
    reply.header('expires', String(result.expiresSeconds)).header('cache-control', 'no-store');
    if (result.etag !== undefined) reply.header('etag', `"${result.etag}"`);
    return reply.code(result.created ? 201 : 200).send({ ...(result.etag === undefined ? {} : { etag: result.etag }), expires: result.expiresSeconds });
  });
}
