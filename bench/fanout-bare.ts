import { createServer, type ServerResponse } from 'node:http';

/**
 * The baseline of bench/fanout.ts, in its own process: a bare node:http
 * Server-Sent Events server holding the same connections as the service
 * (GET /stream/{group}, one connection per watcher, tagged with the
 * watcher's consent group) and, when triggered, writing to each of them the
 * very bytes the service sent that group's watchers for the same kind of
 * change. The floor for "one change delivered to N sockets": no
 * authentication, consent, view, rendering or access log, only a loop of
 * res.write.
 *
 * POST /trigger with {"events": {"<group>": "<SSE event text>"}}: writes
 * each group's text to every stream of that group (groups not named get
 * nothing, as polite-blocked watchers get nothing from the service), then
 * answers 204, after the writes, as the service answers its status change
 * after notifying its streams.
 *
 * Like the service, a stream gets its headers and a first event at once (an
 * empty object here, not a view). Prints {"port": n} on stdout once it
 * listens; ends on SIGTERM.
 */
const streams = new Map<string, ServerResponse[]>();
let sequence = 0;

const server = createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/trigger') {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => {
      const { events } = JSON.parse(body) as { events: Record<string, string> };
      for (const [group, text] of Object.entries(events)) {
        for (const stream of streams.get(group) ?? []) stream.write(text);
      }
      res.writeHead(204).end();
    });
    return;
  }
  const match = /^\/stream\/([a-z0-9-]+)$/.exec(req.url ?? '');
  if (req.method !== 'GET' || !match?.[1]) {
    res.writeHead(404).end();
    return;
  }
  const group = match[1];
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache, no-transform', connection: 'keep-alive', 'x-accel-buffering': 'no' });
  res.write(`id: ${++sequence}\nevent: presence\ndata: {}\n\n`);
  const list = streams.get(group) ?? [];
  list.push(res);
  streams.set(group, list);
  res.once('close', () => {
    const at = list.indexOf(res);
    if (at >= 0) list.splice(at, 1);
  });
});
// A burst of connections: more than node's default backlog (511) may be in flight.
server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, () => {
  const address = server.address();
  process.stdout.write(`${JSON.stringify({ port: typeof address === 'object' && address ? address.port : 0 })}\n`);
});
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
