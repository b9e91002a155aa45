import t from 'tap';
import { AppError } from '../../core/errors.js';
import { parseWebhookUrl } from '../../api/routes/webhooks.js';
import { inNetworks, isInternalAddress } from '../../api/internal-address.js';
import { networkListSchema } from '../../core/networks.js';

t.test('webhook URLs: https in production, no credentials, no fragment, no internal address literals', async (t) => {
  const refused = (url: string, allowHttp = false) => {
    try {
      parseWebhookUrl(url, allowHttp);
      return undefined;
    } catch (error) {
      return error instanceof AppError ? error.code : 'unexpected';
    }
  };
  t.equal(parseWebhookUrl('https://hooks.example.com/x?y=1', false), 'https://hooks.example.com/x?y=1');
  for (const url of ['http://hooks.example.com/x', 'https://u:p@example.com/', 'https://example.com/#f', 'ftp://example.com/', 'not a url', 'https://127.0.0.1/x', 'https://10.1.2.3/', 'https://[::1]/', 'https://169.254.169.254/latest', 'https://[fd00::1]/', 'https://localhost/', 'https://[::ffff:192.168.1.1]/']) {
    t.equal(refused(url), 'invalid_request', url);
  }
  t.equal(refused('http://127.0.0.1:9/x', true), undefined, 'outside production, local receivers are allowed (tests, development)');
  t.notOk(isInternalAddress('8.8.8.8'));
  t.notOk(isInternalAddress('2001:db8::1'));
  t.ok(isInternalAddress('172.20.0.1'));
  t.notOk(isInternalAddress('172.32.0.1'));
});

t.test('internal addresses: every range a webhook must not reach, and the neighbours that are not in them', async (t) => {
  for (const host of ['0.0.0.0', '10.0.0.1', '100.64.0.1', '100.127.255.254', '127.8.8.8', '169.254.169.254', '172.16.0.1', '192.168.0.1', '198.18.0.1', '198.19.255.255', '224.0.0.1', '255.255.255.255', '::', '::1', 'fc00::1', 'fdff::1', 'fe80::1', 'febf::1', 'fec0::1', 'ff02::1', '::ffff:10.0.0.1', '::ffff:a9fe:a9fe', '64:ff9b::169.254.169.254', '64:ff9b::7f00:1', 'localhost', 'a.localhost']) {
    t.ok(isInternalAddress(host), `${host} is internal`);
  }
  for (const host of ['8.8.8.8', '100.63.255.255', '100.128.0.1', '172.15.255.255', '198.17.0.1', '198.20.0.1', '223.255.255.255', '2001:db8::1', 'fc::1', 'fe::1', '::ffff:8.8.8.8', '64:ff9b::8.8.8.8', 'example.com', 'localhost.example']) {
    t.notOk(isInternalAddress(host), `${host} is not`);
  }
});

t.test("WEBHOOK_REFUSE_NETWORKS: literals in the operator's networks are refused at registration, in every mode", async (t) => {
  const operator = inNetworks(networkListSchema.parse('203.0.113.0/24,2001:db8::/32'));
  const refused = (url: string, allowHttp: boolean) => {
    try {
      parseWebhookUrl(url, allowHttp, operator);
      return undefined;
    } catch (error) {
      return error instanceof AppError ? error.code : 'unexpected';
    }
  };
  for (const allowHttp of [false, true]) {
    t.equal(refused('https://203.0.113.10/hook', allowHttp), 'invalid_request');
    t.equal(refused('https://[2001:db8::5]/hook', allowHttp), 'invalid_request');
    t.equal(refused('https://198.51.100.1/hook', allowHttp), undefined, 'another public address is fine');
  }
});
