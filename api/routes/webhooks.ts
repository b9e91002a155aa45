import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError } from '../../core/errors.js';
import { isInternalAddress } from '../internal-address.js';
import { handleSchema, idSchema } from '../../core/identifiers.js';
import type { Repository } from '../../core/db/repository.js';
import type { Authenticator } from '../authenticate.js';
import type { WebhookDispatcher } from '../webhook-dispatcher.js';
import { empty, errors, json, operation, watcherAccess } from '../openapi.js';

/**
 * Webhooks (watcher tokens with presence:read): POST /v1/webhooks
 * `{handle, url}` asks for this watcher's view of that handle to be POSTed
 * to the URL on every change (see api/webhook-dispatcher.ts); GET lists the
 * watcher's webhooks, DELETE /v1/webhooks/{id} ends one. The current view is
 * sent at once. A handle no owner holds is registered as any other, and its
 * view is the offline one, as a read's is: registering does not tell
 * whether a handle exists. Should an owner take the handle later, the
 * webhook is theirs (migration 0018), behind their consent like any other.
 */
export const MAX_WEBHOOKS_PER_WATCHER = 100;

const webhookSchema = z.object({ id: z.string(), handle: z.string(), url: z.string() });

export function parseWebhookUrl(raw: string, allowHttp: boolean, refusedNetwork: (address: string) => boolean = () => false): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new AppError('invalid_request', 'The url is not a URL.');
  }
  if (url.protocol !== 'https:' && !(allowHttp && url.protocol === 'http:')) throw new AppError('invalid_request', allowHttp ? 'The url must be http or https.' : 'The url must be https.');
  if (url.username || url.password) throw new AppError('invalid_request', 'The url must not carry credentials.');
  if (url.hash) throw new AppError('invalid_request', 'The url must not carry a fragment.');
  // Where only https is allowed (production), an address literal inside the
  // operator's own networks is refused: a watcher must not make the service
  // POST to its neighbours. (A name that resolves there is not caught here.)
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (!allowHttp && isInternalAddress(host)) throw new AppError('invalid_request', 'The url must not name a loopback, private or link-local address.');
  // The operator's own networks (WEBHOOK_REFUSE_NETWORKS), in every mode.
  if (refusedNetwork(host)) throw new AppError('invalid_request', 'The url must not name an address of the operator\'s networks.');
  return url.toString();
}

export function webhookRoutes(
  app: FastifyInstance,
  deps: { auth: Authenticator; repository: Repository; dispatcher: WebhookDispatcher; allowHttp: boolean; refusedNetwork: (address: string) => boolean },
): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const watcherOf = async (request: FastifyRequest) => (await deps.auth.require(request, ['watcher'], 'presence:read')).subject;

  r.post(
    '/v1/webhooks',
    {
      schema: {
        ...operation(
          'webhooks',
          'Register a webhook',
          watcherAccess('presence:read'),
          `The watcher's view of the owner is POSTed to the url (https) now and on every change, signed with a key from /.well-known/jwks.json. At most ${MAX_WEBHOOKS_PER_WATCHER} per watcher. A handle no owner holds is taken too, and its view is the offline one, as for a read.`,
        ),
        body: z.object({ handle: handleSchema, url: z.string().max(2048) }).strict(),
        response: { 201: json(webhookSchema, 'The webhook.'), ...errors('invalid_request', 401, 'forbidden', 'conflict', 413, 415) },
      },
    },
    async (request, reply) => {
      const principal = await deps.auth.require(request, ['watcher'], 'presence:read');
      const watcherId = principal.subject;
      const url = parseWebhookUrl(request.body.url, deps.allowHttp, deps.refusedNetwork);
      if ((await deps.repository.webhooksOf(watcherId)).length >= MAX_WEBHOOKS_PER_WATCHER) throw new AppError('conflict', `At most ${MAX_WEBHOOKS_PER_WATCHER} webhooks per watcher.`);
      const hook = await deps.repository.insertWebhook({ id: crypto.randomUUID(), watcherId, handle: request.body.handle, url }, principal.tokenId);
      deps.dispatcher.add(hook);
      return reply.code(201).send({ id: hook.id, handle: hook.handle, url });
    },
  );

  r.get(
    '/v1/webhooks',
    {
      schema: {
        ...operation('webhooks', "List the watcher's webhooks", watcherAccess('presence:read')),
        response: { 200: json(z.object({ webhooks: z.array(webhookSchema) }), 'Every webhook of the watcher.'), ...errors(401, 'forbidden') },
      },
    },
    async (request) => {
      const watcherId = await watcherOf(request);
      const hooks = await deps.repository.webhooksOf(watcherId);
      return { webhooks: hooks.map((h) => ({ id: h.id, handle: h.handle, url: h.url })) };
    },
  );

  r.delete(
    '/v1/webhooks/:id',
    {
      schema: {
        ...operation('webhooks', 'Delete a webhook', watcherAccess('presence:read')),
        params: z.object({ id: idSchema }),
        response: { 204: empty('The webhook is gone.'), ...errors('invalid_request', 401, 'forbidden', 404, 413, 415) },
      },
    },
    async (request, reply) => {
      const watcherId = await watcherOf(request);
      if (!(await deps.repository.deleteWebhook(watcherId, request.params.id))) throw new AppError('not_found', 'No such webhook.');
      deps.dispatcher.remove(request.params.id);
      return reply.code(204).send();
    },
  );
}
