import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { cpus, hostname, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { SuiteRow } from './suite-row.js';

/**
 * The benchmark suite (`npm run bench`): every benchmark against real local
 * components, one after another, each figure next to its baseline measured
 * in the same run, then one markdown table of the headline figures.
 *
 *   npm run bench                                  (builds first)
 *   BENCH_ONLY=ingest,reads node dist/bench/suite.js
 *
 * Parts, in this order (each a child process of its own; never two at once,
 * the machines are 2-core):
 *   ingest        dist/bench/ingest.js          QoS 1 and QoS 0 events/s vs bare mqtt.js
 *   reads         dist/bench/reads.js           PIDF reads/s vs bare node:http
 *   latency       dist/bench/latency.js         MQTT publish -> SSE p50/p99 at half max rate vs a bare relay
 *   write-behind  dist/bench/write-behind.js    batched rows/s vs one upsert per transaction
 *   consent       dist/bench/consent-timing.js  refusals' read time vs an offline owner's
 *   memory        dist/bench/memory.js          bytes per owner at 100k and 1M owners
 *   publish       dist/bench/publish.js         SIP-style PUBLISH over HTTP vs Kamailio (sipp)
 *   fan-out       dist/bench/fanout.js          one change to 10k watchers' streams vs bare SSE
 *
 * Each part's own output streams through under a heading; it appends its
 * headline figures (bench/suite-row.ts, reportToSuite) as JSON lines to the
 * file in BENCH_SUITE_OUT, one temporary file per part, which the table is
 * made from. A part whose script is missing, which exits non-zero, is killed
 * by the time limit, or reports no figure is shown as a row saying so, and
 * the suite exits 1 after printing the table. A figure that misses its
 * target does not change the exit code (that is a result, not a failure).
 *
 * Durations: the suite gives some parts shorter runs than their standalone
 * defaults (below, PARTS) so that the whole takes roughly 8-10 minutes on a
 * 2-core machine: ingest ~40 s, reads ~1 min, latency ~1.5 min (its
 * maximum-rate search is most of it), write-behind ~20 s, consent ~10 s, xml ~10 s;
 * memory (its 1M-owner process is the longest single step), publish and
 * fan-out take the rest. The durations are printed under the table.
 *
 * Environment:
 *   BENCH_ONLY                  comma-separated parts to run (default all), e.g. "ingest,reads"
 *   BENCH_PART_TIMEOUT_SECONDS  per part (default 900); the part's process group is then stopped
 *   BENCH_* of the benchmarks   (BENCH_ROUNDS, BENCH_SECONDS, BENCH_PG_URL, BENCH_MQTT_URL, ...)
 *                               set in the environment win over the suite's settings, for every part
 *                               that reads them: e.g. BENCH_ROUNDS=1 for a quick run
 *
 * Ctrl-C stops the running part (its whole process group) and prints the
 * table of the parts run so far; a second Ctrl-C exits at once. After a part
 * that did not finish cleanly, the scratch database it left in PostgreSQL
 * (BENCH_PG_URL) is dropped.
 */

interface Part {
  readonly name: string;
  readonly script: string;
  /** What the suite sets for this part (unless the environment sets it): durations sized for the suite. */
  readonly env: Readonly<Record<string, string>>;
}

const PARTS: readonly Part[] = [
  // Standalone: 200,000 events, 3 rounds per QoS.
  { name: 'ingest', script: 'ingest.js', env: { BENCH_MESSAGES: '100000', BENCH_ROUNDS: '3' } },
  // The same, the service being one member of a scale-out group (docs/scaling.md).
  { name: 'ingest-cluster', script: 'ingest.js', env: { BENCH_MESSAGES: '100000', BENCH_ROUNDS: '3', BENCH_CLUSTER: '1' } },
  // Standalone: 10 s reads and 3 s revalidations per run, 3 rounds.
  { name: 'reads', script: 'reads.js', env: { BENCH_SECONDS: '5', BENCH_REVALIDATE_SECONDS: '2', BENCH_ROUNDS: '3' } },
  // Standalone: the same (the maximum-rate search, then 3 rounds of 5 s at half of it).
  { name: 'latency', script: 'latency.js', env: { BENCH_SECONDS: '5', BENCH_ROUNDS: '3' } },
  { name: 'write-behind', script: 'write-behind.js', env: { BENCH_ROUNDS: '3' } },
  { name: 'consent', script: 'consent-timing.js', env: {} },
  // Standalone: 20,000 parses per document per round, 5 rounds; ~10 s.
  { name: 'xml', script: 'parse-xml.js', env: {} },
  { name: 'memory', script: 'memory.js', env: {} },
  { name: 'publish', script: 'publish.js', env: {} },
  // Standalone: 5 rounds.
  { name: 'fan-out', script: 'fanout.js', env: { BENCH_ROUNDS: '3' } },
];

const here = fileURLToPath(new URL('.', import.meta.url));
const timeoutMs = Number(process.env.BENCH_PART_TIMEOUT_SECONDS ?? 900) * 1000;

interface Outcome {
  readonly part: Part;
  readonly rows: readonly SuiteRow[];
  /** Why the part has no trustworthy figures (missing, failed, timed out, silent), if so. */
  readonly problem?: string;
  readonly seconds: number;
}

function selectedParts(): Part[] {
  const only = process.env.BENCH_ONLY?.trim();
  if (!only) return [...PARTS];
  const key = (name: string) => name.toLowerCase().replace(/[^a-z]/g, '');
  const wanted = only.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = wanted.filter((w) => !PARTS.some((p) => key(p.name) === key(w)));
  if (unknown.length) {
    process.stderr.write(`BENCH_ONLY: unknown part(s) ${unknown.join(', ')}; parts: ${PARTS.map((p) => p.name).join(', ')}\n`);
    process.exit(2);
  }
  return PARTS.filter((p) => wanted.some((w) => key(p.name) === key(w)));
}

function isSuiteRow(x: unknown): x is SuiteRow {
  if (typeof x !== 'object' || x === null) return false;
  const r = x as Record<string, unknown>;
  const baseline = r.baseline as Record<string, unknown> | undefined;
  return (
    typeof r.part === 'string' &&
    typeof r.figure === 'string' &&
    typeof r.value === 'number' &&
    typeof r.unit === 'string' &&
    (baseline === undefined || (typeof baseline === 'object' && baseline !== null && typeof baseline.name === 'string' && typeof baseline.value === 'number')) &&
    (r.ratio === undefined || typeof r.ratio === 'number') &&
    (r.target === undefined || typeof r.target === 'string') &&
    (r.met === undefined || typeof r.met === 'boolean')
  );
}

async function readRows(file: string, part: string): Promise<SuiteRow[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  const rows: SuiteRow[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      parsed = undefined;
    }
    if (isSuiteRow(parsed)) rows.push(parsed);
    else process.stderr.write(`suite: ${part}: ignoring a malformed figure line: ${line}\n`);
  }
  return rows;
}

