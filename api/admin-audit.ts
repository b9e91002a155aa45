import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest, onResponseHookHandler, onSendHookHandler, preHandlerHookHandler, RouteOptions } from 'fastify';
import type { AdminActionStore } from '../core/db/admin-actions.js';
import { isDatabaseUnavailable, loggableDbError } from '../core/db/db-error.js';
import type { Directory } from '../core/directory.js';
import { AppError } from '../core/errors.js';
import type { Authenticator } from './authenticate.js';
import { errors } from './openapi.js';

/**
 * The operators' audit trail (issue 7, "a careless operator"; SECURITY.md):
 * every request to an admin route that passes validation and
 * authentication is recorded before the route runs (who: the token's
 * subject and id; what: the method and the route pattern, never the values
 * in the URL or body; whom it concerned: the owner or watcher, when the
 * request names one), and given its status when answered. An action that cannot be recorded is not run
 * (503 `unavailable`). Owners see the actions that concerned them
 * (GET /v1/me/admin-actions) and find them in their export.
 *
 * Hooks are attached to the admin routes only (onRoute), so no other
 * request pays for them.
 */
export const ADMIN_PREFIX = '/v1/admin/';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

interface Concerned {
  readonly ownerId: string | undefined;
  readonly watcherId: string | undefined;
}

function field(value: unknown, key: string): string | undefined {
  if (typeof value !== 'object' || value === null || !Object.hasOwn(value, key)) return undefined;
  const found: unknown = (value as Record<string, unknown>)[key];
  return typeof found === 'string' ? found : undefined;
}

/**
 * Whom the request concerns, from what it names (validated by the route's
 * schema before this runs): an owner handle in the path or the body, a
 * device or watcher id in the path, a token's subject.
 */
export function concernedBy(route: string, request: Pick<FastifyRequest, 'params' | 'body' | 'query'>, directory: Directory): Concerned {
  const owner = (id: string | undefined) => (id === undefined ? undefined : directory.owner(id)?.id);
  const byHandle = (handle: string | undefined) => (handle === undefined ? undefined : directory.ownerByHandle(handle)?.id);
  const watcher = (id: string | undefined) => (id !== undefined && UUID.test(id) ? id : undefined);
  const handle = field(request.params, 'handle');
  if (handle !== undefined) return { ownerId: byHandle(handle), watcherId: undefined };
  // An operator reading one owner's part of the trail.
  if (route === '/v1/admin/actions') return { ownerId: byHandle(field(request.query, 'owner')), watcherId: undefined };
  const id = field(request.params, 'id');
  if (route === '/v1/admin/devices/:id') return { ownerId: id === undefined ? undefined : directory.device(id)?.ownerId, watcherId: undefined };
  if (route === '/v1/admin/watchers/:id') return { ownerId: undefined, watcherId: watcher(id) };
  const body = request.body;
  const subject = field(body, 'subject');
  switch (field(body, 'kind')) {
    case 'owner':
      return { ownerId: owner(subject) ?? byHandle(subject), watcherId: undefined };
    case 'device':
      return { ownerId: subject === undefined ? undefined : directory.device(subject)?.ownerId, watcherId: undefined };
    case 'watcher':
      return { ownerId: undefined, watcherId: watcher(subject) };
    default:
      // POST /v1/admin/owners (handle), /v1/admin/devices (owner), /v1/admin/identities (owner or watcher).
      return { ownerId: byHandle(field(body, 'owner') ?? field(body, 'handle')), watcherId: watcher(field(body, 'watcher')) };
  }
}

export function installAdminAudit(
  app: FastifyInstance,
  deps: {
    auth: Authenticator;
    directory: Directory;
    store: AdminActionStore;
    /** Whom a link to an external account names: an unlink (DELETE /v1/admin/identities) names the account, not the owner. */
    identityLink: (issuer: string, subject: string) => Promise<{ ownerId: string | null; watcherId: string | null } | undefined>;
    clock: () => number;
    log: FastifyBaseLogger;
  },
): void {
  const running = new WeakMap<FastifyRequest, { id: number; concerned: Concerned }>();
  const unavailable = errors('unavailable')[503];

  app.addHook('onRoute', (route: RouteOptions) => {
    if (!route.url.startsWith(ADMIN_PREFIX)) return;
    const pattern = route.url;
    const concerning = async (request: FastifyRequest): Promise<Concerned> => {
      if (pattern === '/v1/admin/identities' && request.method === 'DELETE') {
        const issuer = field(request.query, 'issuer');
        const subject = field(request.query, 'subject');
        const link = issuer === undefined || subject === undefined ? undefined : await deps.identityLink(issuer, subject);
        return { ownerId: link?.ownerId ?? undefined, watcherId: link?.watcherId ?? undefined };
      }
      return concernedBy(pattern, request, deps.directory);
    };
    const record: preHandlerHookHandler = async (request: FastifyRequest) => {
      // Refused callers are not recorded: anyone could fill the trail.
      const principal = await deps.auth.require(request, ['admin'], 'admin');
      try {
        const concerned = await concerning(request);
        const id = await deps.store.start({
          at: new Date(deps.clock()),
          operator: principal.subject,
          tokenId: principal.tokenId,
          tokenExpiresAt: new Date(principal.expiresAt),
          method: request.method,
          route: pattern,
          ownerId: concerned.ownerId,
          watcherId: concerned.watcherId,
        });
        running.set(request, { id, concerned });
      } catch (err) {
        // PostgreSQL down or restarting: the error handler answers 503 with Retry-After, as for any write then.
        if (isDatabaseUnavailable(err)) throw err;
        deps.log.error({ error: loggableDbError(err), route: pattern }, 'admin action not recorded; refused');
        throw new AppError('unavailable', "The action could not be recorded in the operators' audit trail; nothing was done.");
      }
    };
    const settle = (request: FastifyRequest, reply: FastifyReply): void => {
      const action = running.get(request);
      if (!action) return;
      running.delete(request);
      // An owner the request created is known only now; other requests keep
      // whom they named when they ran (an owner created later under the
      // same handle is someone else).
      const created = pattern === '/v1/admin/owners' && request.method === 'POST' && reply.statusCode === 201;
      const after = created ? concernedBy(pattern, request, deps.directory).ownerId : undefined;
      deps.store.finish(action.id, reply.statusCode, after).catch((err: unknown) => deps.log.error({ error: loggableDbError(err), route: pattern }, 'admin action status not recorded'));
    };
    const finish: onResponseHookHandler = (request, reply, done) => {
      done();
      settle(request, reply);
    };
    // A caller that disconnects before the answer gets no onResponse, while
    // the action itself still runs to its end (an owner created, a device
    // revoked): the status it ended with is recorded as it is sent, so the
    // trail never shows a finished action as one without an outcome.
    const finishIfGone: onSendHookHandler = (request, reply, payload, done) => {
      if (request.raw.socket?.destroyed || request.raw.destroyed) settle(request, reply);
      done(null, payload);
    };
    route.preHandler = [...hooks(route.preHandler), record];
    route.onSend = [...hooks(route.onSend), finishIfGone];
    route.onResponse = [...hooks(route.onResponse), finish];
    // Documented on every admin route: the action was refused because the trail could not be written.
    if (route.schema?.response && typeof route.schema.response === 'object' && !('503' in route.schema.response)) {
      route.schema = { ...route.schema, response: { ...route.schema.response, 503: unavailable } };
    }
  });
}

function hooks<T>(value: T | T[] | undefined): T[] {
  return value === undefined ? [] : Array.isArray(value) ? value : [value];
}
