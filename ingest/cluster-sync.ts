import { randomBytes } from 'node:crypto';
import type { IClientOptions, MqttClient } from 'mqtt';
import type { SensorEvent } from '../core/events.js';
import type { Log } from '../core/log.js';
import type { Metrics } from '../core/metrics.js';
import type { PersistedSignal, PresenceHub } from '../core/presence-hub.js';
import { ReplicaLedger, syncMessageSchema, type SyncMessage } from '../core/replication.js';
import { LogWindow } from '../core/log-window.js';
import { publishKept } from './publish-kept.js';

/**
 * The broker side of scale-out (see core/replication.ts for the protocol):
 * publishes what this process applied and stored, and applies what the
 * others did. Topics: {root}/{clientId}/signals | persisted | gone, all at
 * QoS 1; every process subscribes to {root}/+/+ on its persistent session,
 * so what is published while it restarts waits for it at the broker.
 *
 * The sync topic must be writable by the service processes only (broker
 * ACL): what arrives there is merged without a device check. It is still
 * validated (zod), as any MQTT payload is.
 */
export interface ClusterSyncOptions {
  readonly root: string;
  readonly clientId: string;
  readonly hub: PresenceHub;
  readonly clock: () => number;
  readonly log: Log;
  readonly metrics: Metrics;
  /** Writes pending state soon (after taking over a dead process's owners). */
  readonly requestWrite: () => void;
}

export const SYNC_MESSAGES = 'presence_sync_messages_total';

/** At most one log line per window for refused sync messages. */
const LOG_WINDOW_MS = 10_000;

export class ClusterSync {
  /** This process lifetime: a restart is a new node, so a survivor never confuses the two. */
  readonly node: string;
  private readonly ledger = new ReplicaLedger();
  private client: MqttClient | undefined;
  private seq = 0;
  private confirmed = 0;
  private readonly refusals = new LogWindow(LOG_WINDOW_MS);
  private readonly ownPrefix: string;

  constructor(private readonly options: ClusterSyncOptions) {
    this.node = `${options.clientId}#${randomBytes(6).toString('hex')}`;
    this.ownPrefix = `${options.root}/${options.clientId}/`;
    options.metrics.counter(SYNC_MESSAGES, 'Scale-out sync messages, by type and outcome');
    options.metrics.gauge('presence_sync_pending_owners', 'Owners applied by other processes and not yet stored by them', () => this.ledger.pendingCount);
  }

  /** The MQTT will of the ingest connection: the broker announces this node's death. */
  will(): NonNullable<IClientOptions['will']> {
    return { topic: this.topic('gone'), payload: Buffer.from(JSON.stringify({ v: 1, type: 'gone', node: this.node })), qos: 1, retain: false };
  }

  subscriptions(): string[] {
    return [`${this.options.root}/+/+`];
  }

  owns(topic: string): boolean {
    return topic.startsWith(`${this.options.root}/`);
  }

  attach(client: MqttClient): void {
    this.client = client;
    holdAcksDuringResend(client);
  }

  /**
   * Called by ingest right after the hub applied a device's events, inside
   * the message handler: the sync PUBLISH is written before mqtt.js writes
   * the device message's PUBACK, on the same connection.
   */
  applied(ownerId: string, deviceId: string, events: readonly SensorEvent[]): void {
    this.publishSignals(ownerId, events.map((event) => ({ deviceId, event })));
  }

  /** PersistProgress: everything applied so far. */
  mark(): number {
    return this.seq;
  }

  /** PersistProgress: what `mark` named is stored; the others may forget it. */
  persisted(mark: number): void {
    if (mark <= this.confirmed) return;
    this.confirmed = mark;
    this.publish('persisted', { v: 1, type: 'persisted', node: this.node, seq: mark });
  }

  handle(topic: string, payload: Buffer): void {
    // Our own messages come back (MQTT 3.1.1 has no "no local"): skipped
    // before parsing. Those of an earlier run of this process under the same
    // client id are skipped too: the others hold what it did not write and
    // take it over on its will, and a restart reloads what was written.
    if (topic.startsWith(this.ownPrefix)) return;
    const message = decode(payload);
    if (!message) {
      this.count('invalid', 'refused');
      const suppressed = this.refusals.take(this.options.clock());
      if (suppressed !== undefined) this.options.log.warn({ topic, suppressedSinceLast: suppressed }, 'sync message refused (not a valid sync message)');
      return;
    }
    this.count(message.type, 'applied');
    const now = this.options.clock();
    switch (message.type) {
      case 'signals': {
        this.options.hub.merge(message.owner, message.signals, now);
        if (this.ledger.received(message.node, message.seq, message.owner) === 'write-here') {
          this.options.hub.markDirty([message.owner]);
          this.options.requestWrite();
        }
        return;
      }
      case 'persisted':
        this.ledger.persisted(message.node, message.seq);
        return;
      case 'gone': {
        const owners = this.ledger.takeOver(message.node);
        if (owners.length === 0) return;
        this.options.log.warn({ node: message.node, owners: owners.length }, 'a process died; writing what it had not stored');
        this.options.hub.markDirty(owners);
        // Re-announced as ours, so the dead process's next start (whose
        // session kept these messages) learns them even if it loaded its
        // snapshot before this process wrote them.
        for (const owner of owners) {
          const signals = this.options.hub.signalsOf(owner);
          if (signals.length > 0) this.publishSignals(owner, signals);
        }
        this.options.requestWrite();
        return;
      }
    }
  }

