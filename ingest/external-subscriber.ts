import { connect, type IClientOptions, type ISubscriptionMap, type MqttClient } from 'mqtt';
import type { Log } from '../core/log.js';
import { tlsErrorText, tlsFailureHint } from '../core/tls/errors.js';
import type { TlsMaterial } from '../core/tls/pem.js';
import { ingestSubscriptions, type TopicScheme } from './topics.js';

/**
 * Consumes device topics from an external broker (MQTT_URL). The broker is
 * trusted to have authenticated each device and to enforce that it writes
 * only to its own topic (see the Mosquitto ACL in the README); the service
 * still checks that the topic names an active device.
 *
 * The session is persistent (MQTT 3.1.1 §3.1.2.4, CleanSession = 0) with a
 * QoS 1 subscription: while the service is down the broker queues device
 * events for its client id and delivers them when it comes back. That needs
 * a client id that stays the same across restarts and differs between
 * processes (MQTT_CLIENT_ID).
 */
export interface ExternalSubscriberOptions {
  readonly url: string;
  readonly username: string | undefined;
  readonly password: string | undefined;
  readonly clientId: string;
  readonly topics: TopicScheme;
  readonly log: Log;
  /**
   * Each message, and whether the device may have been told it is safe:
   * delivered at QoS 1 or 2, through a subscription granted QoS 0 only, or
   * before the SUBACK says which (below); MQTT 3.1.1 §4.3: QoS 0 is never
   * acknowledged. `retained`: the broker sent a copy it keeps, because of
   * a new subscription (MQTT 3.1.1 §3.3.1.3; a message forwarded to an
   * established subscription always arrives with RETAIN 0).
   */
  readonly onMessage: (topic: string, payload: Buffer, acknowledged: boolean, retained: boolean) => void;
  readonly connectTimeoutMs?: number;
  /** Scale-out: device topics are split between the processes of this group (`$share/{group}/...`). */
  readonly shareGroup?: string;
  /** More filters on the same session (the scale-out sync topic), not shared. */
  readonly extraSubscriptions?: readonly string[];
  /** Published by the broker if this connection ends without a DISCONNECT. */
  readonly will?: IClientOptions['will'];
  /** Given the client before it connects: a resumed session delivers messages right after CONNACK, and handlers may publish. */
  readonly onClient?: (client: MqttClient) => void;
  /**
   * Called before bytes that may carry an acknowledgement leave for the
   * broker (the ingest journal writes what was applied; ingest/ingest-journal.ts).
   */
  readonly beforeAck?: () => void;
  /** mqtts:// and wss://: CA and client certificate (MQTT_CA_FILE, MQTT_CERT_FILE, MQTT_KEY_FILE). */
  readonly tls?: TlsMaterial;
}

export interface ExternalSubscriber {
  readonly client: MqttClient;
  close(): Promise<void>;
}

