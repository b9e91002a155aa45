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
import { adminAccess, documented, empty, errors, json, media, operation, ownerAccess, type Tag } from '../openapi.js';

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
const rulesBody = z.object({ rules: z.array(ruleBodySchema.extend({ id: idSchema.optional(), arrivedAt: z.iso.datetime({ offset: true }).optional() })).max(200) }).strict();
const groupsResponse = z.object({ groups: z.array(groupSchema) });
const idParams = z.object({ id: idSchema });
const handleParams = z.object({ handle: handleSchema });

export function ruleRoutes(app: FastifyInstance, deps: { auth: Authenticator; accounts: Accounts }): void {
  const r = app.withTypeProvider<ZodTypeProvider>();

  /** /v1/me/... acts for the owner in the token; /v1/admin/owners/{handle}/... for an operator. */
  const scopes = [
    {
      prefix: '/v1/me',
      params: z.object({}),
      ownerOf: async (request: FastifyRequest) => (await deps.auth.require(request, ['owner'], 'consent:manage')).subject,
      // For the document: who may call, and the errors a handle adds (invalid or unknown).
      tags: ['consent'] as Tag[],
      access: ownerAccess('consent:manage'),
      whose: 'your',
      ownerErrors: {},
    },
    {
      prefix: '/v1/admin/owners/:handle',
      params: handleParams,
      tags: ['consent', 'admin'] as Tag[],
      access: adminAccess,
      whose: "an owner's",
      ownerErrors: errors('invalid_request', 404),
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

  const ruleSet = media('Every rule, in order, as JSON or as a pres-rules document (RFC 5025), chosen by Accept.', {
    [JSON_MEDIA_TYPE]: rulesResponse,
    [AUTH_POLICY_MEDIA_TYPE]: z.string().describe('A pres-rules document (RFC 5025, common-policy RFC 4745).'),
  });

  for (const scope of scopes) {
    const withId = scope.params.extend(idParams.shape);
    const op = (summary: string, description?: string) => operation(scope.tags, summary, scope.access, description);
    r.get(
      `${scope.prefix}/rules`,
      { schema: { ...op(`List ${scope.whose} rules`), params: scope.params, response: { 200: ruleSet, ...errors(401, 'forbidden', 406), ...scope.ownerErrors } } },
      async (request, reply) => sendRuleSet(request, reply, await scope.ownerOf(request)),
    );

    // Replace every rule: JSON `{ rules }` or a pres-rules document.
    const replaceSchema = {
      ...op(`Replace ${scope.whose} rules`, 'Every rule at once, as JSON `{ rules }` or as a pres-rules document; a document with anything the service does not support is refused whole. The answer is the new rule set, as GET gives it.'),
      params: scope.params,
      response: { 200: ruleSet, ...errors(400, 401, 'forbidden', 406, 413, 415), ...scope.ownerErrors },
    };
    const replaceConfig = documented({
      body: {
        description: 'The new rule set.',
        content: { [JSON_MEDIA_TYPE]: rulesBody, [AUTH_POLICY_MEDIA_TYPE]: z.string().describe('A pres-rules document (RFC 5025).') },
      },
    });
    r.put(`${scope.prefix}/rules`, { schema: replaceSchema, config: replaceConfig }, async (request, reply) => {
      const ownerId = await scope.ownerOf(request);
      const type = (request.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
      let items;
      if (type === AUTH_POLICY_MEDIA_TYPE) {
        if (typeof request.body !== 'string') throw new AppError('invalid_document', 'Expected a pres-rules document.');
        items = importPresRules(request.body);
      } else if (type === JSON_MEDIA_TYPE) {
        const parsed = rulesBody.safeParse(request.body);
        if (!parsed.success) throw new AppError('invalid_request', 'Invalid body.', parsed.error.issues.map((i) => `/${i.path.join('/')} ${i.message}`));
        items = parsed.data.rules.map(({ id, arrivedAt, ...body }) => ({ id, body, arrivedAt }));
      } else {
        throw new AppError('unsupported_media_type', `Send ${JSON_MEDIA_TYPE} or ${AUTH_POLICY_MEDIA_TYPE}.`);
      }
      await deps.accounts.replaceRules(ownerId, items);
      return sendRuleSet(request, reply, ownerId);
    });

    const writeErrors = { ...errors('invalid_request', 401, 'forbidden', 413, 415), ...scope.ownerErrors };
    r.post(
      `${scope.prefix}/rules`,
      { schema: { ...op('Add a rule'), params: scope.params, body: ruleBodySchema, response: { 201: json(ruleSchema, 'The rule, with its id.'), ...writeErrors } } },
      async (request, reply) => reply.code(201).send(await deps.accounts.addRule(await scope.ownerOf(request), request.body)),
    );
    r.put(
      `${scope.prefix}/rules/:id`,
      { schema: { ...op('Change a rule'), params: withId, body: ruleBodySchema, response: { 200: json(ruleSchema, 'The rule.'), ...writeErrors, ...errors(404) } } },
      async (request) => deps.accounts.updateRule(await scope.ownerOf(request), request.params.id, request.body),
    );
    r.delete(
      `${scope.prefix}/rules/:id`,
      { schema: { ...op('Delete a rule'), params: withId, response: { 204: empty('The rule is gone.'), ...writeErrors, ...errors(404) } } },
      async (request, reply) => {
        await deps.accounts.deleteRule(await scope.ownerOf(request), request.params.id);
        return reply.code(204).send();
      },
    );

    r.get(
      `${scope.prefix}/groups`,
      { schema: { ...op(`List ${scope.whose} watcher groups`), params: scope.params, response: { 200: json(groupsResponse, 'Every group.'), ...errors(401, 'forbidden'), ...scope.ownerErrors } } },
      async (request) => ({ groups: [...deps.accounts.listGroups(await scope.ownerOf(request))] }),
    );
    r.post(
      `${scope.prefix}/groups`,
      { schema: { ...op('Add a watcher group'), params: scope.params, body: groupBodySchema, response: { 201: json(groupSchema, 'The group, with its id.'), ...writeErrors } } },
      async (request, reply) => reply.code(201).send(await deps.accounts.addGroup(await scope.ownerOf(request), request.body)),
    );
    r.put(
      `${scope.prefix}/groups/:id`,
      { schema: { ...op('Change a watcher group'), params: withId, body: groupBodySchema, response: { 200: json(groupSchema, 'The group.'), ...writeErrors, ...errors(404) } } },
      async (request) => deps.accounts.updateGroup(await scope.ownerOf(request), request.params.id, request.body),
    );
    r.delete(
      `${scope.prefix}/groups/:id`,
      {
        schema: {
          ...op('Delete a watcher group', 'Refused while a rule names the group.'),
          params: withId,
          response: { 204: empty('The group is gone.'), ...writeErrors, ...errors(404, 'conflict') },
        },
      },
      async (request, reply) => {
        await deps.accounts.deleteGroup(await scope.ownerOf(request), request.params.id);
        return reply.code(204).send();
      },
    );
  }
}
