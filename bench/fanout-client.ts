import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';

/**
 * The client side of bench/fanout.ts, in its own process: it holds one
 * Server-Sent Events stream per watcher to one server (the service or the
 * bare baseline), on raw net sockets (HTTP/1.1, chunked transfer coding and
 * SSE parsed by hand: the cheapest reader there is, so the client is not
 * what is measured), triggers a change itself and times, per stream, the
 * arrival of the event it causes, on this process's monotonic clock.
 *
 * Driven over IPC by the parent (one message at a time):
 *   {type: 'open', spec: OpenSpec}     opens every stream, waiting for each
 *                                      one's first event -> OpenResult
 *   {type: 'round', spec: RoundSpec}   connects to the server, takes t0, sends
 *                                      the trigger request, waits until every
 *                                      stream that should hear of the change
 *                                      did, then `settleMs` more (to catch
 *                                      events that should not come) -> RoundResult
 *   {type: 'close'}                    closes everything and exits
 *
 * One process holds one server's streams (two processes of this program run
 * side by side, so rounds against the service and the baseline can be
 * interleaved within the file-descriptor limit).
 */
export interface StreamSpec {
  readonly path: string;
  /** Bearer token (none for the bare server). */
  readonly token: string | undefined;
  /** The watcher's consent group: what it should see. */
  readonly group: string;
}

export interface OpenSpec {
  readonly port: number;
  readonly streams: readonly StreamSpec[];
  /** Streams being opened at once. */
  readonly concurrency: number;
}

export interface OpenResult {
  readonly ms: number;
  /** When the first and the last stream got their first event, wall-clock ms (performance.timeOrigin + now): the server's heartbeats come in a burst that long, every heartbeat period after. */
  readonly firstOpenEpoch: number;
  readonly lastOpenEpoch: number;
  /** The first event of one stream per group (raw SSE text). */
  readonly initial: Record<string, string>;
}

export interface RoundSpec {
  /** The trigger request, sent as is (HTTP/1.1, a fresh connection). */
  readonly trigger: { readonly method: string; readonly path: string; readonly headers: Record<string, string>; readonly body: string };
  /** Per group: a string every change event must contain, or null: that group must get nothing. */
  readonly expect: Record<string, string | null>;
  readonly settleMs: number;
  readonly timeoutMs: number;
  /** The server process, for its CPU time over the round (from /proc). */
  readonly serverPid: number;
}

export interface RoundResult {
  /** t0 as wall-clock ms with sub-ms precision (performance.timeOrigin + now), to line up with the server's clock. */
  readonly t0Epoch: number;
  /** When the trigger request was answered, ms after t0, and its status. */
  readonly triggerMs: number;
  readonly triggerStatus: number;
  /** Streams that should hear of the change, and those that did (with the expected content). */
  readonly expected: number;
  readonly delivered: number;
  /** Events on streams that should get nothing (polite-blocked, no rule): must be 0. */
  readonly unexpected: number;
  /** Further events after the first on a stream, and events without the expected content: must be 0. */
  readonly duplicates: number;
  readonly mismatched: number;
  /** Delivery times of the change event, ms after t0, over the delivered streams. */
  readonly minMs: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** Bytes of the change events received (SSE text). */
  readonly bytes: number;
  /** The change event of one stream per group (raw SSE text), for the baseline to send the same bytes. */
  readonly texts: Record<string, string>;
  /** Server CPU time over the round (t0 to the end of the settle time), ms, at 10 ms resolution. */
  readonly serverCpuMs: number;
  /** Heartbeat comments received during the round (should be 0: the parent schedules rounds clear of them). */
  readonly heartbeats: number;
}

type Message = { type: 'open'; spec: OpenSpec } | { type: 'round'; spec: RoundSpec } | { type: 'close' };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One stream: HTTP/1.1 response head, chunked transfer coding, then SSE events; all in latin1 (one char per byte; the payloads are ASCII). */
class Stream {
  private buffer = '';
  private state: 'head' | 'size' | 'data' = 'head';
  private need = 0;
  private sse = '';
  status = 0;
  socket: Socket | undefined;
  /** Events seen (not comments), and the time and text of the first since the last reset. */
  events = 0;
  firstAt = 0;
  firstText = '';
  heartbeats = 0;
  onEvent: ((stream: Stream) => void) | undefined;
  onFail: ((error: Error) => void) | undefined;

