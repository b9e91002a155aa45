import t from 'tap';
import { HEAL_FIRST_DELAY_MS, MAX_OVERRIDES_BATCH, MAX_OWNER_RELOADS, OwnerReloads, type ReloadKind } from '../../core/owner-reloads.js';

/** Loaders that record what they were asked and finish when told to. */
function harness() {
  const calls: { kind: ReloadKind; ids: readonly string[]; finish: (error?: Error, applied?: boolean) => void }[] = [];
  const call = (kind: ReloadKind, ids: readonly string[]) =>
    new Promise<boolean>((resolve, reject) => calls.push({ kind, ids, finish: (error, applied = true) => (error ? reject(error) : resolve(applied)) }));
  const errors: string[] = [];
  const reloads = new OwnerReloads({ owner: (id) => call('owner', [id]), overrides: async (ids) => void (await call('overrides', ids)) }, (error, kind, ids) =>
    errors.push(`${kind} ${ids.join(',')}: ${String(error)}`),
  );
  const turn = () => new Promise((resolve) => setImmediate(resolve));
  /** Settles the call and lets its finally() run; `applied` false is a whole-owner snapshot thrown away. */
  const finish = async (index: number, error?: Error, applied?: boolean) => {
    calls[index]?.finish(error, applied);
    await turn();
  };
  /** What was asked so far: [kind, owner ids] per call. */
  const asked = () => calls.map((c) => [c.kind, c.ids]);
  return { reloads, calls, errors, turn, finish, asked };
}

t.test('overrides changed in one turn are read together; a whole-owner change starts at once', async (t) => {
  const { reloads, turn, asked } = harness();
  reloads.request('a', 'overrides');
  reloads.request('b', 'overrides');
  reloads.request('a', 'overrides');
  reloads.request('c', 'owner');
  t.same(asked(), [['owner', ['c']]], 'the whole owner at once; overrides wait for the end of the turn');
  await turn();
  t.same(asked(), [['owner', ['c']], ['overrides', ['a', 'b']]], 'one read for both owners, a once');
});

t.test('an owner asked for both gets the whole reload only', async (t) => {
  const { reloads, turn, asked } = harness();
  reloads.request('a', 'overrides');
  reloads.request('a', 'owner');
  await turn();
  t.same(asked(), [['owner', ['a']]]);
});

t.test('changes during a reload: one more reload after it, of the widest kind asked', async (t) => {
  const { reloads, calls, finish, turn, asked } = harness();
  reloads.request('a', 'overrides');
  await turn();
  t.equal(calls.length, 1);
  reloads.request('a', 'overrides');
  reloads.request('a', 'overrides');
  reloads.request('a', 'owner');
  reloads.request('a', 'overrides');
  await turn();
  t.equal(calls.length, 1, 'nothing new while one runs for the owner');
  t.equal(reloads.pending, 1 + 1, 'the running one and one to come');
  await finish(0);
  t.same(asked(), [['overrides', ['a']], ['owner', ['a']]], 'then once, the whole owner (asked for once among them)');
  await finish(1);
  t.equal(calls.length, 2, 'and no more');
  t.equal(reloads.pending, 0);
});

t.test('a failed reload is reported and frees the owner for the next change', async (t) => {
  const { reloads, calls, errors, finish, turn } = harness();
  reloads.request('a', 'overrides');
  reloads.request('b', 'overrides');
  await turn();
  await finish(0, new Error('connection lost'));
  t.same(errors, ['overrides a,b: Error: connection lost']);
  reloads.request('a', 'overrides');
  await turn();
  t.same(calls.at(-1)?.ids, ['a'], 'reloaded on the next change');
});

t.test('a burst is read in bounded batches', async (t) => {
  const { reloads, calls, turn } = harness();
  for (let i = 0; i < MAX_OVERRIDES_BATCH + 5; i++) reloads.request(`o${i}`, 'overrides');
  await turn();
  t.same(
    calls.map((c) => c.ids.length),
    [MAX_OVERRIDES_BATCH, 5],
  );
});

t.test('a whole-owner snapshot thrown away unapplied: the owner is read again', async (t) => {
  const { reloads, calls, finish, asked } = harness();
  reloads.request('a', 'owner');
  await finish(0, undefined, false);
  t.same(asked(), [['owner', ['a']], ['owner', ['a']]]);
  await finish(1);
  t.equal(calls.length, 2, 'once applied, no more');
  t.equal(reloads.pending, 0);
});

