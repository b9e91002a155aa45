import pg from 'pg';
import t, { type Test } from 'tap';
import { openDatabase } from '../../core/db/connect.js';
import { listenForChanges, type ControlChange } from '../../core/db/control-channel.js';
import { Repository } from '../../core/db/repository.js';
import type { Log } from '../../core/log.js';
import { createTestDatabase, waitFor } from '../helpers/env.js';

/**
 * Migration 0018 on a real PostgreSQL: a webhook on a handle no owner holds
 * waits with no owner and is announced by its handle; the owner who takes
 * the handle takes it (announced both ways); and a webhook inserted while
 * the owner is being created ends up bound whichever commits first.
 */
/** A database of its own, migrated, with one watcher. */
async function databaseWithWatcher(t: Test) {
  const url = await createTestDatabase(t);
  const database = await openDatabase({ kind: 'postgres', url });
  t.teardown(() => database.close());
  const repository = new Repository(database.db);
  const watcherId = crypto.randomUUID();
  await repository.insertWatcher({ id: watcherId, kind: 'app', name: 'App', domain: undefined });
  return { url, repository, watcherId };
}

const quiet: Log = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

t.test('waiting webhooks: stored without an owner, bound when the handle is taken, announced by handle and by owner', async (t) => {
  const url = await createTestDatabase(t);
  const database = await openDatabase({ kind: 'postgres', url });
  t.teardown(() => database.close());
  const repository = new Repository(database.db);
  const seen: ControlChange[] = [];
  const listener = await listenForChanges({ url }, { onChange: (change) => seen.push(change), onResync: () => undefined }, quiet);
  t.teardown(() => listener.close());

  const watcherId = crypto.randomUUID();
  await repository.insertWatcher({ id: watcherId, kind: 'app', name: 'App', domain: undefined });
  await waitFor(() => seen.length >= 1, 'the watcher');
  const hook = await repository.insertWebhook({ id: crypto.randomUUID(), watcherId, handle: 'hana', url: 'https://app.example/hook' });
  t.same(hook, { id: hook.id, watcherId, ownerId: null, handle: 'hana', url: 'https://app.example/hook' }, 'no owner holds the handle');
  await waitFor(() => seen.length >= 2, 'the waiting webhook');
  t.same(seen[1], { handle: 'hana' });
  t.same(await repository.unheldWebhookHandles(), ['hana']);
  t.same((await repository.webhooksOfHandle('hana')).map((h) => [h.id, h.ownerId]), [[hook.id, null]]);

  const ownerId = crypto.randomUUID();
  t.ok(await repository.insertOwner({ id: ownerId, handle: 'hana', displayName: undefined }));
  await waitFor(() => seen.length >= 4, 'the owner, and the webhook bound');
  t.same(new Set(seen.slice(2).map((c) => JSON.stringify(c))), new Set([JSON.stringify({ owner: ownerId }), JSON.stringify({ handle: 'hana' })]), 'the owner (theirs now, folded with the owner row) and the handle (it left)');
  t.same((await repository.webhooksOfOwner(ownerId)).map((h) => [h.id, h.ownerId]), [[hook.id, ownerId]]);
  t.same((await repository.webhooksOfHandle('hana')).map((h) => [h.id, h.ownerId]), [[hook.id, ownerId]], 'read by handle, bound');
  t.same(await repository.unheldWebhookHandles(), []);
  const later = await repository.insertWebhook({ id: crypto.randomUUID(), watcherId, handle: 'hana', url: 'https://app.example/2' });
  t.equal(later.ownerId, ownerId, 'a webhook on a held handle gets its owner from the database');
});

t.test('a webhook inserted while the owner is being created is bound, whichever transaction commits first', async (t) => {
  const { url, watcherId } = await databaseWithWatcher(t);
  const [one, two] = [new pg.Client({ connectionString: url }), new pg.Client({ connectionString: url })];
  await Promise.all([one.connect(), two.connect()]);
  t.teardown(() => Promise.all([one.end(), two.end()]));
  const ownerOf = async (hookId: string) => (await one.query<{ owner_id: string | null }>('select owner_id from webhooks where id = $1', [hookId])).rows[0]?.owner_id;

  for (const [name, first, second] of [
    ['the owner first', 'owner', 'webhook'],
    ['the webhook first', 'webhook', 'owner'],
  ] as const) {
    const handle = first === 'owner' ? 'race-a' : 'race-b';
    const ownerId = crypto.randomUUID();
    const hookId = crypto.randomUUID();
    const insert = (client: pg.Client, what: 'owner' | 'webhook') =>
      what === 'owner'
        ? client.query('insert into owners (id, handle) values ($1, $2)', [ownerId, handle])
        : client.query('insert into webhooks (id, watcher_id, handle, url) values ($1, $2, $3, $4)', [hookId, watcherId, handle, 'https://app.example/h']);
    await one.query('begin');
    await insert(one, first);
    // The second waits for the first's lock on the handle.
    const waiting = insert(two, second);
    await new Promise((resolve) => setTimeout(resolve, 100));
    await one.query('commit');
    await waiting;
    t.equal(await ownerOf(hookId), ownerId, name);
  }
});

t.test('a webhook registered while its owner is erased: no deadlock, and it goes with the owner or waits, by which commits first', async (t) => {
  const { url, repository, watcherId } = await databaseWithWatcher(t);
  const one = new pg.Client({ connectionString: url });
  await one.connect();
  t.teardown(() => one.end());

  // The registration first (uncommitted), then the erasure: the erasure waits, then takes the webhook with the owner.
  const first = crypto.randomUUID();
  await repository.insertOwner({ id: first, handle: 'erase-a', displayName: undefined });
  const hookA = crypto.randomUUID();
  await one.query('begin');
  await one.query('insert into webhooks (id, watcher_id, handle, url) values ($1, $2, $3, $4)', [hookA, watcherId, 'erase-a', 'https://app.example/a']);
  const erasing = repository.eraseOwner(first);
  await new Promise((resolve) => setTimeout(resolve, 100));
  await one.query('commit');
  t.ok(await erasing, 'erased');
  t.same((await one.query('select id from webhooks where id = $1', [hookA])).rows, [], 'the webhook went with the owner');

  // The erasure first (uncommitted), then the registration: it waits, then finds no owner and waits for one.
  const second = crypto.randomUUID();
  await repository.insertOwner({ id: second, handle: 'erase-b', displayName: undefined });
  await one.query('begin');
  await one.query("select presence_lock_webhook_handle('erase-b')");
  await one.query('delete from owners where id = $1', [second]);
  const registering = repository.insertWebhook({ id: crypto.randomUUID(), watcherId, handle: 'erase-b', url: 'https://app.example/b' });
  await new Promise((resolve) => setTimeout(resolve, 100));
  await one.query('commit');
  t.equal((await registering).ownerId, null, 'registered, waiting on the handle');
});
