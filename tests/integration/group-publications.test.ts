import t from 'tap';
import { createTestDatabase, tempDir, waitFor } from '../helpers/env.js';
import { startPrivateBroker } from '../helpers/mosquitto.js';
import { adminCredentials, spawnService, type ServiceProcess } from '../helpers/service-process.js';

/**
 * Publications (RFC 3903 PUBLISH over HTTP) in a scale-out group: two real
 * processes on one Mosquitto and one PostgreSQL. Every change to an owner's
 * publications is announced on the control channel, and every member,
 * the one that made it included, reloads that owner. A publisher that
 * modifies again at once, with the entity tag it was just given, must not
 * meet a reload whose snapshot was read before its previous modification
 * was stored: applied as it was, that snapshot put the older tag back and
 * the next modification got a 412 (about one request in a hundred in
 * bench/publish.ts before PresenceHub.finishOverridesReload).
 */
const OWNERS = 4;
const MODIFICATIONS = 150;

t.test('chained modifications on each member of a group: every one accepted, and both members converge', async (t) => {
  const broker = await startPrivateBroker();
  t.teardown(() => broker.stop());
  const databaseUrl = await createTestDatabase(t);
  const { signingKeyPem, adminToken } = await adminCredentials();
  const member = async (name: string): Promise<ServiceProcess> =>
    spawnService(t, { DATABASE_URL: databaseUrl, MQTT_URL: broker.url, SIGNING_KEY: signingKeyPem, MQTT_SHARE_GROUP: 'presence', MQTT_CLIENT_ID: name, DATA_DIR: await tempDir(t) });
  // One after the other: the first one migrates the database.
  const a = await member('member-a');
  const b = await member('member-b');

  const call = async (base: string, method: string, path: string, token: string, body?: unknown, headers: Record<string, string> = {}) =>
    fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  const owners: { handle: string; token: string; base: string }[] = [];
  for (let i = 0; i < OWNERS; i++) {
    const handle = `pub${i}`;
    t.equal((await call(a.url, 'POST', '/v1/admin/owners', adminToken, { handle })).status, 201);
    const { token } = (await (await call(a.url, 'POST', '/v1/admin/tokens', adminToken, { kind: 'owner', subject: handle })).json()) as { token: string };
    // Half the publishers on each member.
    owners.push({ handle, token, base: i % 2 === 0 ? a.url : b.url });
  }
  // B learns of the owners made through A from the control channel.
  for (const owner of owners) await waitFor(async () => (await call(b.url, 'GET', '/v1/me/presence', owner.token)).status === 200, `${b.url} to know ${owner.handle}`);

  const refused: string[] = [];
  await Promise.all(
    owners.map(async (owner) => {
      const first = await call(owner.base, 'POST', `/v1/presence/${owner.handle}`, owner.token, { availability: 'busy', note: 'n0' });
      t.equal(first.status, 201, `${owner.handle}: initial publication`);
      let etag = first.headers.get('etag') ?? '';
      for (let n = 1; n <= MODIFICATIONS; n++) {
        const response = await call(owner.base, 'POST', `/v1/presence/${owner.handle}`, owner.token, { availability: n % 2 ? 'away' : 'busy', note: `n${n}` }, { 'if-match': etag });
        if (response.status !== 200) {
          refused.push(`${owner.handle} #${n}: ${response.status} ${await response.text()}`);
          return;
        }
        etag = response.headers.get('etag') ?? '';
      }
    }),
  );
  t.same(refused, [], `all ${OWNERS * MODIFICATIONS} modifications accepted with the tag just given`);

  // Both members converge on each owner's last publication, whichever member took it.
  for (const owner of owners) {
    for (const base of [a.url, b.url]) {
      await waitFor(
        async () => ((await (await call(base, 'GET', '/v1/me/presence', owner.token)).json()) as { note?: string }).note === `n${MODIFICATIONS}`,
        `${base} to show ${owner.handle}'s last publication`,
      );
    }
  }
});
