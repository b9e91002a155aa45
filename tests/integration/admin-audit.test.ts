import { createServer } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import pg from 'pg';
import t from 'tap';
import { issueToken } from '../../core/identity/tokens.js';
import { waitFor } from '../helpers/env.js';
import { openStream } from '../helpers/sse.js';
import { addRule, addWatcher, groupEnv, ownerToken, provision, startTestService, testConfig, type TestService } from '../helpers/service.js';

/**
 * The operators' audit trail and admin token revocation (issue 7, "a
 * careless operator"; SECURITY.md said admin tokens were powerful and
 * unaudited). Every admin request that passes authentication is recorded
 * before it runs, and refused (503, nothing done) if it cannot be; the
 * owner it concerned sees it and finds it in their export; their erasure
 * leaves the trail without them. One admin token can be revoked by its id,
 * an operator's by subject, on every process of a group and after a
 * restart; admin tokens made to live longer than ADMIN_TOKEN_MAX_SECONDS
 * are refused. Two processes share one PostgreSQL and one broker.
 */
const group = await groupEnv(t, 'aa');
const databaseUrl = group.DATABASE_URL;
const a = await startTestService(t, await testConfig(t, group));
const b = await startTestService(t, await testConfig(t, group));

const alice = await provision(a, 'alice');
await provision(a, 'bob');
const walt = await addWatcher(a, 'Walt');
const aliceToken = await ownerToken(a, 'alice');
const bobToken = await ownerToken(a, 'bob');

const db = new pg.Client({ connectionString: databaseUrl });
await db.connect();
t.teardown(() => db.end());

interface Entry {
  at: string;
  operator: string;
  tokenId: string | null;
  tokenExpiresAt: string;
  method: string;
  route: string;
  owner: string | null;
  watcherId: string | null;
  status: number | null;
}
const jtiOf = (token: string) => (JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as { jti: string }).jti;
const adminToken = async (service: TestService, subject: string, ttlSeconds = 600, now = Date.now()) =>
  (await issueToken(service.signingKey, service.config.tokenIssuer, { kind: 'admin', subject, scopes: ['admin'], ttlSeconds }, now)).token;
const page = async (service: TestService, path: string, token: string) => {
  const response = await service.api('GET', path, { token });
  return { status: response.status, body: (await response.json()) as { next?: string; entries: Entry[]; code?: string } };
};
const rows = async () => ((await db.query('select count(*)::int as n from admin_actions')).rows[0] as { n: number }).n;
/** Waits until the second after `at` (ms) has begun: tokens carry their issue time in whole seconds. */
const pastSecondOf = async (at: number) => {
  const wait = Math.floor(at / 1000) * 1000 + 1000 - Date.now() + 20;
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
};

t.test("what operators did concerning an owner: recorded before it ran, with its status, and shown to that owner only", async (t) => {
  t.equal((await a.api('GET', '/v1/admin/owners/alice/presence', { token: a.adminToken })).status, 200, 'an operator reads her presence');
  t.equal((await a.api('GET', '/v1/admin/owners/nobody/presence', { token: a.adminToken })).status, 404);

  const mine = await waitFor(async () => {
    const p = await page(a, '/v1/me/admin-actions', aliceToken);
    return p.body.entries.some((e) => e.route === '/v1/admin/owners/:handle/presence' && e.status === 200) && p;
  }, 'the status of the read');
  t.equal(mine.status, 200);
  const read = mine.body.entries[0];
  t.match(read, { operator: 'test', tokenId: jtiOf(a.adminToken), method: 'GET', route: '/v1/admin/owners/:handle/presence', owner: 'alice', status: 200 }, 'newest first: who, with which token, what, the outcome');
  t.ok(Date.parse(read?.tokenExpiresAt ?? '') > Date.now(), "the token's expiry");
  const routes = mine.body.entries.map((e) => `${e.method} ${e.route}`);
  for (const expected of ['POST /v1/admin/owners', 'POST /v1/admin/devices', 'POST /v1/admin/tokens']) t.ok(routes.includes(expected), `provisioning is there: ${expected}`);
  t.notOk(JSON.stringify(mine.body).includes(alice.device.id), 'route patterns, never the values in the URL or body');
  t.ok(mine.body.entries.every((e) => e.owner === 'alice'), "nothing of anyone else's");

  const bobs = await page(a, '/v1/me/admin-actions', bobToken);
  t.notOk(bobs.body.entries.some((e) => e.route === '/v1/admin/owners/:handle/presence'), "bob does not see what concerned alice");
  t.equal((await page(b, '/v1/me/admin-actions', aliceToken)).body.entries.length, mine.body.entries.length, 'the other process shows the same trail');

  const before = await rows();
  t.equal((await a.api('GET', '/v1/admin/owners/alice/presence', { token: aliceToken })).status, 403, "an owner's token on an admin route");
  t.equal((await a.api('GET', '/v1/admin/owners/alice/presence', { token: 'not-a-token' })).status, 401);
  t.equal((await a.api('GET', '/v1/admin/owners/alice/presence')).status, 401);
  t.equal(await rows(), before, 'refused callers leave no row (anyone could fill the trail)');
  t.equal((await a.api('GET', '/v1/me/admin-actions', { token: walt.token })).status, 403, 'a watcher has no trail to read');
});

