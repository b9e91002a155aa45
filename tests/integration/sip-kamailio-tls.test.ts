import { randomBytes } from 'node:crypto';
import t from 'tap';
import { sipGatewayConfigSchema } from '../../api/sip/config.js';
import { SipPublisherPool } from '../../api/sip/pool.js';
import type { PublishOutcome } from '../../api/sip/publisher.js';
import { tempDir, waitFor } from '../helpers/env.js';
import { kamailioTlsUnavailable, startKamailio, startSipp } from '../helpers/kamailio.js';
import { createTestCa } from '../helpers/test-pki.js';

/**
 * The SIP gateway over TLS against a real Kamailio 5.6 (its tls module,
 * package kamailio-tls-modules), with a certificate from a test CA: the
 * gateway verifies Kamailio's certificate against SIP_CA_FILE and the
 * host of the sips: URI, Kamailio receives the PUBLISH over TLS, and a
 * sipp watcher (over UDP) is NOTIFYed the document. With another CA the
 * handshake is refused and nothing is published.
 */
const unavailable = await kamailioTlsUnavailable();
if (unavailable !== undefined) {
  t.plan(0, `Kamailio with TLS not available and not installable: ${unavailable}`);
} else {
  const DOMAIN = 'example.com';
  const unique = randomBytes(4).toString('hex');
  const ca = await createTestCa('Kamailio test CA');
  const otherCa = await createTestCa('Another CA');
  const kamailio = await startKamailio({ tls: await ca.issue('kamailio', { ips: ['127.0.0.1'] }) });
  t.teardown(() => kamailio.stop());
  const dir = await tempDir(t, 'sip-kamailio-tls-');
  const pidf = (user: string, note: string) =>
    `<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:${user}@${DOMAIN}">\n  <tuple id="t-${user}">\n    <status><basic>open</basic></status>\n    <note>${note}</note>\n  </tuple>\n</presence>\n`;

  const pool = async (caCert: string) => {
    const outcomes: PublishOutcome[] = [];
    const p = await SipPublisherPool.create(sipGatewayConfigSchema.parse({ server: kamailio.uri('tls'), domain: DOMAIN, tls: { ca: caCert } }), {
      onOutcome: (o) => outcomes.push(o),
      closeTimeoutMs: 3000,
      backoff: { initialMs: 60_000, maxMs: 60_000 },
    });
    t.teardown(() => p.close());
    return { pool: p, outcomes };
  };

  t.test('sips: to Kamailio: verified handshake, PUBLISH over TLS, the watcher gets the document', async (t) => {
    const user = `alice-tls-${unique}`;
    const { pool: gateway } = await pool(ca.cert);
    const first = pidf(user, 'over TLS');
    t.match(await gateway.update(user, first), { kind: 'initial', status: 200, etag: /./ }, 'initial PUBLISH accepted');
    t.match(await kamailio.log(), new RegExp(`PUBLISH sip:${user}@${DOMAIN} proto=tls `), 'Kamailio received it over TLS');

    const watcher = await startSipp(kamailio, 'watcher', 'udp', { presentity: user, domain: DOMAIN }, dir);
    t.teardown(() => watcher.stop());
    await waitFor(async () => (await watcher.logLines()).length >= 1, 'the first NOTIFY', 10_000);
    const second = pidf(user, 'modified over TLS');
    t.match(await gateway.update(user, second), { kind: 'modify', status: 200 });
    await waitFor(async () => (await watcher.logLines()).length >= 2, 'the NOTIFY of the modify', 10_000);
    t.match(await gateway.remove(user), { kind: 'remove', status: 200 });
    const code = await watcher.exited;
    t.equal(code, 0, 'the sipp watcher completed its scenario', { errors: code === 0 ? '' : (await watcher.errors()).slice(-1500) });
    const bodies = (await watcher.received()).filter((m) => m.method === 'NOTIFY').map((m) => m.body.toString('utf8'));
    t.equal(bodies[0], first, 'the document published over TLS, byte for byte');
    t.equal(bodies[1], second);
  });

  t.test('Kamailio with a certificate SIP_CA_FILE did not sign: refused, nothing published', async (t) => {
    const user = `mallory-tls-${unique}`;
    const { pool: gateway, outcomes } = await pool(otherCa.cert);
    const outcome = await gateway.update(user, pidf(user, 'secret'));
    t.match(outcome, { kind: 'initial', status: 0, error: /^tls: TLS handshake with 127\.0\.0\.1:\d+ failed: .*check SIP_CA_FILE/ });
    t.equal(outcomes.length, 1, 'one counted outcome');
    t.notMatch(await kamailio.log(), new RegExp(`sip:${user}@`), 'Kamailio never saw the request');
  });
}
