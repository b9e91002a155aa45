import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { generateKeyPairSync } from 'node:crypto';
import { join } from 'node:path';
import { connectAsync } from 'mqtt';
import pg from 'pg';
import t from 'tap';
import { parseConfig } from '../../core/config.js';
import { createTestDatabase, projectRoot, tempDir, waitFor } from '../helpers/env.js';
import { startPrivateBroker } from '../helpers/mosquitto.js';
import { NO_RATE_LIMITS, addRule, addWatcher, ownerToken, startTestService } from '../helpers/service.js';
import { openStream } from '../helpers/sse.js';

/**
 * Scale-out (issue 6): three service processes (the real entry point, as an
 * operator runs it) on one Mosquitto and one PostgreSQL, ingest split by a
 * shared subscription. One process is killed with SIGKILL while devices
 * publish, then restarted as a supervisor would (same client id, so the
 * broker hands it the session it kept).
 *
 * Every device publishes exactly one event, so every event stays visible in
 * the state (the device is listed with that event's time): "no event lost"
 * is checked event by event, on every process and in the database.
 */
const OWNERS = 12;
const DEVICES_PER_OWNER = 25;
const entry = join(projectRoot, 'dist', 'bin', 'start.js');

interface Node {
  readonly name: string;
  child: ChildProcess;
  url: string;
  out: string;
}