t.test('the operators page through every action, by owner and since an instant', async (t) => {
  const all = await page(a, '/v1/admin/actions?limit=2', a.adminToken);
  t.equal(all.status, 200);
  t.equal(all.body.entries.length, 2);
  t.match(all.body.entries[0], { route: '/v1/admin/actions', method: 'GET', status: null }, 'this very request is the newest, still running');
  const seen = new Set<string>();
  let cursor: string | undefined;
  let pages = 0;
  do {
    const p = await page(a, `/v1/admin/actions?owner=alice&limit=3${cursor ? `&cursor=${cursor}` : ''}`, a.adminToken);
    t.equal(p.status, 200);
    for (const e of p.body.entries) {
      t.equal(e.owner, 'alice');
      seen.add(JSON.stringify(e));
    }
    cursor = p.body.next;
    pages += 1;
  } while (cursor !== undefined && pages < 50);
  const direct = (await db.query("select count(*)::int as n from admin_actions where owner_id = $1", [alice.owner.id])).rows[0] as { n: number };
  // Each page request is itself an action concerning alice, recorded after the first page was read.
  t.equal(seen.size, direct.n - (pages - 1), "every one of alice's actions, each once, across pages");
  t.ok(pages > 1, 'more than one page');

  const later = await page(a, `/v1/admin/actions?since=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`, a.adminToken);
  t.same(later.body.entries, [], 'nothing since a minute from now');
  t.equal((await page(a, '/v1/admin/actions?since=0000-01-01T00:00:00Z&limit=1', a.adminToken)).status, 200, 'a year PostgreSQL cannot read is no 500');
  t.equal((await page(a, '/v1/admin/actions?since=yesterday', a.adminToken)).body.code, 'invalid_request');
  t.equal((await page(a, '/v1/admin/actions?cursor=bm9wZQ', a.adminToken)).body.code, 'invalid_request');
  t.equal((await page(a, '/v1/admin/actions?owner=nobody', a.adminToken)).status, 404);
});

t.test('an action that cannot be recorded is not run', async (t) => {
  const watchers = async () => ((await db.query('select count(*)::int as n from watchers')).rows[0] as { n: number }).n;
  const before = await watchers();
  await db.query('alter table admin_actions add constraint refuse_all check (false) not valid');
  try {
    const refused = await a.api('POST', '/v1/admin/watchers', { token: a.adminToken, body: { kind: 'app', name: 'Unrecorded' } });
    t.equal(refused.status, 503);
    t.equal(((await refused.json()) as { code: string }).code, 'unavailable', 'the stable code');
    t.equal(await watchers(), before, 'nothing was done');
  } finally {
    await db.query('alter table admin_actions drop constraint refuse_all');
  }
  t.equal((await a.api('POST', '/v1/admin/watchers', { token: a.adminToken, body: { kind: 'app', name: 'Recorded' } })).status, 201, 'recorded again, done again');

  const doc = (await (await a.api('GET', '/openapi.json')).json()) as { paths: Record<string, Record<string, { responses: Record<string, unknown> }>> };
  for (const [path, operations] of Object.entries(doc.paths).filter(([path]) => path.startsWith('/v1/admin/'))) {
    for (const [method, op] of Object.entries(operations)) t.ok('503' in op.responses, `${method.toUpperCase()} ${path} documents the 503`);
  }
});

