import t from 'tap';
import { RateLimiter } from '../../core/rate-limit.js';

/** Token buckets: burst, refill, wait times, independence of keys, the bound on keys. */
t.test('a burst, then one token per 1/perSecond, with the wait until the next', async (t) => {
  const limiter = new RateLimiter({ perSecond: 10, burst: 3 });
  const now = 1_000_000;
  t.same([limiter.take('a', now), limiter.take('a', now), limiter.take('a', now)], [0, 0, 0], 'the burst');
  t.equal(limiter.take('a', now), 100, 'empty: one token in 100 ms');
  t.equal(limiter.take('a', now + 50), 50, 'half refilled: 50 ms more');
  t.equal(limiter.take('a', now + 100), 0, 'refilled');
  t.equal(limiter.take('b', now), 0, 'other keys have buckets of their own');
  t.same([limiter.take('a', now + 10_000), limiter.take('a', now + 10_000), limiter.take('a', now + 10_000), limiter.take('a', now + 10_000) > 0], [0, 0, 0, true], 'never more than the burst');
  t.equal(limiter.take('a', now - 5000) > 0, true, 'a clock going back refills nothing');
});

t.test('0 per second is no limit, and keeps no state', async (t) => {
  const limiter = new RateLimiter({ perSecond: 0, burst: 0 });
  t.notOk(limiter.enabled);
  for (let i = 0; i < 100; i++) t.equal(limiter.take('a', i), 0);
  t.equal(limiter.size, 0);
});

t.test('bounded: quiet keys go first, then the oldest', async (t) => {
  const limiter = new RateLimiter({ perSecond: 1, burst: 2 }, 10);
  for (let i = 0; i < 10; i++) limiter.take(`k${i}`, 0);
  t.equal(limiter.size, 10);
  limiter.take('busy', 0);
  t.ok(limiter.size <= 10, `still bounded (${limiter.size})`);
  // Ten seconds later every bucket has refilled: all of them can go.
  for (let i = 0; i < 20; i++) limiter.take(`later${i}`, 10_000);
  t.ok(limiter.size <= 10);
});

t.test('wait(): the same answer as take() would give, taking nothing', async (t) => {
  const limiter = new RateLimiter({ perSecond: 10, burst: 2 });
  const now = 1_000_000;
  t.equal(limiter.wait('a', now), 0, 'an unknown key has its burst');
  t.equal(limiter.size, 0, 'and is not made by asking');
  limiter.take('a', now);
  limiter.take('a', now);
  t.equal(limiter.wait('a', now), 100);
  t.equal(limiter.wait('a', now), 100, 'asking again takes nothing');
  t.equal(limiter.wait('a', now + 60), 40);
  t.equal(limiter.wait('a', now + 100), 0);
  t.equal(limiter.take('a', now + 100), 0, 'the token wait() saw is there for take()');
  t.equal(new RateLimiter({ perSecond: 0, burst: 0 }).wait('a', now), 0, 'no limit: never a wait');
});
