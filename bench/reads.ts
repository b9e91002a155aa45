import { createScratchDatabase } from './scratch-db.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { request, type IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { startService } from '../bin/service.js';
import { parseConfig } from '../core/config.js';
import { BENCH_LIMITS, BENCH_PLAIN_TEXT } from './limits.js';
import { issueToken } from '../core/identity/tokens.js';
import type { BareSpec } from './bare-http.js';
import type { LoadResult, LoadSpec } from './http-load.js';
import { reportToSuite } from './suite-row.js';

/**
 * Read benchmark: authenticated, consent-filtered PIDF reads
 * (GET /v1/presence/{handle}, Accept: application/pidf+xml) per second,
 * against a bare node:http server returning the same bytes with the same
 * headers, measured in the same run by the same load generator.
 * Target (issue): service / bare >= 0.6.
 *
 *   npm run build && node dist/bench/reads.js
 *
 * Processes: the service runs in this one (PostgreSQL for storage, with its
 * write-behind and access log running; the embedded MQTT broker on an
 * ephemeral port, unused here); the bare server and the load generator each
 * in a child process of their own, so no two share an event loop (2 cores:
 * one for the server under test, one for the client; the idle server sleeps).
 *
 * One owner whose phone app published "busy, in a meeting" over HTTP, and
 * BENCH_WATCHERS watchers (default 50), each with an allow rule and a token;
 * the load rotates over their tokens. Each run: BENCH_WARMUP_SECONDS (1) of
 * warm-up, then BENCH_SECONDS (10) counted, with BENCH_CONCURRENCY (32)
 * keep-alive connections. Revalidations (If-None-Match with the current
 * entity tag, answered 304) are measured the same way for
 * BENCH_REVALIDATE_SECONDS (3). BENCH_ROUNDS (3) rounds, interleaved bare,
 * service, bare, service...; medians are printed (the ratio is the median of
 * the per-round ratios).
 *
 * The client: one core of node:http client cannot saturate node:http on the
 * other (measured here: ~35-38k req/s against both servers at ~100% client
 * CPU, so the ratio came out ~0.95 whatever the service costs). By default
 * the load generator therefore uses a minimal HTTP/1.1 client on net
 * sockets (bench/http-load.ts: the same request headers, keep-alive, one
 * request at a time per connection, bodies checked byte for byte), which
 * does saturate both servers; BENCH_CLIENT=node uses node:http with a
 * keep-alive Agent instead. Printed beside the rates: the client's CPU share
 * (near 100%: the client limits the rate), each server's CPU share and its
 * CPU time per request (whole run; /proc for the bare child), whose ratio
 * bare / service is a second view of capacity (not load-independent: a
 * saturated server batches more work per system call).
 *
 * BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test): a scratch
 * database is created next to it and dropped after.
 */
const watcherCount = Number(process.env.BENCH_WATCHERS ?? 50);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 32);
const seconds = Number(process.env.BENCH_SECONDS ?? 10);
const revalidateSeconds = Number(process.env.BENCH_REVALIDATE_SECONDS ?? 3);
const warmupSeconds = Number(process.env.BENCH_WARMUP_SECONDS ?? 1);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const client = process.env.BENCH_CLIENT === 'node' ? 'node' : 'raw';
const here = fileURLToPath(new URL('.', import.meta.url));
const TARGET = 0.6;

interface Response {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

function get(port: number, path: string, headers: Record<string, string>): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The response headers a server sets itself, as opposed to those node:http adds. */
function ownHeaders(headers: IncomingHttpHeaders): Record<string, string> {
  const own: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (['date', 'connection', 'keep-alive', 'transfer-encoding'].includes(name) || value === undefined) continue;
    own[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return own;
}

/** CPU time of another process (user + system), in µs, from /proc (Linux). */
async function cpuOf(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of stat(5), in clock ticks (100 per second on Linux).
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

interface Run extends LoadResult {
  /** Server CPU time per response, µs, over the whole run. */
  readonly serverCpuUs: number;
  /** Server CPU time over the run as a share of one core. */
  readonly serverCpu: number;
}

async function measured(spec: LoadSpec, serverCpu: () => Promise<number>): Promise<Run> {
  const cpu0 = await serverCpu();
  const t0 = performance.now();
  const result = await runLoad(spec);
  const cpu = (await serverCpu()) - cpu0;
  return { ...result, serverCpuUs: cpu / result.total, serverCpu: cpu / 1000 / (performance.now() - t0) };
}

function runLoad(spec: LoadSpec): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(here, 'http-load.js'), JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => (out += chunk));
    child.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as LoadResult) : reject(new Error(`load generator exited with ${code}`))));
  });
}

