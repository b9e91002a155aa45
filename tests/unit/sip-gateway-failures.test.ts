import t from 'tap';
import { FAILURE_LOG_INTERVAL_MS, SipGateway, type SipGatewayDeps } from '../../api/sip-gateway.js';
import { Metrics } from '../../core/metrics.js';

/**
 * A SIP server the gateway cannot reach (refused TLS handshake, timeout)
 * is counted on every attempt and logged once a minute per reason: a
 * broken certificate must be visible without flooding the log with one
 * line per presentity and retry.
 */
t.test('transport failures: counted each time, logged once per reason a minute', async (t) => {
  let now = 1_000_000;
  const logged: string[] = [];
  const metrics = new Metrics();
  const deps = { metrics, clock: () => now, onError: (error: unknown) => logged.push(error instanceof Error ? error.message : String(error)) } as unknown as SipGatewayDeps;
  const gateway = new SipGateway(deps);
  const tls = 'tls: TLS handshake with 127.0.0.1:5061 failed: self-signed certificate (check SIP_CA_FILE)';
  for (const presentity of ['sip:a@x', 'sip:b@x', 'sip:c@x']) gateway.onOutcome({ presentity, kind: 'initial', status: 0, error: tls });
  gateway.onOutcome({ presentity: 'sip:a@x', kind: 'initial', status: 0, error: 'timeout: no final response within 32000 ms (Timer F)' });
  gateway.onOutcome({ presentity: 'sip:a@x', kind: 'remove', status: 0, error: 'closed: transport closed' });
  t.equal(metrics.value('presence_sip_publish_total', { kind: 'initial', status: '0' }), 4, 'every failure counted');
  t.same(logged, [`no response from the SIP server: ${tls}`, 'no response from the SIP server: timeout: no final response within 32000 ms (Timer F)'], 'one line per reason; a shutdown is not a failure');
  now += FAILURE_LOG_INTERVAL_MS;
  gateway.onOutcome({ presentity: 'sip:a@x', kind: 'initial', status: 0, error: tls });
  t.equal(logged.length, 3, 'logged again a minute later');
  gateway.onOutcome({ presentity: 'sip:a@x', kind: 'initial', status: 503, error: '503 Service Unavailable' });
  t.equal(logged.length, 3, 'a response is not a transport failure');
});
