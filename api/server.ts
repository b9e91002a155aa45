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
import { RepresentationCache } from './representations.js';
import { adminRoutes } from './routes/admin.js';
import { presenceRoutes } from './routes/presence.js';
import { ruleRoutes } from './routes/rules.js';
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
}

/** Bodies are small JSON documents; anything larger is refused with 413. */
export const MAX_BODY_BYTES = 64 * 1024;

export function buildApi(deps: ApiDeps): FastifyInstance {
  const app = Fastify({
    loggerInstance: deps.log,
    // Request logs would carry owner handles in URLs: log errors only.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: MAX_BODY_BYTES,
    return503OnClosing: true,
    // At close, connections still open are cut rather than waited for: the
    // sockets of hijacked streams are not "idle" to Node and would hold the
    // shutdown until clients give up. Draining in-flight requests first is
    // part of the graceful-shutdown work still to come.
    forceCloseConnections: true,
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  installErrorHandlers(app);

  const auth = new Authenticator(deps.verifier, deps.directory, deps.clock);
  systemRoutes(app, { metrics: deps.metrics, ready: deps.ready });
  const presenceDeps = {
    auth,
    directory: deps.directory,
    ruleBook: deps.ruleBook,
    hub: deps.hub,
    accounts: deps.accounts,
    representations: new RepresentationCache(),
    clock: deps.clock,
    accessLog: deps.accessLog,
  };
  presenceRoutes(app, presenceDeps);
  streamRoutes(app, presenceDeps);
  ruleRoutes(app, { auth, accounts: deps.accounts });
  settingsRoutes(app, { auth, accounts: deps.accounts });
  accessLogRoutes(app, { auth, accounts: deps.accounts });
  statusRoutes(app, { auth, accounts: deps.accounts });
  adminRoutes(app, { auth, accounts: deps.accounts, deviceTopic: deps.deviceTopic });
  return app;
}
