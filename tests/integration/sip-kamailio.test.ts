import { randomBytes } from 'node:crypto';
import t, { type Test } from 'tap';
import { sipGatewayConfigSchema, type SipGatewayConfigInput } from '../../api/sip/config.js';
import { parseChallenges } from '../../api/sip/digest.js';
import { SipPublisherPool, type SipPublisherPoolOptions } from '../../api/sip/pool.js';
import type { PublishOutcome } from '../../api/sip/publisher.js';
import { createTransport } from '../../api/sip/transport.js';
import { tempDir, waitFor } from '../helpers/env.js';
import { kamailioUnavailable, startKamailio, startSipp, type KamailioServer } from '../helpers/kamailio.js';

/**
 * The SIP gateway against a real Kamailio 5.6 presence server (started here
 * on an ephemeral port), observed by sipp watchers: what the publisher
 * PUBLISHes is what watchers get NOTIFYed, over UDP and TCP; modify,
 * refresh (a new SIP-ETag each time) and remove behave; digest
 * authentication (MD5 and SHA-256, 401 and 407) from Kamailio's auth
 * module is answered.
 */

const DOMAIN = 'example.com';
const PASSWORD = `pw-${randomBytes(6).toString('hex')}`;
const unique = randomBytes(4).toString('hex');

const pidf = (user: string, note: string): string =>
  [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:${user}@${DOMAIN}">`,
    `  <tuple id="t-${user}">`,
    '    <status><basic>open</basic></status>',
    `    <note>${note}</note>`,
    '  </tuple>',
    '</presence>',
    '',
  ].join('\n');

async function pool(t: Test, server: KamailioServer, transport: 'udp' | 'tcp', config: Partial<SipGatewayConfigInput> = {}, options: SipPublisherPoolOptions = {}): Promise<{ pool: SipPublisherPool; outcomes: PublishOutcome[] }> {
  const outcomes: PublishOutcome[] = [];
  const p = await SipPublisherPool.create(sipGatewayConfigSchema.parse({ server: server.uri(transport), domain: DOMAIN, ...config }), {
    onOutcome: (o) => outcomes.push(o),
    closeTimeoutMs: 3000,
    ...options,
  });
  t.teardown(() => p.close());
  return { pool: p, outcomes };
}

