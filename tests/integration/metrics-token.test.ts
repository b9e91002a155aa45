import t from 'tap';
import { parseConfig } from '../../core/config.js';
import { createTestDatabase } from '../helpers/env.js';
import { startTestService, testConfig } from '../helpers/service.js';

/**
 * /metrics can require a bearer token (METRICS_TOKEN): its counters tell
 * when an owner's devices report, which on a small deployment is personal
 * data. Prometheus sends the token with `authorization: { credentials }`.
 */
const METRICS_TOKEN = 'm3trics-Token-0123456789abcdefghijklmnop';
const service = await startTestService(t, await testConfig(t, { DATABASE_URL: await createTestDatabase(t), METRICS_TOKEN }));

t.test('without the token: 401 with a Bearer challenge, no metrics', async (t) => {
  for (const authorization of [undefined, 'Bearer wrong', `Bearer ${METRICS_TOKEN}x`, `Basic ${METRICS_TOKEN}`, `Bearer ${service.adminToken}`]) {
    const response = await service.api('GET', '/metrics', authorization ? { headers: { authorization } } : {});
    t.equal(response.status, 401, authorization ?? 'no header');
    t.equal(response.headers.get('www-authenticate'), 'Bearer realm="metrics"');
    const body = await response.text();
    t.match(JSON.parse(body), { code: 'unauthorized' });
    t.notMatch(body, /presence_/);
  }
});

t.test('with it: the metrics', async (t) => {
  const response = await service.api('GET', '/metrics', { token: METRICS_TOKEN });
  t.equal(response.status, 200);
  t.match(await response.text(), /presence_ingest_messages_total/);
  t.equal((await service.api('GET', '/healthz')).status, 200, 'the probes stay open');
  t.equal((await service.api('GET', '/readyz')).status, 200);
});

t.test('the token is validated at start', async (t) => {
  t.notOk(parseConfig({ METRICS_TOKEN: 'short' }).ok, 'too short to be a secret');
  t.notOk(parseConfig({ METRICS_TOKEN: `${'a'.repeat(40)} b` }).ok, 'not a bearer token');
});
