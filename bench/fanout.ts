import { createScratchDatabase } from './scratch-db.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { HEARTBEAT_MS, MAX_STREAMS } from '../api/routes/stream.js';
import { startService } from '../bin/service.js';
import { parseConfig } from '../core/config.js';
import { BENCH_LIMITS, BENCH_PLAIN_TEXT } from './limits.js';
import { openDatabase } from '../core/db/connect.js';
import { Repository } from '../core/db/repository.js';
import { watchers as watchersTable } from '../core/db/schema.js';
import { sensorEventSchema } from '../core/events.js';
import { issueToken } from '../core/identity/tokens.js';
import { ownerSettingsSchema } from '../core/owner-settings.js';
import { ruleBodySchema, type RuleBodyInput } from '../policy/rule.js';
import type { OpenResult, OpenSpec, RoundResult, RoundSpec, StreamSpec } from './fanout-client.js';
import { reportToSuite } from './suite-row.js';

/**
 * Fan-out benchmark: one owner with BENCH_WATCHERS watchers (default
 * 10,000), each holding a Server-Sent Events stream of the owner's presence
 * (GET /v1/presence/{handle}/stream), changes state; how long until every
 * watcher's view is computed and delivered. Against a baseline measured in
 * the same run: a bare node:http SSE server (bench/fanout-bare.ts) holding
 * the same number of connections from the same client program and writing
 * the very bytes the service sent (per consent group) to the same sockets.
 *
 *   npm run build && node dist/bench/fanout.js
 *
 * The owner (seeded in a scratch PostgreSQL database before the service
 * starts, so the service loads it as a restarted deployment would): a phone
 * whose last fix puts them in their "office" zone, a manual status, and
 * consent in groups of up to 1,000 watchers (the group size limit) with
 * different transformations, interleaved by watcher number:
 *   family      5%  availability, activities, place (zone), sphere, location (km), note
 *   friends    25%  availability, activities, place (type)
 *   colleagues 30%  availability, activities, sphere (a domain rule: watchers @example.com)
 *   apps       25%  availability only (app watchers)
 *   blocked    10%  polite-block: the offline view, and no event on a change
 *   no-rule     5%  named by no rule (another domain): the same
 *
 * The change: the owner sets a manual status over HTTP (PUT /v1/me/status,
 * alternately busy in a meeting and available), which every granted view
 * shows and no blocked one does. The client (bench/fanout-client.ts, raw
 * net sockets) sends that request itself, taking t0 just before writing it,
 * and records per stream when the change event arrived: all delivered (the
 * max), p50, p99, and the count delivered, which must equal the number of
 * granted watchers, with nothing on the others. The baseline's trigger is a
 * POST carrying the bytes to write, from the same client.
 *
 * Processes: the service runs in this one (PostgreSQL, with its write-behind
 * and access log running; the embedded MQTT broker on an ephemeral port,
 * unused); the bare server in its own; two instances of the client, one
 * holding the service's streams and one the bare server's (one process
 * cannot hold both: `ulimit -n` is 20,000 here), so their rounds can be
 * interleaved. A warm-up round of each (the service's gives the bytes the
 * baseline sends), then BENCH_ROUNDS (5) rounds, the order alternating;
 * medians are printed (the ratio is the median of per-round ratios). Rounds
 * are scheduled clear of the service's 25 s heartbeat bursts (10,000
 * comment lines).
 *
 * Where the service's time goes, on the shared clock (wall clock with
 * sub-ms precision in both processes): from t0 to the presence hub's change
 * notification (HTTP, token, database write of the status), and from there
 * to the hub's last listener returning (two extra hub listeners,
 * registered before the first stream and after the last: the hub calls
 * listeners in order). Streams past the first 256 only queue their check
 * there (api/routes/stream.ts runs them in later event-loop turns), so this
 * covers the first batch only; "all delivered" is the end-to-end figure.
 *
 * Also printed: when the first stream got the change (node:http corks a
 * response's writes until the next tick, so on both servers nothing leaves
 * before the whole loop over the streams has run), when the trigger request
 * was answered, and the server's CPU time per round from /proc (10 ms ticks;
 * for the service it includes the access-log write-behind of the round's
 * events, as the settle time, BENCH_SETTLE_MS (500), covers a write).
 * BENCH_OPEN_CONCURRENCY (64): streams opened at once during set-up.
 *
 * The service refuses streams beyond MAX_STREAMS (10,000, a constant in
 * api/routes/stream.ts, not configurable), so BENCH_WATCHERS cannot exceed it.
 * BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test): a scratch
 * database is created next to it and dropped after.
 */
