import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { connectAsync, type MqttClient } from 'mqtt';
import t from 'tap';
import { issueToken } from '../../core/identity/tokens.js';
import { INGEST_ACCEPTED } from '../../ingest/ingest-pipeline.js';
import { setUpAliceByHand, startEmbeddedWithCli } from '../helpers/cli.js';
import { waitFor } from '../helpers/env.js';
import { validatePidf } from '../helpers/pidf-validator.js';
import { ownerToken } from '../helpers/service.js';

/**
 * The slice on the embedded defaults: PGlite under a fresh DATA_DIR (created,
 * migrated, its signing key generated on first start) and the in-process
 * aedes broker. Set up by hand with the real command-line tool, as the
 * README shows (the tool's own tests: presencectl-embedded.test.ts).
 */
let offsetMs = 0;
const clock = () => Date.now() + offsetMs;
const embedded = await startEmbeddedWithCli(t, { clock });
const { config, dataDir, ctl } = embedded;
let service = embedded.service;

const { owner, device, watcherToken, strangerToken } = await setUpAliceByHand(ctl);
const deviceToken = (await ctl('token', 'device', device.id as string)).token as string;

const read = (token: string, accept = 'application/pidf+xml') => service.api('GET', '/v1/presence/alice', { token, headers: { accept } });

t.test('a device with its token publishes; the consented watcher reads valid PIDF', async (t) => {
  const client: MqttClient = await connectAsync(service.mqttUrl, { username: device.id, password: deviceToken, clientId: device.id });
  t.teardown(() => client.endAsync());
  const before = service.metrics.value(INGEST_ACCEPTED);
  await client.publishAsync(device.topic as string, JSON.stringify({ kind: 'call', at: new Date().toISOString(), state: 'in-call' }), { qos: 1 });
  await waitFor(() => service.metrics.value(INGEST_ACCEPTED) > before, 'the event to be applied');

  const response = await read(watcherToken);
  t.equal(response.status, 200);
  const xml = await response.text();
  t.match(xml, /<basic>open<\/basic>.*<rpid:on-the-phone\/>/s);
  const validation = await validatePidf({ embedded: xml });
  t.ok(validation.ok, validation.output);

  const strangerView = await (await read(strangerToken, 'application/json')).json();
  t.same(strangerView, { entity: 'pres:alice@presence.local', basic: 'closed', availability: 'offline' }, 'no consent: offline');
});

t.test('the embedded broker refuses bad credentials and foreign topics', async (t) => {
  const as = (id: string, password: string, clientId = id) => connectAsync(service.mqttUrl, { username: id, password, clientId, reconnectPeriod: 0 });
  await t.rejects(
    as(device.id as string, 'not-a-token'),
    /Bad username or password|Not authorized/i,
    'wrong token refused',
  );
  await t.rejects(
    as(device.id as string, watcherToken),
    /Bad username or password|Not authorized/i,
    'an HTTP token does not open MQTT',
  );
  const other = await ctl('device', 'add', 'alice', '--class', 'watch');
  const otherToken = (await ctl('token', 'device', other.id as string)).token as string;
  await t.rejects(as(other.id as string, deviceToken), /Bad username or password|Not authorized/i, 'a device token is bound to its device id');
  await t.rejects(as(other.id as string, otherToken, device.id as string), /Identifier rejected/i, 'a device cannot take over another device client id');

  const client = await as(device.id as string, deviceToken);
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
  const before = service.metrics.value(INGEST_ACCEPTED);
  client.publish(other.topic as string, JSON.stringify({ kind: 'call', at: new Date().toISOString(), state: 'idle' }), { qos: 1 });
  await closed;
  t.pass('publishing to another device topic closes the connection');
  client.end(true);
  t.equal(service.metrics.value(INGEST_ACCEPTED), before, 'and nothing was applied');
  t.match(await (await read(watcherToken, 'application/json')).json(), { activities: ['on-the-phone'] });
});

t.test('an OwnTracks app connects with its device id and token and publishes below its own id', async (t) => {
  const app = await connectAsync(service.mqttUrl, { username: device.id, password: deviceToken, clientId: device.id, reconnectPeriod: 0 });
  const before = service.metrics.value(INGEST_ACCEPTED);
  const tst = Math.floor(clock() / 1000);
  // OwnTracks publishes its location retained; the broker drops the flag.
  await app.publishAsync(`owntracks/${device.id}/iphone`, JSON.stringify({ _type: 'location', lat: 48.1, lon: 11.5, acc: 10, batt: 50, tst, tid: 'AL' }), { qos: 1, retain: true });
  await app.publishAsync(`owntracks/${device.id}/iphone/waypoints`, JSON.stringify({ _type: 'waypoints', waypoints: [] }), { qos: 1 });
  await waitFor(() => service.metrics.value(INGEST_ACCEPTED) > before, 'the location');
  t.ok(app.connected, 'its other messages are allowed (and not consumed)');
  const other = await ctl('device', 'add', 'alice', '--class', 'tablet');
  const closed = new Promise<void>((resolve) => app.once('close', () => resolve()));
  const accepted = service.metrics.value(INGEST_ACCEPTED);
  app.publish(`owntracks/${other.id}/iphone`, JSON.stringify({ _type: 'location', lat: 1, lon: 1, acc: 5, tst }), { qos: 1 });
  await closed;
  app.end(true);
  t.equal(service.metrics.value(INGEST_ACCEPTED), accepted, "publishing below another registered device's id closes the connection, nothing applied");
});

