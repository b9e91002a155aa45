import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { Metrics } from '../../core/metrics.js';
import { sendError } from '../http-errors.js';
import { json, media, operation, probeErrors } from '../openapi.js';

/** Liveness, readiness and Prometheus metrics, for operators and orchestrators. */
export function systemRoutes(app: FastifyInstance, deps: { metrics: Metrics; ready: () => boolean }): void {
  app.get(
    '/healthz',
    { schema: { ...operation('system', 'Liveness', 'public'), response: { 200: json(z.object({ status: z.literal('ok') }), 'The process is up.'), ...probeErrors() } } },
    async (_request, reply) => reply.type('application/json').send('{"status":"ok"}\n'),
  );
  app.get(
    '/readyz',
    {
      schema: {
        ...operation('system', 'Readiness', 'public', 'Ready once the service has started, and no longer while it shuts down.'),
        response: { 200: json(z.object({ status: z.literal('ready') }), 'The service takes requests.'), ...probeErrors(503) },
      },
    },
    async (_request, reply) => (deps.ready() ? reply.type('application/json').send('{"status":"ready"}\n') : sendError(reply, 'unavailable')),
  );
  app.get(
    '/metrics',
    {
      schema: {
        ...operation('system', 'Prometheus metrics', 'public'),
        response: { 200: media('The metrics.', { 'text/plain': z.string().describe('The Prometheus text exposition format, version 0.0.4.') }), ...probeErrors() },
      },
    },
    async (_request, reply) => reply.type('text/plain; version=0.0.4').send(deps.metrics.render()),
  );
}