const watcherCount = Number(process.env.BENCH_WATCHERS ?? 10_000);
const rounds = Number(process.env.BENCH_ROUNDS ?? 5);
const concurrency = Number(process.env.BENCH_OPEN_CONCURRENCY ?? 64);
const settleMs = Number(process.env.BENCH_SETTLE_MS ?? 500);
const here = fileURLToPath(new URL('.', import.meta.url));

interface Group {
  readonly name: string;
  /** Share of watchers, in twentieths. */
  readonly twentieths: number;
  readonly kind: 'person' | 'app';
  readonly domain: string | undefined;
  /** The rule for the group's members ('members' is replaced by the group ids), or none. */
  readonly rule: ((groupIds: string[]) => RuleBodyInput) | undefined;
  readonly granted: boolean;
}

const groups: readonly Group[] = [
  {
    name: 'family',
    twentieths: 1,
    kind: 'person',
    domain: undefined,
    granted: true,
    rule: (ids) => ({
      conditions: { identity: { groups: ids } },
      actions: { subHandling: 'allow' },
      transformations: { availability: true, activities: true, place: 'zone', sphere: true, location: 'km', note: true },
    }),
  },
  {
    name: 'friends',
    twentieths: 5,
    kind: 'person',
    domain: undefined,
    granted: true,
    rule: (ids) => ({ conditions: { identity: { groups: ids } }, actions: { subHandling: 'allow' }, transformations: { availability: true, activities: true, place: 'type' } }),
  },
  {
    name: 'colleagues',
    twentieths: 6,
    kind: 'person',
    domain: 'example.com',
    granted: true,
    rule: () => ({ conditions: { identity: { domains: ['example.com'] } }, actions: { subHandling: 'allow' }, transformations: { availability: true, activities: true, sphere: true } }),
  },
  {
    name: 'apps',
    twentieths: 5,
    kind: 'app',
    domain: undefined,
    granted: true,
    rule: (ids) => ({ conditions: { identity: { groups: ids } }, actions: { subHandling: 'allow' }, transformations: { availability: true } }),
  },
  { name: 'blocked', twentieths: 2, kind: 'person', domain: undefined, granted: false, rule: (ids) => ({ conditions: { identity: { groups: ids } }, actions: { subHandling: 'polite-block' } }) },
  { name: 'no-rule', twentieths: 1, kind: 'person', domain: 'elsewhere.example', granted: false, rule: undefined },
];
const groupOfIndex: Group[] = groups.flatMap((g) => Array.from({ length: g.twentieths }, () => g));
if (groupOfIndex.length !== 20) throw new Error('group shares must add up to 20 twentieths');

const GROUP_LIMIT = 1000;
const STATUSES = [
  { availability: 'busy', activities: ['meeting'], note: 'In a design review' },
  { availability: 'available', activities: [], note: 'Back at my desk' },
] as const;

interface Seeded {
  readonly ownerId: string;
  readonly handle: string;
  readonly watchers: readonly { id: string; group: Group }[];
}

