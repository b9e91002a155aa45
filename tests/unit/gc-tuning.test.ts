import { spawnSync } from 'node:child_process';
import t from 'tap';
import { disablePretenuring, PRETENURING_FLAG } from '../../bin/gc-tuning.js';

t.test('turns allocation-site pretenuring off by default', async (t) => {
  const set: string[] = [];
  t.equal(disablePretenuring([], (flags) => set.push(flags)), true);
  t.same(set, ['--no-allocation-site-pretenuring']);
});

t.test("leaves it on when node was started with the flag (the operator's choice)", async (t) => {
  const set: string[] = [];
  t.equal(disablePretenuring(['--max-old-space-size=4096', PRETENURING_FLAG], (flags) => set.push(flags)), false);
  t.equal(disablePretenuring(['--allocation_site_pretenuring'], (flags) => set.push(flags)), false, 'spelt with underscores, as V8 also takes it');
  t.same(set, []);
});

t.test('V8 knows the flag: the real setter prints no "unrecognized flag" (a control with a made-up flag does)', async (t) => {
  // V8 reports an unknown flag on stderr and carries on, so only a child process's stderr tells.
  const module = new URL('../../bin/gc-tuning.js', import.meta.url).href;
  const run = (code: string) => spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8' });
  const real = run(`import { disablePretenuring } from ${JSON.stringify(module)}; process.stdout.write(String(disablePretenuring([])));`);
  t.equal(real.status, 0);
  t.equal(real.stdout, 'true');
  t.equal(real.stderr, '');
  const control = run(`import { setFlagsFromString } from 'node:v8'; setFlagsFromString('--no-allocation-site-pretenuringg');`);
  t.match(control.stderr, /unrecognized flag/);
});
