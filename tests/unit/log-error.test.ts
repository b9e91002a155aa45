import { Writable } from 'node:stream';
import { DrizzleQueryError } from 'drizzle-orm/errors';
import { pino } from 'pino';
import t from 'tap';
import { errorForLog } from '../../core/log-error.js';

/** What a logger configured as the service's (bin/service.ts) writes for `{ err }`. */
function logged(err: unknown): string {
  let out = '';
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      out += chunk.toString();
      done();
    },
  });
  pino({ serializers: { err: errorForLog } }, sink).error({ err }, 'write-behind failed; will retry');
  return out;
}

t.test('a failed query is logged with its SQL, never its parameters', async (t) => {
  const signals = JSON.stringify([{ deviceId: 'd', event: { kind: 'location', lat: 48.8584, lon: 2.2945 } }]);
  const cause = Object.assign(new Error('duplicate key value violates unique constraint "owners_handle_unique"'), {
    code: '23505',
    detail: 'Key (handle)=(alice) already exists.',
    constraint: 'owners_handle_unique',
    table: 'owners',
    where: 'alice',
  });
  const error = new DrizzleQueryError('insert into "presence_state" ("owner_id", "signals") values ($1, $2)', ['0000', signals], cause);
  const line = logged(error);
  t.match(line, /Failed query: insert into \\"presence_state\\"/);
  t.notMatch(line, /48\.8584|2\.2945/, 'no location');
  t.notMatch(line, /alice/, 'no handle, from the detail or anywhere');
  t.notMatch(line, /params/);
  const parsed = JSON.parse(line) as { err: { cause: { code: string; constraint: string; table: string }; stack: string } };
  t.same([parsed.err.cause.code, parsed.err.cause.constraint, parsed.err.cause.table], ['23505', 'owners_handle_unique', 'owners'], 'what an operator needs stays');
  t.match(parsed.err.stack, /\n\s+at /, 'the frames stay');
});

t.test('other errors: message and code kept, extra properties dropped, length bounded, cycles cut', async (t) => {
  const error = Object.assign(new Error('x'.repeat(5000)), { code: 'ECONNREFUSED', token: 'eyJsecret' });
  const out = errorForLog(error);
  t.equal(out.code, 'ECONNREFUSED');
  t.ok(out.message.length <= 501);
  t.notMatch(JSON.stringify(out), /eyJsecret/);
  const looped = new Error('outer');
  (looped as Error & { cause?: unknown }).cause = looped;
  t.doesNotThrow(() => JSON.stringify(errorForLog(looped)), 'a cause cycle ends');
  t.same(errorForLog('Failed query: select 1\nparams: alice'), { type: 'string', message: 'Failed query: select 1' }, 'a message logged as a string is cleaned too');
  t.same(errorForLog(42), { type: 'number', message: '(not an Error)' });
});