/** Everything in the database first; the service then loads it like any restarted deployment. */
async function seed(url: string): Promise<Seeded> {
  const database = await openDatabase({ kind: 'postgres', url });
  try {
    const repository = new Repository(database.db);
    const now = Date.now();
    const ownerId = crypto.randomUUID();
    const handle = 'alice';
    await repository.insertOwner({ id: ownerId, handle, displayName: 'Alice' });
    await repository.updateOwnerSettings(
      ownerId,
      ownerSettingsSchema.parse({
        timeZone: 'Europe/Berlin',
        zones: [{ name: 'office', sphere: 'work', placeType: 'office', circle: { latitude: 52.52, longitude: 13.405, radiusMeters: 150 } }],
      }),
    );
    const deviceId = crypto.randomUUID();
    await repository.insertDevice({ id: deviceId, ownerId, deviceClass: 'phone', name: 'Phone' });
    const at = new Date(now).toISOString();
    const events = [
      { kind: 'location', at, latitude: 52.5201, longitude: 13.4052, accuracy: 15 },
      { kind: 'user-input', at, state: 'active' },
    ].map((e) => sensorEventSchema.parse(e));
    await repository.upsertStates([{ ownerId, version: 1, signals: events.map((event) => ({ deviceId, event })) }]);
    await repository.upsertOverride(ownerId, { source: 'manual', availability: 'available', activities: [], note: 'At my desk', expiresAt: now + 3_600_000 });

    const watchers = Array.from({ length: watcherCount }, (_, i) => ({ id: crypto.randomUUID(), group: groupOfIndex[i % 20] as Group }));
    for (let i = 0; i < watchers.length; i += 1000) {
      await database.db.insert(watchersTable).values(
        watchers.slice(i, i + 1000).map((w, j) => ({ id: w.id, kind: w.group.kind, name: `${w.group.name} ${i + j}`, domain: w.group.domain ?? null })),
      );
    }
    const rules: { id: string; body: unknown; arrivedAt: null }[] = [];
    for (const group of groups) {
      if (!group.rule) continue;
      const members = watchers.filter((w) => w.group === group).map((w) => w.id);
      if (members.length === 0) continue;
      const groupIds: string[] = [];
      if (group.domain === undefined) {
        for (let i = 0; i < members.length; i += GROUP_LIMIT) {
          const id = crypto.randomUUID();
          await repository.insertGroup({ id, ownerId, name: `${group.name} ${i / GROUP_LIMIT + 1}`, members: members.slice(i, i + GROUP_LIMIT) });
          groupIds.push(id);
        }
      }
      rules.push({ id: crypto.randomUUID(), body: ruleBodySchema.parse(group.rule(groupIds)), arrivedAt: null });
    }
    await repository.replaceRules(ownerId, rules);
    return { ownerId, handle, watchers };
  } finally {
    await database.close();
  }
}

/** A client child process and its one-request-at-a-time IPC. */
class Client {
  private readonly child: ChildProcess;
  private pending: { type: string; resolve: (value: unknown) => void; reject: (error: Error) => void } | undefined;

  constructor(readonly name: string) {
    this.child = spawn(process.execPath, [join(here, 'fanout-client.js')], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child.on('message', (message: { type: string; result: unknown }) => {
      const pending = this.pending;
      if (!pending || pending.type !== message.type) return;
      this.pending = undefined;
      pending.resolve(message.result);
    });
    this.child.once('exit', (code) => {
      this.pending?.reject(new Error(`${name} client exited with ${code}`));
      this.pending = undefined;
    });
  }

  private ask<T>(message: unknown, replyType: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending = { type: replyType, resolve: resolve as (value: unknown) => void, reject };
      this.child.send(message as object);
    });
  }

  open(spec: OpenSpec): Promise<OpenResult> {
    return this.ask({ type: 'open', spec }, 'opened');
  }

  round(spec: RoundSpec): Promise<RoundResult> {
    return this.ask({ type: 'round', spec }, 'round');
  }

  close(): void {
    if (this.child.connected) this.child.send({ type: 'close' });
    else this.child.kill('SIGTERM');
  }
}

async function startBare(): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn(process.execPath, [join(here, 'fanout-bare.js')], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  for await (const line of lines) return { port: (JSON.parse(line) as { port: number }).port, child };
  throw new Error('bare server exited before listening');
}

const median = (xs: readonly number[]) => {
  const sorted = [...xs].filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
};
const fmt = (ms: number, digits = 1) => (Number.isNaN(ms) ? '?' : ms.toFixed(digits));
const count = (n: number) => n.toLocaleString('en-US');

