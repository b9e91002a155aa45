import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { Metrics } from '../../core/metrics.js';
import { sendError } from '../http-errors.js';
import { json, media, operation, probeErrors } from '../openapi.js';

/** Liveness, readiness and Prometheus metrics, for operators and orchestrators. */
export function systemRoutes(app: FastifyInstance, deps: { metrics: Metrics; ready: () => boolean; metricsToken?: string | undefined }): void {
  // Compared as digests in constant time: neither the token's length nor its first wrong byte shows in the timing.
  const digest = (text: string) => createHash('sha256').update(text).digest();
  const expected = deps.metricsToken === undefined ? undefined : digest(`Bearer ${deps.metricsToken}`);
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
        ...operation(
          'system',
          'Prometheus metrics',
          'public',
          'Open unless METRICS_TOKEN is set; then `Authorization: Bearer {METRICS_TOKEN}` is required (the counters tell when devices report).',
        ),
        response: { 200: media('The metrics.', { 'text/plain': z.string().describe('The Prometheus text exposition format, version 0.0.4.') }), ...probeErrors(401) },
      },
    },
    async (request, reply) => {
      if (expected && !timingSafeEqual(digest(request.headers.authorization ?? ''), expected)) {
        // RFC 6750 §3: the challenge names the scheme.
        return sendError(reply.header('www-authenticate', 'Bearer realm="metrics"'), 'unauthorized', 'The metrics need METRICS_TOKEN as a bearer token.');
      }
      return reply.type('text/plain; version=0.0.4').send(deps.metrics.render());
    },
  );
}
