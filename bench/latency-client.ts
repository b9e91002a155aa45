import { readFileSync } from 'node:fs';
import { request, type ClientRequest } from 'node:http';
import { connectAsync, type MqttClient } from 'mqtt';

/**
 * The client side of bench/latency.ts, in its own process: it publishes
 * device events over MQTT and reads the Server-Sent Event streams they
 * should cause, on one clock (performance.now()), so latency is measured
 * from the publish call to the arrival of the SSE event, for the service and
 * for the bare relay alike.
 *
 * Each stream follows one device (one owner) through its own connection.
 * Every event flips that device's call state (in-call / idle), so every one
 * changes the watcher's view and must give exactly one SSE event; per stream
 * they arrive in publish order and are matched by order (the view carries no
 * timestamp), checked against the state they announce (busy / available, or
 * the relayed payload). Events are spread round-robin over the streams.
 *
 *   sequential: one event at a time, each awaited before the next (no queueing)
 *   search:     paced steps of stepMs at doubling rates, then 3 bisections,
 *               for the highest rate with no loss, the rate really reached,
 *               and p99 <= maxP99Ms (a backlog that grows fails that)
 *   paced:      a warm-up of stepMs, then rounds of durationMs at the measured
 *               rate, bare and service interleaved; the rate is `rate`, or
 *               half the service's maximum
 *
 * Each run also reports CPU shares (of one core) over its span, from
 * /proc: the server's (and its CPU time per event), the broker's when its
 * pid is given, and this client's, to show what limits the rate.
 *
 * Pacing sleeps 1 ms between bursts (a busy loop would take the core the
 * broker and the servers share). argv: one JSON ClientSpec; progress on
 * stderr, one JSON ClientResult line on stdout, and the message 'paced' to
 * the parent (if an IPC channel exists) when the measured rounds begin.
 */
export interface StreamSpec {
  readonly path: string;
  readonly token: string;
  readonly topic: string;
}

export interface TargetSpec {
  readonly name: 'bare' | 'service';
  readonly port: number;
  /** The server process, for its CPU time. */
  readonly pid: number;
  readonly streams: readonly StreamSpec[];
}

export interface ClientSpec {
  readonly mqttUrl: string;
  readonly qos: 0 | 1;
  /** The broker process, when known (its CPU share is reported). */
  readonly brokerPid: number | undefined;
  readonly targets: readonly TargetSpec[];
  readonly sequential: number;
  readonly stepMs: number;
  readonly minRate: number;
  readonly maxRate: number;
  readonly maxP99Ms: number;
  /** Fixed rate for the paced rounds; 0: half the service's maximum found by the search. */
  readonly rate: number;
  readonly durationMs: number;
  readonly rounds: number;
}

export interface Stats {
  readonly sent: number;
  readonly received: number;
  readonly lost: number;
  /** Publish rate really reached (events/s). */
  readonly achievedRate: number;
  readonly p50Us: number;
  readonly p90Us: number;
  readonly p99Us: number;
  readonly maxUs: number;
  /** Server CPU time per event sent, µs. */
  readonly serverCpuUs: number;
  /** CPU shares of one core over the run: server, broker (NaN if unknown), this client. */
  readonly serverCpu: number;
  readonly brokerCpu: number;
  readonly clientCpu: number;
}

export interface Step {
  readonly rate: number;
  readonly pass: boolean;
  readonly stats: Stats;
}

export interface ClientResult {
  readonly sequential: Record<string, Stats>;
  readonly search: Record<string, { readonly max: number; readonly steps: readonly Step[] }>;
  readonly rate: number;
  readonly paced: Record<string, readonly Stats[]>;
}

const spec = JSON.parse(process.argv[2] ?? '{}') as ClientSpec;
if (!spec.mqttUrl || !spec.targets?.length) throw new Error('usage: latency-client <ClientSpec as JSON>');

