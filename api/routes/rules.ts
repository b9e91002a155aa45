import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError } from '../../core/errors.js';
import { handleSchema, idSchema } from '../../core/identifiers.js';
import { exportPresRules, importPresRules } from '../../policy/pres-rules-xml.js';
import { groupBodySchema, groupSchema, ruleBodySchema, ruleSchema } from '../../policy/rule.js';
import type { Accounts } from '../accounts.js';
import type { Authenticator } from '../authenticate.js';
import { negotiate } from '../negotiate.js';

/**
 * Consent rules and watcher groups. The owner manages their own under
 * /v1/me (owner token with consent:manage); an operator can do the same for
 * any owner under /v1/admin/owners/{handle} (the command-line tool uses
 * these). The whole rule set reads and writes as JSON or as RFC 5025
 * pres-rules (`application/auth-policy+xml`, RFC 4745 §9): a PUT replaces
 * every rule at once, and a document with anything the service does not
 * support is refused whole, never half-applied.
 */
export const AUTH_POLICY_MEDIA_TYPE = 'application/auth-policy+xml';
const JSON_MEDIA_TYPE = 'application/json';

const rulesResponse = z.object({ rules: z.array(ruleSchema) });
const rulesBody = z.object({ rules: z.array(ruleBodySchema.extend({ id: idSchema.optional() })).max(200) }).strict();
const groupsResponse = z.object({ groups: z.array(groupSchema) });
const idParams = z.object({ id: idSchema });
const handleParams = z.object({ handle: handleSchema });

export function ruleRoutes(app: FastifyInstance, deps: { auth: Authenticator; accounts: Accounts }): void {
  const r = app.withTypeProvider<ZodTypeProvider>();

  /** /v1/me/... acts for the owner in the token; /v1/admin/owners/{handle}/... for an operator. */
  const scopes = [
    { prefix: '/v1/me', params: z.object({}), ownerOf: async (request: FastifyRequest) => (await deps.auth.require(request, ['owner'], 'consent:manage')).subject },
    {
      prefix: '/v1/admin/owners/:handle',
      params: handleParams,
      ownerOf: async (request: FastifyRequest) => {
        await deps.auth.require(request, ['admin'], 'admin');
        return deps.accounts.ownerByHandle((request.params as { handle: string }).handle).id;
      },
    },
  ];

  const sendRuleSet = (request: FastifyRequest, reply: FastifyReply, ownerId: string) => {
    const mediaType = negotiate(request.headers.accept, [JSON_MEDIA_TYPE, AUTH_POLICY_MEDIA_TYPE]);
    if (!mediaType) throw new AppError('not_acceptable', `Acceptable: ${JSON_MEDIA_TYPE}, ${AUTH_POLICY_MEDIA_TYPE}.`);
    const rules = deps.accounts.listRules(ownerId);
    if (mediaType === AUTH_POLICY_MEDIA_TYPE) return reply.type(`${AUTH_POLICY_MEDIA_TYPE}; charset=utf-8`).send(exportPresRules(rules));
    return reply.type(`${JSON_MEDIA_TYPE}; charset=utf-8`).send(rulesResponse.parse({ rules: [...rules] }));
  };

  for (const scope of scopes) {
    const withId = scope.params.extend(idParams.shape);
    r.get(`${scope.prefix}/rules`, { schema: { params: scope.params } }, async (request, reply) => sendRuleSet(request, reply, await scope.ownerOf(request)));

    // Replace every rule: JSON `{ rules }` or a pres-rules document.
    r.put(`${scope.prefix}/rules`, { schema: { params: scope.params } }, async (request, reply) => {
      const ownerId = await scope.ownerOf(request);
      const type = (request.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
      let items;
      if (type === AUTH_POLICY_MEDIA_TYPE) {
        if (typeof request.body !== 'string') throw new AppError('invalid_document', 'Expected a pres-rules document.');
        items = importPresRules(request.body);
      } else if (type === JSON_MEDIA_TYPE) {
        const parsed = rulesBody.safeParse(request.body);
        if (!parsed.success) throw new AppError('invalid_request', 'Invalid body.', parsed.error.issues.map((i) => `/${i.path.join('/')} ${i.message}`));
        items = parsed.data.rules.map(({ id, ...body }) => ({ id, body }));
      } else {
        throw new AppError('unsupported_media_type', `Send ${JSON_MEDIA_TYPE} or ${AUTH_POLICY_MEDIA_TYPE}.`);
      }
      await deps.accounts.replaceRules(ownerId, items);
      return sendRuleSet(request, reply, ownerId);
    });

    r.post(`${scope.prefix}/rules`, { schema: { params: scope.params, body: ruleBodySchema, response: { 201: ruleSchema } } }, async (request, reply) =>
      reply.code(201).send(await deps.accounts.addRule(await scope.ownerOf(request), request.body)),
    );
    r.put(`${scope.prefix}/rules/:id`, { schema: { params: withId, body: ruleBodySchema, response: { 200: ruleSchema } } }, async (request) =>
      deps.accounts.updateRule(await scope.ownerOf(request), request.params.id, request.body),
    );
    r.delete(`${scope.prefix}/rules/:id`, { schema: { params: withId } }, async (request, reply) => {
      await deps.accounts.deleteRule(await scope.ownerOf(request), request.params.id);
      return reply.code(204).send();
    });

    r.get(`${scope.prefix}/groups`, { schema: { params: scope.params, response: { 200: groupsResponse } } }, async (request) => ({
      groups: [...deps.accounts.listGroups(await scope.ownerOf(request))],
    }));
    r.post(`${scope.prefix}/groups`, { schema: { params: scope.params, body: groupBodySchema, response: { 201: groupSchema } } }, async (request, reply) =>
      reply.code(201).send(await deps.accounts.addGroup(await scope.ownerOf(request), request.body)),
    );
    r.put(`${scope.prefix}/groups/:id`, { schema: { params: withId, body: groupBodySchema, response: { 200: groupSchema } } }, async (request) =>
      deps.accounts.updateGroup(await scope.ownerOf(request), request.params.id, request.body),
    );
    r.delete(`${scope.prefix}/groups/:id`, { schema: { params: withId } }, async (request, reply) => {
      await deps.accounts.deleteGroup(await scope.ownerOf(request), request.params.id);
      return reply.code(204).send();
    });
  }
}
