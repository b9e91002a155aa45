import t from 'tap';
import { AccessLogBuffer } from '../../core/access-log.js';

const NOW = Date.parse('2026-05-04T10:00:00.250Z');
const read = { ownerId: 'o1', watcherId: 'w1', action: 'read', outcome: 'shown', fields: ['basic', 'availability'] } as const;

t.test('reads of one view by one watcher within a second coalesce', async (t) => {
  const buffer = new AccessLogBuffer();
  for (let i = 0; i < 50; i++) buffer.record(read, NOW + i * 10);
  buffer.record(read, NOW + 1000);
  buffer.record({ ...read, outcome: 'withheld', fields: [] }, NOW);
  const entries = buffer.take();
  t.same(
    entries.map((e) => [e.at, e.outcome, e.count]),
    [
      [Date.parse('2026-05-04T10:00:00Z'), 'shown', 50],
      [Date.parse('2026-05-04T10:00:01Z'), 'shown', 1],
      [Date.parse('2026-05-04T10:00:00Z'), 'withheld', 1],
    ],
  );
  t.equal(buffer.size, 0, 'taken');
});

t.test('bounded, with the overflow counted; a failed write puts entries back', async (t) => {
  const buffer = new AccessLogBuffer(2);
  buffer.record({ ...read, watcherId: 'a' }, NOW);
  buffer.record({ ...read, watcherId: 'b' }, NOW);
  buffer.record({ ...read, watcherId: 'c' }, NOW);
  t.equal(buffer.size, 2);
  t.equal(buffer.dropped, 1);
  const taken = buffer.take();
  buffer.record({ ...read, watcherId: 'a' }, NOW);
  buffer.putBack(taken);
  t.same(
    buffer.take().map((e) => [e.watcherId, e.count]),
    [
      ['a', 2],
      ['b', 1],
    ],
  );
});
