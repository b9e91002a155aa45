import t from 'tap';
import { AppError } from '../../core/errors.js';
import { isInternalAddress, parseWebhookUrl } from '../../api/routes/webhooks.js';

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
