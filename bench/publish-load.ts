import { connect, type Socket } from 'node:net';

/**
 * The HTTP load generator of bench/publish.ts, run as its own process so it
 * shares no event loop with the service it measures. One keep-alive
 * connection per target (an owner with their own token), each running one
 * request after another (no pipelining), on raw net sockets like the raw
 * client of bench/http-load.ts:
 *
 *   1. an initial PUBLISH: POST {path} with a PIDF body and no If-Match,
 *      expecting 201 and an ETag;
 *   2. then modifications for ever: the same POST with If-Match carrying
 *      the entity tag of the previous answer and a changed body (a counter
 *      in the note, the RPID activity alternating meeting / on-the-phone),
 *      expecting 200 and a new ETag (RFC 3903 §4.4 over HTTP).
 *
 * Any other answer is counted as wrong and the connection starts its chain
 * again with an initial PUBLISH (what a SIP client does after a 412). After
 * `warmupMs` it counts, for `durationMs`, the modifications answered 200
 * with an entity tag, and their latency (request written to last byte
 * read); it prints `window-start` and `window-end` lines on stdout when the
 * counted window opens and closes (the harness samples server CPU then),
 * waits for the requests in flight, and prints one JSON line
 * (PublishLoadResult).
 *
 * argv: one JSON PublishLoadSpec.
 */
export interface PublishTarget {
  /** e.g. /v1/presence/alice */
  readonly path: string;
  /** An owner token with presence:write for that owner. */
  readonly token: string;
  /** The owner's presentity URI, the PIDF entity (pres:alice@presence.local). */
  readonly entity: string;
  /** The port of the process this chain talks to, when not the spec's (a group of processes). */
  readonly port?: number;
}

export interface PublishLoadSpec {
  readonly port: number;
  /** One connection per target. */
  readonly targets: readonly PublishTarget[];
  /** Expires header of every request, seconds. */
  readonly expires: number;
  readonly warmupMs: number;
  readonly durationMs: number;
}

export interface PublishLoadResult {
  /** Modifications answered 200 with an ETag, completed in the window. */
  readonly ok: number;
  /** Answers in the window with another status or without an ETag. */
  readonly wrong: number;
  /** Socket errors (a connection that fails stops). */
  readonly errors: number;
  /** Initial PUBLISHes answered 201 over the whole run (one per connection unless a chain broke). */
  readonly initial: number;
  /** Answers over the whole run, warm-up and drain included. */
  readonly total: number;
  readonly rate: number;
  readonly p50Us: number;
  readonly p99Us: number;
  /** Request body size of a modification, bytes. */
  readonly bodyBytes: number;
  /** This process's CPU time over the window as a share of one core (1 = saturated). */
  readonly clientCpu: number;
  /** One wrong answer, for the report. */
  readonly sample?: string;
}

/**
 * The PIDF of a publication, ~600 bytes like sipp's publish-load.xml
 * (/work/shared/kamailio/sipp): a tuple with status, contact, note and
 * timestamp, and an RFC 4479 person with RPID activities. `n` changes the
 * note and alternates the activity, so every modification changes the
 * owner's presence.
 */
