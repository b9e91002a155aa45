import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { tempDir } from '../helpers/env.js';

/**
 * INGEST_JOURNAL_FSYNC: whether the journal reaches the disk before a
 * device is acknowledged can only be seen in the system calls it makes (a
 * power loss cannot be staged here), so a child process runs the real
 * journal under strace(1) and the calls between its steps are counted.
 * Each step ends with a marker written to stdout, standing for the
 * acknowledgement that ingest sends once sync() returns: whatever the step
 * needs on disk must come before its marker.
 */
const strace = spawnSync('strace', ['-V'], { encoding: 'utf8' });
const available = strace.status === 0;

/**
 * Runs the journal's steps in a child process under strace and returns,
 * per step, its system calls as kinds: `write journal`, `fdatasync
 * journal`, `open directory`, `fsync directory`, `open segment`.
 */
function traced(t: Test, dir: string, fsync: boolean): Map<string, string[]> {
  const module = new URL('../../ingest/ingest-journal.js', import.meta.url).href;
  const journalDir = join(dir, 'journal');
  const code = `
    import { writeSync } from 'node:fs';
    import { IngestJournal } from ${JSON.stringify(module)};
    const log = { info() {}, warn() {}, error() {}, debug() {} };
    const owner = '00000000-0000-4000-8000-000000000001';
    const device = '00000000-0000-4000-8000-000000000002';
    const event = (level) => ({ kind: 'battery', at: '2026-12-05T10:00:00.000Z', level, charging: false });
    const step = (name) => writeSync(1, 'step:' + name + '\\n');
    const { journal } = IngestJournal.open(${JSON.stringify(journalDir)}, log, { fsync: ${fsync} });
    step('open');
    journal.append(owner, device, [event(1)]);
    journal.sync();
    step('first');
    journal.append(owner, device, [event(2)]);
    journal.append(owner, device, [event(3)]);
    journal.sync();
    step('second');
    journal.sync();
    step('idle');
    journal.mark();
    step('mark');
    journal.append(owner, device, [event(4)]);
    journal.sync();
    step('rotated');
    journal.close();
  `;
  const out = join(dir, 'strace.txt');
  const run = spawnSync('strace', ['-f', '-qq', '-e', 'trace=openat,write,fdatasync,fsync', '-o', out, process.execPath, '--input-type=module', '-e', code], { encoding: 'utf8' });
  t.equal(run.status, 0, run.stderr);
  t.equal(run.stdout, 'step:open\nstep:first\nstep:second\nstep:idle\nstep:mark\nstep:rotated\n');
  const steps = new Map<string, string[]>();
  const fds = new Map<string, 'journal' | 'directory' | 'data dir'>();
  // A step's calls are those before its marker (after the previous one's).
  let current: string[] = [];
  for (const line of readFileSync(out, 'utf8').split('\n')) {
    const call = line.replace(/^\d+\s+/, '');
    const marker = /^write\(1, "step:(\w+)\\n"/.exec(call);
    if (marker) {
      steps.set(marker[1] ?? '', current);
      current = [];
      continue;
    }
    const opened = /^openat\(AT_FDCWD, "([^"]*)", [^)]*\) = (\d+)$/.exec(call);
    if (opened) {
      const what = opened[1]?.endsWith('.ndjson') ? 'journal' : opened[1] === journalDir ? 'directory' : opened[1] === dir ? 'data dir' : undefined;
      if (what) {
        fds.set(opened[2] ?? '', what);
        current.push(`open ${what === 'journal' ? 'segment' : what}`);
      }
      continue;
    }
    const used = /^(write|fdatasync|fsync)\((\d+)/.exec(call);
    const what = fds.get(used?.[2] ?? '');
    if (used && what) current.push(`${used[1]} ${what}`);
  }
  return steps;
}

t.test('INGEST_JOURNAL_FSYNC=true: each sync is on the disk before it returns, and each new segment\'s name too', { skip: !available && !process.env.CI ? 'strace(1) is not installed (.ci/run installs it)' : false }, async (t) => {
  const dir = await tempDir(t);
  const steps = traced(t, dir, true);
  const of = (name: string) => steps.get(name);
  t.same(
    of('open')?.filter((call) => call.includes('data dir')),
    ['open data dir', 'fsync data dir'],
    "the journal's directory was made: its name in DATA_DIR is flushed too",
  );
  t.same(of('first'), ['write journal', 'fdatasync journal', 'open directory', 'fsync directory'], "the lines, flushed, then the segment's name, before the acknowledgement");
  t.same(of('second'), ['write journal', 'fdatasync journal'], 'two appends, one write and one flush; the name is on disk already');
  t.same(of('idle'), [], 'nothing appended: no flush');
  t.same(of('mark'), ['open segment'], 'a rotation opens the next segment and flushes nothing until it is written');
  t.same(of('rotated'), ['write journal', 'fdatasync journal', 'open directory', 'fsync directory'], "the new segment's name is flushed after its first write");
});

t.test('the default: written to the kernel only, never flushed', { skip: !available && !process.env.CI ? 'strace(1) is not installed (.ci/run installs it)' : false }, async (t) => {
  const dir = await tempDir(t);
  const steps = traced(t, dir, false);
  const of = (name: string) => steps.get(name);
  t.same(of('open')?.filter((call) => call.includes('data dir')), []);
  t.same(of('first'), ['write journal']);
  t.same(of('second'), ['write journal']);
  t.same(of('idle'), []);
  t.same(of('mark'), ['open segment']);
  t.same(of('rotated'), ['write journal']);
});
