import type { Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { handleSchema } from '../../core/identifiers.js';
import { JSON_MEDIA_TYPE } from '../representations.js';
import { recordAccess, viewFor, type PresenceRouteDeps } from './presence.js';

/**
 * GET /v1/presence/{handle}/stream: the caller's view as Server-Sent Events
 * (JSON data, event `presence`). An event is sent only when that caller's
 * view changes, so changes they cannot see leave no trace; a revoked or
 * narrowed rule narrows the stream at once (the offline view, exactly as a
 * polite-block shows). The event id is the view's entity tag: a client that
 * reconnects with Last-Event-ID gets nothing until the view differs from
 * what it already has. Opening and closing are recorded in the access log.
 */
export const HEARTBEAT_MS = 25_000;

export function streamRoutes(app: FastifyInstance, deps: PresenceRouteDeps): void {
  // Open streams never end on their own: on shutdown they are ended first,
  // or the HTTP server would wait for them for ever.
  const open = new Set<Socket>();
  app.addHook('preClose', async () => {
    for (const socket of open) socket.destroy();
  });

  app.withTypeProvider<ZodTypeProvider>().get('/v1/presence/:handle/stream', { schema: { params: z.object({ handle: handleSchema }) } }, async (request, reply) => {
    const principal = await deps.auth.require(request, ['watcher', 'owner'], 'presence:read');
    const { handle } = request.params;
    const opened = viewFor(deps, principal, handle, deps.clock());
    recordAccess(deps, principal, opened, 'stream-open', deps.clock());

    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    // Send the headers now: a resumed stream may have nothing to say for a while.
    res.flushHeaders();

    const lastEventId = request.headers['last-event-id'];
    let lastSent = typeof lastEventId === 'string' ? lastEventId : undefined;
    let timer: NodeJS.Timeout | undefined;
    let closed = false;

    const check = () => {
      if (closed) return;
      const now = deps.clock();
      const { owner, view } = viewFor(deps, principal, handle, now);
      const representation = deps.representations.get(view, JSON_MEDIA_TYPE);
      const id = representation.etag.replaceAll('"', '');
      if (id !== lastSent) {
        res.write(`id: ${id}\nevent: presence\ndata: ${representation.body.trimEnd()}\n\n`);
        lastSent = id;
      }
      // Wake up when the state stops holding without any event (a meeting ends).
      if (timer) clearTimeout(timer);
      const until = owner ? deps.hub.validUntil(owner.id) : Infinity;
      if (Number.isFinite(until)) timer = setTimeout(check, Math.max(0, Math.min(until - now, 2_147_000_000)) + 1);
    };

    const ownerId = opened.owner?.id;
    const unsubscribeHub = ownerId ? deps.hub.watch(ownerId, check) : () => undefined;
    const unsubscribeRules = ownerId ? deps.ruleBook.watch(ownerId, check) : () => true;
    const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), HEARTBEAT_MS);
    const close = () => {
      if (closed) return;
      closed = true;
      unsubscribeHub();
      unsubscribeRules();
      clearInterval(heartbeat);
      if (timer) clearTimeout(timer);
      recordAccess(deps, principal, opened, 'stream-close', deps.clock());
    };
    // The server keeps half-open sockets (a client's FIN does not end the
    // response), so a client that goes away is noticed at its FIN, not at the
    // next heartbeat: the stream and its socket end there.
    const socket = request.raw.socket;
    open.add(socket);
    socket.once('end', () => socket.destroy());
    socket.once('close', () => {
      open.delete(socket);
      close();
    });
    res.on('close', close);
    check();
  });
}