t.test('an oversized packet closes the connection before it is buffered', async (t) => {
  const client = await connectAsync(service.mqttUrl, { username: device.id, password: deviceToken, clientId: device.id, reconnectPeriod: 0 });
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
  const before = service.metrics.value(INGEST_ACCEPTED);
  client.publish(device.topic as string, Buffer.alloc(config.maxEventBytes + 8192, 0x20), { qos: 0 });
  await closed;
  client.end(true);
  t.equal(service.metrics.value(INGEST_ACCEPTED), before);
});

t.test('a connection does not outlive its device token', async (t) => {
  const { token } = await issueToken(service.signingKey, config.tokenIssuer, { kind: 'device', subject: device.id as string, owner: owner.id, ttlSeconds: 120 }, clock());
  const client = await connectAsync(service.mqttUrl, { username: device.id, password: token, clientId: device.id, reconnectPeriod: 0 });
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
  offsetMs = 121_000;
  const before = service.metrics.value(INGEST_ACCEPTED);
  client.publish(device.topic as string, JSON.stringify({ kind: 'call', at: new Date(clock()).toISOString(), state: 'idle' }), { qos: 1 });
  await closed;
  client.end(true);
  offsetMs = 0;
  t.equal(service.metrics.value(INGEST_ACCEPTED), before, 'the publish after expiry was refused');
});

t.test('HTTP PUBLISH on the embedded database: create, modify, a spent tag, remove', async (t) => {
  const token = await ownerToken(service, 'alice');
  const publish = (body: unknown, headers: Record<string, string> = {}) => service.api('POST', '/v1/presence/alice', { token, ...(body === undefined ? {} : { body }), headers });
  const created = await publish({ availability: 'away', activities: [] }, { expires: '600' });
  t.equal(created.status, 201);
  const tag1 = created.headers.get('etag') ?? '';
  const modified = await publish({ availability: 'busy', activities: ['meeting'] }, { 'if-match': tag1 });
  t.equal(modified.status, 200);
  t.equal((await publish(undefined, { 'if-match': tag1 })).status, 412, 'the first tag is spent');
  t.equal((await publish(undefined, { 'if-match': modified.headers.get('etag') ?? '', expires: '0' })).status, 200, 'removed');
});

t.test('a revoked device is disconnected from the embedded broker and cannot connect again', async (t) => {
  const watch = await ctl('device', 'add', 'alice', '--class', 'watch');
  const watchToken = (await ctl('token', 'device', watch.id as string)).token as string;
  const client = await connectAsync(service.mqttUrl, { username: watch.id, password: watchToken, clientId: watch.id, reconnectPeriod: 0 });
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
  const revoked = await service.api('DELETE', `/v1/me/devices/${watch.id as string}`, { token: await ownerToken(service, 'alice') });
  t.equal(revoked.status, 204);
  await closed;
  client.end(true);
  const again = await connectAsync(service.mqttUrl, { username: watch.id, password: watchToken, clientId: watch.id, reconnectPeriod: 0 }).catch((e: unknown) => e);
  t.ok(again instanceof Error, 'its token no longer connects');
});

t.test('a restart on the same data directory keeps key, directory, rules and state', async (t) => {
  service = await embedded.restart();
  const response = await read(watcherToken, 'application/json');
  t.equal(response.status, 200, 'tokens issued before the restart still verify');
  t.same(await response.json(), { entity: 'pres:alice@presence.local', basic: 'open', availability: 'busy', activities: ['on-the-phone'] });
});

t.test('a key rotation on the embedded defaults (signing-key.pem moved aside) keeps device and watcher tokens working', async (t) => {
  const oldKid = service.signingKey.kid;
  service = await embedded.restart(() => rename(join(dataDir, 'signing-key.pem'), join(dataDir, 'signing-key.pem.old')));
  t.not(service.signingKey.kid, oldKid, 'a new key was made and signs');
  // The device's year-long token, signed with the old key, still opens the embedded broker and publishes.
  const client = await connectAsync(service.mqttUrl, { username: device.id, password: deviceToken, clientId: device.id, reconnectPeriod: 0 });
  t.teardown(() => client.endAsync(true));
  const before = service.metrics.value(INGEST_ACCEPTED);
  await client.publishAsync(device.topic as string, JSON.stringify({ kind: 'call', at: new Date(clock()).toISOString(), state: 'idle' }), { qos: 1 });
  await waitFor(() => service.metrics.value(INGEST_ACCEPTED) > before, 'the event published with the old device token');
  t.equal((await read(watcherToken, 'application/json')).status, 200, "the watcher's old token still reads");
  const fresh = (await ctl('token', 'device', device.id as string)).token as string;
  t.equal((JSON.parse(Buffer.from(fresh.split('.')[0] ?? '', 'base64url').toString()) as { kid: string }).kid, service.signingKey.kid, 'new tokens carry the new key');
  const jwks = (await (await service.api('GET', '/.well-known/jwks.json')).json()) as { keys: { kid: string }[] };
  t.same(jwks.keys.map((k) => k.kid).sort(), [oldKid, service.signingKey.kid].sort(), 'both keys published until the old one is retired');
});
