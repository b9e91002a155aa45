import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { Directory } from '../../core/directory.js';
import type { Repository } from '../../core/db/repository.js';
import { AppError } from '../../core/errors.js';
import { handleSchema, idSchema } from '../../core/identifiers.js';
import type { Authenticator } from '../authenticate.js';
import { adminAccess, empty, errors, json, operation } from '../openapi.js';

/**
 * Links between accounts at the external OpenID Connect provider
 * (OIDC_ISSUER) and owners or watchers (core/identity/oidc.ts), for
 * operators. A token the provider issued for a linked account then acts as
 * that owner or watcher, with the scopes it carries.
 */
const account = { issuer: z.string().min(1).max(2048), subject: z.string().min(1).max(255) };
const linkSchema = z.object({ ...account, owner: handleSchema.optional(), watcher: idSchema.optional() }).strict();

export function identityRoutes(app: FastifyInstance, deps: { auth: Authenticator; repository: Repository; directory: Directory; forgetVerified: () => void }): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const admin = (request: Parameters<Authenticator['require']>[0]) => deps.auth.require(request, ['admin'], 'admin');
  const linkOut = z.object({ issuer: z.string(), subject: z.string(), owner: z.string().nullable(), watcher: z.string().nullable(), createdAt: z.string() });

  r.get(
    '/v1/admin/identities',
    { schema: { ...operation('admin', 'List linked external accounts', adminAccess), response: { 200: json(z.object({ identities: z.array(linkOut) }), 'Every link.'), ...errors(401, 403) } } },
    async (request) => {
      await admin(request);
      return {
        identities: (await deps.repository.listIdentities()).map((l) => ({
          issuer: l.issuer,
          subject: l.subject,
          owner: l.ownerId === null ? null : (deps.directory.owner(l.ownerId)?.handle ?? null),
          watcher: l.watcherId,
          createdAt: l.createdAt.toISOString(),
        })),
      };
    },
  );
  r.post(
    '/v1/admin/identities',
    {
      schema: {
        ...operation('admin', 'Link an external account to an owner or a watcher', adminAccess, 'Exactly one of `owner` (a handle) and `watcher` (an id). The issuer is the provider\'s `iss`, the subject its `sub` for the account.'),
        body: linkSchema,
        response: { 201: json(z.object({ issuer: z.string(), subject: z.string() }), 'Linked.'), ...errors(400, 401, 403, 404, 'conflict', 413, 415) },
      },
    },
    async (request, reply) => {
      await admin(request);
      const { issuer, subject, owner, watcher } = request.body;
      if ((owner === undefined) === (watcher === undefined)) throw new AppError('invalid_request', 'Name exactly one of owner and watcher.');
      const ownerId = owner === undefined ? undefined : deps.directory.ownerByHandle(owner)?.id;
      if (owner !== undefined && !ownerId) throw new AppError('not_found', 'No such owner.');
      if (watcher !== undefined && !deps.directory.activeWatcher(watcher)) throw new AppError('not_found', 'No such watcher.');
      const linked = await deps.repository.linkIdentity({ issuer, subject, ...(ownerId ? { ownerId } : {}), ...(watcher ? { watcherId: watcher } : {}) });
      if (!linked) throw new AppError('conflict', 'This account is linked already; unlink it first.');
      return reply.code(201).send({ issuer, subject });
    },
  );
  r.delete(
    '/v1/admin/identities',
    {
      schema: {
        ...operation('admin', 'Unlink an external account', adminAccess, "Its tokens stop working at once, on every process of a group (each forgets the tokens it verified and checks them again)."),
        querystring: z.object(account).strict(),
        response: { 204: empty('Unlinked.'), ...errors(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      await admin(request);
      if (!(await deps.repository.unlinkIdentity(request.query.issuer, request.query.subject))) throw new AppError('not_found', 'No such link.');
      deps.forgetVerified();
      return reply.code(204).send();
    },
  );
}
