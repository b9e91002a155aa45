import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { startService } from '../bin/service.js';
import { parseConfig } from '../core/config.js';
import { BENCH_LIMITS, BENCH_PLAIN_TEXT } from './limits.js';
import { issueToken } from '../core/identity/tokens.js';
import { kamailioUnavailable } from '../tests/helpers/kamailio.js';
import { startPrivateBroker, type PrivateBroker } from '../tests/helpers/mosquitto.js';
import type { PublishLoadResult, PublishLoadSpec, PublishTarget } from './publish-load.js';
import { cpuOf, cpuOfProcesses, runSipp, startBenchKamailio, type BenchKamailio, type SippResult } from './publish-sipp.js';
import { createScratchDatabase } from './scratch-db.js';
import { reportToSuite } from './suite-row.js';

/**
 * PUBLISH benchmark: HTTP PUBLISH modifications per second
 * (POST /v1/presence/{handle} with If-Match of the current entity tag and a
 * changed PIDF body, answered 200 with a new ETag: RFC 3903 §4.4 over HTTP,
 * the steady state of a publisher), against Kamailio's SIP PUBLISH
 * modifications (SIP-If-Match and a changed PIDF body) driven by sipp on
 * the same machine, in the same run. Target (issue): at least equal.
 *
 *   npm run build && node dist/bench/publish.js        (about 55 s)
 *
 * Service side: the service runs in this process on a scratch PostgreSQL
 * (bench/scratch-db.ts), LOG_LEVEL=warn, the embedded MQTT broker on an
 * ephemeral port (unused). BENCH_CONCURRENCY (32) owners per round, each
 * with an owner token (presence:write) and a keep-alive connection of its
 * own, so entity-tag chains never conflict; the load generator
 * (bench/publish-load.ts, raw net sockets) runs in a child process. Each
 * connection publishes once (201), then modifies with the tag of the
 * previous answer for the rest of the run; only modifications answered 200
 * with an ETag count.
 *
 * Baseline: Kamailio 5.6 from the project's own configuration
 * (tests/kamailio/kamailio.cfg.template, the SIP integration test's) with
 * publications in memory (publ_cache=2: its fastest set-up, the one
 * /work/shared/STACK.md says to compare against), 1 GB of shared memory and
 * no per-request log line (bench/publish-sipp.ts lists every change), over
 * UDP (Kamailio's default transport). sipp keeps BENCH_CONCURRENCY calls,
 * each a presentity of its own: an initial PUBLISH, then modifications with
 * SIP-If-Match of the last SIP-ETag and a changed body of the same shape
 * and size (~600 bytes), one transaction in flight per call, like the HTTP
 * connections; the rate is read from sipp's per-message counters
 * (-trace_counts, a row a second) over the same window. One more run
 * against the template's default storage (sqlite), for reference: the
 * service stores every publication in PostgreSQL before it answers, while
 * Kamailio in memory stores nothing.
 *
 * Why it is fair: the same operation (a conditional modification of a
 * ~600-byte PIDF publication, a new entity tag per answer), the same number
 * of independent chains with one request in flight each, generator and
 * server in separate processes on the same two cores, both generators
 * cheap (raw sockets; sipp is C++), both servers configured as for
 * production logging. Not identical: HTTP carries a bearer token checked on
 * every request, TCP vs UDP, and Kamailio has two UDP worker processes
 * where the service has one event loop (plus PostgreSQL).
 *
 * Each run: BENCH_WARMUP_SECONDS (1) of warm-up, then BENCH_SECONDS (5)
 * counted; BENCH_ROUNDS (3) rounds, service then Kamailio; medians are
 * printed (the ratio is the median of the per-round ratios). Beside the
 * rates: latency (p50 / p99 for HTTP; for both the mean by Little's law,
 * concurrency / rate, since sipp's timer has a 4 ms resolution here),
 * server CPU (the service process plus its PostgreSQL backends, found by
 * database name in /proc; Kamailio's process group) and the generators'
 * CPU, over the counted window, as shares of one core.
 *
 * Then the same load against a group of BENCH_PUBLISH_GROUP (2) service
 * processes, as an operator scales out (docs/scaling.md): the real entry
 * point (dist/bin/start.js), one PostgreSQL (a scratch database of its
 * own), a private Mosquitto for the
 * group's sync topic and wills, the chains split between the processes by
 * connection (what a load balancer with keep-alive does). Kamailio runs two
 * UDP workers on the two cores; the group is the like-for-like comparison,
 * the single process the per-process figure. The group's rounds run after
 * the others (its members' background work must not weigh on them), so its
 * ratio is of medians, not per round. Its server CPU is the group's
 * processes plus the PostgreSQL backends. BENCH_PUBLISH_GROUP=0 skips it.
 *
 * Other knobs: BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test;
 * the scratch database is created next to it and dropped after);
 * BENCH_KAMAILIO=0 skips the baseline (for profiling the service, e.g.
 * node --cpu-prof); BENCH_KAMAILIO_SQLITE=0 skips the sqlite reference run;
 * BENCH_PG_SYNCHRONOUS_COMMIT=off (diagnostic only) sets it on the scratch
 * database, to see how much of the cost is waiting for the commit's flush;
 * BENCH_GROUP_NODE_ARGS (diagnostic, split on spaces, no quoting) are
 * node's arguments for the group's processes (e.g. --cpu-prof
 * --cpu-prof-dir=DIR).
 */
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 32);
const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const warmupSeconds = Number(process.env.BENCH_WARMUP_SECONDS ?? 1);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const withKamailio = (process.env.BENCH_KAMAILIO ?? '1') !== '0';
const withSqlite = (process.env.BENCH_KAMAILIO_SQLITE ?? '1') !== '0';
const synchronousCommit = process.env.BENCH_PG_SYNCHRONOUS_COMMIT;
const groupSize = Number(process.env.BENCH_PUBLISH_GROUP ?? 2);
const groupNodeArgs = (process.env.BENCH_GROUP_NODE_ARGS ?? '').split(' ').filter((arg) => arg !== '');
const here = fileURLToPath(new URL('.', import.meta.url));
const TARGET = 1.0;

