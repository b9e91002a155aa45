import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { MANUAL, overrideInputSchema, sessionIdSchema, sessionSource } from '../../core/presence-overrides.js';
import type { Accounts } from '../accounts.js';
import type { Authenticator } from '../authenticate.js';

/**
 * The owner's manual status (PUT/DELETE /v1/me/status) and app presence
 * sessions (PUT/DELETE /v1/me/sessions/{id}), each with an expiry; see
 * core/presence-overrides.ts for how they combine with the derived state.
 * Owner tokens with presence:write (an app acting for its owner holds one).
 */
const overrideResponse = z.object({ source: z.string(), availability: z.string(), activities: z.array(z.string()), expiresAt: z.string() });

export function statusRoutes(app: FastifyInstance, deps: { auth: Authenticator; accounts: Accounts }): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const owner = async (request: FastifyRequest) => (await deps.auth.require(request, ['owner'], 'presence:write')).subject;
  const sessionParams = z.object({ id: sessionIdSchema });
  const respond = (o: { source: string; availability: string; activities: readonly string[]; expiresAt: number }) => ({
    source: o.source,
    availability: o.availability,
    activities: [...o.activities],
    expiresAt: new Date(o.expiresAt).toISOString(),
  });

  r.put('/v1/me/status', { schema: { body: overrideInputSchema, response: { 200: overrideResponse } } }, async (request) =>
    respond(await deps.accounts.setOverride(await owner(request), MANUAL, request.body)),
  );
  r.delete('/v1/me/status', async (request, reply) => {
    await deps.accounts.removeOverride(await owner(request), MANUAL);
    return reply.code(204).send();
  });
  r.put('/v1/me/sessions/:id', { schema: { params: sessionParams, body: overrideInputSchema, response: { 200: overrideResponse } } }, async (request) =>
    respond(await deps.accounts.setOverride(await owner(request), sessionSource(request.params.id), request.body)),
  );
  r.delete('/v1/me/sessions/:id', { schema: { params: sessionParams } }, async (request, reply) => {
    await deps.accounts.removeOverride(await owner(request), sessionSource(request.params.id));
    return reply.code(204).send();
  });
}