function publicationBody(entity: string, n: number): string {
  const activity = n % 2 === 0 ? 'meeting' : 'on-the-phone';
  return (
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="${entity}">\n` +
    '  <tuple id="t1">\n' +
    '    <status><basic>open</basic></status>\n' +
    `    <contact priority="0.8">${entity.replace(/^pres:/, 'sip:')}</contact>\n` +
    `    <note>room sensor online; occupancy=1; battery=87%; modify ${n}</note>\n` +
    '    <timestamp>2026-01-01T12:00:00.000Z</timestamp>\n' +
    '  </tuple>\n' +
    '  <dm:person id="p1">\n' +
    `    <rpid:activities><rpid:${activity}/></rpid:activities>\n` +
    '    <dm:note>occupied</dm:note>\n' +
    '  </dm:person>\n' +
    '</presence>\n'
  );
}

await main();

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as PublishLoadSpec;
  if (!(spec.port > 0) || !spec.targets?.length || !(spec.durationMs > 0)) throw new Error('usage: publish-load <PublishLoadSpec as JSON>');

  const started = performance.now();
  const windowStart = started + spec.warmupMs;
  const windowEnd = windowStart + spec.durationMs;
  let cpuAtStart: NodeJS.CpuUsage | undefined;
  let cpuStartedAt = 0;
  let ok = 0;
  let wrong = 0;
  let errors = 0;
  let initial = 0;
  let total = 0;
  let sample: string | undefined;
  const latencies: number[] = [];

  // Window marks by timer, so they come on time even when a response is slow.
  setTimeout(() => {
    cpuAtStart = process.cpuUsage();
    cpuStartedAt = performance.now();
    process.stdout.write('window-start\n');
  }, spec.warmupMs);
  const windowClosed = new Promise<{ cpu: NodeJS.CpuUsage; elapsedMs: number }>((resolve) =>
    setTimeout(() => {
      const cpu = process.cpuUsage(cpuAtStart);
      process.stdout.write('window-end\n');
      resolve({ cpu, elapsedMs: performance.now() - cpuStartedAt });
    }, spec.warmupMs + spec.durationMs),
  );

  /** One connection: an initial PUBLISH, then modifications chained on the entity tag. */
  function chain(target: PublishTarget, index: number): Promise<void> {
    return new Promise((resolve) => {
      const port = target.port ?? spec.port;
      const socket: Socket = connect(port, '127.0.0.1');
      socket.setNoDelay(true);
      const fixed =
        `POST ${target.path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${target.token}\r\n` +
        `Content-Type: application/pidf+xml\r\nEvent: presence\r\nExpires: ${spec.expires}\r\nConnection: keep-alive\r\n`;
      let etag: string | undefined;
      let n = index * 1_000_000;
      let buffer: Buffer = Buffer.alloc(0);
      let sentAt = 0;
      let modifying = false;
      const send = () => {
        if (performance.now() >= windowEnd) {
          socket.end();
          return resolve();
        }
        const body = Buffer.from(publicationBody(target.entity, n++), 'utf8');
        modifying = etag !== undefined;
        const head = `${fixed}${modifying ? `If-Match: "${etag}"\r\n` : ''}Content-Length: ${body.length}\r\n\r\n`;
        sentAt = performance.now();
        socket.write(Buffer.concat([Buffer.from(head, 'latin1'), body]));
      };
      socket.on('connect', send);
      socket.on('data', (chunk: Buffer) => {
        buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
        const headEnd = buffer.indexOf('\r\n\r\n');
        if (headEnd < 0) return;
        const head = buffer.toString('latin1', 0, headEnd);
        if (/\r\ntransfer-encoding:/i.test(head)) throw new Error('chunked responses are not supported');
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        if (buffer.length < headEnd + 4 + length) return;
        const body = buffer.toString('utf8', headEnd + 4, headEnd + 4 + length);
        buffer = buffer.subarray(headEnd + 4 + length);
        const status = Number(head.slice(9, 12));
        const tag = /\r\netag: *"([^"\r\n]+)"/i.exec(head)?.[1];
        const now = performance.now();
        total++;
        const inWindow = now >= windowStart && now < windowEnd;
        const expected = modifying ? 200 : 201;
        if (status === expected && tag !== undefined) {
          etag = tag;
          if (!modifying) initial++;
          else if (inWindow) {
            ok++;
            latencies.push(now - sentAt);
          }
        } else {
          // Start the chain again with an initial PUBLISH, as a SIP client does after a 412.
          etag = undefined;
          if (inWindow || !modifying) {
            wrong++;
            sample ??= `${status} ${body.slice(0, 300)}`;
          }
        }
        send();
      });
      socket.on('error', (error) => {
        errors++;
        sample ??= error.message;
      });
      socket.on('close', () => {
        if (performance.now() < windowEnd) {
          errors++;
          sample ??= 'the server closed the connection';
        }
        resolve();
      });
    });
  }

  await Promise.all(spec.targets.map((target, i) => chain(target, i)));
  const closed = await windowClosed;

  latencies.sort((a, b) => a - b);
  const q = (p: number) => Math.round((latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN) * 1000);
  const result: PublishLoadResult = {
    ok,
    wrong,
    errors,
    initial,
    total,
    rate: (ok * 1000) / spec.durationMs,
    p50Us: q(0.5),
    p99Us: q(0.99),
    bodyBytes: Buffer.byteLength(publicationBody(spec.targets[0]?.entity ?? '', 1)),
    clientCpu: (closed.cpu.user + closed.cpu.system) / 1000 / closed.elapsedMs,
    ...(sample ? { sample } : {}),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
