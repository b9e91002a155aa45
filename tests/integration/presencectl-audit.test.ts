import t from 'tap';
import { presencectl, startEmbeddedWithCli } from '../helpers/cli.js';

/**
 * The command-line tool and the operators' audit trail on the embedded
 * defaults (PGlite under a fresh DATA_DIR, the in-process broker): who is
 * named as the operator, admin tokens minted, one revoked by its id and an
 * operator's all revoked, across a restart. (A file of its own: every
 * `presencectl` run is a process, and together with the other CLI tests
 * the file came near tap's per-file timeout on a loaded machine.)
 */
const embedded = await startEmbeddedWithCli(t);
const { cliEnv, ctl } = embedded;
let service = embedded.service;

await ctl('owner', 'create', 'alice', '--name', 'Alice');

t.test('presencectl and the audit trail on the embedded database: the operator named, one admin token and an operator revoked', async (t) => {
  const asCarol = async (...args: string[]) => presencectl({ ...cliEnv(), PRESENCECTL_OPERATOR: 'carol' }, ...args);
  t.equal((await asCarol('rules', 'alice')).code, 0);
  const trail = await ctl('actions', '--owner', 'alice');
  const entries = (trail as unknown as { entries: { operator: string; route: string; status: number | null }[] }).entries;
  t.match(entries.find((e) => e.operator === 'carol'), { route: '/v1/admin/owners/:handle/rules', status: 200 }, "carol's read of alice's rules");
  t.ok(entries.some((e) => e.operator.startsWith('presencectl:')), 'by default, the login name');
  t.equal((await presencectl(cliEnv(), 'actions', '--operator', 'bad name')).code, 2, 'an operator name is checked');

  const minted = (await asCarol('token', 'admin', '--ttl', '600')).json as { token: string };
  const admin = async (token: string) => (await service.api('GET', '/v1/admin/keys', { token })).status;
  t.equal(await admin(minted.token), 200);
  const jti = (JSON.parse(Buffer.from(minted.token.split('.')[1] ?? '', 'base64url').toString()) as { jti: string }).jti;
  t.same(await ctl('revoke-token', jti), { revoked: { tokenId: jti } });
  t.equal(await admin(minted.token), 401, 'that one token is refused');
  t.equal((await asCarol('token', 'admin', '--ttl', '3601')).code, 2, 'no admin token past ADMIN_TOKEN_MAX_SECONDS');

  const another = ((await asCarol('token', 'admin')).json as { token: string }).token;
  t.equal(await admin(another), 200);
  t.same(await ctl('revoke-tokens', 'admin', 'carol'), { revoked: { kind: 'admin', subject: 'carol' } });
  t.equal(await admin(another), 401, "every token carol had is refused");
  service = await embedded.restart();
  t.equal(await admin(another), 401, 'still refused after a restart');
  t.equal(await admin(minted.token), 401, 'and the one revoked by id');
  t.equal(await admin(service.adminToken), 200, "another operator's token works");
});