/** The child currently running, so that Ctrl-C reaches its whole process group. */
let running: number | undefined;
/**
 * Set on the first Ctrl-C (or SIGTERM): the running part is stopped and the
 * table of the parts run so far is printed; a second one exits at once.
 */
let interrupted: NodeJS.Signals | undefined;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (running) {
      try {
        process.kill(-running, signal);
      } catch {
        // already gone
      }
    }
    if (interrupted) process.exit(signal === 'SIGINT' ? 130 : 143);
    interrupted = signal;
  });
}

/**
 * Runs one script to its end, its output inherited. It runs in a process
 * group of its own (detached), so that on a time limit or Ctrl-C the
 * benchmark's own children (publishers, bare servers, a private broker) are
 * stopped with it.
 */
function runChild(script: string, env: NodeJS.ProcessEnv): Promise<{ pid: number | undefined; code: number | null; signal: NodeJS.Signals | null; timedOut: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script], { env, stdio: 'inherit', detached: true });
    running = child.pid;
    let timedOut = false;
    const group = (signal: NodeJS.Signals) => {
      try {
        if (child.pid) process.kill(-child.pid, signal);
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      process.stderr.write(`suite: ${script} still running after ${timeoutMs / 1000} s (BENCH_PART_TIMEOUT_SECONDS); stopping it\n`);
      group('SIGTERM');
      setTimeout(() => group('SIGKILL'), 10_000).unref();
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      running = undefined;
      reject(error);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      running = undefined;
      resolve({ pid: child.pid, code, signal, timedOut });
    });
  });
}

async function runPart(part: Part, dir: string): Promise<Outcome> {
  const script = join(here, part.script);
  const started = performance.now();
  const seconds = () => (performance.now() - started) / 1000;
  const suiteSettings = Object.entries(part.env).filter(([name]) => process.env[name] === undefined);
  const overridden = Object.keys(part.env).filter((name) => process.env[name] !== undefined);
  const settings = [...suiteSettings.map(([k, v]) => `${k}=${v}`), ...overridden.map((k) => `${k}=${process.env[k]} (environment)`)];
  process.stdout.write(`\n## ${part.name}: node dist/bench/${part.script}${settings.length ? `  [${settings.join(' ')}]` : ''}\n\n`);
  if (!existsSync(script)) {
    process.stdout.write(`(not run: dist/bench/${part.script} does not exist)\n`);
    return { part, rows: [], problem: `not run: dist/bench/${part.script} missing`, seconds: 0 };
  }
  const out = join(dir, `${part.name}.jsonl`);
  const env: NodeJS.ProcessEnv = { ...Object.fromEntries(suiteSettings), ...process.env, BENCH_SUITE_OUT: out };
  let problem: string | undefined;
  try {
    const since = Date.now();
    const { pid, code, signal, timedOut } = await runChild(script, env);
    if ((timedOut || code !== 0) && pid) await dropLeftovers(pid, since);
    if (interrupted) problem = `interrupted (${interrupted})`;
    else if (timedOut) problem = `stopped after ${timeoutMs / 1000} s (time limit)`;
    else if (code !== 0) problem = `failed: ${signal ? `killed by ${signal}` : `exit code ${code}`}`;
  } catch (error) {
    problem = `failed to start: ${(error as Error).message}`;
  }
  const rows = await readRows(out, part.name);
  if (!problem && rows.length === 0) problem = 'reported no figures (no reportToSuite call?)';
  process.stdout.write(`\n(${part.name}: ${problem ?? 'done'}, ${seconds().toFixed(0)} s)\n`);
  return { part, rows, seconds: seconds(), ...(problem ? { problem } : {}) };
}

