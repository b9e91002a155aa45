import t from 'tap';
import { openDatabase } from '../../core/db/connect.js';
import { Repository } from '../../core/db/repository.js';
import { createTestDatabase } from '../helpers/env.js';

/**
 * The statement that writes the access requests answered from memory
 * (core/access-requests.ts) on a real PostgreSQL: a request answered before
 * the owner's denial (held by another process of a group, say) does not
 * undo it when it is written after; one answered later keeps a denial
 * denied and changes only its message and time; a gone owner is skipped.
 */
t.test('written-behind requests: the later of request and decision wins, a denial stays denied', async (t) => {
  const url = await createTestDatabase(t);
  const database = await openDatabase({ kind: 'postgres', url });
  t.teardown(() => database.close());
  const repository = new Repository(database.db);
  const [ownerId, watcherId] = [crypto.randomUUID(), crypto.randomUUID()];
  await repository.insertOwner({ id: ownerId, handle: 'store', displayName: undefined });
  await repository.insertWatcher({ id: watcherId, kind: 'app', name: 'App', domain: undefined });
  const T = Date.parse('2026-12-08T10:00:00Z');
  const row = async () => {
    const found = await repository.accessRequest(ownerId, watcherId);
    return found && { status: found.status, event: found.event, message: found.message, updatedAt: found.updatedAt.getTime() };
  };

  await repository.recordAccessRequests([{ ownerId, watcherId, intent: 'ask', message: 'It is me', at: T }]);
  t.same(await row(), { status: 'pending', event: 'subscribe', message: 'It is me', updatedAt: T });
  await repository.putAccessRequest({ ownerId, watcherId, status: 'terminated', event: 'rejected', at: T + 2000 });
  await repository.recordAccessRequests([{ ownerId, watcherId, intent: 'allowed', at: T + 1000 }]);
  t.same(await row(), { status: 'terminated', event: 'rejected', message: 'It is me', updatedAt: T + 2000 }, 'answered before the denial: does not undo it');
  await repository.recordAccessRequests([{ ownerId, watcherId, intent: 'ask', message: 'Please', at: T + 3000 }]);
  t.same(await row(), { status: 'terminated', event: 'rejected', message: 'Please', updatedAt: T + 3000 }, 'asked again after: still denied, the new message');
  await repository.recordAccessRequests([{ ownerId, watcherId, intent: 'allowed', at: T + 4000 }]);
  t.same(await row(), { status: 'active', event: 'approved', message: 'Please', updatedAt: T + 4000 }, 'a rule let the watcher in since: active');

  await repository.recordAccessRequests([{ ownerId: crypto.randomUUID(), watcherId, intent: 'ask', at: T }]);
  t.pass('an owner that is gone is skipped, not an error');
});
