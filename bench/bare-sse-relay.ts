import { createServer, type ServerResponse } from 'node:http';
import { connectAsync } from 'mqtt';

/**
 * The baseline of bench/latency.ts, in its own process: a bare mqtt.js
 * subscriber on the same broker that relays each message, as it comes, as a
 * Server-Sent Event to the bare node:http clients streaming that device
 * (GET /stream/{deviceId}). The same hops as the service (broker -> mqtt.js
 * -> HTTP response -> SSE reader), with none of its work: no decoding,
 * validation, derivation, consent, rendering or access log; and its MQTT
 * socket has TCP_NODELAY (see below), the best case for these hops.
 *
 * argv: url qos topicRoot. Subscribes to {topicRoot}/+/events, and prints
 * {"port": n} on stdout once it listens and the subscription is granted.
 */
const [url, qosArg, root] = process.argv.slice(2);
const qos = Number(qosArg) as 0 | 1;
if (!url || !root) throw new Error('usage: bare-sse-relay url qos topicRoot');

const streams = new Map<string, Set<ServerResponse>>();
let sequence = 0;

const mqtt = await connectAsync(url, { clean: true, clientId: `bench-bare-relay-${process.pid}`, protocolVersion: 4 });
// TCP_NODELAY, which mqtt.js does not set: with Nagle's algorithm on, a
// PUBACK held back until the broker ACKs the previous segment (Linux delays
// that ACK up to 40 ms) stalls QoS 1 delivery. The service's subscriber keeps
// mqtt.js's default; the difference shows in its p99 and max.
(mqtt.stream as unknown as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
mqtt.on('message', (topic, payload) => {
  const deviceId = topic.slice(root.length + 1, topic.length - '/events'.length);
  const listeners = streams.get(deviceId);
  if (!listeners) return;
  const event = `id: ${++sequence}\nevent: presence\ndata: ${payload.toString('utf8')}\n\n`;
  for (const res of listeners) res.write(event);
});
await mqtt.subscribeAsync(`${root}/+/events`, { qos });

const server = createServer((req, res) => {
  const match = /^\/stream\/([0-9a-f-]+)$/.exec(req.url ?? '');
  if (!match?.[1]) {
    res.writeHead(404).end();
    return;
  }
  const deviceId = match[1];
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache, no-transform', connection: 'keep-alive', 'x-accel-buffering': 'no' });
  // Like the service: a first event at once (here an empty object, not a view).
  res.write(`id: ${++sequence}\nevent: presence\ndata: {}\n\n`);
  const set = streams.get(deviceId) ?? new Set<ServerResponse>();
  set.add(res);
  streams.set(deviceId, set);
  res.once('close', () => set.delete(res));
});
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`${JSON.stringify({ port: typeof address === 'object' && address ? address.port : 0 })}\n`);
});
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close();
  void mqtt.endAsync().then(() => process.exit(0));
});
