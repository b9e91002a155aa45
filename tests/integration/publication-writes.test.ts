import t from 'tap';
import { openDatabase } from '../../core/db/connect.js';
import { Repository, type PublicationWrite } from '../../core/db/repository.js';
import type { PresenceOverride } from '../../core/presence-overrides.js';
import { createTestDatabase } from '../helpers/env.js';

/**
 * Repository.writePublications, the statement behind HTTP PUBLISH's group
 * commit, on a real PostgreSQL: conditional on the entity tag in storage,
 * so two processes racing on one tag cannot both succeed (RFC 3903 §6
 * step 5), and one write's refusal does not affect the others of its batch.
 */
const url = await createTestDatabase(t);
const handles = await Promise.all([0, 1].map(() => openDatabase({ kind: 'postgres', url })));
t.teardown(() => Promise.all(handles.map((h) => h.close())));
const [a, b] = handles.map((h) => new Repository(h.db)) as [Repository, Repository];
const owners = [crypto.randomUUID(), crypto.randomUUID()] as const;
for (const [i, id] of owners.entries()) await a.insertOwner({ id, handle: `pub${i}`, displayName: undefined });

const publication = (source: string, etag: string, note?: string): PresenceOverride => ({
  source,
  availability: 'busy',
  activities: ['meeting'],
  ...(note === undefined ? {} : { note }),
  etag,
  expiresAt: Date.now() + 600_000,
});

const stored = async (ownerId: string) => (await a.loadSnapshot()).overrides.filter((o) => o.ownerId === ownerId).map((o) => o.override);

t.test('create, then two processes modify with the same tag: exactly one wins', async (t) => {
  const [owner] = owners;
  t.same(await a.writePublications([{ op: 'create', ownerId: owner, source: 'publication:1', publication: publication('publication:1', 'tag1') }]), [true]);
  const fromA: PublicationWrite = { op: 'update', ownerId: owner, source: 'publication:1', expectEtag: 'tag1', publication: publication('publication:1', 'tagA', 'from A') };
  const fromB: PublicationWrite = { op: 'update', ownerId: owner, source: 'publication:1', expectEtag: 'tag1', publication: publication('publication:1', 'tagB', 'from B') };
  const [ra, rb] = await Promise.all([a.writePublications([fromA]), b.writePublications([fromB])]);
  t.same([...(ra ?? []), ...(rb ?? [])].sort(), [false, true], 'one applied, one refused');
  const [row] = await stored(owner);
  t.equal(row?.etag, ra?.[0] ? 'tagA' : 'tagB', 'storage holds the winner');
  t.equal(row?.note, ra?.[0] ? 'from A' : 'from B');

  t.same(await a.writePublications([{ op: 'delete', ownerId: owner, source: 'publication:1', expectEtag: 'tag1' }]), [false], 'a removal with a spent tag is refused');
  t.same(await a.writePublications([{ op: 'delete', ownerId: owner, source: 'publication:1', expectEtag: row?.etag ?? '' }]), [true], 'and with the current one applied');
  t.same(await stored(owner), []);
});

t.test('one batch: each write gets its own outcome; a missing owner is refused', async (t) => {
  const [first, second] = owners;
  await a.writePublications([{ op: 'create', ownerId: second, source: 'publication:2', publication: publication('publication:2', 'x1') }]);
  const results = await a.writePublications([
    { op: 'create', ownerId: first, source: 'publication:3', publication: publication('publication:3', 'y1') },
    { op: 'update', ownerId: second, source: 'publication:2', expectEtag: 'wrong', publication: publication('publication:2', 'x2') },
    { op: 'create', ownerId: crypto.randomUUID(), source: 'publication:4', publication: publication('publication:4', 'z1') },
  ]);
  t.same(results, [true, false, false]);
  t.same(
    (await stored(second)).map((o) => o.etag),
    ['x1'],
    'the refused update changed nothing',
  );
  t.same(
    (await stored(first)).map((o) => o.etag),
    ['y1'],
  );
});

t.test("expired rows of the batch's owners are purged in the same statement", async (t) => {
  const [owner] = owners;
  await a.writePublications([{ op: 'create', ownerId: owner, source: 'publication:old', publication: { ...publication('publication:old', 'old'), expiresAt: Date.now() - 1000 } }]);
  await a.writePublications([{ op: 'create', ownerId: owner, source: 'publication:new', publication: publication('publication:new', 'new') }]);
  const rows = await handles[0]?.db.execute(`select source from presence_overrides where owner_id = '${owner}' order by source`);
  t.same(
    (rows as unknown as { rows: { source: string }[] }).rows.map((r) => r.source),
    ['publication:3', 'publication:new'],
  );
});