  constructor(readonly spec: StreamSpec) {}

  open(port: number): void {
    const socket = connect({ host: '127.0.0.1', port });
    this.socket = socket;
    socket.setEncoding('latin1');
    socket.on('connect', () => {
      const auth = this.spec.token ? `authorization: Bearer ${this.spec.token}\r\n` : '';
      socket.write(`GET ${this.spec.path} HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\n${auth}accept: text/event-stream\r\n\r\n`, 'latin1');
    });
    socket.on('data', (chunk: string) => this.receive(chunk, performance.now()));
    socket.on('error', (error) => this.onFail?.(error));
    socket.on('close', () => this.onFail?.(new Error(`${this.spec.path}: closed (status ${this.status})`)));
  }

  reset(): void {
    this.events = 0;
    this.firstAt = 0;
    this.firstText = '';
    this.heartbeats = 0;
  }

  private receive(chunk: string, at: number): void {
    this.buffer += chunk;
    for (;;) {
      if (this.state === 'head') {
        const end = this.buffer.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = this.buffer.slice(0, end);
        this.buffer = this.buffer.slice(end + 4);
        this.status = Number(head.slice(9, 12));
        if (this.status !== 200 || !/\r\ntransfer-encoding: chunked/i.test(head)) {
          this.onFail?.(new Error(`${this.spec.path}: ${head.split('\r\n')[0]} ${this.buffer.slice(0, 300)}`));
          this.socket?.destroy();
          return;
        }
        this.state = 'size';
      } else if (this.state === 'size') {
        const end = this.buffer.indexOf('\r\n');
        if (end < 0) return;
        this.need = parseInt(this.buffer.slice(0, end), 16);
        this.buffer = this.buffer.slice(end + 2);
        if (this.need === 0) {
          this.socket?.destroy();
          return;
        }
        this.state = 'data';
      } else {
        if (this.buffer.length < this.need + 2) return;
        this.sse += this.buffer.slice(0, this.need);
        this.buffer = this.buffer.slice(this.need + 2);
        this.state = 'size';
        this.events_(at);
      }
    }
  }

  private events_(at: number): void {
    for (let end = this.sse.indexOf('\n\n'); end >= 0; end = this.sse.indexOf('\n\n')) {
      const block = this.sse.slice(0, end + 2);
      this.sse = this.sse.slice(end + 2);
      if (block.startsWith(':')) {
        this.heartbeats += 1;
        continue;
      }
      this.events += 1;
      if (this.events === 1) {
        this.firstAt = at;
        this.firstText = block;
      }
      this.onEvent?.(this);
    }
  }
}

/** CPU time of a process (user + system), ms, from /proc (Linux; 10 ms ticks). */
function cpuMsOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return NaN;
  }
}

let streams: Stream[] = [];
let port = 0;
let openedFirst = 0;
let openedLast = 0;

async function open(spec: OpenSpec): Promise<OpenResult> {
  port = spec.port;
  const started = performance.now();
  streams = spec.streams.map((s) => new Stream(s));
  let next = 0;
  const initial: Record<string, string> = {};
  await new Promise<void>((resolve, reject) => {
    let done = 0;
    let failed = false;
    const startOne = () => {
      const stream = streams[next++];
      if (!stream) return;
      stream.onFail = (error) => {
        if (failed) return;
        failed = true;
        reject(error);
      };
      stream.onEvent = () => {
        stream.onEvent = undefined;
        initial[stream.spec.group] ??= stream.firstText;
        if (done === 0) openedFirst = performance.now();
        openedLast = performance.now();
        if (++done === streams.length) resolve();
        else startOne();
      };
      stream.open(port);
    };
    if (streams.length === 0) resolve();
    for (let i = 0; i < spec.concurrency; i++) startOne();
  });
  // From now on a stream closing is reported with the round that sees it.
  for (const stream of streams) stream.onFail = undefined;
  return { ms: performance.now() - started, firstOpenEpoch: performance.timeOrigin + openedFirst, lastOpenEpoch: performance.timeOrigin + openedLast, initial };
}

