import Fastify from 'fastify';
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import t from 'tap';
import { Metrics } from '../../core/metrics.js';
import { installErrorHandlers } from '../../api/http-errors.js';
import { systemRoutes } from '../../api/routes/system.js';

/**
 * The probes an orchestrator polls (issue 7, "liveness and readiness
 * endpoints"): readiness follows the service's own flag, which is set once
 * the start has finished and cleared as the first step of a shutdown
 * (bin/service.ts close), so a load balancer stops sending requests while
 * the process drains; liveness stays 200 throughout, so the process is not
 * restarted for draining. The integration tests see the 200s on running
 * services; the not-ready answer is only reachable in the moments of a
 * shutdown, so it is checked here on the routes themselves.
 */
t.test('readiness answers 503 unavailable while the service is not ready; liveness stays 200', async (t) => {
  let ready = false;
  const app = Fastify();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  installErrorHandlers(app);
  systemRoutes(app, { metrics: new Metrics(), ready: () => ready });
  t.teardown(() => app.close());

  const probe = async (url: string) => {
    const response = await app.inject({ method: 'GET', url });
    return { status: response.statusCode, type: response.headers['content-type'], body: response.json<unknown>() };
  };
  t.match(await probe('/readyz'), { status: 503, type: /^application\/json/, body: { code: 'unavailable', message: String } }, 'not ready: 503 with the catalog code');
  t.same(await probe('/healthz'), { status: 200, type: 'application/json; charset=utf-8', body: { status: 'ok' } }, 'alive all the same');
  ready = true;
  t.same(await probe('/readyz'), { status: 200, type: 'application/json; charset=utf-8', body: { status: 'ready' } });
  ready = false;
  t.equal((await probe('/readyz')).status, 503, 'and not ready again once a shutdown begins');
  t.equal((await probe('/healthz')).status, 200, 'still alive');
});
