import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { handleSchema, idSchema } from '../../core/identifiers.js';
import { ruleBodySchema, ruleSchema } from '../../policy/rule.js';
import type { Accounts } from '../accounts.js';
import type { Authenticator } from '../authenticate.js';

/**
 * Consent rules: the owner manages their own under /v1/me/rules (owner token
 * with consent:manage); an operator can do the same for any owner under
 * /v1/admin/owners/{handle}/rules (the command-line tool uses these).
 */
export function ruleRoutes(app: FastifyInstance, deps: { auth: Authenticator; accounts: Accounts }): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const rulesResponse = { 200: z.object({ rules: z.array(ruleSchema) }) };
  const ruleIdParams = z.object({ id: idSchema });
  const handleParams = z.object({ handle: handleSchema });

  const ownerOf = async (request: Parameters<Authenticator['require']>[0]) =>
    (await deps.auth.require(request, ['owner'], 'consent:manage')).subject;
  const ownerByHandle = async (request: Parameters<Authenticator['require']>[0], handle: string) => {
    await deps.auth.require(request, ['admin'], 'admin');
    return deps.accounts.ownerByHandle(handle).id;
  };

  r.get('/v1/me/rules', { schema: { response: rulesResponse } }, async (request) => ({
    rules: [...deps.accounts.listRules(await ownerOf(request))],
  }));
  r.post('/v1/me/rules', { schema: { body: ruleBodySchema, response: { 201: ruleSchema } } }, async (request, reply) =>
    reply.code(201).send(await deps.accounts.addRule(await ownerOf(request), request.body)),
  );
  r.delete('/v1/me/rules/:id', { schema: { params: ruleIdParams } }, async (request, reply) => {
    await deps.accounts.deleteRule(await ownerOf(request), request.params.id);
    return reply.code(204).send();
  });

  r.get('/v1/admin/owners/:handle/rules', { schema: { params: handleParams, response: rulesResponse } }, async (request) => ({
    rules: [...deps.accounts.listRules(await ownerByHandle(request, request.params.handle))],
  }));
  r.post(
    '/v1/admin/owners/:handle/rules',
    { schema: { params: handleParams, body: ruleBodySchema, response: { 201: ruleSchema } } },
    async (request, reply) =>
      reply.code(201).send(await deps.accounts.addRule(await ownerByHandle(request, request.params.handle), request.body)),
  );
  r.delete('/v1/admin/owners/:handle/rules/:id', { schema: { params: handleParams.extend(ruleIdParams.shape) } }, async (request, reply) => {
    await deps.accounts.deleteRule(await ownerByHandle(request, request.params.handle), request.params.id);
    return reply.code(204).send();
  });
}
