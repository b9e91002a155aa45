import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import type { AccessLogBuffer } from '../core/access-log.js';
import type { Directory } from '../core/directory.js';
import type { TokenVerifier } from '../core/identity/token-verifier.js';
import type { Metrics } from '../core/metrics.js';
import type { PresenceHub } from '../core/presence-hub.js';
import type { RuleBook } from '../policy/rule-book.js';
import type { Accounts } from './accounts.js';
import { Authenticator } from './authenticate.js';
import { answerClientError, installErrorHandlers, sendError } from './http-errors.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ServerOptions as HttpsServerOptions } from 'node:https';
import { httpErrors } from '../core/errors.js';
import { jwksRouteSchema, registerOpenApi } from './openapi.js';
import type { RepresentationCache } from './representations.js';
import type { DeviceRefs } from '../policy/device-refs.js';
import { webhookRoutes } from './routes/webhooks.js';
import type { Network } from '../core/networks.js';
import { inNetworks } from './internal-address.js';
import type { WebhookDispatcher } from './webhook-dispatcher.js';
import type { Repository } from '../core/db/repository.js';
import type { KeySet } from '../core/identity/key-set.js';
import type { SigningKey } from '../core/identity/tokens.js';
import type { Config } from '../core/config.js';
import { createFastPublish } from './fast-publish.js';
import { createFastRead } from './fast-read.js';
import { HttpLimits, type Refusal } from './http-limits.js';
import { RequestDurations } from './request-durations.js';
import { PIDF_MEDIA_TYPE } from '../core/render-pidf.js';
import { adminRoutes } from './routes/admin.js';
import { dataRightsRoutes } from './routes/data-rights.js';
import { keyRoutes } from './routes/keys.js';
import { identityRoutes } from './routes/identities.js';
import { presenceRoutes } from './routes/presence.js';
import { AUTH_POLICY_MEDIA_TYPE, ruleRoutes } from './routes/rules.js';
import { watcherRoutes } from './routes/watchers.js';
import { publicationRoutes } from './routes/publications.js';
import { accessLogRoutes } from './routes/access-log.js';
import { adminActionRoutes } from './routes/admin-actions.js';
import { installAdminAudit } from './admin-audit.js';
import type { AdminActionStore } from '../core/db/admin-actions.js';
import type { TokenRevocations } from '../core/token-revocations.js';
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
  readonly deviceRefs: DeviceRefs;
  readonly repository: Repository;
  readonly webhooks: WebhookDispatcher;
  readonly webhookAllowHttp: boolean;
  /** WEBHOOK_REFUSE_NETWORKS (none when absent). */
  readonly webhookRefuseNetworks?: readonly Network[];
  readonly signingKey: SigningKey;
  readonly keys: KeySet;
  readonly limits: Config['limits'];
  /** The operators' audit trail and token revocations (api/admin-audit.ts, core/token-revocations.ts). */
  readonly adminActions: AdminActionStore;
  readonly revocations: TokenRevocations;
  /** ADMIN_TOKEN_MAX_SECONDS. */
  readonly adminTokenMaxSeconds: number;
  /** METRICS_TOKEN: /metrics needs it as a bearer token; unset: open. */
  readonly metricsToken?: string | undefined;
  /** HTTPS with these options (core/tls/server-tls.ts); unset: plain HTTP (loopback development and tests only). */
  readonly tls?: HttpsServerOptions;
}

/** Refusals by the abuse limits, by which limit (a metric label). */
export const LIMIT_REFUSALS = 'presence_limit_refusals_total';
export { HTTP_DURATION } from './request-durations.js';

/** How long a shutdown waits for requests in flight. */
export const DRAIN_MS = 5000;

/** A path in front of Fastify: true when it took the request, false to hand it on untouched. */
type FrontPath = (request: IncomingMessage, response: ServerResponse) => boolean;