async function startBare(spec: BareSpec): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn(process.execPath, [join(here, 'bare-http.js'), JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  for await (const line of lines) return { port: (JSON.parse(line) as { port: number }).port, child };
  throw new Error('bare server exited before listening');
}

const pct = (share: number) => `${(share * 100).toFixed(0)}%`;

async function main() {
  const database = await createScratchDatabase();
  const dataDir = await mkdtemp(join(tmpdir(), 'bench-reads-'));
  const parsed = parseConfig({ ...BENCH_LIMITS, ...BENCH_PLAIN_TEXT, DATABASE_URL: database.url, DATA_DIR: dataDir, PORT: '0', MQTT_PORT: '0', LOG_LEVEL: 'warn' });
  if (!parsed.ok) throw new Error(parsed.problems.join('; '));
  const service = await startService(parsed.config);
  let bare: ChildProcess | undefined;
  try {
    const port = Number(new URL(service.httpUrl).port);
    const { token: adminToken } = await issueToken(service.signingKey, parsed.config.tokenIssuer, { kind: 'admin', subject: 'bench', scopes: ['admin'], ttlSeconds: 3600 }, Date.now());
    const api = async (path: string, body: unknown, token = adminToken) => {
      const response = await fetch(`${service.httpUrl}${path}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
      return (await response.json()) as Record<string, string>;
    };

    // One owner, online: their phone app publishes over HTTP.
    const handle = 'alice';
    await api('/v1/admin/owners', { handle });
    const ownerToken = (await api('/v1/admin/tokens', { kind: 'owner', subject: handle })).token as string;
    await api(`/v1/presence/${handle}`, { availability: 'busy', activities: ['meeting'] }, ownerToken);
    const tokens: string[] = [];
    for (let i = 0; i < watcherCount; i++) {
      const watcher = await api('/v1/admin/watchers', { kind: 'person', name: `Watcher ${i}` });
      await api(`/v1/admin/owners/${handle}/rules`, {
        conditions: { identity: { watchers: [watcher.id] } },
        actions: { subHandling: 'allow' },
        transformations: { availability: true, activities: true },
      });
      tokens.push((await api('/v1/admin/tokens', { kind: 'watcher', subject: watcher.id })).token as string);
    }

    // The bytes to serve: every watcher must get the same PIDF, and it must be the online view.
    const path = `/v1/presence/${handle}`;
    const accept = 'application/pidf+xml';
    const reads = await Promise.all(tokens.map((token) => get(port, path, { authorization: `Bearer ${token}`, accept })));
    const first = reads[0] as Response;
    if (first.status !== 200 || !first.body.includes('urn:ietf:params:xml:ns:pidf') || !first.body.includes('<basic>open</basic>') || !first.body.includes('meeting')) {
      throw new Error(`unexpected read: ${first.status} ${first.body}`);
    }
    if (reads.some((r) => r.status !== 200 || r.body !== first.body)) throw new Error('watchers with the same rule got different bytes');
    const etag = String(first.headers.etag);
    const revalidated = await get(port, path, { authorization: `Bearer ${tokens[0]}`, accept, 'if-none-match': etag });
    if (revalidated.status !== 304 || revalidated.body !== '') throw new Error(`revalidation gave ${revalidated.status}`);

    const started = await startBare({ body: first.body, etag, headers200: ownHeaders(first.headers), headers304: ownHeaders(revalidated.headers) });
    bare = started.child;
    const barePort = started.port;
    const barePid = started.child.pid ?? 0;
    const selfCpu = async () => {
      const usage = process.cpuUsage();
      return usage.user + usage.system;
    };
    const check = await get(barePort, path, { accept });
    if (check.body !== first.body || JSON.stringify(ownHeaders(check.headers)) !== JSON.stringify(ownHeaders(first.headers))) throw new Error('the bare server does not answer the same');

    const modes = [
      { name: 'read (200, PIDF)', status: 200, body: first.body, ifNoneMatch: undefined, durationMs: seconds * 1000 },
      { name: 'revalidation (304)', status: 304, body: '', ifNoneMatch: etag, durationMs: revalidateSeconds * 1000 },
    ].filter((m) => m.durationMs > 0);
    const results = new Map<string, { bare: Run; service: Run }[]>();
    for (const mode of modes) {
      const list: { bare: Run; service: Run }[] = [];
      results.set(mode.name, list);
      for (let round = 0; round < rounds; round++) {
        const spec = (p: number): LoadSpec => ({
          port: p,
          path,
          tokens,
          accept,
          ...(mode.ifNoneMatch ? { ifNoneMatch: mode.ifNoneMatch } : {}),
          expectStatus: mode.status,
          expectBody: mode.body,
          concurrency,
          warmupMs: warmupSeconds * 1000,
          durationMs: mode.durationMs,
          client,
        });
        const bareRun = await measured(spec(barePort), () => cpuOf(barePid));
        const serviceRun = await measured(spec(port), selfCpu);
        list.push({ bare: bareRun, service: serviceRun });
        process.stderr.write(
          `${mode.name} round ${round + 1}: bare ${bareRun.rate.toFixed(0)}/s (server CPU ${pct(bareRun.serverCpu)}, client ${pct(bareRun.clientCpu)}), ` +
            `service ${serviceRun.rate.toFixed(0)}/s (server CPU ${pct(serviceRun.serverCpu)}, client ${pct(serviceRun.clientCpu)}), ratio ${(serviceRun.rate / bareRun.rate).toFixed(2)}` +
            `${bareRun.sample ?? serviceRun.sample ? `; wrong: ${bareRun.sample ?? serviceRun.sample}` : ''}\n`,
        );
      }
    }

    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
    const ms = (us: number) => (us / 1000).toFixed(2);
    const lines = [
      `Read benchmark: GET ${path} as PIDF (${first.body.length} bytes), ${watcherCount} watchers with allow rules (tokens rotated), ${concurrency} keep-alive connections, ` +
        `${client === 'raw' ? 'raw net-socket client' : 'node:http client'} in its own process, ${rounds} rounds interleaved bare/service, ` +
        `${warmupSeconds} s warm-up + ${seconds} s per read run (${revalidateSeconds} s per revalidation run); PostgreSQL, embedded MQTT broker (unused)`,
      '',
      '| request | service req/s | bare req/s | ratio | service p50 / p99 ms | bare p50 / p99 ms | server CPU µs/req service / bare | CPU ratio (bare/service) | server CPU use service / bare | client CPU service / bare | non-matching (service / bare) |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
    ];
    for (const [name, rs] of results) {
      const bad = (r: LoadResult) => r.wrong + r.errors;
      const m = (f: (r: { bare: Run; service: Run }) => number) => median(rs.map(f));
      lines.push(
        `| ${name} | ${m((r) => r.service.rate).toFixed(0)} | ${m((r) => r.bare.rate).toFixed(0)} | ${m((r) => r.service.rate / r.bare.rate).toFixed(2)} | ` +
          `${ms(m((r) => r.service.p50Us))} / ${ms(m((r) => r.service.p99Us))} | ${ms(m((r) => r.bare.p50Us))} / ${ms(m((r) => r.bare.p99Us))} | ` +
          `${m((r) => r.service.serverCpuUs).toFixed(1)} / ${m((r) => r.bare.serverCpuUs).toFixed(1)} | ${m((r) => r.bare.serverCpuUs / r.service.serverCpuUs).toFixed(2)} | ` +
          `${pct(m((r) => r.service.serverCpu))} / ${pct(m((r) => r.bare.serverCpu))} | ${pct(m((r) => r.service.clientCpu))} / ${pct(m((r) => r.bare.clientCpu))} | ` +
          `${rs.reduce((s, r) => s + bad(r.service), 0)} / ${rs.reduce((s, r) => s + bad(r.bare), 0)} |`,
      );
    }
    const readRuns = results.get(modes[0]?.name ?? '') ?? [];
    const readRatio = median(readRuns.map((r) => r.service.rate / r.bare.rate));
    const cpuRatio = median(readRuns.map((r) => r.bare.serverCpuUs / r.service.serverCpuUs));
    // Headline figures for the suite (bench/suite.ts): the read against its target, the revalidation beside it.
    for (const [name, rs] of results) {
      const isRead = name === 'read (200, PIDF)';
      const ratio = median(rs.map((r) => r.service.rate / r.bare.rate));
      reportToSuite({
        part: 'reads',
        figure: `${isRead ? 'PIDF reads' : 'revalidations (304)'}/s, consented, ${concurrency} connections, median of ${rs.length}`,
        value: median(rs.map((r) => r.service.rate)),
        unit: 'req/s',
        baseline: { name: 'bare node:http', value: median(rs.map((r) => r.bare.rate)) },
        ratio,
        ...(isRead ? { target: `>= ${TARGET} of bare`, met: ratio >= TARGET } : {}),
      });
    }
    lines.push(
      '',
      `Medians over the rounds (ratios: medians of the per-round ratios). Target: read ratio >= ${TARGET}: ${readRatio >= TARGET ? 'met' : 'missed'} by req/s (${readRatio.toFixed(2)}), ` +
        `${cpuRatio >= TARGET ? 'met' : 'missed'} by server CPU per request (${cpuRatio.toFixed(2)}).`,
      'Server CPU per request covers the whole run (warm-up included; the service also runs its write-behind). Client CPU near 100%: the client, not the server, limits the rate, and the req/s ratio is flattered; ' +
        'the CPU ratio is less so.',
    );
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    bare?.kill('SIGTERM');
    await service.close();
    await database.drop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

await main();