t.test('one admin token revoked by its id, on both processes; the others keep working', async (t) => {
  const leaked = await adminToken(a, 'ops');
  const other = await adminToken(a, 'ops');
  for (const service of [a, b]) {
    t.equal((await service.api('GET', '/v1/admin/identities', { token: leaked })).status, 200, 'verified and cached');
  }
  const trail = await page(a, '/v1/admin/actions?limit=5', a.adminToken);
  const tokenId = trail.body.entries.find((e) => e.operator === 'ops')?.tokenId;
  t.equal(tokenId, jtiOf(leaked), 'the trail names the token');

  t.equal((await a.api('POST', '/v1/admin/tokens/revoke', { token: a.adminToken, body: { tokenId } })).status, 204);
  t.equal((await a.api('POST', '/v1/admin/tokens/revoke', { token: a.adminToken, body: { tokenId } })).status, 204, 'idempotent');
  t.equal((await a.api('GET', '/v1/admin/identities', { token: leaked })).status, 401, 'refused where it was revoked');
  await waitFor(async () => (await b.api('GET', '/v1/admin/identities', { token: leaked })).status === 401 || undefined, 'the other process to refuse it');
  for (const service of [a, b]) t.equal((await service.api('GET', '/v1/admin/identities', { token: other })).status, 200, "the same operator's other token works");
  t.equal((await b.api('GET', '/v1/admin/identities', { token: b.adminToken })).status, 200);

  // An owner's token by its id too: the cached read path refuses it at once.
  const readOnly = ((await (await a.api('POST', '/v1/admin/tokens', { token: a.adminToken, body: { kind: 'owner', subject: 'bob', scopes: ['presence:read'] } })).json()) as { token: string }).token;
  t.equal((await a.api('GET', '/v1/presence/bob', { token: readOnly })).status, 200);
  t.equal((await a.api('POST', '/v1/admin/tokens/revoke', { token: a.adminToken, body: { tokenId: jtiOf(readOnly) } })).status, 204);
  t.equal((await a.api('GET', '/v1/presence/bob', { token: readOnly })).status, 401, 'on the cached read path too');
  t.equal((await a.api('GET', '/v1/me/devices', { token: bobToken })).status, 200, "bob's other token works");

  // A watcher's stream opened with a token revoked by its id ends at once; one opened with another token of theirs goes on.
  await addRule(a, 'bob', walt.id, 'allow');
  const second = ((await (await a.api('POST', '/v1/admin/tokens', { token: a.adminToken, body: { kind: 'watcher', subject: walt.id } })).json()) as { token: string }).token;
  const revokedStream = await openStream(`${a.httpUrl}/v1/presence/bob/stream`, walt.token);
  const keptStream = await openStream(`${a.httpUrl}/v1/presence/bob/stream`, second);
  t.teardown(() => {
    revokedStream.close();
    keptStream.close();
  });
  await revokedStream.nth(1);
  await keptStream.nth(1);
  // And a webhook the revoked token registered is removed with it; one registered with the other token stays.
  const receiver = createServer((_request, response) => response.writeHead(204).end());
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => receiver.close(() => resolve())));
  const hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
  const register = async (token: string) => ((await (await a.api('POST', '/v1/webhooks', { token, body: { handle: 'bob', url: hookUrl } })).json()) as { id: string }).id;
  const leakedHook = await register(walt.token);
  const keptHook = await register(second);
  t.equal((await a.api('POST', '/v1/admin/tokens/revoke', { token: a.adminToken, body: { tokenId: jtiOf(walt.token) } })).status, 204);
  await waitFor(() => revokedStream.ended(), 'the stream of the revoked token to end');
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.notOk(keptStream.ended(), "the watcher's other stream goes on");
  const hooks = ((await (await a.api('GET', '/v1/webhooks', { token: second })).json()) as { webhooks: { id: string }[] }).webhooks.map((h) => h.id);
  t.notOk(hooks.includes(leakedHook), 'the webhook the revoked token registered is gone');
  t.ok(hooks.includes(keptHook), 'the other token\'s webhook stays');
  t.equal(((await db.query('select count(*)::int as n from webhooks where id = $1', [leakedHook])).rows[0] as { n: number }).n, 0, 'from storage too');

  for (const body of [{ tokenId: '' }, { tokenId: 'a b' }, { tokenId: 'x', kind: 'owner' }, { kind: 'admin' }, { kind: 'device', subject: 'x' }]) {
    const bad = await a.api('POST', '/v1/admin/tokens/revoke', { token: a.adminToken, body });
    t.equal(bad.status, 400, `refused: ${JSON.stringify(body)}`);
  }
});

