import t from 'tap';
import { openDatabase } from '../../core/db/connect.js';
import { Repository } from '../../core/db/repository.js';
import type { DirtyOwner } from '../../core/presence-hub.js';
import { createTestDatabase } from '../helpers/env.js';

/**
 * Stored signals are merged, not overwritten: several processes write the
 * same owners at once (each what it ingested) and storage ends with the
 * last-writer-wins join of everything, whatever the interleaving.
 */
t.test('concurrent writers of the same owners converge on the join', async (t) => {
  const url = await createTestDatabase(t);
  const handles = await Promise.all([0, 1, 2].map(() => openDatabase({ kind: 'postgres', url })));
  t.teardown(() => Promise.all(handles.map((h) => h.close())));
  const repos = handles.map((h) => new Repository(h.db));
  const owners = Array.from({ length: 40 }, () => crypto.randomUUID());
  for (const [i, id] of owners.entries()) await (repos[0] as Repository).insertOwner({ id, handle: `merge${i}`, displayName: undefined });

  const phone = crypto.randomUUID();
  const at = (s: number) => new Date(Date.UTC(2026, 10, 25, 10, 0, s)).toISOString();
  // Writer w reports battery level 10*w + round at second `round*3 + w`:
  // the newest report overall is writer 2's last round.
  const batch = (w: number, round: number): DirtyOwner[] =>
    owners.map((ownerId) => ({
      ownerId,
      version: round,
      signals: [
        { deviceId: phone, event: { kind: 'battery', at: at(round * 3 + w), level: 10 * w + round, charging: false } },
        { deviceId: crypto.randomUUID(), event: { kind: 'user-input', at: at(round), state: 'active' } },
      ],
    }));
  // Shuffled owner order per writer: the lock order is the repository's job.
  const shuffled = (xs: DirtyOwner[]) => [...xs].sort(() => Math.random() - 0.5);
  await Promise.all(
    repos.map(async (repo, w) => {
      for (let round = 0; round < 5; round++) await repo.upsertStates(shuffled(batch(w, round)));
    }),
  );

  const snapshot = await (repos[1] as Repository).loadSnapshot();
  t.equal(snapshot.states.length, owners.length);
  for (const state of snapshot.states) {
    const battery = state.signals.filter((s) => s.event.kind === 'battery');
    t.equal(battery.length, 1, 'one battery signal per device');
    t.match(battery[0]?.event, { level: 24, at: at(14) }, 'the newest report wins, whoever wrote last');
    t.equal(state.signals.filter((s) => s.event.kind === 'user-input').length, 15, 'every device any writer saw is kept');
  }
});

t.test('a write returns what storage held beyond the batch, so memory learns it', async (t) => {
  const url = await createTestDatabase(t);
  const handle = await openDatabase({ kind: 'postgres', url });
  t.teardown(() => handle.close());
  const repo = new Repository(handle.db);
  const ownerId = crypto.randomUUID();
  await repo.insertOwner({ id: ownerId, handle: 'learner', displayName: undefined });
  const event = (s: number) => ({ kind: 'battery' as const, at: new Date(Date.UTC(2026, 10, 25, 10, 0, s)).toISOString(), level: s, charging: false });
  const watch = crypto.randomUUID();
  const phone = crypto.randomUUID();
  t.same(await repo.upsertStates([{ ownerId, version: 1, signals: [{ deviceId: watch, event: event(1) }] }]), [], 'a first write teaches nothing');
  const learned = await repo.upsertStates([{ ownerId, version: 1, signals: [{ deviceId: phone, event: event(2) }] }]);
  t.equal(learned.length, 1);
  t.same(new Set(learned[0]?.signals.map((s) => s.deviceId)), new Set([watch, phone]), 'the other writer\'s device comes back');
  t.same(await repo.upsertStates([{ ownerId, version: 1, signals: [{ deviceId: phone, event: event(2) }, { deviceId: watch, event: event(1) }] }]), [], 'nothing new: nothing returned');
  t.same(await repo.upsertStates([{ ownerId: crypto.randomUUID(), version: 1, signals: [{ deviceId: phone, event: event(3) }] }]), [], 'an unknown owner is skipped, not an error');
});

t.test("a single process's write replaces what it stored before; unknown owners are skipped", async (t) => {
  const url = await createTestDatabase(t);
  const handle = await openDatabase({ kind: 'postgres', url });
  t.teardown(() => handle.close());
  const repo = new Repository(handle.db);
  const ownerId = crypto.randomUUID();
  await repo.insertOwner({ id: ownerId, handle: 'single', displayName: undefined });
  const event = (s: number) => ({ kind: 'battery' as const, at: new Date(Date.UTC(2026, 10, 25, 10, 0, s)).toISOString(), level: s, charging: false });
  const phone = crypto.randomUUID();
  const watch = crypto.randomUUID();
  await repo.replaceStates([{ ownerId, version: 1, signals: [{ deviceId: phone, event: event(1) }] }]);
  await repo.replaceStates([
    { ownerId, version: 2, signals: [{ deviceId: phone, event: event(2) }, { deviceId: watch, event: event(3) }] },
    { ownerId: crypto.randomUUID(), version: 1, signals: [{ deviceId: phone, event: event(4) }] },
  ]);
  const snapshot = await repo.loadSnapshot();
  t.equal(snapshot.states.length, 1, 'only the known owner');
  t.same(
    snapshot.states[0]?.signals.map((s) => [s.deviceId, s.event.kind === 'battery' ? s.event.level : -1]).sort(),
    [
      [phone, 2],
      [watch, 3],
    ].sort(),
  );
  t.equal(snapshot.states[0]?.version, 2, 'the version counts writes');
});
