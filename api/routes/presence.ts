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
import type { AccessLogBuffer, AccessRecord } from '../../core/access-log.js';
import type { Principal } from '../../core/identity/tokens.js';
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
 * What `principal` may see of `handle` now: the one computation behind reads
 * and streams. Unknown owners take the same path as known ones.
 */
export function viewFor(deps: PresenceRouteDeps, principal: Principal, handle: string, now: number) {
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
  return { owner, decision, view };
}

/** Privacy invariant 6, on the granted and the withheld path alike (so timing does not tell them apart). */
export function recordAccess(deps: PresenceRouteDeps, principal: Principal, access: ReturnType<typeof viewFor>, action: AccessRecord['action'], now: number): void {
  if (!access.owner || principal.kind !== 'watcher') return;
  const shown = access.decision.kind === 'allow';
  deps.accessLog.record({ ownerId: access.owner.id, watcherId: principal.subject, action, outcome: shown ? 'shown' : 'withheld', fields: shown ? viewFields(access.view) : [] }, now);
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
      const access = viewFor(deps, principal, request.params.handle, now);
      const representation = deps.representations.get(access.view, mediaType);
      recordAccess(deps, principal, access, 'read', now);

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
