import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import type { AccessLogBuffer } from '../core/access-log.js';
import type { Directory } from '../core/directory.js';
import type { TokenVerifier } from '../core/identity/token-verifier.js';
import type { Metrics } from '../core/metrics.js';
import type { PresenceHub } from '../core/presence-hub.js';
import type { RuleBook } from '../policy/rule-book.js';
import type { Accounts } from './accounts.js';
import { Authenticator } from './authenticate.js';
import { installErrorHandlers } from './http-errors.js';
import { jwksRouteSchema, registerOpenApi } from './openapi.js';
import type { RepresentationCache } from './representations.js';
import { webhookRoutes } from './routes/webhooks.js';
import type { WebhookDispatcher } from './webhook-dispatcher.js';
import type { Repository } from '../core/db/repository.js';
import { publicJwkOf } from '../core/identity/signing-key.js';
import type { SigningKey } from '../core/identity/tokens.js';
import { PIDF_MEDIA_TYPE } from '../core/render-pidf.js';
import { adminRoutes } from './routes/admin.js';
import { dataRightsRoutes } from './routes/data-rights.js';
import { presenceRoutes } from './routes/presence.js';
import { AUTH_POLICY_MEDIA_TYPE, ruleRoutes } from './routes/rules.js';
import { watcherRoutes } from './routes/watchers.js';
import { publicationRoutes } from './routes/publications.js';
import { accessLogRoutes } from './routes/access-log.js';
import { settingsRoutes } from './routes/settings.js';
import { streamRoutes } from './routes/stream.js';
import { statusRoutes } from './routes/status.js';
import { systemRoutes } from './routes/system.js';

export interface ApiDeps {
  readonly log: FastifyBaseLogger;
  readonly directory: Directory;
  readonly ruleBook: RuleBook;
  readonly hub: PresenceHub;
  readonly verifier: TokenVerifier;
  readonly accounts: Accounts;
  readonly metrics: Metrics;
  readonly clock: () => number;
  readonly ready: () => boolean;
  readonly deviceTopic: (deviceId: string) => string;
  readonly accessLog: AccessLogBuffer;
  readonly representations: RepresentationCache;
  readonly repository: Repository;
  readonly webhooks: WebhookDispatcher;
  readonly webhookAllowHttp: boolean;
  readonly signingKey: SigningKey;
}

/** How long a shutdown waits for requests in flight. */
export const DRAIN_MS = 5000;

/** Bodies are small JSON documents; anything larger is refused with 413. */
export const MAX_BODY_BYTES = 64 * 1024;

export function buildApi(deps: ApiDeps): FastifyInstance {
  const app = Fastify({
    loggerInstance: deps.log,
    // Request logs would carry owner handles in URLs: log errors only.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: MAX_BODY_BYTES,
    return503OnClosing: true,
    // After the drain below, connections still open are cut rather than
    // waited for: sockets that carried hijacked streams are never "idle" to
    // Node and would hold the shutdown until their clients give up.
    forceCloseConnections: true,
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  // Before any route: the document is built from the routes added after this.
  registerOpenApi(app);
  installErrorHandlers(app);
  // XML bodies arrive as text and are parsed by the route with the safe parser (core/parse-xml.ts).
  app.addContentTypeParser([AUTH_POLICY_MEDIA_TYPE, PIDF_MEDIA_TYPE], { parseAs: 'string' }, (_request, body, done) => done(null, body));

  const auth = new Authenticator(deps.verifier, deps.directory, deps.clock);
  systemRoutes(app, { metrics: deps.metrics, ready: deps.ready });
  const presenceDeps = {
    auth,
    directory: deps.directory,
    ruleBook: deps.ruleBook,
    hub: deps.hub,
    entityOf: (handle: string) => deps.accounts.entityOf(handle),
    representations: deps.representations,
    clock: deps.clock,
    accessLog: deps.accessLog,
  };
  presenceRoutes(app, presenceDeps);
  streamRoutes(app, presenceDeps);
  ruleRoutes(app, { auth, accounts: deps.accounts });
  watcherRoutes(app, { ...presenceDeps, accounts: deps.accounts });
  publicationRoutes(app, { auth, accounts: deps.accounts });
  webhookRoutes(app, { auth, directory: deps.directory, repository: deps.repository, dispatcher: deps.webhooks, allowHttp: deps.webhookAllowHttp });
  // Receivers of webhooks verify their signatures with this key set (RFC 7517).
  let jwks: string | undefined;
  app.get('/.well-known/jwks.json', { schema: jwksRouteSchema }, async (_request, reply) => {
    jwks ??= JSON.stringify({ keys: [await publicJwkOf(deps.signingKey)] });
    return reply.type('application/jwk-set+json').header('cache-control', 'public, max-age=300').send(jwks);
  });
  settingsRoutes(app, { auth, accounts: deps.accounts });
  accessLogRoutes(app, { auth, accounts: deps.accounts });
  statusRoutes(app, { auth, accounts: deps.accounts });
  adminRoutes(app, { auth, accounts: deps.accounts, deviceTopic: deps.deviceTopic });
  dataRightsRoutes(app, { auth, accounts: deps.accounts });

  // Graceful close: new requests get 503 (return503OnClosing), streams are
  // ended by their own hook (registered above, so it runs first), then the
  // requests in flight get up to DRAIN_MS to finish before the remaining
  // connections are cut (forceCloseConnections).
  let inFlight = 0;
  app.addHook('onRequest', async (_request, reply) => {
    inFlight += 1;
    reply.raw.once('close', () => {
      inFlight -= 1;
    });
  });
  app.addHook('preClose', async () => {
    const deadline = Date.now() + DRAIN_MS;
    while (inFlight > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
  });
  return app;
}
