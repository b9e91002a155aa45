import t from 'tap';
import { AppError } from '../../core/errors.js';
import { GroupCommit } from '../../core/group-commit.js';

/** Group commit: batching, one row per batch, failure isolation, the bound. */
interface Item {
  readonly key: string;
  readonly value: number;
}

function recorder(fail?: (batch: readonly Item[]) => boolean) {
  const batches: Item[][] = [];
  let release: (() => void) | undefined;
  let gate: Promise<void> | undefined;
  const write = async (batch: readonly Item[]) => {
    batches.push([...batch]);
    if (gate) await gate;
    if (fail?.(batch)) throw new Error('database down');
    return batch.map((i) => i.value * 10);
  };
  return {
    batches,
    write,
    hold() {
      gate = new Promise((resolve) => (release = resolve));
    },
    release() {
      gate = undefined;
      release?.();
    },
  };
}

t.test('requests of one event-loop turn share a batch; each gets its own result', async (t) => {
  const r = recorder();
  const commit = new GroupCommit(r.write, (i: Item) => i.key, { maxBatch: 100, maxQueued: 100 });
  const results = await Promise.all([1, 2, 3].map((v) => commit.submit({ key: `k${v}`, value: v })));
  t.same(results, [10, 20, 30]);
  t.equal(r.batches.length, 1, 'one write for three requests');
  t.same(commit.stats, { batches: 1, items: 3 });
});

t.test('while a batch is written the next one fills, and is written right after', async (t) => {
  const r = recorder();
  const commit = new GroupCommit(r.write, (i: Item) => i.key, { maxBatch: 100, maxQueued: 100 });
  r.hold();
  const first = commit.submit({ key: 'a', value: 1 });
  await new Promise((resolve) => setImmediate(resolve));
  t.equal(r.batches.length, 1, 'the first batch is being written');
  const later = [2, 3, 4].map((v) => commit.submit({ key: `k${v}`, value: v }));
  t.equal(commit.depth, 3, 'queued behind it');
  r.release();
  t.same(await Promise.all([first, ...later]), [10, 20, 30, 40]);
  t.same(
    r.batches.map((b) => b.map((i) => i.value)),
    [[1], [2, 3, 4]],
  );
});

t.test('one key never appears twice in a batch, and order per key is kept', async (t) => {
  const r = recorder();
  const commit = new GroupCommit(r.write, (i: Item) => i.key, { maxBatch: 100, maxQueued: 100 });
  await Promise.all([commit.submit({ key: 'x', value: 1 }), commit.submit({ key: 'x', value: 2 }), commit.submit({ key: 'y', value: 3 })]);
  t.same(
    r.batches.map((b) => b.map((i) => i.value)),
    [[1, 3], [2]],
  );
});

t.test('maxBatch splits a burst', async (t) => {
  const r = recorder();
  const commit = new GroupCommit(r.write, (i: Item) => i.key, { maxBatch: 2, maxQueued: 100 });
  await Promise.all([1, 2, 3, 4, 5].map((v) => commit.submit({ key: `k${v}`, value: v })));
  t.same(
    r.batches.map((b) => b.length),
    [2, 2, 1],
  );
});

t.test('a failed batch rejects its own items only; the next batch is written', async (t) => {
  const r = recorder((batch) => batch.some((i) => i.value === 1));
  const commit = new GroupCommit(r.write, (i: Item) => i.key, { maxBatch: 1, maxQueued: 100 });
  const outcomes = await Promise.allSettled([commit.submit({ key: 'a', value: 1 }), commit.submit({ key: 'b', value: 2 })]);
  t.match(outcomes[0], { status: 'rejected', reason: { message: 'database down' } });
  t.same(outcomes[1], { status: 'fulfilled', value: 20 });
});

t.test('a full queue refuses at once with unavailable (back pressure)', async (t) => {
  const r = recorder();
  const commit = new GroupCommit(r.write, (i: Item) => i.key, { maxBatch: 1, maxQueued: 2 });
  r.hold();
  const first = commit.submit({ key: 'a', value: 1 });
  await new Promise((resolve) => setImmediate(resolve));
  const queued = [commit.submit({ key: 'b', value: 2 }), commit.submit({ key: 'c', value: 3 })];
  const refused = await commit.submit({ key: 'd', value: 4 }).catch((e: unknown) => e);
  t.ok(refused instanceof AppError);
  t.equal((refused as AppError).code, 'unavailable');
  r.release();
  t.same(await Promise.all([first, ...queued]), [10, 20, 30], 'what was accepted is still written');
});

t.test('a write returning the wrong number of results fails its batch', async (t) => {
  const commit = new GroupCommit(async () => [1], (i: Item) => i.key, { maxBatch: 10, maxQueued: 10 });
  const outcomes = await Promise.allSettled([commit.submit({ key: 'a', value: 1 }), commit.submit({ key: 'b', value: 2 })]);
  t.same(
    outcomes.map((o) => o.status),
    ['rejected', 'rejected'],
  );
});
