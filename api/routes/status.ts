import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { MANUAL, overrideInputSchema, sessionIdSchema, sessionSource } from '../../core/presence-overrides.js';
import type { Accounts } from '../accounts.js';
import type { Authenticator } from '../authenticate.js';
import { empty, errors, json, operation, ownerAccess } from '../openapi.js';

/**
 * The owner's manual status (PUT/DELETE /v1/me/status) and app presence
 * sessions (PUT/DELETE /v1/me/sessions/{id}), each with an expiry; see
 * core/presence-overrides.ts for how they combine with the derived state.
 * Owner tokens: status:manage for the manual status, presence:write for
 * sessions (an app acting for its owner holds such a token).
 */
const overrideResponse = z.object({ source: z.string(), availability: z.string(), activities: z.array(z.string()), note: z.string().optional(), expiresAt: z.string() });

export function statusRoutes(app: FastifyInstance, deps: { auth: Authenticator; accounts: Accounts }): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  // An app holding presence:write may run sessions; only status:manage may set or clear the owner's own status.
  const owner = async (request: FastifyRequest, scope: 'presence:write' | 'status:manage' = 'presence:write') => (await deps.auth.require(request, ['owner'], scope)).subject;
  const sessionParams = z.object({ id: sessionIdSchema });
  const respond = (o: { source: string; availability: string; activities: readonly string[]; note?: string | undefined; expiresAt: number }) => ({
    source: o.source,
    availability: o.availability,
    activities: [...o.activities],
    ...(o.note === undefined ? {} : { note: o.note }),
    expiresAt: new Date(o.expiresAt).toISOString(),
  });

  const override = (description: string) => json(overrideResponse, description);
  const deleteErrors = errors('invalid_request', 401, 'forbidden', 'not_found', 413, 415);

  r.put(
    '/v1/me/status',
    {
      schema: {
        ...operation('status', 'Set your manual status', ownerAccess('status:manage'), 'It overrides the derived state and every app session until it expires or is cleared.'),
        body: overrideInputSchema,
        response: { 200: override('The manual status.'), ...errors('invalid_request', 401, 'forbidden', 413, 415) },
      },
    },
    async (request) => respond(await deps.accounts.setOverride(await owner(request, 'status:manage'), MANUAL, request.body)),
  );
  r.delete(
    '/v1/me/status',
    { schema: { ...operation('status', 'Clear your manual status', ownerAccess('status:manage')), response: { 204: empty('Cleared.'), ...deleteErrors } } },
    async (request, reply) => {
      await deps.accounts.removeOverride(await owner(request, 'status:manage'), MANUAL);
      return reply.code(204).send();
    },
  );
  r.put(
    '/v1/me/sessions/:id',
    {
      schema: {
        ...operation('status', 'Start or update an app presence session', ownerAccess('presence:write'), 'Combined with the derived state like a publication; a limited number per owner.'),
        params: sessionParams,
        body: overrideInputSchema,
        response: { 200: override('The session.'), ...errors('invalid_request', 401, 'forbidden', 'conflict', 413, 415) },
      },
    },
    async (request) => respond(await deps.accounts.setOverride(await owner(request), sessionSource(request.params.id), request.body)),
  );
  r.delete(
    '/v1/me/sessions/:id',
    { schema: { ...operation('status', 'End an app presence session', ownerAccess('presence:write')), params: sessionParams, response: { 204: empty('Ended.'), ...deleteErrors } } },
    async (request, reply) => {
      await deps.accounts.removeOverride(await owner(request), sessionSource(request.params.id));
      return reply.code(204).send();
    },
  );
}
