import { parseTopic, type TopicScheme } from './topics.js';

/**
 * Privacy invariant 4 at an external broker: a device message published
 * with the retain flag stays at the broker, the last one per topic, and is
 * handed to every later subscriber (MQTT 3.1.1 §3.3.1.3). OwnTracks retains
 * its locations by default. The embedded broker clears the flag before it
 * routes a message (ingest/embedded-broker.ts); an external one must be told:
 * a zero-byte retained PUBLISH to the topic removes what it keeps (the same
 * clause), which needs the service's broker user to have a write right on
 * device topics (README, Devices and MQTT).
 *
 * Over MQTT 3.1.1 the service cannot see the flag a device set on a live
 * message: a broker forwards messages to an established subscription with
 * RETAIN 0, and sets it to 1 only on the copies it holds and sends because
 * of a new subscription (§3.3.1.3). So a topic is cleared
 * - after every message that arrives flagged retained (handed over at a
 *   subscribe), whose topic is from then on known to be retained by its
 *   device: its later messages are cleared after they arrive too;
 * - after every OwnTracks report on a device's base topic
 *   (`{OWNTRACKS_TOPIC_ROOT}/{device}/{name}`), where the app retains
 *   locations unless told not to.
 * A topic the broker keeps nothing for costs one message that removes nothing.
 * Over MQTT 3.1.1 the retained copies come with a subscription the broker
 * makes anew: at each start of the service (a reconnect that resumes the
 * session subscribes to nothing), and never through a shared subscription
 * (Mosquitto sends no retained messages to `$share/` filters), so in a
 * scale-out group only OwnTracks base topics are cleared.
 *
 * The zero-byte message reaches the service's own subscription as well, and
 * is ignored there (ingest/ingest-pipeline.ts). If a device publishes again
 * between its message and the clear, the clear removes that one's retained
 * copy: the service still receives it as a live message, so nothing is lost
 * here; only the broker's copy goes, which is the point.
 */
export interface RetainedClearingOptions {
  readonly topics: TopicScheme;
  /** Sends the zero-byte retained message to the topic. */
  readonly publish: (topic: string) => void;
  /** Topics remembered as retained by their device; the oldest is forgotten past this. */
  readonly maxRemembered?: number;
  /**
   * Each clear is expected back through the service's own subscription
   * (not in a scale-out group: a shared subscription hands it to any member).
   * A broker that denies the publish drops it without a word over MQTT 3.1.1
   * (Mosquitto does), so a clear not back by the next sweep after it is
   * reported: the likely cause is a missing write right on device topics.
   */
  readonly confirm?: { readonly clock: () => number; readonly afterMs: number };
}

export const DEFAULT_MAX_REMEMBERED = 100_000;

export class RetainedClearing {
  /** Topics seen retained, oldest first (a Set keeps insertion order). */
  private readonly retaining = new Set<string>();
  private readonly ownTracksPrefix: string;
  private readonly maxRemembered: number;
  /** Clears sent and not yet back, by topic: when sent, and whether a message came meanwhile. */
  private readonly pending = new Map<string, { sentAt: number; again: boolean }>();

  constructor(private readonly options: RetainedClearingOptions) {
    this.ownTracksPrefix = `${options.topics.ownTracksRoot}/`;
    this.maxRemembered = options.maxRemembered ?? DEFAULT_MAX_REMEMBERED;
  }

  /** Topics currently remembered as retained by their device. */
  get remembered(): number {
    return this.retaining.size;
  }

  /**
   * After a device topic's message has been handled (applied or refused: the
   * broker must not keep a payload the service refused either). Returns
   * whether a clear was sent.
   */
  observe(topic: string, payload: Uint8Array, retained: boolean): boolean {
    // A zero-byte payload is itself a clear (perhaps this service's own, come back).
    if (payload.length === 0) {
      const entry = this.pending.get(topic);
      if (!entry) return false;
      this.pending.delete(topic);
      // Messages came while it was out: one more clear for them.
      if (entry.again) return this.send(topic);
      return false;
    }
    // The hot path of native ingest: not flagged, its topic not seen retained, not OwnTracks.
    if (!retained && !this.retaining.has(topic) && !topic.startsWith(this.ownTracksPrefix)) return false;
    const parsed = parseTopic(this.options.topics, topic);
    if (!parsed) return false;
    if (retained) this.remember(topic);
    else if (!this.retaining.has(topic) && !(parsed.format === 'owntracks' && isOwnTracksBase(this.options.topics, topic))) return false;
    // One clear in flight per topic. Messages that arrive while it is out
    // get one more clear when it comes back (or at its sweep): the broker
    // may have taken them after the clear, and MQTT orders messages only per
    // publisher and QoS, so they can reach this subscription before its
    // echo. A device flooding a retained topic costs two clears per round
    // trip, not one per message. (Without confirmation, in a group, every
    // message is cleared.)
    const entry = this.pending.get(topic);
    if (entry) {
      entry.again = true;
      return false;
    }
    return this.send(topic);
  }

  private send(topic: string): boolean {
    this.options.publish(topic);
    const confirm = this.options.confirm;
    if (confirm && this.pending.size < this.maxRemembered) this.pending.set(topic, { sentAt: confirm.clock(), again: false });
    return true;
  }

  /**
   * How many clears sent at least `confirm.afterMs` ago never came back; they
   * are forgotten, and a topic with messages since is cleared once more.
   */
  sweep(): number {
    const confirm = this.options.confirm;
    if (!confirm) return 0;
    const before = confirm.clock() - confirm.afterMs;
    const overdue: [string, boolean][] = [];
    // Oldest first (a Map keeps insertion order).
    for (const [topic, entry] of this.pending) {
      if (entry.sentAt > before) break;
      overdue.push([topic, entry.again]);
    }
    for (const [topic, again] of overdue) {
      this.pending.delete(topic);
      if (again) this.send(topic);
    }
    return overdue.length;
  }

  private remember(topic: string): void {
    // Refreshed to the newest place, so the oldest is the one least recently seen retained.
    this.retaining.delete(topic);
    this.retaining.add(topic);
    if (this.retaining.size > this.maxRemembered) {
      const oldest = this.retaining.values().next().value;
      if (oldest !== undefined) this.retaining.delete(oldest);
    }
  }
}

/** `{root}/{device}/{name}`, not `/event` below it (transitions, which the app does not retain). */
function isOwnTracksBase(scheme: TopicScheme, topic: string): boolean {
  return topic.slice(scheme.ownTracksRoot.length + 1).split('/').length === 2;
}