const BUSY = /"(busy|in-call)"/;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One SSE stream and the device whose events it should show. */
class Stream {
  /** State shown by the last event received: 1 busy / in a call, 0 not. */
  shown = 0;
  opened = false;
  /** Publishes not yet seen, in order (time and state). */
  private readonly pendingAt: number[] = [];
  private readonly pendingState: (0 | 1)[] = [];
  private head = 0;
  /** State of the last event published. */
  published: 0 | 1 = 0;
  private lastAt = 0;
  private waiter: (() => void) | undefined;
  private req: ClientRequest | undefined;

  constructor(
    private readonly port: number,
    readonly spec: StreamSpec,
    private readonly run: Run,
  ) {}

  open(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.req = request(
        { host: '127.0.0.1', port: this.port, path: this.spec.path, agent: false, headers: { authorization: `Bearer ${this.spec.token}`, accept: 'text/event-stream' } },
        (res) => {
          if (res.statusCode !== 200) return reject(new Error(`${this.spec.path}: ${res.statusCode}`));
          res.setEncoding('utf8');
          let buffer = '';
          res.on('data', (chunk: string) => {
            const arrival = performance.now();
            buffer += chunk;
            for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
              const block = buffer.slice(0, end);
              buffer = buffer.slice(end + 2);
              if (block.startsWith(':')) continue; // heartbeat
              const data = block.split('\n').find((line) => line.startsWith('data: ')) ?? '';
              this.onEvent(BUSY.test(data) ? 1 : 0, arrival);
              if (this.opened) continue;
              this.opened = true;
              resolve();
            }
          });
        },
      );
      this.req.on('error', reject);
      this.req.end();
    });
  }

  close(): void {
    this.req?.destroy();
  }

  get pending(): number {
    return this.pendingAt.length - this.head;
  }

  /** Publishes the opposite of the last state published. */
  publish(mqtt: MqttClient): void {
    const state: 0 | 1 = this.published ? 0 : 1;
    this.published = state;
    this.lastAt = Math.max(Date.now(), this.lastAt + 1); // every event newer than the last: none is stale
    const payload = `{"kind":"call","at":"${new Date(this.lastAt).toISOString()}","state":"${state ? 'in-call' : 'idle'}"}`;
    this.pendingAt.push(performance.now());
    this.pendingState.push(state);
    mqtt.publish(this.spec.topic, payload, { qos: spec.qos });
  }

  /** Next event received (or the timeout). */
  next(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        resolve();
      }, timeoutMs);
      this.waiter = () => {
        clearTimeout(timer);
        this.waiter = undefined;
        resolve();
      };
    });
  }

  /** Between runs: what is still pending is lost; the next event flips what the watcher last saw. */
  resync(): number {
    const lost = this.pending;
    this.pendingAt.length = 0;
    this.pendingState.length = 0;
    this.head = 0;
    this.published = this.shown ? 1 : 0;
    return lost;
  }

  private onEvent(state: 0 | 1, arrival: number): void {
    if (!this.opened) return; // the current view, sent on opening
    this.shown = state;
    this.run.received++;
    this.run.lastProgress = arrival;
    while (this.head < this.pendingAt.length) {
      const at = this.pendingAt[this.head] as number;
      const expected = this.pendingState[this.head];
      this.head++;
      if (expected === state) {
        this.run.latencies.push(arrival - at);
        break;
      }
      this.run.lost++; // skipped: its event never came
    }
    if (this.head === this.pendingAt.length) {
      this.pendingAt.length = 0;
      this.pendingState.length = 0;
      this.head = 0;
    }
    this.waiter?.();
  }
}

class Run {
  latencies: number[] = [];
  received = 0;
  lost = 0;
  lastProgress = 0;

  reset(): void {
    this.latencies = [];
    this.received = 0;
    this.lost = 0;
    this.lastProgress = performance.now();
  }
}