  private publishSignals(ownerId: string, signals: readonly PersistedSignal[]): void {
    // Large sets go in slices within the schema's bound.
    for (let i = 0; i < signals.length; i += 512) {
      this.seq += 1;
      this.publish('signals', { v: 1, type: 'signals', node: this.node, seq: this.seq, owner: ownerId, signals: signals.slice(i, i + 512) });
    }
  }

  private publish(type: SyncMessage['type'], message: SyncMessage): void {
    const client = this.client;
    if (!client) throw new Error('cluster sync used before its MQTT connection was attached');
    // QoS 1, published again if mqtt.js drops it after a reconnect: the
    // other processes would otherwise never hold what it carried. Not when
    // the client is ending (this process stops: its will tells the others).
    publishKept(client, this.topic(type), JSON.stringify(message), { qos: 1, retain: false }, (requeued) => this.count(type, requeued ? 'requeued' : 'dropped'));
    this.count(type, 'sent');
  }

  private topic(type: SyncMessage['type']): string {
    return `${this.options.root}/${this.options.clientId}/${type}`;
  }

  private count(type: string, outcome: string): void {
    this.options.metrics.inc(SYNC_MESSAGES, { type, outcome });
  }
}

function decode(payload: Buffer): SyncMessage | undefined {
  let json: unknown;
  try {
    json = JSON.parse(payload.toString('utf8'));
  } catch {
    return undefined;
  }
  const parsed = syncMessageSchema.safeParse(json);
  return parsed.success ? parsed.data : undefined;
}

/** The mqtt.js 5.16 internals holdAcksDuringResend relies on (tests/unit/cluster-sync-requeue.test.ts fails if they change). */
interface ResendInternals {
  _sendPacket: (packet: { cmd: string }, cb?: (error?: Error) => void, ...rest: unknown[]) => void;
  _storeProcessing: boolean;
  _storeProcessingQueue: readonly unknown[];
}

/**
 * The scale-out promise (core/replication.ts) is that a device message's
 * PUBACK leaves after its sync PUBLISH, on the same connection. In steady
 * state it does: the sync message is written inside the message handler,
 * before mqtt.js writes the PUBACK. After a reconnect it did not: mqtt.js
 * first resends what it stored, one acknowledgement at a time, and queues
 * every PUBLISH made meanwhile (sync messages included), while it writes
 * PUBACKs at once; a member killed in that window had acknowledged device
 * messages whose sync messages never reached the broker. So while mqtt.js
 * resends or holds a queue, PUBACKs wait, and go out once the queue is
 * written (checked every millisecond, for as long as the resend takes: a
 * broker round trip per stored message), in order, and later ones behind
 * them. The incoming side is not held (its packet is answered to mqtt.js
 * at once): the resend itself waits for PUBACKs from the broker. If the
 * connection closes first, they are dropped: the broker redelivers those
 * messages, which were never acknowledged.
 */
function holdAcksDuringResend(client: MqttClient): void {
  const internals = client as unknown as ResendInternals;
  const send = internals._sendPacket;
  if (typeof send !== 'function' || !Array.isArray(internals._storeProcessingQueue)) {
    throw new Error('mqtt.js changed: cluster sync cannot order acknowledgements after its resend (see ingest/cluster-sync.ts)');
  }
  const resending = () => internals._storeProcessing || internals._storeProcessingQueue.length > 0;
  let held: { cmd: string }[] = [];
  let timer: NodeJS.Timeout | undefined;
  const release = () => {
    timer = undefined;
    if (held.length === 0) return;
    if (resending()) {
      timer = setTimeout(release, 1);
      return;
    }
    const out = held;
    held = [];
    for (const packet of out) send.call(client, packet);
  };
  internals._sendPacket = function (this: MqttClient, packet, cb, ...rest) {
    // Behind held ones too: PUBACKs leave in the order their PUBLISHes came (MQTT 3.1.1 §4.6).
    if (packet.cmd === 'puback' && client.connected && (held.length > 0 || resending())) {
      held.push(packet);
      timer ??= setTimeout(release, 1);
      cb?.();
      return;
    }
    send.call(this, packet, cb, ...rest);
  };
  client.on('close', () => {
    held = [];
    clearTimeout(timer);
    timer = undefined;
  });
}