async function main() {
  if (watcherCount > MAX_STREAMS) throw new Error(`BENCH_WATCHERS (${watcherCount}) exceeds the service's stream limit MAX_STREAMS (${MAX_STREAMS}, api/routes/stream.ts)`);
  // Each process (service, client, bare server) holds one socket per watcher.
  const openFiles = Number(/^Max open files\s+(\d+)/m.exec(await readFile('/proc/self/limits', 'utf8').catch(() => ''))?.[1] ?? Infinity);
  if (openFiles < watcherCount + 200) throw new Error(`ulimit -n is ${openFiles}: ${watcherCount} streams need at least ${watcherCount + 200} (raise it, or lower BENCH_WATCHERS)`);
  const setupStarted = performance.now();
  const database = await createScratchDatabase();
  const dataDir = await mkdtemp(join(tmpdir(), 'bench-fanout-'));
  let service: Awaited<ReturnType<typeof startService>> | undefined;
  let bare: ChildProcess | undefined;
  const clients: Client[] = [];
  try {
    const seeded = await seed(database.url);
    const parsed = parseConfig({ ...BENCH_LIMITS, ...BENCH_PLAIN_TEXT, DATABASE_URL: database.url, DATA_DIR: dataDir, PORT: '0', MQTT_PORT: '0', LOG_LEVEL: 'warn' });
    if (!parsed.ok) throw new Error(parsed.problems.join('; '));
    service = await startService(parsed.config);
    const running = service;
    const port = Number(new URL(running.httpUrl).port);
    const sign = async (kind: 'watcher' | 'owner', subject: string, scopes: ('presence:read' | 'status:manage')[]) =>
      (await issueToken(running.signingKey, parsed.config.tokenIssuer, { kind, subject, scopes, ttlSeconds: 3600 }, Date.now())).token;
    const ownerToken = await sign('owner', seeded.ownerId, ['status:manage']);
    const tokens: string[] = [];
    for (let i = 0; i < seeded.watchers.length; i += 500) {
      tokens.push(...(await Promise.all(seeded.watchers.slice(i, i + 500).map((w) => sign('watcher', w.id, ['presence:read'])))));
    }
    // With fewer than 20 watchers some groups are empty.
    const present = groups.filter((g) => seeded.watchers.some((w) => w.group === g));
    const granted = present.filter((g) => g.granted);
    const grantedCount = seeded.watchers.filter((w) => w.group.granted).length;

    const started = await startBare();
    bare = started.child;
    const serviceClient = new Client('service');
    const bareClient = new Client('bare');
    clients.push(serviceClient, bareClient);

    // The hub calls an owner's listeners in the order they were added: one
    // before every stream and one after them brackets the streams' work.
    let hubFirst = NaN;
    let hubLast = NaN;
    const wallNow = () => performance.timeOrigin + performance.now();
    const unwatchFirst = running.hub.watch(seeded.ownerId, () => (hubFirst = wallNow()));
    const serviceStreams: StreamSpec[] = seeded.watchers.map((w, i) => ({ path: `/v1/presence/${seeded.handle}/stream`, token: tokens[i], group: w.group.name }));
    const serviceOpened = await serviceClient.open({ port, streams: serviceStreams, concurrency });
    const unwatchLast = running.hub.watch(seeded.ownerId, () => (hubLast = wallNow()));
    const bareOpened = await bareClient.open({ port: started.port, streams: seeded.watchers.map((w) => ({ path: `/stream/${w.group.name}`, token: undefined, group: w.group.name })), concurrency });

    // The first events: granted groups see the owner available, the others
    // the very same offline view (polite-block and no rule alike).
    for (const group of present) {
      const text = serviceOpened.initial[group.name] ?? '';
      if (group.granted ? !text.includes('"availability":"available"') : !text.includes('"availability":"offline"')) throw new Error(`unexpected first event for ${group.name}: ${text}`);
    }
    if (serviceOpened.initial.blocked !== undefined && serviceOpened.initial['no-rule'] !== undefined && serviceOpened.initial.blocked !== serviceOpened.initial['no-rule']) throw new Error('polite-blocked and unknown watchers got different first events');
    const setupMs = performance.now() - setupStarted;

    // The service's heartbeats (a comment on every stream every HEARTBEAT_MS)
    // come in bursts as long as the opening took: rounds of either path keep
    // clear of them, waiting when a burst would start before the round ends.
    let heartbeatWaitMs = 0;
    let lastRoundMs = 0;
    const clearOfHeartbeats = async () => {
      const waitStarted = performance.now();
      for (;;) {
        const now = wallNow();
        const guard = Math.max(1500, 2 * lastRoundMs);
        const k = Math.max(1, Math.floor((now - serviceOpened.firstOpenEpoch) / HEARTBEAT_MS));
        const burst = [k, k + 1]
          .map((i) => [serviceOpened.firstOpenEpoch + i * HEARTBEAT_MS - 300, serviceOpened.lastOpenEpoch + i * HEARTBEAT_MS + 1000] as const)
          .find(([from, until]) => from < now + guard && until > now);
        if (!burst) break;
        await new Promise((resolve) => setTimeout(resolve, burst[1] - now + 1));
      }
      heartbeatWaitMs += performance.now() - waitStarted;
    };
    const timed = async <T>(run: () => Promise<T>): Promise<T> => {
      await clearOfHeartbeats();
      const roundStarted = performance.now();
      const result = await run();
      lastRoundMs = performance.now() - roundStarted;
      return result;
    };

    let serviceRounds = 0;
    let lastTexts: Record<string, string> = {};
    const runService = () => timed(async () => {
      const status = STATUSES[serviceRounds++ % 2] as (typeof STATUSES)[number];
      hubFirst = hubLast = NaN;
      const expect: Record<string, string | null> = {};
      for (const g of groups) expect[g.name] = g.granted ? `"availability":"${status.availability}"` : null;
      const result = await serviceClient.round({
        trigger: {
          method: 'PUT',
          path: '/v1/me/status',
          headers: { authorization: `Bearer ${ownerToken}`, 'content-type': 'application/json' },
          body: JSON.stringify({ ...status, expiresInSeconds: 3600 }),
        },
        expect,
        settleMs,
        timeoutMs: 60_000,
        serverPid: process.pid,
      });
      if (result.triggerStatus !== 200) throw new Error(`the status change was answered ${result.triggerStatus}`);
      lastTexts = result.texts;
      return { ...result, hubMs: hubFirst - result.t0Epoch, streamsDoneMs: hubLast - result.t0Epoch };
    });
    const runBare = () => timed(async () => {
      const expect: Record<string, string | null> = {};
      for (const g of groups) expect[g.name] = lastTexts[g.name] ?? null;
      if (granted.some((g) => !lastTexts[g.name])) throw new Error('the service round gave no event text for some granted group');
      return bareClient.round({
        trigger: { method: 'POST', path: '/trigger', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ events: lastTexts }) },
        expect,
        settleMs,
        timeoutMs: 60_000,
        serverPid: started.child.pid ?? 0,
      });
    });

    process.stderr.write(`fanout: set-up ${(setupMs / 1000).toFixed(1)} s (streams opened: service ${(serviceOpened.ms / 1000).toFixed(1)} s, bare ${(bareOpened.ms / 1000).toFixed(1)} s); warm-up, then ${rounds} rounds\n`);
    await runService();
    await runBare();
    const svc: Awaited<ReturnType<typeof runService>>[] = [];
    const base: RoundResult[] = [];
    for (let r = 0; r < rounds; r++) {
      if (r % 2 === 0) {
        svc.push(await runService());
        base.push(await runBare());
      } else {
        base.push(await runBare());
        svc.push(await runService());
      }
      const s = svc.at(-1) as (typeof svc)[number];
      const b = base.at(-1) as RoundResult;
      process.stderr.write(`fanout: round ${r + 1}: service all delivered ${fmt(s.maxMs)} ms (${s.delivered}/${s.expected}), bare ${fmt(b.maxMs)} ms (${b.delivered}/${b.expected})\n`);
    }
    unwatchFirst();
    unwatchLast();

    const m = (runs: readonly RoundResult[], f: (r: RoundResult) => number) => median(runs.map(f));
    const ratio = median(svc.map((s, i) => s.maxMs / (base[i]?.maxMs ?? NaN)));
    const p99Ratio = median(svc.map((s, i) => s.p99Ms / (base[i]?.p99Ms ?? NaN)));
    const sum = (runs: readonly RoundResult[], f: (r: RoundResult) => number) => runs.reduce((n, r) => n + f(r), 0);
    const row = (name: string, runs: readonly RoundResult[]) =>
      `| ${name} | ${fmt(m(runs, (r) => r.maxMs))} | ${fmt(m(runs, (r) => r.p50Ms))} | ${fmt(m(runs, (r) => r.p99Ms))} | ${fmt(m(runs, (r) => r.minMs))} | ` +
      `${runs.map((r) => `${count(r.delivered)}/${count(r.expected)}`).join(', ')} | ${sum(runs, (r) => r.unexpected)} | ${sum(runs, (r) => r.duplicates + r.mismatched)} | ` +
      `${fmt(m(runs, (r) => r.triggerMs))} | ${fmt(m(runs, (r) => r.serverCpuMs), 0)} | ${count(Math.round(m(runs, (r) => r.bytes)))} |`;
    const blockedCount = watcherCount - grantedCount;
    const lines = [
      `Fan-out benchmark: one owner, ${count(watcherCount)} watchers each streaming them over SSE (${count(grantedCount)} granted in 4 consent groups, ${count(blockedCount)} polite-blocked or without a rule); ` +
        `the owner sets a manual status (HTTP PUT /v1/me/status); time from the request to each granted watcher's change event; PostgreSQL write-behind and access log running. ` +
        `Baseline: bare node:http SSE server writing the same bytes to the same ${count(grantedCount)} of ${count(watcherCount)} sockets, same client program. Medians of ${rounds} rounds (interleaved, after a warm-up round of each).`,
      '',
      '| path | all delivered (max) ms | p50 ms | p99 ms | first ms | delivered / expected (per round) | events to blocked watchers | duplicate or wrong events | trigger answered ms | server CPU ms per round | change bytes received |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
      row('bare node:http SSE', base),
      row('service', svc),
      '',
      `Service / bare, all delivered: ${ratio.toFixed(2)}x (median of per-round ratios; rounds: service ${svc.map((s) => fmt(s.maxMs, 0)).join(', ')} ms; bare ${base.map((b) => fmt(b.maxMs, 0)).join(', ')} ms). p99: ${p99Ratio.toFixed(2)}x.`,
      `Service, on the shared clock (medians): hub notified ${fmt(median(svc.map((s) => s.hubMs)))} ms after t0 (HTTP, token, status stored); ` +
        `the hub's listeners returned ${fmt(median(svc.map((s) => s.streamsDoneMs)))} ms after t0 (the first batch of stream checks run, the rest queued) ` +
        `(${fmt(median(svc.map((s) => s.streamsDoneMs - s.hubMs)))} ms, ${fmt((median(svc.map((s) => s.streamsDoneMs - s.hubMs)) * 1000) / watcherCount, 1)} µs per stream listener); the status request answered ${fmt(m(svc, (r) => r.triggerMs))} ms after t0; last view delivered ${fmt(m(svc, (r) => r.maxMs))} ms after t0.`,
      `Set-up (not counted): ${(setupMs / 1000).toFixed(1)} s; opening the streams took ${(serviceOpened.ms / 1000).toFixed(1)} s on the service, ${(bareOpened.ms / 1000).toFixed(1)} s on bare (${concurrency} at a time). ` +
        `Heartbeat comments during rounds: ${sum(svc, (r) => r.heartbeats)} (rounds waited ${fmt(heartbeatWaitMs, 0)} ms in all to avoid them).`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);

    const baselineName = `bare node:http SSE writing the same bytes to the same ${count(grantedCount)} of ${count(watcherCount)} sockets`;
    reportToSuite({ part: 'fan-out', figure: `one change, ${count(watcherCount)} streams: all ${count(grantedCount)} granted views delivered (ms)`, value: m(svc, (r) => r.maxMs), unit: 'ms', baseline: { name: baselineName, value: m(base, (r) => r.maxMs) }, ratio });
    reportToSuite({ part: 'fan-out', figure: `one change, ${count(watcherCount)} streams: p99 view delivery (ms)`, value: m(svc, (r) => r.p99Ms), unit: 'ms', baseline: { name: baselineName, value: m(base, (r) => r.p99Ms) }, ratio: p99Ratio });

    const failures = [...svc, ...base].filter((r) => r.delivered !== r.expected || r.unexpected > 0 || r.duplicates > 0 || r.mismatched > 0);
    if (failures.length > 0) {
      process.stderr.write(`fanout: ${failures.length} round(s) delivered wrongly (missing, extra, duplicate or wrong events); see the table\n`);
      process.exitCode = 1;
    }
  } finally {
    for (const client of clients) client.close();
    bare?.kill('SIGTERM');
    await service?.close();
    // The pool's connections finish closing just after close() resolves:
    // dropping the database at once would cut them (and log a warning).
    await new Promise((resolve) => setTimeout(resolve, 200));
    await database.drop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

await main();
