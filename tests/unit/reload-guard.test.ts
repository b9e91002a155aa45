import t from 'tap';
import { ReloadGuard } from '../../core/reload-guard.js';

t.test('a reload is overtaken only by a change to its own owner made while it was in flight', async (t) => {
  const guard = new ReloadGuard();
  guard.changed('o1');
  guard.begin('o1');
  t.notOk(guard.overtaken('o1'), 'a change before the reload began does not count');
  guard.changed('o2');
  t.notOk(guard.overtaken('o1'), "another owner's change does not count");
  t.notOk(guard.overtaken('o2'), 'nor is an owner without a reload held');
  guard.changed('o1');
  t.ok(guard.overtaken('o1'));
  guard.end('o1');
  t.equal(guard.size, 0, 'nothing is held once the reload ends');
  t.notOk(guard.overtaken('o1'));
  guard.begin('o1');
  t.notOk(guard.overtaken('o1'), 'the next reload starts clean');
});
