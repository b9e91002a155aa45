import pg from 'pg';
import t from 'tap';
import { waitFor } from '../helpers/env.js';
import { openStream } from '../helpers/sse.js';
import { addRule, addWatcher, groupEnv, ownerToken, provision, startTestService, testConfig, type TestService } from '../helpers/service.js';

/**
 * Tokens revoked by subject (issue 7: "a lost phone"; SECURITY.md listed
 * tokens as not revocable one by one). Tokens are not stored, so a token
 * nobody can name is reached by its time of issue: every token of the
 * owner or watcher issued up to the revocation is refused, on the cached
 * read path too, on every process of a group (the control channel), and
 * after a restart; open streams end at once; tokens issued afterwards work.
 * Two service processes share one PostgreSQL and one broker, as a group;
 * the embedded defaults are tested at the end.
 */
const group = await groupEnv(t, 'tr');
const databaseUrl = group.DATABASE_URL;
const a = await startTestService(t, await testConfig(t, group));
const b = await startTestService(t, await testConfig(t, group));

await provision(a, 'alice');
await provision(a, 'bob');
const walt = await addWatcher(a, 'Walt');
await addRule(a, 'alice', walt.id, 'allow');
await waitFor(async () => (await b.api('GET', '/v1/presence/alice', { token: walt.token })).status === 200 || undefined, 'B to know the rule');

const status = async (service: TestService, path: string, token: string) => (await service.api('GET', path, { token })).status;
const db = new pg.Client({ connectionString: databaseUrl });
await db.connect();
t.teardown(() => db.end());
/** The revocation instant stored for the owner (by handle) or watcher (by id). */
const storedCutoff = async (table: 'owners' | 'watchers', column: 'handle' | 'id', value: string) =>
  ((await db.query(`select tokens_not_before from ${table} where ${column} = $1`, [value])).rows[0] as { tokens_not_before: Date }).tokens_not_before.getTime();
/** Waits until the second after the stored revocation instant has begun: tokens carry their issue time in whole seconds. */
const pastCutoff = async (cutoff: number) => {
  const wait = Math.floor(cutoff / 1000) * 1000 + 1000 - Date.now() + 20;
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
};

t.test('an owner signs out everywhere: every token of theirs stops working, on both processes, and a new one works', async (t) => {
  const first = await ownerToken(a, 'alice');
  const second = await ownerToken(a, 'alice');
  const bobs = await ownerToken(a, 'bob');
  for (const service of [a, b]) {
    t.equal(await status(service, '/v1/me/devices', first), 200);
    t.equal(await status(service, '/v1/presence/alice', second), 200, 'a read, so the token is verified and cached');
    t.equal(await status(service, '/v1/presence/alice', second), 200);
  }

  const readOnly = ((await (await a.api('POST', '/v1/admin/tokens', { token: a.adminToken, body: { kind: 'owner', subject: 'alice', scopes: ['presence:read'] } })).json()) as { token: string }).token;
  t.equal((await a.api('POST', '/v1/me/tokens/revoke', { token: readOnly })).status, 403, "an owner's read-only token (a dashboard) cannot sign the owner out");
  t.equal(await status(a, '/v1/me/devices', first), 200, 'nothing revoked by the refusal');

  const revokedAt = Date.now();
  const revoked = await a.api('POST', '/v1/me/tokens/revoke', { token: first });
  t.equal(revoked.status, 204);
  for (const token of [first, second]) {
    t.equal(await status(a, '/v1/me/devices', token), 401, 'refused where it was revoked');
    t.equal(await status(a, '/v1/presence/alice', token), 401, 'on the cached read path too');
    await waitFor(async () => (await status(b, '/v1/presence/alice', token)) === 401 || undefined, 'the other process to refuse it');
    t.equal(await status(b, '/v1/me/devices', token), 401, 'and on the other process');
  }
  t.equal(await status(a, '/v1/me/devices', bobs), 200, "another owner's tokens are untouched");
  t.equal(await status(b, '/v1/presence/alice', walt.token), 200, "and so are the watchers'");
  const body = (await (await a.api('GET', '/v1/me/devices', { token: first })).json()) as { code: string };
  t.equal(body.code, 'unauthorized', 'the stable code');

  await pastCutoff(await storedCutoff('owners', 'handle', 'alice'));
  const fresh = await ownerToken(a, 'alice');
  t.equal(await status(a, '/v1/me/devices', fresh), 200, 'a token issued afterwards works');
  t.equal(await status(b, '/v1/me/devices', fresh), 200, 'on both processes');

  // Stored: a process started later refuses the old tokens too.
  const c = await startTestService(t, await testConfig(t, group));
  t.equal(await status(c, '/v1/me/devices', first), 401, 'after a restart');
  t.equal(await status(c, '/v1/me/devices', fresh), 200);
  await c.close();

  // Revoking again moves the instant forward, never back.
  const stored = () => storedCutoff('owners', 'handle', 'alice');
  const before = await stored();
  t.ok(before >= revokedAt - 1000 && before <= Date.now(), 'the instant stored');
  t.equal((await a.api('POST', '/v1/admin/tokens/revoke', { token: a.adminToken, body: { kind: 'owner', subject: 'alice' } })).status, 204, 'by handle, as an admin');
  t.ok((await stored()) >= before);
  t.equal(await status(a, '/v1/me/devices', fresh), 401, 'the newer token is refused now too');
});

