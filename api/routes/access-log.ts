import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { Readable } from 'node:stream';
import { z } from 'zod';
import { handleSchema } from '../../core/identifiers.js';
import type { Accounts } from '../accounts.js';
import type { Authenticator } from '../authenticate.js';
import { adminAccess, errors, json, media, operation, ownerAccess } from '../openapi.js';

/**
 * The owner's access log: every read and stream of their presence by a
 * watcher, newest first, paged with the `next` cursor of each page, and
 * exported whole as NDJSON. Kept AUDIT_RETENTION_DAYS.
 */
const query = z
  .object({
    /** The `next` of the previous page. */
    cursor: z.string().regex(/^[A-Za-z0-9_-]{1,200}$/).optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
  })
  .strict();

const response = z.object({
  /** Present when there may be more: pass it as `cursor`. */
  next: z.string().optional(),
  entries: z.array(
    z.object({
      watcherId: z.string(),
      watcherName: z.string().nullable(),
      at: z.string(),
      action: z.string(),
      outcome: z.string(),
      fields: z.array(z.string()),
      count: z.number(),
    }),
  ),
});

export function accessLogRoutes(app: FastifyInstance, deps: { auth: Authenticator; accounts: Accounts }): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const list = (ownerId: string, q: z.infer<typeof query>) => deps.accounts.accessLog(ownerId, q.cursor, q.limit);
  const self = async (request: FastifyRequest) => (await deps.auth.require(request, ['owner'], 'consent:manage')).subject;

  r.get(
    '/v1/me/access-log',
    {
      schema: {
        ...operation('access-log', 'Page through the access log', ownerAccess('consent:manage'), 'Newest first; pass `next` as `cursor` for the following page.'),
        querystring: query,
        response: { 200: json(response, 'A page of the access log.'), ...errors(400, 401, 403) },
      },
    },
    async (request) => list(await self(request), request.query),
  );
  // The whole log as newline-delimited JSON (one entry per line, newest
  // first), streamed page by page so a long history never sits in memory
  // (a stream, not a body the type provider knows: a plain route).
  app.get(
    '/v1/me/access-log/export',
    {
      schema: {
        ...operation('access-log', 'Export the whole access log', ownerAccess('consent:manage'), 'Newline-delimited JSON, one entry (as in a page) per line, newest first, streamed.'),
        response: {
          200: media(
            'The whole log, one JSON entry per line.',
            { 'application/x-ndjson': z.string().describe('Lines of JSON objects shaped like the `entries` of GET /v1/me/access-log.') },
            { 'Content-Disposition': { type: 'string', description: 'attachment; filename="access-log.ndjson"' } },
          ),
          ...errors(401, 403),
        },
      },
    },
    async (request, reply) => {
      const ownerId = await self(request);
      async function* lines() {
        let cursor: string | undefined;
        do {
          const page = await deps.accounts.accessLog(ownerId, cursor, 1000);
          for (const entry of page.entries) yield `${JSON.stringify(entry)}\n`;
          cursor = page.next;
        } while (cursor !== undefined);
      }
      return reply
        .type('application/x-ndjson; charset=utf-8')
        .header('content-disposition', 'attachment; filename="access-log.ndjson"')
        .header('cache-control', 'no-store')
        .send(Readable.from(lines()));
    },
  );
  r.get(
    '/v1/admin/owners/:handle/access-log',
    {
      schema: {
        ...operation(['access-log', 'admin'], "Page through an owner's access log", adminAccess),
        params: z.object({ handle: handleSchema }),
        querystring: query,
        response: { 200: json(response, 'A page of the access log.'), ...errors(400, 401, 403, 404) },
      },
    },
    async (request) => {
      await deps.auth.require(request, ['admin'], 'admin');
      return list(deps.accounts.ownerByHandle(request.params.handle).id, request.query);
    },
  );
}
