import pg from 'pg';
import t from 'tap';
import { openDatabase } from '../../core/db/connect.js';
import { CONTROL_CHANNEL, listenForChanges, type ControlChange } from '../../core/db/control-channel.js';
import { Repository } from '../../core/db/repository.js';
import type { Log } from '../../core/log.js';
import { createTestDatabase, waitFor } from '../helpers/env.js';

/**
 * The control channel on a real PostgreSQL (migrations 0008, 0016 and
 * 0017): a change to an owner's overrides is announced as `overrides` on
 * presence_control_v2, other changes as before; nothing goes on the
 * earlier channel, presence_control, any more (0017); and each
 * notification says whether one of the listening process's own database
 * connections committed it.
 */
const quiet: Log = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

t.test('payloads, the legacy channel silent, and own connections told apart', async (t) => {
  const url = await createTestDatabase(t);
  const database = await openDatabase({ kind: 'postgres', url });
  t.teardown(() => database.close());
  const repository = new Repository(database.db);

  const seen: { change: ControlChange; own: boolean }[] = [];
  const listener = await listenForChanges({ url }, { onChange: (change, own) => seen.push({ change, own }), onResync: () => undefined, isOwnBackend: (pid) => database.ownsBackend(pid) }, quiet);
  t.teardown(() => listener.close());
  // What a process of a version before 0016 would listen to: nothing arrives there now.
  const legacy = new pg.Client({ connectionString: url });
  await legacy.connect();
  t.teardown(() => legacy.end());
  const legacySeen: string[] = [];
  legacy.on('notification', (message) => legacySeen.push(message.payload ?? ''));
  await legacy.query('LISTEN presence_control');

  const ownerId = crypto.randomUUID();
  t.ok(await repository.insertOwner({ id: ownerId, handle: 'chan', displayName: undefined }));
  await repository.upsertOverride(ownerId, { source: 'manual', availability: 'busy', activities: [], expiresAt: Date.now() + 60_000 });
  await waitFor(() => seen.length >= 2, 'both notifications');
  t.same(seen, [
    { change: { owner: ownerId }, own: true },
    { change: { overrides: [ownerId] }, own: true },
  ]);

  // The same change committed on a connection that is not this process's.
  const other = new pg.Client({ connectionString: url });
  await other.connect();
  t.teardown(() => other.end());
  await other.query(`update presence_overrides set availability = 'away' where owner_id = $1`, [ownerId]);
  await waitFor(() => seen.length >= 3, 'the other connection’s change');
  t.same(seen[2], { change: { overrides: [ownerId] }, own: false });
  t.equal(CONTROL_CHANNEL, 'presence_control_v2');

  // The fixed payloads (token revocations, admin cutoffs, unlinked accounts): one function, its argument, on both channels.
  await other.query(`insert into token_revocations (token_id, revoked_at, expires_at) values ('t1', now(), now() + interval '1 hour')`);
  await other.query(`insert into admin_token_cutoffs (subject, not_before) values ('ops', now())`);
  await other.query(`insert into external_identities (issuer, subject, owner_id) values ('https://idp.example', 'sub1', $1)`, [ownerId]);
  await other.query(`delete from external_identities where subject = 'sub1'`);
  await waitFor(() => seen.length >= 6, 'the fixed payloads');
  t.same(
    seen.slice(3).map((s) => s.change),
    [{ tokens: true }, { tokens: true }, { identities: true }],
  );
  // Notifications arrive in commit order: once this one is heard, any on the earlier channel would have been.
  await other.query(`NOTIFY presence_control, 'sentinel'`);
  await waitFor(() => legacySeen.length >= 1, 'the sentinel');
  t.same(legacySeen, ['sentinel'], 'nothing but the sentinel on the earlier channel (migration 0017)');
});

t.test('one statement over many owners: one notification per hundred owners, each owner once', async (t) => {
  const url = await createTestDatabase(t);
  const database = await openDatabase({ kind: 'postgres', url });
  t.teardown(() => database.close());
  const repository = new Repository(database.db);
  const owners: string[] = [];
  for (let i = 0; i < 150; i++) {
    const id = crypto.randomUUID();
    await repository.insertOwner({ id, handle: `bulk${i}`, displayName: undefined });
    owners.push(id);
  }
  const seen: ControlChange[] = [];
  const listener = await listenForChanges({ url }, { onChange: (change) => seen.push(change), onResync: () => undefined }, quiet);
  t.teardown(() => listener.close());
  const other = new pg.Client({ connectionString: url });
  await other.connect();
  t.teardown(() => other.end());

  // Two rows per owner in one statement (a status and a publication), as a group commit writes a batch.
  await other.query(
    `insert into presence_overrides (owner_id, source, availability, activities, expires_at)
     select id, source, 'busy', '[]'::jsonb, now() + interval '1 hour' from owners, (values ('manual'), ('publication:x')) as s(source)`,
  );
  await waitFor(() => seen.length >= 2, 'the notifications of the insert');
  const announced = seen.flatMap((change) => ('overrides' in change ? change.overrides : []));
  t.equal(seen.length, 2, '150 owners: two notifications');
  t.ok(seen.every((change) => 'overrides' in change && change.overrides.length <= 100));
  t.same([...announced].sort(), [...owners].sort(), 'every owner once');

  seen.length = 0;
  await other.query(`delete from presence_overrides where source = 'manual' and owner_id = any($1)`, [owners.slice(0, 3)]);
  await waitFor(() => seen.length >= 1, 'the notification of the delete');
  const deleted = seen[0];
  t.equal(seen.length, 1, 'one notification for the deleting statement');
  t.same(deleted && 'overrides' in deleted ? [...deleted.overrides].sort() : [], [...owners.slice(0, 3)].sort());
});