/** CPU time of a process (user + system), µs, from /proc (Linux); NaN if unknown. */
function cpuOf(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime, fields 14 and 15 of stat(5), in clock ticks (100 per second).
    return (Number(fields[11]) + Number(fields[12])) * 10_000;
  } catch {
    return NaN;
  }
}

interface CpuMark {
  readonly at: number;
  readonly server: number;
  readonly broker: number;
  readonly client: number;
}

function cpuMark(target: Target): CpuMark {
  const own = process.cpuUsage();
  return { at: performance.now(), server: cpuOf(target.pid), broker: cpuOf(spec.brokerPid), client: own.user + own.system };
}

function stats(run: Run, sent: number, publishMs: number, from: CpuMark, to: CpuMark): Stats {
  const spanUs = (to.at - from.at) * 1000;
  const xs = [...run.latencies].sort((a, b) => a - b);
  const q = (p: number) => Math.round((xs[Math.min(xs.length - 1, Math.floor(p * xs.length))] ?? NaN) * 1000);
  return {
    sent,
    received: run.received,
    lost: run.lost,
    achievedRate: publishMs > 0 ? ((sent - 1) * 1000) / publishMs : 0,
    p50Us: q(0.5),
    p90Us: q(0.9),
    p99Us: q(0.99),
    maxUs: Math.round((xs[xs.length - 1] ?? NaN) * 1000),
    serverCpuUs: (to.server - from.server) / sent,
    serverCpu: (to.server - from.server) / spanUs,
    brokerCpu: (to.broker - from.broker) / spanUs,
    clientCpu: (to.client - from.client) / spanUs,
  };
}

interface Target {
  readonly name: string;
  readonly pid: number;
  readonly streams: Stream[];
  readonly run: Run;
}

