import t from 'tap';
import { acquireDeliveryLease } from '../../core/db/delivery-lease.js';
import { createTestDatabase, waitFor } from '../helpers/env.js';

const log = { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined };

t.test('one process of the group delivers; another takes over when it goes', async (t) => {
  const url = await createTestDatabase(t);
  const changes: string[] = [];
  const first = await acquireDeliveryLease({ url }, (held) => changes.push(`first ${held}`), log, 50);
  const second = await acquireDeliveryLease({ url }, (held) => changes.push(`second ${held}`), log, 50);
  const third = await acquireDeliveryLease({ url }, (held) => changes.push(`third ${held}`), log, 50);
  t.teardown(() => Promise.all([second.close(), third.close()]));
  t.ok(first.held, 'the first to ask holds it');
  t.notOk(second.held || third.held, 'the others wait');
  await new Promise((r) => setTimeout(r, 200));
  t.notOk(second.held || third.held, 'still waiting while it is held');
  await first.close();
  await waitFor(() => second.held || third.held, 'a survivor to take the lease', 5000);
  await new Promise((r) => setTimeout(r, 200));
  t.equal([second.held, third.held].filter(Boolean).length, 1, 'exactly one survivor holds it');
  t.same(changes.slice(0, 2), ['first true', 'first false']);
});