function sendTrigger(trigger: RoundSpec['trigger']): Promise<{ t0: number; answered: Promise<{ at: number; status: number }> }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.setNoDelay(true);
    socket.setEncoding('latin1');
    socket.once('error', reject);
    socket.once('connect', () => {
      const body = Buffer.from(trigger.body, 'utf8');
      const headers = Object.entries({ ...trigger.headers, host: `127.0.0.1:${port}`, 'content-length': String(body.length), connection: 'close' })
        .map(([name, value]) => `${name}: ${value}\r\n`)
        .join('');
      const request = Buffer.concat([Buffer.from(`${trigger.method} ${trigger.path} HTTP/1.1\r\n${headers}\r\n`, 'latin1'), body]);
      const answered = new Promise<{ at: number; status: number }>((done) => {
        let head = '';
        const onData = (chunk: string) => {
          const at = performance.now();
          head += chunk;
          if (!head.includes('\r\n')) return;
          socket.off('data', onData);
          socket.destroy();
          done({ at, status: Number(head.slice(9, 12)) });
        };
        socket.on('data', onData);
      });
      const t0 = performance.now();
      socket.write(request);
      resolve({ t0, answered });
    });
  });
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] as number;
}

async function round(spec: RoundSpec): Promise<RoundResult> {
  const expected = streams.filter((s) => spec.expect[s.spec.group] !== null && spec.expect[s.spec.group] !== undefined).length;
  let delivered = 0;
  let failure: Error | undefined;
  let allDelivered: () => void = () => undefined;
  const allIn = new Promise<void>((resolve) => (allDelivered = resolve));
  for (const stream of streams) {
    stream.reset();
    const want = spec.expect[stream.spec.group];
    stream.onEvent = (s) => {
      if (s.events !== 1 || want === null || want === undefined) return;
      if (!s.firstText.includes(want)) return;
      if (++delivered === expected) allDelivered();
    };
    stream.onFail = (error) => {
      failure ??= error;
      allDelivered();
    };
  }
  if (expected === 0) allDelivered();
  const cpu0 = cpuMsOf(spec.serverPid);
  const { t0, answered } = await sendTrigger(spec.trigger);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([allIn.then(() => false), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), spec.timeoutMs)))]);
  clearTimeout(timer);
  await sleep(spec.settleMs);
  const cpu = cpuMsOf(spec.serverPid) - cpu0;
  const answer = await Promise.race([answered, sleep(1000).then(() => ({ at: NaN, status: 0 }))]);
  if (failure) throw failure;
  if (timedOut) process.stderr.write(`fanout-client: ${delivered} of ${expected} streams heard of the change within ${spec.timeoutMs} ms\n`);

  const times: number[] = [];
  const texts: Record<string, string> = {};
  let unexpected = 0;
  let duplicates = 0;
  let mismatched = 0;
  let bytes = 0;
  let heartbeats = 0;
  for (const stream of streams) {
    heartbeats += stream.heartbeats;
    stream.onEvent = undefined;
    stream.onFail = undefined;
    if (stream.events === 0) continue;
    const want = spec.expect[stream.spec.group];
    bytes += stream.firstText.length;
    if (want === null || want === undefined) {
      unexpected += stream.events;
      continue;
    }
    duplicates += stream.events - 1;
    if (!stream.firstText.includes(want)) {
      mismatched += 1;
      continue;
    }
    texts[stream.spec.group] ??= stream.firstText;
    times.push(stream.firstAt - t0);
  }
  times.sort((a, b) => a - b);
  return {
    t0Epoch: performance.timeOrigin + t0,
    triggerMs: answer.at - t0,
    triggerStatus: answer.status,
    expected,
    delivered: times.length,
    unexpected,
    duplicates,
    mismatched,
    minMs: times[0] ?? NaN,
    p50Ms: percentile(times, 50),
    p99Ms: percentile(times, 99),
    maxMs: times.at(-1) ?? NaN,
    bytes,
    texts,
    serverCpuMs: cpu,
    heartbeats,
  };
}

process.on('message', (message: Message) => {
  const reply = (value: unknown) => process.send?.(value);
  const fail = (error: unknown) => {
    process.stderr.write(`fanout-client: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  };
  if (message.type === 'open') open(message.spec).then((result) => reply({ type: 'opened', result }), fail);
  else if (message.type === 'round') round(message.spec).then((result) => reply({ type: 'round', result }), fail);
  else {
    for (const stream of streams) stream.socket?.destroy();
    process.disconnect?.();
    process.exit(0);
  }
});
