import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { MemoryResult, Sample } from './memory-child.js';
import { reportToSuite } from './suite-row.js';

/**
 * Memory benchmark (issue: "resident memory per owner with state, at 100k
 * and 1M owners; target at most 1 KB each"), against a baseline measured in
 * the same run.
 *
 *   npm run build && node dist/bench/memory.js
 *
 * For each size, two fresh child processes side by side (bench/memory-child.ts
 * with --expose-gc, so heaps of different sizes and kinds never mix; resident
 * memory is per process, so running them together changes no figure, only
 * the wait):
 *   - the service: its own in-memory structures, built through their public
 *     APIs as the service fills them: Directory (the owner, its settings as
 *     loaded at start, a phone and a watch), RuleBook (one allow rule),
 *     PresenceHub (the phone's and the watch's MQTT messages decoded by
 *     ingest's decodeMessage and applied: five signals and the derived
 *     state), then one read per owner;
 *   - the baseline: the same information held as plainly as possible, a
 *     Map<ownerId, string> with one flat compact JSON text per owner (the
 *     handle, the devices, the rule as sent, each device's last message after
 *     the same sanitizing). That is what keeping the owner's data costs with
 *     no structure at all; the service's derived state, indexes and parsed
 *     objects are what it adds. A second map with the signals alone is
 *     measured too, for reference.
 * Each child measures after two full GCs before building and after the last
 * stage (one between stages), and then again once the heap has settled:
 * full GCs until one no longer shrinks it (V8 empties only a few MB of
 * fragmented pages per full GC, as a long-running service gets through many)
 * and until V8 has returned the pages it freed (it does so from a
 * background thread after the GC: measured at once, ~60 MB of freed pages
 * at 100k owners still counted as resident). Per owner = (after - before) /
 * owners. Settled resident memory (rss) is the headline, as the issue asks;
 * the figure at once is printed beside it (the most held just after every
 * owner was busy), and the heap (heapUsed + external), the steadier of
 * them. The per-stage figures show where the memory goes.
 *
 * The 1M service child holds ~6 GB and takes a few minutes on a 2-core
 * machine (a full GC of its heap alone takes seconds); 100k alone takes
 * about 15 s.
 *
 * BENCH_MEMORY_OWNERS: sizes, comma-separated (default 100000,1000000).
 * BENCH_MEMORY_ROUNDS: how many times every owner's devices report (default
 * 1; more is the churn of a service that has run a while).
 * Node.js flags given to this script are passed to both children (V8's
 * heap sizing sets much of the RSS: see the README, "Memory").
 * BENCH_MEMORY_SNAPSHOT: an owner count (e.g. 20000) to also take heap
 * snapshots of the service at that size and half of it and print the bytes
 * per owner by node type and constructor (slow: keep it small; per-owner
 * figures do not depend on it).
 */
const sizes = (process.env.BENCH_MEMORY_OWNERS ?? '100000,1000000').split(',').map((s) => Number(s.trim()));
if (sizes.some((n) => !Number.isInteger(n) || n < 1000)) throw new Error('BENCH_MEMORY_OWNERS: comma-separated owner counts of at least 1000');
const snapshotOwners = process.env.BENCH_MEMORY_SNAPSHOT ? Number(process.env.BENCH_MEMORY_SNAPSHOT) : undefined;
const TARGET = 1024;
const childScript = join(fileURLToPath(new URL('.', import.meta.url)), 'memory-child.js');

function runChild(mode: 'service' | 'baseline', owners: number, snapshot = false): Promise<MemoryResult> {
  return new Promise((resolve, reject) => {
    // The bench's own Node.js flags go to both children: `node --optimize-for-size dist/bench/memory.js` measures a service run with that flag.
    const args = [...process.execArgv, '--expose-gc', '--max-old-space-size=16384', childScript, mode, String(owners), ...(snapshot ? ['snapshot'] : [])];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => (out += chunk));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (code !== 0) return reject(new Error(`memory-child ${mode} ${owners} exited with ${code ?? signal}`));
      const line = out.trim().split('\n').pop() ?? '';
      try {
        resolve(JSON.parse(line) as MemoryResult);
      } catch (error) {
        reject(new Error(`memory-child ${mode} ${owners}: unreadable output: ${String(error)}`));
      }
    });
  });
}

const sample = (r: MemoryResult, i: number): Sample => r.samples[i] as Sample;
/** Per owner, between two samples (by index; -1 is the last). */
const delta = (r: MemoryResult, field: 'rss' | 'rssAtOnce' | 'heap', from: number, to: number) =>
  (sample(r, to < 0 ? r.samples.length + to : to)[field] - sample(r, from)[field]) / r.owners;
/** The service: everything it built. */
const service = (r: MemoryResult, field: 'rss' | 'rssAtOnce' | 'heap') => delta(r, field, 0, -1);
/** The baseline's first stage (all the owner's data); the second (signals only) is for reference. */
const baseline = (r: MemoryResult, field: 'rss' | 'heap') => delta(r, field, 0, 1);
const signalsOnly = (r: MemoryResult, field: 'rss' | 'heap') => delta(r, field, 1, 2);
const bytes = (n: number) => n.toFixed(0);
const label = (n: number) => (n >= 1_000_000 && n % 1_000_000 === 0 ? `${n / 1_000_000}M` : n >= 1000 && n % 1000 === 0 ? `${n / 1000}k` : String(n));

