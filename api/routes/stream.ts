import type { Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError } from '../../core/errors.js';
import { handleSchema } from '../../core/identifiers.js';
import { JSON_MEDIA_TYPE, type Representation } from '../representations.js';
import { computeView, recordAccess } from '../watcher-views.js';
import { viewerOf, type PresenceRouteDeps } from './presence.js';
import { documented, errors, media, operation } from '../openapi.js';

/**
 * GET /v1/presence/{handle}/stream: the caller's view as Server-Sent Events
 * (JSON data, event `presence`). An event is sent only when that caller's
 * view changes, so changes they cannot see leave no trace; a revoked or
 * narrowed rule narrows the stream at once (the offline view, exactly as a
 * polite-block shows). The event id is the view's entity tag: a client that
 * reconnects with Last-Event-ID gets nothing until the view differs from
 * what it already has.
 *
 * A stream ends when its token expires or its subject is removed, and in
 * any case after STREAM_MAX_MS (the client reconnects, Last-Event-ID
 * avoids a repeat): authorization is re-checked at least that often, for
 * every stream alike. Each event sent is recorded in the owner's access
 * log, as are opening and closing. Streams are limited per caller and in
 * total, and a client that stops reading is cut off rather than buffered.
 */
export const HEARTBEAT_MS = 25_000;
export const STREAM_MAX_MS = 10 * 60_000;
/** The defaults of HTTP_MAX_STREAMS_PER_CALLER and HTTP_MAX_STREAMS (core/config.ts), for tests and benchmarks. */
export const MAX_STREAMS_PER_CALLER = 8;
export const MAX_STREAMS = 10_000;
const MAX_BUFFERED_BYTES = 256 * 1024;
/** Streams checked per turn of the event loop after a state change (about 2 ms of work each turn). */
const CHECK_BATCH = 256;

/** An SSE event (its id is the entity tag without quotes) as sent, built once per representation rather than per stream. */
interface StreamEvent {
  readonly id: string;
  readonly text: string;
}
const events = new WeakMap<Representation, StreamEvent>();
function eventOf(representation: Representation): StreamEvent {
  let event = events.get(representation);
  if (!event) {
    const id = representation.etag.replaceAll('"', '');
    event = { id, text: `id: ${id}\nevent: presence\ndata: ${representation.body.trimEnd()}\n\n` };
    events.set(representation, event);
  }
  return event;
}

export interface StreamRouteDeps extends PresenceRouteDeps {
  /** Open streams at most, in all (HTTP_MAX_STREAMS) and per caller (HTTP_MAX_STREAMS_PER_CALLER). */
  readonly maxStreams: number;
  readonly maxStreamsPerCaller: number;
  /** Told of each stream refused by one of those limits. */
  readonly onRefused: (limit: 'http_streams' | 'http_streams_per_caller') => void;
  /** Given a reader of the number of open streams (a gauge for operators). */
  readonly exposeOpenStreams?: (read: () => number) => void;
}

