import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError } from '../../core/errors.js';
import { handleSchema, idSchema } from '../../core/identifiers.js';
import { renderWatcherInfo, WATCHERINFO_MEDIA_TYPE } from '../../core/render-watcherinfo.js';
import { PIDF_MEDIA_TYPE } from '../../core/render-pidf.js';
import { NOTHING, ruleSchema, subHandlingSchema, transformationsSchema } from '../../policy/rule.js';
import { watcherViewSchema } from '../../policy/watcher-view.js';
import type { Accounts } from '../accounts.js';
import type { Authenticator } from '../authenticate.js';
import { negotiate } from '../negotiate.js';
import { JSON_MEDIA_TYPE, type RepresentationCache } from '../representations.js';
import { computeView, type WatcherViewDeps } from '../watcher-views.js';
import { documented, empty, errors, json, media, operation, ownerAccess, watcherAccess } from '../openapi.js';
import { printableText } from '../../core/text.js';

/**
 * The consent flow and what the owner sees of it:
 * - a watcher asks: POST /v1/presence/{handle}/access-requests;
 * - the owner lists watcher information (RFC 3857 semantics) as JSON or
 *   `application/watcherinfo+xml` (RFC 3858): GET /v1/me/watchers;
 * - the owner approves with a rule, or denies: POST /v1/me/watchers/{id}/approve|deny;
 * - the owner previews exactly what a watcher would get now, and which
 *   rules produced each field: GET /v1/me/preview/{watcherId}.
 */
const messageSchema = printableText(200);

const watcherInfoSchema = z.object({
  watcherId: z.string(),
  name: z.string(),
  kind: z.enum(['person', 'app']),
  domain: z.string().nullable(),
  status: z.enum(['pending', 'active', 'terminated']),
  event: z.enum(['subscribe', 'approved', 'rejected', 'deactivated']),
  message: z.string().nullable(),
  requestedAt: z.string().nullable(),
  updatedAt: z.string().nullable(),
});

const watcherInfoResponse = z.object({ watchers: z.array(watcherInfoSchema) });

/** The preview in JSON: the view, the decision, and which rules granted each field shown. */
const previewSchema = z.object({
  view: watcherViewSchema,
  decision: z.enum([...subHandlingSchema.options, 'no-match']),
  matchingRules: z.array(z.string()).describe('The ids of the rules matching this watcher now, in rule order.'),
  fields: z.partialRecord(transformationsSchema.keyof(), z.array(z.string())).describe('For each field shown, the ids of the rules that granted it.'),
  etag: z.string().describe('The entity tag the watcher would get with the same view.'),
});

/** Fastify hands an absent body over as null: an absent body is the empty object. */
const optionalBody = <T extends z.ZodType>(schema: T) => z.preprocess((body) => body ?? {}, schema);

export interface WatcherRouteDeps extends WatcherViewDeps {
  readonly auth: Authenticator;
  readonly accounts: Accounts;
  readonly representations: RepresentationCache;
  readonly clock: () => number;
}

