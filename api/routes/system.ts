import type { FastifyInstance } from 'fastify';
import type { Metrics } from '../../core/metrics.js';
import { sendError } from '../http-errors.js';

/** Liveness, readiness and Prometheus metrics, for operators and orchestrators. */
export function systemRoutes(app: FastifyInstance, deps: { metrics: Metrics; ready: () => boolean }): void {
  app.get('/healthz', async (_request, reply) => reply.type('application/json').send('{"status":"ok"}\n'));
  app.get('/readyz', async (_request, reply) =>
    deps.ready() ? reply.type('application/json').send('{"status":"ready"}\n') : sendError(reply, 'unavailable'),
  );
  app.get('/metrics', async (_request, reply) => reply.type('text/plain; version=0.0.4').send(deps.metrics.render()));
}