export function streamRoutes(app: FastifyInstance, deps: StreamRouteDeps): void {
  // Open streams never end on their own: on shutdown they are ended first,
  // or the HTTP server would wait for them for ever.
  const open = new Set<Socket>();
  deps.exposeOpenStreams?.(() => open.size);

  /**
   * The hub tells every stream of an owner about a change synchronously,
   * inside whatever made the change (often the owner's own request). Working
   * out thousands of views there would hold that request, and every event,
   * until the last view is done (node:http sends nothing before the loop
   * ends). So each stream's check is queued instead and run in batches, with
   * the event loop turning between batches: the request is answered and the
   * first events leave after one batch, not after all of them. A stream is
   * queued at most once however many changes arrive before its turn (a
   * closed one's turn does nothing: check returns at once), and its
   * check works out the view from the state at the time it runs, so a stream
   * never shows an older view after a newer one and may skip views that were
   * already superseded.
   */
  let queue: (() => void)[] = [];
  let next = 0;
  const drain = () => {
    const end = Math.min(next + CHECK_BATCH, queue.length);
    while (next < end) {
      const run = queue[next++] as () => void;
      // One stream's failure must not stall the others queued behind it.
      try {
        run();
      } catch (error) {
        app.log.error({ err: error }, 'stream check failed');
      }
    }
    if (next < queue.length) setImmediate(drain);
    else {
      queue = [];
      next = 0;
    }
  };
  // The first batch of each turn runs at once, as the change happens: an
  // owner with a few streams gets every change to them without waiting for
  // (or coalescing into) a later turn, which the latency benchmark showed as
  // changes merged away at 1,500 events/s. Only what exceeds a batch queues.
  let ranThisTurn = 0;
  const resetTurn = () => {
    ranThisTurn = 0;
  };
  const scheduleCheck = (run: () => void) => {
    if (queue.length === 0 && ranThisTurn < CHECK_BATCH) {
      if (ranThisTurn++ === 0) setImmediate(resetTurn);
      try {
        run();
      } catch (error) {
        app.log.error({ err: error }, 'stream check failed');
      }
      return;
    }
    if (queue.push(run) === 1) setImmediate(drain);
  };
  const perCaller = new Map<string, number>();
  app.addHook('preClose', async () => {
    for (const socket of open) socket.destroy();
  });

  const schema = {
    ...operation(
      'stream',
      "Stream an owner's presence",
      { kinds: ['watcher', 'owner'], scope: 'presence:read' },
      `Server-Sent Events: event \`presence\` with the caller's view as JSON (as a JSON read gives it) in \`data\` and its entity tag as \`id\`, sent at once and then only when the view changes; a comment every ${HEARTBEAT_MS / 1000} s keeps the connection open. The stream ends when the token expires or its subject is removed, and after ${STREAM_MAX_MS / 60_000} minutes in any case: reconnect with Last-Event-ID. At most ${deps.maxStreamsPerCaller} streams per caller (HTTP_MAX_STREAMS_PER_CALLER).`,
    ),
    params: z.object({ handle: handleSchema }),
    response: {
      200: media("The caller's view, then each change of it.", { 'text/event-stream': z.string().describe('Server-Sent Events (`id`, `event: presence`, `data`: a WatcherView as JSON).') }),
      ...errors('invalid_request', 401, 'forbidden', 429, 503),
    },
  };
  const config = documented({ headers: z.object({ 'last-event-id': z.string().optional().describe('The id of the last event received: nothing is sent until the view differs from it.') }) });
  app.withTypeProvider<ZodTypeProvider>().get('/v1/presence/:handle/stream', { schema, config }, async (request, reply) => {
    const principal = await deps.auth.require(request, ['watcher', 'owner'], 'presence:read');
    const caller = `${principal.kind}:${principal.subject}`;
    if ((perCaller.get(caller) ?? 0) >= deps.maxStreamsPerCaller) {
      deps.onRefused('http_streams_per_caller');
      throw new AppError('too_many_requests', `At most ${deps.maxStreamsPerCaller} open streams per caller.`);
    }
    if (open.size >= deps.maxStreams) {
      deps.onRefused('http_streams');
      throw new AppError('unavailable', 'Too many open streams; try again later.');
    }
    const { handle } = request.params;
    const socket = request.raw.socket;
    // The client may have gone while its token was being verified.
    if (socket.destroyed) return reply.hijack();

    const viewer = viewerOf(deps, principal, handle);
    const audit = (access: ReturnType<typeof computeView>, action: 'stream-open' | 'stream-event' | 'stream-close', at: number) => {
      if (viewer.kind === 'watcher') recordAccess(deps.accessLog, viewer.id, access, action, at);
    };
    const openedAt = deps.clock();
    const opened = computeView(deps, viewer, handle, openedAt);
    audit(opened, 'stream-open', openedAt);
    perCaller.set(caller, (perCaller.get(caller) ?? 0) + 1);
    open.add(socket);

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
    /** Pending wake-up, and the instant it was set for. */
    let timer: NodeJS.Timeout | undefined;
    let armedFor = NaN;
    let closed = false;
    const endAt = Math.min(openedAt + STREAM_MAX_MS, principal.expiresAt);

    const write = (text: string) => {
      if (res.writableLength > MAX_BUFFERED_BYTES) return socket.destroy(); // not reading
      res.write(text);
    };

    const check = () => {
      if (closed) return;
      const now = deps.clock();
      if (now >= endAt || !deps.auth.stillValid(principal, now)) return socket.destroy();
      // The owner was erased: the stream ends (a new one finds no such owner, which looks like offline).
      if (ownerId !== undefined && !deps.directory.owner(ownerId)) return socket.destroy();
      const access = computeView(deps, viewer, handle, now);
      const event = eventOf(deps.representations.get(access.view, JSON_MEDIA_TYPE));
      if (event.id !== lastSent) {
        write(event.text);
        lastSent = event.id;
        audit(access, 'stream-event', now);
      }
      // Wake up when the state stops holding without any event (a meeting
      // ends) or a rule's time window opens or closes, or when the stream
      // must end, whichever comes first. A timer already set for that very
      // instant is kept: it fires when a new one would (re-arming it for
      // every stream on every change costs more than computing the view).
      const until = Math.min(access.validUntil, endAt);
      if (timer && armedFor === until) return;
      if (timer) clearTimeout(timer);
      armedFor = until;
      timer = setTimeout(wake, Math.max(0, Math.min(until - now, 2_147_000_000)) + 1);
    };
    const wake = () => {
      timer = undefined;
      check();
    };

    const ownerId = opened.owner?.id;
    // A state change is checked in a later batch (see scheduleCheck); a
    // consent change at once, as always: a revoked or narrowed rule narrows
    // the stream before the call that changed it returns (privacy invariant 5).
    let queued = false;
    const runQueued = () => {
      queued = false;
      check();
    };
    const unsubscribeHub = ownerId
      ? deps.hub.watch(ownerId, () => {
          if (queued) return;
          queued = true;
          scheduleCheck(runQueued);
        })
      : () => undefined;
    const unsubscribeRules = ownerId ? deps.ruleBook.watch(ownerId, check) : () => undefined;
    // The caller's tokens revoked, or the caller (a watcher) revoked: the stream ends at once.
    const unsubscribeCaller = deps.directory.watchSubject(principal.subject, check);
    const unsubscribeToken = principal.tokenId === undefined ? () => undefined : deps.directory.watchToken(principal.tokenId, check);
    const heartbeat = setInterval(() => write(': keep-alive\n\n'), HEARTBEAT_MS);
    heartbeat.unref();
    const close = () => {
      if (closed) return;
      closed = true;
      unsubscribeHub();
      unsubscribeRules();
      unsubscribeCaller();
      unsubscribeToken();
      clearInterval(heartbeat);
      if (timer) clearTimeout(timer);
      open.delete(socket);
      const left = (perCaller.get(caller) ?? 1) - 1;
      if (left > 0) perCaller.set(caller, left);
      else perCaller.delete(caller);
      audit(opened, 'stream-close', deps.clock());
    };
    // The server keeps half-open sockets (a client's FIN does not end the
    // response), so a client that goes away is noticed at its FIN, not at the
    // next heartbeat: the stream and its socket end there.
    socket.once('end', () => socket.destroy());
    socket.once('close', close);
    res.once('close', close);
    if (socket.destroyed) return close();
    check();
  });
}
