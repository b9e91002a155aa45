import { DrizzleQueryError } from 'drizzle-orm';
import t from 'tap';
import { isDatabaseUnavailable, isQueryReadTimeout, loggableDbError } from '../../core/db/db-error.js';
import { WriteBehind } from '../../core/db/write-behind.js';

/** A log that keeps what it was given. */
function recordingLog() {
  const lines: { level: string; obj: object; msg: string }[] = [];
  const at = (level: string) => (obj: object, msg: string) => void lines.push({ level, obj, msg });
  return { lines, log: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') } };
}

// What drizzle throws when PostgreSQL is down: the statement's parameters (owners' signals) ride along.
const refused = () => {
  const cause = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
  return new DrizzleQueryError('insert into presence_state (owner_id, signals)\n  select ... from jsonb_to_recordset($1::jsonb)', ['[{"latitude":48.85,"longitude":2.35}]'], cause);
};

t.test('a database error is logged with its cause and statement, never its parameters', async (t) => {
  const logged = loggableDbError(refused());
  t.same(logged, { message: 'connect ECONNREFUSED 127.0.0.1:5432', code: 'ECONNREFUSED', statement: 'insert into presence_state (owner_id, signals) select ... from jsonb_to_recordse' });
  t.notMatch(JSON.stringify(logged), /latitude/);
  t.same(loggableDbError(new Error('plain')), { message: 'plain' });
  t.same(loggableDbError('text'), { message: 'text' });
});

t.test('an unreachable database is told apart from a failing statement', async (t) => {
  const coded = (message: string, code: string) => Object.assign(new Error(message), { code });
  const wrapped = (cause: Error) => new DrizzleQueryError('select 1', [], cause);
  t.ok(isDatabaseUnavailable(refused()), 'connection refused');
  t.ok(isDatabaseUnavailable(wrapped(coded('terminating connection due to administrator command', '57P01'))), 'shutting down');
  t.ok(isDatabaseUnavailable(wrapped(coded('the database system is starting up', '57P03'))), 'starting up');
  t.ok(isDatabaseUnavailable(wrapped(coded('connection failure', '08006'))), 'SQLSTATE class 08');
  t.ok(isDatabaseUnavailable(wrapped(new Error('Connection terminated unexpectedly'))), "pg's ended connection");
  t.ok(isDatabaseUnavailable(new AggregateError([coded('connect ECONNREFUSED ::1:5432', 'ECONNREFUSED')], '')), 'every address refused');
  t.ok(isDatabaseUnavailable(wrapped(coded('canceling statement due to statement timeout', '57014'))), 'statement_timeout (a lock held elsewhere, a stall)');
  t.ok(isDatabaseUnavailable(wrapped(coded('canceling statement due to lock timeout', '55P03'))), 'lock_timeout');
  t.ok(isDatabaseUnavailable(wrapped(new Error('Query read timeout'))), "pg's query_timeout: the server did not answer");
  t.ok(isQueryReadTimeout(wrapped(new Error('Query read timeout'))) && isQueryReadTimeout(new Error('Query read timeout')), 'told apart: its connection must be closed');
  t.notOk(isQueryReadTimeout(wrapped(coded('canceling statement due to statement timeout', '57014'))), 'a cancelled statement leaves its connection usable');
  t.notOk(isDatabaseUnavailable(wrapped(coded('duplicate key value violates unique constraint', '23505'))), 'a constraint');
  t.notOk(isDatabaseUnavailable(wrapped(coded('syntax error', '42601'))), 'a bad statement');
  t.notOk(isDatabaseUnavailable(new Error('something else')));
  t.notOk(isDatabaseUnavailable(undefined));
});

t.test('an outage is logged when it starts, every repeatLogMs while it lasts, and when it ends', async (t) => {
  const { lines, log } = recordingLog();
  let now = 0;
  let down = true;
  let written = 0;
  const writer = new WriteBehind(
    'presence_state',
    1000,
    async () => {
      if (down) throw refused();
      written += 1;
    },
    log,
    { repeatLogMs: 30_000, now: () => now },
  );
  for (let i = 0; i < 40; i++) {
    await t.rejects(writer.flush(), /Failed query/, 'the caller still sees the failure');
    t.ok(writer.failing);
    now += 1000;
  }
  t.same(
    lines.map((l) => [l.level, l.msg]),
    [
      ['error', 'write-behind failed; holding the writes and retrying'],
      ['error', 'write-behind still failing; holding the writes and retrying'],
    ],
    '40 failed rounds, two lines',
  );
  t.match(lines[1]?.obj, { writer: 'presence_state', failures: 31, failingMs: 30_000, error: { code: 'ECONNREFUSED' } });
  t.notMatch(JSON.stringify(lines), /latitude/, 'no parameters in the logs');

  down = false;
  await writer.flush();
  t.equal(written, 1);
  t.notOk(writer.failing);
  t.match(lines[2], { level: 'info', msg: 'write-behind recovered; held writes stored', obj: { failures: 40, failingMs: 40_000 } });
  await writer.flush();
  t.equal(lines.length, 3, 'nothing more to say once it works');
});
