import t from 'tap';
import { KeyedQueue } from '../../core/keyed-queue.js';

t.test('one key runs in order, a failure does not stop the next, other keys do not wait', async (t) => {
  const queue = new KeyedQueue();
  const log: string[] = [];
  const step = (name: string, ms: number, fail = false) => async () => {
    await new Promise((resolve) => setTimeout(resolve, ms));
    log.push(name);
    if (fail) throw new Error(name);
    return name;
  };
  const a1 = queue.run('a', step('a1', 30));
  const a2 = queue.run('a', step('a2', 1, true));
  const a3 = queue.run('a', step('a3', 1));
  const b1 = queue.run('b', step('b1', 5));
  t.equal(await b1, 'b1');
  t.same(log, ['b1'], 'b did not wait for a');
  t.equal(await a1, 'a1');
  await t.rejects(a2, /a2/, 'the failure reaches its caller');
  t.equal(await a3, 'a3', 'and the next piece still runs');
  t.same(log, ['b1', 'a1', 'a2', 'a3']);
});
