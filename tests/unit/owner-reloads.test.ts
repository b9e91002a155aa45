import t from 'tap';
import { MAX_OVERRIDES_BATCH, OwnerReloads, type ReloadKind } from '../../core/owner-reloads.js';

/** Loaders that record what they were asked and finish when told to. */
function harness() {
  const calls: { kind: ReloadKind; ids: readonly string[]; finish: (error?: Error) => void }[] = [];
  const call = (kind: ReloadKind, ids: readonly string[]) =>
    new Promise<void>((resolve, reject) => calls.push({ kind, ids, finish: (error) => (error ? reject(error) : resolve()) }));
  const errors: string[] = [];
  const reloads = new OwnerReloads({ owner: (id) => call('owner', [id]), overrides: (ids) => call('overrides', ids) }, (error, kind, ids) =>
    errors.push(`${kind} ${ids.join(',')}: ${String(error)}`),
  );
  const turn = () => new Promise((resolve) => setImmediate(resolve));
  /** Settles the call and lets its finally() run. */
  const finish = async (index: number, error?: Error) => {
    calls[index]?.finish(error);
    await turn();
  };
  return { reloads, calls, errors, turn, finish };
}

t.test('overrides changed in one turn are read together; a whole-owner change starts at once', async (t) => {
  const { reloads, calls, turn } = harness();
  reloads.request('a', 'overrides');
  reloads.request('b', 'overrides');
  reloads.request('a', 'overrides');
  reloads.request('c', 'owner');
  t.same(calls.map((c) => [c.kind, c.ids]), [['owner', ['c']]], 'the whole owner at once; overrides wait for the end of the turn');
  await turn();
  t.same(calls.map((c) => [c.kind, c.ids]), [['owner', ['c']], ['overrides', ['a', 'b']]], 'one read for both owners, a once');
});

t.test('an owner asked for both gets the whole reload only', async (t) => {
  const { reloads, calls, turn } = harness();
  reloads.request('a', 'overrides');
  reloads.request('a', 'owner');
  await turn();
  t.same(calls.map((c) => [c.kind, c.ids]), [['owner', ['a']]]);
});

t.test('changes during a reload: one more reload after it, of the widest kind asked', async (t) => {
  const { reloads, calls, finish, turn } = harness();
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
  t.same(calls.map((c) => [c.kind, c.ids]), [['overrides', ['a']], ['owner', ['a']]], 'then once, the whole owner (asked for once among them)');
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
