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

t.test('only the same owner, watcher, second, action, outcome and field list coalesce', async (t) => {
  const buffer = new AccessLogBuffer();
  buffer.record(read, NOW);
  buffer.record({ ...read, fields: ['basic'] }, NOW);
  buffer.record({ ...read, fields: ['basic', 'availability', 'note'] }, NOW);
  buffer.record({ ...read, action: 'stream-event' }, NOW);
  buffer.record({ ...read, ownerId: 'o2' }, NOW);
  buffer.record({ ...read, fields: Object.freeze(['basic', 'availability']) }, NOW + 500);
  t.same(
    buffer.take().map((e) => [e.ownerId, e.action, e.fields.join(','), e.count]),
    [
      ['o1', 'read', 'basic,availability', 2],
      ['o1', 'read', 'basic', 1],
      ['o1', 'read', 'basic,availability,note', 1],
      ['o1', 'stream-event', 'basic,availability', 1],
      ['o2', 'read', 'basic,availability', 1],
    ],
  );
});

t.test('an entry keeps the fields it was recorded with', async (t) => {
  const buffer = new AccessLogBuffer();
  const fields = ['basic'];
  buffer.record({ ...read, fields }, NOW);
  fields.push('note');
  t.same(buffer.take()[0]?.fields, ['basic']);
});

t.test('entries put back coalesce with new records of the same second, and keep the order', async (t) => {
  const buffer = new AccessLogBuffer(3);
  buffer.record(read, NOW);
  buffer.record({ ...read, watcherId: 'w2' }, NOW);
  const taken = buffer.take();
  buffer.record({ ...read, watcherId: 'w2' }, NOW + 1);
  buffer.record({ ...read, watcherId: 'w3' }, NOW + 1);
  buffer.putBack(taken);
  t.equal(buffer.size, 3);
  t.same(
    buffer.take().map((e) => [e.watcherId, e.count]),
    [
      ['w2', 2],
      ['w3', 1],
      ['w1', 1],
    ],
  );
  buffer.record({ ...read, watcherId: 'x' }, NOW);
  buffer.record({ ...read, watcherId: 'y' }, NOW);
  buffer.record({ ...read, watcherId: 'z' }, NOW);
  buffer.record({ ...read, watcherId: 'full' }, NOW);
  buffer.record({ ...read, watcherId: 'x' }, NOW);
  t.equal(buffer.dropped, 1, 'full: a new entry is dropped');
  t.same(buffer.take().map((e) => e.count), [2, 1, 1], 'but an existing one still counts');
});
