import t from 'tap';
import { Directory } from '../../core/directory.js';
import { TokenRevocations } from '../../core/token-revocations.js';

/**
 * Reloads of the revocations apply in the order they were asked for: a
 * read that started before a revocation committed, and answered late,
 * cannot bring the revoked token back after a later read applied it.
 */
t.test('a slow older reload never overwrites a newer one', async (t) => {
  const stored: string[] = [];
  const answers: ((value: { tokenIds: string[]; adminCutoffs: [string, number][] }) => void)[] = [];
  const store = {
    loadRevocations: () => {
      const snapshot = [...stored];
      return new Promise<{ tokenIds: string[]; adminCutoffs: [string, number][] }>((resolve) => answers.push(() => resolve({ tokenIds: snapshot, adminCutoffs: [] })));
    },
    revokeTokenId: async (id: string) => {
      stored.push(id);
      return [];
    },
    revokeAdminSubject: async (_subject: string, at: Date) => at,
  };
  const directory = new Directory();
  const revocations = new TokenRevocations(store, directory, () => 0);
  const first = revocations.reload();
  const second = revocations.revokeTokenId('j1');
  await new Promise((resolve) => setImmediate(resolve));
  t.equal(answers.length, 1, 'the second read waits for the first');
  answers[0]?.({ tokenIds: [], adminCutoffs: [] });
  await first;
  await new Promise((resolve) => setImmediate(resolve));
  t.equal(answers.length, 2);
  answers[1]?.({ tokenIds: [], adminCutoffs: [] });
  await second;
  t.ok(directory.tokenIdRevoked('j1'), 'the newest read is what holds');
});

t.test('a failed reload does not stop the next', async (t) => {
  let fail = true;
  const store = {
    loadRevocations: async () => {
      if (fail) throw new Error('database down');
      return { tokenIds: ['j9'], adminCutoffs: [] as [string, number][] };
    },
    revokeTokenId: async () => [],
    revokeAdminSubject: async (_subject: string, at: Date) => at,
  };
  const directory = new Directory();
  const revocations = new TokenRevocations(store, directory, () => 0);
  await t.rejects(revocations.reload(), /database down/);
  fail = false;
  await revocations.reload();
  t.ok(directory.tokenIdRevoked('j9'));
});
