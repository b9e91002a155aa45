import { Agent, request } from 'node:http';
import { connect, type Socket } from 'node:net';

/**
 * The HTTP load generator of bench/reads.ts, run as its own process so it
 * shares no event loop with the server it measures. node:http with a
 * keep-alive Agent and `concurrency` connections, each running one request
 * after another (no pipelining); the Authorization header rotates over the
 * given tokens. After `warmupMs` it counts, for `durationMs`, the responses
 * that complete with the expected status and body (exact bytes; empty for a
 * 304), and their latency (request written to last byte read). Then it waits
 * for the requests in flight and prints one JSON line (LoadResult) on stdout.
 *
 * client 'raw' replaces node:http by a minimal HTTP/1.1 client on net
 * sockets (prebuilt requests, a content-length parser, no pipelining):
 * about twice the requests per CPU second, for when node:http on one core
 * cannot saturate the server.
 *
 * argv: one JSON LoadSpec.
 */
export interface LoadSpec {
  readonly port: number;
  readonly path: string;
  readonly tokens: readonly string[];
  readonly accept: string;
  /** Sent as If-None-Match when set (revalidation runs). */
  readonly ifNoneMatch?: string;
  readonly expectStatus: number;
  /** The exact body expected (utf-8); '' for a 304. */
  readonly expectBody: string;
  readonly concurrency: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly client: 'node' | 'raw';
}

export interface LoadResult {
  /** Responses with the expected status and body, completed in the measured window. */
  readonly ok: number;
  /** Responses in the window with another status or other bytes. */
  readonly wrong: number;
  readonly errors: number;
  /** Responses over the whole run, warm-up and drain included (for CPU per request). */
  readonly total: number;
  readonly rate: number;
  readonly p50Us: number;
  readonly p99Us: number;
  /** This process's CPU time over the window as a share of one core (1 = saturated). */
  readonly clientCpu: number;
  /** One wrong response, for the report. */
  readonly sample?: string;
}

const spec = JSON.parse(process.argv[2] ?? '{}') as LoadSpec;
if (!(spec.port > 0) || !spec.tokens?.length || !(spec.concurrency > 0) || !(spec.durationMs > 0)) throw new Error('usage: http-load <LoadSpec as JSON>');

const agent = new Agent({ keepAlive: true, maxSockets: spec.concurrency, maxFreeSockets: spec.concurrency });
const headers = spec.tokens.map((token) => ({
  authorization: `Bearer ${token}`,
  accept: spec.accept,
  ...(spec.ifNoneMatch ? { 'if-none-match': spec.ifNoneMatch } : {}),
}));

const started = performance.now();
const windowStart = started + spec.warmupMs;
const windowEnd = windowStart + spec.durationMs;
let cpuAtStart: NodeJS.CpuUsage | undefined;
let cpuStartedAt = 0;
let next = 0;
let ok = 0;
let wrong = 0;
let errors = 0;
let total = 0;
let sample: string | undefined;
const latencies: number[] = [];

function record(status: number, ok200: boolean, body: () => string, sentAt: number): void {
  total++;
  const now = performance.now();
  if (now >= windowStart && now < windowEnd) {
    if (status === spec.expectStatus && ok200) {
      ok++;
      latencies.push(now - sentAt);
    } else {
      wrong++;
      sample ??= `${status} ${body().slice(0, 200)}`;
    }
  }
}

function one(): Promise<void> {
  return new Promise((resolve) => {
    const sentAt = performance.now();
    const req = request({ host: '127.0.0.1', port: spec.port, path: spec.path, agent, headers: headers[next++ % headers.length] }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        record(res.statusCode ?? 0, body === spec.expectBody, () => body, sentAt);
        resolve();
      });
    });
    req.on('error', (error) => {
      errors++;
      sample ??= error.message;
      resolve();
    });
    req.end();
  });
}

function markWindow(): void {
  if (!cpuAtStart && performance.now() >= windowStart) {
    cpuAtStart = process.cpuUsage();
    cpuStartedAt = performance.now();
  }
}

async function connection(): Promise<void> {
  while (performance.now() < windowEnd) {
    markWindow();
    await one();
  }
}

const expected = Buffer.from(spec.expectBody, 'utf8');
const rawRequests = headers.map((h) =>
  Buffer.from(
    `GET ${spec.path} HTTP/1.1\r\nHost: 127.0.0.1:${spec.port}\r\n${Object.entries(h)
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join('')}Connection: keep-alive\r\n\r\n`,
    'latin1',
  ),
);

/** One keep-alive connection of the raw client: a request, its whole response, the next. */
function rawConnection(): Promise<void> {
  return new Promise((resolve) => {
    const socket: Socket = connect(spec.port, '127.0.0.1');
    socket.setNoDelay(true);
    let buffer: Buffer = Buffer.alloc(0);
    let sentAt = 0;
    const send = () => {
      markWindow();
      if (performance.now() >= windowEnd) {
        socket.end();
        return resolve();
      }
      sentAt = performance.now();
      socket.write(rawRequests[next++ % rawRequests.length] as Buffer);
    };
    socket.on('connect', send);
    socket.on('data', (chunk: Buffer) => {
      buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
      const headEnd = buffer.indexOf('\r\n\r\n');
      if (headEnd < 0) return;
      const head = buffer.toString('latin1', 0, headEnd);
      const status = Number(head.slice(9, 12));
      if (/\r\ntransfer-encoding:/i.test(head)) throw new Error('chunked responses are not supported by the raw client');
      const length = status === 304 || status === 204 ? 0 : Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      if (buffer.length < headEnd + 4 + length) return;
      const body = buffer.subarray(headEnd + 4, headEnd + 4 + length);
      buffer = buffer.subarray(headEnd + 4 + length);
      record(status, body.equals(expected), () => body.toString('utf8'), sentAt);
      send();
    });
    socket.on('error', (error) => {
      errors++;
      sample ??= error.message;
      resolve();
    });
  });
}

await Promise.all(Array.from({ length: spec.concurrency }, () => (spec.client === 'raw' ? rawConnection() : connection())));
const cpu = process.cpuUsage(cpuAtStart);
const cpuElapsedMs = performance.now() - cpuStartedAt;
agent.destroy();

latencies.sort((a, b) => a - b);
const q = (p: number) => Math.round((latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN) * 1000);
const result: LoadResult = {
  ok,
  wrong,
  errors,
  total,
  rate: (ok * 1000) / spec.durationMs,
  p50Us: q(0.5),
  p99Us: q(0.99),
  clientCpu: (cpu.user + cpu.system) / 1000 / cpuElapsedMs,
  ...(sample ? { sample } : {}),
};
process.stdout.write(`${JSON.stringify(result)}\n`);
