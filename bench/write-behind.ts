import { createScratchDatabase } from './scratch-db.js';
import pg from 'pg';
import { openDatabase } from '../core/db/connect.js';
import { Repository } from '../core/db/repository.js';
import type { DirtyOwner } from '../core/presence-hub.js';
import { reportToSuite } from './suite-row.js';

/**
 * Write-behind benchmark (issue 6 item 2): owner state rows per second as
 * the write-behind writes them (coalesced, batched: one statement per chunk
 * of 500 owners, the batch as one jsonb parameter) against the single-row
 * baseline (one upsert per transaction, what a write-through design pays),
 * on the same PostgreSQL, in the same run.
 *
 *   npm run build && node dist/bench/write-behind.js
 *
 * BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test; a scratch
 * database is created next to it and dropped after), BENCH_OWNERS (20000),
 * BENCH_SINGLE_ROWS (2000), BENCH_ROUNDS (3).
 */
const ownerCount = Number(process.env.BENCH_OWNERS ?? 20_000);
const singleRows = Number(process.env.BENCH_SINGLE_ROWS ?? 2000);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const CHUNK = 500;

const database = await createScratchDatabase();
const handle = await openDatabase({ kind: 'postgres', url: database.url });
const repository = new Repository(handle.db);

try {
  // Owners exist first (states reference them), inserted in bulk.
  const ids = Array.from({ length: ownerCount }, () => crypto.randomUUID());
  const raw = new pg.Client({ connectionString: database.url });
  await raw.connect();
  for (let i = 0; i < ids.length; i += 5000) {
    const slice = ids.slice(i, i + 5000);
    await raw.query(`insert into owners (id, handle) select id, 'o' || replace(id::text, '-', '') from unnest($1::uuid[]) as id`, [slice]);
  }
  await raw.end();

  // A realistic owner: five signals from two devices.
  const at = new Date().toISOString();
  const device = crypto.randomUUID();
  const watch = crypto.randomUUID();
  const signals = [
    { deviceId: device, event: { kind: 'call', at, state: 'in-call' } },
    { deviceId: device, event: { kind: 'user-input', at, state: 'active' } },
    { deviceId: device, event: { kind: 'network', at, connection: 'wifi', network: 'AAAAAAAAAAAAAAAAAAAAAA' } },
    { deviceId: watch, event: { kind: 'motion', at, activity: 'still', confidence: 90 } },
    { deviceId: watch, event: { kind: 'battery', at, level: 80, charging: false } },
  ];
  let version = 1;
  const batchOf = (owners: readonly string[]): DirtyOwner[] => owners.map((ownerId) => ({ ownerId, version, signals: signals as DirtyOwner['signals'] }));

  const results: { single: number; batched: number }[] = [];
  for (let round = 0; round < rounds; round++) {
    version += 1;
    let started = performance.now();
    for (const ownerId of ids.slice(0, singleRows)) await repository.upsertStates(batchOf([ownerId]));
    const single = singleRows / ((performance.now() - started) / 1000);

    version += 1;
    started = performance.now();
    for (let i = 0; i < ids.length; i += CHUNK) await repository.upsertStates(batchOf(ids.slice(i, i + CHUNK)));
    const batched = ids.length / ((performance.now() - started) / 1000);
    results.push({ single, batched });
  }

  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
  const single = median(results.map((r) => r.single));
  const batched = median(results.map((r) => r.batched));
  console.log(`write-behind: ${ownerCount} owners x 5 signals, ${rounds} rounds (median), PostgreSQL`);
  console.log('| what | rows/s | ratio to single-row |');
  console.log('|---|---|---|');
  console.log(`| single-row upsert per transaction (baseline) | ${single.toFixed(0)} | 1.0 |`);
  console.log(`| write-behind batch of ${CHUNK} (one jsonb parameter) | ${batched.toFixed(0)} | ${(batched / single).toFixed(1)} |`);
  reportToSuite({
    part: 'write-behind',
    figure: `owner state rows/s, batches of ${CHUNK}, median of ${rounds}`,
    value: batched,
    unit: 'rows/s',
    baseline: { name: 'single-row upsert per transaction', value: single },
    ratio: batched / single,
  });
} finally {
  await handle.close();
  await database.drop();
}
