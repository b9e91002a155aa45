import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { AdminActionRow, AdminActionStore } from '../../core/db/admin-actions.js';
import type { Directory } from '../../core/directory.js';
import { AppError } from '../../core/errors.js';
import { handleSchema } from '../../core/identifiers.js';
import type { Authenticator } from '../authenticate.js';
import { adminAccess, errors, json, operation, ownerAccess } from '../openapi.js';
import { decodeCursor, encodeCursor } from '../page-cursor.js';

/**
 * The operators' audit trail (api/admin-audit.ts), newest first, paged
 * with the `next` cursor of each page: an owner sees the actions that
 * concerned them, an operator every action. Kept AUDIT_RETENTION_DAYS.
 */
const page = {
  /** The `next` of the previous page. */
  cursor: z.string().regex(/^[A-Za-z0-9_-]{1,200}$/).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
};

const entrySchema = z.object({
  at: z.string(),
  operator: z.string().describe("The admin token's subject."),
  tokenId: z.string().nullable().describe("The admin token's id: POST /v1/admin/tokens/revoke with `{ tokenId }` refuses that token."),
  tokenExpiresAt: z.string(),
  method: z.string(),
  route: z.string().describe('The route pattern, such as /v1/admin/owners/:handle/export.'),
  owner: z.string().nullable().describe('The handle of the owner it concerned; null for none, or one erased since.'),
  watcherId: z.string().nullable(),
  status: z.number().nullable().describe('The HTTP status answered; null while running, or if the client went away or the process ended first.'),
});

const EARLIEST = Date.parse('0001-01-01T00:00:00Z');
const LATEST = Date.parse('9999-12-31T23:59:59.999Z');

const pageSchema = z.object({ next: z.string().optional(), entries: z.array(entrySchema) });

export function adminActionRoutes(app: FastifyInstance, deps: { auth: Authenticator; store: AdminActionStore; directory: Directory }): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const list = async (filter: { ownerId?: string | undefined; since?: Date | undefined }, cursor: string | undefined, limit: number) => {
    const rows = await deps.store.list(filter, cursor === undefined ? undefined : decodeCursor(cursor), limit);
    const last = rows.at(-1);
    return { ...(last && rows.length === limit ? { next: encodeCursor(last.at, last.id) } : {}), entries: rows.map((row) => entry(row, deps.directory)) };
  };

  r.get(
    '/v1/me/admin-actions',
    {
      schema: {
        ...operation('access-log', 'Page through what operators did concerning you', ownerAccess('consent:manage'), 'Every admin API request that named you (your presence read, your export, your rules or devices changed, your tokens issued or revoked), newest first; pass `next` as `cursor` for the following page.'),
        querystring: z.object(page).strict(),
        response: { 200: json(pageSchema, 'A page of the actions.'), ...errors(400, 401, 403) },
      },
    },
    async (request) => {
      const principal = await deps.auth.require(request, ['owner'], 'consent:manage');
      return list({ ownerId: principal.subject }, request.query.cursor, request.query.limit);
    },
  );

  r.get(
    '/v1/admin/actions',
    {
      schema: {
        ...operation('admin', 'Page through the operators\' audit trail', adminAccess, 'Every admin API request that passed validation and authentication, this one included, newest first.'),
        querystring: z.object({ ...page, owner: handleSchema.optional(), since: z.iso.datetime({ offset: true }).optional() }).strict(),
        response: { 200: json(pageSchema, 'A page of the actions.'), ...errors(400, 401, 403, 404) },
      },
    },
    async (request) => {
      await deps.auth.require(request, ['admin'], 'admin');
      const { owner, since, cursor, limit } = request.query;
      const ownerId = owner === undefined ? undefined : deps.directory.ownerByHandle(owner)?.id;
      if (owner !== undefined && ownerId === undefined) throw new AppError('not_found', 'No such owner.');
      // Outside the years 1-9999 (0000-…, or 9999-12-31 with a negative offset) PostgreSQL cannot read the instant: clamped, which selects the same actions.
      const from = since === undefined ? undefined : new Date(Math.min(Math.max(Date.parse(since), EARLIEST), LATEST));
      return list({ ownerId, since: from }, cursor, limit);
    },
  );
}

function entry(row: AdminActionRow, directory: Directory): z.infer<typeof entrySchema> {
  return {
    at: row.at.toISOString(),
    operator: row.operator,
    tokenId: row.tokenId,
    tokenExpiresAt: row.tokenExpiresAt.toISOString(),
    method: row.method,
    route: row.route,
    owner: row.ownerId === null ? null : (directory.owner(row.ownerId)?.handle ?? null),
    watcherId: row.watcherId,
    status: row.status,
  };
}