const mqtt = await connectAsync(spec.mqttUrl, { clean: true, clientId: `bench-latency-pub-${process.pid}`, protocolVersion: 4 });
// mqtt.js leaves Nagle's algorithm on: with QoS 1, a publish held back until
// the broker ACKs the last segment (which Linux delays up to 40 ms) stalls
// the stream. Devices are other machines; this publisher must not add that.
(mqtt.stream as unknown as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
const targets: Target[] = [];
for (const t of spec.targets) {
  const run = new Run();
  const streams = t.streams.map((s) => new Stream(t.port, s, run));
  await Promise.all(streams.map((s) => s.open()));
  targets.push({ name: t.name, pid: t.pid, streams, run });
}

/** Waits until nothing is pending, or nothing arrived for a second. */
async function drain(target: Target): Promise<void> {
  while (target.streams.some((s) => s.pending > 0) && performance.now() - target.run.lastProgress < 1000) await sleep(2);
}

function resync(target: Target): number {
  return target.streams.reduce((sum, s) => sum + s.resync(), 0);
}

// Prime: each device reports a call, so the owner is online and the next event flips it.
for (const target of targets) {
  target.run.reset();
  for (const s of target.streams) s.publish(mqtt);
  await drain(target);
  if (resync(target) > 0 || target.streams.some((s) => s.shown !== 1)) throw new Error(`${target.name}: priming events did not come through`);
}

async function sequential(target: Target, count: number): Promise<Stats> {
  resync(target);
  target.run.reset();
  const cpu = cpuMark(target);
  const started = performance.now();
  for (let i = 0; i < count; i++) {
    const stream = target.streams[i % target.streams.length] as Stream;
    const waiting = stream.next(2000);
    stream.publish(mqtt);
    await waiting;
  }
  const publishMs = performance.now() - started;
  target.run.lost += resync(target);
  return stats(target.run, count, publishMs, cpu, cpuMark(target));
}

async function paced(target: Target, rate: number, durationMs: number): Promise<Stats> {
  resync(target);
  target.run.reset();
  const total = Math.max(2, Math.round((rate * durationMs) / 1000));
  const cpu = cpuMark(target);
  const started = performance.now();
  let sent = 0;
  for (;;) {
    const due = Math.min(total, Math.floor(((performance.now() - started) * rate) / 1000) + 1);
    while (sent < due) {
      (target.streams[sent % target.streams.length] as Stream).publish(mqtt);
      sent++;
    }
    if (sent >= total) break;
    await sleep(1);
  }
  const publishMs = performance.now() - started;
  target.run.lastProgress = performance.now();
  await drain(target);
  target.run.lost += resync(target);
  return stats(target.run, sent, publishMs, cpu, cpuMark(target));
}

const passes = (rate: number, s: Stats) => s.lost === 0 && s.received === s.sent && s.achievedRate >= 0.95 * rate && s.p99Us <= spec.maxP99Ms * 1000;
const log = (text: string) => process.stderr.write(`${text}\n`);
const pct = (share: number) => (Number.isNaN(share) ? '?' : `${(share * 100).toFixed(0)}%`);
const fmt = (s: Stats) =>
  `sent ${s.sent} at ${s.achievedRate.toFixed(0)}/s, lost ${s.lost}, p50 ${(s.p50Us / 1000).toFixed(2)} ms, p99 ${(s.p99Us / 1000).toFixed(2)} ms, max ${(s.maxUs / 1000).toFixed(1)} ms; ` +
  `CPU server ${pct(s.serverCpu)} (${s.serverCpuUs.toFixed(1)} µs/event), broker ${pct(s.brokerCpu)}, client ${pct(s.clientCpu)}`;

async function search(target: Target): Promise<{ max: number; steps: Step[] }> {
  const steps: Step[] = [];
  const step = async (rate: number) => {
    const s = await paced(target, rate, spec.stepMs);
    const pass = passes(rate, s);
    steps.push({ rate, pass, stats: s });
    log(`  ${target.name} ${rate}/s: ${pass ? 'pass' : 'FAIL'} (${fmt(s)})`);
    await sleep(300); // let the broker, the server and the write-behind settle
    return pass;
  };
  let low = 0;
  let high = 0;
  for (let rate = spec.minRate; rate <= spec.maxRate; rate *= 2) {
    if (await step(rate)) low = rate;
    else {
      high = rate;
      break;
    }
  }
  if (high) {
    for (let i = 0; i < 3 && high - low > spec.minRate / 4; i++) {
      const mid = Math.round((low + high) / 2);
      if (await step(mid)) low = mid;
      else high = mid;
    }
  }
  return { max: low, steps };
}

const result: { sequential: Record<string, Stats>; search: Record<string, { max: number; steps: Step[] }>; rate: number; paced: Record<string, Stats[]> } = {
  sequential: {},
  search: {},
  rate: spec.rate,
  paced: {},
};
for (const target of targets) {
  result.sequential[target.name] = await sequential(target, spec.sequential);
  log(`sequential ${target.name}: ${fmt(result.sequential[target.name] as Stats)}`);
}
if (!spec.rate) {
  for (const target of targets) {
    log(`max-rate search, ${target.name}:`);
    result.search[target.name] = await search(target);
  }
  result.rate = Math.max(1, Math.floor((result.search.service?.max ?? spec.minRate) / 2));
}
// A warm-up at the measured rate (after a search it changes little; with a
// fixed rate it is the first fast run, which pays JIT and first flushes).
for (const target of targets) {
  const s = await paced(target, result.rate, spec.stepMs);
  log(`warm-up ${result.rate}/s ${target.name} (not counted): ${fmt(s)}`);
  await sleep(300);
}
process.send?.('paced'); // the parent starts its event-loop and GC watch here
for (let round = 0; round < spec.rounds; round++) {
  for (const target of targets) {
    const s = await paced(target, result.rate, spec.durationMs);
    (result.paced[target.name] ??= []).push(s);
    log(`paced ${result.rate}/s round ${round + 1} ${target.name}: ${fmt(s)}`);
    await sleep(300);
  }
}

for (const target of targets) for (const s of target.streams) s.close();
await mqtt.endAsync();
process.stdout.write(`${JSON.stringify(result)}\n`);