export function watcherRoutes(app: FastifyInstance, deps: WatcherRouteDeps): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const self = async (request: FastifyRequest) => (await deps.auth.require(request, ['owner'], 'consent:manage')).subject;
  const watcherParams = z.object({ watcherId: idSchema });

  r.post(
    '/v1/presence/:handle/access-requests',
    {
      schema: {
        ...operation(
          'watchers',
          'Ask an owner for access',
          watcherAccess('presence:read'),
          'Active at once if a rule already lets the watcher in; otherwise pending, whether the owner has not answered, denied the request, or does not exist. Refused only when a block rule names the watcher.',
        ),
        params: z.object({ handle: handleSchema }),
        body: optionalBody(z.object({ message: messageSchema.optional() }).strict()),
        response: {
          200: json(z.object({ status: z.literal('active') }), 'A rule already lets the watcher in.'),
          202: json(z.object({ status: z.literal('pending') }), 'The request waits for the owner (or looks as if it did).'),
          ...errors('invalid_request', 401, 403, 413, 415, 503),
        },
      },
      config: documented({ optionalBody: true }),
    },
    async (request, reply) => {
      const principal = await deps.auth.require(request, ['watcher'], 'presence:read');
      const result = deps.accounts.requestAccess(request.params.handle, principal.subject, request.body.message);
      return result.status === 'active' ? reply.code(200).send({ status: 'active' as const }) : reply.code(202).send({ status: 'pending' as const });
    },
  );

  r.get(
    '/v1/me/watchers',
    {
      schema: {
        ...operation('watchers', 'List your watchers', ownerAccess('consent:manage'), 'Watcher information (RFC 3857 semantics) as JSON or as application/watcherinfo+xml (RFC 3858), chosen by Accept.'),
        response: {
          200: media('Every watcher who asked for access, with the state of their request.', {
            [JSON_MEDIA_TYPE]: watcherInfoResponse,
            [WATCHERINFO_MEDIA_TYPE]: z.string().describe('A watcherinfo document (RFC 3858), state full.'),
          }),
          ...errors(401, 'forbidden', 406),
        },
      },
    },
    async (request, reply) => {
      const ownerId = await self(request);
      const mediaType = negotiate(request.headers.accept, [JSON_MEDIA_TYPE, WATCHERINFO_MEDIA_TYPE]);
      if (!mediaType) throw new AppError('not_acceptable', `Acceptable: ${JSON_MEDIA_TYPE}, ${WATCHERINFO_MEDIA_TYPE}.`);
      const watchers = await deps.accounts.watcherInfo(ownerId);
      if (mediaType === JSON_MEDIA_TYPE) return reply.type(`${JSON_MEDIA_TYPE}; charset=utf-8`).send(watcherInfoResponse.parse({ watchers }));
      const owner = deps.accounts.ownerById(ownerId);
      const xml = renderWatcherInfo({
        resource: deps.entityOf(owner.handle),
        version: 0,
        state: 'full',
        watchers: watchers.map((w) => ({ id: w.watcherId, uri: `urn:uuid:${w.watcherId}`, displayName: w.name, status: w.status, event: w.event })),
      });
      return reply.type(`${WATCHERINFO_MEDIA_TYPE}; charset=utf-8`).send(xml);
    },
  );

  r.post(
    '/v1/me/watchers/:watcherId/approve',
    {
      schema: {
        ...operation('watchers', "Approve a watcher's request", ownerAccess('consent:manage'), 'Adds a rule allowing this watcher, showing availability only unless the body widens it.'),
        params: watcherParams,
        // By default an approval shows availability only: the owner widens it explicitly.
        body: optionalBody(z.object({ transformations: transformationsSchema.default({ ...NOTHING, availability: true }) }).strict()),
        response: { 201: json(ruleSchema, 'The rule added.'), ...errors('invalid_request', 401, 'forbidden', 404, 'conflict', 413, 415) },
      },
      config: documented({ optionalBody: true }),
    },
    async (request, reply) => reply.code(201).send(await deps.accounts.approve(await self(request), request.params.watcherId, request.body.transformations)),
  );
  r.post(
    '/v1/me/watchers/:watcherId/deny',
    {
      schema: {
        ...operation('watchers', "Deny a watcher's request", ownerAccess('consent:manage'), 'The request stays pending to the watcher, who must not learn of the refusal.'),
        params: watcherParams,
        response: { 204: empty('Denied.'), ...errors('invalid_request', 401, 'forbidden', 404, 'conflict', 413, 415) },
      },
    },
    async (request, reply) => {
      await deps.accounts.deny(await self(request), request.params.watcherId);
      return reply.code(204).send();
    },
  );

  // Preview as contact: the very bytes the watcher would get now (PIDF), or
  // in JSON the view with the decision and the rules behind each field.
  r.get(
    '/v1/me/preview/:watcherId',
    {
      schema: {
        ...operation(
          'watchers',
          'Preview what a watcher would get',
          ownerAccess('consent:manage'),
          'As PIDF: the very bytes the watcher would get now. As JSON: the view, the decision and the rules behind each field.',
        ),
        params: watcherParams,
        response: {
          200: media(
            "The watcher's view now.",
            { [JSON_MEDIA_TYPE]: previewSchema, [PIDF_MEDIA_TYPE]: z.string().describe('The PIDF document (RFC 3863) the watcher would get.') },
            { ETag: { type: 'string', description: 'The entity tag the watcher would get.' }, 'Cache-Control': { type: 'string', description: 'private, no-store' } },
          ),
          ...errors('invalid_request', 401, 'forbidden', 404, 406),
        },
      },
    },
    async (request, reply) => {
      const ownerId = await self(request);
      const mediaType = negotiate(request.headers.accept, [JSON_MEDIA_TYPE, PIDF_MEDIA_TYPE]);
      if (!mediaType) throw new AppError('not_acceptable', `Acceptable: ${JSON_MEDIA_TYPE}, ${PIDF_MEDIA_TYPE}.`);
      if (!deps.directory.activeWatcher(request.params.watcherId)) throw new AppError('not_found', 'No such watcher.');
      const owner = deps.accounts.ownerById(ownerId);
      const now = deps.clock();
      const access = computeView(deps, { kind: 'watcher', id: request.params.watcherId }, owner.handle, now);
      const representation = deps.representations.get(access.view, mediaType === PIDF_MEDIA_TYPE ? PIDF_MEDIA_TYPE : JSON_MEDIA_TYPE, now);
      reply.header('cache-control', 'private, no-store').header('etag', representation.etag);
      if (mediaType === PIDF_MEDIA_TYPE) return reply.type(representation.contentType).send(representation.body);
      const decision = access.decision;
      return reply.type(`${JSON_MEDIA_TYPE}; charset=utf-8`).send({
        view: watcherViewSchema.parse(access.view),
        decision: decision.kind,
        matchingRules: [...decision.ruleIds],
        fields: (decision.kind === 'allow' ? decision.provenance : {}) as z.output<typeof previewSchema>['fields'],
        etag: representation.etag,
      });
    },
  );
}
