import { createServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createServer as createTlsServer, Server as TlsServer, type SecureContextOptions, type TlsOptions } from 'node:tls';
import { Aedes, type AuthenticateError, type Client } from 'aedes';
import type { Directory } from '../core/directory.js';
import type { Log } from '../core/log.js';
import type { TokenVerifier } from '../core/identity/token-verifier.js';
import { AUDIENCE_MQTT } from '../core/identity/tokens.js';
import { RateLimiter, type RateLimit } from '../core/rate-limit.js';
import { guardFrames } from './mqtt-frame-guard.js';
import { mayPublish, type TopicScheme } from './topics.js';

/**
 * The embedded MQTT broker (aedes, MQTT 3.1.1) used when no MQTT_URL is set.
 * Devices connect with client id = username = their device id and password
 * = their device token. A device may publish only to its own topic, only
 * while its token is valid, and may not subscribe; the service consumes in
 * process, with no network hop. Tying the client id to the device stops one
 * device from taking over another's session (MQTT 3.1.1 §3.1.4: a second
 * connection with the same client id disconnects the first).
 */
export interface EmbeddedBrokerOptions {
  readonly host: string;
  readonly port: number;
  readonly topics: TopicScheme;
  readonly verifier: TokenVerifier;
  readonly directory: Directory;
  readonly clock: () => number;
  readonly log: Log;
  /** Each device message, and whether it will be acknowledged: published at QoS 1 or 2 (MQTT 3.1.1 §4.3: 0 never is). */
  readonly onMessage: (topic: string, payload: Buffer, acknowledged: boolean) => void;
  /** Connections at most (MQTT_MAX_CONNECTIONS); more are dropped at once. */
  readonly maxConnections?: number;
  /** New connections per client address (RATE_LIMIT_MQTT_CONNECT); the excess is dropped before any TLS handshake or token check. */
  readonly connectRate?: RateLimit;
  /** Told of each connection dropped by one of those limits. */
  readonly onConnectionRefused?: (limit: ConnectionLimit) => void;
  /** Largest MQTT packet body accepted (bytes); larger ones close the connection. */
  readonly maxPacketBytes: number;
  /** Called before devices are acknowledged (the ingest journal writes what was applied). */
  readonly beforeAck?: () => void;
  /**
   * How long a device must wait before its next message is taken (the
   * per-device rate limit, RATE_LIMIT_MQTT_DEVICE), taking nothing. A
   * message over it is held, in order, and acknowledged only once applied,
   * where refusing it would tell the device it was safe and lose it (a
   * phone flushing its offline queue sends its newest locations last). A
   * device that waits for its acknowledgements (an MQTT client's in-flight
   * window) is so slowed down to the limit. One that does not is closed
   * when `maxHeld` of its messages wait: what was not acknowledged, it
   * sends again after reconnecting, still under the same limit.
   */
  readonly pace?: (deviceId: string, now: number) => number;
  /** Messages held per connection at most (default 100). */
  readonly maxHeld?: number;
  /**
   * Payload bytes held across all connections at most (default 64 MiB): a
   * connection whose message would go past it is closed as for `maxHeld`
   * (100 messages of up to MAX_EVENT_BYTES each per connection, times every
   * connection, would otherwise have no bound but the connection limit).
   */
  readonly maxHeldBytes?: number;
  /** Told of each message held by `pace`, and of each connection closed for holding too many. */
  readonly onHeld?: (outcome: 'held' | 'closed') => void;
  /** MQTT over TLS on the port (the usual port for it is 8883); unset: plain MQTT (loopback development only, see core/config.ts). */
  readonly tls?: TlsOptions;
}

/** Which limit dropped a connection (the label of presence_limit_refusals_total). */
export type ConnectionLimit = 'mqtt_connections' | 'mqtt_connect_address';

export interface EmbeddedBroker {
  /** Closes the connections of these devices (revoked, or their owner erased). */
  disconnect(deviceIds: readonly string[]): void;
  readonly port: number;
  /** Whether the listener speaks MQTT over TLS. */
  readonly secure: boolean;
  /**
   * Serves a connection that arrived another way (MQTT over WebSockets,
   * ingest/mqtt-websocket.ts) under the same rules: the packet-size guard
   * and the connection limit, shared with the listener's connections.
   */
  accept(stream: Duplex): void;
  /** Whether another connection would exceed MQTT_MAX_CONNECTIONS (checked before a WebSocket handshake). */
  atCapacity(): boolean;
  /**
   * Takes a new connection from `address` against RATE_LIMIT_MQTT_CONNECT
   * (checked before a WebSocket handshake; the broker's own port checks
   * its connections itself): 0 if it may go on, else the ms until the
   * address may connect again (the refusal is counted).
   */
  admit(address: string | undefined): number;
  /** Serves a renewed certificate to new connections; open ones keep theirs. No-op without TLS. */
  setSecureContext(options: SecureContextOptions): void;
  readonly connectedClients: () => number;
  close(): Promise<void>;
}

