import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { waitFor } from '../helpers/env.js';
import { startGroup } from '../helpers/service-process.js';

/**
 * Webhooks on handles no owner holds, in a group of two processes: one of
 * them holds the delivery lease, so each flow is run through each member
 * and one of the two crosses processes whichever it is. A webhook
 * registered on a member that does not deliver reaches the deliverer by its
 * handle's notification (migration 0018) and is sent the offline view; an
 * owner created there takes it, and the owner's view follows.
 */
t.test('a group: waiting webhooks are delivered by whichever member delivers, and follow the owner who takes the handle', async (t) => {
  const { members, adminToken } = await startGroup(t, 2);
  const received: { webhook: string; availability: string }[] = [];
  const receiver = createServer((request, response) => {
    let body = '';
    request.on('data', (d: Buffer) => (body += d.toString()));
    request.on('end', () => {
      const payload = JSON.parse(Buffer.from(body.split('.')[1] ?? '', 'base64url').toString()) as { webhook: string; view: { availability: string } };
      received.push({ webhook: payload.webhook, availability: payload.view.availability });
      response.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => receiver.close(() => resolve())));
  const hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
  const [first] = members;
  if (!first) throw new Error('no member');
  const watcher = await first.call('POST', '/v1/admin/watchers', adminToken, { kind: 'app', name: 'App' });
  const watcherToken = (await first.call('POST', '/v1/admin/tokens', adminToken, { kind: 'watcher', subject: watcher.body.id })).body.token as string;

  for (const [i, member] of members.entries()) {
    const handle = `waiting${i}`;
    const registered = await member.call('POST', '/v1/webhooks', watcherToken, { handle, url: hookUrl });
    t.equal(registered.status, 201, `registered through member ${i}`);
    const id = registered.body.id as string;
    const of = () => received.filter((r) => r.webhook === id).map((r) => r.availability);
    await waitFor(() => of().length >= 1, `the offline view of ${handle}`, 10_000);
    t.same(of(), ['offline']);

    t.equal((await member.call('POST', '/v1/admin/owners', adminToken, { handle })).status, 201);
    const rule = await member.call('POST', `/v1/admin/owners/${handle}/rules`, adminToken, {
      conditions: { identity: { watchers: [watcher.body.id] } },
      actions: { subHandling: 'allow' },
      transformations: { availability: true },
    });
    t.equal(rule.status, 201);
    const ownerToken = (await member.call('POST', '/v1/admin/tokens', adminToken, { kind: 'owner', subject: handle })).body.token as string;
    t.equal((await member.call('PUT', '/v1/me/status', ownerToken, { availability: 'busy', activities: [], expiresInSeconds: 3600 })).status, 200);
    await waitFor(() => of().includes('busy'), `${handle}'s view once the owner exists and allows it`, 10_000);
    t.same(of(), ['offline', 'busy'], 'the offline view once, then the owner\'s');
  }
});