interface Row {
  readonly owners: number;
  readonly service: MemoryResult;
  readonly baseline: MemoryResult;
}
const rows: Row[] = [];
const started = performance.now();
for (const owners of sizes) {
  // One process each, side by side (memory is per process; this halves the wait).
  const [baseline, service] = await Promise.all([runChild('baseline', owners), runChild('service', owners)]);
  rows.push({ owners, service, baseline });
}

console.log('memory: bytes per owner with state (5 signals from 2 devices, 1 allow rule, 1 read), a fresh process per measurement, settled after full GCs');
console.log('');
console.log('| owners | service RSS/owner | service RSS/owner at once | service heap/owner | baseline RSS/owner | baseline heap/owner | ratio (RSS) | ratio (heap) | target <= 1 KB met? |');
console.log('|---|---|---|---|---|---|---|---|---|');
for (const { owners, service: s, baseline: b } of rows) {
  const rss = service(s, 'rss');
  console.log(
    `| ${label(owners)} | ${bytes(rss)} | ${bytes(service(s, 'rssAtOnce'))} | ${bytes(service(s, 'heap'))} | ${bytes(baseline(b, 'rss'))} | ${bytes(baseline(b, 'heap'))} | ${(rss / baseline(b, 'rss')).toFixed(2)} | ${(service(s, 'heap') / baseline(b, 'heap')).toFixed(2)} | ${rss <= TARGET ? 'yes' : 'no'} |`,
  );
}
console.log('');
console.log(
  'RSS is measured settled: after full GCs until the heap stops shrinking and until V8 has returned the pages it freed (bench/memory-child.ts settle()), in both processes alike. "At once" is the same process right after the stage\'s one or two full GCs, before settling: the most a service holds just after every owner was busy at once.',
);
const chars = rows[0]?.baseline.textChars;
console.log('');
console.log(
  `Baseline: Map<ownerId, string>, one flat compact JSON text per owner holding the same information (handle, devices, rule as sent, each device's last message; mean ${bytes(chars?.all ?? NaN)} characters).`,
);
console.log(
  `For reference, the signals alone (both messages with their device ids, mean ${bytes(chars?.signals ?? NaN)} characters) in such a Map: ${rows.map((r) => `${bytes(signalsOnly(r.baseline, 'heap'))} heap / ${bytes(signalsOnly(r.baseline, 'rss'))} RSS bytes per owner at ${label(r.owners)}`).join('; ')}.`,
);

console.log('');
console.log('Where the service memory goes (per owner, the difference each stage made):');
console.log('');
console.log(`| stage | ${rows.map((r) => `RSS ${label(r.owners)}`).join(' | ')} | ${rows.map((r) => `heap ${label(r.owners)}`).join(' | ')} | ${rows.map((r) => `s ${label(r.owners)}`).join(' | ')} |`);
console.log(`|---|${rows.map(() => '---|---|---|').join('')}`);
const stages = rows[0]?.service.samples.slice(1).map((s) => s.stage) ?? [];
stages.forEach((stage, i) => {
  const cells = (field: 'rss' | 'heap') => rows.map((r) => bytes(delta(r.service, field, i, i + 1))).join(' | ');
  const seconds = rows.map((r) => (sample(r.service, i + 1).ms / 1000).toFixed(1)).join(' | ');
  console.log(`| ${stage} | ${cells('rss')} | ${cells('heap')} | ${seconds} |`);
});
console.log('');
console.log(`Build times (without the GCs of the measurement): ${rows.map((r) => `${label(r.owners)} service ${(r.service.buildMs / 1000).toFixed(1)} s, baseline ${(r.baseline.buildMs / 1000).toFixed(1)} s`).join('; ')}.`);

if (snapshotOwners !== undefined) {
  // Two sizes: what does not grow with the owners (code, modules) cancels out.
  const small = Math.floor(snapshotOwners / 2);
  const [a, b] = [await runChild('service', small, true), await runChild('service', snapshotOwners, true)];
  const smaller = new Map((a.snapshot ?? []).map((row) => [row.what, row]));
  const rowsBySize = (b.snapshot ?? [])
    .map((row) => {
      const other = smaller.get(row.what) ?? { bytes: 0, count: 0 };
      const owners = snapshotOwners - small;
      return { what: row.what, bytes: (row.bytes - other.bytes) / owners, count: (row.count - other.count) / owners };
    })
    .filter((row) => Math.abs(row.bytes) >= 4)
    .sort((x, y) => y.bytes - x.bytes);
  console.log('');
  console.log(`Heap snapshots of the service at ${label(small)} and ${label(snapshotOwners)} owners, the difference per owner by node type and constructor (self sizes):`);
  console.log('');
  console.log('| what | bytes/owner | objects/owner |');
  console.log('|---|---|---|');
  for (const row of rowsBySize.slice(0, 30)) console.log(`| ${row.what.replaceAll('|', '\\|')} | ${row.bytes.toFixed(0)} | ${row.count.toFixed(2)} |`);
  console.log(`| total | ${rowsBySize.reduce((sum, row) => sum + row.bytes, 0).toFixed(0)} | |`);
}
console.log('');
console.log(`Total ${((performance.now() - started) / 1000).toFixed(0)} s.`);

for (const { owners, service: s, baseline: b } of rows) {
  const value = service(s, 'rss');
  const base = baseline(b, 'rss');
  reportToSuite({
    part: 'memory',
    figure: `RSS per owner at ${label(owners)} owners`,
    value: Math.round(value),
    unit: 'bytes',
    baseline: { name: 'owner data as JSON text in a Map', value: Math.round(base) },
    ratio: Number((value / base).toFixed(2)),
    target: '<= 1024 bytes',
    met: value <= TARGET,
  });
}