t.test("an operator's admin tokens revoked by subject; a later one works; a restart remembers", async (t) => {
  const leaver = await adminToken(a, 'leaver');
  const stayer = await adminToken(a, 'stayer');
  t.equal((await b.api('GET', '/v1/admin/keys', { token: leaver })).status, 200);
  t.equal((await a.api('POST', '/v1/admin/tokens/revoke', { token: a.adminToken, body: { kind: 'admin', subject: 'leaver' } })).status, 204);
  t.equal((await a.api('GET', '/v1/admin/keys', { token: leaver })).status, 401);
  // Until b hears of the revocation (the control channel), the token still acts there, and is audited: counted.
  let actedOnB = 0;
  await waitFor(
    async () => {
      const status = (await b.api('GET', '/v1/admin/keys', { token: leaver })).status;
      if (status === 200) actedOnB += 1;
      return status === 401 || undefined;
    },
    'the other process to refuse it',
  );
  t.equal((await b.api('GET', '/v1/admin/keys', { token: stayer })).status, 200, "another operator's token works");
  const cutoff = ((await db.query("select not_before from admin_token_cutoffs where subject = 'leaver'")).rows[0] as { not_before: Date }).not_before.getTime();
  await pastSecondOf(cutoff);
  t.equal((await a.api('GET', '/v1/admin/keys', { token: await adminToken(a, 'leaver') })).status, 200, 'a token issued afterwards works');

  const c = await startTestService(t, await testConfig(t, group));
  t.equal((await c.api('GET', '/v1/admin/keys', { token: leaver })).status, 401, 'a process started later refuses the revoked subject');
  // The revoked token acted once on b before its revocation (and on b again
  // while the revocation was on its way there); its refusals, on three processes, added nothing.
  const byLeaver = await db.query('select count(*)::int as n from admin_actions where token_id = $1', [jtiOf(leaver)]);
  t.same(byLeaver.rows, [{ n: 1 + actedOnB }], 'the revoked tokens were refused before anything was recorded');
});

t.test('admin tokens made to live longer than ADMIN_TOKEN_MAX_SECONDS, or dated ahead, are refused, whoever signed them', async (t) => {
  t.equal((await a.api('GET', '/v1/admin/keys', { token: await adminToken(a, 'long', 3600) })).status, 200, 'an hour: the default limit');
  t.equal((await a.api('GET', '/v1/admin/keys', { token: await adminToken(a, 'long', 3601) })).status, 401, 'a second more');
  t.equal((await a.api('GET', '/v1/admin/keys', { token: await adminToken(a, 'long', 30 * 86_400) })).status, 401, 'a month');
  // Dated ahead, a token would live longer than its lifetime says and outlive a revocation by subject.
  t.equal((await a.api('GET', '/v1/admin/keys', { token: await adminToken(a, 'ahead', 600, Date.now() + 3_600_000) })).status, 401, 'issued an hour from now');
  t.equal((await a.api('GET', '/v1/admin/keys', { token: await adminToken(a, 'ahead', 600, Date.now() + 20_000) })).status, 200, 'a signer whose clock runs 20 s fast');
});

