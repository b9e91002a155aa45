import { appendFileSync, closeSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import type { SensorEvent } from '../../core/events.js';
import { IngestJournal, type JournalRecord, type Leftover } from '../../ingest/ingest-journal.js';
import { tempDir } from '../helpers/env.js';

const OWNER = '00000000-0000-4000-8000-000000000001';
const DEVICE = '00000000-0000-4000-8000-000000000002';
const silent = { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined };
const battery = (level: number): SensorEvent => ({ kind: 'battery', at: '2026-12-05T10:00:00.000Z', level, charging: false });
const all = async (leftover: Leftover): Promise<JournalRecord[]> => {
  const out: JournalRecord[] = [];
  for await (const record of leftover.records()) out.push(record);
  return out;
};

t.test('what was synced survives the process; what the database stored is deleted', async (t) => {
  const dir = await tempDir(t);
  const first = IngestJournal.open(dir, silent);
  t.same(await all(first.leftover), [], 'a new journal holds nothing');
  t.equal(first.leftover.segments, 0);
  const journal = first.journal;
  journal.append(OWNER, DEVICE, [battery(10)]);
  journal.append(OWNER, DEVICE, [battery(11), battery(12)]);
  t.same(readdirSync(dir).map((f) => readFileSync(join(dir, f), 'utf8')).join(''), '', 'nothing is written before sync: appends are batched');
  journal.sync();
  const files = readdirSync(dir);
  t.equal(files.length, 1);
  t.equal(statSync(join(dir, files[0] ?? '')).mode & 0o777, 0o600, 'readable by the service only');
  // No close: as after a SIGKILL.
  const again = IngestJournal.open(dir, silent);
  const records = await all(again.leftover);
  t.same(
    records.map((r) => r.signals.map((s) => (s.event.kind === 'battery' ? s.event.level : -1))),
    [[10], [11, 12]],
    'every synced record comes back, in order',
  );
  t.equal(records[0]?.owner, OWNER);
  t.equal(records[0]?.signals[0]?.deviceId, DEVICE);
  again.journal.close();
});

t.test('mark starts a new segment; persisted deletes the stored ones only', async (t) => {
  const dir = await tempDir(t);
  const { journal } = IngestJournal.open(dir, silent);
  journal.append(OWNER, DEVICE, [battery(1)]);
  const mark = journal.mark();
  journal.append(OWNER, DEVICE, [battery(2)]);
  journal.sync();
  t.equal(readdirSync(dir).length, 2, 'the stored-to-be segment and the open one');
  journal.persisted(mark);
  t.equal(readdirSync(dir).length, 1);
  const { leftover, journal: reopened } = IngestJournal.open(dir, silent);
  t.same(
    (await all(leftover)).map((r) => (r.signals[0]?.event.kind === 'battery' ? r.signals[0].event.level : -1)),
    [2],
    'only what came after the mark is left',
  );
  reopened.close();
  t.equal(journal.mark(), mark + 1, 'a mark closes the segment that had writes');
  t.equal(journal.mark(), mark + 1, 'an idle round does not rotate');
  journal.persisted(mark + 1);
  journal.close();
});

t.test('a torn last line or a tampered line is skipped and counted, the rest is kept', async (t) => {
  const dir = await tempDir(t);
  const { journal } = IngestJournal.open(dir, silent);
  journal.append(OWNER, DEVICE, [battery(5)]);
  journal.sync();
  journal.close();
  const file = join(dir, readdirSync(dir)[0] ?? '');
  appendFileSync(file, JSON.stringify({ v: 1, owner: 'not-a-uuid', signals: [{ deviceId: DEVICE, event: battery(6) }] }) + '\n');
  appendFileSync(file, JSON.stringify({ v: 1, owner: OWNER, signals: [{ deviceId: DEVICE, event: { ...battery(7), level: 700 } }] }) + '\n');
  appendFileSync(file, '{"v":1,"owner":"00000000-0000-4000-8000-0000');
  const { leftover, journal: reopened } = IngestJournal.open(dir, silent);
  t.equal((await all(leftover)).length, 1);
  t.equal(leftover.skipped, 3);
  reopened.close();
});

t.test('a failing disk does not stop ingest: counted, and the events wait for the state write', async (t) => {
  const dir = await tempDir(t);
  const errors: string[] = [];
  const { journal } = IngestJournal.open(dir, { ...silent, error: (_o: object, message: string) => void errors.push(message) });
  // Force the descriptor shut underneath the journal: write(2) fails with EBADF.
  const fd = (journal as unknown as { fd: number }).fd;
  closeSync(fd);
  journal.append(OWNER, DEVICE, [battery(1)]);
  t.doesNotThrow(() => journal.sync());
  t.equal(journal.failureCount, 1);
  t.equal(errors.length, 1, 'logged');
  journal.append(OWNER, DEVICE, [battery(2)]);
  journal.sync();
  t.equal(errors.length, 1, 'logged at most once a minute');
});

t.test('a journal line is exactly the JSON of the record', async (t) => {
  const dir = await tempDir(t);
  const { journal } = IngestJournal.open(dir, silent);
  // Text that JSON escapes: a quote, a backslash, a line separator.
  const events: SensorEvent[] = [battery(1), { kind: 'network', at: '2026-12-05T10:00:01.000Z', connection: 'wifi', network: 'dG9r"ZW4\\-\u2028' }];
  journal.append(OWNER, DEVICE, events);
  journal.sync();
  const text = readdirSync(dir).map((f) => readFileSync(join(dir, f), 'utf8')).join('');
  t.equal(text, `${JSON.stringify({ v: 1, owner: OWNER, signals: events.map((event) => ({ deviceId: DEVICE, event })) })}\n`);
  journal.close();
});

t.test('many segments are read a line at a time, oldest first, across rounds', async (t) => {
  const dir = await tempDir(t);
  const { journal } = IngestJournal.open(dir, silent);
  // Rounds whose state writes failed (a database outage): each a segment, none deleted.
  for (let round = 0; round < 50; round++) {
    for (let i = 0; i < 20; i++) journal.append(OWNER, DEVICE, [battery(round)]);
    journal.mark();
  }
  journal.close();
  const { leftover, journal: reopened } = IngestJournal.open(dir, silent);
  t.equal(leftover.segments, 51, 'fifty written, and the one open when it closed (empty)');
  const levels: number[] = [];
  for await (const record of leftover.records()) levels.push(record.signals[0]?.event.kind === 'battery' ? record.signals[0].event.level : -1);
  t.equal(levels.length, 1000);
  t.same([...new Set(levels)], Array.from({ length: 50 }, (_, i) => i), 'in the order they were written');
  t.equal(leftover.skipped, 0);
  reopened.close();
});

t.test('a state write while the replay reads deletes none of the segments not read through', async (t) => {
  const dir = await tempDir(t);
  const { journal } = IngestJournal.open(dir, silent);
  for (let round = 0; round < 5; round++) {
    journal.append(OWNER, DEVICE, [battery(round)]);
    journal.mark();
  }
  journal.close();
  const { leftover, journal: reopened } = IngestJournal.open(dir, silent);
  const levels: number[] = [];
  for await (const record of leftover.records()) {
    levels.push(record.signals[0]?.event.kind === 'battery' ? record.signals[0].event.level : -1);
    // A write-behind round with nothing dirty, in the middle of the replay: it stored none of these.
    if (levels.length === 2) reopened.persisted(reopened.mark());
  }
  t.same(levels, [0, 1, 2, 3, 4], 'every record read, none lost to the deletion (ENOENT before)');
  t.equal(readdirSync(dir).length, 7, 'the five left, the empty one, and the open one');
  reopened.persisted(reopened.mark());
  t.same(readdirSync(dir), [`${7}.ndjson`], 'once read through, a round deletes them');
  reopened.close();
});