t.test('three processes: shared ingest, one SIGKILLed mid-stream, no event lost, every process converges', async (t) => {
  const broker = await startPrivateBroker();
  t.teardown(() => broker.stop());
  const databaseUrl = await createTestDatabase(t);
  const signingKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  // Plain text on loopback (TLS=off): TLS is proven in tests/integration/tls.test.ts.
  const common = { DATABASE_URL: databaseUrl, MQTT_URL: broker.url, SIGNING_KEY: signingKey, NODE_ENV: 'test', TLS: 'off' };

  // Provisioning through one service first (then stopped): the three
  // processes load it from the database as they would after a deploy.
  const seedConfig = parseConfig({ ...common, ...NO_RATE_LIMITS, PORT: '0', LOG_LEVEL: 'silent', DATA_DIR: await tempDir(t), MQTT_CLIENT_ID: 'seed' });
  if (!seedConfig.ok) throw new Error(seedConfig.problems.join('; '));
  const seed = await startTestService(t, seedConfig.config);
  const admin = { token: seed.adminToken };
  const owners: { handle: string; token: string; devices: { id: string; topic: string }[] }[] = [];
  for (let o = 0; o < OWNERS; o++) {
    const handle = `scale${o}`;
    await seed.api('POST', '/v1/admin/owners', { ...admin, body: { handle } });
    const devices = [];
    for (let d = 0; d < DEVICES_PER_OWNER; d++) {
      devices.push((await (await seed.api('POST', '/v1/admin/devices', { ...admin, body: { owner: handle, class: 'sensor' } })).json()) as { id: string; topic: string });
    }
    owners.push({ handle, token: await ownerToken(seed, handle), devices });
  }
  const watcher = await addWatcher(seed, 'colleague');
  const rule = await addRule(seed, 'scale0', watcher.id, 'allow');
  // Shown the devices: their ids are keyed (policy/device-refs.ts), and every process must key them alike.
  const deviceWatcher = await addWatcher(seed, 'inventory');
  await addRule(seed, 'scale0', deviceWatcher.id, 'allow', { availability: true, devices: 'all', services: 'all' });
  await seed.close();

  const nodes: Node[] = [];
  const start = async (name: string): Promise<Node> => {
    const child = spawn(process.execPath, [entry], {
      env: {
        PATH: process.env.PATH ?? '',
        ...NO_RATE_LIMITS,
        ...common,
        PORT: '0',
        DATA_DIR: await tempDir(t),
        MQTT_CLIENT_ID: name,
        MQTT_SHARE_GROUP: 'presence',
        // Long enough that the kill finds applied events not yet written:
        // the survivors must take them over.
        PERSIST_INTERVAL_MS: '1500',
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const node: Node = { name, child, url: '', out: '' };
    child.stdout?.on('data', (d: Buffer) => (node.out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (node.out += d.toString()));
    const ready = await waitFor(() => node.out.split('\n').find((l) => l.includes('presence service ready')), `${name} to be ready`, 30_000).catch((error: unknown) => {
      throw new Error(`${String(error)}; its output: ${node.out.slice(-2000)}`);
    });
    node.url = (JSON.parse(ready) as { httpUrl: string }).httpUrl;
    return node;
  };
  t.teardown(() => {
    for (const node of nodes) if (node.child.exitCode === null && node.child.signalCode === null) node.child.kill('SIGKILL');
  });
  for (const name of ['node-a', 'node-b', 'node-c']) nodes.push(await start(name));
  const [a, b, c] = nodes as [Node, Node, Node];

  // A webhook registered through C: one process of the group (the holder of
  // the delivery lease) delivers it, so no view is POSTed twice.
  const etags: string[] = [];
  const receiver = createServer((request, response) => {
    let body = '';
    request.on('data', (d: Buffer) => (body += d.toString()));
    request.on('end', () => {
      const payload = JSON.parse(Buffer.from(body.split('.')[1] ?? '', 'base64url').toString()) as { etag: string };
      etags.push(payload.etag);
      response.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => receiver.close(() => resolve())));
  const hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
  const registered = await fetch(`${c.url}/v1/webhooks`, {
    method: 'POST',
    headers: { authorization: `Bearer ${watcher.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ handle: 'scale0', url: hookUrl }),
  });
  t.equal(registered.status, 201, 'webhook registered through C');

  // A watcher streams on A; the change it must see is ingested wherever
  // the shared subscription sends it.
  const stream = await openStream(`${a.url}/v1/presence/scale0/stream`, watcher.token);
  t.teardown(() => stream.close());
  await stream.nth(1);

  const publisher = await connectAsync(broker.url, { clientId: 'scale-publisher', clean: true });
  t.teardown(() => publisher.endAsync());
  const base = Date.now() - 60_000;
  const all = owners.flatMap((owner, o) => owner.devices.map((device, d) => ({ owner, device, at: new Date(base + o * 1000 + d * 10).toISOString() })));
  let killedAt = -1;
  for (let i = 0; i < all.length; i++) {
    const { device, at } = all[i] as (typeof all)[number];
    await publisher.publishAsync(device.topic, JSON.stringify({ kind: 'battery', at, level: 50, charging: false }), { qos: 1 });
    if (i === Math.floor(all.length / 3)) {
      // Mid-stream: B has applied events it has not written (1.5 s interval).
      b.child.kill('SIGKILL');
      killedAt = i;
    }
    if (i % 10 === 0) await new Promise((r) => setTimeout(r, 5));
  }
  t.ok(killedAt > 0, 'B was killed while devices were publishing');
  // The call makes scale0 busy: the watcher on A must see it.
  await publisher.publishAsync((owners[0] as (typeof owners)[number]).devices[0]?.topic ?? '', JSON.stringify({ kind: 'call', at: new Date().toISOString(), state: 'in-call' }), { qos: 1 });

  // The survivors took over what B had applied and not written.
  await waitFor(async () => /presence_sync_messages_total\{outcome="applied",type="gone"\} [1-9]/.test(await (await fetch(`${c.url}/metrics`)).text()), 'C to hear that B died', 15_000);

  // A supervisor restarts B with the same client id: the broker hands it
  // whatever it kept for B's session (unacknowledged and queued messages).
  if (b.child.exitCode === null && b.child.signalCode === null) await new Promise((resolve) => b.child.once('exit', resolve));
  const b2 = await start('node-b');
  nodes[1] = b2;

  const expected = new Map(all.map(({ device, at }) => [device.id, Date.parse(at)]));
  for (const node of [a, b2, c]) {
    for (const owner of owners) {
      await waitFor(
        async () => {
          const response = await fetch(`${node.url}/v1/me/presence`, { headers: { authorization: `Bearer ${owner.token}` } });
          if (response.status !== 200) return false;
          const view = (await response.json()) as { devices: { id: string; lastSeen: string }[] };
          const seen = new Map(view.devices.map((d) => [d.id, Date.parse(d.lastSeen)]));
          return owner.devices.every((d) => (seen.get(d.id) ?? 0) >= (expected.get(d.id) ?? Infinity));
        },
        `${node.name} to show every device of ${owner.handle}`,
        20_000,
      );
    }
  }
  t.pass(`every one of the ${all.length} events is visible on all three processes`);
  const devicesSeen = await Promise.all(
    [a, b2, c].map(async (node) => (await fetch(`${node.url}/v1/presence/scale0`, { headers: { authorization: `Bearer ${deviceWatcher.token}`, accept: 'application/pidf+xml' } })).text()),
  );
  t.equal(devicesSeen[0]?.match(/<dm:deviceID>/g)?.length, DEVICES_PER_OWNER, 'the watcher shown devices sees each one');
  t.same(devicesSeen.slice(1), [devicesSeen[0], devicesSeen[0]], 'by the same ids on every process (a key the group shares)');

  // The database converged too: every device's signal, whoever wrote it.
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  t.teardown(() => db.end());
  await waitFor(
    async () => {
      const { rows } = await db.query<{ n: number }>(`select count(*)::int as n from presence_state, jsonb_array_elements(signals) s where s->'event'->>'kind' = 'battery'`);
      return (rows[0]?.n ?? 0) === all.length;
    },
    'every event to be stored',
    20_000,
  );
  t.pass('every event is stored once per device in the database');

  // Changes ingested anywhere reach a stream on A.
  await waitFor(() => stream.events.some((e) => /on-the-phone/.test(e.data)), 'the call on the stream', 15_000);
  t.pass('the watcher streaming on A saw the call, whichever process ingested it');

  // Consent changed through C holds on A at once (privacy invariant 5): the
  // rule is deleted on C, A reloads the owner (PostgreSQL NOTIFY) and its
  // open stream falls back to the offline view.
  const seenBefore = stream.events.length;
  const deleted = await fetch(`${c.url}/v1/me/rules/${rule.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${(owners[0] as (typeof owners)[number]).token}` } });
  t.equal(deleted.status, 204);
  await waitFor(() => stream.events.slice(seenBefore).some((e) => !/on-the-phone/.test(e.data)), 'the stream on A to drop what the deleted rule granted', 10_000);
  const read = await fetch(`${a.url}/v1/presence/scale0`, { headers: { authorization: `Bearer ${watcher.token}`, accept: 'application/pidf+xml' } });
  t.notMatch(await read.text(), /on-the-phone/, 'a read on A no longer shows it');

  // A process killed right after it applied the last events of some owners,
  // before its write-behind ran: nobody else has those owners to write, so
  // only the survivors' takeover (on the broker's will) can store them.
  const last = owners.map((owner) => ({ owner, device: owner.devices[1] as { id: string; topic: string }, at: new Date(base + 50_000).toISOString() }));
  for (const { device, at } of last) await publisher.publishAsync(device.topic, JSON.stringify({ kind: 'battery', at, level: 20, charging: true }), { qos: 1 });
  for (const { owner, device, at } of last) {
    await waitFor(
      async () => {
        const view = (await (await fetch(`${a.url}/v1/me/presence`, { headers: { authorization: `Bearer ${owner.token}` } })).json()) as { devices: { id: string; lastSeen: string }[] };
        return view.devices.some((d) => d.id === device.id && Date.parse(d.lastSeen) === Date.parse(at));
      },
      `A to apply the last event of ${owner.handle}`,
    );
  }
  b2.child.kill('SIGKILL');
  await waitFor(
    async () => {
      const { rows } = await db.query<{ n: number }>(
        `select count(*)::int as n from presence_state, jsonb_array_elements(signals) s where s->'event'->>'kind' = 'battery' and (s->'event'->>'charging')::boolean`,
      );
      return (rows[0]?.n ?? 0) === last.length;
    },
    'the last events to be stored after the kill',
    20_000,
  );
  t.pass('what the killed process had applied and not written was stored by the survivors');

  await waitFor(() => etags.length >= 3, 'webhook deliveries (initial, the call, the revocation)', 10_000);
  await new Promise((r) => setTimeout(r, 500));
  // The stream on A saw every view change once; three deliverers would
  // POST each about three times (a busy webhook may skip a view, never repeat one).
  t.ok(etags.length <= stream.events.length, `no more POSTs (${etags.length}) than views the stream saw (${stream.events.length})`);
  t.ok(etags.every((etag, i) => i === 0 || etag !== etags[i - 1]), 'no view POSTed twice in a row');

  // An owner erased through C is forgotten by A too (the owners row's
  // NOTIFY; A finds the owner gone when it reloads): their token stops
  // working there and nothing of them is left in the database.
  const erased = owners[1] as (typeof owners)[number];
  const erasure = await fetch(`${c.url}/v1/me?confirm=${erased.handle}`, { method: 'DELETE', headers: { authorization: `Bearer ${erased.token}` } });
  t.equal(erasure.status, 204);
  await waitFor(async () => (await fetch(`${a.url}/v1/me/presence`, { headers: { authorization: `Bearer ${erased.token}` } })).status === 401, 'A to forget the erased owner', 10_000);
  const { rows: left } = await db.query<{ n: number }>('select count(*)::int as n from owners where handle = $1', [erased.handle]);
  t.equal(left[0]?.n, 0, 'erased on every process, once');
});