export async function startExternalSubscriber(options: ExternalSubscriberOptions): Promise<ExternalSubscriber> {
  const clientOptions: IClientOptions = {
    clientId: options.clientId,
    clean: false,
    reconnectPeriod: 1000,
    connectTimeout: options.connectTimeoutMs ?? 10_000,
    protocolVersion: 4,
  };
  if (options.username) clientOptions.username = options.username;
  if (options.password) clientOptions.password = options.password;
  if (options.will) clientOptions.will = options.will;
  // The broker's certificate is always verified (mqtt.js passes these to
  // tls.connect, and to ws for wss://), with no setting to turn that off:
  // an unverified broker could be anyone, and it sees every device event.
  clientOptions.rejectUnauthorized = true;
  if (options.tls?.ca !== undefined) clientOptions.ca = options.tls.ca;
  if (options.tls?.cert !== undefined && options.tls.key !== undefined) {
    clientOptions.cert = options.tls.cert;
    clientOptions.key = options.tls.key;
  }
  const client = connect(options.url, clientOptions);
  // Before anything can arrive: a resumed session's broker sends queued
  // messages right after CONNACK, in the same read, before mqtt.js says
  // 'connect', and their acknowledgements must wait for the journal too.
  // mqtt.js has made the stream (and queued CONNECT) by now; a reconnect
  // makes a new one, which is guarded as it sends its CONNECT, still before
  // the broker can answer.
  const beforeAck = options.beforeAck ?? (() => undefined);
  guardWrites(client.stream, beforeAck);
  client.on('packetsend', (packet) => {
    if (packet.cmd === 'connect') guardWrites(client.stream, beforeAck);
  });
  options.onClient?.(client);
  // A shared subscription (MQTT 5 §4.8.2; Mosquitto also offers it to 3.1.1
  // clients) hands each message to one process of the group.
  const share = options.shareGroup ? `$share/${options.shareGroup}/` : '';
  const filters = [...ingestSubscriptions(options.topics).map((f) => share + f), ...(options.extraSubscriptions ?? [])];
  const timeoutMs = options.connectTimeoutMs ?? 10_000;
  // Listeners first: a message may arrive right after SUBACK, and a socket
  // error with no listener would crash the process.
  // mqtt.js leaves Nagle's algorithm on: QoS 1 acknowledgements then wait
  // on the peer's delayed ACK (40 ms on Linux), which the latency benchmark
  // showed as 40-50 ms stalls at the p99. Small packets go out at once.
  client.on('connect', () => {
    const socket = client.stream as { setNoDelay?: (noDelay: boolean) => unknown };
    socket.setNoDelay?.(true);
  });
  // A broker that granted the ingest subscription only QoS 0 has already
  // acknowledged devices' QoS 1 messages and hands them on at QoS 0: every
  // message then counts as acknowledged (journaled), whatever QoS it arrives at.
  // Until the SUBACK says what the broker grants, so does every message: a
  // resumed session's queued messages arrive right after CONNACK, through
  // the subscription the broker kept, whose grant is not known here (at
  // worst a QoS 0 message is journaled that need not have been).
  let acknowledgeAll = true;
  client.on('message', (t, payload, packet) => options.onMessage(t, payload, acknowledgeAll || packet.qos > 0, packet.retain));
  // Once the service is closing, messages still arriving are handled and
  // their acknowledgements written after mqtt.js has sent DISCONNECT and
  // ended the stream ('write after end'), or into a socket the broker has
  // already closed (ECONNRESET). Nothing is lost: the broker redelivers
  // every message not acknowledged (MQTT 3.1.1 §4.4) when the session
  // resumes, and a clean stop writes what was applied. Those errors are
  // not an operator's concern at every deploy.
  let closing = false;
  client.on('error', (error) => {
    if (closing) options.log.debug({ err: error.message }, 'mqtt client error while closing (unacknowledged messages are redelivered)');
    else options.log.warn({ err: error.message }, 'mqtt client error');
  });

  try {
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        client.once('error', reject);
        client.once('connect', () => {
          client.off('error', reject);
          resolve();
        });
      }),
      timeoutMs,
      'no CONNACK',
    );
    const granted = await withTimeout(client.subscribeAsync(filters, { qos: 1 }), timeoutMs, 'no SUBACK');
    const refused = granted.filter((g) => g.qos === 128).map((g) => g.topic);
    if (refused.length > 0) throw new Error(`subscription to ${refused.join(', ')} refused`);
    const downgraded = granted.filter((g) => g.qos === 0).map((g) => g.topic);
    acknowledgeAll = downgraded.length > 0;
    if (acknowledgeAll) {
      options.log.warn({ topics: downgraded }, 'mqtt broker granted QoS 0 only: device messages reach the service at most once; each is journaled as if acknowledged');
    }
    // A group member's renewal cut short by a crash (RetainedRenewal) may
    // have left the plain filters on the persistent session: given up.
    if (options.shareGroup) {
      await withTimeout(client.unsubscribeAsync(ingestSubscriptions(options.topics)), timeoutMs, 'no UNSUBACK for the plain device filters').catch((err: unknown) =>
        options.log.warn({ err }, 'mqtt: giving up the plain device filters failed'),
      );
    }
  } catch (error) {
    client.end(true);
    const hint = tlsFailureHint(error, { ca: 'MQTT_CA_FILE', cert: 'MQTT_CERT_FILE/MQTT_KEY_FILE', host: 'MQTT_URL' });
    throw new Error(`cannot use MQTT broker ${redact(options.url)}: ${tlsErrorText(error)}${hint ? ` (${hint})` : ''}`);
  }

  // mqtt.js renews the subscription itself after a reconnect (resubscribe).
  client.on('connect', () => options.log.info({}, 'mqtt reconnected'));

  return {
    client,
    close: () => {
      closing = true;
      return client.endAsync();
    },
  };
}

async function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${message} within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

function redact(url: string): string {
  try {
    const parsed = new URL(url);
    parsed.password = parsed.password ? '***' : '';
    return parsed.toString();
  } catch {
    return '(invalid url)';
  }
}

/** Streams already guarded (mqtt.js makes one per connection). */
const guarded = new WeakSet<object>();

/**
 * Nothing the service writes to the broker leaves before `beforeSend` has
 * run: an acknowledgement (a PUBACK, MQTT 3.1.1 §4.3.2) tells the broker a
 * device's message is safe, so the journal must hold it first
 * (ingest/ingest-journal.ts). Bytes leave a stream.Writable in two ways: a
 * write while it is not corked, and the uncork that ends the last cork.
 * Both are wrapped. mqtt-packet corks the stream around every packet it
 * writes and uncorks it on the next tick, so for mqtt.js it is the uncork
 * that sends; a write of an uncorked stream is the other way, for any
 * other writer.
 *
 * And what the service writes in answer to one read from the broker (a
 * PUBACK per QoS 1 message; in a scale-out group also a sync PUBLISH per
 * message) goes out in one system call: the stream is corked from the
 * first byte read until the event loop has handled everything that read
 * brought (setImmediate runs after the I/O callbacks and the ticks they
 * queued). Measured: one writev per acknowledgement was the largest single
 * cost of QoS 1 ingest. An acknowledgement leaves at most one event-loop
 * turn later than before, and still only after its message was applied.
 *
 * Exported for tests/unit/external-subscriber-guard.test.ts.
 */
