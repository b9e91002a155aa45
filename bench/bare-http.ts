import { createServer } from 'node:http';

/**
 * The baseline server of bench/reads.ts, in its own process: bare node:http
 * answering every request with the bytes and headers the service gave for
 * the same read (fetched once from it), 304 with the service's 304 headers
 * when If-None-Match carries the entity tag. No routing, no authentication,
 * no consent: what serving those bytes costs at the least.
 *
 * argv: one JSON BareSpec. Prints {"port": n} on stdout once listening.
 */
export interface BareSpec {
  readonly body: string;
  readonly etag: string;
  /** Response headers of the service's 200 and 304 (without date, connection, keep-alive: node:http adds them). */
  readonly headers200: Record<string, string>;
  readonly headers304: Record<string, string>;
}

const spec = JSON.parse(process.argv[2] ?? '{}') as BareSpec;
if (!spec.body || !spec.etag) throw new Error('usage: bare-http <BareSpec as JSON>');
const body = Buffer.from(spec.body, 'utf8');

const server = createServer((req, res) => {
  if (req.headers['if-none-match'] === spec.etag) {
    res.writeHead(304, spec.headers304);
    res.end();
  } else {
    res.writeHead(200, spec.headers200);
    res.end(body);
  }
});
server.keepAliveTimeout = 72_000; // as Fastify's default
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`${JSON.stringify({ port: typeof address === 'object' && address ? address.port : 0 })}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