/**
 * A benchmark stopped midway (time limit, Ctrl-C, crash) leaves its scratch
 * database behind (bench/scratch-db.ts names it presence_bench_<Date.now()
 * in base 36><pid>): drop those the part's process created since it started.
 */
async function dropLeftovers(pid: number, since: number): Promise<void> {
  const client = new pg.Client({ connectionString: process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test', connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    const { rows } = await client.query<{ datname: string }>(`select datname from pg_database where datname like 'presence\\_bench\\_%'`);
    for (const { datname } of rows) {
      const match = /^presence_bench_([0-9a-z]{8})(\d+)$/.exec(datname);
      if (!match || Number(match[2]) !== pid || parseInt(match[1] ?? '', 36) < since - 1000) continue;
      await client.query(`drop database if exists ${datname} with (force)`);
      process.stdout.write(`(dropped the scratch database ${datname} it left)\n`);
    }
  } catch {
    // No PostgreSQL here, or not reachable: nothing to clean.
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** A figure for the table: 3 significant digits or so, whole numbers from 100 up. */
function num(x: number): string {
  if (!Number.isFinite(x) || Number.isInteger(x)) return String(x);
  const abs = Math.abs(x);
  if (abs >= 100) return x.toFixed(0);
  if (abs >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

const cell = (text: string) => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');

function table(outcomes: readonly Outcome[]): string[] {
  const lines = ['| part | figure | value | baseline (name: value) | ratio | target | met |', '|---|---|---|---|---|---|---|'];
  for (const { part, rows, problem } of outcomes) {
    for (const r of rows) {
      const unit = r.unit ? ` ${r.unit}` : '';
      lines.push(
        `| ${cell(r.part)} | ${cell(r.figure)} | ${num(r.value)}${cell(unit)} | ${r.baseline ? `${cell(r.baseline.name)}: ${num(r.baseline.value)}${cell(unit)}` : ''} | ` +
          `${r.ratio === undefined ? '' : num(r.ratio)} | ${cell(r.target ?? '')} | ${r.met === undefined ? '' : r.met ? 'yes' : '**no**'} |`,
      );
    }
    if (problem) lines.push(`| ${part.name} | **${cell(problem)}** | | | | | |`);
  }
  return lines;
}

function machine(): string {
  const cpu = cpus();
  return `${cpu[0]?.model.trim() ?? 'unknown CPU'}, ${cpu.length} cores, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, Node ${process.version}, ${process.platform} (${hostname()})`;
}

async function main(): Promise<void> {
  const parts = selectedParts();
  const startedAt = new Date();
  process.stdout.write(
    `# Benchmark suite\n\n${startedAt.toISOString()}; ${machine()}\nParts: ${parts.map((p) => p.name).join(', ')} (one at a time; each figure is against a baseline measured in the same run)\n`,
  );
  const dir = await mkdtemp(join(tmpdir(), 'bench-suite-'));
  const outcomes: Outcome[] = [];
  try {
    for (const part of parts) {
      if (interrupted) break;
      outcomes.push(await runPart(part, dir));
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }

  const total = outcomes.reduce((s, o) => s + o.seconds, 0);
  const failed = outcomes.filter((o) => o.problem);
  const lines = [
    '',
    `## Summary: ${startedAt.toISOString().slice(0, 10)}, ${machine()}`,
    '',
    ...table(outcomes),
    '',
    `Durations: ${outcomes.map((o) => `${o.part.name} ${o.seconds.toFixed(0)} s`).join(', ')}; total ${Math.floor(total / 60)} min ${(total % 60).toFixed(0)} s.`,
    'Ratios are the benchmarks\' own (for multi-round parts the median of the per-round ratios, so not always value / baseline exactly). ' +
      'Figures vary by about ±25% between runs on shared 2-core machines; compare within a run.',
  ];
  if (failed.length) lines.push(`Parts without figures or failed: ${failed.map((o) => o.part.name).join(', ')}.`);
  if (interrupted) lines.push(`Interrupted (${interrupted}): ${parts.length - outcomes.length} part(s) not run.`);
  process.stdout.write(`${lines.join('\n')}\n`);
  process.exitCode = interrupted ? (interrupted === 'SIGINT' ? 130 : 143) : failed.length ? 1 : 0;
}

await main();