interface Run {
  readonly rate: number;
  readonly ok: number;
  /** Non-200 answers, timeouts and socket errors in the window. */
  readonly failed: number;
  readonly p50Us?: number;
  readonly p99Us?: number;
  /** Mean latency by Little's law: concurrency / rate, µs. */
  readonly meanUs: number;
  readonly serverCpu: number;
  /** Of which PostgreSQL's backends (service only). */
  readonly dbCpu?: number;
  readonly serverCpuUs: number;
  readonly clientCpu: number;
  readonly note?: string;
}

/** Runs the HTTP load generator; samples the service's CPU (this process plus its PostgreSQL backends) when its window opens and closes. */
function runHttp(spec: PublishLoadSpec, serverCpu: () => Promise<{ own: number; db: number }>): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(here, 'publish-load.js'), JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'inherit'] });
    const lines = createInterface({ input: child.stdout });
    let start: { at: number; cpu: Promise<{ own: number; db: number }> } | undefined;
    let end: { at: number; cpu: Promise<{ own: number; db: number }> } | undefined;
    let result: PublishLoadResult | undefined;
    lines.on('line', (line) => {
      if (line === 'window-start') start = { at: performance.now(), cpu: serverCpu() };
      else if (line === 'window-end') end = { at: performance.now(), cpu: serverCpu() };
      else result = JSON.parse(line) as PublishLoadResult;
    });
    // 'close', not 'exit': the last lines of its stdout have been read by then.
    child.once('close', (code) => {
      void (async () => {
        if (code !== 0 || !result || !start || !end) return reject(new Error(`publish load generator exited with ${code}`));
        const [a, b] = [await start.cpu, await end.cpu];
        const db = b.db - a.db;
        const cpu = b.own - a.own + db;
        const elapsedMs = end.at - start.at;
        resolve({
          rate: result.rate,
          ok: result.ok,
          failed: result.wrong + result.errors,
          p50Us: result.p50Us,
          p99Us: result.p99Us,
          meanUs: (concurrency / result.rate) * 1e6,
          serverCpu: cpu / 1000 / elapsedMs,
          dbCpu: db / 1000 / elapsedMs,
          serverCpuUs: cpu / ((result.ok * elapsedMs) / spec.durationMs),
          clientCpu: result.clientCpu,
          ...(result.sample ? { note: result.sample } : {}),
        });
      })().catch(reject);
    });
  });
}

function fromSipp(result: SippResult): Run {
  return {
    rate: result.rate,
    ok: result.ok,
    failed: result.failed,
    meanUs: (concurrency / result.rate) * 1e6,
    serverCpu: result.serverCpu,
    serverCpuUs: result.serverCpuUs,
    clientCpu: result.clientCpu,
    ...(result.retransmissions || result.failures ? { note: [result.failures, result.retransmissions ? `${result.retransmissions} UDP retransmissions` : ''].filter(Boolean).join('; ') } : {}),
  };
}

