import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError } from '../../core/errors.js';
import { handleSchema } from '../../core/identifiers.js';
import type { AccessLogBuffer } from '../../core/access-log.js';
import type { Principal } from '../../core/identity/tokens.js';
import type { Authenticator } from '../authenticate.js';
import { negotiate } from '../negotiate.js';
import { computeView, recordAccess, type Viewer, type WatcherViewDeps } from '../watcher-views.js';
import { ifNoneMatchHits, JSON_MEDIA_TYPE, presenceMediaType, presenceMediaTypes, type RepresentationCache } from '../representations.js';
import { watcherViewSchema } from '../../policy/watcher-view.js';
import { PIDF_MEDIA_TYPE } from '../../core/render-pidf.js';
import { documented, empty, errors, json, media, operation } from '../openapi.js';

/** Owners per batch read. */
export const MAX_BATCH = 100;

export interface PresenceRouteDeps extends WatcherViewDeps {
  readonly auth: Authenticator;
  readonly representations: RepresentationCache;
  readonly clock: () => number;
  readonly accessLog: AccessLogBuffer;
}

/** The caller as a viewer: owners read their own presence only. */
export function viewerOf(deps: PresenceRouteDeps, principal: Principal, handle: string): Viewer {
  if (principal.kind !== 'owner') return { kind: 'watcher', id: principal.subject };
  if (deps.directory.ownerByHandle(handle)?.id !== principal.subject) throw new AppError('forbidden', 'Owners read their own presence only.');
  return { kind: 'owner' };
}

/**
 * GET /v1/presence/{handle}: the caller's view of an owner, as PIDF (the
 * default) or JSON. An unknown owner, an owner who is offline, and an owner
 * who blocks the caller or has no rule for them all take the same path to
 * the same bytes, headers and status (privacy invariant 1).
 */
export function presenceRoutes(app: FastifyInstance, deps: PresenceRouteDeps): void {
  app.withTypeProvider<ZodTypeProvider>().get(
    '/v1/presence/:handle',
    {
      schema: {
        ...operation(
          'presence',
          "Read an owner's presence",
          { kinds: ['watcher', 'owner'], scope: 'presence:read' },
          "The caller's view, as PIDF (RFC 3863, with RPID RFC 4480; the default) or JSON, chosen by Accept. An unknown owner, an offline one, and one who does not let the caller see them all give the same offline view. Owners read their own presence only.",
        ),
        params: z.object({ handle: handleSchema }),
        response: {
          200: media(
            "The caller's view.",
            { [PIDF_MEDIA_TYPE]: z.string().describe('A PIDF document (RFC 3863) with RPID (RFC 4480) elements.'), [JSON_MEDIA_TYPE]: watcherViewSchema },
            {
              ETag: { type: 'string', description: 'Strong entity tag of these bytes; send it back in If-None-Match.' },
              'Cache-Control': { type: 'string', description: 'private, no-cache' },
              Vary: { type: 'string', description: 'Accept, Authorization' },
            },
          ),
          304: empty('The view is still the one with the entity tag in If-None-Match (no body; the same ETag header).'),
          ...errors('invalid_request', 401, 'forbidden', 406),
        },
      },
      config: documented({ headers: z.object({ 'if-none-match': z.string().optional().describe('Entity tags of views already held (RFC 9110 §13.1.2).') }) }),
    },
    async (request, reply) => {
      const principal = await deps.auth.require(request, ['watcher', 'owner'], 'presence:read');
      const mediaType = presenceMediaType(request.headers.accept);
      if (!mediaType) throw new AppError('not_acceptable', `Acceptable: ${presenceMediaTypes.join(', ')}.`);

      const now = deps.clock();
      const viewer = viewerOf(deps, principal, request.params.handle);
      const access = computeView(deps, viewer, request.params.handle, now);
      const representation = deps.representations.get(access.view, mediaType, now);
      if (viewer.kind === 'watcher') recordAccess(deps.accessLog, viewer.id, access, 'read', now);

      reply
        .header('content-type', representation.contentType)
        .header('etag', representation.etag)
        .header('cache-control', 'private, no-cache')
        .header('vary', 'Accept, Authorization');
      if (ifNoneMatchHits(request.headers['if-none-match'], representation.etag)) return reply.code(304).send();
      return reply.code(200).send(representation.body);
    },
  );

  // Batch read for apps with many contacts: each owner's view exactly as a
  // single read would give it (the same entity tags), each read audited.
  app.withTypeProvider<ZodTypeProvider>().get(
    '/v1/presence',
    {
      schema: {
        ...operation(
          'presence',
          'Read the presence of several owners',
          { kinds: ['watcher', 'owner'], scope: 'presence:read' },
          `Up to ${MAX_BATCH} handles (repeat \`handle\`); each view exactly as a single read in JSON would give it, with the same entity tag, each read recorded in that owner's access log.`,
        ),
        querystring: z.object({ handle: z.union([handleSchema, z.array(handleSchema).min(1).max(MAX_BATCH)]) }).strict(),
        response: {
          200: json(z.object({ results: z.array(z.object({ handle: z.string(), etag: z.string(), view: watcherViewSchema })) }), "The caller's view of each owner."),
          ...errors('invalid_request', 401, 'forbidden', 406),
        },
      },
    },
    async (request, reply) => {
      const principal = await deps.auth.require(request, ['watcher', 'owner'], 'presence:read');
      if (!negotiate(request.headers.accept, [JSON_MEDIA_TYPE])) throw new AppError('not_acceptable', `Acceptable: ${JSON_MEDIA_TYPE}.`);
      const handles = [...new Set(Array.isArray(request.query.handle) ? request.query.handle : [request.query.handle])];
      const now = deps.clock();
      const results = handles.map((handle) => {
        const viewer = viewerOf(deps, principal, handle);
        const access = computeView(deps, viewer, handle, now);
        if (viewer.kind === 'watcher') recordAccess(deps.accessLog, viewer.id, access, 'read', now);
        return { handle, etag: deps.representations.get(access.view, JSON_MEDIA_TYPE).etag, view: access.view };
      });
      return reply.header('cache-control', 'private, no-cache').send({ results });
    },
  );
}