/** Inbound QoS 2 messages awaiting PUBREL per connection (aedes' maxInflightInbound). */
export const MAX_INBOUND_QOS2 = 64;

function refusal(returnCode: 2 | 4 | 5, message: string): AuthenticateError {
  return Object.assign(new Error(message), { returnCode });
}

export async function startEmbeddedBroker(options: EmbeddedBrokerOptions): Promise<EmbeddedBroker> {
  const deviceOf = new WeakMap<Client, { readonly id: string; readonly expiresAt: number }>();
  const broker = await Aedes.createBroker({
    // A device that stops reading its socket must not stall everyone else.
    drainTimeout: 10_000,
    // QoS 2 messages a connection may have waiting for their PUBREL (MQTT
    // 3.1.1 §4.3.3), each kept by aedes until then: a device withholding
    // PUBREL is disconnected past this (aedes' default, 1,000, is 16 MB of
    // payloads at MAX_EVENT_BYTES per connection). MQTT clients keep far
    // fewer in flight (Paho: 10).
    maxInflightInbound: MAX_INBOUND_QOS2,
    authenticate(client, username, password, done) {
      const token = password?.toString('utf8');
      if (!token || !username) return done(refusal(4, 'device id and token required'), false);
      if (client.id !== username) return done(refusal(2, 'the client id must be the device id'), false);
      options.verifier.verify(token, AUDIENCE_MQTT, options.clock()).then(
        (result) => {
          const device = result.ok && result.principal.kind === 'device' ? options.directory.activeDevice(result.principal.subject) : undefined;
          // The token names the device; the username must agree with it.
          if (!result.ok || !device || device.id !== username || result.principal.owner !== device.ownerId) {
            options.log.info({ reason: result.ok ? 'unknown_device' : result.reason }, 'mqtt connect refused');
            return done(refusal(4, 'bad device credentials'), false);
          }
          deviceOf.set(client, { id: device.id, expiresAt: result.principal.expiresAt });
          done(null, true);
        },
        () => done(refusal(5, 'authentication failed'), false),
      );
    },
    authorizePublish(client, packet, done) {
      const device = client ? deviceOf.get(client) : undefined;
      if (!device || !mayPublish(options.topics, device.id, packet.topic)) {
        return done(new Error('a device publishes to its own topics only'));
      }
      // The token was checked at CONNECT; a long-lived connection must not outlive it, nor the device's revocation.
      if (options.clock() >= device.expiresAt) return done(new Error('device token expired'));
      if (!options.directory.activeDevice(device.id)) return done(new Error('device revoked'));
      // Privacy invariant 4: the broker must not keep raw sensor payloads.
      packet.retain = false;
      if (client) paced(client, device.id, packet, done);
    },
    authorizeSubscribe(_client, _subscription, done) {
      done(null, null);
    },
  });
  broker.on('clientDisconnect', (client) => drop(client));

  // Device messages are ingested here, while aedes asks whether the device
  // may publish, not from a subscription: aedes (1.2) writes a QoS 1 PUBACK
  // before it routes the message to any subscriber, so a subscriber's
  // journal write came after the device was told its message was safe. Here
  // the answer (and so the PUBACK, or for QoS 2 the PUBREC) waits until the
  // journal has the message (ingest/ingest-journal.ts); the answers of one
  // event-loop turn wait for one journal write. QoS 0 is never acknowledged:
  // it waits for nothing. Nobody subscribes on this broker (devices may not),
  // so aedes routes the message on to no one.
  const beforeAck = options.beforeAck;
  let waiting: (() => void)[] = [];
  const release = () => {
    const callbacks = waiting;
    waiting = [];
    beforeAck?.();
    for (const cb of callbacks) cb();
  };
  // Messages held by the pace, per connection, in order; one timer each.
  // Dropped, unacknowledged, when the connection ends: the device sends
  // again what it was not told is safe.
  interface Line {
    readonly deviceId: string;
    readonly queue: { readonly bytes: number; readonly take: () => void }[];
    timer: NodeJS.Timeout | undefined;
  }
  const held = new Map<Client, Line>();
  const pace = options.pace;
  const maxHeld = options.maxHeld ?? 100;
  const maxHeldBytes = options.maxHeldBytes ?? 64 * 1024 * 1024;
  let heldBytes = 0;
  function paced(client: Client, deviceId: string, packet: { topic: string; payload: Buffer | string; qos: number }, done: (error: Error | null) => void): void {
    const line = held.get(client);
    if (!pace || (!line && pace(deviceId, options.clock()) === 0)) return ingest(packet, done);
    // Over the limit on a connection already closed (a packet parsed before
    // it was): nothing to hold it for, nobody to acknowledge it to.
    if (client.closed) return;
    const bytes = Buffer.byteLength(packet.payload);
    if ((line && line.queue.length >= maxHeld) || heldBytes + bytes > maxHeldBytes) {
      options.onHeld?.('closed');
      drop(client);
      // After the acknowledgements of what was applied this turn (they wait
      // for the journal, on setImmediate): those messages are safe, and the
      // device must hear so, or it sends them again.
      setImmediate(() => client.close());
      return;
    }
    options.onHeld?.('held');
    heldBytes += bytes;
    const message = { bytes, take: () => ingest(packet, done) };
    if (line) {
      line.queue.push(message);
      return;
    }
    const started: Line = { deviceId, queue: [message], timer: undefined };
    held.set(client, started);
    releaseHeld(client, started);
  }
  function releaseHeld(client: Client, line: Line): void {
    // Each message taken takes a token (the pipeline's check); the rest wait for the next.
    for (;;) {
      if (held.get(client) !== line) return; // dropped meanwhile
      // Closed, perhaps not yet disconnected (aedes says so later): nobody to acknowledge it to.
      if (client.closed) {
        drop(client);
        return;
      }
      const next = line.queue[0];
      if (next === undefined) {
        held.delete(client);
        return;
      }
      const wait = pace ? pace(line.deviceId, options.clock()) : 0;
      if (wait > 0) {
        line.timer = setTimeout(() => releaseHeld(client, line), wait);
        return;
      }
      line.queue.shift();
      heldBytes -= next.bytes;
      next.take();
    }
  }
  function drop(client: Client): void {
    const line = held.get(client);
    if (!line) return;
    clearTimeout(line.timer);
    for (const message of line.queue) heldBytes -= message.bytes;
    line.queue.length = 0;
    held.delete(client);
  }
  function ingest(packet: { topic: string; payload: Buffer | string; qos: number }, done: (error: Error | null) => void): void {
    options.onMessage(packet.topic, typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload, packet.qos > 0);
    if (!beforeAck || packet.qos === 0) return done(null);
    if (waiting.push(() => done(null)) === 1) setImmediate(release);
  }

  // Connections on every transport count against one limit.
  let open = 0;
  const atCapacity = () => options.maxConnections !== undefined && open >= options.maxConnections;
  // Per address, on every transport too. A client without an address (a
  // socket already gone) shares one bucket.
  const connects = new RateLimiter(options.connectRate ?? { perSecond: 0, burst: 0 });
  const admit = (address: string | undefined): number => {
    if (!connects.enabled) return 0;
    const wait = connects.take(address ?? '', options.clock());
    if (wait > 0) options.onConnectionRefused?.('mqtt_connect_address');
    return wait;
  };
  const accept = (stream: Duplex) => {
    // Dropped by the rate check on the listener (it runs first).
    if (stream.destroyed) return;
    if (atCapacity()) {
      options.onConnectionRefused?.('mqtt_connections');
      stream.destroy();
      return;
    }
    open += 1;
    stream.once('close', () => {
      open -= 1;
    });
    guardFrames(stream, options.maxPacketBytes, (verdict) => options.log.info({ reason: verdict }, 'mqtt connection closed: bad packet header'));
    broker.handle(stream);
  };
  // With TLS, a connection reaches aedes only after its handshake (RFC 8446);
  // a failed handshake (a client that does not trust the certificate, or a
  // client speaking plain MQTT) is logged without the peer's address.
  const server: Server = options.tls ? createTlsServer(options.tls, accept) : createServer(accept);
  if (options.tls) server.on('tlsClientError', (error: NodeJS.ErrnoException) => options.log.debug({ code: error.code ?? 'tls_error' }, 'mqtt TLS handshake failed'));
  // The listener's own limit drops the excess before any TLS handshake work.
  if (options.maxConnections !== undefined) server.maxConnections = options.maxConnections;
  server.on('drop', () => options.onConnectionRefused?.('mqtt_connections'));
  // The TCP connection, before TLS and before aedes reads a byte: a client
  // reconnecting in a loop (or guessing tokens) costs no handshake and no
  // signature check past its address's burst. Before `accept` on a plain
  // listener (which has it as its own connection listener).
  if (connects.enabled) {
    server.prependListener('connection', (socket: Socket) => {
      if (admit(socket.remoteAddress) > 0) socket.destroy();
    });
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;

  return {
    port,
    secure: options.tls !== undefined,
    accept,
    atCapacity,
    admit,
    setSecureContext: (context) => {
      if (server instanceof TlsServer) server.setSecureContext(context);
    },
    connectedClients: () => broker.connectedClients,
    disconnect: (deviceIds) => {
      // The client id is the device id (checked at CONNECT). aedes keeps its
      // connected clients by id but does not declare the map in its types.
      const clients = (broker as unknown as { clients: Record<string, Client | undefined> }).clients;
      for (const id of deviceIds) clients[id]?.close();
    },
    close: async () => {
      // What is held was never acknowledged: dropped, the devices send it again to the next start.
      for (const client of [...held.keys()]) drop(client);
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
