import t from 'tap';
import { presencectl, setUpAliceByHand, startEmbeddedWithCli } from '../helpers/cli.js';

/**
 * The command-line tool on the embedded defaults: PGlite under a fresh
 * DATA_DIR and the in-process aedes broker, set up by hand with the real
 * `presencectl` as the README shows; its errors and token revocation,
 * across a restart. (Apart from the slice in slice-embedded.test.ts and the
 * audit trail in presencectl-audit.test.ts: every `presencectl` run is a
 * process of its own, so together they took over two minutes, near tap's
 * per-file timeout on a loaded machine; apart they run side by side.)
 */
const embedded = await startEmbeddedWithCli(t);
const { config, dataDir, cliEnv, ctl } = embedded;
let service = embedded.service;

const { owner, device, watcher, stranger, watcherToken, strangerToken } = await setUpAliceByHand(ctl);

const read = (token: string, accept = 'application/pidf+xml') => service.api('GET', '/v1/presence/alice', { token, headers: { accept } });

t.test('the command-line tool speaks JSON and fails with codes', async (t) => {
  t.equal(config.database.kind, 'embedded');
  t.equal(config.mqtt.kind, 'embedded');
  t.match(owner, { handle: 'alice', entity: 'pres:alice@presence.local' });
  t.match(device, { owner: 'alice', class: 'phone', topic: `presence/${device.id}/events` });
  const duplicate = await presencectl(cliEnv(), 'owner', 'create', 'alice');
  t.equal(duplicate.code, 1);
  t.match(duplicate.json, { error: { code: 'conflict' } });
  const usage = await presencectl(cliEnv(), 'frobnicate');
  t.equal(usage.code, 2);
  t.match(usage.json, { error: { code: 'usage' } });
  const scoped = await presencectl(cliEnv(), 'token', 'watcher', watcher.id as string, '--scopes', 'presence:read', '--ttl', '600');
  t.match(scoped.json, { kind: 'watcher', scopes: ['presence:read'] });
  const tooMuch = await presencectl(cliEnv(), 'token', 'watcher', watcher.id as string, '--scopes', 'presence:read,consent:manage');
  t.equal(tooMuch.code, 1, 'a watcher token cannot carry consent:manage');
  t.match(tooMuch.json, { error: { code: 'invalid_request' } });
  const unreachable = await presencectl({ DATA_DIR: dataDir, PRESENCE_URL: 'http://127.0.0.1:1' }, 'rules', 'alice');
  t.equal(unreachable.code, 1);
  t.match(unreachable.json, { error: { message: /not reachable/ } });
});

t.test("presencectl revoke-tokens: the watcher's tokens stop working, on the embedded database and after a restart", async (t) => {
  t.equal((await read(strangerToken, 'application/json')).status, 200);
  t.same(await ctl('revoke-tokens', 'watcher', stranger.id as string), { revoked: { kind: 'watcher', subject: stranger.id } });
  t.equal((await read(strangerToken, 'application/json')).status, 401);
  const unknown = await presencectl(cliEnv(), 'revoke-tokens', 'owner', 'nobody');
  t.equal(unknown.code, 1);
  t.match(unknown.json, { error: { code: 'not_found' } });
  t.equal((await presencectl(cliEnv(), 'revoke-tokens', 'device', 'x')).code, 2, 'devices are revoked on their own');
  service = await embedded.restart();
  t.equal((await read(strangerToken, 'application/json')).status, 401, 'still refused after a restart');
  t.equal((await read(watcherToken, 'application/json')).status, 200, "another watcher's token still works");
});
