import t from 'tap';
import { waitFor } from '../helpers/env.js';
import { startGroup, type GroupMember } from '../helpers/service-process.js';

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
  const { members, adminToken } = await startGroup(t, 2);
  const [a, b] = members as [GroupMember, GroupMember];
  const name = (member: GroupMember) => member.service.url;
  const owners: { handle: string; token: string; member: GroupMember }[] = [];
  for (let i = 0; i < OWNERS; i++) {
    const handle = `pub${i}`;
    t.equal((await a.call('POST', '/v1/admin/owners', adminToken, { handle })).status, 201);
    const token = (await a.call('POST', '/v1/admin/tokens', adminToken, { kind: 'owner', subject: handle })).body.token as string;
    // Half the publishers on each member.
    owners.push({ handle, token, member: i % 2 === 0 ? a : b });
  }
  // B learns of the owners made through A from the control channel.
  for (const owner of owners) await waitFor(async () => (await b.call('GET', '/v1/me/presence', owner.token)).status === 200, `${name(b)} to know ${owner.handle}`);

  const refused: string[] = [];
  await Promise.all(
    owners.map(async (owner) => {
      const first = await owner.member.call('POST', `/v1/presence/${owner.handle}`, owner.token, { availability: 'busy', note: 'n0' });
      t.equal(first.status, 201, `${owner.handle}: initial publication`);
      let etag = first.headers.get('etag') ?? '';
      for (let n = 1; n <= MODIFICATIONS; n++) {
        const response = await owner.member.call('POST', `/v1/presence/${owner.handle}`, owner.token, { availability: n % 2 ? 'away' : 'busy', note: `n${n}` }, { 'if-match': etag });
        if (response.status !== 200) {
          refused.push(`${owner.handle} #${n}: ${response.status} ${JSON.stringify(response.body)}`);
          return;
        }
        etag = response.headers.get('etag') ?? '';
      }
    }),
  );
  t.same(refused, [], `all ${OWNERS * MODIFICATIONS} modifications accepted with the tag just given`);

  // Both members converge on each owner's last publication, whichever member took it.
  for (const owner of owners) {
    for (const member of [a, b]) {
      await waitFor(
        async () => (await member.call('GET', '/v1/me/presence', owner.token)).body.note === `n${MODIFICATIONS}`,
        `${name(member)} to show ${owner.handle}'s last publication`,
      );
    }
  }
});