export function buildApi(deps: ApiDeps): FastifyInstance {
  // Cached presence reads are answered before Fastify sees them
  // (api/fast-read.ts); set once the routes' dependencies exist, below;
  // and so are cached owners' PIDF publications (api/fast-publish.ts).
  const front: { fastRead?: FrontPath; fastPublish?: FrontPath } = {};
  let closing = false;
  const options = {
    loggerInstance: deps.log,
    // Request logs would carry owner handles in URLs: log errors only.
    logController: new LogController({ disableRequestLogging: true }),
    // Bodies are small JSON or XML documents; anything larger is refused with 413 (HTTP_MAX_BODY_BYTES).
    bodyLimit: deps.limits.httpMaxBodyBytes,
    return503OnClosing: true,
    // After the drain below, connections still open are cut rather than
    // waited for: sockets that carried hijacked streams are never "idle" to
    // Node and would hold the shutdown until their clients give up.
    forceCloseConnections: true,
    // Errors before any route runs are answered in the catalog's shape too
    // (found by tests/integration/fuzz-http.test.ts): what node:http cannot
    // parse, URLs the router refuses, a request without Host (checked in
    // installLimits' hook instead of node:http's empty 400).
    clientErrorHandler: answerClientError,
    frameworkErrors: (error: FastifyError, _request: FastifyRequest, reply: FastifyReply) =>
      sendError(reply, 'invalid_request', error.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 'A path segment is too long.' : 'The URL is not valid (malformed percent-encoding).'),
  };
  // node:https serves the same request API as node:http (its server takes
  // http.Server's methods), and nothing here touches the TLS side of the
  // raw server: one instance type serves both. requireHostHeader is an
  // http.Server option that https.Server accepts too.
  const app = deps.tls
    ? (Fastify({ ...options, https: { ...deps.tls, requireHostHeader: false } }) as unknown as FastifyInstance)
    : Fastify({ ...options, http: { requireHostHeader: false } });
  // The cached read path goes in front of Fastify's handler on the server
  // Fastify built, which keeps every setting Fastify gives its servers
  // (timeouts, and the second loopback address it binds for HOST=localhost,
  // which a serverFactory would lose; those extra servers take the full path).
  const [fastifyHandler] = app.server.listeners('request') as ((request: IncomingMessage, response: ServerResponse) => void)[];
  if (fastifyHandler) {
    app.server.removeListener('request', fastifyHandler);
    app.server.on('request', (request: IncomingMessage, response: ServerResponse) => {
      if (front.fastRead?.(request, response) || front.fastPublish?.(request, response)) return;
      fastifyHandler(request, response);
    });
  }
  app.addHook('preClose', (done) => {
    closing = true;
    done();
  });
  // RFC 9110 §10.1.1: an expectation the server cannot meet is a 417; node:http would answer it with an empty body.
  app.server.on('checkExpectation', (_request: IncomingMessage, response: ServerResponse) => {
    response.writeHead(httpErrors.expectation_failed.status, { 'content-type': 'application/json; charset=utf-8', connection: 'close' });
    response.end(JSON.stringify({ code: 'expectation_failed', message: httpErrors.expectation_failed.message }));
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  // Before any route: the document is built from the routes added after this.
  registerOpenApi(app);
  installErrorHandlers(app);
  // XML bodies arrive as text and are parsed by the route with the safe parser (core/parse-xml.ts).
  app.addContentTypeParser([AUTH_POLICY_MEDIA_TYPE, PIDF_MEDIA_TYPE], { parseAs: 'string' }, (_request, body, done) => done(null, body));

  const auth = new Authenticator(deps.verifier, deps.directory, deps.clock, deps.adminTokenMaxSeconds);
  // Before the routes: it attaches its hooks to each admin route as it is added.
  installAdminAudit(app, {
    auth,
    directory: deps.directory,
    store: deps.adminActions,
    identityLink: (issuer, subject) => deps.repository.identityLink(issuer, subject),
    clock: deps.clock,
    log: deps.log,
  });
  const limits = new HttpLimits(deps.limits);
  const durations = new RequestDurations(deps.metrics);
  installLimits(app, deps, limits, durations);
  systemRoutes(app, { metrics: deps.metrics, ready: deps.ready, metricsToken: deps.metricsToken });
  const presenceDeps = {
    auth,
    directory: deps.directory,
    ruleBook: deps.ruleBook,
    hub: deps.hub,
    entityOf: (handle: string) => deps.accounts.entityOf(handle),
    representations: deps.representations,
    deviceRefs: deps.deviceRefs,
    clock: deps.clock,
    accessLog: deps.accessLog,
  };
  presenceRoutes(app, presenceDeps);
  front.fastRead = createFastRead({ ...presenceDeps, limits, durations, metrics: deps.metrics, closing: () => closing });
  streamRoutes(app, {
    ...presenceDeps,
    maxStreams: deps.limits.httpMaxStreams,
    maxStreamsPerCaller: deps.limits.httpMaxStreamsPerCaller,
    onRefused: (limit) => deps.metrics.inc(LIMIT_REFUSALS, { limit }),
    exposeOpenStreams: (read) => deps.metrics.gauge('presence_http_open_streams', 'Server-Sent Event streams open now', read),
  });
  ruleRoutes(app, { auth, accounts: deps.accounts });
  watcherRoutes(app, { ...presenceDeps, accounts: deps.accounts });
  publicationRoutes(app, { auth, accounts: deps.accounts });
  front.fastPublish = createFastPublish({
    auth,
    directory: deps.directory,
    accounts: deps.accounts,
    clock: deps.clock,
    limits,
    durations,
    metrics: deps.metrics,
    maxBodyBytes: deps.limits.httpMaxBodyBytes,
    log: deps.log,
    closing: () => closing,
  });
  webhookRoutes(app, { auth, repository: deps.repository, dispatcher: deps.webhooks, allowHttp: deps.webhookAllowHttp, refusedNetwork: inNetworks(deps.webhookRefuseNetworks ?? []) });
  // Receivers of webhooks and tokens verify signatures with this key set
  // (RFC 7517): the key that signs now and every earlier one not retired.
  app.get('/.well-known/jwks.json', { schema: jwksRouteSchema }, async (_request, reply) =>
    reply.type('application/jwk-set+json').header('cache-control', 'public, max-age=300').send(JSON.stringify({ keys: deps.keys.published() })),
  );
  keyRoutes(app, { auth, repository: deps.repository, keys: deps.keys });
  identityRoutes(app, { auth, repository: deps.repository, directory: deps.directory, forgetVerified: () => deps.verifier.clear() });
  settingsRoutes(app, { auth, accounts: deps.accounts });
  accessLogRoutes(app, { auth, accounts: deps.accounts });
  statusRoutes(app, { auth, accounts: deps.accounts });
  adminRoutes(app, { auth, accounts: deps.accounts, revocations: deps.revocations, deviceTopic: deps.deviceTopic });
  adminActionRoutes(app, { auth, store: deps.adminActions, directory: deps.directory });
  dataRightsRoutes(app, { auth, accounts: deps.accounts });

  // Graceful close: new requests get 503 (return503OnClosing), streams are
  // ended by their own hook (registered above, so it runs first), then the
  // requests in flight get up to DRAIN_MS to finish before the remaining
  // connections are cut (forceCloseConnections).
  // Counted at the raw server's 'request' event, ahead of Fastify's hooks,
  // with one shared listener: no hook call and no closure per request on
  // the hot path (reads are short of their target, and all hooks together
  // were measured at about a sixth of a read's CPU; see docs/scaling.md).
  let inFlight = 0;
  const finished = () => {
    inFlight -= 1;
  };
  app.server.on('request', (_request: IncomingMessage, response: ServerResponse) => {
    inFlight += 1;
    // 'on', not 'once': a response emits 'close' exactly once, and once() wraps the listener per call.
    response.on('close', finished);
  });
  app.addHook('preClose', async () => {
    const deadline = Date.now() + DRAIN_MS;
    while (inFlight > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
  });
  return app;
}

/**
 * Abuse limits on every request but the operators' probes: a token bucket
 * per client address, then one per bearer token (keyed by the token as
 * sent, before it is verified, so a flood of forged tokens costs a
 * verification each only within its address's budget). A refusal is a 429
 * with Retry-After (RFC 9110 §10.2.3, RFC 6585 §4) and is counted. Bodies
 * larger than HTTP_MAX_BODY_BYTES are refused by Fastify (413), and
 * connections past HTTP_MAX_CONNECTIONS are dropped by the server; both are
 * counted too.
 */
function installLimits(app: FastifyInstance, deps: ApiDeps, limits: HttpLimits, durations: RequestDurations): void {
  deps.metrics.counter(LIMIT_REFUSALS, 'Requests, streams, messages and connections refused by an abuse limit, by limit');
  for (const limit of ['http_address', 'http_token', 'http_body', 'http_streams', 'http_streams_per_caller', 'http_connections']) deps.metrics.inc(LIMIT_REFUSALS, { limit }, 0);
  const exempt = new Set(['/healthz', '/readyz', '/metrics']);
  const refuse = (reply: FastifyReply, refusal: Refusal) => {
    deps.metrics.inc(LIMIT_REFUSALS, { limit: refusal.limit });
    reply.header('retry-after', String(Math.max(1, Math.ceil(refusal.waitMs / 1000))));
    return sendError(reply, 'too_many_requests', refusal.limit === 'http_address' ? 'Too many requests from this address.' : 'Too many requests with this token.');
  };
  const missingHost = (request: FastifyRequest) => request.raw.httpVersionMajor === 1 && request.raw.httpVersionMinor >= 1 && !request.headers.host;
  if (!limits.enabled) {
    app.addHook('onRequest', (request, reply, done) => {
      if (missingHost(request)) return void sendError(reply, 'invalid_request', 'HTTP/1.1 requests need a Host header (RFC 9112 §3.2).');
      done();
    });
  } else {
    // A callback hook, not an async one: no promise per request on the hot path.
    app.addHook('onRequest', (request, reply, done) => {
      if (missingHost(request)) return void sendError(reply, 'invalid_request', 'HTTP/1.1 requests need a Host header (RFC 9112 §3.2).');
      if (exempt.has(request.url)) return done();
      // The cached read path may have taken this request's tokens already (api/fast-read.ts).
      const decided = limits.decidedFor(request.raw);
      const refusal = decided === undefined ? limits.take(request.ip, request.headers.authorization, deps.clock()) : decided;
      // Answered here: done() is not called, so nothing else runs for the request.
      if (refusal) return void refuse(reply, refusal);
      done();
    });
  }
  // One onResponse hook does both jobs (a hook call per request fewer than an
  // onSend hook for the 413s): bodies refused for size are counted here.
  app.addHook('onResponse', (request, reply, done) => {
    if (reply.statusCode === 413) deps.metrics.inc(LIMIT_REFUSALS, { limit: 'http_body' });
    durations.observe(request.method, request.routeOptions.url ?? 'unmatched', reply.statusCode, reply.elapsedTime / 1000);
    done();
  });
  app.addHook('onReady', async () => {
    app.server.maxConnections = deps.limits.httpMaxConnections;
    app.server.on('drop', () => deps.metrics.inc(LIMIT_REFUSALS, { limit: 'http_connections' }));
  });
}