t.test("linking and unlinking an owner's external account both show in that owner's trail", async (t) => {
  const account = { issuer: 'https://idp.example', subject: 'bob-at-idp' };
  t.equal((await a.api('POST', '/v1/admin/identities', { token: a.adminToken, body: { ...account, owner: 'bob' } })).status, 201);
  t.equal((await a.api('DELETE', `/v1/admin/identities?${new URLSearchParams(account).toString()}`, { token: a.adminToken })).status, 204);
  const bobs = await waitFor(async () => {
    const p = await page(a, '/v1/me/admin-actions?limit=5', bobToken);
    return p.body.entries.some((e) => e.method === 'DELETE' && e.status === 204) && p;
  }, "the unlink in bob's trail");
  t.match(
    bobs.body.entries.slice(0, 2).map((e) => `${e.method} ${e.route}`),
    ['DELETE /v1/admin/identities', 'POST /v1/admin/identities'],
    'named by the link, though the unlink names only the account',
  );
});

t.test('a caller that disconnects before the answer: the action still ends with its status in the trail', async (t) => {
  const body = JSON.stringify({ handle: 'gone-caller' });
  const { port } = new URL(a.httpUrl);
  // The whole request, then the connection closed at once: Fastify gives no onResponse for it, while the route still runs.
  await new Promise<void>((resolve) => {
    const socket = connect(Number(port), '127.0.0.1', () => {
      socket.write(`POST /v1/admin/owners HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${a.adminToken}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      setImmediate(() => {
        socket.destroy();
        resolve();
      });
    });
    socket.on('error', () => undefined);
  });
  const row = await waitFor(async () => {
    const { rows } = await db.query<{ status: number | null; owner_id: string | null }>("select a.status, a.owner_id from admin_actions a where a.route = '/v1/admin/owners' and a.method = 'POST' and exists (select 1 from owners o where o.id = a.owner_id and o.handle = 'gone-caller')");
    return rows[0]?.status === undefined || rows[0].status === null ? undefined : rows[0];
  }, 'the action settled');
  t.equal(row.status, 201, 'created, and recorded as such though nobody read the answer');
  t.ok((await db.query("select 1 from owners where handle = 'gone-caller'")).rowCount === 1, 'the owner exists');
});

t.test("erasure: the trail keeps what operators did, not whom it concerned; the export had it", async (t) => {
  const exported = await a.api('GET', '/v1/me/export', { token: aliceToken });
  t.equal(exported.status, 200);
  const records = (await exported.text())
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { type: string; route?: string; operator?: string; status?: number | null });
  const actions = records.filter((r) => r.type === 'admin-action');
  t.ok(actions.some((r) => r.route === '/v1/admin/owners/:handle/presence' && r.operator === 'test' && r.status === 200), 'the export holds the actions');

  const hers = ((await db.query('select count(*)::int as n from admin_actions where owner_id = $1', [alice.owner.id])).rows[0] as { n: number }).n;
  const total = await rows();
  t.ok(hers > 0);
  t.equal((await a.api('DELETE', '/v1/admin/owners/alice?confirm=alice', { token: a.adminToken })).status, 204, 'an operator erases her');
  await waitFor(async () => ((await db.query("select status from admin_actions where method = 'DELETE' and route = '/v1/admin/owners/:handle' order by id desc limit 1")).rows[0] as { status: number | null } | undefined)?.status === 204 || undefined, 'the erasure recorded with its status');
  t.equal(((await db.query('select count(*)::int as n from admin_actions where owner_id = $1', [alice.owner.id])).rows[0] as { n: number }).n, 0, 'no row names her');
  t.equal(await rows(), total + 1, "every row stays (the erasure's own added)");
  const trace = await db.query("select count(*)::int as n from admin_actions where concat_ws(' ', operator, token_id, route, owner_id::text, watcher_id::text) like any($1)", [[`%${alice.owner.id}%`, '%alice%', `%${alice.device.id}%`]]);
  t.equal((trace.rows[0] as { n: number }).n, 0, 'no trace of her in any column');
});