export function guardWrites(stream: unknown, beforeSend: () => void): void {
  const socket = stream as {
    cork?: () => void;
    uncork?: () => void;
    on?: (event: 'data', listener: () => void) => unknown;
    write?: (...args: unknown[]) => boolean;
    destroyed?: boolean;
    writableCorked?: number;
  };
  if (typeof stream !== 'object' || stream === null || guarded.has(stream)) return;
  guarded.add(stream);
  const { cork, uncork, on, write } = socket;
  if (typeof write === 'function') {
    socket.write = (...args: unknown[]) => {
      if (!socket.writableCorked) beforeSend();
      return write.apply(socket, args);
    };
  }
  if (typeof uncork === 'function') {
    socket.uncork = () => {
      if (socket.writableCorked === 1) beforeSend();
      uncork.call(socket);
    };
  }
  if (typeof cork !== 'function' || typeof uncork !== 'function' || typeof on !== 'function') return;
  let corked = false;
  on.call(socket, 'data', () => {
    if (corked) return;
    corked = true;
    cork.call(socket);
    setImmediate(() => {
      corked = false;
      // The wrapped uncork: beforeSend runs first if this was the last cork.
      if (!socket.destroyed) socket.uncork?.();
    });
  });
}

/**
 * Asks the broker to send again what it retains on the ingest topics, by
 * subscribing to the same filters again: MQTT 3.1.1 §3.8.4, an identical
 * filter replaces the subscription without interrupting the flow of
 * publications, and the retained messages matching it are re-sent, flagged
 * RETAIN 1 (§3.3.1.3), so ingest/retained-clearing.ts finds a device that
 * began to retain after the service subscribed. mqtt.js skips filters it
 * holds already unless told `resubscribe`.
 *
 * `shared` (a scale-out group, whose ingest filters are `$share/...`): a
 * broker sends no retained messages to a shared subscription, so the plain
 * filters are subscribed and, at their SUBACK, unsubscribed again. The
 * retained copies come with the SUBACK; live messages that arrive through
 * the plain filters in that moment (the broker hands this member every
 * device message then, one copy each) are applied twice in the group,
 * which the signal merge makes harmless (idempotent), and cost a second
 * rate-limit token. A separate connection would avoid that, but with Mosquitto's
 * `use_username_as_clientid` (README) it would take over this one's session.
 */
export async function resendRetained(client: MqttClient, topics: TopicScheme, options: { readonly timeoutMs?: number; readonly shared?: boolean } = {}): Promise<void> {
  const timeoutMs = options.timeoutMs ?? 5000;
  const plain = ingestSubscriptions(topics);
  const filters: Record<string, { qos: 1 }> = {};
  // QoS 1 in a group too: Mosquitto hands a client whose subscriptions
  // overlap one copy, at the plain subscription's QoS, so a QoS 0 plain
  // filter would take the shared subscription's QoS 1 away for that moment.
  for (const filter of plain) filters[filter] = { qos: 1 };
  try {
    // Bounded: a stop waits for a renewal under way, and a stalled broker must not hold it.
    const granted = await withTimeout(client.subscribeAsync({ ...filters, resubscribe: true } as unknown as ISubscriptionMap), timeoutMs, 'no SUBACK to the renewed subscription');
    // A refused filter is dropped from what mqtt.js subscribes again after a lost session: said loudly.
    const refused = granted.filter((g) => g.qos === 128).map((g) => g.topic);
    if (refused.length > 0) throw new Error(`the broker refused the renewed subscription to ${refused.join(', ')}`);
  } finally {
    // Whatever became of the SUBSCRIBE (a timeout, a closed connection: it
    // may still go out), the plain filters are given up: queued behind it,
    // so a group member never keeps them, with every device message twice.
    if (options.shared) void client.unsubscribeAsync(plain).catch(() => undefined);
  }
}

/**
 * The renewals of one subscriber (MQTT_RETAINED_SWEEP_SECONDS), and which
 * retained copies they brought: those were received live already (the
 * session has been there all along), so they are to be cleared, not
 * applied again (no rate-limit token, journal entry or raw-event row). The
 * window belongs to one connection: after a reconnect that lost the
 * session, mqtt.js subscribes anew, and the retained copies then handed
 * over may never have been received live, so they are applied.
 */
export class RetainedRenewal {
  /** Until when (performance.now()) a retained copy is one a renewal asked for. */
  private until = 0;
  private connections = 0;

  constructor(
    private readonly client: MqttClient,
    private readonly topics: TopicScheme,
    private readonly shared: boolean,
  ) {
    client.on('connect', () => {
      this.connections += 1;
      this.until = 0;
    });
  }

  /** Whether a message came as a retained copy a renewal brought. */
  brought(retained: boolean): boolean {
    return retained && performance.now() < this.until;
  }

  async renew(): Promise<void> {
    const connection = this.connections;
    this.until = Infinity;
    try {
      await resendRetained(this.client, this.topics, { shared: this.shared });
    } finally {
      // The broker sends the copies right after its SUBACK: a few seconds cover them.
      this.until = this.connections === connection ? performance.now() + 3000 : 0;
    }
  }
}
