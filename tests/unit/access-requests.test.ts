import t from 'tap';
import { Accounts } from '../../api/accounts.js';
import { AccessRequestBuffer, type AccessRequestIntent } from '../../core/access-requests.js';
import { Directory } from '../../core/directory.js';
import { AppError } from '../../core/errors.js';
import { PresenceHub } from '../../core/presence-hub.js';
import { RuleBook } from '../../policy/rule-book.js';
import { ruleBodySchema } from '../../policy/rule.js';

const [OWNER, A, B] = ['00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000b1', '00000000-0000-4000-8000-0000000000b2'];
const ask = (watcherId: string, at: number, message?: string): AccessRequestIntent => ({ ownerId: OWNER, watcherId, intent: 'ask', message, at });

t.test('the buffer coalesces per pair: the later request wins and keeps an earlier message it lacks', async (t) => {
  const buffer = new AccessRequestBuffer();
  buffer.submit(ask(A, 1, 'It is me'));
  buffer.submit({ ...ask(A, 2), intent: 'allowed' });
  buffer.submit(ask(B, 3, 'hi'));
  buffer.submit(ask(B, 4, 'hello'));
  t.equal(buffer.size, 2);
  t.same(buffer.take(), [
    { ownerId: OWNER, watcherId: A, intent: 'allowed', message: 'It is me', at: 2 },
    { ownerId: OWNER, watcherId: B, intent: 'ask', message: 'hello', at: 4 },
  ]);
  t.equal(buffer.size, 2, 'being written');
  buffer.settled();
  t.equal(buffer.size, 0);
});

t.test('a failed write goes back under what arrived since, dropping nothing; new pairs wait while the bound is taken', async (t) => {
  const buffer = new AccessRequestBuffer(4);
  const B3 = '00000000-0000-4000-8000-0000000000b3';
  buffer.submit(ask(A, 1, 'first'));
  buffer.submit(ask(B, 2));
  buffer.submit(ask(B3, 3));
  t.ok(buffer.submit(ask(A, 4)), 'a pair already held updates');
  const taken = buffer.take();
  t.ok(buffer.submit(ask(A, 5)), 'while they are written, A asks again (one place left)');
  t.ok(buffer.full, 'what is being written still counts');
  t.notOk(buffer.submit(ask('00000000-0000-4000-8000-0000000000b4', 6)), 'a new pair does not fit');
  // The write stored B3 and failed after it: A and B go back.
  buffer.putBack(taken.filter((r) => r.watcherId !== B3));
  t.equal(buffer.size, 2);
  t.notOk(buffer.full);
  t.same(
    buffer.take().map((r) => [r.watcherId, r.at, r.message]),
    [
      [A, 5, 'first'],
      [B, 2, undefined],
    ],
    'the newer request for A wins, keeping the message it lacked',
  );
});

t.test('what a write has taken counts against the bound until it ends; an erased owner is dropped', async (t) => {
  const buffer = new AccessRequestBuffer(2);
  buffer.submit(ask(A, 1));
  buffer.submit(ask(B, 2));
  const taken = buffer.take();
  t.ok(buffer.full, 'being written: still full');
  t.notOk(buffer.submit(ask('00000000-0000-4000-8000-0000000000b3', 3)), 'so a new pair waits, and a failing database cannot grow the buffer round after round');
  buffer.putBack(taken);
  t.equal(buffer.size, 2);
  buffer.take();
  buffer.settled();
  t.notOk(buffer.full, 'written: room again');
  buffer.submit(ask(A, 4));
  buffer.submit({ ...ask(A, 5), ownerId: '00000000-0000-4000-8000-0000000000a2' });
  buffer.forgetOwner(OWNER);
  t.same(buffer.take().map((r) => r.ownerId), ['00000000-0000-4000-8000-0000000000a2']);
});

/**
 * The answer is decided from memory for a known owner as for an unknown
 * one: the repository is not there at all (any use of it throws), so the
 * known owner's path cannot wait on the database that the unknown one skips.
 */
t.test('an access request is answered without storage, the same for an unknown owner and one who has not answered', async (t) => {
  const directory = new Directory();
  directory.putOwner({ id: OWNER, handle: 'alice' });
  for (const id of [A, B]) directory.putWatcher({ id, kind: 'app', name: id, domain: undefined, revoked: false });
  const ruleBook = new RuleBook();
  ruleBook.replace(OWNER, [{ ...ruleBodySchema.parse({ conditions: { identity: { watchers: [B] } }, actions: { subHandling: 'block' } }), id: 'r1' }]);
  const submitted: AccessRequestIntent[] = [];
  const queue = {
    full: false,
    submit: (request: AccessRequestIntent) => submitted.push(request) > 0,
    flush: async () => undefined,
    forgetOwner: () => undefined,
  };
  const unused = undefined as never;
  const accounts = new Accounts(unused, directory, ruleBook, unused, 'issuer', 'example.com', () => 1_000, new PresenceHub({ offlineAfterMs: 60_000 }), () => 'digest', queue, async () => undefined);

  t.same(accounts.requestAccess('alice', A, 'It is me'), { status: 'pending' });
  t.same(accounts.requestAccess('nobody', A, 'It is me'), { status: 'pending' });
  t.same(submitted, [{ ownerId: OWNER, watcherId: A, intent: 'ask', message: 'It is me', at: 1_000 }], 'only the known owner has a row to write');
  t.throws(() => accounts.requestAccess('alice', B, undefined), new AppError('request_refused'), 'a block rule refuses (a known choice)');

  ruleBook.replace(OWNER, [{ ...ruleBodySchema.parse({ conditions: { identity: { watchers: [A] } }, actions: { subHandling: 'allow' } }), id: 'r2' }]);
  t.same(accounts.requestAccess('alice', A, undefined), { status: 'active' });
  t.equal(submitted.at(-1)?.intent, 'allowed');

  queue.full = true;
  for (const handle of ['alice', 'nobody']) t.throws(() => accounts.requestAccess(handle, A, undefined), { code: 'unavailable' }, `a full buffer refuses ${handle} alike`);
});
