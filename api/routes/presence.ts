import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { Directory } from '../../core/directory.js';
import { AppError } from '../../core/errors.js';
import { handleSchema } from '../../core/identifiers.js';
import type { PresenceHub } from '../../core/presence-hub.js';
import { OFFLINE_STATE } from '../../core/presence.js';
import { evaluateConsent, type Decision } from '../../policy/evaluate-consent.js';
import type { RuleBook } from '../../policy/rule-book.js';
import { buildWatcherView, type WatcherView } from '../../policy/watcher-view.js';
import type { AccessLogBuffer } from '../../core/access-log.js';
import type { Accounts } from '../accounts.js';
import type { Authenticator } from '../authenticate.js';
import { negotiate } from '../negotiate.js';
import { ifNoneMatchHits, presenceMediaTypes, type RepresentationCache } from '../representations.js';

export interface PresenceRouteDeps {
  readonly auth: Authenticator;
  readonly directory: Directory;
  readonly ruleBook: RuleBook;
  readonly hub: PresenceHub;
  readonly accounts: Accounts;
  readonly representations: RepresentationCache;
  readonly clock: () => number;
  readonly accessLog: AccessLogBuffer;
}

/** The fields a view carries beyond its identity. */
function viewFields(view: WatcherView): string[] {
  return Object.keys(view).filter((k) => k !== 'entity');
}

const OWNER_SELF: Decision = { kind: 'allow', grant: { availability: true, activities: true }, ruleIds: [] };

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
      const { handle } = request.params;
      const owner = deps.directory.ownerByHandle(handle);
      let decision: Decision;
      if (principal.kind === 'owner') {
        if (owner?.id !== principal.subject) throw new AppError('forbidden', 'Owners read their own presence only.');
        decision = OWNER_SELF;
      } else {
        decision = owner ? evaluateConsent(deps.ruleBook.rules(owner.id), principal.subject) : { kind: 'no-match' };
      }
      const state = owner ? deps.hub.current(owner.id, now) : OFFLINE_STATE;
      const view = buildWatcherView(deps.accounts.entityOf(handle), state, decision);
      const representation = deps.representations.get(view, mediaType);
      // Privacy invariant 6, on both paths alike (so timing does not tell them apart).
      if (owner && principal.kind === 'watcher') {
        const shown = decision.kind === 'allow';
        deps.accessLog.record(
          { ownerId: owner.id, watcherId: principal.subject, action: 'read', outcome: shown ? 'shown' : 'withheld', fields: shown ? viewFields(view) : [] },
          now,
        );
      }

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