t.test("an admin revokes a watcher's tokens: refused on both processes, its open streams end at once, its webhooks go", async (t) => {
  const token = (await (await a.api('POST', '/v1/admin/tokens', { token: a.adminToken, body: { kind: 'watcher', subject: walt.id } })).json()) as { token: string };
  // A webhook registered with the token (a leaked one would register the thief's URL).
  const hook = await a.api('POST', '/v1/webhooks', { token: token.token, body: { handle: 'alice', url: 'http://127.0.0.1:9/hook' } });
  t.equal(hook.status, 201);
  const onA = await openStream(`${a.httpUrl}/v1/presence/alice/stream`, token.token);
  const onB = await openStream(`${b.httpUrl}/v1/presence/alice/stream`, token.token);
  t.teardown(() => {
    onA.close();
    onB.close();
  });
  await onA.nth(1);
  await onB.nth(1);
  t.equal((await a.api('POST', '/v1/admin/tokens/revoke', { token: a.adminToken, body: { kind: 'watcher', subject: walt.id } })).status, 204);
  t.equal((await db.query('select count(*)::int as n from webhooks where watcher_id = $1', [walt.id])).rows[0].n, 0, 'the webhook registered with the revoked token is removed');
  await waitFor(() => onA.ended() || undefined, 'the stream on A to end');
  await waitFor(() => onB.ended() || undefined, 'the stream on B to end');
  t.equal(await status(a, '/v1/presence/alice', token.token), 401);
  t.equal(await status(b, '/v1/presence/alice', walt.token), 401, 'the older token too');
  t.equal((await a.api('GET', '/v1/presence/alice/stream', { token: token.token, headers: { accept: 'text/event-stream' } })).status, 401, 'no new stream');

  await pastCutoff(await storedCutoff('watchers', 'id', walt.id));
  const fresh = (await (await a.api('POST', '/v1/admin/tokens', { token: a.adminToken, body: { kind: 'watcher', subject: walt.id } })).json()) as { token: string };
  t.equal(await status(b, '/v1/presence/alice', fresh.token), 200, 'a new token for the watcher works, and the rule still grants');
  t.same(((await (await a.api('GET', '/v1/webhooks', { token: fresh.token })).json()) as { webhooks: unknown[] }).webhooks, [], 'and lists no webhook');
  // A watcher may sign itself out everywhere too.
  t.equal((await b.api('POST', '/v1/me/tokens/revoke', { token: fresh.token })).status, 204);
  t.equal(await status(b, '/v1/presence/alice', fresh.token), 401);
});

t.test('bad requests get stable errors and change nothing', async (t) => {
  const admin = { token: a.adminToken };
  const cases: [unknown, number, string][] = [
    [{ kind: 'watcher', subject: '00000000-0000-4000-8000-000000000000' }, 404, 'not_found'],
    [{ kind: 'watcher', subject: 'not-a-uuid' }, 404, 'not_found'],
    [{ kind: 'owner', subject: 'nobody' }, 404, 'not_found'],
    [{ kind: 'device', subject: 'x' }, 400, 'invalid_request'],
    [{ kind: 'owner' }, 400, 'invalid_request'],
    [{ kind: 'owner', subject: 'bob', extra: 1 }, 400, 'invalid_request'],
  ];
  for (const [body, code, error] of cases) {
    const response = await a.api('POST', '/v1/admin/tokens/revoke', { ...admin, body: body as object });
    t.equal(response.status, code, JSON.stringify(body));
    t.equal(((await response.json()) as { code: string }).code, error);
  }
  t.equal((await a.api('POST', '/v1/me/tokens/revoke', {})).status, 401, 'no token');
  t.equal((await a.api('POST', '/v1/admin/tokens/revoke', { token: await ownerToken(a, 'bob'), body: { kind: 'owner', subject: 'alice' } })).status, 403, 'an owner is not an admin');
  const bob = await ownerToken(a, 'bob');
  t.equal(await status(a, '/v1/me/devices', bob), 200, "bob's tokens untouched by all of it");
});

t.test('the embedded defaults: the same, with the embedded database', async (t) => {
  const service = await startTestService(t, await testConfig(t));
  await provision(service, 'carol');
  const token = await ownerToken(service, 'carol');
  t.equal(await status(service, '/v1/me/devices', token), 200);
  t.equal((await service.api('POST', '/v1/me/tokens/revoke', { token })).status, 204);
  t.equal(await status(service, '/v1/me/devices', token), 401);
});