t.test('healing: an owner whose write outcome is unknown is read until a reload started after the failure succeeds', async (t) => {
  const { reloads, calls, errors, finish, turn, asked } = harness();
  reloads.request('a', 'overrides');
  await turn();
  t.equal(calls.length, 1, 'a reload of a runs');
  reloads.heal('a', 'overrides');
  t.ok(reloads.isHealing('a'));
  await finish(0);
  t.ok(reloads.isHealing('a'), 'the reload that was running may have read before the write: it does not count');
  await turn();
  t.same(asked(), [['overrides', ['a']], ['overrides', ['a']]], 'one more follows it');
  await finish(1, new Error('timeout'));
  t.equal(errors.length, 1, 'the failure is reported');
  t.ok(reloads.isHealing('a'));
  t.equal(calls.length, 2, 'the retry waits');
  await new Promise((resolve) => setTimeout(resolve, HEAL_FIRST_DELAY_MS + 50));
  await turn();
  t.equal(calls.length, 3, 'then tries again');
  await finish(2);
  t.notOk(reloads.isHealing('a'), 'healed once a reload succeeded');
  reloads.request('a', 'overrides');
  await turn();
  await finish(3, new Error('again'));
  await new Promise((resolve) => setTimeout(resolve, HEAL_FIRST_DELAY_MS * 2 + 50));
  t.equal(calls.length, 4, 'an ordinary reload that fails is not retried');
  reloads.heal('b', 'overrides');
  await turn();
  reloads.close();
  await finish(4, new Error('down'));
  await new Promise((resolve) => setTimeout(resolve, HEAL_FIRST_DELAY_MS + 50));
  t.equal(calls.length, 5, 'nothing is retried after close');
});

t.test('healing the whole owner: an overrides reload does not heal it, a whole-owner one does; a failed retry reads the whole owner again', async (t) => {
  const { reloads, calls, finish, turn, asked } = harness();
  reloads.heal('a', 'overrides');
  await turn();
  reloads.heal('a', 'owner');
  t.same(asked(), [['overrides', ['a']]], 'the overrides reload runs; the whole owner waits for it');
  await finish(0);
  t.ok(reloads.isHealing('a'), 'reading the overrides does not heal a whole-owner doubt');
  t.same(asked(), [['overrides', ['a']], ['owner', ['a']]], 'then the whole owner is read');
  await finish(1, new Error('down'));
  t.ok(reloads.isHealing('a'));
  await new Promise((resolve) => setTimeout(resolve, HEAL_FIRST_DELAY_MS + 50));
  t.equal(calls.at(-1)?.kind, 'owner', 'the retry reads the whole owner');
  await finish(2);
  t.notOk(reloads.isHealing('a'), 'healed');
});

t.test('whole-owner reloads: at most MAX_OWNER_RELOADS at once, the rest in the order asked; a waiting owner needs nothing more', async (t) => {
  const { reloads, calls, finish, turn } = harness();
  const owners = Array.from({ length: MAX_OWNER_RELOADS + 3 }, (_, i) => `o${i}`);
  for (const id of owners) reloads.request(id, 'owner');
  t.equal(calls.length, MAX_OWNER_RELOADS, 'no more than the cap start');
  t.equal(reloads.pending, owners.length);
  const waiting = owners[MAX_OWNER_RELOADS] as string;
  reloads.request(waiting, 'overrides');
  reloads.request(waiting, 'owner');
  await turn();
  t.equal(calls.length, MAX_OWNER_RELOADS, 'an owner waiting for its whole reload gets no overrides read of its own, nor a second place');
  await finish(0);
  t.same(calls.at(-1), { ...calls.at(-1), kind: 'owner', ids: [waiting] }, 'a place freed: the first waiting owner starts');
  await finish(1);
  await finish(2);
  t.same(calls.slice(-3).map((c) => c.ids[0]), owners.slice(MAX_OWNER_RELOADS), 'in the order asked');
  for (let i = 3; i < calls.length; i++) await finish(i);
  t.equal(calls.length, owners.length, 'each owner once');
  t.equal(reloads.pending, 0);
});
