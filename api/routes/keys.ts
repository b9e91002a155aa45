import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { Repository } from '../../core/db/repository.js';
import { AppError } from '../../core/errors.js';
import type { KeySet } from '../../core/identity/key-set.js';
import type { Authenticator } from '../authenticate.js';
import { adminAccess, empty, errors, json, operation } from '../openapi.js';

/**
 * The service's signing keys, for operators: which exist, which one signs,
 * and retiring an old one once the tokens it signed have expired (the
 * longest-lived are device tokens, a year by default). Rotating is
 * changing SIGNING_KEY (or the key file) and restarting; see the README.
 */
export function keyRoutes(app: FastifyInstance, deps: { auth: Authenticator; repository: Repository; keys: KeySet }): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  r.get(
    '/v1/admin/keys',
    {
      schema: {
        ...operation('admin', 'List the signing keys', adminAccess),
        response: {
          200: json(
            z.object({ keys: z.array(z.object({ kid: z.string(), algorithm: z.string(), createdAt: z.string(), retiredAt: z.string().nullable(), signing: z.boolean() })) }),
            'Every key the service has signed with, oldest first; `signing` marks the one it signs with now.',
          ),
          ...errors(401, 403),
        },
      },
    },
    async (request) => {
      await deps.auth.require(request, ['admin'], 'admin');
      const keys = await deps.repository.listSigningKeys();
      return {
        keys: keys.map((k) => ({ kid: k.kid, algorithm: k.algorithm, createdAt: k.createdAt.toISOString(), retiredAt: k.retiredAt?.toISOString() ?? null, signing: k.kid === deps.keys.current.kid })),
      };
    },
  );
  r.post(
    '/v1/admin/keys/:kid/retire',
    {
      schema: {
        ...operation('admin', 'Retire a signing key', adminAccess, 'Tokens it signed stop verifying, on every process of a group within a minute. The key the service signs with now cannot be retired.'),
        params: z.object({ kid: z.string().regex(/^[A-Za-z0-9_-]{1,128}$/) }),
        response: { 204: empty('Retired.'), ...errors(400, 401, 403, 404, 'conflict') },
      },
    },
    async (request, reply) => {
      await deps.auth.require(request, ['admin'], 'admin');
      if (request.params.kid === deps.keys.current.kid) throw new AppError('conflict', 'This key signs now; rotate to a new key first.');
      if (!(await deps.repository.retireSigningKey(request.params.kid))) throw new AppError('not_found', 'No such live key.');
      await deps.keys.reload();
      return reply.code(204).send();
    },
  );
}