function median(xs: readonly number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[mid] ?? NaN) : ((sorted[mid - 1] ?? NaN) + (sorted[mid] ?? NaN)) / 2;
}
const pct = (share: number) => `${(share * 100).toFixed(0)}%`;
const ms = (us: number | undefined) => (us === undefined || Number.isNaN(us) ? '-' : (us / 1000).toFixed(2));

interface BenchGroup {
  readonly ports: readonly number[];
  readonly pids: readonly number[];
  stop(): Promise<void>;
}

/**
 * A scale-out group as docs/scaling.md runs it: the real entry point, one
 * client id each, one share group, one PostgreSQL, a private Mosquitto
 * (raised in-flight and queue limits, as the group needs).
 */
async function startGroup(size: number, databaseUrl: string, signingKey: string): Promise<BenchGroup> {
  const broker: PrivateBroker = await startPrivateBroker();
  const entry = join(here, '..', 'bin', 'start.js');
  const children: ChildProcess[] = [];
  const dirs: string[] = [];
  const stop = async () => {
    await Promise.all(
      children.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once('exit', () => resolve());
            child.kill('SIGTERM');
          }),
      ),
    );
    await broker.stop();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  };
  try {
    const ports: number[] = [];
    for (let i = 0; i < size; i++) {
      const dataDir = await mkdtemp(join(tmpdir(), 'bench-publish-group-'));
      dirs.push(dataDir);
      const child = spawn(process.execPath, [...groupNodeArgs, entry], {
        env: {
          PATH: process.env.PATH ?? '',
          ...BENCH_LIMITS,
          ...BENCH_PLAIN_TEXT,
          DATABASE_URL: databaseUrl,
          MQTT_URL: broker.url,
          MQTT_SHARE_GROUP: 'bench-publish',
          MQTT_CLIENT_ID: `bench-publish-${i}`,
          SIGNING_KEY: signingKey,
          PORT: '0',
          DATA_DIR: dataDir,
          // info: the ready line; the service logs no line per request.
          LOG_LEVEL: 'info',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(child);
      // Its output is read for as long as it runs (a full pipe would block it); the last 64 KiB are kept for a failure message.
      let out = '';
      const keep = (d: Buffer) => (out = (out + d.toString()).slice(-65_536));
      child.stderr?.on('data', keep);
      child.stdout?.on('data', keep);
      const ready = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`group process ${i} not ready in 30 s: ${out.slice(-2000)}`)), 30_000);
        const look = () => {
          const line = out.split('\n').find((l) => l.includes('presence service ready'));
          if (!line) return;
          clearTimeout(timer);
          child.stdout?.off('data', look);
          resolve(line);
        };
        child.stdout?.on('data', look);
        child.once('exit', (code) => reject(new Error(`group process ${i} exited with ${code}: ${out.slice(-2000)}`)));
      });
      ports.push(Number(new URL((JSON.parse(ready) as { httpUrl: string }).httpUrl).port));
    }
    return { ports, pids: children.map((c) => c.pid ?? 0), stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

async function main() {
  const unavailable = withKamailio ? await kamailioUnavailable() : 'BENCH_KAMAILIO=0';
  const database = await createScratchDatabase();
  try {
    await measure(database.url, unavailable);
  } finally {
    await database.drop();
  }
}

async function measure(databaseUrl: string, unavailable: string | undefined) {
  const databaseName = new URL(databaseUrl).pathname.slice(1);
  if (synchronousCommit) {
    // Diagnostic only: how much of a publication's cost is waiting for PostgreSQL's commit to reach the disk.
    const admin = new pg.Client({ connectionString: databaseUrl });
    await admin.connect();
    await admin.query(`alter database ${databaseName} set synchronous_commit = ${synchronousCommit === 'off' ? 'off' : 'on'}`);
    await admin.end();
  }
  const dataDir = await mkdtemp(join(tmpdir(), 'bench-publish-'));
  // One key for the in-process service and the group: the tokens it issues work on every process.
  const signingKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const parsed = parseConfig({ ...BENCH_LIMITS, ...BENCH_PLAIN_TEXT, DATABASE_URL: databaseUrl, DATA_DIR: dataDir, PORT: '0', MQTT_PORT: '0', LOG_LEVEL: 'warn', SIGNING_KEY: signingKey });
  if (!parsed.ok) throw new Error(parsed.problems.join('; '));
  const service = await startService(parsed.config);
  let kamailio: BenchKamailio | undefined;
  let group: BenchGroup | undefined;
  let groupDatabase: { url: string; drop(): Promise<void> } | undefined;
  try {
    const port = Number(new URL(service.httpUrl).port);
    const { token: adminToken } = await issueToken(service.signingKey, parsed.config.tokenIssuer, { kind: 'admin', subject: 'bench', scopes: ['admin'], ttlSeconds: 3600 }, Date.now());
    const api = async (path: string, body: unknown, base = service.httpUrl) => {
      const response = await fetch(`${base}${path}`, { method: 'POST', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
      return (await response.json()) as Record<string, string>;
    };

    // Fresh owners for every round: each round's initial PUBLISH creates a new publication, and an owner holds at most 16.
    const makeTargets = async (prefix: string, base = service.httpUrl): Promise<PublishTarget[]> => {
      const targets: PublishTarget[] = [];
      for (let i = 0; i < concurrency; i++) {
        const handle = `${prefix}-${i}`;
        const owner = await api('/v1/admin/owners', { handle }, base);
        const { token } = await api('/v1/admin/tokens', { kind: 'owner', subject: handle }, base);
        targets.push({ path: `/v1/presence/${handle}`, token: token as string, entity: owner.entity as string });
      }
      return targets;
    };
    const targetsOf: PublishTarget[][] = [];
    const groupTargetsOf: PublishTarget[][] = [];
    for (let round = 0; round < rounds; round++) targetsOf.push(await makeTargets(`pub${round}`));
    const setUpGroup = async () => {
      // A database of its own: every member reloads what any writer to its
      // database changes (the control channel), so the single process's
      // rounds would otherwise load the group, and the group's figures the single process.
      groupDatabase = await createScratchDatabase();
      group = await startGroup(groupSize, groupDatabase.url, signingKey);
      const bases = group.ports.map((p) => `http://127.0.0.1:${p}`);
      for (let round = 0; round < rounds; round++) groupTargetsOf.push(await makeTargets(`grp${round}`, bases[0]));
      // Made through the first member; each other member learns of them from the control channel.
      for (const base of bases) {
        for (const target of groupTargetsOf.flat()) {
          const deadline = Date.now() + 10_000;
          while ((await fetch(`${base}${target.path}`, { headers: { authorization: `Bearer ${target.token}` } })).status !== 200) {
            if (Date.now() > deadline) throw new Error(`${base}${target.path}: the group member does not know the owner after 10 s`);
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
        }
      }
    };

    // The service's CPU: this process, plus the PostgreSQL backends serving the scratch database.
    const serviceCpu = async () => {
      const own = process.cpuUsage();
      return { own: own.user + own.system, db: await cpuOfProcesses((_fields, cmdline) => cmdline.startsWith('postgres: ') && cmdline.includes(` ${databaseName} `)) };
    };

    if (!withKamailio) process.stderr.write('Kamailio baseline skipped: BENCH_KAMAILIO=0\n');
    else if (unavailable === undefined) kamailio = await startBenchKamailio('memory');
    else process.stderr.write(`Kamailio baseline skipped: ${unavailable}\n`);

    // Its members, plus the PostgreSQL backends serving its database (known once setUpGroup has run).
    const groupCpu = async () => {
      const name = groupDatabase ? new URL(groupDatabase.url).pathname.slice(1) : undefined;
      return {
        own: (await Promise.all((group?.pids ?? []).map(cpuOf))).reduce((sum, us) => sum + us, 0),
        db: name === undefined ? 0 : await cpuOfProcesses((_fields, cmdline) => cmdline.startsWith('postgres: ') && cmdline.includes(` ${name} `)),
      };
    };

    const results: { service: Run; kamailio?: Run }[] = [];
    for (let round = 0; round < rounds; round++) {
      const http = await runHttp({ port, targets: targetsOf[round] ?? [], expires: 3600, warmupMs: warmupSeconds * 1000, durationMs: seconds * 1000 }, serviceCpu);
      const sip = kamailio
        ? fromSipp(await runSipp({ kamailio, concurrency, warmupMs: warmupSeconds * 1000, durationMs: seconds * 1000, run: `r${round}x` }))
        : undefined;
      results.push({ service: http, ...(sip ? { kamailio: sip } : {}) });
      process.stderr.write(
        `round ${round + 1}: service ${http.rate.toFixed(0)}/s (server CPU ${pct(http.serverCpu)}, PostgreSQL ${pct(http.dbCpu ?? NaN)}, client ${pct(http.clientCpu)}, failed ${http.failed}${http.note ? `: ${http.note}` : ''})` +
          (sip ? `, Kamailio ${sip.rate.toFixed(0)}/s (server CPU ${pct(sip.serverCpu)}, sipp ${pct(sip.clientCpu)}, failed ${sip.failed}${sip.note ? `: ${sip.note}` : ''}), ratio ${(http.rate / sip.rate).toFixed(2)}` : '') +
          '\n',
      );
    }

    // The group after the single process and Kamailio, so that nothing it
    // leaves running (its members' background work) weighs on their rounds.
    const groupRuns: Run[] = [];
    if (groupSize > 0) {
      await setUpGroup();
      const ports = group?.ports ?? [];
      for (let round = 0; round < rounds; round++) {
        const targets = (groupTargetsOf[round] ?? []).map((t, i) => ({ ...t, port: ports[i % ports.length] ?? 0 }));
        const grouped = await runHttp({ port: ports[0] ?? 0, targets, expires: 3600, warmupMs: warmupSeconds * 1000, durationMs: seconds * 1000 }, groupCpu);
        groupRuns.push(grouped);
        process.stderr.write(
          `group round ${round + 1}: ${groupSize} processes ${grouped.rate.toFixed(0)}/s (server CPU ${pct(grouped.serverCpu)}, PostgreSQL ${pct(grouped.dbCpu ?? NaN)}, failed ${grouped.failed}${grouped.note ? `: ${grouped.note}` : ''})\n`,
        );
      }
    }

    let sqlite: Run | undefined;
    if (kamailio && withSqlite) {
      await kamailio.stop();
      kamailio = await startBenchKamailio('sqlite');
      sqlite = fromSipp(await runSipp({ kamailio, concurrency, warmupMs: warmupSeconds * 1000, durationMs: seconds * 1000, run: 'sq' }));
      const locked = ((await kamailio.log()).match(/database is locked/g) ?? []).length;
      if (locked) sqlite = { ...sqlite, note: `Kamailio logged "database is locked" ${locked} times: 500s, each restarting a chain` };
      process.stderr.write(`Kamailio sqlite: ${sqlite.rate.toFixed(0)}/s (failed ${sqlite.failed})\n`);
    }

    const m = (f: (r: { service: Run; kamailio?: Run }) => number | undefined) => median(results.map((r) => f(r) ?? NaN));
    const serviceRate = m((r) => r.service.rate);
    const kamailioRate = results[0]?.kamailio ? m((r) => r.kamailio?.rate) : undefined;
    const ratio = kamailioRate === undefined ? undefined : m((r) => (r.kamailio ? r.service.rate / r.kamailio.rate : undefined));
    const groupRate = groupRuns.length ? median(groupRuns.map((r) => r.rate)) : undefined;
    // Its rounds ran after Kamailio's: against their median, not round by round.
    const groupRatio = groupRate === undefined || kamailioRate === undefined ? undefined : groupRate / kamailioRate;

    const row = (what: string, runs: readonly Run[], ratioText: string) => {
      const mm = (f: (r: Run) => number | undefined) => median(runs.map((r) => f(r) ?? NaN));
      const failed = runs.reduce((s, r) => s + r.failed, 0);
      return (
        `| ${what} | ${mm((r) => r.rate).toFixed(0)} | ${ratioText} | ${ms(mm((r) => r.p50Us))} / ${ms(mm((r) => r.p99Us))} | ${ms(mm((r) => r.meanUs))} | ` +
        `${pct(mm((r) => r.serverCpu))}${runs[0]?.dbCpu === undefined ? '' : ` (PostgreSQL ${pct(mm((r) => r.dbCpu))})`} | ${mm((r) => r.serverCpuUs).toFixed(0)} | ${pct(mm((r) => r.clientCpu))} | ${failed}${runs.find((r) => r.note)?.note ? ` (${runs.find((r) => r.note)?.note?.slice(0, 120)})` : ''} |`
      );
    };
    const serviceRuns = results.map((r) => r.service);
    const kamailioRuns = results.flatMap((r) => (r.kamailio ? [r.kamailio] : []));
    const lines = [
      `PUBLISH benchmark: modifications (If-Match / SIP-If-Match of the last entity tag, a changed ~600-byte PIDF body), ${concurrency} chains with one request in flight each, ` +
        `${rounds} round(s) service then Kamailio, ${warmupSeconds} s warm-up + ${seconds} s counted per run; service on PostgreSQL, load generator in its own process (raw sockets); ` +
        'Kamailio 5.6 (project template, in memory: publ_cache=2, 1 GB shm, no per-request log) driven by sipp over UDP.',
      '',
      '| what | req/s | ratio (service / Kamailio in memory) | p50 / p99 ms | mean latency ms (concurrency / rate) | server CPU | server CPU µs/req | generator CPU | failed in window |',
      '|---|---|---|---|---|---|---|---|---|',
      row('service: HTTP PUBLISH modify (POST, If-Match, PIDF), PostgreSQL', serviceRuns, ratio === undefined ? '-' : ratio.toFixed(2)),
    ];
    if (groupRuns.length) lines.push(row(`service, a group of ${groupSize} processes (chains split by connection), one PostgreSQL`, groupRuns, groupRatio === undefined ? '-' : groupRatio.toFixed(2)));
    if (kamailioRuns.length) lines.push(row('Kamailio: SIP PUBLISH modify (SIP-If-Match, PIDF) via sipp, UDP, in memory', kamailioRuns, '1.00 (baseline)'));
    if (sqlite) lines.push(row('Kamailio, sqlite storage (reference; one run)', [sqlite], `service / this: ${(serviceRate / sqlite.rate).toFixed(2)}`));
    lines.push(
      '',
      ratio === undefined
        ? `No Kamailio baseline (${unavailable ?? 'not run'}).`
        : `Medians over the rounds (ratio: median of the per-round ratios). Target: service >= ${TARGET.toFixed(1)} x Kamailio: ${ratio >= TARGET ? 'met' : 'missed'} (${ratio.toFixed(2)}); ` +
          `by server CPU per request, less sensitive to what else runs on the machine: Kamailio ${median(kamailioRuns.map((r) => r.serverCpuUs)).toFixed(0)} µs / service ${median(serviceRuns.map((r) => r.serverCpuUs)).toFixed(0)} µs = ${median(results.flatMap((r) => (r.kamailio ? [r.kamailio.serverCpuUs / r.service.serverCpuUs] : []))).toFixed(2)}.`,
      `Server CPU: the service process plus its PostgreSQL backends / Kamailio and its workers, over the counted window, as a share of one core (this machine has ${cpus().length}).`,
    );
    if (groupRatio !== undefined) {
      const kamailioCpuUs = median(kamailioRuns.map((r) => r.serverCpuUs));
      const groupCpuUs = median(groupRuns.map((r) => r.serverCpuUs));
      lines.push(
        `A group of ${groupSize} processes against Kamailio's two workers: ${groupRatio >= TARGET ? 'met' : 'missed'} (${groupRatio.toFixed(2)}); CPU per request Kamailio ${kamailioCpuUs.toFixed(0)} µs / group ${groupCpuUs.toFixed(0)} µs = ${(kamailioCpuUs / groupCpuUs).toFixed(2)} (the group's rounds run after the others; ratios of medians).`,
      );
    }
    process.stdout.write(`${lines.join('\n')}\n`);

    reportToSuite({
      part: 'publish',
      figure: 'HTTP PUBLISH (modify) req/s',
      value: Math.round(serviceRate),
      unit: 'req/s',
      ...(kamailioRate === undefined ? {} : { baseline: { name: 'Kamailio SIP PUBLISH via sipp', value: Math.round(kamailioRate) } }),
      ...(ratio === undefined ? {} : { ratio: Number(ratio.toFixed(3)), met: ratio >= TARGET }),
      target: '>= 1.0 of Kamailio',
    });
    if (groupRate !== undefined) {
      reportToSuite({
        part: 'publish',
        figure: `HTTP PUBLISH (modify) req/s, a group of ${groupSize} processes`,
        value: Math.round(groupRate),
        unit: 'req/s',
        ...(kamailioRate === undefined ? {} : { baseline: { name: 'Kamailio SIP PUBLISH via sipp (2 workers)', value: Math.round(kamailioRate) } }),
        ...(groupRatio === undefined ? {} : { ratio: Number(groupRatio.toFixed(3)), met: groupRatio >= TARGET }),
        target: '>= 1.0 of Kamailio',
      });
    }
  } finally {
    await group?.stop();
    await groupDatabase?.drop();
    await kamailio?.stop();
    await service.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

await main();