const unavailable = await kamailioUnavailable();
if (unavailable !== undefined) {
  t.plan(0, `Kamailio/sipp not available and not installable: ${unavailable}`);
} else {
  const dir = await tempDir(t, 'sip-kamailio-');
  const plain = await startKamailio();
  t.teardown(() => plain.stop());

  for (const transport of ['udp', 'tcp'] as const) {
    t.test(`${transport}: PUBLISH -> NOTIFY, modify, refresh with new SIP-ETags, remove`, async (t) => {
      const user = `alice-${transport}-${unique}`;
      // Two quick refreshes after the modify, then none: nothing else may be in
      // flight while the watcher un-subscribes (sipp aborts on a NOTIFY that
      // arrives in the same burst as the response it waits for).
      let quickRefreshes = 0;
      // A second apart: under load (four test files at a time) sipp reads
      // NOTIFYs sent 300 ms apart in one TCP read, and aborts.
      const refreshDelayMs = (): number => (quickRefreshes > 0 && quickRefreshes-- > 0 ? 1000 : 3_600_000);
      const { pool: gateway, outcomes } = await pool(t, plain, transport, {}, { refreshDelayMs });
      const first = pidf(user, 'first');
      const second = pidf(user, 'second');

      t.match(await gateway.update(user, first), { kind: 'initial', status: 200, etag: /./, expires: 3600 }, 'initial PUBLISH accepted');

      const watcher = await startSipp(plain, 'watcher', transport, { presentity: user, domain: DOMAIN }, dir);
      t.teardown(() => watcher.stop());
      await waitFor(async () => (await watcher.logLines()).length >= 1, 'the first NOTIFY', 10_000);

      quickRefreshes = 2;
      t.match(await gateway.update(user, second), { kind: 'modify', status: 200 }, 'modify accepted');
      await waitFor(() => outcomes.filter((o) => o.kind === 'refresh' && o.status === 200).length >= 2, 'two refreshes', 10_000);
      // The removal's NOTIFY must not share a read with the last refresh's: wait until the watcher has answered the first, the modify's and the two refreshes'.
      await waitFor(async () => (await watcher.logLines()).length >= 4, 'the watcher to have answered four NOTIFYs', 10_000);
      t.match(await gateway.remove(user), { kind: 'remove', status: 200 }, 'remove (Expires: 0) accepted');

      const code = await watcher.exited;
      t.equal(code, 0, 'the sipp watcher completed its scenario', { errors: code === 0 ? '' : (await watcher.errors()).slice(-1500) });
      const notifies = (await watcher.received()).filter((m) => m.method === 'NOTIFY');
      const bodies = notifies.map((n) => n.body.toString('utf8'));
      t.equal(bodies[0], first, 'the first NOTIFY body is the published document, byte for byte');
      t.equal(notifies[0]?.headers.get('content-type'), 'application/pidf+xml');
      t.equal(bodies[1], second, 'the modify reaches the watcher');
      const removedAt = bodies.findIndex((b, i) => i > 0 && (b === '' || b.includes('<basic>closed</basic>')));
      t.ok(removedAt >= 4, `refreshes re-NOTIFY the unchanged document (${removedAt - 2} refresh NOTIFYs)`);
      t.ok(
        bodies.slice(1, removedAt).every((b) => b === second),
        'every NOTIFY between modify and remove carries the latest document',
      );
      // Kamailio 5.6 with its database: the removal is NOTIFYed as a document
      // Kamailio generates, the last tuple with <basic>closed</basic>.
      t.match(bodies[removedAt] ?? '', new RegExp(`<tuple[^>]* id="t-${user}"[^]*<basic>closed</basic>`), 'after remove: NOTIFY of the presentity as closed (same tuple id)');
      t.match(notifies[removedAt]?.headers.get('subscription-state') ?? '', /^active/, 'the subscription itself stays active');
      t.match(notifies.at(-1)?.headers.get('subscription-state') ?? '', /^terminated/, 'the un-SUBSCRIBE ends with a terminated NOTIFY');

      const accepted = outcomes.filter((o) => o.status === 200 && o.kind !== 'remove');
      const tags = accepted.map((o) => o.etag);
      t.equal(new Set(tags).size, tags.length, `Kamailio issued a new SIP-ETag every time (${tags.length} tags)`);
      t.same(
        outcomes.filter((o) => o.status !== 200),
        [],
        'no request was refused: each refresh named the latest tag',
      );
    });
  }

  t.test('udp: a document over 1300 bytes goes to Kamailio over TCP, the same publication (RFC 3261 §18.1.1)', async (t) => {
    const user = `large-${unique}`;
    const { pool: gateway, outcomes } = await pool(t, plain, 'udp');
    t.match(await gateway.update(user, pidf(user, 'small')), { kind: 'initial', status: 200 }, 'a small document over UDP');
    const large = pidf(user, `large ${'x'.repeat(1400)}`);
    t.ok(Buffer.byteLength(large) > 1300);
    t.match(await gateway.update(user, large), { kind: 'modify', status: 200 }, 'Kamailio took the large one (over TCP) as a modify of the UDP publication');
    t.match(await gateway.update(user, pidf(user, 'small again')), { kind: 'modify', status: 200 }, 'and the next small one over UDP with the tag it issued');
    t.match(await gateway.remove(user), { kind: 'remove', status: 200 });
    t.same(
      outcomes.filter((o) => o.status !== 200),
      [],
      'nothing refused',
    );
  });

  t.test('Kamailio with publications in memory (publ_cache=2) loses the document on a body-less refresh; refreshWithBody keeps it', async (t) => {
    const server = await startKamailio({ inMemory: true });
    t.teardown(() => server.stop());
    for (const refreshWithBody of [false, true]) {
      const user = `mem-${refreshWithBody}-${unique}`;
      let quick = 1;
      const { pool: gateway, outcomes } = await pool(t, server, 'udp', { refreshWithBody }, { refreshDelayMs: () => (quick-- > 0 ? 200 : 3_600_000) });
      const doc = pidf(user, 'kept?');
      t.match(await gateway.update(user, doc), { kind: 'initial', status: 200 });
      await waitFor(() => outcomes.some((o) => o.kind === 'refresh' && o.status === 200), 'a refresh', 5000);
      // A watcher that subscribes after the refresh sees what Kamailio still holds.
      const watcher = await startSipp(server, 'watcher', 'udp', { presentity: user, domain: DOMAIN }, dir);
      t.teardown(() => watcher.stop());
      await waitFor(async () => (await watcher.logLines()).length >= 1, 'the first NOTIFY', 10_000);
      // Without a document the watcher is done at once; remove only after it left.
      const exited = refreshWithBody ? undefined : await watcher.exited;
      await gateway.remove(user);
      const code = exited ?? (await watcher.exited);
      t.equal(code, 0, 'the sipp watcher completed its scenario', { errors: code === 0 ? '' : (await watcher.errors()).slice(-1500) });
      const first = (await watcher.received()).find((m) => m.method === 'NOTIFY');
      if (refreshWithBody) t.equal(first?.body.toString('utf8'), doc, 'refreshWithBody: the document survives refreshes');
      else t.equal(first?.body.length, 0, 'body-less refresh: Kamailio 5.6 in memory NOTIFYs no document any more (a Kamailio quirk)');
    }
  });

  for (const algorithm of ['MD5', 'SHA-256'] as const) {
    t.test(`digest ${algorithm} from Kamailio's auth module: 401 and 407 answered`, async (t) => {
      const server = await startKamailio({ auth: { password: PASSWORD, algorithm }, inMemory: true });
      t.teardown(() => server.stop());

      // What Kamailio demands: a raw PUBLISH without credentials.
      const raw = await createTransport('udp', { remoteHost: '127.0.0.1', remotePort: server.port });
      const challenge = await raw.send({ method: 'PUBLISH', requestUri: `sip:www-probe@${DOMAIN}`, from: { uri: `sip:www-probe@${DOMAIN}`, tag: 'x' }, to: { uri: `sip:www-probe@${DOMAIN}` }, callId: `probe-${unique}`, cseq: 1, event: 'presence', expires: 60 });
      await raw.close();
      t.equal(challenge.status, 401);
      t.match(parseChallenges(challenge.headers.getAll('www-authenticate')), [{ realm: DOMAIN, algorithm, qop: ['auth'] }], `Kamailio 5.6 challenges with algorithm ${algorithm}`);

      const cases = [
        { user: `www-${unique}`, transport: algorithm === 'MD5' ? 'udp' : 'tcp', status: 401 },
        { user: `px-${unique}`, transport: algorithm === 'MD5' ? 'tcp' : 'udp', status: 407 },
      ] as const;
      for (const c of cases) {
        const { pool: gateway, outcomes } = await pool(t, server, c.transport, { username: 'alice', password: PASSWORD });
        t.match(await gateway.update(c.user, pidf(c.user, 'a')), { kind: 'initial', status: 200 }, `${c.transport}: ${c.status} challenge answered`);
        t.match(await gateway.update(c.user, pidf(c.user, 'b')), { kind: 'modify', status: 200 }, `${c.transport}: modify with the cached nonce (nc=2)`);
        t.same(
          outcomes.map((o) => `${o.kind}:${o.status}`),
          [`initial:${c.status}`, 'initial:200', 'modify:200'],
          'one challenge, then the nonce is reused with an incremented nonce count (Kamailio checks nc)',
        );
        t.match(await gateway.remove(c.user), { kind: 'remove', status: 200 });
      }
      t.match(await server.log(), /authenticated as alice/);

      const { pool: wrong, outcomes } = await pool(t, server, 'udp', { username: 'alice', password: 'wrong' });
      t.match(await wrong.update(`www-wrong-${unique}`, pidf('w', 'x')), { status: 401, error: /gave up/ }, 'a wrong password gives up');
      t.equal(outcomes.length, 3, 'after two answered challenges');
    });
  }
}
