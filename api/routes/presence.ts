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
import { ifNoneMatchHits, presenceMediaTypes, type RepresentationCache } from '../representations.js';

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
    { schema: { params: z.object({ handle: handleSchema }) } },
    async (request, reply) => {
      const principal = await deps.auth.require(request, ['watcher', 'owner'], 'presence:read');
      const mediaType = negotiate(request.headers.accept, presenceMediaTypes);
      if (!mediaType) throw new AppError('not_acceptable', `Acceptable: ${presenceMediaTypes.join(', ')}.`);

      const now = deps.clock();
      const viewer = viewerOf(deps, principal, request.params.handle);
      const access = computeView(deps, viewer, request.params.handle, now);
      const representation = deps.representations.get(access.view, mediaType);
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
}
