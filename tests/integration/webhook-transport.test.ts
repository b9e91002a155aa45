import type { LookupAddress } from 'node:dns';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { createWebhookPost, REFUSED_ADDRESS } from '../../api/webhook-transport.js';
import { networkListSchema } from '../../core/networks.js';
import { createTestCa } from '../helpers/test-pki.js';

/**
 * Webhook POSTs over real sockets (api/webhook-transport.ts): in production
 * a receiver's name that resolves to an internal address is refused inside
 * the connection's own lookup, before any connection is made, so no other
 * resolution can come between the check and the connect (DNS rebinding).
 * Names are resolved by a scripted resolver, except `localhost`, which goes
 * through the system's.
 */
async function receiver(t: Test, answer: (request: IncomingMessage) => number | undefined) {
  const seen: { host: string | undefined; body: string }[] = [];
  let connections = 0;
  const server: Server = createServer((request, response) => {
    let body = '';
    request.setEncoding('utf8');
    request.on('data', (chunk: string) => (body += chunk));
    request.on('end', () => {
      seen.push({ host: request.headers.host, body });
      const status = answer(request);
      if (status !== undefined) response.writeHead(status).end();
    });
  });
  server.on('connection', () => (connections += 1));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { port: (server.address() as AddressInfo).port, seen, connections: () => connections };
}

/** A resolver answering from a table, counting its calls. */
function scripted(table: Record<string, readonly string[]>) {
  const calls: string[] = [];
  const resolve = (hostname: string, _options: unknown, callback: (error: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void) => {
    calls.push(hostname);
    const addresses = table[hostname];
    setImmediate(() =>
      addresses ? callback(null, addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }))) : callback(Object.assign(new Error('not found'), { code: 'ENOTFOUND' }), []),
    );
  };
  return { resolve, calls };
}

const headers = { 'content-type': 'application/jose' };

t.test('production: a name resolving to an internal address is refused before connecting; outside it the same name is reached', async (t) => {
  const server = await receiver(t, () => 204);
  const names = scripted({ 'hooks.rebind.example': ['127.0.0.1'], 'metadata.example': ['169.254.169.254'], 'mixed.example': ['93.184.216.34', '127.0.0.1'] });
  const production = createWebhookPost({ refuseInternal: true, resolve: names.resolve });
  for (const name of ['hooks.rebind.example', 'metadata.example', 'mixed.example']) {
    t.equal(await production(`http://${name}:${server.port}/hook`, 'x.y.z', headers, 2000), REFUSED_ADDRESS, `${name}: refused`);
  }
  t.same(names.calls, ['hooks.rebind.example', 'metadata.example', 'mixed.example'], 'each name resolved once, by the connection');
  t.equal(server.connections(), 0, 'no connection was made to the internal address');

  const development = createWebhookPost({ refuseInternal: false, resolve: names.resolve });
  t.equal(await development(`http://hooks.rebind.example:${server.port}/hook`, 'x.y.z', headers, 2000), 204, 'WEBHOOK_ALLOW_HTTP on: local receivers are allowed');
  t.same(server.seen, [{ host: `hooks.rebind.example:${server.port}`, body: 'x.y.z' }], 'sent to the address resolved, with the name as Host');
});

t.test("WEBHOOK_REFUSE_NETWORKS: a name resolving into the operator's own public networks (hairpin NAT) is refused, in every mode", async (t) => {
  const server = await receiver(t, () => 204);
  const names = scripted({ 'own.example': ['203.0.113.20'], 'own6.example': ['2001:db8::20'], 'hooks.rebind.example': ['127.0.0.1'] });
  const networks = networkListSchema.parse('203.0.113.0/24,2001:db8::/32');
  for (const refuseInternal of [true, false]) {
    const post = createWebhookPost({ refuseInternal, refuseNetworks: networks, resolve: names.resolve });
    t.equal(await post(`http://own.example:${server.port}/`, 'x', headers, 2000), REFUSED_ADDRESS, `own.example refused (refuseInternal ${refuseInternal})`);
    t.equal(await post(`http://own6.example:${server.port}/`, 'x', headers, 2000), REFUSED_ADDRESS, 'and its IPv6 address');
  }
  t.equal(server.connections(), 0, 'nothing connected');
  const development = createWebhookPost({ refuseInternal: false, refuseNetworks: networks, resolve: names.resolve });
  t.equal(await development(`http://hooks.rebind.example:${server.port}/hook`, 'x', headers, 2000), 204, 'outside production, local receivers are still allowed');
});

t.test('production: localhost through the system resolver is refused too; an unknown name or a silent receiver is a network failure (0), retried', async (t) => {
  const server = await receiver(t, () => undefined);
  const production = createWebhookPost({ refuseInternal: true });
  t.equal(await production(`http://localhost:${server.port}/`, 'x', headers, 2000), REFUSED_ADDRESS);
  t.equal(server.connections(), 0);
  const names = scripted({});
  t.equal(await createWebhookPost({ refuseInternal: true, resolve: names.resolve })('http://nowhere.example/', 'x', headers, 2000), 0, 'ENOTFOUND');
  const started = Date.now();
  t.equal(await createWebhookPost({ refuseInternal: false })(`http://127.0.0.1:${server.port}/`, 'x', headers, 300), 0, 'no answer within the timeout');
  t.ok(Date.now() - started < 2000, 'given up at the timeout');
});


t.test('a receiver that answers and then stalls its body: the status counts, and the timeout that cuts the body does not end the process', async (t) => {
  const server = createServer((request, response) => {
    request.resume();
    response.writeHead(202, { 'content-length': '1000' });
    response.write('partial');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const port = (server.address() as AddressInfo).port;
  t.equal(await createWebhookPost({ refuseInternal: false })(`http://127.0.0.1:${port}/`, 'x', headers, 200), 202);
  await new Promise((resolve) => setTimeout(resolve, 400));
  t.pass('still running after the timeout aborted the body');
  t.equal(await createWebhookPost({ refuseInternal: false })('not a url', 'x', headers, 200), 0, 'an unusable URL is a failure, not a throw');
});

t.test('https: the name resolved by the lookup is still the name the certificate is checked against, and an untrusted certificate is refused', async (t) => {
  const ca = await createTestCa('Not Trusted CA');
  const server = createHttpsServer(await ca.issue('hooks.tls.example', { dns: ['hooks.tls.example'] }), (request, response) => {
    request.resume();
    response.writeHead(204).end();
  });
  // TCP connections: the client refuses the certificate it was sent, so the server saw the connection first.
  let connections = 0;
  server.on('connection', () => (connections += 1));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as AddressInfo).port;
  const names = scripted({ 'hooks.tls.example': ['127.0.0.1'] });
  t.equal(await createWebhookPost({ refuseInternal: false, resolve: names.resolve })(`https://hooks.tls.example:${port}/`, 'x', headers, 2000), 0, 'a certificate from a CA the service does not trust: no delivery');
  t.equal(connections, 1, 'the handshake was tried, at the resolved address');
  t.equal(await createWebhookPost({ refuseInternal: true, resolve: names.resolve })(`https://hooks.tls.example:${port}/`, 'x', headers, 2000), REFUSED_ADDRESS, 'in production refused before any handshake');
  t.equal(connections, 1);
});
