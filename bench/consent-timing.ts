import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'node:http';
import { startService } from '../bin/service.js';
import { parseConfig } from '../core/config.js';
import { BENCH_LIMITS, BENCH_PLAIN_TEXT } from './limits.js';
import { issueToken } from '../core/identity/tokens.js';
import { reportToSuite } from './suite-row.js';

/**
 * Consent timing benchmark (privacy invariant 1, issue 4 item 4): a watcher
 * refused by polite-block, by block, by having no rule, or asking for an
 * owner who does not exist must not be told apart from one reading an owner
 * who is really offline, by status, headers, body or response time.
 *
 *   npm run build && node dist/bench/consent-timing.js
 *
 * One service on embedded defaults (PGlite, aedes) in this process; the
 * cases are requested round-robin over one keep-alive connection, so the
 * machine's noise falls on all of them alike. For each case the median and
 * p90 latency are printed as a ratio to the offline baseline measured in the
 * same run, beside a granted read (which renders more and is expected to
 * differ slightly). BENCH_TIMING_ROUNDS (default 4000 per case).
 */
const rounds = Number(process.env.BENCH_TIMING_ROUNDS ?? 4000);

const dataDir = await mkdtemp(join(tmpdir(), 'timing-'));
const parsed = parseConfig({ ...BENCH_LIMITS, ...BENCH_PLAIN_TEXT, PORT: '0', MQTT_PORT: '0', LOG_LEVEL: 'silent', DATA_DIR: dataDir, PERSIST_INTERVAL_MS: '1000' });
if (!parsed.ok) throw new Error(parsed.problems.join('; '));
const service = await startService(parsed.config);
const { port } = new URL(service.httpUrl);
const agent = new Agent({ keepAlive: true, maxSockets: 1 });

function call(method: string, path: string, token: string, body?: unknown): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string; ns: bigint }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const started = process.hrtime.bigint();
    const req = request(
      { host: '127.0.0.1', port, method, path, agent, headers: { authorization: `Bearer ${token}`, accept: 'application/pidf+xml', ...(payload ? { 'content-type': 'application/json' } : {}) } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text, ns: process.hrtime.bigint() - started }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

const { token: admin } = await issueToken(service.signingKey, parsed.config.tokenIssuer, { kind: 'admin', subject: 'bench', scopes: ['admin'], ttlSeconds: 3600 }, Date.now());
const json = async (p: Promise<{ body: string }>) => JSON.parse((await p).body) as Record<string, string>;
const watcher = await json(call('POST', '/v1/admin/watchers', admin, { kind: 'person', name: 'Timing' }));
const watcherToken = (await json(call('POST', '/v1/admin/tokens', admin, { kind: 'watcher', subject: watcher.id }))).token ?? '';

/** Each owner: how the watcher stands with them, and whether they are online. */
const owners: [string, 'allow' | 'polite-block' | 'block' | undefined, boolean][] = [
  ['offline', 'allow', false],
  ['polite', 'polite-block', true],
  ['blocked', 'block', true],
  ['norule', undefined, true],
  ['granted', 'allow', true],
];
for (const [handle, subHandling, online] of owners) {
  await call('POST', '/v1/admin/owners', admin, { handle });
  if (subHandling) {
    await call('POST', `/v1/admin/owners/${handle}/rules`, admin, { conditions: { identity: { watchers: [watcher.id] } }, actions: { subHandling }, transformations: { availability: true, activities: true } });
  }
  if (online) {
    const ownerToken = (await json(call('POST', '/v1/admin/tokens', admin, { kind: 'owner', subject: handle }))).token ?? '';
    await call('POST', `/v1/presence/${handle}`, ownerToken, { availability: 'busy', activities: ['meeting'] });
  }
}
const cases = [...owners.map(([handle]) => handle), 'nosuchowner'];

// Same bytes and headers, apart from the entity (the handle asked for).
const first = new Map<string, { status: number; etag: string; body: string }>();
for (const handle of cases) {
  const r = await call('GET', `/v1/presence/${handle}`, watcherToken);
  first.set(handle, { status: r.status, etag: String(r.headers.etag), body: r.body.replace(`pres:${handle}@`, 'pres:X@') });
}

const samples = new Map<string, number[]>(cases.map((c) => [c, []]));
for (let i = 0; i < 300; i++) for (const handle of cases) await call('GET', `/v1/presence/${handle}`, watcherToken); // warm-up
for (let i = 0; i < rounds; i++) {
  // Rotate the order each round so no case always follows the same one.
  for (let k = 0; k < cases.length; k++) {
    const handle = cases[(i + k) % cases.length] as string;
    const r = await call('GET', `/v1/presence/${handle}`, watcherToken);
    samples.get(handle)?.push(Number(r.ns) / 1000);
  }
}

const quantile = (xs: number[], q: number) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
};
const base = samples.get('offline') ?? [];
const baseMedian = quantile(base, 0.5);
const baseP90 = quantile(base, 0.9);
const offlineBody = first.get('offline')?.body;
console.log(`consent timing: ${rounds} reads per case, round-robin on one keep-alive connection; baseline = an allowed watcher reading an offline owner`);
console.log('| case | same status+body as offline | median µs | p90 µs | median ratio | p90 ratio |');
console.log('|---|---|---|---|---|---|');
for (const handle of cases) {
  const xs = samples.get(handle) ?? [];
  const m = quantile(xs, 0.5);
  const p = quantile(xs, 0.9);
  const same = first.get(handle)?.status === first.get('offline')?.status && first.get(handle)?.body === offlineBody;
  console.log(`| ${handle} | ${same ? 'yes' : 'no'} | ${m.toFixed(0)} | ${p.toFixed(0)} | ${(m / baseMedian).toFixed(3)} | ${(p / baseP90).toFixed(3)} |`);
}

// Headline figures for the suite (bench/suite.ts): the refusal whose median is furthest from the
// offline baseline's, and whether every refusal got the offline answer's status and body.
const refusals = ['polite', 'blocked', 'norule', 'nosuchowner'];
const worst = refusals
  .map((handle) => ({ handle, median: quantile(samples.get(handle) ?? [], 0.5) }))
  .reduce((a, b) => (Math.abs(b.median / baseMedian - 1) > Math.abs(a.median / baseMedian - 1) ? b : a));
reportToSuite({
  part: 'consent',
  figure: `read time of the most distinguishable refusal (${worst.handle}), median of ${rounds}`,
  value: worst.median,
  unit: 'µs',
  baseline: { name: 'offline owner', value: baseMedian },
  ratio: worst.median / baseMedian,
  target: 'indistinguishable (ratio ~1)',
});
const answeredLikeOffline = refusals.filter((handle) => first.get(handle)?.status === first.get('offline')?.status && first.get(handle)?.body === offlineBody).length;
reportToSuite({
  part: 'consent',
  figure: 'refusals answered with the offline status and body',
  value: answeredLikeOffline,
  unit: `of ${refusals.length}`,
  target: 'all',
  met: answeredLikeOffline === refusals.length,
});

agent.destroy();
await service.close();
await rm(dataDir, { recursive: true, force: true });
